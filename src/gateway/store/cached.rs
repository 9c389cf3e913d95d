//! Replays from memory: [`Cached`] wraps a store and answers a claim of a
//! recently replayed record without asking the store.
//!
//! This is exact, not a guess: a done record never changes until it expires
//! (the first final record wins; `release` and `expire_lease` touch only
//! in-flight records), so a copy taken once stays right for every gateway
//! replica, and the copy's expiry is checked on every read. In-flight
//! records are never cached: their state changes. The cache is bounded in
//! entries (least recently used goes first) and in each answer's size
//! (headers and body: an upstream's headers alone may take hundreds of
//! KiB), so it holds at most [`ENTRIES`] × [`MAX_ANSWER`] of answers.

use super::{Claimed, Outcome, Record, RecordId, Store, StoreError, Token};
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::Mutex;

/// How many done records are kept.
pub const ENTRIES: usize = 1024;

/// Larger answers (header names and values and the body together) are
/// always read from the store.
pub const MAX_ANSWER: usize = 64 * 1024;

/// A store with a cache of done records in front of its claims.
pub struct Cached<S> {
    inner: S,
    done: Mutex<LruCache<RecordId, Record>>,
}

impl<S> Cached<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            done: Mutex::new(LruCache::new(
                NonZeroUsize::new(ENTRIES).expect("ENTRIES is not zero"),
            )),
        }
    }

    /// The wrapped store, for tests that change it behind the cache.
    #[cfg(test)]
    fn inner(&self) -> &S {
        &self.inner
    }

    /// The cached done record under `id`, if it has not expired at `now`.
    pub fn recall(&self, id: &RecordId, now: u64) -> Option<Record> {
        self.cached(id, now)
    }

    fn cached(&self, id: &RecordId, now: u64) -> Option<Record> {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        match done.get(id) {
            Some(record @ Record::Done { expires_at, .. }) if *expires_at > now => {
                Some(record.clone())
            }
            Some(_) => done.pop(id).and(None),
            None => None,
        }
    }

    fn remember(&self, id: &RecordId, record: &Record) {
        let small = match record {
            Record::Done {
                outcome: Outcome::Response(response),
                ..
            } => response.size() <= MAX_ANSWER,
            Record::Done { .. } => true,
            Record::InFlight { .. } => false,
        };
        if small {
            let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
            done.put(id.clone(), record.clone());
        }
    }
}

impl<S: Store> Store for Cached<S> {
    async fn claim(
        &self,
        id: &RecordId,
        fingerprint: &[u8; 32],
        token: &Token,
        lease_until: u64,
        now: u64,
    ) -> Result<Claimed, StoreError> {
        if let Some(record) = self.cached(id, now) {
            return Ok(Claimed::Existing(record));
        }
        let claimed = self
            .inner
            .claim(id, fingerprint, token, lease_until, now)
            .await?;
        if let Claimed::Existing(record) = &claimed {
            self.remember(id, record);
        }
        Ok(claimed)
    }

    async fn renew(
        &self,
        id: &RecordId,
        token: &Token,
        lease_until: u64,
    ) -> Result<bool, StoreError> {
        self.inner.renew(id, token, lease_until).await
    }

    async fn finish(
        &self,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        self.inner.finish(id, token, outcome, expires_at, now).await
    }

    async fn release(&self, id: &RecordId, token: &Token) -> Result<bool, StoreError> {
        self.inner.release(id, token).await
    }

    async fn expire_lease(
        &self,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
        now: u64,
    ) -> Result<Option<Record>, StoreError> {
        self.inner
            .expire_lease(id, token, outcome, expires_at, now)
            .await
    }

