//! The proxy service: gives every covered request Idempotency-Key semantics
//! (draft-ietf-httpapi-idempotency-key-header, and Stripe's documented
//! rules for what is stored).
//!
//! For a covered request with a valid key: read the body (up to
//! `--max-body`), compute caller and fingerprint, claim (caller, key). The
//! winner forwards, in a task of its own so that a client disconnect
//! neither cancels the upstream call nor releases the key, renews its lease
//! while the forward is live, then stores the outcome:
//! - upstream 429/503: not stored, claim released (the retry runs again);
//! - upstream unreachable before sending: `502`, claim released;
//! - sent but no answer in time, or reset: "outcome unknown", stored as a
//!   `502` and replayed; never re-sent;
//! - any other answer (5xx included): stored and replayed byte for byte;
//! - an answer larger than `--max-body`: passed through once, stored as
//!   "outcome not stored".
//!
//! Everyone else: `422` on a different fingerprint (checked first), the
//! stored answer plus `Idempotent-Replayed: true` once done, `409` with
//! `Retry-After: 1` while in flight, "outcome unknown" when the holder's
//! lease ran out (it crashed).

use super::clock::Clock;
use super::identity::{self, key_hash};
use super::key::{self, KeyHeader};
use super::metrics::{Metrics, RequestOutcome};
use super::problem::Problem;
use super::store::{
    AnyStore, Claimed, Outcome, Record, RecordId, Store, StoreError, StoredResponse, Token,
};
use crate::shared::traceparent::TraceParent;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, request::Parts};
use axum::response::Response;
use futures_util::TryStreamExt;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;
use url::Url;

/// The key header the gateway reads.
pub const KEY_HEADER: &str = "idempotency-key";

/// The header added to replayed answers.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The gateway's settings (see `--help`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where requests go.
    pub upstream: Url,
    /// Methods given idempotency semantics.
    pub methods: Vec<Method>,
    /// Whether a covered request without a key is refused.
    pub require_key: bool,
    /// Headers whose values identify the caller.
    pub scope_headers: Vec<HeaderName>,
    /// How long a stored record is replayed.
    pub ttl: Duration,
    /// A claim's lease, renewed while the forward is live.
    pub lock_timeout: Duration,
    /// Time allowed for the upstream's complete answer.
    pub upstream_timeout: Duration,
    /// Largest request body buffered, and largest answer stored.
    pub max_body: usize,
}

/// The gateway: settings, store, clock, upstream client, metrics.
pub struct Gateway {
    settings: Settings,
    store: AnyStore,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    /// Request and store metrics.
    pub metrics: Metrics,
    /// Forwards in flight, waited for on shutdown.
    pub forwards: TaskTracker,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and those the HTTP stack sets itself.
const NOT_FORWARDED: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

fn forwarded(name: &str) -> bool {
    !NOT_FORWARDED.contains(&name)
}

enum UpstreamError {
    /// Nothing reached the upstream.
    NotSent(String),
    /// Sent; whether it acted is unknown.
    Unknown(String),
}

enum Answer {
    /// The whole answer, within `--max-body`.
    Complete(StoredResponse),
    /// A larger answer: its head, what was read, and the rest still streaming.
    TooLarge {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        prefix: Vec<u8>,
        rest: reqwest::Response,
    },
}

impl Gateway {
    /// Builds the gateway and its upstream client.
    pub fn new(settings: Settings, store: AnyStore, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.upstream_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| format!("cannot build the upstream client: {e}"))?;
        Ok(Self {
            settings,
            store,
            clock,
            client,
            metrics: Metrics::default(),
            forwards: TaskTracker::new(),
        })
    }

