//! The query layer: one [`Window`], and one [`SnapshotSource`] for every place a snapshot can
//! come from — trace files ([`files`]), a store with the buckets a running server has not yet
//! written ([`store`]), or a running server ([`remote`]). The CLI, the admin API and the viewer
//! all read windows, snapshots and series through it.

pub mod declared;
pub mod files;
pub mod history;
pub mod load;
#[cfg(feature = "remote")]
pub mod remote;
pub mod series;
pub mod store;
pub mod unwritten;
pub mod window;

use archtrace_analyzer::analysis::{Analyzed, Settings};
use archtrace_analyzer::history::{History, MissingVersions, Periods};
use archtrace_analyzer::snapshot::Snapshot;

pub use history::HistoryQuery;

pub use series::Point;
pub use unwritten::Unwritten;
pub use window::{Window, WindowError};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Window(#[from] WindowError),
    #[error(transparent)]
    Store(#[from] archtrace_store::QueryError),
    #[error(transparent)]
    Open(#[from] archtrace_store::OpenError),
    #[error(transparent)]
    Import(#[from] archtrace_formats::import::ImportError),
    #[error("could not reach {url} (is `archtrace serve` running there? --server takes its admin address, port 4320 by default)")]
    Unreachable {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} did not answer with {what}")]
    NotUnderstood {
        url: String,
        /// What was asked for: "a snapshot", "events".
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Unsupported(&'static str),
    /// A store engine outside this crate (ClickHouse) failed; its error says what and where.
    #[error(transparent)]
    Engine(Box<dyn std::error::Error + Send + Sync>),
}

/// Where snapshots come from. Snapshots are returned as data; [`SnapshotSource::analyzed`]
/// adds metrics, findings and the risk ranking once.
pub trait SnapshotSource: Send + Sync {
    /// The architecture of `window`, not yet analysed.
    fn snapshot(&self, window: &Window) -> Result<Snapshot, QueryError>;

    /// The snapshot of `window`, where releases may be left out of nodes and edges: findings
    /// do not read them, and a store reads faster without.
    fn snapshot_without_releases(&self, window: &Window) -> Result<Snapshot, QueryError> {
        self.snapshot(window)
    }

    /// A service's traffic per time bucket over `window`.
    fn series(&self, service: &str, window: &Window) -> Result<Vec<Point>, QueryError>;

    /// The `deployment.environment.name` values seen, sorted, for the viewer's filter.
    fn environments(&self) -> Result<Vec<String>, QueryError>;

    /// Derives `[since, until)` again from the raw spans and replaces its derived buckets in one
    /// transaction; returns the number of traces derived.
    fn rebuild(&self, since_ns: i64, until_ns: i64) -> Result<u64, QueryError>;

    /// Where the data comes from, in words, for reports.
    fn describe(&self) -> String;

    /// What was derived in each step of `step_ns` from `since_ns` (a step boundary) to
    /// `until_ns`; steps with nothing derived may be left out. Releases may be left out too
    /// (see [`SnapshotSource::fill_versions`]).
    fn periods(&self, since_ns: i64, until_ns: i64, step_ns: i64) -> Result<Periods, QueryError>;

    /// Reads the releases a replay of `periods` found missing. Sources whose periods hold
    /// every release have nothing to do.
    fn fill_versions(
        &self,
        _step_ns: i64,
        _periods: &mut Periods,
        _missing: &MissingVersions,
    ) -> Result<(), QueryError> {
        Ok(())
    }

    /// The events and trends of `window` ([`history::history`]).
    fn history(&self, window: &Window, query: &HistoryQuery) -> Result<History, QueryError> {
        history::history(self, window, query)
    }

    /// The snapshot of `window` with its analysis.
    fn analyzed(&self, window: &Window, settings: &Settings) -> Result<Analyzed, QueryError> {
        Ok(Analyzed::new(self.snapshot(window)?, settings))
    }
}

/// An error and its causes on one line, `outer: inner: root`, for answers that have no room for
/// a "caused by" list (HTTP bodies, error pages).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}
