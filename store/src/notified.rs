//! The architecture events a running server has sent to its webhooks, by key, so that each is
//! sent once even across restarts.

use std::collections::HashSet;

use duckdb::{params, Connection};

use crate::QueryError;

pub struct NotifiedLog {
    conn: Connection,
}

impl NotifiedLog {
    pub(crate) fn new(conn: Connection) -> NotifiedLog {
        NotifiedLog { conn }
    }

    /// The keys of events at or after `since_ns` already sent.
    pub fn sent_since(&self, since_ns: i64) -> Result<HashSet<String>, QueryError> {
        let mut statement = self
            .conn
            .prepare("SELECT event_key FROM notified_events WHERE time_ns >= ?")?;
        let keys = statement
            .query_map(params![since_ns], |row| row.get::<_, String>(0))?
            .collect::<Result<HashSet<String>, _>>()?;
        Ok(keys)
    }

    /// Records events as sent, and forgets those before `forget_before_ns` (no run looks that
    /// far back any more), in one transaction.
    pub fn record(&self, sent: &[(String, i64)], forget_before_ns: i64) -> Result<(), QueryError> {
        self.conn.execute_batch("BEGIN TRANSACTION")?;
        let outcome = (|| -> Result<(), QueryError> {
            for (key, time_ns) in sent {
                self.conn.execute(
                    "INSERT OR IGNORE INTO notified_events VALUES (?, ?)",
                    params![key, time_ns],
                )?;
            }
            self.conn.execute(
                "DELETE FROM notified_events WHERE time_ns < ?",
                params![forget_before_ns],
            )?;
            Ok(())
        })();
        match outcome {
            Ok(()) => Ok(self.conn.execute_batch("COMMIT")?),
            Err(err) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Location, Store};

    #[test]
    fn sent_events_are_remembered_until_forgotten() {
        let store = Store::open(&Location::Memory).unwrap();
        let log = store.notified().unwrap();
        log.record(&[("a".into(), 10), ("b".into(), 20)], 0)
            .unwrap();
        log.record(&[("a".into(), 10)], 0).unwrap();
        assert_eq!(log.sent_since(0).unwrap().len(), 2, "a once");
        assert_eq!(log.sent_since(15).unwrap(), ["b".to_owned()].into());
        log.record(&[], 15).unwrap();
        assert_eq!(log.sent_since(0).unwrap(), ["b".to_owned()].into());
    }
}
