//! `--store redis://HOST:PORT/DB`: claims and records shared by several
//! gateway replicas.
//!
//! Each record is a hash under `idempotency-gateway:{caller hex}:{key}` with
//! the fields `state` (`inflight` or `done`), `fingerprint`, and either
//! `token` + `lease_until` or `outcome` + `expires_at`. Every operation is
//! one Lua script, so it is atomic on the server: the claim is a
//! check-and-set on a key that does not exist (the `SET NX` of hashes), and
//! renew/finish/release compare the token first. A claim key expires only
//! a whole TTL after its lease (it must not vanish when its lease runs out:
//! an expired lease becomes "outcome unknown", never a fresh claim, and a
//! claim whose gateway died is replayed as "outcome unknown" until then,
//! and is then removed by Redis itself); a done record gets a Redis expiry
//! at its `expires_at`, and is also treated as absent past `expires_at` in
//! case clocks differ.
//!
//! Calls share one multiplexed connection, each bounded by
//! [`CALL_TIMEOUT`]. A call that moves a large answer (a finish that stores
//! one, a load that reads one) runs on a connection apart, one call at a
//! time, bounded by the time to move it ([`allowance`]): it neither times
//! out at 2 s nor holds up the small calls queued behind it on the shared
//! connection. At most [`LARGE_AT_ONCE`] such calls run at once (one that
//! waits longer than [`CALL_TIMEOUT`] for its turn fails), and as many
//! connections are kept for the next large calls (one idle for
//! [`UNASKED_IDLE`] or more must answer `PING` first), but not one that
//! moved more than [`KEPT_UP_TO`]: it would keep the buffers it grew. A
//! call that failed or timed out is dropped with its
//! connection, so a large command Redis had not wholly received is never
//! run; one that was received may still have run, which the proxy's retry
//! (same token) recognises.
//!
//! Every connection, the shared one's reconnections included, authenticates
//! with the password `--store-password-file` holds when it opens
//! (`FilePassword`), so a rotated password needs no restart.

use super::allowance::{CALL_TIMEOUT, allowance, is_large};
use super::password::PasswordFile;
use super::{
    Claimed, INLINE_OUTCOME, Outcome, Record, RecordId, Store, StoreError, Token, decode_outcome,
    encode_outcome, skew,
};
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{AsyncConnectionConfig, BasicAuth, Script, StreamingCredentialsProvider, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many large calls run at once, each on a connection of its own; as
/// many connections are kept idle for the next. Each holds the answer it
/// moves two or three times over while it parses it, so they are few.
pub const LARGE_AT_ONCE: usize = 4;

/// The largest call whose connection is kept for the next large call: a
/// connection keeps the buffers it grew to move an answer, so one that
/// moved more is closed (a call of this size or more moves enough bytes
/// that opening a connection for it costs little beside them).
pub const KEPT_UP_TO: usize = 1 << 20;

/// How long a large-call connection may sit idle and be used again without
/// a `PING` first.
pub const UNASKED_IDLE: Duration = Duration::from_secs(1);

/// The client name (`CLIENT SETNAME`) of the large calls' connections.
pub const LARGE_CALLS_NAME: &str = "idempotency-gateway-large";

/// A Redis-backed store.
pub struct RedisStore {
    /// Opens the large calls' connections.
    client: redis::Client,
    /// Their password, read again for each (`--store-password-file`).
    password: Option<FilePassword>,
    /// The small calls' shared connection.
    connection: ConnectionManager,
    /// Turns of the [`LARGE_AT_ONCE`] large calls.
    large_turns: tokio::sync::Semaphore,
    /// Large calls' connections kept for the next large call, each with
    /// when it was put back.
    idle_large: std::sync::Mutex<Vec<(MultiplexedConnection, Instant)>>,
    scripts: Scripts,
    /// How long an orphaned claim outlives its lease (the records' TTL).
    orphan_ttl_ms: u64,
}

struct Scripts {
    claim: Script,
    renew: Script,
    finish: Script,
    release: Script,
    expire_lease: Script,
}

/// KEYS[1] record; ARGV: token, fingerprint, lease_until, now, the claim
/// key's Redis expiry (ms), the largest outcome returned whole. Returns 1
/// when claimed (also when the in-flight record is this token's own), else
/// the existing hash; for a larger outcome, the hash without it and with
/// its `outcome_size`.
const CLAIM: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'done' and tonumber(redis.call('HGET', KEYS[1], 'expires_at')) <= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1])
  state = false
