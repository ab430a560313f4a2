//! An export is answered without waiting on TCP's delayed acknowledgements. A request larger
//! than HTTP/2's initial window (64 KiB) needs window updates from the server; without
//! TCP_NODELAY those small frames, and the answer, can wait for the client's delayed ACK
//! (about 40 ms on Linux) on every request.

use std::time::{Duration, Instant};

use archtrace_collector::ServerSettings;
use archtrace_workload::shop::Simulation;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

use crate::support::InProcessServer;

#[tokio::test(flavor = "multi_thread")]
async fn one_client_exporting_in_turn_is_not_held_by_delayed_acks() {
    let server = InProcessServer::start(ServerSettings::default()).await;
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let mut simulation = Simulation::starting_at(7, 1_700_000_000_000_000_000);
    let requests: Vec<_> = (0..41).map(|_| simulation.request_of_spans(600)).collect();
    assert!(
        requests[0].encoded_len() > 2 * 65_535,
        "a request must span several HTTP/2 windows, it is {} bytes",
        requests[0].encoded_len()
    );
    // The first warms the connection up; the rest are timed one after the other.
    client.export(requests[0].clone()).await.unwrap();
    let mut round_trips = Vec::new();
    for request in &requests[1..] {
        let sent = Instant::now();
        client.export(request.clone()).await.unwrap();
        round_trips.push(sent.elapsed());
    }
    // Held by a delayed ACK, about every other round trip takes 40-50 ms (measured without
    // TCP_NODELAY: 19 of 40, twice); answered at once, all took 3-15 ms. A quarter leaves room for
    // a busy machine.
    let held = round_trips
        .iter()
        .filter(|trip| **trip > Duration::from_millis(35))
        .count();
    assert!(
        held <= round_trips.len() / 4,
        "{held} of {} export round trips took over 35 ms: {round_trips:?}",
        round_trips.len()
    );
    server.stop().await;
}
