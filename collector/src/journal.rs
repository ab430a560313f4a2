//! The acknowledgement path: one thread owns the request log's writer. It takes every request
//! waiting, appends them, makes them durable with one `fdatasync`, and only then answers them
//! all. What the store and the graph need is done behind it, by the loader.
//!
//! Memory stays bounded by the requests in flight; the log on disk is bounded by how far the
//! loader lags (`max_log_bytes`) and by the free space left on its disk. Past either bound,
//! requests are refused as overloaded, which OTLP clients retry.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use archtrace_store::log::{LogError, LogWriter};
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::histogram::LatencyHistogram;

/// Bounds on the log.
#[derive(Clone, Debug)]
pub struct LogLimits {
    /// Log bytes not yet loaded into the store before requests are refused.
    pub max_log_bytes: u64,
    /// Free space the log's disk keeps; below it, requests are refused. 0 keeps none: a
    /// request that finds the disk full is then refused when its write fails.
    pub min_free_disk_bytes: u64,
    /// A segment file is closed at this size and a new one begun.
    pub segment_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_log_bytes: 1 << 30,
            min_free_disk_bytes: 256 << 20,
            segment_bytes: 64 << 20,
        }
    }
}

/// One write group at most: a larger group would delay the first request's answer.
const MAX_GROUP_BYTES: u64 = 32 << 20;

#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error("the request log is full ({lag_bytes} bytes not yet stored, the bound is {max_log_bytes}; see --max-log-bytes); retry later")]
    LogFull { lag_bytes: u64, max_log_bytes: u64 },
    #[error("the disk of the request log has {free_bytes} bytes free, under the {min_free_bytes} kept free (--min-free-disk-bytes); retry later")]
    DiskFull {
        free_bytes: u64,
        min_free_bytes: u64,
    },
    #[error("the request log could not be written ({0}); it was cut back to its last durable record: retry later")]
    WriteFailed(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the request log could not be written ({0}); the server takes no more requests until restarted")]
    Failed(String),
}

/// How far one consumer of the log (the span loader, the deriver) has read and committed.
#[derive(Debug)]
pub struct ConsumerProgress {
    /// Offset committed in the store; `u64::MAX` while the consumer does not run, so it holds
    /// nothing back.
    pub committed: AtomicU64,
    /// When the last committed request was received (Unix ns).
    pub committed_received_ns: AtomicI64,
    /// Offset read: the deriver holds what it read beyond its commit in memory until its next
    /// checkpoint, so this, not the commit, tells whether it keeps up.
    read: AtomicU64,
}

impl Default for ConsumerProgress {
    fn default() -> Self {
        ConsumerProgress {
            committed: AtomicU64::new(u64::MAX),
            committed_received_ns: AtomicI64::new(0),
            read: AtomicU64::new(0),
        }
    }
}

impl ConsumerProgress {
    pub fn commit(&self, offset: u64, received_ns: i64) {
        self.committed_received_ns
            .store(received_ns, Ordering::Relaxed);
        self.read_to(offset);
        self.committed.store(offset, Ordering::Release);
    }

    /// Notes that the consumer has taken everything before `offset`.
    pub fn read_to(&self, offset: u64) {
        self.read.fetch_max(offset, Ordering::Relaxed);
    }

    pub fn runs(&self) -> bool {
        self.committed.load(Ordering::Acquire) != u64::MAX
    }
}

/// What the journal, the consumers and the admin listener share.
#[derive(Debug, Default)]
pub struct LogState {
    /// The log is durable up to here: every request below it was acknowledged.
    pub durable_end: AtomicU64,
    /// The span loader's progress (it does not run with `--spans sampled|none`).
    pub spans: ConsumerProgress,
    /// The deriver's progress (it does not run with `--no-derive`).
    pub derive: ConsumerProgress,
    /// Bytes of requests waiting for the journal thread.
    pub pending_bytes: AtomicU64,
    /// When the newest durable request was received (Unix ns).
    pub newest_received_ns: AtomicI64,
    /// Bytes the log's segments take on disk.
    pub disk_bytes: AtomicU64,
    pub fsync: LatencyHistogram,
    /// Set once a write failed: nothing more is accepted.
    failed: AtomicBool,
    /// Set once the journal has stopped: the loader drains and stops too.
    closed: Mutex<bool>,
    wake: Condvar,
    /// Held while segments are deleted: both consumers free what they have passed.
    freeing: Mutex<()>,
}