end
if state == 'inflight' and redis.call('HGET', KEYS[1], 'token') == ARGV[1] then return 1 end
if state == 'done' then
  local size = redis.call('HSTRLEN', KEYS[1], 'outcome')
  if size > tonumber(ARGV[6]) then
    local kept = redis.call('HMGET', KEYS[1], 'fingerprint', 'expires_at')
    return {'state', 'done', 'fingerprint', kept[1], 'expires_at', kept[2], 'outcome_size', tostring(size)}
  end
end
if state then return redis.call('HGETALL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'state', 'inflight', 'token', ARGV[1], 'fingerprint', ARGV[2], 'lease_until', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

/// KEYS[1] record; ARGV: token, lease_until, the claim key's Redis expiry (ms).
const RENEW: &str = r"
if redis.call('HGET', KEYS[1], 'state') == 'inflight' and redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'lease_until', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
";

/// KEYS[1] record; ARGV: token, outcome, expires_at (ms), time to live
/// (ms), now (ms).
const FINISH: &str = r"
if redis.call('HGET', KEYS[1], 'state') == 'inflight' and redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'token', 'lease_until')
  redis.call('HSET', KEYS[1], 'state', 'done', 'outcome', ARGV[2], 'expires_at', ARGV[3], 'stored_at', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 1
end
return 0
";

/// KEYS[1] record; ARGV: token.
const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], 'state') == 'inflight' and redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// KEYS[1] record; ARGV: token, outcome, expires_at, now, time to live
/// (ms), the largest outcome returned whole. Returns the hash, or an empty
/// one for a larger outcome (the caller looks again).
const EXPIRE_LEASE: &str = r"
if redis.call('HGET', KEYS[1], 'state') == 'inflight' and redis.call('HGET', KEYS[1], 'token') == ARGV[1]
   and tonumber(redis.call('HGET', KEYS[1], 'lease_until')) <= tonumber(ARGV[4]) then
  redis.call('HDEL', KEYS[1], 'token', 'lease_until')
  redis.call('HSET', KEYS[1], 'state', 'done', 'outcome', ARGV[2], 'expires_at', ARGV[3], 'stored_at', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
if redis.call('HSTRLEN', KEYS[1], 'outcome') > tonumber(ARGV[6]) then return {} end
return redis.call('HGETALL', KEYS[1])
";

/// What Redis does with this store's keys when it reaches `maxmemory`.
/// Every policy but `noeviction` may evict them: claims and records all
/// carry an expiry, so the `volatile-*` policies take them too.
#[derive(Debug, PartialEq, Eq)]
enum Eviction {
    /// `noeviction`: a write past `maxmemory` is refused (a `503`, nothing
    /// forwarded), nothing stored is dropped.
    Never,
    /// An evicting policy with `maxmemory` 0 (no limit): nothing is evicted
    /// until a limit is set.
    Dormant(String),
    /// An evicting policy under a `maxmemory` limit: a claim can vanish and
    /// its retry be forwarded again.
    Possible(String),
    /// The settings could not be read (`CONFIG` refused or renamed).
    Unknown,
}

impl Eviction {
    /// From the values of `maxmemory-policy` and `maxmemory`.
    fn of(policy: Option<&str>, maxmemory: Option<&str>) -> Self {
        let (Some(policy), Some(maxmemory)) = (policy, maxmemory) else {
            return Self::Unknown;
        };
        if policy.eq_ignore_ascii_case("noeviction") {
            return Self::Never;
        }
        // Quoted in a log line: only a policy's name, never other text.
        let name = if !policy.is_empty()
            && policy.len() <= 32
            && policy.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        {
            policy.to_owned()
        } else {
            "(unrecognised)".to_owned()
        };
        match maxmemory.trim().parse::<u64>() {
            Ok(0) => Self::Dormant(name),
            // A limit, or one this check cannot read: assume the worst.
            _ => Self::Possible(name),
        }
    }
}

/// The error that refuses to start on, or reports not ready for, a Redis
/// whose eviction is [`Eviction::Possible`] under `policy`.
fn eviction_refused(policy: &str) -> StoreError {
    StoreError(format!(
        "Redis evicts keys when it reaches maxmemory (maxmemory-policy is {policy}): an \
         evicted claim is forgotten and its retry forwarded again; set maxmemory-policy \
         noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf)"
    ))
}

/// The value of `name` in `INFO`'s `name:value` lines.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (field, value) = line.split_once(':')?;
        (field == name).then_some(value.trim())
    })
}

