//! `--store postgres://USER@HOST:PORT/DB`: claims and records shared by
//! several gateway replicas, as durable as the PostgreSQL server makes a
//! commit.
//!
//! One table, `idempotency_gateway_records`, keyed by (caller, key), with
//! the columns of the SQLite store. The claim is one statement: an
//! `INSERT … ON CONFLICT DO UPDATE … WHERE expired`, so exactly one of any
//! number of concurrent claims, on any connection of any replica, inserts
//! or takes over the row (the primary key decides); every other change is
//! an `UPDATE`/`DELETE … WHERE token = $3`. Each call is a statement in its
//! own transaction, committed before it returns: a claim the gateway acts
//! on is a committed claim. A session whose `synchronous_commit` default
//! is `off` (the server's, the database's or the role's) is set to `on`
//! when the pool opens it (`session_settings`): `off` acknowledges a
//! commit before its WAL is flushed, so a crash of the server could lose a
//! claim the gateway already forwarded, and its retry would be forwarded
//! again.
//!
//! Statements are prepared once per connection and cached
//! ([`Statements::Prepared`]), or, behind a pooler in transaction mode
//! (PgBouncer), which may run each statement on another server connection,
//! sent with their values as unnamed statements
//! ([`Statements::Unnamed`], `--store-pooler transaction`). Nothing else
//! is kept on a session but that `synchronous_commit`.
//!
//! Calls go through a pool that replaces broken connections by itself, so a
//! restarted server is used again without restarting the gateway; each new
//! connection reads `--store-password-file` again (`Connector`), so a
//! rotated password needs no restart either. Every
//! call is bounded by [`CALL_TIMEOUT`]; a call that timed out may still have
//! committed, which the proxy's claim retry (same token) recognises.
//!
//! The schema is versioned (`MIGRATIONS`, `idempotency_gateway_schema`)
//! and migrated at start-up under a transaction-scoped advisory lock, so two
//! replicas starting at once apply each migration once.

use super::allowance::{CALL_TIMEOUT, allowance, is_large};
use super::password::PasswordFile;
use super::{
    Claimed, INLINE_OUTCOME, Outcome, Record, RecordId, Store, StoreError, Token, decode_outcome,
    encode_outcome, skew,
};
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::{ToSql, Type};

const BYTEA: Type = Type::BYTEA;
const TEXT: Type = Type::TEXT;
const INT8: Type = Type::INT8;

/// The server's own bound on each of the gateway's statements
/// (`statement_timeout`), below [`CALL_TIMEOUT`]: a statement that waits
/// (for a lock another session holds, say) is cancelled by the server
/// before the gateway gives up on it, so it cannot commit after its call
/// failed, and its connection comes back to the pool ready for the next
/// call.
const STATEMENT_TIMEOUT: Duration = Duration::from_millis(1500);

/// Connections per gateway process at most, unless `--store-connections`
/// says otherwise.
pub const DEFAULT_CONNECTIONS: usize = 16;

