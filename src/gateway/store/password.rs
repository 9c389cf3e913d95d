//! `--store-password-file`: the store's password, read at start-up and
//! again for every connection the gateway opens to the store afterwards,
//! so a password rotated in the file (a mounted secret replaced) is used
//! from the next connection on, without a restart. Connections already
//! open stay as they are: PostgreSQL and Redis keep an authenticated
//! session when its password changes.

use crate::shared::regular_file::read_regular;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The most the file may hold: a password, not a file of another kind
/// named by mistake.
pub const LIMIT: u64 = 64 * 1024;

/// The password in `path`: its first line, which must not be empty. A
/// regular file of at most [`LIMIT`] bytes (a FIFO would block). Errors
/// name the file, never its contents.
pub fn read(path: &Path) -> Result<String, String> {
    let text = read_regular(path, LIMIT)
        .and_then(|bytes| String::from_utf8(bytes).map_err(std::io::Error::other))
        .map_err(|e| {
            format!(
                "cannot read --store-password-file `{}`: {e}",
                path.display()
            )
        })?;
    match text.lines().next() {
        Some(line) if !line.is_empty() => Ok(line.to_owned()),
        _ => Err(format!(
            "--store-password-file `{}` is empty; put the password on its first line",
            path.display()
        )),
    }
}

/// A password file and the password read from it last.
pub struct PasswordFile {
    path: PathBuf,
    last: Mutex<String>,
}

impl std::fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PasswordFile {
    /// `path`, whose password at start-up was `first`.
    pub fn new(path: PathBuf, first: String) -> Self {
        Self {
            path,
            last: Mutex::new(first),
        }
    }

    /// The password for a new connection: the file's first line, read now.
    /// When the file cannot be read or its first line is empty (a file
    /// being rewritten in place), the password read last, with a warning:
    /// a connection with it may still succeed, one without any cannot.
    pub fn current(&self) -> String {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match read(&self.path) {
            Ok(password) => {
                last.clone_from(&password);
                password
            }
            Err(e) => {
                tracing::warn!("{e}; connecting to the store with the password read last");
                last.clone()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connection_reads_the_file_again_and_a_broken_file_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "first\n").unwrap();
        let file = PasswordFile::new(path.clone(), read(&path).unwrap());
        assert_eq!(file.current(), "first");
        std::fs::write(&path, "second\nignored\n").unwrap();
        assert_eq!(file.current(), "second");
        std::fs::write(&path, "").unwrap();
        assert_eq!(file.current(), "second", "an empty file keeps the last");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.current(), "second", "a missing file keeps the last");
        std::fs::write(&path, "third").unwrap();
        assert_eq!(file.current(), "third");
    }

    #[test]
    fn errors_name_the_file_but_not_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "\nhunter2\n").unwrap();
        let error = read(&path).unwrap_err();
        assert!(
            error.contains("is empty") && error.contains("password`"),
            "{error}"
        );
        assert!(!error.contains("hunter2"), "{error}");
        std::fs::write(&path, vec![b'x'; LIMIT as usize + 1]).unwrap();
        let error = read(&path).unwrap_err();
        assert!(error.contains("larger than"), "{error}");
    }
}