/// Why a server of this `redis_mode` and replication `role` cannot hold
/// the gateway's claims, if it cannot.
fn refusal_of_kind(mode: Option<&str>, role: Option<&str>) -> Option<&'static str> {
    match (mode, role) {
        (Some("cluster"), _) => Some(
            "Redis runs in cluster mode (redis_mode:cluster), which spreads keys over its \
             nodes and redirects the others (MOVED), which the gateway does not follow: give it \
             a standalone Redis (a primary, with replicas if you like) or use PostgreSQL",
        ),
        (Some("sentinel"), _) => Some(
            "--store names a Redis Sentinel (redis_mode:sentinel), which holds no data: give \
             the address of the Redis primary it watches",
        ),
        (_, Some("slave" | "replica")) => Some(
            "--store names a Redis replica (role:slave), which refuses writes or does not pass \
             them on to its primary: give the address of the primary",
        ),
        _ => None,
    }
}

/// A command Redis failed or did not answer in time.
fn failed(e: redis::RedisError) -> StoreError {
    StoreError(format!("Redis: {e}"))
}

/// A connection Redis did not accept.
fn not_reached(e: redis::RedisError) -> StoreError {
    StoreError(format!("cannot reach Redis: {e}"))
}

fn redis_key(id: &RecordId) -> Vec<u8> {
    let mut key = b"idempotency-gateway:".to_vec();
    for byte in id.caller {
        key.extend_from_slice(format!("{byte:02x}").as_bytes());
    }
    key.push(b':');
    key.extend_from_slice(id.key.as_bytes());
    key
}

/// Gives each new connection the password in `--store-password-file` as
/// it is when the connection opens, with the URL's user (`default` when it
/// names none). The connection asks for it once, and once more to
/// re-authenticate when it is set up (one `AUTH` more per connection);
/// the stream then ends, so nothing re-reads the file for a connection
/// already open.
#[derive(Clone)]
struct FilePassword {
    user: String,
    file: Arc<PasswordFile>,
}

impl StreamingCredentialsProvider for FilePassword {
    fn subscribe(
        &self,
    ) -> std::pin::Pin<
        Box<dyn futures_util::Stream<Item = redis::RedisResult<BasicAuth>> + Send + 'static>,
    > {
        let credentials = BasicAuth::new(self.user.clone(), self.file.current());
        Box::pin(futures_util::stream::iter([Ok(credentials)]))
    }
}

