//! The deriver: a consumer of the request log of its own. It takes the spans the log reader
//! decoded, derives complete traces, and keeps minute and hour buckets in memory (where
//! snapshots read them too, so the live graph is current within `trace_idle`).
//!
//! Every few seconds it commits a checkpoint in one transaction: the buckets that closed, the
//! sampled spans it kept (`--spans sampled`), what it still holds in memory, and the log offset
//! all of that accounts for. After a crash it resumes from that state and offset: no span
//! counted twice or missed, and no raw spans needed to recover.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use archtrace_analyzer::{shared_text, Span};
use archtrace_query::Unwritten;
use archtrace_store::{Consumed, QueryError, Store};

use crate::assembly::{Assembler, AssemblySettings, SavedAssembler};
use crate::journal::LogState;
use crate::loader::DeriverFeed;
use crate::service_graph::ServiceGraph;

/// The consumer name the deriver commits its offset and state under.
pub const CONSUMER: &str = "derive";

/// Batches of decoded requests waiting for the deriver; when it falls behind, the loader waits,
/// the log grows to its bound and clients are told to retry: memory stays bounded.
const HANDOFF_BATCHES: usize = 4;

/// How often the deriver commits; a crash replays at most about this much of the log.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// How often the deriver looks for days to roll up (summed into one bucket a day).
const ROLL_UP_EVERY: Duration = Duration::from_secs(600);

/// Spans of consecutive log records, up to `end`.
pub struct Derivable {
    pub spans: Vec<Span>,
    pub end: u64,
    pub received_ns: i64,
}

#[derive(Debug, Default)]
pub struct DeriverMetrics {
    pub checkpoints: AtomicU64,
    pub checkpoint_failures: AtomicU64,
    pub spans_sampled: AtomicU64,
    /// Every derived call, as Tempo's service graphs count them.
    pub service_graph: ServiceGraph,
}

pub struct Deriver {
    /// For the loader; dropping it ends the thread, after it has derived and committed all.
    pub feed: DeriverFeed,
    pub unwritten: Arc<Mutex<Unwritten>>,
    pub thread: JoinHandle<()>,
}

/// Starts every state file: postcard is not self-describing, so a file written with other
/// types must be recognised, not decoded into garbage. Bump it when a saved type changes.
const STATE_FORMAT: &[u8] = b"archtrace deriver state 6\n";
/// The format before shared texts were written once ([`shared_text`]); still read, so that an
/// upgrade resumes from the state it finds.
const STATE_FORMAT_PLAIN_TEXTS: &[u8] = b"archtrace deriver state 5\n";

/// The checkpoint a state file holds, in either format.
fn read_state(bytes: &[u8]) -> Result<Checkpoint<'_>, String> {
    if let Some(saved) = bytes.strip_prefix(STATE_FORMAT) {
        shared_text::read_shared(|| postcard::from_bytes(saved))
    } else if let Some(saved) = bytes.strip_prefix(STATE_FORMAT_PLAIN_TEXTS) {
        postcard::from_bytes(saved)
    } else {
        return Err("it was written by another version of archtrace".into());
    }
    .map_err(|err| err.to_string())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Checkpoint<'a> {
    #[serde(borrow)]
    assembler: SavedAssembler<'a>,
    unwritten: std::borrow::Cow<'a, Unwritten>,
}

