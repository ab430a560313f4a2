//! The assembly thread of a running server: takes committed spans from the writer, derives
//! complete traces, and writes each minute and hour bucket once it has closed. Buckets not yet
//! written stay in memory, where snapshots read them too, so the live graph is current within
//! `trace_idle`.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use archtrace_analyzer::Span;
use archtrace_query::Unwritten;
use archtrace_store::buckets::BucketWriter;

use crate::assembly::{Assembler, AssemblySettings};

/// Committed requests waiting for the assembler; when it falls behind, the writer waits, its
/// queue fills, and clients are told to retry: memory stays bounded.
const HANDOFF_REQUESTS: usize = 64;

pub struct LiveAssembly {
    /// Dropping every clone of it ends the thread, after it has written what it holds.
    pub sender: SyncSender<Vec<Span>>,
    pub unwritten: Arc<Mutex<Unwritten>>,
    pub thread: JoinHandle<()>,
}

/// Starts the assembly thread; `connection` is its own connection to the store.
pub fn start(settings: AssemblySettings, connection: BucketWriter) -> LiveAssembly {
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<Span>>(HANDOFF_REQUESTS);
    let unwritten = Arc::new(Mutex::new(Unwritten::default()));
    let shared = unwritten.clone();
    let thread = std::thread::Builder::new()
        .name("archtrace-assembly".into())
        .spawn(move || run(settings, receiver, connection, &shared))
        .expect("spawning the assembly thread");
    LiveAssembly {
        sender,
        unwritten,
        thread,
    }
}

fn run(
    settings: AssemblySettings,
    receiver: Receiver<Vec<Span>>,
    connection: BucketWriter,
    unwritten: &Mutex<Unwritten>,
) {
    let tick = (settings.trace_idle / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    // A bucket is written once no trace that could still add to it is waiting.
    let margin_ns = i64::try_from(settings.trace_idle.as_nanos())
        .unwrap_or(i64::MAX)
        .saturating_add(5_000_000_000);
    let mut assembler = Assembler::new(settings);
    let mut last_tick = Instant::now();
    loop {
        let open = match receiver.recv_timeout(tick) {
            Ok(mut spans) => {
                // The spans are stored; derivation needs none of their detail (attributes,
                // events, resource), and holding it for every buffered trace would double the
                // server's memory under load.
                for span in &mut spans {
                    span.detail = Default::default();
                }
                assembler.add(spans, Instant::now());
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        };
        if open && last_tick.elapsed() < tick {
            continue;
        }
        last_tick = Instant::now();
        if open {
            assembler.tick(last_tick);
        } else {
            assembler.drain(last_tick);
        }
        let (minute, hour) = assembler.take_buckets();
        // Closed buckets leave memory and reach the store under one lock, which snapshots hold
        // while they read the store: a query sees each bucket in exactly one of the two.
        let mut held = unwritten.lock().unwrap_or_else(|e| e.into_inner());
        held.absorb(minute, hour);
        let before = if open {
            archtrace_analyzer::time::now_ns().saturating_sub(margin_ns)
        } else {
            i64::MAX
        };
        for buckets in held.take_closed(before) {
            if let Err(err) = connection.write(&buckets) {
                // The raw spans are in the store: `archtrace rebuild` can derive this window again.
                tracing::error!(error = %err, "could not write derived edges; run `archtrace rebuild` for this window");
            }
        }
        drop(held);
        if !open {
            return;
        }
    }
}