impl RedisStore {
    /// Connects to `url` and checks that Redis answers a command (so a
    /// wrong password fails here); fails when it does not within a few
    /// seconds. `orphan_ttl_ms` is how long a claim key outlives its lease
    /// (give the records' TTL). With `password_file`, every connection
    /// opened afterwards reads its password from it again (the URL holds
    /// the start-up password).
    pub async fn connect(
        url: &str,
        orphan_ttl_ms: u64,
        password_file: Option<std::path::PathBuf>,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|_| {
            StoreError("the Redis URL is not valid (redis://HOST:PORT/DB)".to_owned())
        })?;
        let password = password_file.map(|path| {
            let settings = client.get_connection_info().redis_settings();
            FilePassword {
                user: settings.username().unwrap_or("default").to_owned(),
                file: Arc::new(PasswordFile::new(
                    path,
                    settings.password().unwrap_or_default().to_owned(),
                )),
            }
        });
        let mut config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1);
        if let Some(password) = &password {
            config = config.set_credentials_provider(password.clone());
        }
        let connection = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(not_reached)?;
        let store = Self {
            client,
            password,
            connection,
            large_turns: tokio::sync::Semaphore::new(LARGE_AT_ONCE),
            idle_large: std::sync::Mutex::new(Vec::new()),
            scripts: Scripts {
                claim: Script::new(CLAIM),
                renew: Script::new(RENEW),
                finish: Script::new(FINISH),
                release: Script::new(RELEASE),
                expire_lease: Script::new(EXPIRE_LEASE),
            },
            orphan_ttl_ms,
        };
        // A connection is not yet an answer: a wrong password, or a
        // replica that refuses commands, shows on the first one.
        store.answers().await?;
        if let Some(refusal) = store.kind_refused().await {
            return Err(refusal);
        }
        match store.eviction().await {
            Eviction::Never => {}
            Eviction::Unknown => tracing::warn!(
                "could not read Redis's maxmemory-policy (CONFIG GET was refused, as managed \
                 Redis services often do): make sure it is noeviction, or an evicted claim \
                 is forgotten and its retry forwarded again"
            ),
            Eviction::Dormant(policy) => tracing::warn!(
                policy = policy.as_str(),
                "Redis's maxmemory-policy evicts keys, but maxmemory is 0, so nothing is \
                 evicted now; set maxmemory-policy noeviction before giving Redis a maxmemory"
            ),
            Eviction::Possible(policy) => return Err(eviction_refused(&policy)),
        }
        if store.keeps_nothing_on_disk().await {
            tracing::warn!(
                "Redis keeps nothing on disk (no snapshots, appendonly no): a restart of \
                 Redis forgets every claim and stored answer, and a retry of a key it forgot \
                 is forwarded again; turn on appendonly (appendfsync everysec, or always)"
            );
        }
        store.check_clock().await;
        Ok(store)
    }

    /// Whether Redis says it writes neither snapshots (`save ""`) nor an
    /// append-only file; false when it does, or will not say.
    async fn keeps_nothing_on_disk(&self) -> bool {
        let setting = async |name: &str| self.config(name).await?.remove(name);
        let save = setting("save").await;
        let appendonly = setting("appendonly").await;
        save.is_some_and(|save| save.trim().is_empty())
            && appendonly.is_some_and(|on| on.eq_ignore_ascii_case("no"))
    }

    /// The settings `CONFIG GET pattern` names (one pattern, which Redis 6
    /// also takes), or `None` when Redis will not say.
    async fn config(&self, pattern: &str) -> Option<std::collections::HashMap<String, String>> {
        let mut connection = self.connection.clone();
        redis::cmd("CONFIG")
            .arg("GET")
            .arg(pattern)
            .query_async(&mut connection)
            .await
            .ok()
    }

    /// Warns when this host's clock and Redis's (`TIME`) are apart.
    async fn check_clock(&self) {
        let mut connection = self.connection.clone();
        let sent = skew::local_now_ms();
        let time: Result<(u64, u64), _> = redis::cmd("TIME").query_async(&mut connection).await;
        let received = skew::local_now_ms();
        if let Ok((seconds, micros)) = time {
            let server = seconds.saturating_mul(1000).saturating_add(micros / 1000);
            skew::warn_if_apart("Redis", sent, server, received);
        }
    }

    /// A refusal when the server at `--store` cannot hold the claims: a
    /// cluster node (keys spread over slots, `MOVED` for those it does not
    /// hold), a Sentinel (no data) or a replica (writes refused, or not
    /// passed on). `None` when it can, or when `INFO` is refused.
    async fn kind_refused(&self) -> Option<StoreError> {
        let server = self.info("server").await?;
        let mode = info_field(&server, "redis_mode");
        let replication = match mode {
            Some("sentinel") | Some("cluster") => None,
            _ => self.info("replication").await,
        };
        let role = replication
            .as_deref()
            .and_then(|text| info_field(text, "role"));
        refusal_of_kind(mode, role).map(|reason| StoreError(reason.to_owned()))
    }

    /// One section of `INFO`, or `None` when it is refused.
    async fn info(&self, section: &str) -> Option<String> {
        let mut connection = self.connection.clone();
        redis::cmd("INFO")
            .arg(section)
            .query_async(&mut connection)
            .await
            .ok()
    }

    /// Whether Redis answers a command.
    async fn answers(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(drop)
            .map_err(failed)
    }

    /// Whether Redis may evict this store's keys, from `maxmemory*`.
    async fn eviction(&self) -> Eviction {
        match self.config("maxmemory*").await {
            Some(settings) => Eviction::of(
                settings.get("maxmemory-policy").map(String::as_str),
                settings.get("maxmemory").map(String::as_str),
            ),
            None => Eviction::Unknown,
        }
    }

    /// Runs `script` on `id`'s record with `args`, which move `bytes` of
    /// an answer: on the shared connection, or for a large call
    /// ([`is_large`]) on one of its own ([`Self::large_call`]).
    async fn invoke(
        &self,
        script: &Script,
        id: &RecordId,
        args: &[&[u8]],
        bytes: usize,
    ) -> Result<Value, StoreError> {
        let mut invocation = script.key(redis_key(id));
        for arg in args {
            invocation.arg(*arg);
        }
        if is_large(bytes) {
            return self
                .large_call(bytes, async |connection| {
                    invocation.invoke_async(connection).await
                })
                .await;
        }
        let mut connection = self.connection.clone();
        let result = invocation.invoke_async(&mut connection).await;
        result.map_err(failed)
    }

    /// Runs `call`, which moves `bytes` of an answer, on a connection of
    /// its own, its answer awaited for [`allowance`]`(bytes)`, once it has
    /// one of the [`LARGE_AT_ONCE`] turns (waited for up to
    /// [`CALL_TIMEOUT`]). The
    /// connection is an idle one kept from an earlier large call
    /// ([`Self::large_connection`]) or a new one; after a call that
    /// succeeded and moved at most [`KEPT_UP_TO`] it is kept for the next,
    /// up to [`LARGE_AT_ONCE`] of them, so a stream of large answers does not
    /// open a connection per call; after one that moved more, failed, or
    /// was dropped, it is closed.
    async fn large_call<T>(
        &self,
        bytes: usize,
        call: impl AsyncFnOnce(&mut MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let turn = tokio::time::timeout(CALL_TIMEOUT, self.large_turns.acquire()).await;
        let Ok(Ok(_turn)) = turn else {
            return Err(StoreError(format!(
                "Redis: {LARGE_AT_ONCE} large answers were moving for {} s and this one \
                 could not wait longer for its turn",
                CALL_TIMEOUT.as_secs()
            )));
        };
        let mut connection = self.large_connection().await?;
        connection.set_response_timeout(allowance(bytes));
        let result = call(&mut connection).await;
        if result.is_ok() && bytes <= KEPT_UP_TO {
            let mut idle = self.idle_large.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < LARGE_AT_ONCE {
                idle.push((connection, Instant::now()));
            }
        }
        result.map_err(failed)
    }

    /// An idle large-call connection that still answers (asked with `PING`
    /// when it sat idle for [`UNASKED_IDLE`] or more), or a new one. One
    /// that does not answer takes the other idle ones with it (a restart of
    /// Redis closed them all), so a call asks at most once.
    async fn large_connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let kept = self
            .idle_large
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        if let Some((mut kept, since)) = kept {
            // Closed by Redis while idle (its `timeout`, a restart): asked
            // only after a pause, so a stream of large calls pays no round
            // trip for it.
            if since.elapsed() < UNASKED_IDLE {
                return Ok(kept);
            }
            kept.set_response_timeout(CALL_TIMEOUT);
            let ping = redis::cmd("PING").query_async::<String>(&mut kept).await;
            if ping.is_ok() {
                return Ok(kept);
            }
            self.idle_large
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        let mut config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT));
        if let Some(password) = &self.password {
            config = config.set_credentials_provider(password.clone());
        }
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(not_reached)?;
        // Told apart in `CLIENT LIST`; a Redis that refuses `CLIENT` is
        // used all the same.
        let _: redis::RedisResult<()> = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(LARGE_CALLS_NAME)
            .query_async(&mut connection)
            .await;
        Ok(connection)
    }
}

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(n, _)| n == name.as_bytes())
        .map(|(_, v)| v.as_slice())
}