/// Starts the deriver on `store` (a writer of its own), resuming from its last checkpoint.
/// A store that never had one is derived from where its span loader got to: everything before
/// was derived by an archtrace before schema v5, or stored with `--no-derive` for a rebuild.
pub fn start(
    settings: AssemblySettings,
    mut store: Store,
    state: Arc<LogState>,
    dir: PathBuf,
    metrics: Arc<DeriverMetrics>,
) -> Result<Deriver, QueryError> {
    let now = Instant::now();
    let state_file = store.consumer_state_file(CONSUMER)?;
    // New state files are numbered after the one committed, never overwriting it.
    let state_files = state_file
        .as_deref()
        .and_then(|name| {
            name.strip_prefix(CONSUMER)?
                .strip_prefix('-')?
                .strip_suffix(".state")
        })
        .and_then(|number| number.parse().ok())
        .unwrap_or(0);
    let (from, assembler, unwritten) = match store.log_offset(CONSUMER)? {
        Some(offset) => {
            let saved = match state_file {
                Some(name) => std::fs::read(dir.join(&name))
                    .map_err(|err| format!("{name}: {err}"))
                    .and_then(|bytes| {
                        read_state(&bytes)
                            .map(|checkpoint| {
                                (
                                    Assembler::restore(settings.clone(), checkpoint.assembler, now),
                                    checkpoint.unwritten.into_owned(),
                                )
                            })
                            .map_err(|err| format!("{name}: {err}"))
                    }),
                None => Ok((Assembler::new(settings.clone()), Unwritten::default())),
            };
            match saved {
                Ok((assembler, unwritten)) => (offset, assembler, unwritten),
                Err(err) => {
                    tracing::error!(error = %err, "the deriver's saved state cannot be read; derivation resumes without it (run `archtrace rebuild` over the last hour)");
                    (
                        offset,
                        Assembler::new(settings.clone()),
                        Unwritten::default(),
                    )
                }
            }
        }
        None => {
            let from = store.log_offset(crate::loader::CONSUMER)?.unwrap_or(0);
            // Committed at once, so that a crash before the first checkpoint replays from here.
            store.commit_consumed(&Consumed {
                consumer: CONSUMER,
                offset: from,
                spans: &[],
                buckets: &[],
                state_file: None,
            })?;
            (from, Assembler::new(settings.clone()), Unwritten::default())
        }
    };
    let mut assembler = assembler;
    assembler.report_to(metrics.service_graph.clone());
    state.derive.commit(from, 0);
    let sample = settings.sample.is_some();
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Derivable>(HANDOFF_BATCHES);
    let unwritten = Arc::new(Mutex::new(unwritten));
    let shared = unwritten.clone();
    let mut deriving = Deriving {
        settings,
        assembler,
        store,
        position: from,
        received_ns: 0,
        committed: from,
        state,
        dir,
        state_files,
        metrics,
    };
    let thread = std::thread::Builder::new()
        .name("archtrace-deriver".into())
        .spawn(move || deriving.run(receiver, &shared))
        .expect("spawning the deriver thread");
    Ok(Deriver {
        feed: DeriverFeed {
            sender,
            from,
            samples: sample,
        },
        unwritten,
        thread,
    })
}

struct Deriving {
    settings: AssemblySettings,
    assembler: Assembler,
    store: Store,
    /// The log offset of the last spans added.
    position: u64,
    received_ns: i64,
    committed: u64,
    state: Arc<LogState>,
    /// The request log's folder, where the state files go beside the segments.
    dir: PathBuf,
    /// The number of the last state file written.
    state_files: u64,
    metrics: Arc<DeriverMetrics>,
}

