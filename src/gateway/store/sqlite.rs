//! `--store sqlite:PATH`, the embedded default: one SQLite file in WAL mode.
//!
//! The claim is a single `INSERT … ON CONFLICT DO UPDATE … WHERE expired`,
//! so exactly one of any number of concurrent claims inserts the row; every
//! other change is an `UPDATE`/`DELETE … WHERE token = ?`. With
//! `synchronous=NORMAL` (the default durability) a committed claim survives
//! a crash of the gateway process; `--durability full` (`synchronous=FULL`)
//! also survives a crash of the host, at the cost of an fsync per commit.
//! rusqlite is synchronous, so each operation runs on tokio's blocking pool
//! over one connection.
//!
//! Replays are answered from a small in-memory cache of done records when
//! possible: a done record never changes until it expires (the first final
//! record wins), so a cached copy is exact; expiry is checked on every read.
//!
//! WAL checkpoints (which fsync the database file) mostly run in the
//! background; see [`CHECKPOINT_EVERY`].

use super::{
    Claimed, Outcome, Record, RecordId, Store, StoreError, Token, decode_outcome, encode_outcome,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// How much a commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A crash of the gateway process (WAL, `synchronous=NORMAL`).
    Process,
    /// A crash of the host (WAL, `synchronous=FULL`: fsync per commit).
    Host,
}

/// Done records kept in memory for replays (bounded in count and size).
#[derive(Default)]
struct DoneCache {
    records: Mutex<std::collections::HashMap<RecordId, Record>>,
}

impl DoneCache {
    const ENTRIES: usize = 1024;
    const MAX_BODY: usize = 64 * 1024;

    fn get(&self, id: &RecordId, now: u64) -> Option<Record> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        match records.get(id) {
            Some(Record::Done { expires_at, .. }) if *expires_at > now => records.get(id).cloned(),
            Some(_) => records.remove(id).and(None),
            None => None,
        }
    }

    fn remember(&self, id: &RecordId, record: &Record) {
        let small = match record {
            Record::Done {
                outcome: Outcome::Response(r),
                ..
            } => r.body.len() <= Self::MAX_BODY,
            Record::Done { .. } => true,
            Record::InFlight { .. } => false,
        };
        if small {
            let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
            if records.len() >= Self::ENTRIES {
                // Simple and bounded: start over rather than track recency.
                records.clear();
            }
            records.insert(id.clone(), record.clone());
        }
    }
}

/// A SQLite-backed store.
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    done: DoneCache,
    /// Dropping it stops the checkpointer thread.
    _checkpointer: std::sync::mpsc::Sender<()>,
}

/// WAL checkpoints, in two parts. A background PASSIVE checkpoint from a
/// second connection every second does the copying off the request path
/// (SQLite's in-line checkpoint at its default 1000 pages made the request
/// that crossed it pay the copy and the fsync). It cannot finish while
/// writes continue, so the WAL would never restart; SQLite's own
/// auto-checkpoint, kept at [`WAL_PAGES`], finishes the job on the writing
/// connection when the WAL reaches that size, finding most frames already
/// copied. docs/performance.md has the measurements behind both numbers.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The WAL size (in 4 KiB pages: 64 MiB) at which the writing connection
/// completes a checkpoint and the WAL restarts.
const WAL_PAGES: u32 = 16_384;

/// Runs the background checkpoints until the store is dropped.
fn spawn_checkpointer(path: &Path) -> Result<std::sync::mpsc::Sender<()>, StoreError> {
    let connection = Connection::open(path).map_err(StoreError::from)?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("sqlite-checkpoint".to_owned())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                if let Err(error) =
                    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                {
                    tracing::warn!(%error, "WAL checkpoint failed");
                }
            }
        })
        .map_err(StoreError::from)?;
    Ok(stop)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    caller      BLOB NOT NULL,
    key         TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    token       BLOB,
    lease_until INTEGER,
    expires_at  INTEGER,
    outcome     BLOB,
    PRIMARY KEY (caller, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;
";

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let connection = Connection::open(path).map_err(|e| {
            StoreError(format!(
                "cannot open the SQLite database `{}`: {e}",
                path.display()
            ))
        })?;
        let synchronous = match durability {
            Durability::Process => "NORMAL",
            Durability::Host => "FULL",
        };
        connection
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA busy_timeout = 5000; \
                 PRAGMA wal_autocheckpoint = {WAL_PAGES}; PRAGMA journal_size_limit = 67108864; {SCHEMA}"
            ))
            .map_err(|e| StoreError(format!("cannot prepare `{}`: {e}", path.display())))?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            done: DoneCache::default(),
            _checkpointer: spawn_checkpointer(path)?,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut connection)
        })
        .await
        .map_err(StoreError::from)?
        .map_err(StoreError::from)
    }
}

fn read(connection: &Connection, id: &RecordId) -> rusqlite::Result<Option<RawRow>> {
    connection
        .prepare_cached(
            "SELECT fingerprint, token, lease_until, expires_at, outcome FROM records WHERE caller = ?1 AND key = ?2",
        )?
        .query_row(
            params![&id.caller[..], &id.key],
            |row| {
                Ok(RawRow {
                    fingerprint: row.get(0)?,
                    token: row.get(1)?,
                    lease_until: row.get(2)?,
                    expires_at: row.get(3)?,
                    outcome: row.get(4)?,
                })
            },
        )
        .optional()
}