/// The value of `name`, moved out (an outcome can be megabytes).
fn take_field(fields: &mut Fields, name: &str) -> Option<Vec<u8>> {
    fields
        .iter_mut()
        .find(|(n, _)| n == name.as_bytes())
        .map(|(_, v)| std::mem::take(v))
}

fn number(bytes: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(bytes?).ok()?.parse().ok()
}

fn corrupt() -> StoreError {
    StoreError("corrupt record in Redis".to_owned())
}

/// A hash's field names and values, in the order Redis gave them.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The field names and values of an `HGETALL` reply (moved, not copied:
/// an outcome can be megabytes).
fn hash_fields(value: Value) -> Result<Fields, StoreError> {
    let items = match value {
        Value::Array(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return Err(corrupt()),
    };
    if items.len() % 2 != 0 {
        return Err(corrupt());
    }
    let bytes = |v: Value| match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    };
    let mut fields = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        fields.push((
            bytes(name).ok_or_else(corrupt)?,
            bytes(value).ok_or_else(corrupt)?,
        ));
    }
    Ok(fields)
}

fn fingerprint_field(fields: &Fields) -> Result<[u8; 32], StoreError> {
    field(fields, "fingerprint")
        .and_then(|f| f.try_into().ok())
        .ok_or_else(corrupt)
}

