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
//! locks one shard at a time for the same reason. Plain std maps rather
//! than a concurrent-map crate: each call stays one closure over its
//! shard, so a claim's look-then-insert is under one lock, as before.

use super::{Claimed, Outcome, Record, RecordId, Store, StoreError, Token};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

/// How many maps the records are spread over.
const SHARDS: usize = 64;

type Shard = HashMap<RecordId, Record>;

/// An in-process store.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    /// Picks an id's shard; keyed apart from the maps' own hashers, so the
    /// records of one shard do not share bits of their in-map hashes.
    spread: RandomState,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            spread: RandomState::new(),
        }
    }
}

/// Locks one shard. A panic while holding the lock cannot leave a record
/// half-written (every change is one insert or remove), so a poisoned lock
/// is usable.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryStore {
    /// Runs `f` on the shard that holds `id`, under its lock.
    fn with<T>(&self, id: &RecordId, f: impl FnOnce(&mut Shard) -> T) -> T {
        // The remainder of a 64-bit hash: uniform enough for 64 shards.
        let index = (self.spread.hash_one(id) % SHARDS as u64) as usize;
        f(&mut lock(&self.shards[index]))
    }

    /// The done record under `id`, if it has not expired at `now`.
    pub fn recall(&self, id: &RecordId, now: u64) -> Option<Record> {
        self.with(id, |records| match records.get(id) {
            Some(record @ Record::Done { expires_at, .. }) if *expires_at > now => {
                Some(record.clone())
            }
            _ => None,
        })
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
        Ok(self.with(id, |records| {
            match records.get(id) {
                Some(Record::Done { expires_at, .. }) if *expires_at <= now => None,
                Some(Record::InFlight { token: held, .. }) if held == token => Some(Claimed::Won),
                Some(existing) => Some(Claimed::Existing(existing.clone())),
                None => None,
            }
            .unwrap_or_else(|| {
                records.insert(
                    id.clone(),
                    Record::InFlight {
                        fingerprint: *fingerprint,
                        token: *token,
                        lease_until,
                    },
                );
                Claimed::Won
            })
        }))
    }

    async fn renew(
        &self,
        id: &RecordId,
        token: &Token,
        lease_until: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.with(id, |records| match records.get_mut(id) {
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
        Ok(self.with(id, |records| {
            if !holds(records.get(id), token) {
                return false;
            }
            let fingerprint = *records[id].fingerprint();
            records.insert(
                id.clone(),
                Record::Done {
                    fingerprint,
                    outcome: outcome.clone(),
                    expires_at,
                    stored_at: Some(now),
                },
            );
            true
        }))
    }

    async fn release(&self, id: &RecordId, token: &Token) -> Result<bool, StoreError> {
        Ok(self.with(id, |records| {
            holds(records.get(id), token) && records.remove(id).is_some()
        }))
    }

    async fn expire_lease(
        &self,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
        now: u64,
    ) -> Result<Option<Record>, StoreError> {
        Ok(self.with(id, |records| {
            if let Some(Record::InFlight {
                token: t,
                lease_until,
                fingerprint,
            }) = records.get(id)
                && t == token
                && *lease_until <= now
            {
                let done = Record::Done {
                    fingerprint: *fingerprint,
                    outcome: outcome.clone(),
                    expires_at,
                    stored_at: Some(now),
                };
                records.insert(id.clone(), done);
            }
            records.get(id).cloned()
        }))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn sweep(&self, now: u64, unknown_ttl: u64) -> Result<u64, StoreError> {
        Ok(self
            .shards
            .iter()
            .map(|shard| sweep_shard(&mut lock(shard), now, unknown_ttl))
            .sum())
    }
}

/// Deletes a shard's expired records and turns its lapsed claims into
/// "outcome unknown"; how many records it touched.
fn sweep_shard(records: &mut Shard, now: u64, unknown_ttl: u64) -> u64 {
    let before = records.len();
    records.retain(|_, r| !matches!(r, Record::Done { expires_at, .. } if *expires_at <= now));
    let mut touched = (before - records.len()) as u64;
    for record in records.values_mut() {
        if let Record::InFlight {
            fingerprint,
            lease_until,
            ..
        } = record
            && *lease_until <= now
        {
            *record = Record::Done {
                fingerprint: *fingerprint,
                outcome: Outcome::Unknown(super::LAPSED_LEASE_DETAIL.to_owned()),
                expires_at: now.saturating_add(unknown_ttl),
                stored_at: Some(now),
            };
            touched += 1;
        }
    }
    touched
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
}
