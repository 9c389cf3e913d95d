//! The request body: nothing, bytes held in memory (`body`, `json`), or a
//! file (`body-file`) that is streamed and re-opened for every attempt.
//!
//! A file can change while the run goes on. Its length is fixed when the
//! config is built and its SHA-256 when the key is derived (`pin`); every
//! attempt then checks both, and the transport holds back the last byte of
//! the upload until the bytes it sent hash to the pinned digest, so a
//! server never receives a whole body that differs from the one the key
//! was derived for.

use crate::shared::regular_file::open_regular;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io::Read;
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
    /// The SHA-256 of the bytes every attempt sends, fixed by [`FileBody::pin`]
    /// when the key is derived; the transport refuses to send a file
    /// without it.
    pub sha256: Option<[u8; 32]>,
}

/// A `body-file` that changed during the run: its bytes differ from those
/// the key was derived for, so it must not be sent under that key.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{path}` changed during the run ({what}); every attempt must send the bytes the key was \
     derived for"
)]
pub struct BodyChanged {
    /// The file.
    pub path: String,
    /// What changed.
    pub what: String,
}

impl FileBody {
    /// Checks that `path` is a readable regular file and records its length.
    pub fn new(path: &Path) -> std::io::Result<Self> {
        let file = open_regular(path)?;
        Ok(Self {
            path: path.to_owned(),
            len: file.metadata()?.len(),
            sha256: None,
        })
    }

    /// Opens the file for reading, failing when it is no longer a regular
    /// file or its length changed since the run started.
    pub fn open(&self) -> std::io::Result<std::fs::File> {
        let file = open_regular(&self.path)?;
        self.check_len(file.metadata()?.len())?;
        Ok(file)
    }

    /// Fails with [`BodyChanged`] when `len` differs from the length
    /// recorded at start.
    pub fn check_len(&self, len: u64) -> std::io::Result<()> {
        if len == self.len {
            Ok(())
        } else {
            Err(self.changed(format!("{} bytes at start, {len} now", self.len)))
        }
    }

    /// A [`BodyChanged`] error for this file.
    pub fn changed(&self, what: String) -> std::io::Error {
        std::io::Error::other(BodyChanged {
            path: self.path.display().to_string(),
            what,
        })
    }

    /// Fixes the digest every attempt must match: `digest` when the key's
    /// fingerprint already hashed the file, else one more pass over it.
    pub fn pin(&mut self, digest: Option<[u8; 32]>) -> std::io::Result<()> {
        let digest = match digest {
            Some(digest) => digest,
            None => {
                let mut reader = HashingReader::new(self.open()?);
                std::io::copy(&mut reader, &mut std::io::sink())?;
                reader.finish()
            }
        };
        self.sha256 = Some(digest);
        Ok(())
    }
}

/// A reader that hashes what passes through it, so one pass over a file
/// feeds both the key's fingerprint and the body's own digest.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// The SHA-256 of everything read.
    pub fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
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