/// Decodes the claim script's reply for an existing record: a large done
/// record comes as its fingerprint, expiry and `outcome_size`.
fn decode_claimed(value: Value) -> Result<Claimed, StoreError> {
    let fields = hash_fields(value)?;
    if let Some(size) = number(field(&fields, "outcome_size")) {
        return Ok(Claimed::Large {
            fingerprint: fingerprint_field(&fields)?,
            size: usize::try_from(size).map_err(|_| corrupt())?,
        });
    }
    decode_fields(fields)?
        .map(Claimed::Existing)
        .ok_or_else(|| StoreError("Redis returned an empty record for a claim".to_owned()))
}

/// Decodes an `HGETALL` reply; `None` for an empty hash.
fn decode_hash(value: Value) -> Result<Option<Record>, StoreError> {
    decode_fields(hash_fields(value)?)
}

fn decode_fields(mut fields: Fields) -> Result<Option<Record>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let fingerprint = fingerprint_field(&fields)?;
    let number_of = |name| number(field(&fields, name)).ok_or_else(corrupt);
    match field(&fields, "state") {
        Some(b"inflight") => Ok(Some(Record::InFlight {
            fingerprint,
            token: field(&fields, "token")
                .and_then(|t| t.try_into().ok())
                .ok_or_else(corrupt)?,
            lease_until: number_of("lease_until")?,
        })),
        Some(b"done") => {
            let (expires_at, stored_at) = (
                number_of("expires_at")?,
                number(field(&fields, "stored_at")),
            );
            let outcome = take_field(&mut fields, "outcome").ok_or_else(corrupt)?;
            Ok(Some(Record::Done {
                fingerprint,
                outcome: decode_outcome(outcome)?,
                expires_at,
                stored_at,
            }))
        }
        _ => Err(corrupt()),
    }
}

