//! archtrace's span store: one DuckDB file with a versioned schema, written by one thread at a
//! time (DuckDB connections are not `Sync`) and read by queries, and the request log that a
//! server acknowledges on before the spans reach the store ([`log`]).

mod batch;
pub mod buckets;
pub mod bulk;
pub mod history;
pub mod log;
pub mod notified;
pub mod read;
pub mod retention;
mod schema;
mod stats;

use std::path::{Path, PathBuf};

use archtrace_analyzer::Span;
use duckdb::{Connection, OptionalExt};

/// Spans converted to Arrow and handed to DuckDB at a time within one append.
const APPEND_SLICE_SPANS: usize = 16_384;

pub use stats::StoreStats;

/// The schema version this build writes; older files are migrated on open.
pub use schema::SCHEMA_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "the store {path} is in use by another process (is `archtrace serve` running on it?); \
         stop that process, pass another --db, or query the running server instead"
    )]
    Locked { path: String },
    #[error("the store {path} was written by a newer archtrace (schema version {found}, this build knows up to {known}); upgrade archtrace")]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error(
        "the store {path} has schema version {found} and this archtrace reads version {current}; \
         migrate it once with `archtrace migrate --db {path}` (or start `archtrace serve` on it)"
    )]
    TooOld {
        path: String,
        found: i64,
        current: i64,
    },
    #[error("could not open the store {path}")]
    Open {
        path: String,
        #[source]
        source: duckdb::Error,
    },
    #[error("could not migrate the store {path} to schema version {version}")]
    Migrate {
        path: String,
        version: i64,
        #[source]
        source: duckdb::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("the store's query failed")]
    Duckdb(#[from] duckdb::Error),
    #[error("query result could not be read: {0}")]
    Arrow(String),
    #[error(transparent)]
    Log(#[from] log::LogError),
    #[error("the state of log consumer {consumer} could not be encoded: {reason}")]
    ConsumerState { consumer: String, reason: String },
}

/// Where the spans live. `Location::Memory` keeps them in memory only (for short CI runs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    Memory,
}

impl Location {
    pub fn describe(&self) -> String {
        match self {
            Location::File(path) => path.display().to_string(),
            Location::Memory => ":memory:".to_owned(),
        }
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Self {
        if path.as_os_str() == ":memory:" {
            Location::Memory
        } else {
            Location::File(path.to_owned())
        }
    }
}

/// What a consumer of the request log commits at once.
pub struct Consumed<'a> {
    pub consumer: &'a str,
    /// The log offset everything below which is now accounted for.
    pub offset: u64,
    pub spans: &'a [&'a Span],
    /// Derived buckets that closed.
    pub buckets: &'a [archtrace_analyzer::aggregate::Buckets],
    /// The file (in the request log's folder, written and synced before) holding what the
    /// consumer holds in memory at `offset`, to resume from after a crash.
    pub state_file: Option<&'a str>,
}

/// An open store. Owns one DuckDB connection; move it into the writer thread to write.
pub struct Store {
    conn: Connection,
    location: Location,
    /// Resources already in the `resources` table.
    known_resources: std::collections::HashSet<u64>,
    /// A commit failed and so did its rollback: the next one rolls back first.
    aborted: bool,
}

impl Store {
    /// Opens (creating if needed) the store and migrates its schema to [`SCHEMA_VERSION`].
    pub fn open(location: &Location) -> Result<Store, OpenError> {
        let path = location.describe();
        let conn = match location {
            Location::File(file) => Connection::open(file),
            Location::Memory => Connection::open_in_memory(),
        }
        .map_err(|source| classify_open_error(&path, source))?;
        schema::migrate(&conn, &path)?;
        let known_resources =
            known_resources(&conn).map_err(|source| OpenError::Open { path, source })?;
        Ok(Store {
            conn,
            location: location.clone(),
            known_resources,
            aborted: false,
        })
    }

