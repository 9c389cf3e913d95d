//! Whether the database file is still the one the store opened. Deleted,
//! renamed away or replaced while the gateway runs, SQLite goes on writing
//! into the file it holds open, which no later start will find: every
//! claim made from then on would be forgotten at the next start, and its
//! retry forwarded again. So the store watches the path (each checkpoint
//! cycle, every second) and, once it names another file or none, refuses
//! new claims for good: the gateway must be restarted on the file it is
//! meant to use. Unix only, where an open file can be deleted; elsewhere
//! nothing is watched.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// What a refused claim is answered with; names the path, no value.
fn refusal(path: &Path) -> String {
    format!(
        "the SQLite database `{}` was deleted, renamed or replaced while the gateway ran; \
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

/// The path, the file it named when the store opened it, and whether it
/// has stopped naming it (shared by the checkpoint thread, which looks,
/// and the store, which asks per claim).
#[derive(Debug)]
pub(super) struct Watch {
    path: PathBuf,
    opened: Option<FileId>,
    moved: AtomicBool,
}

impl Watch {
    /// Watches `path`, which names the database the store has just opened.
    pub(super) fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            opened: identity(path),
            moved: AtomicBool::new(false),
        }
    }

    /// Fails, saying why, once [`Watch::check`] has found the path naming
    /// another file or none.
    pub(super) fn in_place(&self) -> Result<(), String> {
        if self.moved.load(Ordering::Relaxed) {
            return Err(refusal(&self.path));
        }
        Ok(())
    }

    /// Looks at the path again: true once it has named another file or
    /// none (logged once, as an error). A path that comes back to the
    /// opened file later (renamed back) clears it again.
    pub(super) fn check(&self) -> bool {
        let Some(opened) = self.opened else {
            return false;
        };
        let moved = identity(&self.path) != Some(opened);
        let was = self.moved.swap(moved, Ordering::Relaxed);
        if moved && !was {
            tracing::error!("{}", refusal(&self.path));
        } else if was && !moved {
            tracing::warn!(
                path = %self.path.display(),
                "the SQLite database is back at its path; new keys are accepted again"
            );
        }
        moved
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
    fn the_refusal_names_the_path_and_what_to_do() {
        let text = refusal(Path::new("/var/lib/gw/records.db"));
        assert!(text.contains("`/var/lib/gw/records.db`") && text.contains("restart"));
    }
}