/// The migrations, in order; the schema's version is how many have run.
const MIGRATIONS: [&str; 1] = ["
CREATE TABLE idempotency_gateway_records (
    caller      BYTEA  NOT NULL,
    key         TEXT   NOT NULL,
    fingerprint BYTEA  NOT NULL,
    token       BYTEA,
    lease_until BIGINT,
    expires_at  BIGINT,
    outcome     BYTEA,
    stored_at   BIGINT,
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_gateway_records_expiry ON idempotency_gateway_records (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX idempotency_gateway_records_lease ON idempotency_gateway_records (lease_until) WHERE lease_until IS NOT NULL;
"];

/// The advisory lock key the migration holds ("idemgw" in ASCII).
pub const MIGRATION_LOCK: i64 = 0x6964_656d_6777;

/// Claims the row unless a live record holds it; then returns the row as
/// it was before (`won` false), its outcome only when it holds at most $7
/// bytes, and the outcome's size (`octet_length` reads a TOASTed value's
/// size without fetching it) — or nothing, when it was inserted by a claim
/// that committed after this statement's snapshot.
const CLAIM: Sql = Sql::new(
    "WITH claimed AS (
    INSERT INTO idempotency_gateway_records (caller, key, fingerprint, token, lease_until)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (caller, key) DO UPDATE SET
        fingerprint = EXCLUDED.fingerprint, token = EXCLUDED.token, lease_until = EXCLUDED.lease_until,
        expires_at = NULL, outcome = NULL, stored_at = NULL
    WHERE idempotency_gateway_records.expires_at IS NOT NULL AND idempotency_gateway_records.expires_at <= $6
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM claimed) AS won, r.fingerprint, r.token, r.lease_until, r.expires_at,
    CASE WHEN octet_length(r.outcome) <= $7::bigint THEN r.outcome END, r.stored_at,
    octet_length(r.outcome)::bigint
FROM (SELECT 1) AS one
LEFT JOIN idempotency_gateway_records r ON r.caller = $1 AND r.key = $2",
    &[BYTEA, TEXT, BYTEA, BYTEA, INT8, INT8, INT8],
);

const RENEW: Sql = Sql::new(
    "UPDATE idempotency_gateway_records SET lease_until = $4
    WHERE caller = $1 AND key = $2 AND token = $3",
    &[BYTEA, TEXT, BYTEA, INT8],
);

const FINISH: Sql = Sql::new(
    "UPDATE idempotency_gateway_records
    SET token = NULL, lease_until = NULL, expires_at = $4, outcome = $5, stored_at = $6
    WHERE caller = $1 AND key = $2 AND token = $3",
    SETTLE_TYPES,
);

const RELEASE: Sql = Sql::new(
    "DELETE FROM idempotency_gateway_records WHERE caller = $1 AND key = $2 AND token = $3",
    &[BYTEA, TEXT, BYTEA],
);

const EXPIRE_LEASE: Sql = Sql::new(
    "UPDATE idempotency_gateway_records
    SET token = NULL, lease_until = NULL, expires_at = $4, outcome = $5, stored_at = $6
    WHERE caller = $1 AND key = $2 AND token = $3 AND lease_until <= $7",
    &[BYTEA, TEXT, BYTEA, INT8, BYTEA, INT8, INT8],
);

/// [`FINISH`]'s: caller, key, token, expiry, outcome, now. [`EXPIRE_LEASE`]
/// takes now once more, as `$7`, so that the two never have the same
/// parameters: a misconfigured pooler that binds one process's prepared
/// statement to another's of the same name then fails the call instead of
/// running the other statement.
const SETTLE_TYPES: &[Type] = &[BYTEA, TEXT, BYTEA, INT8, BYTEA, INT8];

const READ: Sql = Sql::new(
    "SELECT fingerprint, token, lease_until, expires_at, outcome, stored_at
    FROM idempotency_gateway_records WHERE caller = $1 AND key = $2",
    &[BYTEA, TEXT],
);

/// The size of a record's stored answer, without fetching it.
const SIZE: Sql = Sql::new(
    "SELECT octet_length(outcome)::bigint FROM idempotency_gateway_records
    WHERE caller = $1 AND key = $2",
    &[BYTEA, TEXT],
);

/// One batch of expired done records.
const SWEEP_EXPIRED: Sql = Sql::new(
    "DELETE FROM idempotency_gateway_records WHERE (caller, key) IN
    (SELECT caller, key FROM idempotency_gateway_records
     WHERE expires_at IS NOT NULL AND expires_at <= $1 LIMIT 100 FOR UPDATE SKIP LOCKED)",
    &[INT8],
);

/// One batch of lapsed claims, turned into "outcome unknown".
const SWEEP_LAPSED: Sql = Sql::new(
    "UPDATE idempotency_gateway_records
    SET token = NULL, lease_until = NULL, expires_at = $2, outcome = $3, stored_at = $1
    WHERE (caller, key) IN
    (SELECT caller, key FROM idempotency_gateway_records
     WHERE lease_until IS NOT NULL AND lease_until <= $1 LIMIT 100 FOR UPDATE SKIP LOCKED)",
    &[INT8, INT8, BYTEA],
);

/// The readiness probe's.
const PING: Sql = Sql::new("SELECT 1", &[]);

/// The server's clock, in milliseconds since the epoch.
const CLOCK: Sql = Sql::new(
    "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
    &[],
);

/// The session's `synchronous_commit`.
const SYNCHRONOUS_COMMIT: Sql = Sql::new("SHOW synchronous_commit", &[]);

/// A statement and the types of its parameters, `$1` first: prepared with
/// them, or sent with them unnamed ([`Statements`]).
struct Sql {
    text: &'static str,
    types: &'static [Type],
}

impl Sql {
    const fn new(text: &'static str, types: &'static [Type]) -> Self {
        Self { text, types }
    }

    /// `values` paired with the statement's types.
    fn typed<'a>(&self, values: &[&'a (dyn ToSql + Sync)]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
        debug_assert_eq!(values.len(), self.types.len(), "{}", self.text);
        values
            .iter()
            .copied()
            .zip(self.types.iter().cloned())
            .collect()
    }
}

