//! Opening the files that users name (the client's `body-file`,
//! `ca-file`, `client-cert` and `client-key`, and `dotenv-file`, which it
//! appends to; the gateway's `--jwt-jwks-file`, `--store-password-file`
//! and `--store-ca-file`) without ever blocking: a FIFO opened for reading
//! waits for a writer, and one opened for writing waits for a reader,
//! forever, past every timeout.
//! Only regular files are accepted, checked on the opened file itself, so
//! a path swapped for a FIFO between two attempts is refused as well.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// A named file that is not a regular file.
#[derive(Debug, thiserror::Error)]
#[error("it is not a regular file (a FIFO, a device, a socket or a directory); give a file")]
pub struct NotRegular;

/// Opens `path` for reading if it is a regular file. On Unix it is opened
/// with `O_NONBLOCK`, so a FIFO never blocks the open (regular files ignore
/// the flag); the type is then checked on the open file.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    let mut options = nonblocking();
    options.read(true);
    regular(options.open(path)?)
}

/// Open options with `O_NONBLOCK` on Unix: opening a FIFO then never waits
/// for its other end (regular files ignore the flag).
fn nonblocking() -> std::fs::OpenOptions {
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options
}

/// `file` if it is a regular file, checked on the open file itself.
fn regular(file: File) -> std::io::Result<File> {
    if file.metadata()?.is_file() {
        Ok(file)
    } else {
        Err(std::io::Error::other(NotRegular))
    }
}

/// Opens `path` for appending, creating it when it is missing (with the
/// permission bits `create_mode` on Unix, less the umask), if it is a
/// regular file. Like [`open_regular`], with `O_NONBLOCK` on Unix (a FIFO
/// without a reader then fails at once instead of waiting) and the type
/// checked on the open file.
pub fn append_regular(path: &Path, create_mode: u32) -> std::io::Result<File> {
    if std::fs::metadata(path).is_ok_and(|found| !found.is_file()) {
        return Err(std::io::Error::other(NotRegular));
    }
    let mut options = nonblocking();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(create_mode);
    }
    #[cfg(not(unix))]
    let _ = create_mode;
    regular(options.open(path)?)
}

/// The permission bits a file is created with by default (less the umask).
pub const DEFAULT_MODE: u32 = 0o666;

/// Whether [`append_regular`] can open `path` later, found without
/// creating or changing anything: an existing regular file that opens for
/// appending, or a missing file in an existing directory.
pub fn check_appendable(path: &Path) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(found) if found.is_file() => nonblocking().append(true).open(path).map(drop),
        Ok(_) => Err(std::io::Error::other(NotRegular)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            if std::fs::metadata(parent).is_ok_and(|found| found.is_dir()) {
                Ok(())
            } else {
                Err(std::io::Error::other(
                    "its directory does not exist; create it first or name a file in one that does",
                ))
            }
        }
        Err(e) => Err(e),
    }
}

/// Reads a small regular file whole: at most `limit` bytes, else an error.
pub fn read_regular(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "it is larger than {limit} bytes, more than a file of this kind needs"
        )));
    }
    Ok(bytes)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A directory holding a FIFO named `fifo`, which nobody opens.
    fn fifo() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        (dir, fifo)
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let (dir, fifo) = fifo();
        // Nobody writes to it: a blocking open would never return.
        let err = open_regular(&fifo).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(open_regular(dir.path()).is_err());
    }

    #[test]
    fn appending_never_blocks_on_a_fifo_and_checking_changes_nothing() {
        let (dir, fifo) = fifo();
        // Nobody reads it: a blocking open for writing would never return.
        for result in [
            append_regular(&fifo, DEFAULT_MODE).map(drop),
            check_appendable(&fifo),
        ] {
            let err = result.unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
        assert!(append_regular(dir.path(), DEFAULT_MODE).is_err());
        assert!(check_appendable(dir.path()).is_err());
        let missing = dir.path().join("out.env");
        check_appendable(&missing).unwrap();
        assert!(!missing.exists(), "checking created nothing");
        let err = check_appendable(&dir.path().join("no-dir/out.env")).unwrap_err();
        assert!(
            err.to_string().contains("directory does not exist"),
            "{err}"
        );
        use std::io::Write as _;
        append_regular(&missing, DEFAULT_MODE)
            .unwrap()
            .write_all(b"a=1\n")
            .unwrap();
        append_regular(&missing, DEFAULT_MODE)
            .unwrap()
            .write_all(b"b=2\n")
            .unwrap();
        assert_eq!(std::fs::read(&missing).unwrap(), b"a=1\nb=2\n");
        check_appendable(&missing).unwrap();
    }

    #[test]
    fn regular_files_open_and_large_ones_are_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_regular(&file, 10).unwrap(), b"0123456789");
        assert!(read_regular(&file, 9).is_err());
    }
}
