//! The single writer: one thread owns the store's connection and commits what has queued as one
//! group, then answers every request in the group. A request is acknowledged only after its
//! spans are committed, so nothing acknowledged is lost.
//!
//! The queue in front of it is bounded by spans and by bytes ([`QueueLimits`]): a request that
//! does not fit is refused at once, so overload turns into `UNAVAILABLE`/503 for the client
//! instead of unbounded memory here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use archtrace_analyzer::Span;

use crate::Store;

/// How much may wait for the writer.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    pub max_spans: usize,
    /// What the waiting spans take in memory (`Span::memory_size`).
    pub max_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_spans: 262_144,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Spans per commit at most; a larger group would delay the first request's answer.
const MAX_GROUP_SPANS: usize = 65_536;

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error(
        "the span queue is full ({queued_spans} spans, {queued_bytes} bytes waiting); retry later"
    )]
    QueueFull {
        queued_spans: usize,
        queued_bytes: usize,
    },
    #[error("the store is shutting down")]
    ShuttingDown,
    #[error("could not commit spans to the store: {0}")]
    Commit(String),
}

/// Counters the admin listener exports.
#[derive(Debug, Default)]
pub struct WriterMetrics {
    pub queued_spans: AtomicU64,
    pub queued_bytes: AtomicU64,
    pub committed_spans: AtomicU64,
    pub commits: AtomicU64,
    pub commit_failures: AtomicU64,
    /// Commit latency histogram: counts per bucket of [`COMMIT_BUCKETS_SECONDS`], plus +Inf.
    pub commit_latency_buckets: [AtomicU64; COMMIT_BUCKETS_SECONDS.len() + 1],
    pub commit_latency_sum_micros: AtomicU64,
}

pub const COMMIT_BUCKETS_SECONDS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

impl WriterMetrics {
    fn observe_commit(&self, seconds: f64) {
        let bucket = COMMIT_BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(COMMIT_BUCKETS_SECONDS.len());
        self.commit_latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.commit_latency_sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
    }
}

/// Called once with the outcome of a write; runs on the writer thread, so it must be quick.
pub type Reply = Box<dyn FnOnce(Result<(), WriteError>) + Send>;

struct Request {
    spans: Vec<Span>,
    reservation: Reservation,
    reply: Reply,
}

#[derive(Default)]
struct Usage {
    spans: usize,
    bytes: usize,
}

/// Space held in the queue by one request, given back when the writer is done with it.
struct Reservation {
    spans: usize,
    bytes: usize,
    usage: Arc<Mutex<Usage>>,
    metrics: Arc<WriterMetrics>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage.spans -= self.spans;
        usage.bytes -= self.bytes;
        self.metrics
            .queued_spans
            .store(usage.spans as u64, Ordering::Relaxed);
        self.metrics
            .queued_bytes
            .store(usage.bytes as u64, Ordering::Relaxed);
    }
}

/// The handle request handlers use; cheap to clone. Dropping every handle and calling
/// [`WriterThread::join`] drains the queue and commits it.
#[derive(Clone)]
pub struct Writer {
    sender: mpsc::Sender<Request>,
    usage: Arc<Mutex<Usage>>,
    limits: QueueLimits,
    metrics: Arc<WriterMetrics>,
}

pub struct WriterThread {
    handle: JoinHandle<Store>,
}

