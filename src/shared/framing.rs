//! The length-prefixed field framing shared by the key and the fingerprint:
//! each field is its length as 4 bytes big-endian, then its bytes. Framing
//! makes the concatenation unambiguous (`"ab","c"` differs from `"a","bc"`).

use sha2::{Digest, Sha256};
use std::io::Read;

/// A SHA-256 over framed fields.
#[derive(Default)]
pub struct FramedHasher {
    hasher: Sha256,
}

/// A field longer than the 4-byte length prefix can describe.
#[derive(Debug, thiserror::Error)]
#[error("a field of {0} bytes is larger than the 4 GiB the key derivation can frame")]
pub struct FieldTooLarge(pub u64);

impl FramedHasher {
    /// Adds one field held in memory.
    ///
    /// # Panics
    /// Panics for fields of 4 GiB or more; in-memory fields never get there.
    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u32::try_from(bytes.len()).expect("in-memory fields are below 4 GiB");
        self.hasher.update(len.to_be_bytes());
        self.hasher.update(bytes);
        self
    }

    /// Adds one field streamed from `reader`, which must yield exactly `len`
    /// bytes (else an `InvalidData` error); hashes in constant memory.
    pub fn field_from_reader(&mut self, len: u64, mut reader: impl Read) -> std::io::Result<()> {
        let prefix = u32::try_from(len).map_err(|_| std::io::Error::other(FieldTooLarge(len)))?;
        self.hasher.update(prefix.to_be_bytes());
        let mut buffer = vec![0; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            total += n as u64;
            self.hasher.update(&buffer[..n]);
        }
        if total != len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the file changed while it was read ({len} bytes expected, {total} read)"),
            ));
        }
        Ok(())
    }

    /// The SHA-256 of every field added so far.
    pub fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_separates_fields() {
        let mut a = FramedHasher::default();
        a.field(b"ab").field(b"c");
        let mut b = FramedHasher::default();
        b.field(b"a").field(b"bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn streamed_field_equals_in_memory_field() {
        let data = vec![7u8; 1_000_000];
        let mut a = FramedHasher::default();
        a.field(&data);
        let mut b = FramedHasher::default();
        b.field_from_reader(data.len() as u64, &data[..]).unwrap();
        assert_eq!(a.finish(), b.finish());
    }

    #[test]
    fn streamed_field_of_the_wrong_length_is_an_error() {
        let mut h = FramedHasher::default();
        let err = h.field_from_reader(10, &b"short"[..]).unwrap_err();
        assert!(
            err.to_string().contains("changed while it was read"),
            "{err}"
        );
    }
}
