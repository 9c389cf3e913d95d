//! Prometheus metrics, served on the admin listener at `/metrics`:
//!
//! - `idempotency_gateway_requests_total{outcome}`: requests by outcome
//!   (`forwarded`, `replayed`, `conflict`, `mismatch`, `invalid`,
//!   `passed_through`, `store_error`, `outcome_unknown`, `unauthorized`,
//!   `overloaded`).
//! - `idempotency_gateway_connections_refused_total`: connections answered
//!   `503` over `--max-connections`.
//! - `idempotency_gateway_connections_reused_total`: idle connections closed
//!   at `--max-connections` to make room for a new one.
//! - `idempotency_gateway_connections_open`: client connections open now.
//! - `idempotency_gateway_forwards_in_flight`: claims being forwarded and
//!   recorded now, those whose client went away included (each holds its
//!   connection's place under `--max-connections` until it is done).
//! - `idempotency_gateway_buffered_bytes`: request-body bytes held now
//!   against `--max-buffered`.
//! - `idempotency_gateway_replaying_bytes`: replayed answers' bytes not yet
//!   written, held now against their own `--max-buffered`.
//! - `idempotency_gateway_memory_store_bytes`: with `--store memory`, the
//!   records' estimated size now, against `--memory-max-bytes` (0 with
//!   other stores).
//! - `idempotency_gateway_upstream_duration_seconds`: time to the upstream's
//!   complete answer (histogram).
//! - `idempotency_gateway_store_duration_seconds{operation}`: store calls
//!   (`claim`, `finish`, `release`, `renew`, `expire_lease`, `load`) (histogram).
//! - `idempotency_gateway_store_errors_total{operation}`: store calls that
//!   failed, by the same operations (a `finish` or `release` that failed
//!   is tried again in the background, each try counted).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// What happened to a request, for the counter and the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// Claimed and forwarded to the upstream.
    Forwarded,
    /// Answered from a stored record.
    Replayed,
    /// `409`: the key is in flight.
    Conflict,
    /// `422`: the key was used for another request.
    Mismatch,
    /// `400`/`413`: unusable key or body.
    Invalid,
    /// Not covered (method, or no key without `--require-key`): proxied as is.
    PassedThrough,
    /// `503`: the store failed before the claim.
    StoreError,
    /// `502`: the outcome is unknown (timeout, reset, expired lease).
    OutcomeUnknown,
    /// `401`: the caller could not be identified.
    Unauthorized,
    /// `503`: the request-body budget was spent, or as many upstream
    /// requests were in flight as the gateway sends at once.
    Overloaded,
}

impl RequestOutcome {
    /// Every outcome, in the order of their counters.
    pub const ALL: [RequestOutcome; 10] = [
        RequestOutcome::Forwarded,
        RequestOutcome::Replayed,
        RequestOutcome::Conflict,
        RequestOutcome::Mismatch,
        RequestOutcome::Invalid,
        RequestOutcome::PassedThrough,
        RequestOutcome::StoreError,
        RequestOutcome::OutcomeUnknown,
        RequestOutcome::Unauthorized,
        RequestOutcome::Overloaded,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Forwarded => "forwarded",
            RequestOutcome::Replayed => "replayed",
            RequestOutcome::Conflict => "conflict",
            RequestOutcome::Mismatch => "mismatch",
            RequestOutcome::Invalid => "invalid",
            RequestOutcome::PassedThrough => "passed_through",
            RequestOutcome::StoreError => "store_error",
            RequestOutcome::OutcomeUnknown => "outcome_unknown",
            RequestOutcome::Unauthorized => "unauthorized",
            RequestOutcome::Overloaded => "overloaded",
        }
    }
}

/// A timed store call, for the histogram's `operation` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOperation {
    /// `claim`.
    Claim,
    /// `finish`: the answer recorded.
    Finish,
    /// `release`: a claim given up before the forward.
    Release,
    /// `renew`: a live forward's lease extended.
    Renew,
    /// `expire_lease`: a lapsed claim turned into "outcome unknown".
    ExpireLease,
    /// `load`: a large stored answer read for its replay.
    Load,
}