/// How the store's statements reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Statements {
    /// Prepared once per connection and cached, then run with their values:
    /// the server parses and plans each statement once per connection. For
    /// a server reached directly or through a pooler in session mode.
    Prepared,
    /// Sent with their values as unnamed statements, in one round trip,
    /// and planned every time: a pooler in transaction mode may run each
    /// statement on another server connection, where a statement prepared
    /// on the first is missing, or another process's statement has its
    /// name. About 0.6 times the forwards a second of
    /// [`Statements::Prepared`] on the benchmark machine
    /// (docs/performance.md).
    Unnamed,
}

/// How the store connects, besides the URL.
#[derive(Clone, Debug)]
pub struct Options {
    /// PEM certificates trusted for TLS, besides the platform's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// How statements reach the server (`--store-pooler`).
    pub statements: Statements,
    /// Connections at most (`--store-connections`).
    pub connections: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ca_file: None,
            statements: Statements::Prepared,
            connections: DEFAULT_CONNECTIONS,
        }
    }
}

/// A PostgreSQL-backed store.
pub struct PostgresStore {
    pool: Pool,
    statements: Statements,
}

use super::sql_ms as ms;

/// A PostgreSQL error in words, without the connection string.
fn store_error(error: &tokio_postgres::Error) -> StoreError {
    let hint = error.code().and_then(hint).unwrap_or_default();
    StoreError(format!(
        "PostgreSQL: {}{hint}",
        crate::shared::http_error::describe(error)
    ))
}

/// What to do about an error: a server out of connections, or what a
/// pooler in transaction mode causes to prepared statements (a statement
/// missing on the server connection the pooler chose, one of that name
/// there already (another client's), or a statement bound with the values
/// of another of its name).
fn hint(code: &tokio_postgres::error::SqlState) -> Option<&'static str> {
    use tokio_postgres::error::SqlState;
    if *code == SqlState::TOO_MANY_CONNECTIONS {
        return Some(
            "; PostgreSQL has no connection left for the gateway: each gateway opens up to \
             --store-connections (16 by default), so lower it, raise the server's \
             max_connections, or put a pooler in front (--store-pooler)",
        );
    }
    [
        SqlState::INVALID_SQL_STATEMENT_NAME,
        SqlState::DUPLICATE_PSTATEMENT,
        // Bound with another statement's values: their number, or a
        // value that is not of the other's type.
        SqlState::PROTOCOL_VIOLATION,
        SqlState::INVALID_BINARY_REPRESENTATION,
        SqlState::CHARACTER_NOT_IN_REPERTOIRE,
    ]
    .contains(code)
    .then_some(
        "; a prepared statement was missing or not the gateway's: if the gateway reaches \
         PostgreSQL through a pooler in transaction mode (PgBouncer), run it with \
         --store-pooler transaction",
    )
}

/// Whether the configuration names only loopback hosts or Unix sockets,
/// where TLS is optional; anywhere else it is required unless the URL says
/// otherwise (`sslmode=disable` or `prefer`).
fn local_only(config: &tokio_postgres::Config) -> bool {
    config.get_hosts().iter().all(|host| match host {
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        Host::Unix(_) => true,
    })
}

/// The hook that runs on every new connection: `synchronous_commit=off`
/// becomes `on` (which, without synchronous standbys, is a local flush).
/// Every other value (`local`, `remote_write`, `on`, `remote_apply`) keeps
/// a commit across a crash of the server and is left as configured.
///
/// With prepared statements it also bounds each statement on the server
/// ([`STATEMENT_TIMEOUT`]); not through a pooler in transaction
/// mode, where a session's setting stays on whichever server connection ran
/// it (the README asks for it on the role there).
fn session_settings(statements: Statements) -> Hook {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let bounded = statements == Statements::Prepared;
    Hook::async_fn(move |client, _| {
        Box::pin(async move {
            let setting: String = client
                .query_typed_one(SYNCHRONOUS_COMMIT.text, &[])
                .await
                .and_then(|row| row.try_get(0))
                .map_err(HookError::Backend)?;
            if bounded {
                client
                    .batch_execute(&format!(
                        "SET statement_timeout TO {}",
                        STATEMENT_TIMEOUT.as_millis()
                    ))
                    .await
                    .map_err(HookError::Backend)?;
            }
            if setting == "off" {
                client
                    .batch_execute("SET synchronous_commit TO on")
                    .await
                    .map_err(HookError::Backend)?;
                WARNED.call_once(|| {
                    tracing::warn!(
                        "PostgreSQL's synchronous_commit is off for the gateway's user or \
                         database; the gateway's sessions use on, because a claim lost in a \
                         crash of the server would be forwarded again. Through a pooler in \
                         transaction mode a session's setting does not hold: set it for the \
                         role (ALTER ROLE ... SET synchronous_commit = on)"
                    );
                });
            }
            Ok(())
        })
    })
}

