//! The span loader: one thread owns the store's connection and fills it from the request log.
//! It reads what the journal has made durable, converts it, and appends the spans together
//! with its log offset in one transaction, so that after a crash the log is replayed from
//! exactly what the store holds: nothing is lost and nothing is stored twice. Loaded spans go
//! on to live derivation; log segments the store holds entirely are deleted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use archtrace_analyzer::Span;
use archtrace_formats::otlp::{self, Detail};
use archtrace_store::log::{self, LogReader, Record};
use archtrace_store::Store;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::histogram::LatencyHistogram;
use crate::journal::LogState;

/// The consumer name the loader commits its offset under.
pub const CONSUMER: &str = "spans";

/// Log payload bytes per store commit at most (about 20k spans). Measured over 20 s of gRPC load:
/// 8 MiB loads as much as 16 MiB with about 90 MB less peak RSS; 4 MiB saves 50 MB more but
/// loads 7-13% less.
const BATCH_BYTES: usize = 8 << 20;

/// Receives the spans of every committed batch (for live derivation).
pub type OnLoad = Box<dyn FnMut(Vec<Span>) + Send>;

/// Counters the admin listener exports.
#[derive(Debug, Default)]
pub struct LoaderMetrics {
    pub loaded_spans: AtomicU64,
    pub commit_failures: AtomicU64,
    pub commit: LatencyHistogram,
}

pub struct Loader {
    handle: JoinHandle<Store>,
}

impl Loader {
    /// Starts loading the log in `dir` into `store` from the offset the store has committed.
    pub fn spawn(
        store: Store,
        dir: &Path,
        state: Arc<LogState>,
        metrics: Arc<LoaderMetrics>,
        on_load: Option<OnLoad>,
    ) -> Result<Loader, archtrace_store::QueryError> {
        let from = store.log_offset(CONSUMER)?;
        let underived = Underived(store.underived()?);
        state.loaded.store(from, Ordering::Release);
        let dir = dir.to_owned();
        let handle = std::thread::Builder::new()
            .name("archtrace-loader".into())
            .spawn(move || run(store, dir, from, underived, &state, &metrics, on_load))
            .expect("spawning the loader thread");
        Ok(Loader { handle })
    }

