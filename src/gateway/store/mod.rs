//! The gateway's record store: one small async trait, [`Store`], with an
//! in-memory, a SQLite and a Redis implementation, all held to one contract
//! test suite (`tests/store_contract.rs`).
//!
//! A record is identified by (caller, key). It is either *in flight* (a
//! claim: the fingerprint, the claimer's token and a lease) or *done* (the
//! fingerprint, a final [`Outcome`] and an expiry). The rules every
//! implementation keeps:
//! - `claim` is atomic: among concurrent claims of one id, exactly one wins.
//!   A done record past its expiry counts as absent. A claim that finds an
//!   in-flight record holding its own token wins too, so a claim whose
//!   outcome was lost (a timeout after the write) can be repeated safely.
//! - Only the holder of the claim's token may renew, finish or release it;
//!   `finish` stores only over the holder's own in-flight claim, so the first
//!   final record wins and a late completion never overwrites it.
//! - `expire_lease` turns an in-flight record whose lease ran out into the
//!   "outcome unknown" outcome; the operation is never forwarded again.
//! - `sweep` deletes expired done records and turns lapsed claims (their
//!   gateway died) into "outcome unknown" records with the normal TTL, in
//!   bounded batches, so the store cannot grow without bound.
//! - A claim that finds a done record whose stored outcome is larger than
//!   [`INLINE_OUTCOME`] bytes returns its fingerprint and size without the
//!   outcome ([`Claimed::Large`]); `load` reads it whole. So a crowd of
//!   replays of a large answer reads it into memory only as fast as the
//!   caller makes room for it, not once per request before any check. For
//!   the same reason `expire_lease` returns such a record as `None` (look
//!   again): only `load` returns a large outcome.
//!
//! Times are milliseconds since the Unix epoch, passed in by the caller, so
//! tests control the clock.
//!
//! The SQLite and Redis stores are used behind [`cached::Cached`], which
//! answers replays of recent done records from memory.

pub mod allowance;
pub mod cached;
pub mod memory;
pub mod password;
pub mod postgres;
pub mod redis;
pub mod skew;
pub mod sqlite;

use serde::{Deserialize, Serialize};

/// Identifies a record: who asked (a hash of the scope headers) and the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordId {
    /// SHA-256 of the caller's scope header values.
    pub caller: [u8; 32],
    /// The idempotency key, unquoted.
    pub key: String,
}

/// A claim holder's secret, so only it can renew, finish or release.
pub type Token = [u8; 16];

/// A stored upstream response, replayed byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// Status code.
    pub status: u16,
    /// Header names and values in order; repeated headers are kept.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body as the upstream sent it (content encoding untouched).
    pub body: Vec<u8>,
}

impl StoredResponse {
    /// The answer's bytes: the body and every header's name and value.
    pub fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        self.body.len() + headers
    }
}

/// A final outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The upstream's response.
    Response(StoredResponse),
    /// The request was sent but whether the upstream acted is unknown.
    Unknown(String),
    /// The upstream answered, but the answer could not be stored (too large).
    NotStored(String),
}

impl Outcome {
    /// About the bytes it holds: an answer's [`StoredResponse::size`], or a
    /// detail's text.
    pub fn size(&self) -> usize {
        match self {
            Outcome::Response(response) => response.size(),
            Outcome::Unknown(detail) | Outcome::NotStored(detail) => detail.len(),
        }
    }
}

/// A record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Claimed; being forwarded.
    InFlight {
        /// The request's fingerprint.
        fingerprint: [u8; 32],
        /// The claimer's token.
        token: Token,
        /// When the lease runs out, unless renewed.
        lease_until: u64,
    },
    /// Finished.
    Done {
        /// The request's fingerprint.
        fingerprint: [u8; 32],
        /// What to replay.
        outcome: Outcome,
        /// When the record stops being replayed.
        expires_at: u64,
        /// When it was stored (for `Age`); unknown for records stored before
        /// it was recorded.
        stored_at: Option<u64>,
    },
}