/// TLS to the server: the platform's roots and those in `--store-ca-file`.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, StoreError> {
    let roots = crate::gateway::tls::roots(ca_file, "--store-ca-file").map_err(StoreError)?;
    crate::gateway::tls::client_config(roots).map_err(StoreError)
}

/// Opens the pool's connections: with the password read from
/// `--store-password-file` at that moment, when one is given.
struct Connector {
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    password: Option<PasswordFile>,
}

type Connecting<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    (tokio_postgres::Client, tokio::task::JoinHandle<()>),
                    tokio_postgres::Error,
                >,
            > + Send
            + 'a,
    >,
>;

impl deadpool_postgres::Connect for Connector {
    fn connect(&self, config: &tokio_postgres::Config) -> Connecting<'_> {
        let mut config = config.clone();
        if let Some(file) = &self.password {
            config.password(file.current());
        }
        let tls = self.tls.clone();
        Box::pin(async move {
            let (client, connection) = config.connect(tls).await?;
            // A connection that breaks fails the call that uses it, and the
            // pool replaces it; one that breaks while idle is said here.
            let driver = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!("a PostgreSQL connection ended: {}", store_error(&e).0);
                }
            });
            Ok((client, driver))
        })
    }
}

impl PostgresStore {
    /// Connects to `url`, checks that the server answers and migrates the
    /// schema. TLS is verified against the platform's roots and the
    /// certificates in `ca_file`; without an `sslmode` in the URL it is
    /// required except on loopback. `options.statements` says how
    /// statements reach the server (behind a pooler in transaction mode,
    /// unnamed); at most `options.connections` are open at once. With
    /// `password_file`, every connection opened after start-up reads its
    /// password from it again (the URL holds the start-up password).
    pub async fn connect(
        url: &str,
        options: &Options,
        password_file: Option<std::path::PathBuf>,
    ) -> Result<Self, StoreError> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|_| {
            StoreError(
                "the PostgreSQL URL is not valid (postgres://USER@HOST:PORT/DB[?sslmode=require])"
                    .to_owned(),
            )
        })?;
        if config.get_password().is_none()
            && let Some(password) = std::env::var_os("PGPASSWORD")
        {
            config.password(password.as_encoded_bytes());
        }
        if !url.contains("sslmode=") && !local_only(&config) {
            config.ssl_mode(SslMode::Require);
        }
        config.connect_timeout(CALL_TIMEOUT);
        config.application_name("idempotency-gateway");
        let tls =
            tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(options.ca_file.as_deref())?);
        let password = password_file.map(|path| {
            let first = config
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default();
            PasswordFile::new(path, first)
        });
        let manager = Manager::from_connect(
            config,
            Connector { tls, password },
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.connections)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(CALL_TIMEOUT))
            .recycle_timeout(Some(CALL_TIMEOUT))
            .post_create(session_settings(options.statements))
            .build()
            .map_err(|e| StoreError(format!("cannot build the PostgreSQL pool: {e}")))?;
        let store = Self {
            pool,
            statements: options.statements,
        };
        store.migrate().await?;
        store.check_clock().await;
        Ok(store)
    }

    /// The most connections this store opens at once
    /// (`--store-connections`).
    pub fn max_connections(&self) -> usize {
        self.pool.status().max_size
    }

    /// Warns when this host's clock and the server's are apart.
    async fn check_clock(&self) {
        let Ok(client) = self.client().await else {
            return;
        };
        let sent = skew::local_now_ms();
        let server = client.query_typed_one(CLOCK.text, &[]).await;
        let received = skew::local_now_ms();
        if let Some(server) = server
            .ok()
            .and_then(|row| row.try_get::<_, i64>(0).ok())
            .and_then(|ms| u64::try_from(ms).ok())
        {
            skew::warn_if_apart("PostgreSQL", sent, server, received);
        }
    }

    /// Brings the schema to the latest version, once across replicas.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(|e| store_error(&e))?;
        // A migration may take longer than a call (an index on a large
        // table): the session's statement_timeout is for calls.
        transaction
            .batch_execute("SET LOCAL statement_timeout TO 0")
            .await
            .map_err(|e| store_error(&e))?;
        transaction
            .execute_typed(
                "SELECT pg_advisory_xact_lock($1)",
                &[(&MIGRATION_LOCK, INT8)],
            )
            .await
            .map_err(|e| store_error(&e))?;
        transaction
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS idempotency_gateway_schema (version INTEGER NOT NULL)",
            )
            .await
            .map_err(|e| store_error(&e))?;
        let version: i32 = transaction
            .query_typed_opt("SELECT version FROM idempotency_gateway_schema", &[])
            .await
            .map_err(|e| store_error(&e))?
            .map_or(0, |row| row.get(0));
        let known = MIGRATIONS.len() as i32;
        if version > known {
            return Err(StoreError(format!(
                "the PostgreSQL schema is at version {version}, newer than this gateway knows ({known}); run a newer gateway"
            )));
        }
        for migration in &MIGRATIONS[version as usize..] {
            transaction
                .batch_execute(migration)
                .await
                .map_err(|e| store_error(&e))?;
        }
        if version == 0 {
            transaction
                .execute_typed(
                    "INSERT INTO idempotency_gateway_schema (version) VALUES ($1)",
                    &[(&known, Type::INT4)],
                )
                .await
        } else {
            transaction
                .execute_typed(
                    "UPDATE idempotency_gateway_schema SET version = $1",
                    &[(&known, Type::INT4)],
                )
                .await
        }
        .map_err(|e| store_error(&e))?;
        transaction.commit().await.map_err(|e| store_error(&e))
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => store_error(&e),
            deadpool_postgres::PoolError::Timeout(_) => {
                StoreError("PostgreSQL did not answer in time (no connection)".to_owned())
            }
            other => StoreError(format!("PostgreSQL: {other}")),
        })
    }

    /// Runs `call` on a pooled connection, the whole within
    /// [`CALL_TIMEOUT`] (the wait for a connection included). A connection
    /// whose call ran out of time is closed, not put back: its statement
    /// may still be waiting on the server (for a lock, say), and every call
    /// given that connection next would queue behind it.
    async fn on_connection<T>(
        &self,
        allowed: Duration,
        call: impl AsyncFnOnce(&mut deadpool_postgres::Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let deadline = tokio::time::Instant::now() + allowed;
        let late = || StoreError("PostgreSQL did not answer in time".to_owned());
        let mut client = tokio::time::timeout_at(deadline, self.client())
            .await
            .map_err(|_| late())??;
        match tokio::time::timeout_at(deadline, call(&mut client)).await {
            Ok(result) => result,
            Err(_) => {
                drop(deadpool_postgres::Client::take(client));
                Err(late())
            }
        }
    }

    /// Runs `statement` on a pooled connection ([`Self::on_connection`]);
    /// its rows.
    async fn query(
        &self,
        statement: &Sql,
        values: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        Ok(self.run(statement, values, 0).await?.rows)
    }

    /// Runs `statement` on a pooled connection ([`Self::on_connection`]);
    /// the rows it changed.
    async fn execute(
        &self,
        statement: &Sql,
        values: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        Ok(self.run(statement, values, 0).await?.changed)
    }

    /// Runs `statement`, which moves `bytes` of an answer to or from the
    /// server, on a pooled connection ([`Self::on_connection`]). A large
    /// call ([`is_large`]) is given the time to move them ([`allowance`]),
    /// and runs in a transaction of its own whose `statement_timeout` fits
    /// it.
    async fn run(
        &self,
        statement: &Sql,
        values: &[&(dyn ToSql + Sync)],
        bytes: usize,
    ) -> Result<Ran, StoreError> {
        let allowed = allowance(bytes);
        self.on_connection(allowed, async |client| {
            let prepared = match self.statements {
                Statements::Prepared => Some(prepare(client, statement).await?),
                Statements::Unnamed => None,
            };
            if !is_large(bytes) {
                let connection: &tokio_postgres::Client = client;
                return run_on(connection, prepared.as_ref(), statement, values).await;
            }
            let on_server = allowed.saturating_sub(CALL_TIMEOUT - STATEMENT_TIMEOUT);
            let transaction = client.transaction().await.map_err(|e| store_error(&e))?;
            transaction
                .batch_execute(&format!(
                    "SET LOCAL statement_timeout TO {}",
                    on_server.as_millis()
                ))
                .await
                .map_err(|e| store_error(&e))?;
            let inner: &tokio_postgres::Transaction<'_> = &transaction;
            let ran = run_on(inner, prepared.as_ref(), statement, values).await?;
            transaction.commit().await.map_err(|e| store_error(&e))?;
            Ok(ran)
        })
        .await
    }

    /// Runs `statement` ([`FINISH`] or [`EXPIRE_LEASE`]: the holder's claim
    /// turned into a final record) with their shared parameters; returns
    /// the rows changed.
    async fn settle(
        &self,
        statement: &Sql,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
        now: u64,
    ) -> Result<u64, StoreError> {
        let outcome = encode_outcome(outcome);
        let now = ms(now);
        let values: [&(dyn ToSql + Sync); 7] = [
            &&id.caller[..],
            &id.key,
            &&token[..],
            &ms(expires_at),
            &outcome,
            &now,
            &now,
        ];
        // FINISH takes `now` once, EXPIRE_LEASE twice.
        let ran = self
            .run(statement, &values[..statement.types.len()], outcome.len())
            .await?;
        Ok(ran.changed)
    }

    /// The record, unless its stored answer is over [`INLINE_OUTCOME`]
    /// bytes (asked first: `octet_length` does not fetch it); `None` then,
    /// and when there is none.
    async fn read_small(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let key: [&(dyn ToSql + Sync); 2] = [&&id.caller[..], &id.key];
        let size = self.query(&SIZE, &key).await?;
        let Some(size) = size.first() else {
            return Ok(None);
        };
        let size: Option<i64> = size.try_get(0).map_err(|_| corrupt())?;
        let bytes = size.map_or(Ok(0), usize::try_from).map_err(|_| corrupt())?;
        if is_large(bytes) {
            return Ok(None);
        }
        self.read(id, bytes).await
    }

    /// The record, read in the time an answer of `bytes` needs.
    async fn read(&self, id: &RecordId, bytes: usize) -> Result<Option<Record>, StoreError> {
        let key: [&(dyn ToSql + Sync); 2] = [&&id.caller[..], &id.key];
        let ran = self.run(&READ, &key, bytes).await?;
        ran.rows.first().map(|row| record(row, 0)).transpose()
    }
}

