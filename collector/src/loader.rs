//! The log reader and the span loader. One thread reads what the journal has made durable and
//! decodes it once; the loader thread appends the spans (`--spans all`) together with its log
//! offset in one transaction, so that after a crash the log is replayed from exactly what the
//! store holds: nothing is lost and nothing is stored twice. It hands every batch on to the
//! deriver, which commits its own offset (see `live`). Each consumer takes only the records
//! beyond its own offset; segments every consumer has passed are deleted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use archtrace_analyzer::Span;
use archtrace_formats::otlp::{self, Conversion, Detail};
use archtrace_store::log::{LogReader, Record};
use archtrace_store::{Consumed, Store};

use crate::histogram::LatencyHistogram;
use crate::journal::LogState;
use crate::live::Derivable;

/// The consumer name the loader commits its offset under.
pub const CONSUMER: &str = "spans";

/// Log payload bytes per store commit at most (about 20k spans). Measured over 20 s of gRPC load:
/// 8 MiB loads as much as 16 MiB with about 90 MB less peak RSS; 4 MiB saves 50 MB more but
/// loads 7-13% less.
const STORE_BATCH_BYTES: usize = 8 << 20;
/// Log payload bytes per batch when no spans are stored: the deriver takes spans at any batch
/// size, and each batch waiting for it holds its spans in memory.
const DERIVE_BATCH_BYTES: usize = 2 << 20;

/// Counters the admin listener exports.
#[derive(Debug, Default)]
pub struct LoaderMetrics {
    pub loaded_spans: AtomicU64,
    pub commit_failures: AtomicU64,
    pub commit: LatencyHistogram,
}

/// Where the deriver takes batches, and the offset it has committed.
pub struct DeriverFeed {
    pub sender: SyncSender<Derivable>,
    /// The log offset it resumes from: it is handed only what lies beyond.
    pub from: u64,
    /// It keeps sampled traces for the store, so it needs the spans' detail.
    pub samples: bool,
}

pub struct Loader {
    handle: JoinHandle<()>,
}

impl Loader {
    /// Starts reading the log in `dir`: into `store` (when raw spans are kept) from the offset
    /// it has committed, and on to the deriver from its own.
    pub fn spawn(
        store: Option<Store>,
        dir: &Path,
        state: Arc<LogState>,
        metrics: Arc<LoaderMetrics>,
        deriver: Option<DeriverFeed>,
        multiplier_key: Option<Arc<str>>,
    ) -> Result<Loader, archtrace_store::QueryError> {
        let spans_from = match &store {
            Some(store) => {
                // A store that kept no spans so far stores from where the deriver is.
                let from = match store.log_offset(CONSUMER)? {
                    Some(offset) => offset,
                    None => deriver.as_ref().map_or(0, |feed| feed.from),
                };
                state.spans.commit(from, 0);
                Some(from)
            }
            None => None,
        };
        let dir = dir.to_owned();
        let handle = std::thread::Builder::new()
            .name("archtrace-loader".into())
            .spawn(move || {
                let spans_store = store.zip(spans_from);
                run(spans_store, dir, &state, &metrics, deriver, multiplier_key)
            })
            .expect("spawning the loader thread");
        Ok(Loader { handle })
    }

    /// Waits until everything the journal made durable is loaded and handed on (the journal
    /// must have stopped); the deriver's feed is closed then.
    pub fn join(self) {
        if let Err(panic) = self.handle.join() {
            std::panic::resume_unwind(panic)
        }
    }
}

/// The spans of logged requests, and where each record's spans end in them. The journal logs
/// only requests whose spans all passed validation, so none is rejected here.
fn spans_of(records: &[Record], conversion: &Conversion) -> (Vec<Span>, Vec<RecordSpans>) {
    let mut spans = Vec::new();
    let mut ends = Vec::with_capacity(records.len());
    for record in records {
        // The receivers checked every logged request (with prost, before they read requests in
        // place): only a bug could fail here, as the CRC matched. The record is skipped.
        if let Err(err) = otlp::convert_decodable(&record.payload, conversion, &mut spans) {
            tracing::error!(end = record.end, error = %err, "a logged request does not decode; skipped");
        }
        ends.push(RecordSpans {
            end: record.end,
            spans_end: spans.len(),
        });
    }
    (spans, ends)
}

/// A record of a batch: its end offset, and the end of its spans in the batch's spans.
struct RecordSpans {
    end: u64,
    spans_end: usize,
}

/// Converted spans of consecutive log records, up to `end`.
struct Batch {
    spans: Vec<Span>,
    records: Vec<RecordSpans>,
    end: u64,
    received_ns: i64,
}

