//! Reading a request body into memory, within limits: at most `--max-body`
//! bytes for one request (`413`), all of it within `--body-timeout` of its
//! headers (`408`), and at most `--max-buffered` bytes for all requests
//! buffering at once (`503` with `Retry-After`), so a crowd of half-sent
//! uploads, over many connections or many HTTP/2 streams, cannot exhaust
//! the gateway's memory. A body's share of the budget is held until its
//! request is done with it ([`Held`]). Replayed answers are held against a
//! budget of this kind too, their own, until they are written
//! ([`held_bytes`]), so clients that ask for a large stored answer and do
//! not read it cannot exhaust the gateway's memory either.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bytes all buffering requests may hold together.
#[derive(Clone)]
pub struct Budget {
    bytes: Arc<Semaphore>,
    /// What the semaphore started with.
    size: usize,
}

/// A body's share of the budget; returned when dropped.
pub struct Held {
    _permit: Option<OwnedSemaphorePermit>,
}

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Larger than the per-request limit.
    TooLarge,
    /// The budget for all requests is spent.
    Busy,
    /// Not complete within the body timeout.
    Slow,
    /// Cut off by the client.
    CutOff,
}

impl Budget {
    /// A budget of `bytes` (at most what a semaphore counts).
    pub fn new(bytes: usize) -> Self {
        let size = bytes.min(Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// Bytes not held by any request now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.size.saturating_sub(self.available())
    }

    fn take(&self, held: &mut Option<OwnedSemaphorePermit>, bytes: usize) -> Result<(), Refusal> {
        if bytes == 0 {
            return Ok(());
        }
        let count = u32::try_from(bytes).map_err(|_| Refusal::Busy)?;
        let permit = self
            .bytes
            .clone()
            .try_acquire_many_owned(count)
            .map_err(|_| Refusal::Busy)?;
        match held {
            Some(existing) => existing.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }

    /// Takes `bytes` from the budget for an answer about to be written
    /// (a replay), or refuses with [`Refusal::Busy`] when they are not free.
    pub fn hold(&self, bytes: usize) -> Result<Held, Refusal> {
        let mut held = None;
        self.take(&mut held, bytes)?;
        Ok(Held { _permit: held })
    }

    /// Reads `body` whole. `declared` is its `Content-Length`, when given:
    /// a body declared too large is refused before a byte is read, and a
    /// declared size is taken from the budget at once.
    pub async fn read(
        &self,
        body: Body,
        declared: Option<u64>,
        max: usize,
        timeout: Duration,
    ) -> Result<(Bytes, Held), Refusal> {
        let mut held = None;
        if let Some(declared) = declared {
            let declared = usize::try_from(declared).map_err(|_| Refusal::TooLarge)?;
            if declared > max {
                return Err(Refusal::TooLarge);
            }
            self.take(&mut held, declared)?;
        }
        let reserved = declared.map_or(0, |d| d as usize);
        let read = async {
            let mut body = body;
            let mut buffer = BytesMut::with_capacity(reserved);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| Refusal::CutOff)?;
                let Ok(chunk) = frame.into_data() else {
                    continue;
                };
                if buffer.len() + chunk.len() > max {
                    return Err(Refusal::TooLarge);
                }
                // Beyond what was declared (chunked bodies): take as it comes.
                let beyond =
                    (buffer.len() + chunk.len()).saturating_sub(reserved.max(buffer.len()));
                self.take(&mut held, beyond)?;
                buffer.extend_from_slice(&chunk);
            }
            Ok(buffer.freeze())
        };
        let bytes = tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| Refusal::Slow)??;
        Ok((bytes, Held { _permit: held }))
    }
}

/// `bytes` as one `Bytes` that carries `held`: the share is returned when
/// the last reference is dropped, which for an answer is when hyper has
/// written all of it (or its connection is gone), not when hyper takes it
/// from the response body into its write queue.
pub fn held_bytes(bytes: Vec<u8>, held: Held) -> Bytes {
    struct Owned {
        bytes: Vec<u8>,
        // Kept, not read: dropping it returns the share.
        _held: Held,
    }
    impl AsRef<[u8]> for Owned {
        fn as_ref(&self) -> &[u8] {
            &self.bytes
        }
    }
    Bytes::from_owner(Owned { bytes, _held: held })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(bytes: &'static [u8]) -> Body {
        Body::from(bytes)
    }

    #[tokio::test]
    async fn a_body_holds_its_share_until_dropped() {
        let budget = Budget::new(10);
        let (bytes, held) = budget
            .read(body(b"0123456"), Some(7), 8, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"0123456");
        assert_eq!(budget.available(), 3);
        let refused = budget
            .read(body(b"0123"), Some(4), 8, Duration::from_secs(5))
            .await;
        assert_eq!(refused.err(), Some(Refusal::Busy));
        assert_eq!(budget.held(), 7);
        drop(held);
        assert_eq!(budget.available(), 10);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn an_answer_holds_its_share_until_its_last_bytes_are_dropped() {
        let budget = Budget::new(10);
        let held = budget.hold(6).unwrap();
        assert_eq!(budget.hold(5).err(), Some(Refusal::Busy));
        let bytes = held_bytes(b"012345".to_vec(), held);
        let tail = bytes.slice(3..);
        drop(bytes);
        assert_eq!(budget.available(), 4, "a slice still holds it");
        assert_eq!(&tail[..], b"345");
        drop(tail);
        assert_eq!(budget.available(), 10);
        assert!(budget.hold(0).is_ok());
    }

    #[tokio::test]
    async fn limits_per_request_and_undeclared_bodies() {
        let budget = Budget::new(100);
        let too_large = budget
            .read(body(b"0123456789"), Some(10), 8, Duration::from_secs(5))
            .await;
        assert_eq!(too_large.err(), Some(Refusal::TooLarge));
        let chunked = budget
            .read(body(b"0123456789"), None, 8, Duration::from_secs(5))
            .await;
        assert_eq!(chunked.err(), Some(Refusal::TooLarge));
        let (bytes, _held) = budget
            .read(body(b"01234567"), None, 8, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(bytes.len(), 8);
        assert_eq!(budget.available(), 92);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_is_refused_at_the_timeout() {
        let budget = Budget::new(100);
        // A sender that is kept but never sends: the body never ends.
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
        let result = budget
            .read(
                Body::from_stream(never_ending(rx)),
                Some(5),
                8,
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(result.err(), Some(Refusal::Slow));
        assert_eq!(budget.available(), 100);
    }

    fn never_ending(
        mut rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