/// What a statement returned: its rows, and how many rows it changed.
struct Ran {
    rows: Vec<tokio_postgres::Row>,
    changed: u64,
}

/// Runs `statement` on a connection or a transaction: `prepared` when
/// there is one, else unnamed with its types.
async fn run_on(
    on: &impl tokio_postgres::GenericClient,
    prepared: Option<&tokio_postgres::Statement>,
    statement: &Sql,
    values: &[&(dyn ToSql + Sync)],
) -> Result<Ran, StoreError> {
    use futures_util::TryStreamExt;
    let stream = match prepared {
        Some(prepared) => on.query_raw(prepared, values.iter().copied()).await,
        None => {
            on.query_typed_raw(statement.text, statement.typed(values))
                .await
        }
    }
    .map_err(|e| store_error(&e))?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    while let Some(row) = stream.try_next().await.map_err(|e| store_error(&e))? {
        rows.push(row);
    }
    let changed = stream.rows_affected().unwrap_or(0);
    Ok(Ran { rows, changed })
}

/// `statement` prepared on `client`'s connection (cached there).
async fn prepare(
    client: &deadpool_postgres::Client,
    statement: &Sql,
) -> Result<tokio_postgres::Statement, StoreError> {
    client
        .prepare_typed_cached(statement.text, statement.types)
        .await
        .map_err(|e| store_error(&e))
}

