//! Trace files into a store (`archtrace import`): spans appended by the bulk writer while the
//! files are read, then the range they cover derived into buckets.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use archtrace_formats::import::{self, Detail, ImportError, Source, Summary};
use archtrace_store::bulk::{BulkError, BulkWriter};
use archtrace_store::Store;

use crate::files::ReadOptions;
use crate::store::StoreSource;
use crate::{QueryError, SnapshotSource};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("import stopped; {spans_before} spans read before the error were imported (use --keep-going to skip bad input)")]
    Input {
        spans_before: u64,
        #[source]
        source: ImportError,
    },
    #[error("the spans read could not be stored")]
    Write(#[from] BulkError),
    #[error(
        "the imported spans were stored, but deriving their edges failed; run `archtrace rebuild`"
    )]
    Derive(#[from] QueryError),
}

/// Imports `paths` into `store` and derives the edges of the range they cover. With
/// [`import::OnBadInput::Skip`], unreadable files are counted and skipped too. `bytes_read`
/// counts input bytes as they are read, for progress.
pub fn import_files(
    store: Store,
    paths: &[PathBuf],
    options: ReadOptions,
    bytes_read: Arc<AtomicU64>,
) -> Result<Summary, LoadError> {
    let mut summary = Summary::default();
    let mut writer = BulkWriter::start(store);
    let mut failure = None;
    let conversion = options.conversion(Detail::Keep);
    for path in paths {
        let outcome = Source::open(path).and_then(|source| {
            import::read_source(
                source,
                options.format,
                options.on_bad,
                &conversion,
                bytes_read.clone(),
                &mut summary,
                &mut |spans| writer.push(spans).map_err(Into::into),
            )
        });
        match outcome {
            Ok(()) => {}
            Err(err @ ImportError::Io { .. }) if options.on_bad == import::OnBadInput::Skip => {
                tracing::warn!("skipped: {}", crate::error_chain(&err));
                summary.bad_files += 1;
            }
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    // Finishing also commits what was read before a failure, and names a store error.
    let store = writer.finish()?;
    if let Some(source) = failure {
        return Err(LoadError::Input {
            spans_before: summary.spans,
            source,
        });
    }
    // Derive the edges of what was imported (and of whatever else the store holds then).
    if let Some((first, last)) = summary.span_range {
        StoreSource::open(&store)?.rebuild(first, last.saturating_add(1))?;
    }
    Ok(summary)
}
