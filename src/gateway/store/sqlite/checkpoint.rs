//! WAL checkpoints for the SQLite store, on a thread and a connection of
//! their own.
//!
//! A checkpoint copies pages from the WAL into the database file and, at
//! either durability, fsyncs both; the WAL can start again from its
//! beginning only after a checkpoint has copied every frame. Left to the
//! writing connection (SQLite's auto-checkpoint), the request that crossed
//! the threshold paid the copy and the fsyncs. A PASSIVE checkpoint from a
//! second connection copies while writes go on, but under continuous
//! writes it never copies the last frame, so the WAL never restarts and
//! grows without bound. So every [`EVERY`] a cycle here:
//! 1. copies what it can without stopping writes (PASSIVE), again while the
//!    frames written during a pass were many, and
//! 2. when the WAL is past [`RESTART_BYTES`], takes the writer's lock for
//!    one more pass over the few frames written since, which completes;
//!    the writer's next commit restarts the WAL from its beginning.
//!
//! Writers wait only during step 2: a few frames and the fsyncs.
//! SQLite's auto-checkpoint stays on the writer as a backstop at
//! [`BACKSTOP_BYTES`], reached only if this thread falls far behind.

use super::super::StoreError;
use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a cycle runs.
const EVERY: Duration = Duration::from_secs(1);

/// The WAL size past which a cycle restarts it.
const RESTART_BYTES: u64 = 16 << 20;

/// The WAL size at which the writer checkpoints by itself.
const BACKSTOP_BYTES: u64 = 256 << 20;

/// The WAL file is truncated to this size when it restarts (it keeps this
/// much allocated, so writes after a restart do not grow the file).
pub(super) const WAL_FILE_BYTES: u64 = 64 << 20;

/// Passes without the lock at most, before taking it.
const CATCH_UP_PASSES: usize = 3;

/// Frames written during a pass below which the next pass takes the lock.
const FEW_FRAMES: i64 = 256;

/// [`RESTART_BYTES`] and [`BACKSTOP_BYTES`] in frames of one database.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) restart_frames: i64,
    pub(super) backstop_frames: i64,
}

impl Limits {
    pub(super) fn for_page_size(page_size: u32) -> Self {
        let frames =
            |bytes: u64| i64::try_from(bytes / u64::from(page_size.max(512))).unwrap_or(i64::MAX);
        Self {
            restart_frames: frames(RESTART_BYTES),
            backstop_frames: frames(BACKSTOP_BYTES),
        }
    }
}

/// Frames in the WAL after a pass, and how many of them are copied.
struct Pass {
    log: i64,
    copied: i64,
}

/// One PASSIVE pass, or `None` when SQLite could not run it at that moment
/// (it reports busy, and -1 for both counts, when it meets a commit under
/// way: a PASSIVE checkpoint never waits).
fn pass(connection: &Connection) -> rusqlite::Result<Option<Pass>> {
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        let busy: i64 = row.get(0)?;
        Ok((busy == 0).then_some(Pass {
            log: row.get(1)?,
            copied: row.get(2)?,
        }))
    })
}

/// Tries at most for a first pass that runs: a busy pass means a commit
/// was under way, and under continuous writes three tries in a row were
/// seen to meet one each time, which skipped the cycle (the WAL then grew
/// for another [`EVERY`]).
const FIRST_PASS_TRIES: usize = 20;

/// The pause after a busy try, for the commit under way to end.
const BUSY_PAUSE: Duration = Duration::from_millis(1);

/// The first pass that runs, of at most [`FIRST_PASS_TRIES`], pausing
/// [`BUSY_PAUSE`] after each busy one (this thread is the checkpointer's
/// own: the pause holds nothing up).
fn first_pass(connection: &Connection) -> rusqlite::Result<Option<Pass>> {
    for _ in 0..FIRST_PASS_TRIES {
        if let Some(pass) = pass(connection)? {
            return Ok(Some(pass));
        }
        std::thread::sleep(BUSY_PAUSE);
    }
    Ok(None)
}

/// One cycle (see the module documentation) on `own`, a connection other
/// than the writer's. Returns whether it completed a checkpoint, so that
/// the writer's next commit restarts the WAL.
pub(super) fn cycle(
    own: &Connection,
    writer: &Mutex<Connection>,
    limits: Limits,
) -> rusqlite::Result<bool> {
    // A busy pass says nothing about the WAL's size: only one that ran
    // decides whether this cycle has work.
    let Some(mut last) = first_pass(own)? else {
        return Ok(false);
    };
    if last.log < limits.restart_frames {
        return Ok(false);
    }
    for _ in 0..CATCH_UP_PASSES {
        let Some(next) = pass(own)? else {
            continue;
        };
        let written_meanwhile = next.log - last.log;
        last = next;
        if written_meanwhile < FEW_FRAMES {
            break;
        }
    }
    let _no_writes = writer.lock().unwrap_or_else(|p| p.into_inner());
    Ok(pass(own)?.is_some_and(|last| last.log == last.copied))
}