impl Deriving {
    fn run(&mut self, receiver: Receiver<Derivable>, unwritten: &Mutex<Unwritten>) {
        let tick =
            (self.settings.trace_idle / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
        // A bucket is written once no trace that could still add to it is waiting.
        let margin_ns = i64::try_from(self.settings.trace_idle.as_nanos())
            .unwrap_or(i64::MAX)
            .saturating_add(5_000_000_000);
        let mut last_tick = Instant::now();
        let mut last_checkpoint = Instant::now();
        let mut last_roll_up: Option<Instant> = None;
        loop {
            let open = match receiver.recv_timeout(tick) {
                Ok(derivable) => {
                    self.assembler.add(derivable.spans, Instant::now());
                    self.position = derivable.end;
                    self.state.derive.read_to(derivable.end);
                    self.received_ns = derivable.received_ns;
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
                self.assembler.tick(last_tick);
            } else {
                self.assembler.drain(last_tick);
            }
            let (minute, hour) = self.assembler.take_buckets();
            unwritten
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .absorb(minute, hour);
            if open && last_checkpoint.elapsed() < CHECKPOINT_EVERY {
                continue;
            }
            last_checkpoint = Instant::now();
            let before = if open {
                archtrace_analyzer::time::now_ns().saturating_sub(margin_ns)
            } else {
                i64::MAX
            };
            // Until a checkpoint succeeds, it is tried again; the log keeps what it covers, and
            // past its bound clients are refused.
            while let Err(err) = self.checkpoint(unwritten, before) {
                self.metrics
                    .checkpoint_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = ?err, "could not commit derived edges; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
            // At the start, every ten minutes and at the end (a store left behind is rolled up).
            if !open || last_roll_up.is_none_or(|at| at.elapsed() >= ROLL_UP_EVERY) {
                last_roll_up = Some(Instant::now());
                // Days over before `before` (now, at the end): all they held is written.
                let over = before.min(archtrace_analyzer::time::now_ns());
                match self.store.roll_up_days(over) {
                    Ok(0) => {}
                    Ok(days) => tracing::info!(days, "rolled up days of derived buckets"),
                    Err(err) => {
                        tracing::warn!(error = ?err, "could not roll up days; trying again later")
                    }
                }
            }
            if !open {
                return;
            }
        }
    }

    /// Commits the closed buckets, the kept samples, the rest of what is held and the offset
    /// in one transaction. Closed buckets leave memory under the lock snapshots hold while they
    /// read the store: a query sees each bucket in exactly one of the two.
    fn checkpoint(&mut self, unwritten: &Mutex<Unwritten>, before: i64) -> Result<(), QueryError> {
        let kept = self.assembler.take_kept();
        let mut held = unwritten.lock().unwrap_or_else(|e| e.into_inner());
        if self.position == self.committed && kept.is_empty() && !held.has_closed(before) {
            return Ok(());
        }
        let closed = held.take_closed(before);
        // The state goes to a file of its own, durable before the transaction names it: tens
        // of MB under load, which DuckDB would hold in memory and write twice (WAL, table).
        // It is encoded straight into the file, never whole in memory.
        self.state_files += 1;
        let name = format!("{CONSUMER}-{:020}.state", self.state_files);
        let kept_refs: Vec<&Span> = kept.iter().collect();
        let outcome = write_durably(&self.dir, &name, |file| {
            file.write_all(STATE_FORMAT)?;
            let checkpoint = Checkpoint {
                assembler: self.assembler.save(Instant::now()),
                unwritten: std::borrow::Cow::Borrowed(&*held),
            };
            shared_text::write_shared(|| postcard::to_io(&checkpoint, file))
                .map(drop)
                .map_err(std::io::Error::other)
        })
        .map_err(|err| QueryError::ConsumerState {
            consumer: CONSUMER.into(),
            reason: format!("could not write {name}: {err}"),
        })
        .and_then(|()| {
            self.store.commit_consumed(&Consumed {
                consumer: CONSUMER,
                offset: self.position,
                spans: &kept_refs,
                buckets: &closed,
                state_file: Some(&name),
            })
        });
        if let Err(err) = outcome {
            let _ = std::fs::remove_file(self.dir.join(&name));
            // Back where they were, for the next attempt.
            for buckets in closed {
                held.add(buckets);
            }
            drop(held);
            self.assembler.put_back_kept(kept);
            return Err(err);
        }
        remove_state_files_but(&self.dir, &name);
        drop(held);
        self.committed = self.position;
        self.metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .spans_sampled
            .fetch_add(kept.len() as u64, Ordering::Relaxed);
        self.state.derive.commit(self.position, self.received_ns);
        self.state.free_consumed(&self.dir);
        Ok(())
    }
}

/// Writes `dir/name` with `write` and makes the file and its name durable.
fn write_durably(
    dir: &std::path::Path,
    name: &str,
    write: impl FnOnce(&mut BufWriter<PacedFile>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    // The folder is made again if it was deleted under the server: the journal then refuses
    // requests (its segment is gone), and the deriver still commits what it holds.
    std::fs::create_dir_all(dir)?;
    let file = PacedFile {
        file: File::create(dir.join(name))?,
        unsynced: 0,
    };
    let mut file = BufWriter::with_capacity(PACED_SYNC_BYTES, file);
    write(&mut file)?;
    let file = file
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)?;
    file.file.sync_data()?;
    File::open(dir)?.sync_all()
}

/// Bytes a state file is written in before they are made durable.
const PACED_SYNC_BYTES: usize = 1 << 20;

/// A file made durable every [`PACED_SYNC_BYTES`] as it is written. A state file is tens of MB
/// under load; written at once, it fills the disk's queue, and the request log's `fdatasync`s,
/// which every acknowledgement waits for, queue behind it for tens of milliseconds.
struct PacedFile {
    file: File,
    unsynced: usize,
}

impl Write for PacedFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(bytes)?;
        self.unsynced += written;
        if self.unsynced >= PACED_SYNC_BYTES {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Deletes the deriver's state files other than `current` (older ones, or one a crash left
/// behind before its transaction committed).
fn remove_state_files_but(dir: &std::path::Path, current: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(CONSUMER) && name.ends_with(".state") && name != current {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use archtrace_analyzer::SpanKind;

    /// A state file in the format before shared texts and in today's, of one checkpoint: the
    /// waiting spans with detail (as with `--spans sampled`) of one resource, its texts shared
    /// as the conversion of a request shares them.
    fn state_files() -> (Vec<u8>, Vec<u8>) {
        let mut assembler = Assembler::new(AssemblySettings {
            sample: Some(3),
            ..AssemblySettings::default()
        });
        let resource: Arc<str> =
            Arc::from(r#"{"service.name":"checkout","k8s.pod.name":"checkout-7d9f8c6b5-x2k4q"}"#);
        let spans = (1u8..=40)
            .map(|i| {
                let mut span = Span::new([i / 4 + 1; 16], [i; 8], "checkout", SpanKind::Server)
                    .with_name("GET /cart");
                span.detail.resource_attributes_json = resource.clone();
                span.detail.attributes_json = format!(r#"{{"http.response.status_code":{i}}}"#);
                span
            })
            .collect();
        let now = Instant::now();
        assembler.add(spans, now);
        let checkpoint = Checkpoint {
            assembler: assembler.save(now),
            unwritten: std::borrow::Cow::Owned(Unwritten::default()),
        };
        let plain = postcard::to_stdvec(&checkpoint).unwrap();
        let shared = shared_text::write_shared(|| postcard::to_stdvec(&checkpoint)).unwrap();
        (
            [STATE_FORMAT_PLAIN_TEXTS, &plain].concat(),
            [STATE_FORMAT, &shared].concat(),
        )
    }

    #[test]
    fn a_state_file_of_the_format_before_shared_texts_is_still_read() {
        let (before, now) = state_files();
        let resources = |bytes: &[u8]| bytes.windows(12).filter(|w| w == b"k8s.pod.name").count();
        assert_eq!((resources(&before), resources(&now)), (40, 1));
        // Both read back to the same checkpoint.
        for bytes in [&before, &now] {
            let read = read_state(bytes).unwrap();
            let again = postcard::to_stdvec(&read).unwrap();
            assert!(again == before[STATE_FORMAT_PLAIN_TEXTS.len()..]);
        }
        let err = read_state(b"archtrace deriver state 4\n").err().unwrap();
        assert!(err.contains("another version"), "{err}");
    }
}