/// This machine's clock in milliseconds since the epoch.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl RedisStore {
    /// The Redis expiry of a claim key whose lease runs until `lease_until`:
    /// the lease, then a whole TTL as "outcome unknown".
    fn claim_expiry(&self, lease_until: u64, now: u64) -> String {
        lease_until
            .saturating_sub(now)
            .saturating_add(self.orphan_ttl_ms)
            .max(1)
            .to_string()
    }
}

/// Redis's relative expiry for a record replayed until `expires_at`
/// (at least 1 ms: `PEXPIRE 0` would delete it at once).
fn ttl_ms(expires_at: u64, now: u64) -> String {
    expires_at.saturating_sub(now).max(1).to_string()
}

fn is_one(value: &Value) -> bool {
    matches!(value, Value::Int(1))
}

impl Store for RedisStore {
    async fn claim(
        &self,
        id: &RecordId,
        fingerprint: &[u8; 32],
        token: &Token,
        lease_until: u64,
        now: u64,
    ) -> Result<Claimed, StoreError> {
        let expiry = self.claim_expiry(lease_until, now);
        let (lease, now) = (lease_until.to_string(), now.to_string());
        let inline = INLINE_OUTCOME.to_string();
        let reply = self
            .invoke(
                &self.scripts.claim,
                id,
                &[
                    token,
                    fingerprint,
                    lease.as_bytes(),
                    now.as_bytes(),
                    expiry.as_bytes(),
                    inline.as_bytes(),
                ],
                0,
            )
            .await?;
        if is_one(&reply) {
            return Ok(Claimed::Won);
        }
        decode_claimed(reply)
    }

    async fn renew(
        &self,
        id: &RecordId,
        token: &Token,
        lease_until: u64,
    ) -> Result<bool, StoreError> {
        let expiry = self.claim_expiry(lease_until, wall_ms());
        let lease = lease_until.to_string();
        Ok(is_one(
            &self
                .invoke(
                    &self.scripts.renew,
                    id,
                    &[token, lease.as_bytes(), expiry.as_bytes()],
                    0,
                )
                .await?,
        ))
    }

    async fn finish(
        &self,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let (outcome, expires, ttl, stored) = (
            encode_outcome(outcome),
            expires_at.to_string(),
            ttl_ms(expires_at, now),
            now.to_string(),
        );
        let reply = self
            .invoke(
                &self.scripts.finish,
                id,
                &[
                    token,
                    &outcome,
                    expires.as_bytes(),
                    ttl.as_bytes(),
                    stored.as_bytes(),
                ],
                outcome.len(),
            )
            .await?;
        Ok(is_one(&reply))
    }

    async fn release(&self, id: &RecordId, token: &Token) -> Result<bool, StoreError> {
        Ok(is_one(
            &self.invoke(&self.scripts.release, id, &[token], 0).await?,
        ))
    }

    async fn expire_lease(
        &self,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
        now: u64,
    ) -> Result<Option<Record>, StoreError> {
        let ttl = ttl_ms(expires_at, now);
        let (outcome, expires, now) = (
            encode_outcome(outcome),
            expires_at.to_string(),
            now.to_string(),
        );
        let inline = INLINE_OUTCOME.to_string();
        let args: [&[u8]; 6] = [
            token,
            &outcome,
            expires.as_bytes(),
            now.as_bytes(),
            ttl.as_bytes(),
            inline.as_bytes(),
        ];
        let reply = self
            .invoke(&self.scripts.expire_lease, id, &args, outcome.len())
            .await?;
        decode_hash(reply)
    }

