//! A derive worker: reads closed windows of `otel_traces` (its share of the traces), derives
//! them with archtrace's own contract, writes their buckets, and moves its watermark.
//!
//! Every trace is derived by exactly one worker (`cityHash64(TraceId) % N = k`) and in exactly
//! one window (the one its first span starts in), whatever the cluster's sharding key. A window
//! is closed once `delay` has passed since its end, so that spans still on their way through
//! Collectors have landed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use archtrace_analyzer::aggregate::Buckets;
use archtrace_analyzer::derive::NoLookup;
use archtrace_store::buckets::{HOUR_NS, MINUTE_NS};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::buckets::{self, Provenance};
use crate::traces::{self, ReadCounts, WindowRead};
use crate::{schema, Connection, Endpoint, Error};

/// Worker `index` of `count` (counted from 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Reads `k/N`.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: write the worker as k/N, e.g. 0/4"))?;
        let number = |part: &str| {
            part.trim()
                .parse::<u32>()
                .map_err(|_| format!("{text:?}: {part:?} is not a whole number"))
        };
        let (index, count) = (number(index)?, number(count)?);
        if count == 0 {
            return Err(format!("{text:?}: there must be at least one worker"));
        }
        if index >= count {
            return Err(format!(
                "{text:?}: workers are counted from 0, so with {count} they are 0/{count} to {}/{count}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// The name rows and progress are kept under.
    pub fn label(&self) -> String {
        format!("{}/{}", self.index, self.count)
    }
}

#[derive(Clone, Debug)]
pub struct WorkerSettings {
    pub shard: Shard,
    /// The exporter's table in the source database.
    pub table: String,
    pub window_ns: i64,
    /// How far beyond a window's end its traces are read (longer traces are cut there).
    pub slack_ns: i64,
    /// How long after its end a window is read.
    pub delay_ns: i64,
    /// Where to start: given, the worker derives from here even where it has before.
    pub since_ns: Option<i64>,
    /// Where to stop; `None` follows the traces as they come.
    pub until_ns: Option<i64>,
    pub retention_days: u32,
    /// The span or resource attribute that multiplies a span's count, if any.
    pub multiplier_key: Option<String>,
}

/// Without progress or `since`, a worker starts this far before the first closed window.
const FIRST_START_BACK_NS: i64 = HOUR_NS;

impl WorkerSettings {
    pub fn validate(&self) -> Result<(), Error> {
        let minute_multiple = |ns: i64| ns >= MINUTE_NS && ns % MINUTE_NS == 0;
        if !minute_multiple(self.window_ns) || HOUR_NS % self.window_ns != 0 {
            return Err(Error::Settings(
                "--window must be whole minutes that divide an hour (1m, 5m, 15m, 1h...): \
                 buckets are minutes and hours"
                    .into(),
            ));
        }
        if self.slack_ns < 0 || self.delay_ns < 0 {
            return Err(Error::Settings(
                "--slack and --delay cannot be negative".into(),
            ));
        }
        if !self
            .table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::Settings(format!(
                "--table {:?}: a table name holds letters, digits and _ only",
                self.table
            )));
        }
        Ok(())
    }
}

/// What one window gave.
#[derive(Clone, Debug)]
pub struct WindowReport {
    pub since_ns: i64,
    pub until_ns: i64,
    pub counts: ReadCounts,
    pub elapsed: Duration,
    /// The window had been derived (or begun) before; its old rows were replaced.
    pub rederived: bool,
}

#[derive(Row, Serialize, Deserialize)]
struct ProgressRow {
    worker: String,
    watermark_ns: i64,
    version: u64,
}

pub struct Worker {
    from: Connection,
    to: Connection,
    settings: WorkerSettings,
    label: String,
    last_version: std::cell::Cell<u64>,
}

