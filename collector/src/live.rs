//! The assembly thread of a running server: takes committed spans from the writer, derives
//! complete traces, and writes each minute and hour bucket once it has closed. Buckets not yet
//! written stay in memory, where snapshots read them too, so the live graph is current within
//! `trace_idle`.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use archtrace_analyzer::aggregate::{Aggregate, Buckets};
use archtrace_analyzer::Span;
use archtrace_store::buckets;
use archtrace_store::read::Reader;

use crate::assembly::{Assembler, AssemblySettings};

/// Committed requests waiting for the assembler; when it falls behind, the writer waits, its
/// queue fills, and clients are told to retry: memory stays bounded.
const HANDOFF_REQUESTS: usize = 64;

/// Buckets derived but not yet written, shared with snapshot queries.
#[derive(Default)]
pub struct Unwritten {
    minute: Option<Buckets>,
    hour: Option<Buckets>,
}

impl Unwritten {
    /// Merges what is still in memory for `[since, until)` into `into`, with the same plan of
    /// widths the store query uses, so nothing is counted twice.
    pub fn merge_window(&self, since_ns: i64, until_ns: i64, into: &mut Aggregate) {
        for (width, from, to) in buckets::plan(since_ns, until_ns) {
            let held = if width == buckets::MINUTE_NS {
                &self.minute
            } else {
                &self.hour
            };
            if let Some(held) = held {
                for (_, bucket) in held.buckets.range(from..to) {
                    into.merge(bucket);
                }
            }
        }
    }

    /// The buckets of one width held in memory that start in `[since, until)`.
    pub fn buckets_of_width(
        &self,
        width_ns: i64,
        since_ns: i64,
        until_ns: i64,
    ) -> impl Iterator<Item = (i64, &Aggregate)> {
        [self.minute.as_ref(), self.hour.as_ref()]
            .into_iter()
            .flatten()
            .filter(move |held| held.width_ns == width_ns)
            .flat_map(move |held| held.buckets.range(since_ns..until_ns.max(since_ns)))
            .map(|(start, aggregate)| (*start, aggregate))
    }

    fn absorb(&mut self, minute: Buckets, hour: Buckets) {
        for (slot, fresh) in [(&mut self.minute, minute), (&mut self.hour, hour)] {
            match slot {
                Some(held) => {
                    for (start, bucket) in fresh.buckets {
                        held.buckets.entry(start).or_default().merge(&bucket);
                    }
                }
                None => *slot = Some(fresh),
            }
        }
    }

    /// Takes the buckets that closed before `closed_before_ns` (all of them with `i64::MAX`).
    fn take_closed(&mut self, closed_before_ns: i64) -> Vec<(i64, Buckets)> {
        let mut out = Vec::new();
        for held in [self.minute.as_mut(), self.hour.as_mut()]
            .into_iter()
            .flatten()
        {
            let width = held.width_ns;
            let closed: Vec<i64> = held
                .buckets
                .keys()
                .copied()
                .take_while(|start| start.saturating_add(width) <= closed_before_ns)
                .collect();
            let mut taken = Buckets::new(width);
            for start in closed {
                if let Some(bucket) = held.buckets.remove(&start) {
                    taken.buckets.insert(start, bucket);
                }
            }
            if !taken.buckets.is_empty() {
                out.push((width, taken));
            }
        }
        out
    }
}

pub struct LiveAssembly {
    /// Dropping every clone of it ends the thread, after it has written what it holds.
    pub sender: SyncSender<Vec<Span>>,
    pub unwritten: Arc<Mutex<Unwritten>>,
    pub thread: JoinHandle<()>,
}

/// Starts the assembly thread; `connection` is its own connection to the store.
pub fn start(settings: AssemblySettings, connection: Reader) -> LiveAssembly {
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
    connection: Reader,
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
        let closed = {
            let mut held = unwritten.lock().unwrap_or_else(|e| e.into_inner());
            held.absorb(minute, hour);
            let before = if open {
                crate::graph::now_ns().saturating_sub(margin_ns)
            } else {
                i64::MAX
            };
            held.take_closed(before)
        };
        for (width, buckets) in closed {
            if let Err(err) = connection.write_buckets(width, &buckets.buckets) {
                // The raw spans are in the store: `archtrace rebuild` can derive this window again.
                tracing::error!(error = %err, "could not write derived edges; run `archtrace rebuild` for this window");
            }
        }
        if !open {
            return;
        }
    }
}