    /// The store (admin readiness, sweeping).
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// The current time in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn ms(duration: Duration) -> u64 {
        u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics.store(operation, started.elapsed());
        result
    }

    async fn process(
        self: &Arc<Self>,
        request: Request,
    ) -> (RequestOutcome, Option<String>, Response) {
        if !self.settings.methods.contains(request.method()) {
            return (
                RequestOutcome::PassedThrough,
                None,
                self.pass_through(request).await,
            );
        }
        let key = match key::read(request.headers(), KEY_HEADER) {
            KeyHeader::Key(key) => key,
            KeyHeader::Missing if self.settings.require_key => {
                let detail = "this gateway requires an Idempotency-Key header on this method; nothing was forwarded";
                return (
                    RequestOutcome::Invalid,
                    None,
                    Problem::Invalid.respond(detail),
                );
            }
            KeyHeader::Missing => {
                return (
                    RequestOutcome::PassedThrough,
                    None,
                    self.pass_through(request).await,
                );
            }
            KeyHeader::Invalid(why) => {
                let detail = format!("{why}; nothing was forwarded");
                return (
                    RequestOutcome::Invalid,
                    None,
                    Problem::Invalid.respond(&detail),
                );
            }
        };
        let hash = Some(key_hash(&key));
        let (parts, body) = request.into_parts();
        let body = match http_body_util::Limited::new(body, self.settings.max_body)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                let detail = format!(
                    "the request body is larger than {} bytes; nothing was forwarded",
                    self.settings.max_body
                );
                return (
                    RequestOutcome::Invalid,
                    hash,
                    Problem::TooLarge.respond(&detail),
                );
            }
            Err(_) => {
                let detail = "the request body was cut off before its end; nothing was forwarded";
                return (
                    RequestOutcome::Invalid,
                    hash,
                    Problem::Invalid.respond(detail),
                );
            }
        };
        let id = RecordId {
            caller: identity::caller(&parts.headers, &self.settings.scope_headers),
            key,
        };
        let fingerprint = identity::fingerprint(&parts.method, &parts.uri, &parts.headers, &body);
        let (outcome, response) = self.idempotent(parts, body, id, fingerprint).await;
        (outcome, hash, response)
    }

    async fn idempotent(
        self: &Arc<Self>,
        parts: Parts,
        body: bytes::Bytes,
        id: RecordId,
        fingerprint: [u8; 32],
    ) -> (RequestOutcome, Response) {
        let token: Token = rand::random();
        let lease = Self::ms(self.settings.lock_timeout);
        let ttl = Self::ms(self.settings.ttl);
        // A record can change under us (released, expired); three looks suffice.
        for _ in 0..3 {
            let now = self.now_ms();
            let claim = self
                .store
                .claim(&id, &fingerprint, &token, now.saturating_add(lease), now);
            let record = match self.timed("claim", claim).await {
                Err(e) => return self.store_unavailable(&e),
                Ok(Claimed::Won) => return self.forward_claimed(parts, body, id, token).await,
                Ok(Claimed::Existing(record)) => record,
            };
            if *record.fingerprint() != fingerprint {
                let detail = "this Idempotency-Key was used for a different request (method, path, query, \
                              content type or body); use a new key for a new request";
                return (RequestOutcome::Mismatch, Problem::Mismatch.respond(detail));
            }
            match record {
                Record::Done { outcome, .. } => return replay(outcome),
                Record::InFlight { lease_until, .. } if lease_until > now => {
                    return in_flight();
                }
                Record::InFlight { token: holder, .. } => {
                    let unknown = Outcome::Unknown(
                        "the gateway that forwarded this request stopped before it stored the answer, \
                         so whether the upstream acted is unknown"
                            .to_owned(),
                    );
                    let expire = self.store.expire_lease(
                        &id,
                        &holder,
                        &unknown,
                        now.saturating_add(ttl),
                        now,
                    );
                    match self.timed("expire_lease", expire).await {
                        Err(e) => return self.store_unavailable(&e),
                        Ok(Some(Record::Done { outcome, .. })) => return replay(outcome),
                        Ok(Some(Record::InFlight { .. })) => {
                            return in_flight();
                        }
                        Ok(None) => continue,
                    }
                }
            }
        }
        in_flight()
    }

    fn store_unavailable(&self, error: &StoreError) -> (RequestOutcome, Response) {
        tracing::warn!(%error, "store unavailable; request not forwarded");
        let detail =
            "the idempotency store is unavailable, so the request was not forwarded; retry later";
        (
            RequestOutcome::StoreError,
            Problem::StoreUnavailable.respond(detail),
        )
    }

    /// Runs the forward in its own task: a client that disconnects drops
    /// only this future, never the upstream call or the claim.
    async fn forward_claimed(
        self: &Arc<Self>,
        parts: Parts,
        body: bytes::Bytes,
        id: RecordId,
        token: Token,
    ) -> (RequestOutcome, Response) {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let gateway = self.clone();
        self.forwards.spawn(async move {
            let result = gateway.forward_and_record(parts, body, id, token).await;
            let _ = sender.send(result);
        });
        receiver.await.unwrap_or_else(|_| {
            let detail = "the forward failed unexpectedly; whether the upstream acted is unknown";
            (
                RequestOutcome::OutcomeUnknown,
                Problem::OutcomeUnknown.respond(detail),
            )
        })
    }

    async fn forward_and_record(
        self: Arc<Self>,
        parts: Parts,
        body: bytes::Bytes,
        id: RecordId,
        token: Token,
    ) -> (RequestOutcome, Response) {
        let started = Instant::now();
        let call = self.call_upstream(&parts, body);
        tokio::pin!(call);
        let renew_every = (self.settings.lock_timeout / 3).max(Duration::from_millis(10));
        let result = loop {
            tokio::select! {
                result = &mut call => break result,
                () = tokio::time::sleep(renew_every) => {
                    let lease_until = self.now_ms().saturating_add(Self::ms(self.settings.lock_timeout));
                    if let Err(error) = self.timed("renew", self.store.renew(&id, &token, lease_until)).await {
                        tracing::warn!(%error, "could not renew a lease");
                    }
                }
            }
        };
        self.metrics.upstream(started.elapsed());
        let expires_at = self.now_ms().saturating_add(Self::ms(self.settings.ttl));
        match result {
            Err(UpstreamError::NotSent(why)) => {
                self.release(&id, &token).await;
                let detail = format!(
                    "the upstream could not be reached ({why}); nothing was sent, retry later"
                );
                (
                    RequestOutcome::Forwarded,
                    Problem::Unreachable.respond(&detail),
                )
            }
            Err(UpstreamError::Unknown(why)) => {
                let detail = format!(
                    "the request reached the upstream but no complete answer came back ({why}), so whether \
                     it acted is unknown; it will not be sent again with this key"
                );
                self.finish(&id, &token, &Outcome::Unknown(detail.clone()), expires_at)
                    .await;
                (
                    RequestOutcome::OutcomeUnknown,
                    Problem::OutcomeUnknown.respond(&detail),
                )
            }
            Ok(Answer::Complete(response)) if matches!(response.status, 429 | 503) => {
                // Not processed (by Stripe's rule): the next attempt runs again.
                self.release(&id, &token).await;
                (RequestOutcome::Forwarded, respond(&response, false))
            }
            Ok(Answer::Complete(response)) => {
                let reply = respond(&response, false);
                self.finish(&id, &token, &Outcome::Response(response), expires_at)
                    .await;
                (RequestOutcome::Forwarded, reply)
            }
            Ok(Answer::TooLarge {
                status,
                headers,
                prefix,
                rest,
            }) => {
                let why = format!(
                    "the upstream answered, but its answer was larger than {} bytes, so it was passed through \
                     once and not stored; this key cannot be replayed",
                    self.settings.max_body
                );
                self.finish(&id, &token, &Outcome::NotStored(why), expires_at)
                    .await;
                let head = StoredResponse {
                    status,
                    headers,
                    body: Vec::new(),
                };
                let mut response = respond(&head, false);
                let first =
                    futures_util::stream::once(async move { Ok(bytes::Bytes::from(prefix)) });
                let stream = futures_util::StreamExt::chain(first, rest.bytes_stream());
                *response.body_mut() = Body::from_stream(stream);
                (RequestOutcome::Forwarded, response)
            }
        }
    }

    async fn finish(&self, id: &RecordId, token: &Token, outcome: &Outcome, expires_at: u64) {
        let now = self.now_ms();
        match self
            .timed(
                "finish",
                self.store.finish(id, token, outcome, expires_at, now),
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("a late answer was not stored: the key already has a final record")
            }
            // The client still gets the upstream's answer; the claim ages into
            // "outcome unknown" and is never forwarded again.
            Err(error) => tracing::error!(%error, "could not store an answer"),
        }
    }

    async fn release(&self, id: &RecordId, token: &Token) {
        if let Err(error) = self.timed("release", self.store.release(id, token)).await {
            tracing::error!(%error, "could not release a claim; it will become outcome unknown");
        }
    }

    fn upstream_url(&self, parts: &Parts) -> Url {
        let mut url = self.settings.upstream.clone();
        let path = format!("{}{}", url.path().trim_end_matches('/'), parts.uri.path());
        url.set_path(&path);
        url.set_query(parts.uri.query());
        url
    }

    fn upstream_request(&self, parts: &Parts) -> reqwest::RequestBuilder {
        let mut builder = self
            .client
            .request(parts.method.clone(), self.upstream_url(parts))
            .timeout(self.settings.upstream_timeout);
        for (name, value) in &parts.headers {
            if forwarded(name.as_str()) {
                builder = builder.header(name, value);
            }
        }
        builder
    }

    async fn call_upstream(
        &self,
        parts: &Parts,
        body: bytes::Bytes,
    ) -> Result<Answer, UpstreamError> {
        let response = self
            .upstream_request(parts)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    UpstreamError::NotSent(crate::shared::http_error::error_chain(&e))
                } else {
                    UpstreamError::Unknown(crate::shared::http_error::error_chain(&e))
                }
            })?;
        let status = response.status().as_u16();
        let headers = response_headers(response.headers());
        let mut response = response;
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() > self.settings.max_body => {
                    body.extend_from_slice(&chunk);
                    return Ok(Answer::TooLarge {
                        status,
                        headers,
                        prefix: body,
                        rest: response,
                    });
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    return Err(UpstreamError::Unknown(format!(
                        "the answer broke off: {}",
                        crate::shared::http_error::error_chain(&e)
                    )));
                }
            }
        }
        Ok(Answer::Complete(StoredResponse {
            status,
            headers,
            body,
        }))
    }

    async fn pass_through(&self, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let stream = body.into_data_stream();
        let result = self
            .upstream_request(&parts)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await;
        match result {
            Ok(upstream) => {
                let mut response = Response::builder()
                    .status(upstream.status())
                    .body(Body::empty())
                    .expect("a status and an empty body make a response");
                copy_headers(upstream.headers(), response.headers_mut());
                *response.body_mut() =
                    Body::from_stream(upstream.bytes_stream().map_err(std::io::Error::other));
                response
            }
            Err(e) => Problem::Unreachable.respond(&format!(
                "the upstream could not be reached: {}",
                crate::shared::http_error::error_chain(&e)
            )),
        }
    }
}