/// The record in `row`, whose columns from `first` on are `fingerprint,
/// token, lease_until, expires_at, outcome, stored_at`.
fn corrupt() -> StoreError {
    StoreError("corrupt record in PostgreSQL".to_owned())
}

fn record(row: &tokio_postgres::Row, first: usize) -> Result<Record, StoreError> {
    let get = |i: usize| first + i;
    let fingerprint: Vec<u8> = row.try_get(get(0)).map_err(|_| corrupt())?;
    let fingerprint: [u8; 32] = fingerprint.try_into().map_err(|_| corrupt())?;
    let token: Option<Vec<u8>> = row.try_get(get(1)).map_err(|_| corrupt())?;
    let lease_until: Option<i64> = row.try_get(get(2)).map_err(|_| corrupt())?;
    let expires_at: Option<i64> = row.try_get(get(3)).map_err(|_| corrupt())?;
    let outcome: Option<Vec<u8>> = row.try_get(get(4)).map_err(|_| corrupt())?;
    let stored_at: Option<i64> = row.try_get(get(5)).map_err(|_| corrupt())?;
    let non_negative = |v: i64| u64::try_from(v).map_err(|_| corrupt());
    match (token, lease_until, expires_at, outcome) {
        (Some(token), Some(lease_until), None, None) => Ok(Record::InFlight {
            fingerprint,
            token: token.try_into().map_err(|_| corrupt())?,
            lease_until: non_negative(lease_until)?,
        }),
        (None, None, Some(expires_at), Some(outcome)) => Ok(Record::Done {
            fingerprint,
            outcome: decode_outcome(outcome)?,
            expires_at: non_negative(expires_at)?,
            stored_at: stored_at.map(non_negative).transpose()?,
        }),
        _ => Err(corrupt()),
    }
}

