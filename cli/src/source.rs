//! The source flags every reading command shares (`--traces`, `--server`, `--db`, `--store`, `--since`,
//! `--until`, `--at`), turned into a query-layer source and its window.

use std::path::Path;

use anyhow::Context;
use archtrace_analyzer::analysis::{Analyzed, Settings};
use archtrace_analyzer::time::{now_ns, rfc3339};
use archtrace_query::files::{FilesSource, ReadOptions};
use archtrace_query::remote::RemoteSource;
use archtrace_query::store::StoreSource;
use archtrace_query::{SnapshotSource, Window};
use archtrace_store::{Location, Store};

use crate::{config, on_bad, SourceArgs};

/// The source the flags name and the window to read from it: trace files (the window is all of
/// the input unless bounded), a running server, or a store file (the last hour by default).
pub fn open(args: &SourceArgs) -> anyhow::Result<(Box<dyn SnapshotSource>, Window)> {
    let (since, until) = (args.since.as_deref(), args.until.as_deref());
    let at = args
        .at
        .as_deref()
        .map(|at| Window::at(at, now_ns()))
        .transpose()?;
    if !args.traces.is_empty() {
        let window = match at {
            Some(window) => window,
            None => Window::parse_open(since, until, now_ns())?,
        };
        let options = ReadOptions {
            format: args.input_format.map(Into::into),
            on_bad: on_bad(args.keep_going),
            multiplier_key: args.span_multiplier_key.as_deref().map(Into::into),
        };
        let source = FilesSource::read(&args.traces, options)?;
        if source.summary().spans == 0 {
            eprintln!("warning: the files hold no spans");
        }
        return Ok((Box::new(source), window));
    }
    let window = match at {
        Some(window) => window,
        None => Window::parse(since, until, now_ns())?,
    };
    if let Some(server) = &args.server {
        let token = args
            .auth_token_file
            .as_deref()
            .map(config::read_token)
            .transpose()?;
        return Ok((Box::new(RemoteSource::new(server, token)), window));
    }
    if let Some(store) = &args.store {
        return Ok((Box::new(crate::scale_out::open_source(store)?), window));
    }
    let db = args.db.clone().unwrap_or_else(|| config::DEFAULT_DB.into());
    let source = StoreSource::open(&open_store(&db, true)?)?;
    if let Some((first, last)) = source.span_time_range()? {
        if last < window.since_ns || first >= window.until_ns {
            eprintln!(
                "note: no spans in this window; the store holds spans from {} to {} (use --since and --until)",
                rfc3339(first),
                rfc3339(last)
            );
        }
    }
    Ok((Box::new(source), window))
}

/// The analysed snapshot of the window the flags name.
pub fn analyzed(args: &SourceArgs, settings: &Settings) -> anyhow::Result<Analyzed> {
    let (source, window) = open(args)?;
    Ok(source.analyzed(&window, settings)?)
}

/// An existing store file: read-only for commands that only read it (they can run beside a
/// read-only peer), else opened for writing and migrated.
pub fn open_store(path: &Path, read_only: bool) -> anyhow::Result<Store> {
    if !path.exists() {
        anyhow::bail!(
            "no store at {}: start `archtrace serve` to create one, or pass --db PATH",
            path.display()
        );
    }
    let store = if read_only {
        Store::open_read_only(path)
    } else {
        Store::open(&Location::File(path.to_owned()))
    };
    store.with_context(|| format!("could not use the store {}", path.display()))
}
