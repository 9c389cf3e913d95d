//! `--store memory`: records in mutex-guarded maps, for tests and a single
//! gateway process that may forget everything when it stops.
//!
//! The records are spread over 64 maps by a keyed hash of their id,
//! each map behind its own lock; every call but the sweep works on one id,
//! so it runs under one shard's lock, atomic as with a single map. Why not
//! one map: a map that outgrows its table moves every record it holds while
//! its lock is held, and with all records in one map that stalled every
//! request for 80 to 160 ms at a few hundred thousand records
//! (docs/performance.md); a shard holds a sixty-fourth of them. The sweep
//! locks one shard at a time for the same reason. Plain tables rather
//! than a concurrent-map crate: each call stays one closure over its
//! record's slot, so a claim's look-then-insert is under one lock, as
//! before. Each slot keeps its id's hash (hashbrown's `HashTable`): a call
//! hashes its id once, for the shard and every probe of its table, where a
//! `HashMap` hashed it again on every lookup and insert (about 14 SipHash
//! runs per forward, docs/performance.md), and a growing table moves its
//! records without hashing any of them.
//!
//! The records' size is bounded (`--memory-max-bytes`): every change adds
//! or subtracts the estimated size of the records it touches, and a claim
//! that would add a record while the store holds that much or more is
//! answered [`Claimed::Full`], so the request is answered `503` and not
//! forwarded. Nothing already stored is ever evicted to make room (its key
//! would be forwarded again). Storing an answer is never refused either:
//! the upstream has acted, so the store may pass the bound by the answers
//! of the forwards under way, at most `--max-body` each.

use super::{Claimed, INLINE_OUTCOME, Outcome, Record, RecordId, Store, StoreError, Token};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// How many maps the records are spread over.
const SHARDS: usize = 64;

/// A record with its id and the id's hash.
struct Slot {
    hash: u64,
    id: RecordId,
    record: Record,
}

type Shard = hashbrown::HashTable<Slot>;

/// One id's slot in its locked shard: the only record a call can see or
/// change, found by the hash computed once for the call.
struct Entry<'a> {
    shard: &'a mut Shard,
    hash: u64,
    id: &'a RecordId,
}

impl Entry<'_> {
    fn get(&self) -> Option<&Record> {
        let id = self.id;
        self.shard
            .find(self.hash, |slot| slot.id == *id)
            .map(|slot| &slot.record)
    }

    fn get_mut(&mut self) -> Option<&mut Record> {
        let id = self.id;
        self.shard
            .find_mut(self.hash, |slot| slot.id == *id)
            .map(|slot| &mut slot.record)
    }

    /// Puts `record` under the id, in place of the one there if any.
    fn insert(&mut self, record: Record) {
        if let Some(held) = self.get_mut() {
            *held = record;
            return;
        }
        self.shard.insert_unique(
            self.hash,
            Slot {
                hash: self.hash,
                id: self.id.clone(),
                record,
            },
            |slot| slot.hash,
        );
    }

    /// Removes the id's record; whether there was one.
    fn remove(&mut self) -> bool {
        let id = self.id;
        match self.shard.find_entry(self.hash, |slot| slot.id == *id) {
            Ok(found) => {
                found.remove();
                true
            }
            Err(_) => false,
        }
    }
}

/// The default of `--memory-max-bytes`.
pub const DEFAULT_MAX_BYTES: usize = 512 << 20;

/// What a record costs besides its key and its answer's bytes: its slot in
/// a map's table (which is 44% to 87% full) and its allocations' headers.
/// Calibrated on x86-64: small records took 567 to 687 bytes of RSS each
/// (by how full the tables were), counted at 577 (docs/performance.md).
const RECORD_OVERHEAD: usize = 320;

/// What each stored header costs besides its name and value: its tuple in
/// the list and two allocations.
const HEADER_OVERHEAD: usize = 80;

/// The bytes a record is counted as: an estimate of what it holds in memory.
fn footprint(id: &RecordId, record: &Record) -> usize {
    let answer = match record {
        Record::InFlight { .. } => 0,
        Record::Done { outcome, .. } => match outcome {
            Outcome::Response(stored) => stored.size() + stored.headers.len() * HEADER_OVERHEAD,
            Outcome::Unknown(detail) | Outcome::NotStored(detail) => detail.len(),
        },
    };
    RECORD_OVERHEAD + id.key.len() + answer
}