    /// Opens an existing store without write access, so that it can be read beside a
    /// read-only peer. Fails if the file does not exist.
    pub fn open_read_only(path: &Path) -> Result<Store, OpenError> {
        let shown = path.display().to_string();
        if !path.exists() {
            return Err(OpenError::Open {
                path: shown,
                source: duckdb::Error::InvalidPath(path.to_owned()),
            });
        }
        let config = duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .map_err(|source| classify_open_error(&shown, source))?;
        let conn = Connection::open_with_flags(path, config)
            .map_err(|source| classify_open_error(&shown, source))?;
        schema::check_readable(&conn, &shown)?;
        Ok(Store {
            conn,
            location: Location::File(path.to_owned()),
            known_resources: Default::default(),
            aborted: false,
        })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Appends spans and commits them: when this returns `Ok`, they survive a crash.
    pub fn append(&mut self, spans: &[&Span]) -> Result<(), duckdb::Error> {
        if spans.is_empty() {
            return Ok(());
        }
        self.append_rows(spans)
    }

    /// Commits what a consumer of the request log wrote up to `offset` in one transaction:
    /// after a crash the log is replayed from exactly what the store holds, nothing counted
    /// twice. See [`Consumed`].
    pub fn commit_consumed(&mut self, consumed: &Consumed<'_>) -> Result<(), QueryError> {
        if self.aborted {
            // A failed commit whose rollback failed too (DuckDB out of memory): end it first.
            end_failed_transaction(&self.conn)?;
            self.aborted = false;
        }
        self.conn.execute_batch("BEGIN TRANSACTION")?;
        let outcome = (|| -> Result<(), QueryError> {
            if !consumed.spans.is_empty() {
                self.append_rows(consumed.spans)?;
            }
            for buckets in consumed.buckets {
                buckets::append(&self.conn, buckets)?;
            }
            self.conn.execute(
                "INSERT OR REPLACE INTO log_offsets VALUES (?, ?)",
                duckdb::params![consumed.consumer, consumed.offset],
            )?;
            if let Some(state_file) = consumed.state_file {
                self.conn.execute(
                    "INSERT OR REPLACE INTO consumer_state VALUES (?, ?)",
                    duckdb::params![consumed.consumer, state_file],
                )?;
            }
            self.conn.execute_batch("COMMIT")?;
            Ok(())
        })();
        if outcome.is_err() {
            self.aborted = end_failed_transaction(&self.conn).is_err();
            // Resources noted as written in the failed transaction are not in the table.
            if !self.aborted {
                self.known_resources = known_resources(&self.conn)?;
            }
        }
        outcome
    }

    /// Rolls up the days over before `before_ns` ([`buckets::roll_up_days`]).
    pub fn roll_up_days(&self, before_ns: i64) -> Result<usize, QueryError> {
        buckets::roll_up_days(&self.conn, before_ns)
    }

    /// Forgets a consumer's offset and state: it no longer holds the log back.
    pub fn forget_consumer(&self, consumer: &str) -> Result<(), QueryError> {
        self.conn
            .execute("DELETE FROM log_offsets WHERE consumer = ?", [consumer])?;
        self.conn
            .execute("DELETE FROM consumer_state WHERE consumer = ?", [consumer])?;
        Ok(())
    }

    /// The state file `consumer` committed with its offset, if any.
    pub fn consumer_state_file(&self, consumer: &str) -> Result<Option<String>, QueryError> {
        Ok(self
            .conn
            .query_row(
                "SELECT state_file FROM consumer_state WHERE consumer = ?",
                [consumer],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// The span-time range (first and last span start) of spans an archtrace before schema v5
    /// stored while serving without writing their derived edges (it crashed); `None` otherwise.
    pub fn underived(&self) -> Result<Option<(i64, i64)>, QueryError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM archtrace_meta WHERE key = 'underived'",
                [],
                |row| row.get(0),
            )
            .optional()?;
        Ok(text.and_then(|t| {
            let (first, last) = t.split_once(',')?;
            Some((first.parse().ok()?, last.parse().ok()?))
        }))
    }

    /// Records that the range [`Store::underived`] reported is derived again.
    pub fn clear_underived(&self) -> Result<(), QueryError> {
        self.conn
            .execute_batch("DELETE FROM archtrace_meta WHERE key = 'underived'")?;
        Ok(())
    }

    /// How far `consumer` has read the request log (`None` if it never has).
    pub fn log_offset(&self, consumer: &str) -> Result<Option<u64>, QueryError> {
        Ok(self
            .conn
            .query_row(
                "SELECT log_offset FROM log_offsets WHERE consumer = ?",
                [consumer],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Another writer on the same database, for a second thread (the deriver beside the
    /// loader). Only one of them may append spans.
    pub fn another_writer(&self) -> Result<Store, QueryError> {
        let conn = self.conn.try_clone()?;
        let known_resources = known_resources(&conn)?;
        Ok(Store {
            conn,
            location: self.location.clone(),
            known_resources,
            aborted: false,
        })
    }

    fn append_rows(&mut self, spans: &[&Span]) -> Result<(), duckdb::Error> {
        // New resources first: a crash in between leaves a resource without spans, never a
        // span without its resource.
        let mut fresh: Vec<&Span> = Vec::new();
        for span in spans {
            if !self.known_resources.contains(&span.detail.resource_id)
                && !fresh
                    .iter()
                    .any(|f| f.detail.resource_id == span.detail.resource_id)
            {
                fresh.push(span);
            }
        }
        if !fresh.is_empty() {
            let mut resources = self.conn.appender("resources")?;
            for span in &fresh {
                resources.append_row(duckdb::params![
                    span.detail.resource_id,
                    &*span.service,
                    &*span.detail.resource_attributes_json
                ])?;
            }
            resources.flush()?;
            self.known_resources
                .extend(fresh.iter().map(|s| s.detail.resource_id));
        }
        // In slices: the deriver commits seconds of sampled spans at once, and their Arrow
        // copy and DuckDB's whole would each be hundreds of MB.
        let mut appender = self.conn.appender("spans")?;
        for slice in spans.chunks(APPEND_SLICE_SPANS) {
            let batch = batch::spans_to_record_batch(slice)
                .map_err(|err| duckdb::Error::ToSqlConversionFailure(Box::new(err)))?;
            appender.append_record_batch(batch)?;
            appender.flush()?;
        }
        Ok(())
    }

    /// Caps DuckDB's own memory (it spills to disk beyond it). The server sets a small cap so
    /// that it stays small under load; analytical commands keep DuckDB's default.
    pub fn limit_memory(&self, limit: &str) -> Result<(), duckdb::Error> {
        self.conn
            .execute_batch(&format!("SET memory_limit = '{}'", limit.replace('\'', "")))
    }

    /// How much write-ahead log may build up before DuckDB folds it into the file. Each
    /// automatic checkpoint stalls the writer and recompresses the row groups still filling, so
    /// the 16 MB default checkpoints every couple of seconds under load; the WAL is durable
    /// either way (it is what a restart replays).
    pub fn set_checkpoint_threshold(&self, size: &str) -> Result<(), duckdb::Error> {
        self.conn.execute_batch(&format!(
            "SET checkpoint_threshold = '{}'",
            size.replace('\'', "")
        ))
    }

    /// Folds the write-ahead log into the database file (done on clean shutdown).
    pub fn checkpoint(&self) -> Result<(), duckdb::Error> {
        self.conn.execute_batch("CHECKPOINT")
    }

    /// A second connection to the same database, for queries while the writer owns this one.
    pub fn reader(&self) -> Result<read::Reader, QueryError> {
        Ok(read::Reader::new(self.conn.try_clone()?))
    }

    /// A connection of its own for deleting what is past retention.
    pub fn pruner(&self) -> Result<retention::Pruner, QueryError> {
        Ok(retention::Pruner::new(self.conn.try_clone()?))
    }

    /// A connection of its own for the notifier's record of events sent.
    pub fn notified(&self) -> Result<notified::NotifiedLog, QueryError> {
        Ok(notified::NotifiedLog::new(self.conn.try_clone()?))
    }

    /// A connection of its own for writing derived buckets.
    pub fn bucket_writer(&self) -> Result<buckets::BucketWriter, QueryError> {
        Ok(buckets::BucketWriter::new(self.conn.try_clone()?))
    }

    pub fn stats(&self) -> Result<StoreStats, QueryError> {
        stats::collect(&self.conn, &self.location)
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<i64, QueryError> {
        Ok(schema::read_version(&self.conn)?)
    }

    /// Raw access for tests and ad-hoc queries.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

fn known_resources(conn: &Connection) -> Result<std::collections::HashSet<u64>, duckdb::Error> {
    let mut statement = conn.prepare("SELECT DISTINCT resource_id FROM resources")?;
    let ids = statement.query_map([], |row| row.get::<_, u64>(0))?;
    ids.collect()
}

fn classify_open_error(path: &str, source: duckdb::Error) -> OpenError {
    let text = source.to_string();
    if text.contains("Could not set lock") || text.contains("Conflicting lock") {
        OpenError::Locked {
            path: path.to_owned(),
        }
    } else {
        OpenError::Open {
            path: path.to_owned(),
            source,
        }
    }
}

/// Rolls back a transaction that failed. A COMMIT that failed (its WAL could not be written:
/// the disk is full) has already ended the transaction, and DuckDB then refuses the ROLLBACK
/// as having nothing to roll back: that is not an error, or every later commit would first
/// retry this rollback and fail with it forever.
fn end_failed_transaction(conn: &duckdb::Connection) -> Result<(), duckdb::Error> {
    match conn.execute_batch("ROLLBACK") {
        Err(err) if err.to_string().contains("no transaction is active") => Ok(()),
        other => other,
    }
}
