//! The request body: nothing, bytes held in memory (`body`, `json`), or a
//! file (`body-file`) that is streamed and re-opened for every attempt.

use bytes::Bytes;
use std::path::{Path, PathBuf};

/// The request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body.
    Empty,
    /// Bytes from `body` or `json`.
    Bytes(Bytes),
    /// A file from `body-file`.
    File(FileBody),
}

/// A file body: its length is fixed when the config is built, so every
/// attempt can send the same `Content-Length` and refuse a file that changed.
#[derive(Debug, Clone)]
pub struct FileBody {
    /// Where the file is.
    pub path: PathBuf,
    /// Its length in bytes when the run started.
    pub len: u64,
}

impl FileBody {
    /// Checks that `path` is a readable regular file and records its length.
    pub fn new(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::other("it is not a regular file"));
        }
        Ok(Self {
            path: path.to_owned(),
            len: meta.len(),
        })
    }

    /// Opens the file for reading, failing when its length changed since the
    /// run started (every attempt must send the same bytes).
    pub fn open(&self) -> std::io::Result<std::fs::File> {
        let file = std::fs::File::open(&self.path)?;
        self.check_len(file.metadata()?.len())?;
        Ok(file)
    }

    /// Fails when `len` differs from the length recorded at start.
    pub fn check_len(&self, len: u64) -> std::io::Result<()> {
        if len == self.len {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "`{}` changed during the run ({} bytes at start, {len} now); \
                 every attempt must send the same body",
                self.path.display(),
                self.len
            )))
        }
    }
}

impl Body {
    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(bytes) => bytes.len() as u64,
            Body::File(file) => file.len,
        }
    }

    /// Whether there is no body at all.
    pub fn is_empty(&self) -> bool {
        matches!(self, Body::Empty)
    }
}