    /// A large answer (by `size`) is read on a large-call connection, with
    /// the time to move it.
    async fn load(
        &self,
        id: &RecordId,
        now: u64,
        size: usize,
    ) -> Result<Option<Record>, StoreError> {
        let mut read = redis::cmd("HGETALL");
        read.arg(redis_key(id));
        let reply: Value = if is_large(size) {
            self.large_call(size, async |large| read.query_async(large).await)
                .await?
        } else {
            let reply = read.query_async(&mut self.connection.clone()).await;
            reply.map_err(failed)?
        };
        Ok(decode_hash(reply)?.filter(|record| record.is_live(now)))
    }

    /// Readiness: Redis answers, is still a primary that holds its keys
    /// itself (a failover that demoted it makes the gateway not ready), and
    /// cannot evict this store's keys (nor can a policy changed since
    /// start-up).
    async fn ping(&self) -> Result<(), StoreError> {
        self.answers().await?;
        if let Some(refusal) = self.kind_refused().await {
            return Err(refusal);
        }
        match self.eviction().await {
            Eviction::Possible(policy) => Err(eviction_refused(&policy)),
            _ => Ok(()),
        }
    }

    async fn sweep(&self, _now: u64, _unknown_ttl: u64) -> Result<u64, StoreError> {
        // Redis expires done records, and claims a TTL after their lease,
        // itself.
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn servers_that_cannot_hold_claims_are_told_apart() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:cluster\r\n";
        assert_eq!(super::info_field(info, "redis_mode"), Some("cluster"));
        assert_eq!(super::info_field(info, "redis"), None);
        assert_eq!(super::info_field(info, "os"), None);
        let refused = |mode, role| super::refusal_of_kind(mode, role).unwrap_or_default();
        assert!(refused(Some("cluster"), Some("master")).contains("cluster mode"));
        assert!(refused(Some("sentinel"), None).contains("Sentinel"));
        assert!(refused(Some("standalone"), Some("slave")).contains("replica"));
        assert!(refused(None, Some("replica")).contains("replica"));
        for (mode, role) in [
            (Some("standalone"), Some("master")),
            (None, None),
            (Some("standalone"), None),
        ] {
            assert_eq!(
                super::refusal_of_kind(mode, role),
                None,
                "{mode:?} {role:?}"
            );
        }
    }

    use super::{Eviction, eviction_refused};

    #[test]
    fn only_noeviction_or_no_limit_keeps_every_key() {
        assert_eq!(Eviction::of(Some("noeviction"), Some("0")), Eviction::Never);
        assert_eq!(
            Eviction::of(Some("noeviction"), Some("1073741824")),
            Eviction::Never
        );
        for policy in [
            "allkeys-lru",
            "volatile-lru",
            "volatile-ttl",
            "allkeys-random",
        ] {
            assert_eq!(
                Eviction::of(Some(policy), Some("104857600")),
                Eviction::Possible(policy.to_owned())
            );
            assert_eq!(
                Eviction::of(Some(policy), Some("0")),
                Eviction::Dormant(policy.to_owned())
            );
        }
        // A limit this check cannot read is taken for one.
        assert!(matches!(
            Eviction::of(Some("allkeys-lru"), Some("lots")),
            Eviction::Possible(_)
        ));
        assert_eq!(Eviction::of(None, Some("0")), Eviction::Unknown);
        assert_eq!(Eviction::of(Some("noeviction"), None), Eviction::Unknown);
    }

    #[test]
    fn a_policy_is_quoted_only_as_a_name() {
        let odd = "allkeys-lru\n::error::x";
        assert_eq!(
            Eviction::of(Some(odd), Some("1")),
            Eviction::Possible("(unrecognised)".to_owned())
        );
        let Eviction::Possible(policy) = Eviction::of(Some("allkeys-lfu"), Some("1")) else {
            panic!("a limit with an evicting policy is possible eviction");
        };
        let refusal = eviction_refused(&policy).0;
        assert!(
            refusal.contains("maxmemory-policy is allkeys-lfu"),
            "{refusal}"
        );
        assert!(refusal.contains("noeviction"), "{refusal}");
    }
}
