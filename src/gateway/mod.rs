//! `idempotency-gateway`: a reverse proxy that gives any HTTP API
//! Idempotency-Key semantics. Compiled only with the `gateway` feature
//! (on by default), so release builds of the client carry none of it.
//!
//! One module per concern: [`config`] (the flags), [`server`] (the
//! listener and its connection limits; [`descriptors`] fits them to the
//! process's descriptor limit, [`head_timer`] times a request head from
//! its first byte), [`proxy`] (the service: claim, forward,
//! record, replay; [`unsplit`] keeps a claim, its forward and its record
//! one unit when the client goes away), with [`target`] (the request
//! target, checked and forwarded byte for byte), [`hop`] (hop-by-hop
//! headers), [`caller`] and [`jwt`] (who is asking), [`key`] (the key
//! header), [`body`] (request bodies within limits), [`fingerprint`],
//! [`upstream`] (the client to the API behind; [`upstream_pool`] the
//! forwards' own connections), [`problem`] (every failure as
//! problem+json); [`store`] (the records: memory, SQLite, Redis,
//! PostgreSQL), [`admin`] and [`metrics`] (health and metrics), [`log`]
//! (the log's writer), [`clock`].

pub mod activity;
pub mod admin;
pub mod body;
pub mod caller;
pub mod clock;
pub mod config;
pub mod descriptors;
pub mod fingerprint;
pub mod head_timer;
pub mod hop;
pub mod jwt;
pub mod key;
pub mod linger;
pub mod log;
pub mod log_format;
pub mod metrics;
pub mod problem;
pub mod proxy;
pub mod server;
pub mod store;
pub mod target;
pub mod tls;
pub mod unsplit;
pub mod upstream;
pub mod upstream_pool;

pub use server::{Limits, serve};

use config::StoreSpec;
use store::AnyStore;
use store::cached::Cached;

/// How a store is opened, besides where it is.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// SQLite's durability.
    pub durability: store::sqlite::Durability,
    /// The records' TTL in milliseconds (Redis expires orphaned claims a
    /// TTL after their lease).
    pub ttl_ms: u64,
    /// How PostgreSQL is connected to (`--store-ca-file`, `--store-pooler`,
    /// `--store-connections`).
    pub postgres: store::postgres::Options,
    /// `--store-password-file` (PostgreSQL, Redis): read again for every
    /// new connection, so a rotated password needs no restart. The
    /// start-up password is in the store's URL.
    pub password_file: Option<std::path::PathBuf>,
    /// The memory store's bound on its records' bytes.
    pub memory_max_bytes: usize,
}

/// Opens the store named by `spec`.
pub async fn open_store(
    spec: &StoreSpec,
    options: &StoreOptions,
) -> Result<AnyStore, store::StoreError> {
    Ok(match spec {
        StoreSpec::Memory => {
            AnyStore::Memory(store::memory::MemoryStore::new(options.memory_max_bytes))
        }
        StoreSpec::Sqlite(path) => AnyStore::Sqlite(Cached::new(store::sqlite::SqliteStore::open(
            path,
            options.durability,
        )?)),
        StoreSpec::Redis(url) => AnyStore::Redis(Box::new(Cached::new(
            store::redis::RedisStore::connect(url, options.ttl_ms, options.password_file.clone())
                .await?,
        ))),
        StoreSpec::Postgres(url) => AnyStore::Postgres(Box::new(Cached::new(
            store::postgres::PostgresStore::connect(
                url,
                &options.postgres,
                options.password_file.clone(),
            )
            .await?,
        ))),
    })
}

/// Header maps for unit tests.
#[cfg(test)]
pub(crate) mod test_headers {
    use axum::http::{HeaderMap, HeaderName, HeaderValue};

    /// A map of static names and values, in order.
    pub(crate) fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }
}
