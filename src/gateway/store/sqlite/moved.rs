//! Whether the database file, and its `-wal` file, are still the ones the
//! store opened. Deleted, renamed away or replaced while the gateway runs,
//! SQLite goes on writing into the file it holds open, which no later
//! start will find: every claim made from then on would be forgotten at
//! the next start (from a lost `-wal`, those not yet copied into the
//! database by a checkpoint), and its retry forwarded again. So the store
//! watches both paths (each checkpoint cycle, every second) and, once one
//! names another file or none, refuses new claims: the gateway must be
//! restarted on the files it is meant to use. Unix only, where an open
//! file can be deleted; elsewhere nothing is watched.

use super::side_file;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a refused claim is answered with; names the path, no value.
fn refusal(path: &Path) -> String {
    format!(
        "the SQLite database file `{}` was deleted, renamed or replaced while the gateway ran; \
         claims written now would be lost at the next start, so new keys are refused: \
         restart the gateway on the database it should use (what was stored since the file \
         went is lost)",
        path.display()
    )
}

/// A file's identity: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(unix), allow(dead_code))]
struct FileId {
    device: u64,
    inode: u64,
}

/// The identity of the file at `path` now, when it can be read.
#[cfg(unix)]
fn identity(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some(FileId {
        device: metadata.dev(),
        inode: metadata.ino(),
    })
}

#[cfg(not(unix))]
fn identity(_path: &Path) -> Option<FileId> {
    None
}

/// The paths, the files they named when the store opened them, and which
/// has stopped naming its file, if one has (shared by the checkpoint
/// thread, which looks, and the store, which asks per claim).
#[derive(Debug)]
pub(super) struct Watch {
    files: Vec<(PathBuf, FileId)>,
    /// 0 while every path names its file; else 1 + the index of the first
    /// that does not.
    moved: AtomicUsize,
}

impl Watch {
    /// Watches `path`, which names the database the store has just opened
    /// (in WAL mode, so its `-wal` file is there too and stays while the
    /// store holds a connection open).
    pub(super) fn new(path: &Path) -> Self {
        let files = [path.to_owned(), side_file(path, "-wal")]
            .into_iter()
            .filter_map(|path| identity(&path).map(|id| (path, id)))
            .collect();
        Self {
            files,
            moved: AtomicUsize::new(0),
        }
    }

    /// Fails, saying why, once [`Watch::check`] has found a path naming
    /// another file or none.
    pub(super) fn in_place(&self) -> Result<(), String> {
        match self.moved.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(refusal(&self.files[n - 1].0)),
        }
    }

    /// Looks at the paths again: true once one has named another file or
    /// none (logged once, as an error). Paths that come back to their
    /// files later (renamed back) clear it again.
    pub(super) fn check(&self) -> bool {
        let moved = self
            .files
            .iter()
            .position(|(path, opened)| identity(path) != Some(*opened))
            .map_or(0, |index| index + 1);
        let was = self.moved.swap(moved, Ordering::Relaxed);
        if moved != 0 && moved != was {
            tracing::error!("{}", refusal(&self.files[moved - 1].0));
        } else if was != 0 && moved == 0 {
            tracing::warn!(
                path = %self.files[0].0.display(),
                "the SQLite database and its -wal file are back at their paths; new keys are \
                 accepted again"
            );
        }
        moved != 0
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_replaced_or_renamed_file_is_noticed_and_its_return_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.db");
        std::fs::write(&path, "db").unwrap();
        let watch = Watch::new(&path);
        assert!(!watch.check());
        let aside = dir.path().join("aside.db");
        std::fs::rename(&path, &aside).unwrap();
        assert!(watch.check(), "renamed away");
        assert!(watch.in_place().is_err());
        std::fs::write(&path, "another").unwrap();
        assert!(watch.check(), "another file at the path");
        std::fs::rename(&aside, &path).unwrap();
        assert!(!watch.check(), "the same file back");
        assert!(watch.in_place().is_ok());
        std::fs::remove_file(&path).unwrap();
        assert!(watch.check(), "deleted");
    }

    #[test]
    fn a_deleted_wal_file_is_noticed_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.db");
        std::fs::write(&path, "db").unwrap();
        std::fs::write(side_file(&path, "-wal"), "wal").unwrap();
        let watch = Watch::new(&path);
        assert!(!watch.check());
        std::fs::remove_file(side_file(&path, "-wal")).unwrap();
        assert!(watch.check(), "the -wal deleted");
        assert!(watch.in_place().unwrap_err().contains("records.db-wal"));
    }

    #[test]
    fn the_refusal_names_the_path_and_what_to_do() {
        let text = refusal(Path::new("/var/lib/gw/records.db"));
        assert!(text.contains("`/var/lib/gw/records.db`") && text.contains("restart"));
    }
}
