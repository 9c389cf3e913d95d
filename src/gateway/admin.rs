//! The admin listener (only with `--admin-listen`): `/healthz` (the process
//! answers), `/readyz` (the store answers) and `/metrics` (Prometheus text).
//!
//! Served within limits of its own, since a listener without them lets a
//! crowd of idle or half-sent connections hold descriptors the proxy needs:
//! at most [`MAX_CONNECTIONS`] open (past it a new one is closed at once),
//! a request head within `--header-timeout` of the last answer, at most
//! [`super::server::MAX_HEAD`] of it, and each connection closed
//! gracefully after [`CONNECTION_TIME`] (a scraper reconnects).

use super::proxy::Gateway;
use super::server::MAX_HEAD;
use super::store::{AnyStore, Store};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Admin connections open at once; counted in the descriptor reserve
/// (`super::descriptors::RESERVED`).
pub const MAX_CONNECTIONS: usize = 16;

/// How long an admin connection is kept; then a request in progress gets
/// [`CLOSING_TIME`] to finish and the connection is closed.
pub const CONNECTION_TIME: Duration = Duration::from_secs(60);

/// What a request in progress on an admin connection being closed gets.
pub const CLOSING_TIME: Duration = Duration::from_secs(5);

/// Serves the admin routes on `listener` within the limits above until
/// `stopped` holds a deadline.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    mut stopped: watch::Receiver<Option<tokio::time::Instant>>,
    header_timeout: Duration,
) {
    let service = TowerToHyperService::new(router(gateway));
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD);
    let builder = Arc::new(builder);
    loop {
        let accepted = tokio::select! {
            _ = stopped.wait_for(Option::is_some) => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            // Out of descriptors: the proxy's listener says so; wait.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        // Without a place, dropping the stream closes it.
        let Ok(place) = places.clone().try_acquire_owned() else {
            continue;
        };
        let (service, builder) = (service.clone(), builder.clone());
        tokio::spawn(async move {
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            if tokio::time::timeout(CONNECTION_TIME, connection.as_mut())
                .await
                .is_err()
            {
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(CLOSING_TIME, connection).await;
            }
            drop(place);
        });
    }
}

/// The admin routes.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(gateway)
}

async fn ready(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    match gateway.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    gateway.metrics.set_buffered(gateway.buffered_bytes());
    gateway.metrics.set_replaying(gateway.replaying_bytes());
    gateway.metrics.set_forwards(gateway.forwards.len());
    if let AnyStore::Memory(store) = gateway.store() {
        gateway.metrics.set_memory_store(store.held_bytes());
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gateway.metrics.render(),
    )
}
