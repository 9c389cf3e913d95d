//! `--store sqlite:PATH`, the embedded default: one SQLite file in WAL mode.
//!
//! The claim is a single `INSERT … ON CONFLICT DO UPDATE … WHERE expired`,
//! so exactly one of any number of concurrent claims inserts the row; every
//! other change is an `UPDATE`/`DELETE … WHERE token = ?`. With
//! `synchronous=NORMAL` (the default durability) a committed claim survives
//! a crash of the gateway process; `--durability full` (`synchronous=FULL`)
//! also survives a crash of the host, at the cost of an fsync per commit.
//!
//! All calls share one connection and go through one queue. Whoever
//! finds no one draining the queue drains it, and the queue is drained in
//! batches: each batch (every call queued at that moment, at most 128) is
//! one transaction (group commit: one commit, one WAL append and at most
//! one fsync for the batch), in which one call's error undoes only its own
//! changes: a call of one writing statement is undone by SQLite itself, any
//! other runs in a savepoint of its own. A call's answer is given only
//! after its batch committed, so a claim is durable before the forward
//! starts, exactly as with a commit of its own; a failed commit fails every
//! call of the batch, and a transaction SQLite rolls back by itself (a full
//! disk, an I/O error) fails the calls it held, the rest of the batch then
//! running in a new one.
//!
//! At the default durability a call is a few tens of microseconds (a
//! commit is a write into the OS page cache), less than handing it to
//! another thread, so the call that takes the draining first yields once
//! (the tasks ready on its runtime thread run, and the calls they make join
//! its batch), then drains the queue on its own thread if the connection is
//! free: its own call and up to 32 more, none of the sweep's; it hands the
//! rest to the writer thread. The writer thread also drains when the
//! connection was busy (a runtime thread never waits for the lock or the
//! disk), for a call dropped at its yield, and always at `--durability
//! full` (an fsync per commit). Draining on the runtime thread saves waking
//! the writer thread for most calls, and the yield cuts the commits per
//! call under load (docs/performance.md).
//!
//! Large answers ([`Store::load`]) are read on a connection of their own,
//! one at a time, on tokio's blocking pool: an 8 MiB answer is thousands of
//! 1 KiB overflow pages, which neither the writer's queue (every claim would
//! wait behind it) nor a runtime thread should spend milliseconds on. WAL
//! lets it read what the writer committed without waiting for it.
//!
//! WAL checkpoints, the slow part of SQLite, never run on this connection:
//! see `sqlite/checkpoint.rs`. New databases use 1 KiB pages, which cuts
//! the bytes written per forward by about 3.4 times against 4 KiB (records
//! are a few hundred bytes; docs/performance.md).

mod checkpoint;
mod filesystem;
mod moved;

use super::{
    Claimed, INLINE_OUTCOME, Outcome, Record, RecordId, Store, StoreError, Token, decode_outcome,
    encode_outcome,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, TryLockError};

/// A queued call.
struct Job {
    /// Only the writer thread runs it: the sweep's batches, which take
    /// milliseconds where a request's call takes microseconds.
    writer_only: bool,
    /// Whether it runs in a savepoint of its own.
    writes: Writes,
    /// Runs on the connection inside the batch's transaction (or, given
    /// none, is not run: its transaction could not begin), says whether it
    /// succeeded, and hands back how to deliver its answer once the
    /// batch's commit is known.
    run: Run,
}

/// What a call can leave behind when it fails, which says whether it needs
/// a savepoint of its own inside its batch's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    /// At most one writing statement, with nothing that can fail after a
    /// write that succeeded: a failed call wrote nothing, since SQLite
    /// undoes a failed statement itself (or the whole transaction, which
    /// [`run_batch`] handles). No savepoint.
    One,
    /// Anything else: a savepoint of its own, rolled back if it fails, so
    /// that one call's error undoes only its own changes.
    Any,
}

/// What a queued call runs (see [`Job::run`]).
type Run = Box<dyn FnOnce(Option<&mut Connection>) -> (bool, Deliver) + Send>;

/// Delivers a queued call's answer, given the outcome of its batch's commit.
type Deliver = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Calls waiting for the connection, and whether someone drains them.
///
/// A call is queued only while `draining` is set, and whoever set it
/// drains the queue until it finds it empty and clears it, both under this
/// lock: so every queued call is someone's to run, and a clear flag means
/// an empty queue.
#[derive(Default)]
struct Pending {
    draining: bool,
    jobs: Vec<Job>,
}

fn lock_pending(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

/// Who drains the queue.
enum Drainer {
    /// The writer thread: everything, until the queue is empty.
    Writer,
    /// A runtime thread, after its own call: at most this many calls and
    /// none of the writer's only, so that the tasks waiting for that thread
    /// wait for a few calls' time at most.
    Runtime { budget: usize },
}

/// Runs the queued calls on `connection`, a batch of at most
/// [`MAX_BATCH`] per transaction, until the queue is empty (then clears
/// the draining and returns `false`) or, for a runtime thread, until its
/// budget is spent or the next call is the writer's only (then returns
/// `true`: the draining stays set, for the caller to hand over).
fn drain(pending: &Mutex<Pending>, connection: &mut Connection, mut drainer: Drainer) -> bool {
    loop {
        let batch: Vec<Job> = {
            let mut pending = lock_pending(pending);
            if pending.jobs.is_empty() {
                pending.draining = false;
                return false;
            }
            let take = match &mut drainer {
                Drainer::Writer => pending.jobs.len().min(MAX_BATCH),
                Drainer::Runtime { budget } => {
                    let take = pending
                        .jobs
                        .iter()
                        .take(MAX_BATCH.min(*budget))
                        .take_while(|job| !job.writer_only)
                        .count();
                    *budget -= take;
                    take
                }
            };
            if take == 0 {
                return true;
            }
            pending.jobs.drain(..take).collect()
        };
        run_batch(connection, batch);
    }
}

/// The most calls one transaction takes.
const MAX_BATCH: usize = 128;

/// The most queued calls a runtime thread runs besides its own before it
/// hands the rest to the writer thread.
const INLINE_BUDGET: usize = 32;

/// Runs one parameterless statement, prepared once per connection.
fn statement(c: &Connection, sql: &str) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute([])
}