fn response_headers(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .filter(|(name, _)| forwarded(name.as_str()))
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if forwarded(name.as_str()) {
            to.append(name, value.clone());
        }
    }
}

/// Builds the client's answer from a stored (or just received) response.
fn respond(stored: &StoredResponse, replayed: bool) -> Response {
    let mut response = Response::builder()
        .status(StatusCode::from_u16(stored.status).unwrap_or(StatusCode::BAD_GATEWAY))
        .body(Body::from(stored.body.clone()))
        .expect("a status and a body make a response");
    let headers = response.headers_mut();
    for (name, value) in &stored.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    if replayed {
        headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

/// `409` with `Retry-After: 1`: the key's first request is still being forwarded.
fn in_flight() -> (RequestOutcome, Response) {
    let detail = "a request with this Idempotency-Key is being processed; retry after a moment";
    (RequestOutcome::Conflict, Problem::InFlight.respond(detail))
}

fn replay(outcome: Outcome) -> (RequestOutcome, Response) {
    match outcome {
        Outcome::Response(stored) => (RequestOutcome::Replayed, respond(&stored, true)),
        Outcome::Unknown(detail) => (
            RequestOutcome::OutcomeUnknown,
            Problem::OutcomeUnknown.respond(&detail),
        ),
        Outcome::NotStored(detail) => (
            RequestOutcome::Replayed,
            Problem::NotStored.respond(&detail),
        ),
    }
}

/// The axum handler: processes the request, counts and logs it (method,
/// path, a hash of the key, the W3C trace-id the request carries, outcome,
/// status, latency; never the raw key, a header value or a body). The
/// trace-id lets one search find every attempt of one operation in the
/// client's and the gateway's logs.
pub async fn handle(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // Only a well-formed value is logged: the header is the caller's text.
    let trace_id = request
        .headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(TraceParent::parse)
        .map(|parent| parent.trace_id_hex());
    let (outcome, key, response) = gateway.process(request).await;
    gateway.metrics.request(outcome);
    tracing::info!(
        method = %method,
        path = %path,
        key = key.as_deref().unwrap_or("-"),
        trace_id = %trace_id.as_deref().unwrap_or("-"),
        outcome = outcome.as_str(),
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1e3,
        "request"
    );
    response
}