/// An in-process store.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    /// Hashes ids, with a key of this process's own, so keys a client
    /// chooses cannot be made to collide.
    hasher: RandomState,
    /// The records' footprints, summed.
    held: AtomicUsize,
    /// Past this, new claims are refused.
    max_bytes: usize,
    /// Whether the last new claim was refused: the warning is logged once
    /// each time the store fills up, not for every refusal.
    refusing: AtomicBool,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BYTES)
    }
}

/// Locks one shard. A panic while holding the lock cannot leave a record
/// half-written (every change is one insert or remove), so a poisoned lock
/// is usable.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryStore {
    /// An empty store that refuses new claims while its records' footprint
    /// is `max_bytes` or more.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            held: AtomicUsize::new(0),
            max_bytes,
            refusing: AtomicBool::new(false),
        }
    }

    /// The records' estimated footprint now, in bytes.
    pub fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Runs `f` on `id`'s slot, under its shard's lock, and counts the
    /// change to its record in [`Self::held_bytes`]. `f` can reach no other
    /// record.
    fn with<T>(&self, id: &RecordId, f: impl FnOnce(&mut Entry<'_>) -> T) -> T {
        let (hash, mut shard) = self.shard(id);
        let mut entry = Entry {
            shard: &mut shard,
            hash,
            id,
        };
        let size = |entry: &Entry<'_>| entry.get().map_or(0, |record| footprint(id, record));
        let before = size(&entry);
        let result = f(&mut entry);
        self.account(before, size(&entry));
        result
    }

    /// `id`'s hash, and the shard that holds it, locked.
    fn shard(&self, id: &RecordId) -> (u64, MutexGuard<'_, Shard>) {
        let hash = self.hasher.hash_one(id);
        // A table indexes its slots by the hash's low bits and tags them with
        // its top 7, so the shard is picked by bits in between: the records
        // of one shard then share no bit their table uses.
        let index = ((hash >> 48) as usize) % SHARDS;
        (hash, lock(&self.shards[index]))
    }

    /// Counts a change of footprint from `before` to `after` bytes.
    fn account(&self, before: usize, after: usize) {
        if after >= before {
            self.held.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.held.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// The done record under `id`, if it has not expired at `now`.
    pub fn recall(&self, id: &RecordId, now: u64) -> Option<Record> {
        let (hash, shard) = self.shard(id);
        match shard
            .find(hash, |slot| slot.id == *id)
            .map(|slot| &slot.record)
        {
            // A larger answer is copied only by `load`, once the caller has
            // room for it.
            Some(
                record @ Record::Done {
                    expires_at,
                    outcome,
                    ..
                },
            ) if *expires_at > now && outcome.size() <= INLINE_OUTCOME => Some(record.clone()),
            _ => None,
        }
    }
}

fn holds(record: Option<&Record>, token: &Token) -> bool {
    matches!(record, Some(Record::InFlight { token: t, .. }) if t == token)
}

impl Store for MemoryStore {
    async fn claim(
        &self,
        id: &RecordId,
        fingerprint: &[u8; 32],
        token: &Token,
        lease_until: u64,
        now: u64,
    ) -> Result<Claimed, StoreError> {
        self.with(id, |entry| {
            let decided = match entry.get() {
                Some(record) if !record.is_live(now) => None,
                Some(Record::InFlight { token: held, .. }) if held == token => Some(Claimed::Won),
                Some(Record::Done {
                    fingerprint,
                    outcome,
                    ..
                }) if outcome.size() > INLINE_OUTCOME => Some(Claimed::Large {
                    fingerprint: *fingerprint,
                    size: outcome.size(),
                }),
                Some(existing) => Some(Claimed::Existing(existing.clone())),
                None => None,
            };
            if let Some(decided) = decided {
                return Ok(decided);
            }
            if self.held_bytes() >= self.max_bytes {
                if !self.refusing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the memory store holds --memory-max-bytes of records: new keys are answered 503 until expired records are swept; raise --memory-max-bytes or use a persistent store"
                    );
                }
                return Ok(Claimed::Full);
            }
            self.refusing.store(false, Ordering::Relaxed);
            entry.insert(Record::InFlight {
                fingerprint: *fingerprint,
                token: *token,
                lease_until,
            });
            Ok(Claimed::Won)
        })
    }

    async fn renew(
        &self,
        id: &RecordId,
        token: &Token,
        lease_until: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.with(id, |entry| match entry.get_mut() {
            Some(Record::InFlight {
                token: t,
                lease_until: lease,
                ..
            }) if t == token => {
                *lease = lease_until;
                true
            }
            _ => false,
        }))
    }

    async fn finish(
        &self,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.with(id, |entry| {
            // In place: one lookup, and the key is not copied again.
            let Some(record) = entry.get_mut().filter(|record| holds(Some(record), token)) else {
                return false;
            };
            *record = Record::Done {
                fingerprint: *record.fingerprint(),
                outcome: outcome.clone(),
                expires_at,
                stored_at: Some(now),
            };
            true
        }))
    }

    async fn release(&self, id: &RecordId, token: &Token) -> Result<bool, StoreError> {
        Ok(self.with(id, |entry| holds(entry.get(), token) && entry.remove()))
    }

    async fn expire_lease(
        &self,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
        now: u64,
    ) -> Result<Option<Record>, StoreError> {
        Ok(self.with(id, |entry| {
            if let Some(Record::InFlight {
                token: t,
                lease_until,
                fingerprint,
            }) = entry.get()
                && t == token
                && *lease_until <= now
            {
                let done = Record::Done {
                    fingerprint: *fingerprint,
                    outcome: outcome.clone(),
                    expires_at,
                    stored_at: Some(now),
                };
                entry.insert(done);
            }
            entry.get().filter(|record| !record.is_large()).cloned()
        }))
    }

    async fn load(
        &self,
        id: &RecordId,
        now: u64,
        _size: usize,
    ) -> Result<Option<Record>, StoreError> {
        let (hash, shard) = self.shard(id);
        Ok(shard
            .find(hash, |slot| slot.id == *id)
            .map(|slot| &slot.record)
            .filter(|record| record.is_live(now))
            .cloned())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn sweep(&self, now: u64, unknown_ttl: u64) -> Result<u64, StoreError> {
        let mut touched = 0;
        for shard in &self.shards {
            let (n, before, after) = sweep_shard(&mut lock(shard), now, unknown_ttl);
            touched += n;
            self.account(before, after);
        }
        Ok(touched)
    }
}