/// Runs `batch` in one transaction (each [`Writes::Any`] call in a
/// savepoint of its own), commits, then delivers each answer.
///
/// SQLite itself rolls the whole transaction back on some errors (a full
/// disk, an I/O error, no memory). A call after which no transaction is
/// open therefore lost the writes of every call before it in the batch:
/// those calls are answered with an error, and the rest of the batch runs
/// in a new transaction (a savepoint opened outside a transaction would
/// otherwise commit each later call on its own, behind an error answer).
///
/// A transaction that cannot begin (another process holds the write lock
/// past `busy_timeout`, an I/O error) fails every call of the batch at
/// once, none of them run: running them one by one instead would make
/// each wait for the same lock again, so that a batch of 32 calls behind a
/// lock held for good would take 32 waits instead of one.
fn run_batch(c: &mut Connection, batch: Vec<Job>) {
    let mut jobs = batch.into_iter();
    while jobs.len() > 0 {
        if let Err(error) = statement(c, "BEGIN IMMEDIATE") {
            tracing::warn!(%error, "SQLite could not begin a transaction; its calls failed, nothing written");
            let failed = Err(StoreError::from(error));
            for job in jobs {
                let (_, deliver) = (job.run)(None);
                deliver(failed.clone());
            }
            return;
        }
        let mut deliveries = Vec::with_capacity(jobs.len());
        let mut rolled_back = false;
        for job in jobs.by_ref() {
            let savepoint = job.writes == Writes::Any && statement(c, "SAVEPOINT call").is_ok();
            let (ok, deliver) = (job.run)(Some(c));
            deliveries.push(deliver);
            if c.is_autocommit() {
                rolled_back = true;
                break;
            }
            if savepoint {
                if !ok {
                    let _ = statement(c, "ROLLBACK TO call");
                }
                let _ = statement(c, "RELEASE call");
            }
        }
        let committed = if rolled_back {
            Err(StoreError(
                "SQLite rolled the batch's transaction back after an error; nothing of it was written"
                    .to_owned(),
            ))
        } else {
            let committed = statement(c, "COMMIT").map(drop).map_err(StoreError::from);
            if committed.is_err() {
                let _ = statement(c, "ROLLBACK");
            }
            committed
        };
        for deliver in deliveries {
            deliver(committed.clone());
        }
    }
}

/// The writer thread: drains the queue each time it is handed the
/// draining. Ends when the store is dropped.
fn write_batches(
    writer: Arc<Mutex<Connection>>,
    wakes: std::sync::mpsc::Receiver<()>,
    pending: Arc<Mutex<Pending>>,
) {
    while let Ok(()) = wakes.recv() {
        let mut connection = writer.lock().unwrap_or_else(|p| p.into_inner());
        drain(&pending, &mut connection, Drainer::Writer);
    }
}

/// How much a commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A crash of the gateway process (WAL, `synchronous=NORMAL`).
    Process,
    /// A crash of the host (WAL, `synchronous=FULL`: fsync per commit).
    Host,
}

/// A SQLite-backed store.
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    /// Run calls on the caller's thread when the connection is free.
    inline: bool,
    /// Calls waiting for the connection (see [`Pending`]).
    pending: Arc<Mutex<Pending>>,
    /// Hands the draining to the writer thread ([`write_batches`]).
    wake: std::sync::mpsc::Sender<()>,
    /// Reads large answers for [`Store::load`], one at a time (`reading`).
    reader: Arc<Mutex<Connection>>,
    /// A load's turn on `reader`, waited for without holding a thread, and
    /// held by the read itself: a load whose caller went away still has
    /// it until its read ends, so at most one blocking thread ever waits.
    reading: Arc<tokio::sync::Semaphore>,
    /// Dropping it stops the checkpoint thread.
    _checkpointer: checkpoint::Checkpointer,
    /// Whether the path still names the open database (`moved.rs`): once
    /// it does not, new claims are refused.
    watch: Arc<moved::Watch>,
}

/// The records: a table with a rowid, found by the unique index on
/// (caller, key), its stored answer the last column. The index's entries
/// are small, so a search compares keys inside its pages; and a finish
/// rewrites a row that its claim appended at the table's end, a page that
/// the other calls of its batch share. The first layout (`WITHOUT ROWID`,
/// the row itself the key) did neither: every search that met a row whose
/// answer had spilled onto overflow pages read that whole row to compare
/// keys (a claim next to an 8 MiB answer took 10 ms), and claim and finish
/// each dirtied a random leaf ([`rebuild_first_layout`] moves such a table).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    caller      BLOB NOT NULL,
    key         TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    token       BLOB,
    lease_until INTEGER,
    expires_at  INTEGER,
    stored_at   INTEGER,
    outcome     BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS records_id ON records (caller, key);
CREATE INDEX IF NOT EXISTS records_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_lease ON records (lease_until) WHERE lease_until IS NOT NULL;
";

/// Creates the schema, first moving a table of the first layout into it.
fn prepare_schema(connection: &Connection) -> rusqlite::Result<()> {
    let table: Option<String> = connection
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'records'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if table.is_some_and(|sql| sql.to_ascii_uppercase().contains("WITHOUT ROWID")) {
        rebuild_first_layout(connection)?;
    }
    connection.execute_batch(SCHEMA)
}

/// Moves every record of a first-layout table (`WITHOUT ROWID`; the
/// earliest also without `stored_at`) into [`SCHEMA`]'s, in one
/// transaction: a crash midway leaves the old table as it was.
fn rebuild_first_layout(connection: &Connection) -> rusqlite::Result<()> {
    tracing::info!("moving the SQLite records into the current table layout (once)");
    let has_stored_at = connection
        .prepare("SELECT 1 FROM pragma_table_info('records') WHERE name = 'stored_at'")?
        .exists([])?;
    let stored_at = if has_stored_at { "stored_at" } else { "NULL" };
    let transaction = connection.unchecked_transaction()?;
    transaction.execute_batch(&format!(
        "DROP INDEX IF EXISTS records_expiry;
         DROP INDEX IF EXISTS records_lease;
         ALTER TABLE records RENAME TO records_first_layout;
         {SCHEMA}
         INSERT INTO records (caller, key, fingerprint, token, lease_until, expires_at, stored_at, outcome)
             SELECT caller, key, fingerprint, token, lease_until, expires_at, {stored_at}, outcome
             FROM records_first_layout;
         DROP TABLE records_first_layout;"
    ))?;
    transaction.commit()
}

