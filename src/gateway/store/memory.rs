//! `--store memory`: records in a mutex-guarded map, for tests and a single
//! gateway process that may forget everything when it stops.

use super::{Claimed, Outcome, Record, RecordId, Store, StoreError, Token};
use std::collections::HashMap;
use std::sync::Mutex;

/// An in-process store.
#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<RecordId, Record>>,
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<RecordId, Record>) -> T) -> T {
        // A panic while holding the lock cannot leave a record half-written
        // (every change is one insert or remove), so a poisoned lock is usable.
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut records)
    }

    /// The done record under `id`, if it has not expired at `now`.
    pub fn recall(&self, id: &RecordId, now: u64) -> Option<Record> {
        self.with(|records| match records.get(id) {
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
        Ok(self.with(|records| {
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
        Ok(self.with(|records| match records.get_mut(id) {
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
        Ok(self.with(|records| {
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
        Ok(self.with(|records| holds(records.get(id), token) && records.remove(id).is_some()))
    }

    async fn expire_lease(
        &self,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
        now: u64,
    ) -> Result<Option<Record>, StoreError> {
        Ok(self.with(|records| {
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
        Ok(self.with(|records| {
            let before = records.len();
            records
                .retain(|_, r| !matches!(r, Record::Done { expires_at, .. } if *expires_at <= now));
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
        }))
    }
}