    /// Waits until everything the journal made durable is loaded (the journal must have
    /// stopped), and gives the store back.
    pub fn join(self) -> Store {
        match self.handle.join() {
            Ok(store) => store,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// The spans of logged requests. The journal logs only requests whose spans all passed
/// validation, so none is rejected here.
fn spans_of(records: &[Record]) -> Vec<Span> {
    let mut spans = Vec::new();
    for record in records {
        match ExportTraceServiceRequest::decode(record.payload.as_slice()) {
            Ok(request) => spans.extend(otlp::convert_with(request, Detail::Keep).spans),
            // The CRC matched, so only a bug could get here; the record is skipped, not retried.
            Err(err) => {
                tracing::error!(end = record.end, error = %err, "a logged request does not decode; skipped")
            }
        }
    }
    spans
}

/// The span-time range of spans stored whose derived edges may not be written yet: tracked
/// while derivation runs, so that after a crash exactly that range is derived again.
#[derive(Clone, Copy, Debug, Default)]
struct Underived(Option<(i64, i64)>);

impl Underived {
    fn extend(&mut self, spans: &[Span]) {
        for span in spans {
            let range = self.0.get_or_insert((span.start_ns, span.start_ns));
            range.0 = range.0.min(span.start_ns);
            range.1 = range.1.max(span.start_ns);
        }
    }
}

/// Loads the log into the store from the store's offset up to `until`, deriving nothing and
/// noting the loaded spans as underived: the first step of recovering from an unclean stop,
/// before the server serves. Returns the spans loaded.
pub fn replay(
    store: &mut Store,
    dir: &Path,
    until: u64,
) -> Result<u64, archtrace_store::QueryError> {
    let mut reader = LogReader::new(dir, store.log_offset(CONSUMER)?);
    let mut underived = Underived(store.underived()?);
    let mut records = Vec::new();
    let mut loaded = 0;
    while reader.position() < until {
        records.clear();
        reader.read(until, BATCH_BYTES, &mut records)?;
        let Some(last) = records.last() else { break };
        let spans = spans_of(&records);
        underived.extend(&spans);
        let refs: Vec<&Span> = spans.iter().collect();
        store.append_logged(&refs, CONSUMER, last.end, underived.0)?;
        loaded += spans.len() as u64;
    }
    Ok(loaded)
}

/// Converted spans of consecutive log records, up to `end`.
struct Batch {
    spans: Vec<Span>,
    end: u64,
    received_ns: i64,
}

/// Reads and converts the log on a thread of its own, a batch ahead of the loader: decoding
/// and converting overlap with the store's commit.
fn read_ahead(dir: PathBuf, mut position: u64, state: &LogState, batches: SyncSender<Batch>) {
    let mut reader = LogReader::new(&dir, position);
    let mut records = Vec::new();
    loop {
        let until = state.durable_end.load(Ordering::Acquire);
        if position >= until {
            if !state.wait_beyond(position, Duration::from_millis(200))
                && position >= state.durable_end.load(Ordering::Acquire)
            {
                return;
            }
            continue;
        }
        records.clear();
        if let Err(err) = reader.read(until, BATCH_BYTES, &mut records) {
            tracing::error!(error = %err, "could not read the request log; retrying");
            std::thread::sleep(Duration::from_secs(1));
            reader = LogReader::new(&dir, position);
            continue;
        }
        let Some(last) = records.last() else { continue };
        let batch = Batch {
            end: last.end,
            received_ns: last.received_ns,
            spans: spans_of(&records),
        };
        position = batch.end;
        if batches.send(batch).is_err() {
            return;
        }
    }
}

fn run(
    mut store: Store,
    dir: PathBuf,
    from: u64,
    mut underived: Underived,
    state: &LogState,
    metrics: &LoaderMetrics,
    mut on_load: Option<OnLoad>,
) -> Store {
    let (sender, batches) = std::sync::mpsc::sync_channel(1);
    std::thread::scope(|scope| {
        let reading_dir = dir.clone();
        std::thread::Builder::new()
            .name("archtrace-log-reader".into())
            .spawn_scoped(scope, move || read_ahead(reading_dir, from, state, sender))
            .expect("spawning the log reader thread");
        for Batch {
            spans,
            end,
            received_ns,
        } in batches
        {
            let refs: Vec<&Span> = spans.iter().collect();
            let started = Instant::now();
            // What goes on to derivation is underived until a clean stop has written it all.
            if on_load.is_some() {
                underived.extend(&spans);
            }
            // Until the store takes the batch, the loader retries it: the log keeps it
            // meanwhile, and past its bound clients are refused.
            while let Err(err) = store.append_logged(&refs, CONSUMER, end, underived.0) {
                metrics.commit_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %err, spans = refs.len(), "could not store spans from the log; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
            metrics.commit.observe(started.elapsed().as_secs_f64());
            metrics
                .loaded_spans
                .fetch_add(spans.len() as u64, Ordering::Relaxed);
            drop(refs);
            state.loaded.store(end, Ordering::Release);
            state
                .loaded_received_ns
                .store(received_ns, Ordering::Relaxed);
            if let Some(on_load) = on_load.as_mut() {
                on_load(spans);
            }
            match log::remove_segments_before(&dir, end) {
                Ok(freed) => {
                    state.disk_bytes.fetch_sub(
                        freed.min(state.disk_bytes.load(Ordering::Relaxed)),
                        Ordering::Relaxed,
                    );
                }
                Err(err) => tracing::warn!(error = %err, "could not delete loaded log segments"),
            }
        }
    });
    if let Err(err) = store.checkpoint() {
        tracing::warn!(error = %err, "checkpoint on shutdown failed; the write-ahead log keeps the data");
    }
    store
}
