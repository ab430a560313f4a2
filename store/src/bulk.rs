//! The bulk writer of imports: spans appended on a thread of its own in large commits, so that
//! reading trace files and writing them overlap.

use archtrace_analyzer::Span;

use crate::Store;

/// Spans per commit when importing; large groups keep DuckDB's per-commit cost small.
const BATCH_SPANS: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("could not write to the store")]
    Store(#[source] duckdb::Error),
    #[error("the store writer stopped unexpectedly")]
    Stopped,
}

pub struct BulkWriter {
    sender: std::sync::mpsc::SyncSender<Vec<Span>>,
    pending: Vec<Span>,
    thread: std::thread::JoinHandle<Result<Store, BulkError>>,
}

impl BulkWriter {
    pub fn start(mut store: Store) -> BulkWriter {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<Span>>(2);
        let thread = std::thread::Builder::new()
            .name("archtrace-import-writer".into())
            .spawn(move || {
                for batch in receiver {
                    let spans: Vec<&Span> = batch.iter().collect();
                    store.append(&spans).map_err(BulkError::Store)?;
                }
                Ok(store)
            })
            .expect("spawning the import writer");
        BulkWriter {
            sender,
            pending: Vec::with_capacity(BATCH_SPANS),
            thread,
        }
    }

    /// Queues spans; fails once the writer has stopped (then [`BulkWriter::finish`] says why).
    pub fn push(&mut self, spans: Vec<Span>) -> Result<(), BulkError> {
        self.pending.extend(spans);
        if self.pending.len() < BATCH_SPANS {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH_SPANS));
        self.sender.send(batch).map_err(|_| BulkError::Stopped)
    }

    /// Writes what is left and gives the store back once everything is committed.
    pub fn finish(self) -> Result<Store, BulkError> {
        let BulkWriter {
            sender,
            pending,
            thread,
        } = self;
        // A failed send means the writer stopped; joining it gives the reason.
        let _ = sender.send(pending);
        drop(sender);
        thread.join().unwrap_or(Err(BulkError::Stopped))
    }
}