impl WriterThread {
    /// Waits until every queued request is committed and answered; gives the store back.
    pub fn join(self) -> Store {
        match self.handle.join() {
            Ok(store) => store,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Receives every request's spans once they are committed (for live derivation).
pub type OnCommit = Box<dyn FnMut(Vec<Span>) + Send>;

impl Writer {
    /// Moves the store into a new writer thread. `on_commit` gets the spans of every committed
    /// request, after its client has been answered.
    pub fn spawn(
        mut store: Store,
        limits: QueueLimits,
        mut on_commit: Option<OnCommit>,
    ) -> (Writer, WriterThread) {
        let (sender, receiver) = mpsc::channel::<Request>();
        let metrics = Arc::new(WriterMetrics::default());
        let thread_metrics = metrics.clone();
        let handle = std::thread::Builder::new()
            .name("archtrace-writer".into())
            .spawn(move || {
                run(&mut store, receiver, &thread_metrics, &mut on_commit);
                if let Err(err) = store.checkpoint() {
                    tracing::warn!(error = %err, "checkpoint on shutdown failed; the write-ahead log keeps the data");
                }
                store
            })
            .expect("spawning the writer thread");
        let writer = Writer {
            sender,
            usage: Arc::new(Mutex::new(Usage::default())),
            limits,
            metrics,
        };
        (writer, WriterThread { handle })
    }

    pub fn metrics(&self) -> &Arc<WriterMetrics> {
        &self.metrics
    }

    /// Queues spans for the next commit. `bytes` is the request's size, which bounds the memory
    /// the queue holds. `reply` is called after the commit (or with the error that stopped it).
    /// A request that does not fit is refused at once and `reply` is not called.
    pub fn submit(&self, spans: Vec<Span>, bytes: usize, reply: Reply) -> Result<(), WriteError> {
        let reservation = self.reserve(spans.len(), bytes)?;
        self.sender
            .send(Request {
                spans,
                reservation,
                reply,
            })
            .map_err(|_| WriteError::ShuttingDown)
    }

    fn reserve(&self, spans: usize, bytes: usize) -> Result<Reservation, WriteError> {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        // An empty queue takes any request, so one larger than the limits is not refused forever.
        let empty = usage.spans == 0 && usage.bytes == 0;
        if !empty
            && (usage.spans + spans > self.limits.max_spans
                || usage.bytes + bytes > self.limits.max_bytes)
        {
            return Err(WriteError::QueueFull {
                queued_spans: usage.spans,
                queued_bytes: usage.bytes,
            });
        }
        usage.spans += spans;
        usage.bytes += bytes;
        self.metrics
            .queued_spans
            .store(usage.spans as u64, Ordering::Relaxed);
        self.metrics
            .queued_bytes
            .store(usage.bytes as u64, Ordering::Relaxed);
        Ok(Reservation {
            spans,
            bytes,
            usage: self.usage.clone(),
            metrics: self.metrics.clone(),
        })
    }
}

fn run(
    store: &mut Store,
    receiver: mpsc::Receiver<Request>,
    metrics: &WriterMetrics,
    on_commit: &mut Option<OnCommit>,
) {
    // `recv` fails once every `Writer` is dropped and the queue is empty: that is shutdown.
    while let Ok(first) = receiver.recv() {
        let mut group_spans = first.spans.len();
        let mut group = vec![first];
        while group_spans < MAX_GROUP_SPANS {
            match receiver.try_recv() {
                Ok(request) => {
                    group_spans += request.spans.len();
                    group.push(request);
                }
                Err(_) => break,
            }
        }
        let spans: Vec<&Span> = group.iter().flat_map(|r| r.spans.iter()).collect();
        let started = Instant::now();
        let outcome = store.append(&spans).map_err(|err| {
            metrics.commit_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %err, spans = spans.len(), "commit failed");
            WriteError::Commit(err.to_string())
        });
        metrics.observe_commit(started.elapsed().as_secs_f64());
        if outcome.is_ok() {
            metrics
                .committed_spans
                .fetch_add(spans.len() as u64, Ordering::Relaxed);
        }
        drop(spans);
        for Request {
            spans,
            reservation,
            reply,
        } in group
        {
            // Free the queue space before answering, so that a client that has its answer never
            // sees its own spans still counted as queued.
            drop(reservation);
            reply(outcome.clone());
            if let (Ok(()), Some(on_commit)) = (&outcome, on_commit.as_mut()) {
                on_commit(spans);
            }
        }
    }
}