/// Creates the database file readable and writable by its owner only,
/// whatever the umask, and tightens an existing one and its `-wal` and
/// `-shm` files: stored answers can hold session cookies and personal
/// data. SQLite creates `-wal` and `-shm` with the database file's mode.
fn restrict_permissions(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Regular files only, opened without blocking: SQLite would wait
        // on a FIFO for ever, before the gateway says a word.
        let file = crate::shared::regular_file::append_regular(path, 0o600)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        for suffix in ["-wal", "-shm"] {
            let side = side_file(path, suffix);
            match std::fs::set_permissions(&side, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// One of the files SQLite keeps beside the database at `path` in WAL
/// mode: `suffix` is `-wal` or `-shm`.
fn side_file(path: &Path, suffix: &str) -> PathBuf {
    let mut side = path.as_os_str().to_owned();
    side.push(suffix);
    PathBuf::from(side)
}

/// The page size of new databases (existing ones keep theirs).
const PAGE_SIZE: u32 = 1024;

impl SqliteStore {
    /// Fails once the database's path names another file or none: a claim
    /// written now would not survive the next start (`moved.rs`).
    fn in_place(&self) -> Result<(), StoreError> {
        self.watch.in_place().map_err(StoreError)
    }

    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        restrict_permissions(path).map_err(|e| {
            StoreError(format!(
                "cannot open or create `{}` as the database, readable by its owner only: {e}",
                path.display()
            ))
        })?;
        let connection = Connection::open(path).map_err(|e| {
            StoreError(format!(
                "cannot open the SQLite database `{}`: {e}",
                path.display()
            ))
        })?;
        if let Some(filesystem) = filesystem::network_filesystem(path) {
            tracing::warn!(
                filesystem,
                path = %path.display(),
                "the SQLite database is on a network file system, where SQLite's locks may not \
                 hold and its WAL is not shared between hosts: move it to a local disk, or use \
                 PostgreSQL to share claims between hosts"
            );
        }
        let synchronous = match durability {
            Durability::Process => "NORMAL",
            Durability::Host => "FULL",
        };
        let prepared = connection
            .execute_batch(&format!(
                "PRAGMA page_size = {PAGE_SIZE}; PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = {synchronous}; PRAGMA busy_timeout = 5000;"
            ))
            .and_then(|()| prepare_schema(&connection))
            .and_then(|()| connection.query_row("PRAGMA page_size", [], |row| row.get(0)))
            .and_then(|page_size: u32| {
                let limits = checkpoint::Limits::for_page_size(page_size);
                connection.execute_batch(&format!(
                    "PRAGMA wal_autocheckpoint = {}; PRAGMA journal_size_limit = {};",
                    limits.backstop_frames,
                    checkpoint::WAL_FILE_BYTES
                ))?;
                Ok(limits)
            });
        let limits = prepared
            .map_err(|e| StoreError(format!("cannot prepare `{}`: {e}", path.display())))?;
        // Room for every statement of the store and the writer's batches.
        connection.set_prepared_statement_cache_capacity(64);
        let reader = Connection::open(path)
            .and_then(|reader| {
                reader.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")?;
                Ok(reader)
            })
            .map_err(|e| {
                StoreError(format!(
                    "cannot open the SQLite database `{}` for reading: {e}",
                    path.display()
                ))
            })?;
        let writer = Arc::new(Mutex::new(connection));
        let (wake, wakes) = std::sync::mpsc::channel();
        let pending = Arc::new(Mutex::new(Pending::default()));
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn({
                let (writer, pending) = (writer.clone(), pending.clone());
                move || write_batches(writer, wakes, pending)
            })
            .map_err(|e| StoreError(format!("cannot start the SQLite writer thread: {e}")))?;
        let watch = Arc::new(moved::Watch::new(path));
        Ok(Self {
            _checkpointer: checkpoint::Checkpointer::spawn(
                path,
                writer.clone(),
                limits,
                watch.clone(),
            )?,
            watch,
            writer,
            reader: Arc::new(Mutex::new(reader)),
            reading: Arc::new(tokio::sync::Semaphore::new(1)),
            inline: durability == Durability::Process,
            pending,
            wake,
        })
    }

    /// Runs `f` on the connection, in a batch with whatever else is
    /// queued (see the module documentation), in a savepoint of its own.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run_queued(f, false, Writes::Any).await
    }

    /// [`Self::run`] for an `f` that keeps [`Writes::One`]'s promise: no
    /// savepoint, which is two statements fewer per call.
    async fn run_one<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run_queued(f, false, Writes::One).await
    }

    /// Drains the queue on this runtime thread if the connection is free,
    /// within [`INLINE_BUDGET`]; hands over to the writer thread whatever
    /// it leaves, and everything if the connection is busy (a runtime
    /// thread never waits for the lock).
    fn drain_here(&self) {
        let free = match self.writer.try_lock() {
            Ok(connection) => Some(connection),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        let more = match free {
            Some(mut connection) => {
                // Its own call and up to INLINE_BUDGET others.
                let drainer = Drainer::Runtime {
                    budget: INLINE_BUDGET + 1,
                };
                drain(&self.pending, &mut connection, drainer)
            }
            None => true,
        };
        if more {
            self.hand_over();
        }
    }

    /// Hands the draining (set) to the writer thread. Without one (it can
    /// only have died), fails the queued calls rather than strand them.
    fn hand_over(&self) {
        if self.wake.send(()).is_err() {
            let jobs = {
                let mut pending = lock_pending(&self.pending);
                pending.draining = false;
                std::mem::take(&mut pending.jobs)
            };
            // Dropping a call drops its answer's sender: the call fails.
            drop(jobs);
        }
    }

    /// Queues `f` for whoever drains the queue; its answer once its batch
    /// has committed. If no one drains it, this call does: here at the
    /// default durability (after letting the tasks ready on this thread
    /// queue theirs) unless `writer_only`, else on the writer thread.
    async fn run_queued<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
        writer_only: bool,
        writes: Writes,
    ) -> Result<T, StoreError> {
        let (job, answered) = queued_job(f, writer_only, writes);
        let start = {
            let mut pending = lock_pending(&self.pending);
            pending.jobs.push(job);
            !std::mem::replace(&mut pending.draining, true)
        };
        if start && self.inline && !writer_only {
            let gathering = Gathering(Some(self));
            // The tasks ready on this thread run first, and the calls they
            // make join this batch: fewer commits under load, one turn of
            // the scheduler's queue without.
            tokio::task::yield_now().await;
            gathering.drain_here();
        } else if start {
            self.hand_over();
        }
        answered.await.map_err(|_| {
            StoreError("the SQLite writer thread stopped before answering".to_owned())
        })?
    }
}