impl Record {
    /// Whether it counts at `now`: a done record past its expiry counts as
    /// absent, even before the sweep deletes it.
    pub fn is_live(&self, now: u64) -> bool {
        match self {
            Record::InFlight { .. } => true,
            Record::Done { expires_at, .. } => *expires_at > now,
        }
    }

    /// Whether it is a done record whose outcome is over [`INLINE_OUTCOME`]
    /// bytes: one that only `load` returns.
    pub fn is_large(&self) -> bool {
        matches!(self, Record::Done { outcome, .. } if outcome.size() > INLINE_OUTCOME)
    }

    /// The fingerprint of the request that created the record.
    pub fn fingerprint(&self) -> &[u8; 32] {
        match self {
            Record::InFlight { fingerprint, .. } | Record::Done { fingerprint, .. } => fingerprint,
        }
    }
}

/// Done records whose stored outcome is larger than this many bytes come
/// back from a claim without it ([`Claimed::Large`]). The same bound as the
/// cache of replayed records ([`cached::MAX_ANSWER`]): what a claim returns
/// whole, the cache may keep.
pub const INLINE_OUTCOME: usize = cached::MAX_ANSWER;

/// The result of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// This caller won and must forward.
    Won,
    /// A record exists (in flight, or done and not expired, with an outcome
    /// of at most [`INLINE_OUTCOME`] bytes).
    Existing(Record),
    /// A done record, not expired, whose outcome is larger than
    /// [`INLINE_OUTCOME`] bytes: read it with [`Store::load`].
    Large {
        /// The request's fingerprint.
        fingerprint: [u8; 32],
        /// The stored outcome's size in bytes (as the store keeps it: about
        /// the answer's body and headers), to make room for before loading.
        size: usize,
    },
    /// No record exists and the store holds as much as it may, so none was
    /// written (the memory store's `--memory-max-bytes`).
    Full,
}

/// What a lapsed lease is replayed as: its gateway stopped mid-forward.
pub const LAPSED_LEASE_DETAIL: &str = "the gateway that forwarded this request stopped before it stored the answer, so whether the upstream acted is unknown";

/// Rows a sweep deletes or converts per statement, so no request waits
/// long behind it.
pub const SWEEP_BATCH: usize = 100;