impl Batch {
    /// Where the spans of the records beyond `offset` begin.
    fn spans_beyond(&self, offset: u64) -> usize {
        self.records
            .iter()
            .take_while(|record| record.end <= offset)
            .last()
            .map_or(0, |record| record.spans_end)
    }
}

/// Reads and converts the log on a thread of its own, a batch ahead of the loader: decoding
/// and converting overlap with the store's commit.
fn read_ahead(
    dir: PathBuf,
    mut position: u64,
    batch_bytes: usize,
    conversion: &Conversion,
    state: &LogState,
    batches: SyncSender<Batch>,
) {
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
        if reader.position() != position {
            reader = LogReader::new(&dir, position);
        }
        records.clear();
        if let Err(err) = reader.read(until, batch_bytes, &mut records) {
            tracing::error!(error = %err, "could not read the request log; retrying");
            std::thread::sleep(Duration::from_secs(1));
            reader = LogReader::new(&dir, position);
            continue;
        }
        let Some(last) = records.last() else { continue };
        let (end, received_ns) = (last.end, last.received_ns);
        let (spans, records) = spans_of(&records, conversion);
        let batch = Batch {
            end,
            received_ns,
            spans,
            records,
        };
        position = batch.end;
        if batches.send(batch).is_err() {
            return;
        }
    }
}

fn run(
    mut spans_store: Option<(Store, u64)>,
    dir: PathBuf,
    state: &LogState,
    metrics: &LoaderMetrics,
    mut deriver: Option<DeriverFeed>,
    multiplier_key: Option<Arc<str>>,
) {
    let from = [
        spans_store.as_ref().map(|(_, from)| *from),
        deriver.as_ref().map(|feed| feed.from),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or_else(|| state.durable_end.load(Ordering::Acquire));
    // Only stored spans need their attributes, events and resource; derivation reads none.
    let detail = if spans_store.is_some() || deriver.as_ref().is_some_and(|feed| feed.samples) {
        Detail::Keep
    } else {
        Detail::Drop
    };
    let conversion = Conversion::new(detail).with_multiplier_key(multiplier_key);
    let batch_bytes = if spans_store.is_some() {
        STORE_BATCH_BYTES
    } else {
        DERIVE_BATCH_BYTES
    };
    let (sender, batches) = std::sync::mpsc::sync_channel(1);
    std::thread::scope(|scope| {
        let reading_dir = dir.clone();
        std::thread::Builder::new()
            .name("archtrace-log-reader".into())
            .spawn_scoped(scope, move || {
                read_ahead(reading_dir, from, batch_bytes, &conversion, state, sender)
            })
            .expect("spawning the log reader thread");
        for mut batch in batches {
            if let Some((store, loaded)) = spans_store.as_mut() {
                if batch.end > *loaded {
                    load(store, &batch, state, metrics);
                    *loaded = batch.end;
                }
            }
            if let Some(feed) = deriver.as_mut() {
                if batch.end > feed.from {
                    let first = batch.spans_beyond(feed.from);
                    feed.from = batch.end;
                    // The whole batch moves on, unless the deriver already has its first records.
                    let spans = if first == 0 {
                        std::mem::take(&mut batch.spans)
                    } else {
                        batch.spans.split_off(first)
                    };
                    let derivable = Derivable {
                        spans,
                        end: batch.end,
                        received_ns: batch.received_ns,
                    };
                    // Blocks when the deriver is behind: the log then grows to its bound and
                    // clients are told to retry, instead of memory growing here.
                    if feed.sender.send(derivable).is_err() {
                        tracing::error!("the deriver stopped; spans are no longer derived");
                        deriver = None;
                    }
                }
            }
            state.free_consumed(&dir);
        }
    });
}

/// Appends the spans of a batch's records beyond the store's offset, with the batch's end.
fn load(store: &mut Store, batch: &Batch, state: &LogState, metrics: &LoaderMetrics) {
    let loaded = state.spans.committed.load(Ordering::Acquire);
    let refs: Vec<&Span> = batch.spans[batch.spans_beyond(loaded)..].iter().collect();
    let started = Instant::now();
    let consumed = Consumed {
        consumer: CONSUMER,
        offset: batch.end,
        spans: &refs,
        buckets: &[],
        state_file: None,
    };
    // Until the store takes the batch, the loader retries it: the log keeps it meanwhile, and
    // past its bound clients are refused.
    while let Err(err) = store.commit_consumed(&consumed) {
        metrics.commit_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = ?err, spans = refs.len(), "could not store spans from the log; retrying");
        std::thread::sleep(Duration::from_secs(1));
    }
    metrics.commit.observe(started.elapsed().as_secs_f64());
    metrics
        .loaded_spans
        .fetch_add(refs.len() as u64, Ordering::Relaxed);
    state.spans.commit(batch.end, batch.received_ns);
}