impl Store for PostgresStore {
    async fn claim(
        &self,
        id: &RecordId,
        fingerprint: &[u8; 32],
        token: &Token,
        lease_until: u64,
        now: u64,
    ) -> Result<Claimed, StoreError> {
        // A claim that loses to one committed after its snapshot sees no
        // row; the next statement does.
        for _ in 0..3 {
            let rows = self
                .query(
                    &CLAIM,
                    &[
                        &&id.caller[..],
                        &id.key,
                        &&fingerprint[..],
                        &&token[..],
                        &ms(lease_until),
                        &ms(now),
                        &i64::try_from(INLINE_OUTCOME).unwrap_or(i64::MAX),
                    ],
                )
                .await?;
            let row = rows
                .first()
                .ok_or_else(|| StoreError("PostgreSQL returned no row for a claim".to_owned()))?;
            if row.get::<_, bool>(0) {
                return Ok(Claimed::Won);
            }
            let present: Option<Vec<u8>> = row.try_get(1).map_err(|_| corrupt())?;
            let Some(present) = present else {
                continue;
            };
            let size: Option<i64> = row.try_get(7).map_err(|_| corrupt())?;
            let expires_at: Option<i64> = row.try_get(4).map_err(|_| corrupt())?;
            let outcome: Option<&[u8]> = row.try_get(5).map_err(|_| corrupt())?;
            if let (Some(expires_at), None, Some(size)) = (expires_at, outcome, size) {
                if u64::try_from(expires_at).is_ok_and(|at| at <= now) {
                    continue;
                }
                let fingerprint: [u8; 32] = present.try_into().map_err(|_| corrupt())?;
                let size = usize::try_from(size).map_err(|_| corrupt())?;
                return Ok(Claimed::Large { fingerprint, size });
            }
            let existing = record(row, 1)?;
            if !existing.is_live(now) {
                // Expired, and taken over by a claim that committed while
                // this one waited: look again.
                continue;
            }
            return Ok(match existing {
                // Our own claim, written by a call whose answer was lost.
                Record::InFlight { token: holder, .. } if holder == *token => Claimed::Won,
                other => Claimed::Existing(other),
            });
        }
        Err(StoreError(
            "the record changed under three claims in a row".to_owned(),
        ))
    }