/// The draining, held by a task between queueing its call and draining
/// the queue: if the task is dropped at its yield (its request cancelled),
/// the writer thread takes the draining over, so no queued call is left
/// with no one to run it.
struct Gathering<'a>(Option<&'a SqliteStore>);

impl Gathering<'_> {
    fn drain_here(mut self) {
        if let Some(store) = self.0.take() {
            store.drain_here();
        }
    }
}

impl Drop for Gathering<'_> {
    fn drop(&mut self) {
        if let Some(store) = self.0.take() {
            store.hand_over();
        }
    }
}

/// Where a queued call's answer comes.
type Answer<T> = tokio::sync::oneshot::Receiver<Result<T, StoreError>>;

/// `f` as a queued call, and where its answer will come.
fn queued_job<T: Send + 'static>(
    f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    writer_only: bool,
    writes: Writes,
) -> (Job, Answer<T>) {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let job = Job {
        writer_only,
        writes,
        run: Box::new(move |connection| {
            let result = connection.map(f);
            let ok = result.as_ref().is_some_and(Result::is_ok);
            let deliver: Deliver = Box::new(move |committed| {
                let _ = answer.send(committed.and_then(|()| match result {
                    Some(result) => result.map_err(StoreError::from),
                    None => Err(StoreError("SQLite did not run the call".to_owned())),
                }));
            });
            (ok, deliver)
        }),
    };
    (job, answered)
}

/// The holder's claim turned into a final record: its answer stored.
const FINISH: &str = "UPDATE records SET token = NULL, lease_until = NULL, expires_at = ?4, outcome = ?5, stored_at = ?6
    WHERE caller = ?1 AND key = ?2 AND token = ?3";

/// A lapsed claim turned into "outcome unknown", only if it is still the
/// holder's and still lapsed.
const EXPIRE_LEASE: &str = "UPDATE records SET token = NULL, lease_until = NULL, expires_at = ?4, outcome = ?5, stored_at = ?6
    WHERE caller = ?1 AND key = ?2 AND token = ?3 AND lease_until <= ?6";

/// Runs [`FINISH`] or [`EXPIRE_LEASE`] with their shared parameters; the
/// rows changed.
fn settle(
    connection: &Connection,
    statement: &str,
    id: &RecordId,
    token: &Token,
    outcome: &[u8],
    expires_at: u64,
    now: u64,
) -> rusqlite::Result<usize> {
    connection.prepare_cached(statement)?.execute(params![
        &id.caller[..],
        &id.key,
        &token[..],
        ms(expires_at),
        outcome,
        ms(now)
    ])
}

