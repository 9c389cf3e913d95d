//! The admin listener (only with `--admin-listen`): `/healthz` (the process
//! answers), `/readyz` (the store answers) and `/metrics` (Prometheus text).

use super::proxy::Gateway;
use super::store::{AnyStore, Store};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;

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