    async fn load(
        &self,
        id: &RecordId,
        now: u64,
        size: usize,
    ) -> Result<Option<Record>, StoreError> {
        if let Some(record) = self.cached(id, now) {
            return Ok(Some(record));
        }
        let record = self.inner.load(id, now, size).await?;
        if let Some(record) = &record {
            self.remember(id, record);
        }
        Ok(record)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn sweep(&self, now: u64, unknown_ttl: u64) -> Result<u64, StoreError> {
        self.inner.sweep(now, unknown_ttl).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::store::StoredResponse;
    use crate::gateway::store::memory::MemoryStore;

    /// Far past every expiry used here: sweeping the inner store at this
    /// time deletes its done records behind the cache's back, so a claim
    /// that still finds one was answered from the cache.
    const LATER: u64 = 1 << 40;

    fn id(key: &str) -> RecordId {
        RecordId {
            caller: [1; 32],
            key: key.to_owned(),
        }
    }

    fn body(len: usize) -> Outcome {
        Outcome::Response(StoredResponse {
            status: 201,
            headers: vec![],
            body: vec![b'x'; len],
        })
    }

    /// Claims `key`, stores `outcome` until `expires_at`, and replays it
    /// once (the replay that may cache it).
    async fn done(store: &Cached<MemoryStore>, key: &str, outcome: &Outcome, expires_at: u64) {
        let token = [1; 16];
        let won = store.claim(&id(key), &[0; 32], &token, 100, 0).await;
        assert_eq!(won.unwrap(), Claimed::Won);
        let finished = store.finish(&id(key), &token, outcome, expires_at, 0).await;
        assert!(finished.unwrap());
        let replay = store.claim(&id(key), &[0; 32], &[2; 16], 100, 1).await;
        match replay.unwrap() {
            Claimed::Existing(Record::Done { .. }) => {}
            // A large one is read whole by `load` (which may cache it too).
            Claimed::Large { size, .. } => {
                let loaded = store.load(&id(key), 1, size).await.unwrap();
                assert!(matches!(loaded, Some(Record::Done { .. })));
            }
            other => panic!("{other:?}"),
        }
    }

    async fn claim(store: &Cached<MemoryStore>, key: &str, now: u64) -> Claimed {
        store
            .claim(&id(key), &[0; 32], &[3; 16], now + 100, now)
            .await
            .unwrap()
    }

    async fn forget_behind_the_cache(store: &Cached<MemoryStore>) {
        store.inner().sweep(LATER, 1).await.unwrap();
    }

    #[tokio::test]
    async fn a_replayed_record_is_answered_from_memory_until_it_expires() {
        let store = Cached::new(MemoryStore::default());
        done(&store, "k", &body(10), 1000).await;
        forget_behind_the_cache(&store).await;
        assert!(matches!(
            claim(&store, "k", 999).await,
            Claimed::Existing(Record::Done {
                expires_at: 1000,
                ..
            })
        ));
        // At its expiry the copy is dropped and the store decides.
        assert_eq!(claim(&store, "k", 1000).await, Claimed::Won);
    }

    #[tokio::test]
    async fn in_flight_records_and_large_answers_always_reach_the_store() {
        let store = Cached::new(MemoryStore::default());
        let holder = [1; 16];
        store
            .claim(&id("busy"), &[0; 32], &holder, 100, 0)
            .await
            .unwrap();
        assert!(matches!(
            claim(&store, "busy", 1).await,
            Claimed::Existing(Record::InFlight { .. })
        ));
        assert!(store.release(&id("busy"), &holder).await.unwrap());
        assert_eq!(claim(&store, "busy", 2).await, Claimed::Won);

        done(&store, "big", &body(MAX_ANSWER + 1), 1000).await;
        // A small body under large headers is a large answer too.
        let big_headers = Outcome::Response(StoredResponse {
            status: 201,
            headers: vec![("set-cookie".to_owned(), vec![b'c'; MAX_ANSWER])],
            body: b"{}".to_vec(),
        });
        done(&store, "big-headers", &big_headers, 1000).await;
        let fits = Outcome::Response(StoredResponse {
            status: 201,
            headers: vec![("set-cookie".to_owned(), vec![b'c'; 1000])],
            body: vec![b'x'; MAX_ANSWER - 1010],
        });
        done(&store, "fits", &fits, 1000).await;
        forget_behind_the_cache(&store).await;
        assert_eq!(claim(&store, "big", 2).await, Claimed::Won);
        assert_eq!(claim(&store, "big-headers", 2).await, Claimed::Won);
        assert!(
            matches!(
                claim(&store, "fits", 2).await,
                Claimed::Existing(Record::Done { .. })
            ),
            "64 KiB of headers and body together is cached"
        );
    }

    #[tokio::test]
    async fn the_least_recently_used_record_leaves_first() {
        let store = Cached::new(MemoryStore::default());
        for i in 0..=ENTRIES {
            done(&store, &format!("k{i}"), &body(1), 1000).await;
            // Keep k0 in use; k1 is then the oldest when the cache overflows.
            claim(&store, "k0", 2).await;
        }
        forget_behind_the_cache(&store).await;
        assert!(matches!(
            claim(&store, "k0", 2).await,
            Claimed::Existing(Record::Done { .. })
        ));
        assert_eq!(claim(&store, "k1", 2).await, Claimed::Won, "k1 was evicted");
        assert!(matches!(
            claim(&store, "k2", 2).await,
            Claimed::Existing(Record::Done { .. })
        ));
    }
}
