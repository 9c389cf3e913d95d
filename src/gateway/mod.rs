//! `idempotency-gateway`: a reverse proxy that gives any HTTP API
//! Idempotency-Key semantics. Compiled only with the `gateway` feature
//! (on by default), so release builds of the client carry none of it.
//!
//! [`proxy`] is the service, [`store`] the records (memory, SQLite, Redis),
//! [`admin`] the health and metrics endpoints, [`config`] the flags.

pub mod admin;
pub mod clock;
pub mod config;
pub mod identity;
pub mod key;
pub mod metrics;
pub mod problem;
pub mod proxy;
pub mod store;

use config::StoreSpec;
use proxy::Gateway;
use std::sync::Arc;
use std::time::Duration;
use store::cached::Cached;
use store::{AnyStore, Store};
use tokio::net::TcpListener;

/// Opens the store named by `spec`.
pub async fn open_store(
    spec: &StoreSpec,
    durability: store::sqlite::Durability,
) -> Result<AnyStore, store::StoreError> {
    Ok(match spec {
        StoreSpec::Memory => AnyStore::Memory(store::memory::MemoryStore::default()),
        StoreSpec::Sqlite(path) => AnyStore::Sqlite(Cached::new(store::sqlite::SqliteStore::open(
            path, durability,
        )?)),
        StoreSpec::Redis(url) => AnyStore::Redis(Box::new(Cached::new(
            store::redis::RedisStore::connect(url).await?,
        ))),
    })
}

/// Serves until `shutdown` completes, then stops accepting, lets in-flight
/// forwards finish and be stored for up to `shutdown_timeout`, and returns.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    shutdown_timeout: Duration,
) -> std::io::Result<()> {
    // `None` while serving; on shutdown, the one deadline that bounds both
    // the open requests and the forwards that outlive their clients.
    let (stop, stopped) = tokio::sync::watch::channel(None::<tokio::time::Instant>);
    let sweeper = tokio::spawn(sweep(gateway.clone(), stopped.clone()));
    let admin = admin.map(|listener| {
        let router = admin::router(gateway.clone());
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let until_stopped = async move {
                let _ = stopped.wait_for(Option::is_some).await;
            };
            axum::serve(listener, router)
                .with_graceful_shutdown(until_stopped)
                .await
        })
    });
    let app = axum::Router::new()
        .fallback(proxy::handle)
        .with_state(gateway.clone());
    let signalled = {
        let stop = stop.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; waiting for requests in flight");
            let _ = stop.send(Some(tokio::time::Instant::now() + shutdown_timeout));
        }
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(signalled);
    let mut deadline_rx = stopped.clone();
    let deadline = async move {
        let until = deadline_rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|d| *d);
        match until {
            Some(until) => tokio::time::sleep_until(until).await,
            // The sender lives as long as this function: no deadline, no end.
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = server => result?,
        () = deadline => tracing::warn!("shutdown timeout reached with requests still open"),
    }
    // Forwards whose clients went away still finish and are stored, within
    // what is left of the same deadline.
    let deadline = stopped
        .borrow()
        .unwrap_or_else(|| tokio::time::Instant::now() + shutdown_timeout);
    gateway.forwards.close();
    if tokio::time::timeout_at(deadline, gateway.forwards.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "shutdown timeout reached with forwards in flight; their keys become outcome unknown"
        );
    }
    let _ = stop.send(Some(tokio::time::Instant::now()));
    sweeper.abort();
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    Ok(())
}

/// Deletes expired records now and then (expired ones are never replayed
/// even before this runs).
async fn sweep(
    gateway: Arc<Gateway>,
    mut stopped: tokio::sync::watch::Receiver<Option<tokio::time::Instant>>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = stopped.wait_for(Option::is_some) => return,
        }
        if let Err(error) = gateway.store().sweep(gateway.now_ms()).await {
            tracing::warn!(%error, "sweeping expired records failed");
        }
    }
}