/// Deletes a shard's expired records and turns its lapsed claims into
/// "outcome unknown", in one pass: how many records it touched, and their
/// footprints before and after.
fn sweep_shard(records: &mut Shard, now: u64, unknown_ttl: u64) -> (u64, usize, usize) {
    let (mut touched, mut before, mut after) = (0, 0, 0);
    records.retain(|Slot { id, record, .. }| match record {
        Record::Done { expires_at, .. } if *expires_at <= now => {
            touched += 1;
            before += footprint(id, record);
            false
        }
        &mut Record::InFlight {
            fingerprint,
            lease_until,
            ..
        } if lease_until <= now => {
            touched += 1;
            before += footprint(id, record);
            *record = Record::Done {
                fingerprint,
                outcome: Outcome::Unknown(super::LAPSED_LEASE_DETAIL.to_owned()),
                expires_at: now.saturating_add(unknown_ttl),
                stored_at: Some(now),
            };
            after += footprint(id, record);
            true
        }
        _ => true,
    });
    (touched, before, after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> RecordId {
        RecordId {
            caller: [7; 32],
            key: format!("key-{n}"),
        }
    }

    async fn claim(store: &MemoryStore, n: usize, lease_until: u64) -> Claimed {
        store
            .claim(&id(n), &[1; 32], &[n as u8; 16], lease_until, 0)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn records_are_spread_over_every_shard() {
        let store = MemoryStore::default();
        let count = 100 * SHARDS;
        for n in 0..count {
            assert_eq!(claim(&store, n, 1_000).await, Claimed::Won);
        }
        let sizes: Vec<usize> = store.shards.iter().map(|s| lock(s).len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), count);
        // 100 expected per shard; 30 and 200 are seven standard deviations out.
        assert!(
            sizes.iter().all(|&size| (30..=200).contains(&size)),
            "{sizes:?}"
        );
    }

    #[tokio::test]
    async fn the_sweep_reaches_every_shard() {
        let store = MemoryStore::default();
        let (expired, lapsed) = (10 * SHARDS, 2 * SHARDS);
        for n in 0..expired {
            assert_eq!(claim(&store, n, 1_000).await, Claimed::Won);
            let done = Outcome::Unknown("done".to_owned());
            assert!(
                store
                    .finish(&id(n), &[n as u8; 16], &done, 10, 5)
                    .await
                    .unwrap()
            );
        }
        for n in expired..expired + lapsed {
            assert_eq!(claim(&store, n, 10).await, Claimed::Won);
        }
        let touched = store.sweep(20, 1_000).await.unwrap();
        assert_eq!(touched, (expired + lapsed) as u64);
        let left: usize = store.shards.iter().map(|s| lock(s).len()).sum();
        assert_eq!(left, lapsed, "the expired records are gone");
        let counted: usize = store
            .shards
            .iter()
            .flat_map(|s| {
                let records = lock(s);
                records
                    .iter()
                    .map(|slot| footprint(&slot.id, &slot.record))
                    .collect::<Vec<_>>()
            })
            .sum();
        assert_eq!(
            store.held_bytes(),
            counted,
            "the converted claims are counted as they are now"
        );
        assert!(matches!(
            store.recall(&id(expired), 20),
            Some(Record::Done {
                outcome: Outcome::Unknown(_),
                expires_at: 1_020,
                ..
            })
        ));
        assert_eq!(store.sweep(20, 1_000).await.unwrap(), 0);
    }

    /// A done record with an answer of `body` bytes under key `n`.
    async fn store_answer(store: &MemoryStore, n: usize, body: usize, expires_at: u64) {
        assert_eq!(claim(store, n, 1_000).await, Claimed::Won);
        let answer = Outcome::Response(super::super::StoredResponse {
            status: 201,
            headers: vec![("content-type".to_owned(), b"application/json".to_vec())],
            body: vec![b'x'; body],
        });
        let token = [n as u8; 16];
        assert!(
            store
                .finish(&id(n), &token, &answer, expires_at, 1)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn past_its_bound_new_keys_are_refused_and_stored_ones_still_answer() {
        let store = MemoryStore::new(10_000);
        let mut stored = 0;
        while store.held_bytes() < 10_000 {
            store_answer(&store, stored, 1_000, 100).await;
            stored += 1;
        }
        assert_eq!(
            stored, 7,
            "each record counts its 1,000-byte answer and more"
        );
        let refused = store.claim(&id(stored), &[1; 32], &[0; 16], 1_000, 2).await;
        assert_eq!(refused.unwrap(), Claimed::Full);
        assert!(
            store.recall(&id(stored), 2).is_none(),
            "nothing was inserted"
        );
        // A stored key is still replayed, and its claim still finds it.
        assert!(store.recall(&id(0), 2).is_some());
        let again = store
            .claim(&id(0), &[1; 32], &[9; 16], 1_000, 2)
            .await
            .unwrap();
        assert!(matches!(again, Claimed::Existing(Record::Done { .. })));
        // Once the sweep has deleted the expired records there is room again.
        assert_eq!(store.sweep(200, 1_000).await.unwrap(), stored as u64);
        assert_eq!(store.held_bytes(), 0);
        assert_eq!(claim(&store, stored, 1_000).await, Claimed::Won);
    }

    #[tokio::test]
    async fn every_change_is_counted_and_nothing_is_left_when_all_is_gone() {
        let store = MemoryStore::default();
        store_answer(&store, 1, 500, 100).await;
        let answered = store.held_bytes();
        assert!(answered > 500, "{answered}");
        assert_eq!(claim(&store, 2, 1_000).await, Claimed::Won);
        let claimed = store.held_bytes() - answered;
        assert!(store.renew(&id(2), &[2; 16], 2_000).await.unwrap());
        assert_eq!(
            store.held_bytes(),
            answered + claimed,
            "a renewal changes no size"
        );
        assert!(store.release(&id(2), &[2; 16]).await.unwrap());
        assert_eq!(store.held_bytes(), answered);
        assert_eq!(claim(&store, 3, 10).await, Claimed::Won);
        let unknown = Outcome::Unknown("lapsed".to_owned());
        let expired = store
            .expire_lease(&id(3), &[3; 16], &unknown, 100, 20)
            .await
            .unwrap();
        assert!(matches!(expired, Some(Record::Done { .. })));
        assert_eq!(store.sweep(200, 1_000).await.unwrap(), 2);
        assert_eq!(store.held_bytes(), 0);
    }
}