/// The running checkpoint thread; dropping this stops it.
pub(super) struct Checkpointer {
    _stop: Sender<()>,
}

impl Checkpointer {
    /// Starts cycles on the database at `path`, written through `writer`;
    /// each first looks whether `path` still names the database (`watch`).
    pub(super) fn spawn(
        path: &Path,
        writer: Arc<Mutex<Connection>>,
        limits: Limits,
        watch: Arc<super::moved::Watch>,
    ) -> Result<Self, StoreError> {
        let own = Connection::open(path).map_err(StoreError::from)?;
        let (stop, stopped) = channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".to_owned())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                    // With a file gone, a checkpoint would copy into a
                    // database no later start opens, or fail every second
                    // (a deleted `-wal`); the watch has said why, once.
                    if watch.check() {
                        continue;
                    }
                    if let Err(error) = cycle(&own, &writer, limits) {
                        tracing::warn!(%error, "WAL checkpoint failed");
                    }
                }
            })
            .map_err(StoreError::from)?;
        Ok(Self { _stop: stop })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    struct Database {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        writer: Arc<Mutex<Connection>>,
        own: Connection,
    }

    /// A WAL database whose writer never checkpoints by itself.
    fn database() -> Database {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA page_size = 1024; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
                 PRAGMA busy_timeout = 5000;
                 PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (x BLOB);",
            )
            .unwrap();
        let own = Connection::open(&path).unwrap();
        Database {
            _dir: dir,
            writer: Arc::new(Mutex::new(writer)),
            own,
            path,
        }
    }

    fn write(writer: &Mutex<Connection>) {
        writer
            .lock()
            .unwrap()
            .execute("INSERT INTO t VALUES (randomblob(600))", [])
            .unwrap();
    }

    /// The WAL header's first salt, which changes at every restart.
    fn salt(db: &Database) -> [u8; 4] {
        let wal = std::fs::read(db.path.with_file_name("db-wal")).unwrap();
        wal[16..20].try_into().unwrap()
    }

    fn limits(restart_frames: i64) -> Limits {
        Limits {
            restart_frames,
            backstop_frames: 0,
        }
    }

    #[test]
    fn limits_are_counted_in_pages() {
        let limits = Limits::for_page_size(1024);
        assert_eq!(limits.restart_frames, 16 * 1024);
        assert_eq!(limits.backstop_frames, 256 * 1024);
        assert_eq!(Limits::for_page_size(4096).restart_frames, 4 * 1024);
    }

    #[test]
    fn a_cycle_past_the_limit_lets_the_next_write_restart_the_wal() {
        let db = database();
        for _ in 0..20 {
            write(&db.writer);
        }
        let before = salt(&db);
        assert!(cycle(&db.own, &db.writer, limits(10)).unwrap());
        write(&db.writer);
        assert_ne!(salt(&db), before, "the WAL restarted");
        assert!(
            pass(&db.own)
                .unwrap()
                .expect("no writer: the pass runs")
                .log
                < 10
        );
    }

    #[test]
    fn a_cycle_below_the_limit_never_stops_the_writer() {
        let db = database();
        for _ in 0..20 {
            write(&db.writer);
        }
        let writing = db.writer.lock().unwrap();
        let (done, finished) = channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let own = Connection::open(&db.path).unwrap();
                done.send(cycle(&own, &db.writer, limits(1_000_000)))
                    .unwrap();
            });
            // A cycle that wanted the lock held here would never finish.
            let result = finished.recv_timeout(Duration::from_secs(30));
            drop(writing);
            assert!(
                !result
                    .expect("the cycle finished without the lock")
                    .unwrap()
            );
        });
    }

    /// The failure this design exists for: under continuous writes, PASSIVE
    /// checkpoints alone never let the WAL restart.
    #[test]
    fn the_wal_restarts_while_writes_continue() {
        let db = database();
        let (stop, writes) = (AtomicBool::new(false), AtomicUsize::new(0));
        let restarted = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let writer = db.writer.lock().unwrap();
                    writer
                        .execute("INSERT INTO t VALUES (randomblob(600))", [])
                        .unwrap();
                    // Counted under the lock: a count seen after a cycle
                    // returned is a write that began after it.
                    writes.fetch_add(1, Ordering::SeqCst);
                }
            });
            let wait_for = |count| {
                while writes.load(Ordering::SeqCst) < count {
                    std::thread::yield_now();
                }
            };
            let mut restarted = Vec::new();
            for _ in 0..3 {
                wait_for(writes.load(Ordering::SeqCst) + 50);
                let before = salt(&db);
                let completed = cycle(&db.own, &db.writer, limits(10));
                wait_for(writes.load(Ordering::SeqCst) + 1);
                restarted.push((completed.ok(), salt(&db) != before));
            }
            stop.store(true, Ordering::SeqCst);
            restarted
        });
        assert_eq!(restarted, vec![(Some(true), true); 3]);
    }
}