impl Worker {
    /// Connects to both databases, creates archtrace's tables where missing and checks that
    /// the traces table is there.
    pub fn new(from: &Endpoint, to: &Endpoint, settings: WorkerSettings) -> Result<Worker, Error> {
        settings.validate()?;
        let from = Connection::open(from)?;
        let to = Connection::open(to)?;
        let found: u64 = from.run(
            "look for the traces table",
            from.client()
                .query(
                    "SELECT count() FROM system.tables
                     WHERE database = currentDatabase() AND name = ?",
                )
                .bind(&settings.table)
                .fetch_one(),
        )?;
        if found == 0 {
            return Err(Error::Settings(format!(
                "{} has no table `{}`: point --from at the database the Collector's clickhouse \
                 exporter writes to (its `database` setting), or name the table with --table",
                from.endpoint().describe(),
                settings.table
            )));
        }
        schema::ensure(&to, settings.retention_days)?;
        Ok(Worker {
            label: settings.shard.label(),
            from,
            to,
            settings,
            last_version: std::cell::Cell::new(0),
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Every window before this one is derived.
    pub fn watermark(&self) -> Result<Option<i64>, Error> {
        let row: Option<ProgressRow> = self.to.run(
            "read the worker's progress",
            self.to
                .client()
                .query("SELECT ?fields FROM progress FINAL WHERE worker = ?")
                .bind(&self.label)
                .fetch_optional(),
        )?;
        Ok(row.map(|row| row.watermark_ns))
    }

    fn save_watermark(&self, watermark_ns: i64) -> Result<(), Error> {
        let row = ProgressRow {
            worker: self.label.clone(),
            watermark_ns,
            version: self.next_version(),
        };
        self.to.run("save the worker's progress", async {
            let mut insert = self.to.client().insert::<ProgressRow>("progress").await?;
            insert.write(&row).await?;
            insert.end().await
        })
    }

    /// Versions grow even if the clock steps back.
    fn next_version(&self) -> u64 {
        let now = archtrace_analyzer::time::now_ns().max(0) as u64;
        let version = now.max(self.last_version.get() + 1);
        self.last_version.set(version);
        version
    }

    /// Derives `[since, until)` and writes its buckets; with `rederive`, also deletes rows of
    /// the window that the new derivation no longer has.
    pub fn derive_window(
        &self,
        since_ns: i64,
        until_ns: i64,
        rederive: bool,
    ) -> Result<WindowReport, Error> {
        let started = Instant::now();
        let mut minute = Buckets::new(MINUTE_NS);
        let mut hour = Buckets::new(HOUR_NS);
        let mut scratch = Vec::new();
        let read = WindowRead {
            table: &self.settings.table,
            since_ns,
            until_ns,
            slack_ns: self.settings.slack_ns,
            shard: self.settings.shard,
            multiplier_key: self.settings.multiplier_key.as_deref(),
        };
        let counts = traces::for_each_trace(&self.from, &read, &mut |spans| {
            Buckets::add_trace_to_all(
                &mut [&mut minute, &mut hour],
                spans,
                &NoLookup,
                &mut scratch,
            );
        })?;
        let provenance = Provenance {
            worker: &self.label,
            window_ns: since_ns,
            version: self.next_version(),
        };
        buckets::write(&self.to, &[&minute, &hour], provenance)?;
        if rederive {
            buckets::delete_stale(&self.to, provenance)?;
        }
        Ok(WindowReport {
            since_ns,
            until_ns,
            counts,
            elapsed: started.elapsed(),
            rederived: rederive,
        })
    }

    /// Derives window after window until `until` (or until `stop` is set), waiting for windows
    /// to close; calls `report` after each.
    pub fn run(
        &self,
        stop: &AtomicBool,
        now_ns: &dyn Fn() -> i64,
        report: &mut dyn FnMut(&WindowReport),
    ) -> Result<(), Error> {
        let window = self.settings.window_ns;
        let floor = |t: i64| t.div_euclid(window) * window;
        let mut watermark = self.watermark()?;
        let mut start = match (self.settings.since_ns, watermark) {
            (Some(since), _) => floor(since),
            (None, Some(saved)) => saved,
            (None, None) => floor(now_ns() - self.settings.delay_ns - FIRST_START_BACK_NS),
        };
        // The window at the watermark may have been half written by a worker that died.
        let rederive_before = watermark.map_or(i64::MIN, |saved| saved + window);
        while !stop.load(Ordering::Relaxed) {
            if self.settings.until_ns.is_some_and(|until| start >= until) {
                break;
            }
            let end = start + window;
            let wait_ns = end + self.settings.delay_ns - now_ns();
            if wait_ns > 0 {
                // Checks `stop` often enough for Ctrl-C to feel immediate.
                std::thread::sleep(Duration::from_nanos(wait_ns.min(500_000_000) as u64));
                continue;
            }
            let done = self.derive_window(start, end, start < rederive_before)?;
            if watermark.is_none_or(|saved| end > saved) {
                self.save_watermark(end)?;
                watermark = Some(end);
            }
            report(&done);
            start = end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_read_as_k_of_n_counted_from_zero() {
        assert_eq!(Shard::parse("2/8"), Ok(Shard { index: 2, count: 8 }));
        assert_eq!(Shard::parse("0/1"), Ok(Shard { index: 0, count: 1 }));
        assert_eq!(Shard::parse("0/1").unwrap().label(), "0/1");
        assert!(Shard::parse("8/8").unwrap_err().contains("0/8 to 7/8"));
        assert!(Shard::parse("1/0").unwrap_err().contains("at least one"));
        assert!(Shard::parse("3").unwrap_err().contains("k/N"));
        assert!(Shard::parse("a/2").unwrap_err().contains("whole number"));
    }

    #[test]
    fn windows_must_tile_hours() {
        let settings = |window_ns| WorkerSettings {
            shard: Shard { index: 0, count: 1 },
            table: "otel_traces".into(),
            window_ns,
            slack_ns: MINUTE_NS,
            delay_ns: 2 * MINUTE_NS,
            since_ns: None,
            until_ns: None,
            retention_days: 90,
            multiplier_key: None,
        };
        for good in [MINUTE_NS, 5 * MINUTE_NS, HOUR_NS] {
            assert!(settings(good).validate().is_ok());
        }
        for bad in [30_000_000_000, 7 * MINUTE_NS, 2 * HOUR_NS] {
            assert!(settings(bad).validate().is_err());
        }
        let mut odd_table = settings(MINUTE_NS);
        odd_table.table = "otel; DROP".into();
        assert!(odd_table.validate().is_err());
    }
}