impl StoreOperation {
    /// Every operation, in the order of their histograms.
    pub const ALL: [StoreOperation; 6] = [
        StoreOperation::Claim,
        StoreOperation::Finish,
        StoreOperation::Release,
        StoreOperation::Renew,
        StoreOperation::ExpireLease,
        StoreOperation::Load,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOperation::Claim => "claim",
            StoreOperation::Finish => "finish",
            StoreOperation::Release => "release",
            StoreOperation::Renew => "renew",
            StoreOperation::ExpireLease => "expire_lease",
            StoreOperation::Load => "load",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

/// The gateway's instruments. The labelled ones are looked up in their
/// families once, at start-up, and kept in arrays indexed by the label's
/// enum: a request then counts itself without hashing a label set or
/// taking the family's lock, and every series is exported (at 0) from the
/// start, so a rate over it is defined before its first event.
pub struct Metrics {
    registry: Registry,
    requests: [Counter; RequestOutcome::ALL.len()],
    upstream: Histogram,
    store: [Histogram; StoreOperation::ALL.len()],
    store_errors: [Counter; StoreOperation::ALL.len()],
    refused: Counter,
    reused: Counter,
    open: Gauge,
    buffered: Gauge,
    replaying: Gauge,
    memory_store: Gauge,
    forwards: Gauge,
}

/// An open connection, counted until dropped.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("idempotency_gateway");
        let requests = Family::<OutcomeLabel, Counter>::default();
        registry.register("requests", "Requests by outcome", requests.clone());
        // 0.5 ms to ~33 s.
        let upstream = Histogram::new(exponential_buckets(0.0005, 2.0, 17));
        registry.register(
            "upstream_duration_seconds",
            "Time to the upstream's complete answer",
            upstream.clone(),
        );
        let store = Family::<OperationLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register("store_duration_seconds", "Store operations", store.clone());
        let store_errors = Family::<OperationLabel, Counter>::default();
        registry.register(
            "store_errors",
            "Store operations that failed",
            store_errors.clone(),
        );
        let refused = Counter::default();
        registry.register(
            "connections_refused",
            format!(
                "Connections over --max-connections: answered 503, or closed unanswered while {} are being answered",
                super::server::MAX_REFUSING
            ),
            refused.clone(),
        );
        let reused = Counter::default();
        registry.register(
            "connections_reused",
            "Idle connections closed at --max-connections to make room for a new one",
            reused.clone(),
        );
        let open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open now",
            open.clone(),
        );
        let forwards = Gauge::default();
        registry.register(
            "forwards_in_flight",
            "Claims being forwarded and recorded now, those whose client went away included",
            forwards.clone(),
        );
        let buffered = Gauge::default();
        registry.register(
            "buffered_bytes",
            "Request-body bytes held now against --max-buffered",
            buffered.clone(),
        );
        let replaying = Gauge::default();
        registry.register(
            "replaying_bytes",
            "Replayed answers' bytes not yet written, held now against their own --max-buffered",
            replaying.clone(),
        );
        let memory_store = Gauge::default();
        registry.register(
            "memory_store_bytes",
            "Estimated size of the memory store's records, against --memory-max-bytes",
            memory_store.clone(),
        );
        Self {
            registry,
            requests: RequestOutcome::ALL.map(|outcome| {
                requests
                    .get_or_create(&OutcomeLabel {
                        outcome: outcome.as_str(),
                    })
                    .clone()
            }),
            upstream,
            store: StoreOperation::ALL.map(|operation| {
                store
                    .get_or_create(&OperationLabel {
                        operation: operation.as_str(),
                    })
                    .clone()
            }),
            store_errors: StoreOperation::ALL.map(|operation| {
                store_errors
                    .get_or_create(&OperationLabel {
                        operation: operation.as_str(),
                    })
                    .clone()
            }),
            refused,
            reused,
            open,
            buffered,
            replaying,
            memory_store,
            forwards,
        }
    }
}

impl Metrics {
    /// Counts one request.
    pub fn request(&self, outcome: RequestOutcome) {
        self.requests[outcome as usize].inc();
    }

    /// Counts a connection refused over the connection limit.
    pub fn connection_refused(&self) {
        self.refused.inc();
    }

    /// Counts an idle connection closed to make room for a new one.
    pub fn connection_reused(&self) {
        self.reused.inc();
    }

    /// Counts a connection as open until the result is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.open.inc();
        OpenConnection(self.open.clone())
    }

    /// Sets the request-body bytes held now.
    pub fn set_buffered(&self, bytes: usize) {
        self.buffered.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Sets the replayed answers' bytes not yet written.
    pub fn set_replaying(&self, bytes: usize) {
        self.replaying.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Sets the number of forwards in flight now.
    pub fn set_forwards(&self, forwards: usize) {
        self.forwards
            .set(i64::try_from(forwards).unwrap_or(i64::MAX));
    }

    /// Sets the memory store's records' size now.
    pub fn set_memory_store(&self, bytes: usize) {
        self.memory_store
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Records an upstream call's duration.
    pub fn upstream(&self, elapsed: Duration) {
        self.upstream.observe(elapsed.as_secs_f64());
    }

    /// Records a store operation's duration.
    pub fn store(&self, operation: StoreOperation, elapsed: Duration) {
        self.store[operation as usize].observe(elapsed.as_secs_f64());
    }

    /// Counts a store operation that failed.
    pub fn store_error(&self, operation: StoreOperation) {
        self.store_errors[operation as usize].inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_are_in_the_order_of_the_enums() {
        for (i, outcome) in RequestOutcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i, "{outcome:?}");
        }
        for (i, operation) in StoreOperation::ALL.iter().enumerate() {
            assert_eq!(*operation as usize, i, "{operation:?}");
        }
    }

    #[test]
    fn every_series_is_exported_from_the_start_and_counts_its_own_events() {
        let metrics = Metrics::default();
        let text = metrics.render();
        for outcome in RequestOutcome::ALL {
            let line = format!(
                "idempotency_gateway_requests_total{{outcome=\"{}\"}} 0\n",
                outcome.as_str()
            );
            assert!(text.contains(&line), "{line}");
        }
        for operation in StoreOperation::ALL {
            let line = format!(
                "idempotency_gateway_store_duration_seconds_count{{operation=\"{}\"}} 0\n",
                operation.as_str()
            );
            assert!(text.contains(&line), "{line}");
        }
        metrics.request(RequestOutcome::Replayed);
        metrics.request(RequestOutcome::Replayed);
        metrics.store(StoreOperation::Renew, Duration::from_millis(1));
        let text = metrics.render();
        assert!(text.contains("idempotency_gateway_requests_total{outcome=\"replayed\"} 2\n"));
        assert!(text.contains("idempotency_gateway_requests_total{outcome=\"forwarded\"} 0\n"));
        assert!(
            text.contains(
                "idempotency_gateway_store_duration_seconds_count{operation=\"renew\"} 1\n"
            )
        );
        assert!(
            text.contains(
                "idempotency_gateway_store_duration_seconds_count{operation=\"claim\"} 0\n"
            )
        );
    }
}