/// The record of `id`, its outcome only when it holds at most `inline`
/// bytes (`length()` reads a blob's size without its overflow pages).
fn read(connection: &Connection, id: &RecordId, inline: usize) -> rusqlite::Result<Option<RawRow>> {
    connection
        .prepare_cached(
            "SELECT fingerprint, token, lease_until, expires_at,
                CASE WHEN length(outcome) <= ?3 THEN outcome END, stored_at, length(outcome)
             FROM records WHERE caller = ?1 AND key = ?2",
        )?
        .query_row(
            params![
                &id.caller[..],
                &id.key,
                i64::try_from(inline).unwrap_or(i64::MAX)
            ],
            |row| {
                Ok(RawRow {
                    fingerprint: row.get(0)?,
                    token: row.get(1)?,
                    lease_until: row.get(2)?,
                    expires_at: row.get(3)?,
                    outcome: row.get(4)?,
                    stored_at: row.get(5)?,
                    outcome_size: row.get(6)?,
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
    stored_at: Option<i64>,
    outcome_size: Option<i64>,
}

fn corrupt() -> StoreError {
    StoreError("corrupt record in the SQLite store".to_owned())
}

impl RawRow {
    /// What a claim that found this row answers: a done record read
    /// without its outcome by its size.
    fn into_claimed(self) -> Result<Claimed, StoreError> {
        match (self.expires_at, &self.outcome, self.outcome_size) {
            (Some(_), None, Some(size)) => Ok(Claimed::Large {
                fingerprint: self.fingerprint.try_into().map_err(|_| corrupt())?,
                size: usize::try_from(size).map_err(|_| corrupt())?,
            }),
            _ => self.into_record().map(Claimed::Existing),
        }
    }

    fn into_record(self) -> Result<Record, StoreError> {
        let fingerprint: [u8; 32] = self.fingerprint.try_into().map_err(|_| corrupt())?;
        match (self.token, self.lease_until, self.expires_at, self.outcome) {
            (Some(token), Some(lease), None, None) => Ok(Record::InFlight {
                fingerprint,
                token: token.try_into().map_err(|_| corrupt())?,
                lease_until: lease as u64,
            }),
            (None, None, Some(expires), Some(outcome)) => Ok(Record::Done {
                fingerprint,
                outcome: decode_outcome(outcome)?,
                expires_at: expires as u64,
                stored_at: self.stored_at.map(|at| at as u64),
            }),
            _ => Err(corrupt()),
        }
    }
}

/// One batch of expired done records.
const SWEEP_EXPIRED: &str = "DELETE FROM records WHERE rowid IN
    (SELECT rowid FROM records WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT 100)";

/// One batch of lapsed claims, turned into "outcome unknown".
const SWEEP_LAPSED: &str = "UPDATE records SET token = NULL, lease_until = NULL, expires_at = ?2, outcome = ?3, stored_at = ?1
    WHERE rowid IN
    (SELECT rowid FROM records WHERE lease_until IS NOT NULL AND lease_until <= ?1 LIMIT 100)";

use super::sql_ms as ms;

impl Store for SqliteStore {
    async fn claim(
        &self,
        id: &RecordId,
        fingerprint: &[u8; 32],
        token: &Token,
        lease_until: u64,
        now: u64,
    ) -> Result<Claimed, StoreError> {
        if let Err(refused) = self.in_place() {
            // Nothing new is written; a record the open file holds is
            // still answered from it (a replay, a `409`, a `422`).
            let id = id.clone();
            let row = self.run_one(move |c| read(c, &id, INLINE_OUTCOME)).await?;
            return match row {
                Some(row)
                    if row.token.as_deref() != Some(&token[..])
                        && row.expires_at.is_none_or(|at| at > ms(now)) =>
                {
                    row.into_claimed()
                }
                _ => Err(refused),
            };
        }
        let (id, fingerprint, token) = (id.clone(), *fingerprint, *token);
        let row = self
            .run_one(move |c| {
                // The insert first: it decides every race for an absent or
                // expired record, and a fresh key (every forward) then needs
                // no lookup of its own. A live record makes it change
                // nothing, and is read.
                let inserted = c.prepare_cached("INSERT INTO records (caller, key, fingerprint, token, lease_until) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (caller, key) DO UPDATE SET
                        fingerprint = excluded.fingerprint, token = excluded.token,
                        lease_until = excluded.lease_until, expires_at = NULL, outcome = NULL
                     WHERE records.expires_at IS NOT NULL AND records.expires_at <= ?6")?.execute(params![&id.caller[..], &id.key, &fingerprint[..], &token[..], ms(lease_until), ms(now)])?;
                if inserted == 1 {
                    return Ok(None);
                }
                let row = read(c, &id, INLINE_OUTCOME)?;
                // Our own claim, written by a call whose answer was lost.
                if row.as_ref().is_some_and(|row| row.token.as_deref() == Some(&token[..])) {
                    return Ok(None);
                }
                Ok(row)
            })
            .await?;
        match row {
            None => Ok(Claimed::Won),
            Some(row) => row.into_claimed(),
        }
    }

    async fn renew(
        &self,
        id: &RecordId,
        token: &Token,
        lease_until: u64,
    ) -> Result<bool, StoreError> {
        let (id, token) = (id.clone(), *token);
        self.run_one(move |c| {
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
        now: u64,
    ) -> Result<bool, StoreError> {
        let (id, token, outcome) = (id.clone(), *token, encode_outcome(outcome));
        self.run_one(move |c| {
            settle(c, FINISH, &id, &token, &outcome, expires_at, now).map(|n| n == 1)
        })
        .await
    }

    async fn release(&self, id: &RecordId, token: &Token) -> Result<bool, StoreError> {
        let (id, token) = (id.clone(), *token);
        self.run_one(move |c| {
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
                settle(c, EXPIRE_LEASE, &id, &token, &outcome, expires_at, now)?;
                read(c, &id, INLINE_OUTCOME)
            })
            .await?;
        match row.map(RawRow::into_claimed).transpose()? {
            Some(Claimed::Existing(record)) => Ok(Some(record)),
            // Large: left for the claim that looks again, and `load`.
            _ => Ok(None),
        }
    }

    async fn load(
        &self,
        id: &RecordId,
        now: u64,
        _size: usize,
    ) -> Result<Option<Record>, StoreError> {
        // A claim's answer is given after its batch committed, so the
        // record it found large is there for this connection to read.
        let turn = self.reading.clone().acquire_owned().await;
        let turn = turn.map_err(StoreError::from)?;
        let (reader, id) = (self.reader.clone(), id.clone());
        let row = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let reader = reader.lock().unwrap_or_else(|p| p.into_inner());
            read(&reader, &id, usize::MAX)
        })
        .await
        .map_err(StoreError::from)?
        .map_err(StoreError::from)?;
        let record = row.map(RawRow::into_record).transpose()?;
        Ok(record.filter(|record| record.is_live(now)))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.in_place()?;
        self.run_one(|c| c.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    async fn sweep(&self, now: u64, unknown_ttl: u64) -> Result<u64, StoreError> {
        // In batches of SWEEP_BATCH rows, each in one of the writer
        // thread's transactions (never a runtime thread's), paced
        // (`paced_batches`): a request waits for at most one batch, not for
        // the whole backlog (docs/performance.md has the measurements).
        let unknown = encode_outcome(&Outcome::Unknown(super::LAPSED_LEASE_DETAIL.to_owned()));
        let mut touched = 0;
        for statement in [SWEEP_EXPIRED, SWEEP_LAPSED] {
            touched += super::paced_batches(|| {
                let unknown = unknown.clone();
                async move {
                    let n = self
                        .run_queued(
                            move |c| {
                                let mut statement = c.prepare_cached(statement)?;
                                if statement.parameter_count() == 1 {
                                    statement.execute(params![ms(now)])
                                } else {
                                    statement.execute(params![
                                        ms(now),
                                        ms(now.saturating_add(unknown_ttl)),
                                        unknown
                                    ])
                                }
                            },
                            true,
                            Writes::One,
                        )
                        .await?;
                    Ok(n as u64)
                }
            })
            .await?;
        }
        Ok(touched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The sweep stops when a batch is short of SWEEP_BATCH rows, so its
    /// statements must take exactly that many.
    #[test]
    fn the_sweep_statements_take_one_batch() {
        let limit = format!("LIMIT {})", super::super::SWEEP_BATCH);
        assert!(SWEEP_EXPIRED.ends_with(&limit), "{SWEEP_EXPIRED}");
        assert!(SWEEP_LAPSED.ends_with(&limit), "{SWEEP_LAPSED}");
    }

    /// The writer's connection held by a thread of its own until
    /// [`WriterHeld::release`], or for 30 s if the test never gets there
    /// (a wrong implementation then fails rather than hangs).
    struct WriterHeld {
        release: std::sync::mpsc::Sender<()>,
        holder: std::thread::JoinHandle<()>,
        /// Set once the holder has let go.
        let_go: Arc<std::sync::atomic::AtomicBool>,
    }

    impl WriterHeld {
        /// Returns once the connection is held.
        fn hold(writer: Arc<Mutex<Connection>>) -> Self {
            let (release, released) = std::sync::mpsc::channel::<()>();
            let (holding, held) = std::sync::mpsc::channel();
            let let_go = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let holder = std::thread::spawn({
                let let_go = let_go.clone();
                move || {
                    let _busy = writer.lock().unwrap();
                    holding.send(()).unwrap();
                    let _ = released.recv_timeout(Duration::from_secs(30));
                    let_go.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            });
            held.recv().unwrap();
            Self {
                release,
                holder,
                let_go,
            }
        }

        fn has_let_go(&self) -> bool {
            self.let_go.load(std::sync::atomic::Ordering::SeqCst)
        }

        fn release(self) {
            self.release.send(()).unwrap();
            self.holder.join().unwrap();
        }
    }

    /// On a single-threaded runtime a call that waited for the lock on the
    /// runtime's thread would stop everything, including the task that
    /// lets the lock go.
    #[tokio::test(flavor = "current_thread")]
    async fn a_call_finding_the_connection_busy_waits_off_the_runtime_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(SqliteStore::open(&dir.path().join("db"), Durability::Process).unwrap());
        let busy = WriterHeld::hold(store.writer.clone());

        let id = RecordId {
            caller: [1; 32],
            key: "k".to_owned(),
        };
        let claim = tokio::spawn({
            let store = store.clone();
            async move { store.claim(&id, &[0; 32], &[1; 16], 10, 0).await }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!claim.is_finished(), "the claim waits for the connection");
        busy.release();
        assert_eq!(claim.await.unwrap().unwrap(), Claimed::Won);
    }

    /// Once the path no longer names the open database, a claim writes
    /// nothing: a record the file holds is still answered (done, in
    /// flight), while a new key, an expired record and a repeat of the
    /// caller's own claim are refused with the reason; `ping` fails too.
    #[tokio::test(flavor = "current_thread")]
    async fn a_moved_database_answers_what_it_holds_and_takes_nothing_new() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = SqliteStore::open(&path, Durability::Process).unwrap();
        let id = |key: &str| RecordId {
            caller: [1; 32],
            key: key.to_owned(),
        };
        let done = Outcome::Unknown("stored".to_owned());
        for (key, token) in [("done", [1; 16]), ("expired", [2; 16]), ("busy", [3; 16])] {
            let claimed = store.claim(&id(key), &[0; 32], &token, 100, 0).await;
            assert_eq!(claimed.unwrap(), Claimed::Won);
        }
        let expiry = |key| if key == "expired" { 50 } else { 1_000 };
        for (key, token) in [("done", [1; 16]), ("expired", [2; 16])] {
            let stored = store.finish(&id(key), &token, &done, expiry(key), 0).await;
            assert!(stored.unwrap());
        }
        std::fs::remove_file(&path).unwrap();
        assert!(
            store.watch.check(),
            "the checkpoint thread's look, made now"
        );
        let claim = async |key: &str, token: [u8; 16]| {
            store.claim(&id(key), &[0; 32], &token, 200, 60).await
        };
        assert!(matches!(
            claim("done", [9; 16]).await,
            Ok(Claimed::Existing(Record::Done { .. }))
        ));
        assert!(matches!(
            claim("busy", [9; 16]).await,
            Ok(Claimed::Existing(Record::InFlight { .. }))
        ));
        for (key, token) in [("fresh", [9; 16]), ("expired", [9; 16]), ("busy", [3; 16])] {
            let refused = claim(key, token).await.unwrap_err();
            assert!(
                refused.0.contains("deleted, renamed or replaced"),
                "{key}: {refused:?}"
            );
        }
        assert!(store.ping().await.is_err());
    }

    /// A large answer is read beside the writer's connection: a claim
    /// never waits behind the thousands of pages of someone's replay, and
    /// the replay never waits for the writer's batches.
    #[tokio::test(flavor = "current_thread")]
    async fn a_large_answer_is_loaded_while_the_writer_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), Durability::Process).unwrap();
        let id = RecordId {
            caller: [1; 32],
            key: "large".to_owned(),
        };
        let large = Outcome::Response(super::super::StoredResponse {
            status: 201,
            headers: vec![],
            body: vec![b'x'; INLINE_OUTCOME * 4],
        });
        assert_eq!(
            store.claim(&id, &[0; 32], &[1; 16], 10, 0).await.unwrap(),
            Claimed::Won
        );
        assert!(store.finish(&id, &[1; 16], &large, 1000, 0).await.unwrap());
        let busy = WriterHeld::hold(store.writer.clone());
        let loaded = store.load(&id, 1, large.size()).await.unwrap();
        assert!(
            !busy.has_let_go(),
            "the load waited for the writer's connection"
        );
        assert!(matches!(loaded, Some(Record::Done { outcome, .. }) if outcome == large));
        busy.release();
    }

    /// A database of the first layout (`WITHOUT ROWID`; the earliest also
    /// without `stored_at` and the lease index) is moved into the current
    /// one at start-up with every record as it was, once.
    #[tokio::test(flavor = "current_thread")]
    async fn records_of_the_first_layout_are_moved_and_kept() {
        const NOW: u64 = 1_700_000_000_000;
        let answer = Outcome::Response(super::super::StoredResponse {
            status: 201,
            headers: vec![("set-cookie".to_owned(), b"a=1".to_vec())],
            body: b"{}".to_vec(),
        });
        for earliest in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db");
            {
                let c = Connection::open(&path).unwrap();
                let stored_at = if earliest { "" } else { ", stored_at INTEGER" };
                c.execute_batch(&format!(
                    "PRAGMA page_size = 1024; PRAGMA journal_mode = WAL;
                     CREATE TABLE records (caller BLOB NOT NULL, key TEXT NOT NULL,
                        fingerprint BLOB NOT NULL, token BLOB, lease_until INTEGER,
                        expires_at INTEGER, outcome BLOB{stored_at},
                        PRIMARY KEY (caller, key)) WITHOUT ROWID;
                     CREATE INDEX records_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;"
                ))
                .unwrap();
                if !earliest {
                    c.execute_batch("CREATE INDEX records_lease ON records (lease_until) WHERE lease_until IS NOT NULL")
                        .unwrap();
                }
                c.execute(
                    "INSERT INTO records (caller, key, fingerprint, expires_at, outcome) VALUES (?1, 'done', ?2, ?3, ?4)",
                    params![&[1u8; 32][..], &[7u8; 32][..], ms(NOW + 1000), encode_outcome(&answer)],
                )
                .unwrap();
                if !earliest {
                    c.execute("UPDATE records SET stored_at = ?1", params![ms(NOW)])
                        .unwrap();
                }
                c.execute(
                    "INSERT INTO records (caller, key, fingerprint, token, lease_until) VALUES (?1, 'busy', ?2, ?3, ?4)",
                    params![&[1u8; 32][..], &[7u8; 32][..], &[5u8; 16][..], ms(NOW + 60_000)],
                )
                .unwrap();
            }
            for _ in 0..2 {
                let store = SqliteStore::open(&path, Durability::Process).unwrap();
                let id = |key: &str| RecordId {
                    caller: [1; 32],
                    key: key.to_owned(),
                };
                assert_eq!(
                    store
                        .claim(&id("done"), &[7; 32], &[2; 16], NOW + 60_000, NOW)
                        .await
                        .unwrap(),
                    Claimed::Existing(Record::Done {
                        fingerprint: [7; 32],
                        outcome: answer.clone(),
                        expires_at: NOW + 1000,
                        stored_at: (!earliest).then_some(NOW),
                    })
                );
                assert_eq!(
                    store
                        .claim(&id("busy"), &[7; 32], &[2; 16], NOW + 60_000, NOW)
                        .await
                        .unwrap(),
                    Claimed::Existing(Record::InFlight {
                        fingerprint: [7; 32],
                        token: [5; 16],
                        lease_until: NOW + 60_000,
                    })
                );
                let c = store.writer.lock().unwrap();
                let tables: Vec<String> = c
                    .prepare("SELECT sql FROM sqlite_master WHERE type = 'table'")
                    .unwrap()
                    .query_map([], |row| row.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert_eq!(tables.len(), 1, "{tables:?}");
                assert!(!tables[0].contains("WITHOUT ROWID"), "{tables:?}");
            }
        }
    }

    /// The numbers in test table `t`, in order.
    fn rows(c: &Connection) -> Vec<i64> {
        c.prepare("SELECT n FROM t ORDER BY n")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A call that puts `n` into test table `t`.
    fn insert(n: i64) -> impl FnOnce(&mut Connection) -> rusqlite::Result<()> + Send + 'static {
        move |c| c.execute("INSERT INTO t VALUES (?1)", [n]).map(drop)
    }

    /// What SQLite does on a full disk or an I/O error, simulated: the
    /// second call ends the transaction. The first call's write is undone
    /// and both are answered so; the third runs in a transaction of its
    /// own, and its answer says it was written.
    #[test]
    fn calls_after_sqlite_rolled_the_batch_back_run_in_a_new_transaction() {
        let mut c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (n INTEGER)").unwrap();
        let (first, mut first_answer) = queued_job(insert(1), false, Writes::Any);
        let (lost, mut lost_answer) = queued_job(
            |c: &mut Connection| {
                c.execute_batch("ROLLBACK")?;
                Err::<(), _>(rusqlite::Error::InvalidQuery)
            },
            false,
            Writes::Any,
        );
        let (after, mut after_answer) = queued_job(insert(3), false, Writes::Any);
        run_batch(&mut c, vec![first, lost, after]);
        assert!(
            first_answer.try_recv().unwrap().is_err(),
            "its write was undone"
        );
        assert!(lost_answer.try_recv().unwrap().is_err());
        assert!(after_answer.try_recv().unwrap().is_ok());
        assert_eq!(rows(&c), [3]);
        assert!(c.is_autocommit(), "no transaction left open");
    }

    /// Another process holds the write lock past `busy_timeout`: the
    /// batch's transaction cannot begin, and every call of it is answered
    /// with that error after one wait for the lock, none run (run one by
    /// one, each would wait for it again).
    #[test]
    fn a_batch_that_cannot_begin_fails_its_calls_after_one_wait() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        /// Waits for the lock begun (each gives up at once).
        static WAITS: AtomicUsize = AtomicUsize::new(0);
        fn give_up(_: i32) -> bool {
            WAITS.fetch_add(1, Ordering::SeqCst);
            false
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut c = Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER);")
            .unwrap();
        c.busy_handler(Some(give_up)).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut answers = Vec::new();
        let batch = (1..=5)
            .map(|n| {
                let (job, answer) = queued_job(insert(n), false, Writes::One);
                answers.push(answer);
                job
            })
            .collect();
        run_batch(&mut c, batch);
        for mut answer in answers {
            assert!(answer.try_recv().unwrap().is_err());
        }
        assert_eq!(
            WAITS.load(Ordering::SeqCst),
            1,
            "one wait, not one per call"
        );
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(rows(&c), Vec::<i64>::new(), "none of them ran");
        assert!(c.is_autocommit());
    }

    /// A call without a savepoint ([`Writes::One`]) whose one statement
    /// fails half-way (its first row written, its second refused) leaves
    /// nothing of itself, and the calls around it in the batch commit.
    #[test]
    fn a_failed_one_statement_call_undoes_itself_without_a_savepoint() {
        let mut c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (n INTEGER UNIQUE)")
            .unwrap();
        let (before, mut before_answer) = queued_job(insert(1), false, Writes::One);
        let (half, mut half_answer) = queued_job(
            |c: &mut Connection| c.execute("INSERT INTO t VALUES (2), (1)", []).map(drop),
            false,
            Writes::One,
        );
        let (after, mut after_answer) = queued_job(insert(3), false, Writes::One);
        run_batch(&mut c, vec![before, half, after]);
        assert!(before_answer.try_recv().unwrap().is_ok());
        assert!(half_answer.try_recv().unwrap().is_err());
        assert!(after_answer.try_recv().unwrap().is_ok());
        assert_eq!(rows(&c), [1, 3], "the half-done statement left nothing");
    }

    /// Where a call ran: its thread's id and name.
    type Ran = (std::thread::ThreadId, Option<String>);

    fn here(_: &mut Connection) -> rusqlite::Result<Ran> {
        let thread = std::thread::current();
        Ok((thread.id(), thread.name().map(str::to_owned)))
    }

    /// Starts a call that holds the connection on a runtime thread of its
    /// own, queues one call per entry of `writer_only` behind it (through
    /// `run`, or as the sweep's when `true`), then lets the holder finish.
    /// The holder's thread, and where each queued call ran.
    fn queued_behind_a_holder(writer_only: &[bool]) -> (std::thread::ThreadId, Vec<Ran>) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(SqliteStore::open(&dir.path().join("db"), Durability::Process).unwrap());
        let (inside, held) = std::sync::mpsc::channel();
        let (go, gone) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn({
            let store = store.clone();
            move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                runtime
                    .block_on(store.run(move |_| {
                        inside.send(()).unwrap();
                        // A wrong implementation fails, not hangs.
                        let _ = gone.recv_timeout(Duration::from_secs(30));
                        Ok(())
                    }))
                    .unwrap();
                std::thread::current().id()
            }
        });
        held.recv().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ran = runtime.block_on(async {
            let mut calls: Vec<_> = writer_only
                .iter()
                .map(|&writer_only| {
                    let store = &store;
                    Box::pin(async move {
                        if writer_only {
                            store.run_queued(here, true, Writes::Any).await
                        } else {
                            store.run(here).await
                        }
                    })
                })
                .collect();
            for call in &mut calls {
                assert!(
                    futures_util::poll!(call).is_pending(),
                    "queued behind the holder"
                );
            }
            go.send(()).unwrap();
            let mut ran = Vec::new();
            for call in calls {
                ran.push(call.await.unwrap());
            }
            ran
        });
        (holder.join().unwrap(), ran)
    }

    /// Calls made by tasks ready on the same thread join the batch of the
    /// call that took the draining: they run before its commit, and share it.
    #[tokio::test(flavor = "current_thread")]
    async fn calls_made_together_share_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Arc::new(SqliteStore::open(&path, Durability::Process).unwrap());
        // Sees only what was committed (WAL: a reader never waits).
        let other = Connection::open(&path).unwrap();
        let first = tokio::spawn({
            let store = store.clone();
            async move {
                let insert = "INSERT INTO records (caller, key, fingerprint) VALUES (?1, 'k', ?2)";
                store
                    .run(move |c| c.execute(insert, params![&[1u8; 32][..], &[0u8; 32][..]]))
                    .await
            }
        });
        let second = tokio::spawn({
            let store = store.clone();
            async move {
                let count = "SELECT count(*) FROM records";
                store
                    .run(move |_| other.query_row(count, [], |row| row.get::<_, i64>(0)))
                    .await
            }
        });
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(
            second.await.unwrap().unwrap(),
            0,
            "the second call ran inside the first one's transaction"
        );
    }

    /// A call dropped after it took the draining (its request cancelled
    /// at its yield) leaves the queue to the writer thread: later calls
    /// are not stranded behind it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_call_dropped_at_its_yield_leaves_no_call_stranded() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), Durability::Process).unwrap();
        let mut dropped = Box::pin(store.run(|_| Ok(())));
        assert!(
            futures_util::poll!(&mut dropped).is_pending(),
            "at its yield"
        );
        drop(dropped);
        let next = tokio::time::timeout(Duration::from_secs(30), store.run(here)).await;
        assert!(next.expect("a later call is answered").is_ok());
    }

    /// A call queued behind one running on a runtime thread is run by that
    /// thread when it is done with its own, not handed to the writer
    /// thread (which would cost two thread wake-ups).
    #[test]
    fn a_call_queued_behind_a_call_on_a_runtime_thread_runs_on_that_thread() {
        let (holder, ran) = queued_behind_a_holder(&[false]);
        assert_eq!(ran[0].0, holder);
    }

    /// A runtime thread runs at most INLINE_BUDGET queued calls after its
    /// own; the writer thread runs what is still queued then.
    #[test]
    fn a_runtime_thread_hands_what_is_left_after_its_budget_to_the_writer_thread() {
        let (holder, ran) = queued_behind_a_holder(&[false; INLINE_BUDGET + 1]);
        let (last, inline) = ran.split_last().unwrap();
        assert!(inline.iter().all(|(id, _)| *id == holder));
        assert_eq!(last.1.as_deref(), Some("sqlite-writer"));
    }

    /// The sweep's batches take milliseconds: a runtime thread leaves
    /// them, and every call queued behind one, to the writer thread.
    #[test]
    fn a_runtime_thread_leaves_the_sweep_to_the_writer_thread() {
        let (holder, ran) = queued_behind_a_holder(&[false, true, false]);
        assert_eq!(ran[0].0, holder, "the call before the sweep's");
        for (_, name) in &ran[1..] {
            assert_eq!(name.as_deref(), Some("sqlite-writer"));
        }
    }

    /// Calls queued while the connection was busy run in one transaction:
    /// a call that fails undoes only its own writes, the others commit.
    #[tokio::test(flavor = "current_thread")]
    // The held lock is the point: it keeps the writer thread (not this
    // runtime) waiting while the calls queue.
    #[allow(clippy::await_holding_lock)]
    async fn a_failing_call_in_a_batch_undoes_only_its_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = SqliteStore::open(&path, Durability::Process).unwrap();
        let busy = store.writer.clone();
        let guard = busy.lock().unwrap();
        let mut calls: Vec<_> = (0..8u8)
            .map(|n| {
                Box::pin(store.run_queued(
                    move |c| {
                        c.execute(
                            "INSERT INTO records (caller, key, fingerprint) VALUES (?1, ?2, ?3)",
                            params![&[n; 32][..], format!("k{n}"), &[0u8; 32][..]],
                        )?;
                        if n == 3 {
                            // Written, then failed: must leave no row.
                            c.execute("INSERT INTO nowhere VALUES (1)", [])?;
                        }
                        Ok(n)
                    },
                    false,
                    Writes::Any,
                ))
            })
            .collect();
        // One poll each queues every call while the connection is held.
        for call in &mut calls {
            assert!(futures_util::poll!(call).is_pending());
        }
        drop(guard);
        for (n, call) in calls.into_iter().enumerate() {
            let answer = call.await;
            assert_eq!(answer.is_err(), n == 3, "call {n}: {answer:?}");
        }
        let other = Connection::open(&path).unwrap();
        let keys: Vec<String> = other
            .prepare("SELECT key FROM records ORDER BY key")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(keys, ["k0", "k1", "k2", "k4", "k5", "k6", "k7"]);
    }
}
