//! Snapshots from trace files, with no store: every file is read once (any importable format),
//! grouped by trace, and derived for the window asked for.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use archtrace_analyzer::aggregate::{Aggregate, Buckets, TraceGroups};
use archtrace_analyzer::history::Periods;
use archtrace_analyzer::snapshot::{Snapshot, SNAPSHOT_SCHEMA};
use archtrace_formats::import::{
    self, Conversion, Detail, Format, ImportError, OnBadInput, Source, Summary,
};
use archtrace_store::buckets::MINUTE_NS;

use crate::series::{self, Point};
use crate::{QueryError, SnapshotSource, Window};

/// How trace files are read.
#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// `None` detects each file's format from its content.
    pub format: Option<Format>,
    pub on_bad: OnBadInput,
    /// The attribute that multiplies a span's count, if the operator names one.
    pub multiplier_key: Option<Arc<str>>,
}

impl ReadOptions {
    /// How the spans read are converted: with `detail`, and the options' multiplier.
    pub fn conversion(&self, detail: Detail) -> Conversion {
        Conversion::new(detail).with_multiplier_key(self.multiplier_key.clone())
    }
}

/// A window's derivation: its aggregate, and its buckets for the series.
type Derived = Arc<(Aggregate, Buckets)>;

/// The traces of some files, read once.
pub struct FilesSource {
    groups: TraceGroups,
    summary: Summary,
    files: usize,
    /// The last window derived, with its aggregate and buckets: a report asks for the snapshot
    /// and then every service's series of the same window.
    derived: Mutex<Option<(Window, Derived)>>,
}

impl FilesSource {
    /// Reads every span of the files. Derivation needs no span detail, so none is kept.
    pub fn read(paths: &[PathBuf], options: ReadOptions) -> Result<FilesSource, ImportError> {
        let mut groups = TraceGroups::default();
        let mut summary = Summary::default();
        let conversion = options.conversion(Detail::Drop);
        for path in paths {
            import::read_source(
                Source::open(path)?,
                options.format,
                options.on_bad,
                &conversion,
                Arc::new(AtomicU64::new(0)),
                &mut summary,
                &mut |spans| {
                    groups.push(spans);
                    Ok(())
                },
            )?;
        }
        Ok(FilesSource {
            groups,
            summary,
            files: paths.len(),
            derived: Mutex::new(None),
        })
    }

    /// What reading found: spans, traces, services, what was skipped.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The window's bounds clipped to the spans read (an open bound is where the data ends).
    fn bounds(&self, window: &Window) -> (i64, i64) {
        let range = self.groups.span_range().unwrap_or((0, 0));
        let since = if window.since_ns == i64::MIN {
            range.0
        } else {
            window.since_ns
        };
        let until = if window.until_ns == i64::MAX {
            range.1
        } else {
            window.until_ns
        };
        (since, until)
    }

    fn derived(&self, window: &Window) -> Derived {
        let mut cached = self.derived.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, derived)) = cached.as_ref() {
            if seen == window {
                return derived.clone();
            }
        }
        // Charts get at most about 120 buckets of whole minutes over the data in the window.
        let (first, last) = self.bounds(window);
        let minutes = (last.saturating_sub(first) / MINUTE_NS / 120).max(1);
        let mut buckets = Buckets::new(minutes * MINUTE_NS);
        let time = (!window.is_all()).then_some((window.since_ns, window.until_ns));
        let aggregate = self
            .groups
            .derive(time, window.environment.as_deref(), Some(&mut buckets));
        let derived = Arc::new((aggregate, buckets));
        *cached = Some((window.clone(), derived.clone()));
        derived
    }
}

impl SnapshotSource for FilesSource {
    fn snapshot(&self, window: &Window) -> Result<Snapshot, QueryError> {
        let derived = self.derived(window);
        let bounds = if window.is_all() {
            derived.0.span_range.unwrap_or((0, 0))
        } else {
            self.bounds(window)
        };
        Ok(Snapshot::from_aggregate(&derived.0, bounds))
    }

    fn periods(&self, since_ns: i64, until_ns: i64, step_ns: i64) -> Result<Periods, QueryError> {
        let buckets = self.groups.buckets(step_ns);
        Ok(Periods::of_aggregates(
            buckets
                .buckets
                .range(since_ns..until_ns.max(since_ns))
                .map(|(start, aggregate)| (*start, aggregate)),
        ))
    }

    fn series(&self, service: &str, window: &Window) -> Result<Vec<Point>, QueryError> {
        let derived = self.derived(window);
        Ok(series::series_of_buckets(
            service,
            derived
                .1
                .buckets
                .iter()
                .map(|(start, bucket)| (*start, bucket)),
        ))
    }

    fn environments(&self) -> Result<Vec<String>, QueryError> {
        Ok(self.groups.environments())
    }

    fn rebuild(&self, _since_ns: i64, _until_ns: i64) -> Result<u64, QueryError> {
        Err(QueryError::Unsupported(
            "trace files have no derived buckets to rebuild: rebuild a store with --db",
        ))
    }

    fn describe(&self) -> String {
        format!(
            "{} spans from {} file{}",
            self.summary.spans,
            self.files,
            if self.files == 1 { "" } else { "s" }
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("could not read the snapshot {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not JSON")]
    NotJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} is not an archtrace snapshot (its schema is {found:?}, expected {SNAPSHOT_SCHEMA:?}); write one with `archtrace snapshot -o FILE`")]
    NotASnapshot { path: String, found: String },
    #[error("{path} is not a valid {SNAPSHOT_SCHEMA}")]
    Invalid {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads a snapshot file written by `archtrace snapshot` (a baseline), checking its schema.
pub fn read_snapshot(path: &Path) -> Result<Snapshot, SnapshotFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SnapshotFileError::Read {
        path: shown.clone(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| SnapshotFileError::NotJson {
            path: shown.clone(),
            source,
        })?;
    let schema = value.get("schema").and_then(|s| s.as_str()).unwrap_or("");
    if schema != SNAPSHOT_SCHEMA {
        return Err(SnapshotFileError::NotASnapshot {
            path: shown,
            found: schema.to_owned(),
        });
    }
    serde_json::from_value(value).map_err(|source| SnapshotFileError::Invalid {
        path: shown,
        source,
    })
}
