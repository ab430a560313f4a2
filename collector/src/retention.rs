//! The retention thread of a running server: every so often it deletes raw spans older than
//! `--retention` and derived buckets older than `--bucket-retention`, in small transactions,
//! while the server goes on serving.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use archtrace_store::retention::{Pruned, Pruner};

#[derive(Clone, Debug)]
pub struct RetentionSettings {
    /// Raw spans older than this are deleted; `None` keeps them.
    pub spans: Option<Duration>,
    /// Derived buckets older than this are deleted; `None` keeps them.
    pub buckets: Option<Duration>,
    /// How often to prune.
    pub every: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            spans: Some(Duration::from_secs(7 * 86_400)),
            buckets: Some(Duration::from_secs(90 * 86_400)),
            every: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Default)]
pub struct RetentionMetrics {
    pub spans_deleted: AtomicU64,
    pub bucket_rows_deleted: AtomicU64,
    pub transactions: AtomicU64,
    pub failures: AtomicU64,
}

/// The running thread; dropping it stops the thread (after the pruning under way).
pub struct Retention {
    _stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

impl Retention {
    pub fn join(self) {
        let Retention { _stop, handle } = self;
        drop(_stop);
        let _ = handle.join();
    }
}

/// Starts pruning every `settings.every`; `None` when nothing is to be pruned.
pub fn start(
    pruner: Pruner,
    settings: RetentionSettings,
    metrics: Arc<RetentionMetrics>,
) -> Option<Retention> {
    if settings.spans.is_none() && settings.buckets.is_none() {
        return None;
    }
    let (stop, stopped) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("archtrace-retention".into())
        .spawn(move || loop {
            match stopped.recv_timeout(settings.every) {
                Err(RecvTimeoutError::Timeout) => prune(&pruner, &settings, &metrics),
                _ => return,
            }
        })
        .expect("spawning the retention thread");
    Some(Retention {
        _stop: stop,
        handle,
    })
}

fn cutoff(keep: Duration) -> i64 {
    archtrace_analyzer::time::now_ns()
        .saturating_sub(i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX))
}

fn prune(pruner: &Pruner, settings: &RetentionSettings, metrics: &RetentionMetrics) {
    let mut pruned = Pruned::default();
    let mut outcome = Ok(());
    if let Some(keep) = settings.spans {
        outcome = pruner.prune_spans(cutoff(keep), &mut pruned);
    }
    if let (Ok(()), Some(keep)) = (&outcome, settings.buckets) {
        outcome = pruner.prune_buckets(cutoff(keep), &mut pruned);
    }
    metrics
        .spans_deleted
        .fetch_add(pruned.spans, Ordering::Relaxed);
    metrics
        .bucket_rows_deleted
        .fetch_add(pruned.bucket_rows, Ordering::Relaxed);
    metrics
        .transactions
        .fetch_add(pruned.transactions, Ordering::Relaxed);
    if let Err(err) = outcome {
        metrics.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %err, "retention could not delete old data; it tries again later");
    } else if pruned != Pruned::default() {
        tracing::info!(
            spans = pruned.spans,
            bucket_rows = pruned.bucket_rows,
            transactions = pruned.transactions,
            "retention deleted old data"
        );
    }
}