/// A time in milliseconds as an SQL integer column holds it (SQLite's and
/// PostgreSQL's are signed 64-bit), saturating.
fn sql_ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Runs `batch` (one statement of at most [`SWEEP_BATCH`] rows, its rows
/// touched) until one touches fewer; their sum. After each full batch it
/// pauses three times as long as the batch took: requests waiting for the
/// store get it in between (SQLite's mutex is not fair: a sweep that took
/// it again at once kept claims waiting for seconds), and the sweep's
/// writes grow SQLite's WAL slowly enough that checkpoints keep up
/// without a long locked pass.
async fn paced_batches<F, Fut>(mut batch: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    let mut touched = 0;
    loop {
        let started = std::time::Instant::now();
        let n = batch().await?;
        touched += n;
        if n < SWEEP_BATCH as u64 {
            return Ok(touched);
        }
        tokio::time::sleep((started.elapsed() * 3).max(std::time::Duration::from_millis(1))).await;
    }
}

/// A store failure (unreachable, I/O, corrupt data).
#[derive(Debug, Clone, thiserror::Error)]
#[error("store error: {0}")]
pub struct StoreError(pub String);

impl StoreError {
    pub(crate) fn from<E: std::fmt::Display>(e: E) -> Self {
        Self(e.to_string())
    }
}

/// The store contract (see the module documentation).
pub trait Store: Send + Sync + 'static {
    /// Claims `id` for `token` until `lease_until`, unless a live record exists.
    fn claim(
        &self,
        id: &RecordId,
        fingerprint: &[u8; 32],
        token: &Token,
        lease_until: u64,
        now: u64,
    ) -> impl Future<Output = Result<Claimed, StoreError>> + Send;

    /// Extends the holder's lease; `false` when the claim is no longer its.
    fn renew(
        &self,
        id: &RecordId,
        token: &Token,
        lease_until: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores the final outcome over the holder's claim, replayed until
    /// `expires_at`; `false` (nothing written) when the claim is no longer its.
    fn finish(
        &self,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
        now: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes the holder's claim, so the next request forwards again.
    fn release(
        &self,
        id: &RecordId,
        token: &Token,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// If `id` is still in flight under `token` and its lease ran out before
    /// `now`, stores `outcome` in its place. Returns the record as it now is:
    /// the outcome just stored, or, rarely (its holder finished after its
    /// lease lapsed), the holder's; but `None`, as for no record, when that
    /// is a done record with an outcome over [`INLINE_OUTCOME`] bytes
    /// ([`Record::is_large`]), so the caller looks again and its claim
    /// reports it [`Claimed::Large`], read only once there is room for it.
    fn expire_lease(
        &self,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
        now: u64,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// The live record of `id` with its whole outcome (a done record that
    /// expired before `now` counts as absent): what a claim answered with
    /// [`Claimed::Large`] reads. `size` is the size that claim reported,
    /// by which a networked store sets the time the read may take (a
    /// record changed since is read all the same).
    fn load(
        &self,
        id: &RecordId,
        now: u64,
        size: usize,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// Checks that the store answers.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes done records that expired before `now`, and turns in-flight
    /// records whose lease lapsed into "outcome unknown" records replayed
    /// until `now + unknown_ttl`; returns how many records it touched.
    fn sweep(
        &self,
        now: u64,
        unknown_ttl: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// The store chosen at start-up.
pub enum AnyStore {
    /// `--store memory`.
    Memory(memory::MemoryStore),
    /// `--store sqlite:PATH`.
    Sqlite(cached::Cached<sqlite::SqliteStore>),
    /// `--store redis://…` (boxed: by far the largest).
    Redis(Box<cached::Cached<redis::RedisStore>>),
    /// `--store postgres://…`.
    Postgres(Box<cached::Cached<postgres::PostgresStore>>),
}

impl AnyStore {
    /// A done record known without a store call (the memory store, or the
    /// cache in front of the others): what a replay needs, when it is there.
    pub fn recall(&self, id: &RecordId, now: u64) -> Option<Record> {
        match self {
            AnyStore::Memory(store) => store.recall(id, now),
            AnyStore::Sqlite(store) => store.recall(id, now),
            AnyStore::Redis(store) => store.recall(id, now),
            AnyStore::Postgres(store) => store.recall(id, now),
        }
    }

    /// Whether a call that failed certainly wrote nothing, so a failed
    /// claim needs neither a retry with its token nor a release: the
    /// stores inside the process, whose calls end with their outcome (a
    /// SQLite call is answered after its transaction committed or failed).
    /// Not Redis or PostgreSQL, where a timeout can hide a write the server
    /// made.
    pub fn failures_wrote_nothing(&self) -> bool {
        match self {
            AnyStore::Memory(_) | AnyStore::Sqlite(_) => true,
            AnyStore::Redis(_) | AnyStore::Postgres(_) => false,
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Memory($store) => $call.await,
            AnyStore::Sqlite($store) => $call.await,
            AnyStore::Redis($store) => $call.await,
            AnyStore::Postgres($store) => $call.await,
        }
    };
}

impl Store for AnyStore {
    async fn claim(
        &self,
        id: &RecordId,
        fingerprint: &[u8; 32],
        token: &Token,
        lease_until: u64,
        now: u64,
    ) -> Result<Claimed, StoreError> {
        dispatch!(self, s => s.claim(id, fingerprint, token, lease_until, now))
    }
    async fn renew(
        &self,
        id: &RecordId,
        token: &Token,
        lease_until: u64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.renew(id, token, lease_until))
    }
    async fn finish(
        &self,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.finish(id, token, outcome, expires_at, now))
    }
    async fn release(&self, id: &RecordId, token: &Token) -> Result<bool, StoreError> {
        dispatch!(self, s => s.release(id, token))
    }
    async fn expire_lease(
        &self,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
        now: u64,
    ) -> Result<Option<Record>, StoreError> {
        dispatch!(self, s => s.expire_lease(id, token, outcome, expires_at, now))
    }
    async fn load(
        &self,
        id: &RecordId,
        now: u64,
        size: usize,
    ) -> Result<Option<Record>, StoreError> {
        dispatch!(self, s => s.load(id, now, size))
    }
    async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping())
    }
    async fn sweep(&self, now: u64, unknown_ttl: u64) -> Result<u64, StoreError> {
        dispatch!(self, s => s.sweep(now, unknown_ttl))
    }
}

/// Encodes an outcome for stores that keep bytes.
pub(crate) fn encode_outcome(outcome: &Outcome) -> Vec<u8> {
    // Serialising plain data into a Vec cannot fail.
    postcard::to_stdvec(outcome).expect("outcomes serialise")
}

/// Decodes an outcome written by [`encode_outcome`]. An answer's body is
/// moved to the front of `bytes` and keeps its allocation, so an answer
/// loaded from a store is not held twice while it is decoded.
pub(crate) fn decode_outcome(mut bytes: Vec<u8>) -> Result<Outcome, StoreError> {
    let corrupt = |e: postcard::Error| StoreError(format!("corrupt stored outcome: {e}"));
    let (status, headers, body) = match postcard::from_bytes(&bytes).map_err(corrupt)? {
        OutcomeView::Response(answer) => (answer.status, answer.headers, answer.body),
        OutcomeView::Unknown(detail) => return Ok(Outcome::Unknown(detail.to_owned())),
        OutcomeView::NotStored(detail) => return Ok(Outcome::NotStored(detail.to_owned())),
    };
    // Where the body lies in `bytes`: it was borrowed from them.
    let start = (body.as_ptr() as usize).saturating_sub(bytes.as_ptr() as usize);
    let range = start..start + body.len();
    if range.end > bytes.len() {
        return Err(StoreError("corrupt stored outcome".to_owned()));
    }
    bytes.copy_within(range.clone(), 0);
    bytes.truncate(range.len());
    Ok(Outcome::Response(StoredResponse {
        status,
        headers,
        body: bytes,
    }))
}

/// [`Outcome`] as encoded, its answer's body borrowed: the same fields in
/// the same order (postcard writes a `Vec<u8>` and a `&[u8]` alike).
#[derive(Deserialize)]
enum OutcomeView<'a> {
    Response(#[serde(borrow)] StoredResponseView<'a>),
    Unknown(&'a str),
    NotStored(&'a str),
}

/// [`StoredResponse`] as encoded, its body borrowed.
#[derive(Deserialize)]
struct StoredResponseView<'a> {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    #[serde(borrow)]
    body: &'a [u8],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_decode_as_encoded_and_a_body_keeps_its_bytes_allocation() {
        let answer = Outcome::Response(StoredResponse {
            status: 201,
            headers: vec![
                ("set-cookie".into(), b"a=1".to_vec()),
                ("set-cookie".into(), vec![0xff, b'b']),
            ],
            body: (0..=255u8).cycle().take(100_000).collect(),
        });
        let empty = Outcome::Response(StoredResponse {
            status: 204,
            headers: vec![],
            body: vec![],
        });
        let details = [
            Outcome::Unknown("the upstream reset the connection".into()),
            Outcome::NotStored(String::new()),
        ];
        for outcome in [&answer, &empty, &details[0], &details[1]] {
            assert_eq!(&decode_outcome(encode_outcome(outcome)).unwrap(), outcome);
        }
        let bytes = encode_outcome(&answer);
        let allocation = bytes.as_ptr();
        let Outcome::Response(decoded) = decode_outcome(bytes).unwrap() else {
            panic!("an answer decoded as another outcome");
        };
        assert_eq!(decoded.body.as_ptr(), allocation, "the body was copied");
        let mut truncated = encode_outcome(&answer);
        truncated.truncate(truncated.len() - 1);
        assert!(decode_outcome(truncated).is_err());
        assert!(decode_outcome(vec![9, 1, 2]).is_err());
    }
}