struct RawRow {
    fingerprint: Vec<u8>,
    token: Option<Vec<u8>>,
    lease_until: Option<i64>,
    expires_at: Option<i64>,
    outcome: Option<Vec<u8>>,
}

impl RawRow {
    fn into_record(self) -> Result<Record, StoreError> {
        let corrupt = || StoreError("corrupt record in the SQLite store".to_owned());
        let fingerprint: [u8; 32] = self.fingerprint.try_into().map_err(|_| corrupt())?;
        match (self.token, self.lease_until, self.expires_at, self.outcome) {
            (Some(token), Some(lease), None, None) => Ok(Record::InFlight {
                fingerprint,
                token: token.try_into().map_err(|_| corrupt())?,
                lease_until: lease as u64,
            }),
            (None, None, Some(expires), Some(outcome)) => Ok(Record::Done {
                fingerprint,
                outcome: decode_outcome(&outcome)?,
                expires_at: expires as u64,
            }),
            _ => Err(corrupt()),
        }
    }
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Store for SqliteStore {
    async fn claim(
        &self,
        id: &RecordId,
        fingerprint: &[u8; 32],
        token: &Token,
        lease_until: u64,
        now: u64,
    ) -> Result<Claimed, StoreError> {
        if let Some(record) = self.done.get(id, now) {
            return Ok(Claimed::Existing(record));
        }
        let cache_id = id.clone();
        let (id, fingerprint, token) = (id.clone(), *fingerprint, *token);
        let row = self
            .run(move |c| {
                // Replays and conflicts only read: a live record answers
                // without a write transaction. The INSERT below still decides
                // every race for an absent or expired record.
                if let Some(row) = read(c, &id)?
                    && row.expires_at.is_none_or(|expires| expires > ms(now))
                {
                    return Ok(Some(row));
                }
                let inserted = c.prepare_cached("INSERT INTO records (caller, key, fingerprint, token, lease_until) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (caller, key) DO UPDATE SET
                        fingerprint = excluded.fingerprint, token = excluded.token,
                        lease_until = excluded.lease_until, expires_at = NULL, outcome = NULL
                     WHERE records.expires_at IS NOT NULL AND records.expires_at <= ?6")?.execute(params![&id.caller[..], &id.key, &fingerprint[..], &token[..], ms(lease_until), ms(now)])?;
                if inserted == 1 { Ok(None) } else { read(c, &id) }
            })
            .await?;
        match row {
            None => Ok(Claimed::Won),
            Some(row) => {
                let record = row.into_record()?;
                self.done.remember(&cache_id, &record);
                Ok(Claimed::Existing(record))
            }
        }
    }

    async fn renew(
        &self,
        id: &RecordId,
        token: &Token,
        lease_until: u64,
    ) -> Result<bool, StoreError> {
        let (id, token) = (id.clone(), *token);
        self.run(move |c| {
            c.prepare_cached(
                "UPDATE records SET lease_until = ?4 WHERE caller = ?1 AND key = ?2 AND token = ?3",
            )?
            .execute(params![
                &id.caller[..],
                &id.key,
                &token[..],
                ms(lease_until)
            ])
            .map(|n| n == 1)
        })
        .await
    }

    async fn finish(
        &self,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
        _now: u64,
    ) -> Result<bool, StoreError> {
        let (id, token, outcome) = (id.clone(), *token, encode_outcome(outcome));
        self.run(move |c| {
            c.prepare_cached(
                "UPDATE records SET token = NULL, lease_until = NULL, expires_at = ?4, outcome = ?5
                 WHERE caller = ?1 AND key = ?2 AND token = ?3",
            )?
            .execute(params![
                &id.caller[..],
                &id.key,
                &token[..],
                ms(expires_at),
                outcome
            ])
            .map(|n| n == 1)
        })
        .await
    }

    async fn release(&self, id: &RecordId, token: &Token) -> Result<bool, StoreError> {
        let (id, token) = (id.clone(), *token);
        self.run(move |c| {
            c.prepare_cached("DELETE FROM records WHERE caller = ?1 AND key = ?2 AND token = ?3")?
                .execute(params![&id.caller[..], &id.key, &token[..]])
                .map(|n| n == 1)
        })
        .await
    }

    async fn expire_lease(
        &self,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
        now: u64,
    ) -> Result<Option<Record>, StoreError> {
        let (id, token, outcome) = (id.clone(), *token, encode_outcome(outcome));
        let row = self
            .run(move |c| {
                c.prepare_cached("UPDATE records SET token = NULL, lease_until = NULL, expires_at = ?4, outcome = ?5
                     WHERE caller = ?1 AND key = ?2 AND token = ?3 AND lease_until <= ?6")?.execute(params![&id.caller[..], &id.key, &token[..], ms(expires_at), outcome, ms(now)])?;
                read(c, &id)
            })
            .await?;
        row.map(RawRow::into_record).transpose()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    async fn sweep(&self, now: u64) -> Result<u64, StoreError> {
        self.run(move |c| {
            c.prepare_cached(
                "DELETE FROM records WHERE expires_at IS NOT NULL AND expires_at <= ?1",
            )?
            .execute(params![ms(now)])
            .map(|n| n as u64)
        })
        .await
    }
}