impl LogState {
    /// Whether a write failed for good: nothing more is accepted until a restart.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Deletes the log segments every running consumer has committed entirely.
    pub fn free_consumed(&self, dir: &Path) {
        let _freeing = self.freeing.lock().unwrap_or_else(|e| e.into_inner());
        match archtrace_store::log::remove_segments_before(dir, self.consumed()) {
            Ok(freed) => {
                let _ =
                    self.disk_bytes
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bytes| {
                            Some(bytes.saturating_sub(freed))
                        });
            }
            Err(err) => tracing::warn!(error = %err, "could not delete consumed log segments"),
        }
    }

    pub fn consumers(&self) -> [(&'static str, &ConsumerProgress); 2] {
        [("spans", &self.spans), ("derive", &self.derive)]
    }

    /// The offset below which every running consumer has committed: the log before it can go.
    pub fn consumed(&self) -> u64 {
        let durable = self.durable_end.load(Ordering::Acquire);
        self.consumers()
            .iter()
            .map(|(_, progress)| progress.committed.load(Ordering::Acquire))
            .min()
            .unwrap_or(durable)
            .min(durable)
    }

    /// Log bytes acknowledged and not yet committed by some consumer.
    pub fn lag_bytes(&self) -> u64 {
        self.durable_end
            .load(Ordering::Acquire)
            .saturating_sub(self.consumed())
    }

    /// Bytes acknowledged and not yet committed by one consumer.
    pub fn consumer_lag_bytes(&self, progress: &ConsumerProgress) -> u64 {
        if !progress.runs() {
            return 0;
        }
        self.durable_end
            .load(Ordering::Acquire)
            .saturating_sub(progress.committed.load(Ordering::Acquire))
    }

    /// Bytes acknowledged and not yet read by one consumer: how far behind it is.
    pub fn consumer_unread_bytes(&self, progress: &ConsumerProgress) -> u64 {
        if !progress.runs() {
            return 0;
        }
        self.durable_end
            .load(Ordering::Acquire)
            .saturating_sub(progress.read.load(Ordering::Relaxed))
    }

    /// How much older one consumer's last committed request is than the newest acknowledged.
    pub fn consumer_lag_seconds(&self, progress: &ConsumerProgress) -> f64 {
        if self.consumer_lag_bytes(progress) == 0 {
            return 0.0;
        }
        let newest = self.newest_received_ns.load(Ordering::Relaxed);
        let committed = progress.committed_received_ns.load(Ordering::Relaxed);
        (newest.saturating_sub(committed)).max(0) as f64 / 1e9
    }

    /// The largest lag of any consumer, in seconds.
    pub fn lag_seconds(&self) -> f64 {
        self.consumers()
            .iter()
            .map(|(_, progress)| self.consumer_lag_seconds(progress))
            .fold(0.0, f64::max)
    }

    fn notify(&self) {
        let _guard = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }

    fn close(&self) {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Waits until the log is durable beyond `position` or the journal has stopped (then
    /// `false`), for at most `timeout`.
    pub fn wait_beyond(&self, position: u64, timeout: Duration) -> bool {
        let closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if *closed || self.durable_end.load(Ordering::Acquire) > position {
            return !*closed;
        }
        let (closed, _) = self
            .wake
            .wait_timeout(closed, timeout)
            .unwrap_or_else(|e| e.into_inner());
        !*closed
    }
}

struct Entry {
    received_ns: i64,
    payload: Bytes,
    reply: oneshot::Sender<Result<(), JournalError>>,
}

/// The handle request handlers append through; cheap to clone. When every handle is gone, the
/// journal thread ends.
#[derive(Clone)]
pub struct Journal {
    sender: mpsc::Sender<Entry>,
    state: Arc<LogState>,
    limits: LogLimits,
    dir: PathBuf,
}

impl Journal {
    /// Starts the journal thread on `writer` (the log in `dir`).
    pub fn spawn(
        writer: LogWriter,
        dir: &Path,
        limits: LogLimits,
        state: Arc<LogState>,
    ) -> (Journal, JoinHandle<()>) {
        state.durable_end.store(writer.end(), Ordering::Release);
        let (sender, receiver) = mpsc::channel();
        let thread_state = state.clone();
        let handle = std::thread::Builder::new()
            .name("archtrace-journal".into())
            .spawn(move || run(writer, receiver, &thread_state))
            .expect("spawning the journal thread");
        (
            Journal {
                sender,
                state,
                limits,
                dir: dir.to_owned(),
            },
            handle,
        )
    }

    /// Queues a request's payload for the log, or refuses it at once when the log is over its
    /// bounds; the returned future resolves once the payload is durable.
    pub fn append(
        &self,
        payload: Bytes,
    ) -> Result<oneshot::Receiver<Result<(), JournalError>>, JournalError> {
        let size = payload.len() as u64;
        if let Some(refusal) = self.refusal(size) {
            return Err(refusal);
        }
        let (reply, done) = oneshot::channel();
        self.state.pending_bytes.fetch_add(size, Ordering::Relaxed);
        self.sender
            .send(Entry {
                received_ns: archtrace_analyzer::time::now_ns(),
                payload,
                reply,
            })
            .map_err(|_| {
                self.state.pending_bytes.fetch_sub(size, Ordering::Relaxed);
                JournalError::ShuttingDown
            })?;
        Ok(done)
    }

    /// Why a request of `size` bytes cannot be logged now, if it cannot: the log has failed, or
    /// it would go over its bounds. With `size` 0, whether the log takes anything at all.
    pub fn refusal(&self, size: u64) -> Option<JournalError> {
        if self.state.failed.load(Ordering::Relaxed) {
            return Some(JournalError::Failed("an earlier write failed".into()));
        }
        let lag_bytes = self.state.lag_bytes() + self.state.pending_bytes.load(Ordering::Relaxed);
        if lag_bytes + size > self.limits.max_log_bytes && lag_bytes > 0 {
            return Some(JournalError::LogFull {
                lag_bytes,
                max_log_bytes: self.limits.max_log_bytes,
            });
        }
        if self.limits.min_free_disk_bytes == 0 {
            // Nothing kept free: a full disk fails the write itself, which is refused too.
            return None;
        }
        let free_bytes = free_space(&self.dir)?;
        (free_bytes < self.limits.min_free_disk_bytes.saturating_add(size)).then_some(
            JournalError::DiskFull {
                free_bytes,
                min_free_bytes: self.limits.min_free_disk_bytes,
            },
        )
    }

    pub fn state(&self) -> &Arc<LogState> {
        &self.state
    }
}

/// Free bytes for unprivileged writers on the disk holding `dir`; `None` where it cannot be
/// told (the log then relies on its own bound).
fn free_space(dir: &Path) -> Option<u64> {
    let stats = rustix::fs::statvfs(dir).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

fn run(mut writer: LogWriter, receiver: mpsc::Receiver<Entry>, state: &LogState) {
    // `recv` fails once every `Journal` is dropped and nothing waits: that is shutdown.
    while let Ok(first) = receiver.recv() {
        let mut group_bytes = first.payload.len() as u64;
        let mut group = vec![first];
        while group_bytes < MAX_GROUP_BYTES {
            match receiver.try_recv() {
                Ok(entry) => {
                    group_bytes += entry.payload.len() as u64;
                    group.push(entry);
                }
                Err(_) => break,
            }
        }
        let outcome = if state.failed.load(Ordering::Relaxed) {
            Err(JournalError::Failed("an earlier write failed".into()))
        } else {
            let started = Instant::now();
            let written = group
                .iter()
                .try_for_each(|entry| writer.append(entry.received_ns, &entry.payload))
                .and_then(|()| writer.sync());
            state.fsync.observe(started.elapsed().as_secs_f64());
            written.map_err(|err| {
                // Nothing of the group is acknowledged. Cut the log back to its last durable
                // record, so that later records never follow a damaged one (a restart would
                // cut them away); if even that fails, or the log is gone, take nothing more.
                if let LogError::Deleted { .. } = err {
                    state.failed.store(true, Ordering::Relaxed);
                    tracing::error!(error = %err, "refusing all requests until restarted");
                    return JournalError::Failed(err.to_string());
                }
                let durable = state.durable_end.load(Ordering::Acquire);
                match writer.rewind(durable) {
                    Ok(()) => {
                        tracing::warn!(error = %err, "the request log could not be written (is its disk full?); the requests were refused for retry");
                        JournalError::WriteFailed(err.to_string())
                    }
                    Err(rewind) => {
                        state.failed.store(true, Ordering::Relaxed);
                        tracing::error!(error = %err, rewind = %rewind, "the request log could not be written nor cut back; refusing all requests until restarted");
                        JournalError::Failed(err.to_string())
                    }
                }
            })
        };
        state
            .pending_bytes
            .fetch_sub(group_bytes, Ordering::Relaxed);
        if let Ok(end) = &outcome {
            let newest = group.last().map_or(0, |e| e.received_ns);
            state.newest_received_ns.store(newest, Ordering::Relaxed);
            state
                .disk_bytes
                .fetch_add(group_bytes + 16 * group.len() as u64, Ordering::Relaxed);
            state.durable_end.store(*end, Ordering::Release);
            state.notify();
        }
        for entry in group {
            let _ = entry.reply.send(outcome.clone().map(|_| ()));
        }
    }
    state.close();
}