    async fn renew(
        &self,
        id: &RecordId,
        token: &Token,
        lease_until: u64,
    ) -> Result<bool, StoreError> {
        let changed = self
            .execute(
                &RENEW,
                &[&&id.caller[..], &id.key, &&token[..], &ms(lease_until)],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn finish(
        &self,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let changed = self
            .settle(&FINISH, id, token, outcome, expires_at, now)
            .await?;
        Ok(changed == 1)
    }

    async fn release(&self, id: &RecordId, token: &Token) -> Result<bool, StoreError> {
        let changed = self
            .execute(&RELEASE, &[&&id.caller[..], &id.key, &&token[..]])
            .await?;
        Ok(changed == 1)
    }

    async fn expire_lease(
        &self,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
        now: u64,
    ) -> Result<Option<Record>, StoreError> {
        self.settle(&EXPIRE_LEASE, id, token, outcome, expires_at, now)
            .await?;
        self.read_small(id).await
    }

    /// In the time `size` needs ([`allowance`]).
    async fn load(
        &self,
        id: &RecordId,
        now: u64,
        size: usize,
    ) -> Result<Option<Record>, StoreError> {
        let record = self.read(id, size).await?;
        Ok(record.filter(|record| record.is_live(now)))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.query(&PING, &[]).await.map(|_| ())
    }

    async fn sweep(&self, now: u64, unknown_ttl: u64) -> Result<u64, StoreError> {
        // In batches, each its own statement and transaction, with a pause
        // after each: no request waits behind the whole backlog, and
        // replicas sweeping at once skip each other's rows.
        let unknown = encode_outcome(&Outcome::Unknown(super::LAPSED_LEASE_DETAIL.to_owned()));
        let (now, until) = (ms(now), ms(now.saturating_add(unknown_ttl)));
        let expired_params: [&(dyn ToSql + Sync); 1] = [&now];
        let lapsed_params: [&(dyn ToSql + Sync); 3] = [&now, &until, &unknown];
        let expired =
            super::paced_batches(|| self.execute(&SWEEP_EXPIRED, &expired_params)).await?;
        let lapsed = super::paced_batches(|| self.execute(&SWEEP_LAPSED, &lapsed_params)).await?;
        Ok(expired + lapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_statements_take_one_batch() {
        let limit = format!(
            "LIMIT {} FOR UPDATE SKIP LOCKED)",
            super::super::SWEEP_BATCH
        );
        for sweep in [&SWEEP_EXPIRED, &SWEEP_LAPSED] {
            assert!(sweep.text.ends_with(&limit), "{}", sweep.text);
        }
    }

    /// The highest `$n` in `text`.
    fn parameters(text: &str) -> usize {
        text.split('$')
            .skip(1)
            .filter_map(|after| {
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                after[..digits].parse().ok()
            })
            .max()
            .unwrap_or(0)
    }

    /// Each statement names a type for every parameter it has, so its
    /// values can be sent unnamed, and no more: a type past its last `$n`
    /// would be a value the statement ignores.
    #[test]
    fn every_statement_has_a_type_for_each_parameter() {
        let all = [
            &CLAIM,
            &RENEW,
            &FINISH,
            &RELEASE,
            &EXPIRE_LEASE,
            &READ,
            &SIZE,
            &SWEEP_EXPIRED,
            &SWEEP_LAPSED,
            &PING,
            &CLOCK,
            &SYNCHRONOUS_COMMIT,
        ];
        for statement in all {
            assert_eq!(
                parameters(statement.text),
                statement.types.len(),
                "{}",
                statement.text
            );
        }
        assert_eq!(parameters("$1 $12 $3::bigint"), 12);
    }

    /// No statement that writes has the same parameter types as another
    /// prepared statement, so a pooler that binds one to another's values
    /// (another process's statement of the same name) makes the call fail
    /// before it runs instead of writing. Statements that only read may
    /// share theirs: such a mix-up writes nothing, and the rows it returns
    /// do not decode as the other's. (The clock and `synchronous_commit`
    /// queries are always sent unnamed.)
    #[test]
    fn no_prepared_statement_that_writes_takes_another_s_parameters() {
        let writes = [
            &CLAIM,
            &RENEW,
            &FINISH,
            &RELEASE,
            &EXPIRE_LEASE,
            &SWEEP_EXPIRED,
            &SWEEP_LAPSED,
        ];
        let reads = [&READ, &SIZE, &PING];
        for (i, a) in writes.iter().enumerate() {
            for b in writes[i + 1..].iter().chain(&reads) {
                assert_ne!(a.types, b.types, "{} and {}", a.text, b.text);
            }
        }
        for statement in reads {
            assert!(statement.text.trim_start().starts_with("SELECT"));
        }
    }

    #[test]
    fn tls_is_required_away_from_loopback() {
        let config = |url: &str| tokio_postgres::Config::from_str(url).unwrap();
        assert!(local_only(&config("postgres://gw@127.0.0.1:5432/db")));
        assert!(local_only(&config("postgres://gw@localhost/db")));
        assert!(!local_only(&config("postgres://gw@db.internal:5432/db")));
        assert!(!local_only(&config("postgres://gw@10.0.0.5/db")));
    }
}
