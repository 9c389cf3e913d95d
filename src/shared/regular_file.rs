//! Opening the files that users name (the client's `body-file`,
//! `ca-file`, `client-cert` and `client-key`; the gateway's
//! `--jwt-jwks-file`, `--store-password-file` and `--store-ca-file`)
//! without ever blocking: a FIFO or a device opened for reading can wait
//! forever for a writer, past every timeout.
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
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    if file.metadata()?.is_file() {
        Ok(file)
    } else {
        Err(std::io::Error::other(NotRegular))
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

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        // Nobody writes to it: a blocking open would never return.
        let err = open_regular(&fifo).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(open_regular(dir.path()).is_err());
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
