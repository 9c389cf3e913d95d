//! The proxy service: gives every covered request Idempotency-Key semantics
//! (draft-ietf-httpapi-idempotency-key-header, and Stripe's documented
//! rules for what is stored).
//!
//! Every request: its target is checked (no dot segments or backslashes,
//! see [`super::target`]), a transfer coding besides `chunked` refused
//! (`501`), and its hop-by-hop headers removed. A method
//! given idempotency semantics (`--methods`, upper case; `post` for `POST`
//! is refused rather than let through unguarded) with a valid key: the
//! caller is identified ([`super::caller`]; `401` when a JWT does not
//! verify), the body read within its limits ([`super::body`]), the
//! fingerprint taken, and then claim, forward and record run as **one
//! unit**, a task of its own: a client that goes away cannot split it, so
//! either the forward happens or the claim is released. The winner renews
//! its lease while the forward is live, then stores the outcome:
//! - upstream 429/503: not stored, claim released (the retry runs again);
//! - upstream unreachable before sending: `502`, claim released;
//! - sent but no answer in time, or reset: "outcome unknown", stored as a
//!   `502` and replayed; never re-sent;
//! - any other answer (5xx included): stored and replayed byte for byte;
//! - an answer larger than `--max-body`: passed through once, stored as
//!   "outcome not stored".
//!
//! Requests in flight to the upstream (forwards and pass-throughs, every
//! connection and HTTP/2 stream together) are held to
//! [`Settings::max_upstream_requests`]; past it a request is answered `503`
//! before anything is claimed or sent.
//!
//! Everyone else: `422` on a different fingerprint (checked first), the
//! stored answer plus `Idempotent-Replayed: true` and `Age` once done, `409`
//! with `Retry-After: 1` while in flight, "outcome unknown" when the
//! holder's lease ran out (it crashed).
//!
//! A claim whose store call failed may still have been written (a Redis
//! script that outlived its response timeout): the claim is retried with the
//! same token, which finds its own record and proceeds, and failing that the
//! claim is released in the background, so the key is never left stuck.

use super::body::{Budget, Held, Refusal, held_bytes};
use super::caller::{self, CallerRule};
use super::clock::Clock;
use super::fingerprint::{fingerprint, key_hash};
use super::hop;
use super::key::{self, KeyHeader};
use super::log_format::REQUEST_TARGET;
use super::metrics::{Metrics, RequestOutcome, StoreOperation};
use super::problem::Problem;
use super::store::{
    AnyStore, Claimed, LAPSED_LEASE_DETAIL, Outcome, Record, RecordId, Store, StoreError,
    StoredResponse, Token,
};
use super::target;
use super::unsplit::unsplit;
use super::upstream::{Answer, Failure, Upstream};
use crate::shared::protocol::{REPLAYED_HEADER, delta_seconds};
use crate::shared::traceparent::TraceParent;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::response::Response;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;
use url::Url;

/// The gateway's settings (see `--help`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where requests go.
    pub upstream: Url,
    /// CA certificates trusted for an `https` upstream besides the
    /// platform's roots (`--upstream-ca-file`).
    pub upstream_ca_file: Option<std::path::PathBuf>,
    /// Methods given idempotency semantics.
    pub methods: Vec<Method>,
    /// Whether a covered request without a key is refused.
    pub require_key: bool,
    /// The header that carries the key.
    pub key_header: HeaderName,
    /// How callers are told apart.
    pub caller: CallerRule,
    /// How long a stored record is replayed.
    pub ttl: Duration,
    /// A claim's lease, renewed while the forward is live.
    pub lock_timeout: Duration,
    /// Time allowed for the upstream's complete answer.
    pub upstream_timeout: Duration,
    /// Largest request body buffered, and largest answer stored.
    pub max_body: usize,
    /// Request body bytes buffered at once, all requests together.
    pub max_buffered: usize,
    /// Time for a request's whole body.
    pub body_timeout: Duration,
    /// Upstream requests in flight at most, forwards and pass-throughs, all
    /// connections and HTTP/2 streams together (the served
    /// `--max-connections`, so each connection's descriptor has at most one
    /// upstream descriptor beside it).
    pub max_upstream_requests: usize,
}

impl Settings {
    /// The flags' defaults, for `upstream`.
    pub fn new(upstream: Url) -> Self {
        Self {
            upstream,
            upstream_ca_file: None,
            methods: vec![Method::POST, Method::PATCH],
            require_key: false,
            key_header: HeaderName::from_static("idempotency-key"),
            caller: CallerRule::Credentials,
            ttl: Duration::from_secs(24 * 3600),
            lock_timeout: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(30),
            max_body: 10 << 20,
            max_buffered: 256 << 20,
            body_timeout: Duration::from_secs(30),
            max_upstream_requests: 4096,
        }
    }
}

/// The gateway: settings, store, clock, upstream client, limits, metrics.
pub struct Gateway {
    settings: Settings,
    store: AnyStore,
    clock: Arc<dyn Clock>,
    upstream: Upstream,
    /// Request bodies being read (`--max-buffered`).
    budget: Budget,
    /// Replayed answers not yet written: a budget of the same size of their
    /// own, so clients that ask for replays and do not read them cannot
    /// starve uploads.
    answers: Budget,
    /// Places for upstream requests in flight (`max_upstream_requests`).
    upstream_slots: Arc<tokio::sync::Semaphore>,
    /// Request and store metrics.
    pub metrics: Metrics,
    /// Forwards in flight, waited for on shutdown.
    pub forwards: TaskTracker,
}

/// A connection's place under `--max-connections`. Every forward begun on
/// the connection holds it too, so a forward whose client went away keeps
/// counting against the limit until it is done: clients that send and hang
/// up at once cannot pile up forwards (and their upstream connections)
/// past it.
pub type ConnectionSlot = Arc<tokio::sync::OwnedSemaphorePermit>;

/// What a request comes to: the outcome for the counter, the key hash for
/// the log, the answer.
type Handled = (RequestOutcome, Option<String>, Response);

impl Gateway {
    /// Builds the gateway and its upstream client.
    pub fn new(settings: Settings, store: AnyStore, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let upstream = Upstream::new(
            &settings.upstream,
            settings.upstream_timeout,
            settings.upstream_ca_file.as_deref(),
        )?;
        Ok(Self {
            budget: Budget::new(settings.max_buffered),
            answers: Budget::new(settings.max_buffered),
            upstream_slots: Arc::new(tokio::sync::Semaphore::new(
                settings
                    .max_upstream_requests
                    .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            )),
            settings,
            store,
            clock,
            upstream,
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

    /// The TTL the sweep gives lapsed claims it turns into "outcome unknown".
    pub fn sweep_ttl_ms(&self) -> u64 {
        ms(self.settings.ttl)
    }

    /// Request-body bytes held now against `--max-buffered`.
    pub fn buffered_bytes(&self) -> usize {
        self.budget.held()
    }

    /// Replayed answers' bytes not yet written, held against their own
    /// `--max-buffered`.
    pub fn replaying_bytes(&self) -> usize {
        self.answers.held()
    }

    async fn timed<T>(
        &self,
        operation: StoreOperation,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics.store(operation, started.elapsed());
        if result.is_err() {
            self.metrics.store_error(operation);
        }
        result
    }

    async fn process(self: &Arc<Self>, request: Request, slot: ConnectionSlot) -> Handled {
        let (mut parts, body) = request.into_parts();
        if let Err(refusal) = target::check(parts.uri.path()) {
            return invalid(None, refusal.detail());
        }
        if let Err(detail) = target::check_host(parts.version, &parts.headers) {
            return invalid(None, detail);
        }
        if hop::has_unsupported_transfer_coding(&parts.headers) {
            let detail = "the request's Transfer-Encoding applies a coding besides chunked, which the gateway \
                          does not decode, so the upstream would read the coded bytes as the body; send the body \
                          chunked alone or with a Content-Length (a compression goes in Content-Encoding); \
                          nothing was forwarded";
            return (
                RequestOutcome::Invalid,
                None,
                Problem::TransferCoding.respond(detail),
            );
        }
        hop::strip(&mut parts.headers);
        let method = parts.method.clone();
        if !self.settings.methods.contains(&method) {
            if let Some(covered) = self
                .settings
                .methods
                .iter()
                .find(|m| m.as_str().eq_ignore_ascii_case(method.as_str()))
            {
                let detail = format!(
                    "method names are case-sensitive, and `{covered}` is the one this gateway guards; send `{covered}` (in upper case); nothing was forwarded"
                );
                return invalid(None, &detail);
            }
            let (outcome, response) = self.pass_through(&parts, body).await;
            return (outcome, None, response);
        }
        let key = match key::read(&parts.headers, &self.settings.key_header) {
            KeyHeader::Key(key) => key,
            KeyHeader::Missing if self.settings.require_key => {
                let detail = format!(
                    "this gateway requires an {} header on this method; nothing was forwarded",
                    self.settings.key_header
                );
                return invalid(None, &detail);
            }
            KeyHeader::Missing => {
                let (outcome, response) = self.pass_through(&parts, body).await;
                return (outcome, None, response);
            }
            KeyHeader::Invalid(why) => {
                return invalid(None, &format!("{why}; nothing was forwarded"));
            }
        };
        let hash = Some(key_hash(&key));
        let caller = match caller::identify(
            &self.settings.caller,
            &parts.headers,
            &self.settings.key_header,
        )
        .await
        {
            Ok(caller) => caller,
            Err(rejection) => {
                let detail = format!("{rejection}; nothing was forwarded");
                return (
                    RequestOutcome::Unauthorized,
                    hash,
                    Problem::Unauthorized.respond(&detail),
                );
            }
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let read = self
            .budget
            .read(
                body,
                declared,
                self.settings.max_body,
                self.settings.body_timeout,
            )
            .await;
        let (body, held) = match read {
            Ok(read) => read,
            Err(refusal) => {
                return (
                    body_outcome(refusal),
                    hash,
                    body_problem(refusal, &self.settings),
                );
            }
        };
        let id = RecordId { caller, key };
        let fingerprint = fingerprint(&parts.method, &parts.uri, &parts.headers, &body);
        // A done record never changes: replayed at once when it is known
        // without a store call (the same answer the claim would find).
        let now = self.now_ms();
        if let Some(Record::Done {
            fingerprint: stored,
            outcome,
            stored_at,
            ..
        }) = self.store.recall(&id, now)
        {
            let (outcome, response) = if stored == fingerprint {
                replay(outcome, stored_at, now, Room::Take(&self.answers))
            } else {
                mismatch()
            };
            return (outcome, hash, response);
        }
        // Refused before the claim: nothing to undo.
        let Some(upstream_slot) = self.upstream_slot() else {
            return (RequestOutcome::Overloaded, hash, upstream_busy());
        };
        // Claim, forward and record as one unit a disconnect cannot split.
        let gateway = self.clone();
        let orphan = self.clone();
        let logged_key = hash.clone();
        let (outcome, response) = unsplit(
            &self.forwards,
            async move {
                let answer = gateway.idempotent(parts, body, held, id, fingerprint).await;
                drop((slot, upstream_slot));
                answer
            },
            move |(outcome, response): (RequestOutcome, Response)| {
                // The request's own log line went with its client.
                orphan.metrics.request(outcome);
                tracing::info!(
                    key = logged_key.as_deref().unwrap_or("-"),
                    outcome = outcome.as_str(),
                    status = response.status().as_u16(),
                    "the client went away before the answer; the outcome stands for its retry"
                );
            },
        )
        .await;
        (outcome, hash, response)
    }

    async fn idempotent(
        self: Arc<Self>,
        parts: Parts,
        body: bytes::Bytes,
        held: Held,
        id: RecordId,
        fingerprint: [u8; 32],
    ) -> (RequestOutcome, Response) {
        let token: Token = rand::random();
        let lease = ms(self.settings.lock_timeout);
        let ttl = ms(self.settings.ttl);
        // A record can change under us (released, expired); three looks suffice.
        for _ in 0..3 {
            let now = self.now_ms();
            let record = match self
                .claim(&id, &fingerprint, &token, now.saturating_add(lease), now)
                .await
            {
                Err(e) => return self.store_unavailable(&id, token, &e),
                Ok(Claimed::Won) => {
                    return self.forward_claimed(parts, body, held, id, token).await;
                }
                Ok(Claimed::Full) => {
                    let detail = "the gateway's memory store holds as many records as --memory-max-bytes allows, so this new key was not forwarded; retry later";
                    return (
                        RequestOutcome::Overloaded,
                        Problem::StoreFull.respond(detail),
                    );
                }
                Ok(Claimed::Existing(record)) => record,
                Ok(Claimed::Large {
                    fingerprint: stored,
                    size,
                }) => {
                    if stored != fingerprint {
                        return mismatch();
                    }
                    // Room first, then the answer: a crowd of replays of a
                    // large answer reads it no faster than it is written.
                    // A stored body is at most --max-body, which the budget
                    // always holds; the size also counts headers.
                    let room = size.min(self.settings.max_body);
                    let Ok(held) = self.answers.hold(room) else {
                        return replay_refused();
                    };
                    let load = self.store.load(&id, now, size);
                    match self.timed(StoreOperation::Load, load).await {
                        Err(e) => return store_failed(&e),
                        Ok(Some(Record::Done {
                            fingerprint: stored,
                            outcome,
                            stored_at,
                            ..
                        })) => {
                            if stored != fingerprint {
                                return mismatch();
                            }
                            return replay(outcome, stored_at, now, Room::Held(held));
                        }
                        // Expired, or claimed afresh after expiring: look again.
                        Ok(_) => continue,
                    }
                }
            };
            if *record.fingerprint() != fingerprint {
                return mismatch();
            }
            match record {
                Record::Done {
                    outcome, stored_at, ..
                } => return replay(outcome, stored_at, now, Room::Take(&self.answers)),
                Record::InFlight { lease_until, .. } if lease_until > now => return in_flight(),
                Record::InFlight { token: holder, .. } => {
                    let unknown = Outcome::Unknown(LAPSED_LEASE_DETAIL.to_owned());
                    let expire = self.store.expire_lease(
                        &id,
                        &holder,
                        &unknown,
                        now.saturating_add(ttl),
                        now,
                    );
                    match self.timed(StoreOperation::ExpireLease, expire).await {
                        Err(e) => return self.store_unavailable(&id, token, &e),
                        Ok(Some(Record::Done {
                            outcome, stored_at, ..
                        })) => {
                            return replay(outcome, stored_at, now, Room::Take(&self.answers));
                        }
                        Ok(Some(Record::InFlight { .. })) => return in_flight(),
                        Ok(None) => continue,
                    }
                }
            }
        }
        in_flight()
    }

    /// A claim, retried with the same token when a failure may have hidden
    /// a write: the retry finds its own record and wins.
    async fn claim(
        &self,
        id: &RecordId,
        fingerprint: &[u8; 32],
        token: &Token,
        lease_until: u64,
        now: u64,
    ) -> Result<Claimed, StoreError> {
        let mut last = None;
        for pause in [
            Duration::ZERO,
            Duration::from_millis(50),
            Duration::from_millis(250),
        ] {
            // Not `sleep(ZERO)`: that still waits for the timer's next tick
            // (up to a millisecond on every request).
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            let claim = self.store.claim(id, fingerprint, token, lease_until, now);
            match self.timed(StoreOperation::Claim, claim).await {
                Ok(claimed) => return Ok(claimed),
                // Nothing hidden to find again: a SQLite claim refused
                // (its lock held past its wait, a full disk) is answered
                // at once, not after two more waits.
                Err(e) if self.store.failures_wrote_nothing() => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| StoreError("the claim failed".to_owned())))
    }

    /// Nothing was forwarded. A failed claim may have been written anyway
    /// (unless the store says it cannot have been), so it is released in
    /// the background, and the key is not left stuck.
    fn store_unavailable(
        self: &Arc<Self>,
        id: &RecordId,
        token: Token,
        error: &StoreError,
    ) -> (RequestOutcome, Response) {
        if !self.store.failures_wrote_nothing() {
            self.release_in_background(id, token);
        }
        store_failed(error)
    }

    async fn forward_claimed(
        self: Arc<Self>,
        parts: Parts,
        body: bytes::Bytes,
        held: Held,
        id: RecordId,
        token: Token,
    ) -> (RequestOutcome, Response) {
        let started = Instant::now();
        let call = self
            .upstream
            .call(&parts, Body::from(body), self.settings.max_body);
        tokio::pin!(call);
        let renew_every = (self.settings.lock_timeout / 3).max(Duration::from_millis(10));
        let result = loop {
            tokio::select! {
                result = &mut call => break result,
                () = tokio::time::sleep(renew_every) => {
                    let lease_until = self.now_ms().saturating_add(ms(self.settings.lock_timeout));
                    if let Err(error) = self.timed(StoreOperation::Renew, self.store.renew(&id, &token, lease_until)).await {
                        tracing::warn!(%error, "could not renew a lease");
                    }
                }
            }
        };
        // The body has been sent (or never will be): its budget is free.
        drop(held);
        self.metrics.upstream(started.elapsed());
        let now = self.now_ms();
        let expires_at = now.saturating_add(ms(self.settings.ttl));
        match result {
            Err(Failure::NotSent(why)) => {
                self.release(&id, &token).await;
                let detail = format!(
                    "the upstream could not be reached ({why}); nothing was sent, retry later"
                );
                (
                    RequestOutcome::Forwarded,
                    Problem::Unreachable.respond(&detail),
                )
            }
            Err(Failure::Unknown(why)) => {
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
            Ok(Answer::Complete(answer)) if matches!(answer.status, 429 | 503) => {
                // Not processed (by Stripe's rule): the next attempt runs again.
                self.release(&id, &token).await;
                let stored = StoredResponse {
                    status: answer.status,
                    headers: answer.headers,
                    body: answer.body,
                };
                (RequestOutcome::Forwarded, respond(&stored))
            }
            Ok(Answer::Complete(answer)) => {
                let stored = StoredResponse {
                    status: answer.status,
                    headers: answer.headers,
                    body: answer.body,
                };
                let reply = respond(&stored);
                self.finish(&id, &token, &Outcome::Response(stored), expires_at)
                    .await;
                (RequestOutcome::Forwarded, reply)
            }
            Ok(Answer::TooLarge(large)) => {
                let why = format!(
                    "the upstream answered, but its answer was larger than {} bytes, so it was passed through \
                     once and not stored; this key cannot be replayed",
                    self.settings.max_body
                );
                self.finish(&id, &token, &Outcome::NotStored(why), expires_at)
                    .await;
                let head = StoredResponse {
                    status: large.status,
                    headers: large.headers,
                    body: Vec::new(),
                };
                let mut response = respond(&head);
                let first = futures_util::stream::once(async move {
                    Ok::<_, std::io::Error>(bytes::Bytes::from(large.prefix))
                });
                let rest = futures_util::TryStreamExt::map_err(
                    large.rest.into_data_stream(),
                    std::io::Error::other,
                );
                *response.body_mut() =
                    Body::from_stream(futures_util::StreamExt::chain(first, rest));
                (RequestOutcome::Forwarded, response)
            }
        }
    }

    /// Stores the final outcome over the claim. If the store fails, the
    /// client still gets its answer at once, and the outcome is stored on
    /// a later try ([`Gateway::again_in_background`]: a store back within
    /// `--lock-timeout` replays it); after that the claim ages into
    /// "outcome unknown" and is never forwarded again. A retry is safe:
    /// `finish` writes only over this token's claim, so one whose lease
    /// someone already expired, or an earlier try that did commit, ends it.
    async fn finish(
        self: &Arc<Self>,
        id: &RecordId,
        token: &Token,
        outcome: &Outcome,
        expires_at: u64,
    ) {
        let now = self.now_ms();
        let error = match self
            .timed(
                StoreOperation::Finish,
                self.store.finish(id, token, outcome, expires_at, now),
            )
            .await
        {
            Ok(true) => return,
            Ok(false) => {
                tracing::warn!("a late answer was not stored: the key already has a final record");
                return;
            }
            Err(error) => error,
        };
        tracing::warn!(%error, "could not store an answer; trying again in the background");
        // Shared by the tries: an answer can be megabytes.
        let (id, token, outcome) = (id.clone(), *token, Arc::new(outcome.clone()));
        self.again_in_background(
            "could not store an answer within --lock-timeout; its key will be answered \
             \"outcome unknown\" and never forwarded again",
            move |gateway| {
                let (id, outcome) = (id.clone(), Arc::clone(&outcome));
                async move {
                    let now = gateway.now_ms();
                    let expires_at = now.saturating_add(ms(gateway.settings.ttl));
                    let finish = gateway.store.finish(&id, &token, &outcome, expires_at, now);
                    // Stored, or by an earlier try after all, or its lease
                    // was expired: done either way.
                    gateway.timed(StoreOperation::Finish, finish).await.is_ok()
                }
            },
        );
    }

    /// Deletes the claim of a request that was not processed, so that its
    /// retry is forwarded; tried again in the background when the store
    /// fails (a claim left behind would age into "outcome unknown" for a
    /// request the upstream never acted on).
    async fn release(self: &Arc<Self>, id: &RecordId, token: &Token) {
        let release = self.store.release(id, token);
        if let Err(error) = self.timed(StoreOperation::Release, release).await {
            tracing::warn!(%error, "could not release a claim; trying again in the background");
            self.release_in_background(id, *token);
        }
    }

    /// [`Gateway::release`]'s tries after the first.
    fn release_in_background(self: &Arc<Self>, id: &RecordId, token: Token) {
        let id = id.clone();
        self.again_in_background(
            "could not release a claim within --lock-timeout; its key will be answered \
             \"outcome unknown\"",
            move |gateway| {
                let id = id.clone();
                async move {
                    let release = gateway.store.release(&id, &token);
                    gateway
                        .timed(StoreOperation::Release, release)
                        .await
                        .is_ok()
                }
            },
        )
    }

    /// Runs `attempt` in the background until it reports success, with
    /// pauses doubling from 100 ms to 5 s, for up to `--lock-timeout` (a
    /// claim's lease: past it, the key's state is settled by whoever asks
    /// next). Logs `gave_up` as an error if it never succeeds. Tracked
    /// with the forwards, so a shutdown waits for it too.
    fn again_in_background<F, Fut>(self: &Arc<Self>, gave_up: &'static str, attempt: F)
    where
        F: Fn(Arc<Self>) -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        let gateway = self.clone();
        self.forwards.spawn(async move {
            let deadline = Instant::now() + gateway.settings.lock_timeout;
            let mut pause = Duration::from_millis(100);
            while Instant::now() + pause < deadline {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                if attempt(gateway.clone()).await {
                    return;
                }
            }
            tracing::error!("{gave_up}");
        });
    }

    /// A place for one upstream request, if one is free.
    fn upstream_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.upstream_slots.clone().try_acquire_owned().ok()
    }

    /// Streams the request to the upstream and its answer back, holding a
    /// place for an upstream request until the answer's body is done.
    async fn pass_through(&self, parts: &Parts, body: Body) -> (RequestOutcome, Response) {
        let Some(upstream_slot) = self.upstream_slot() else {
            return (RequestOutcome::Overloaded, upstream_busy());
        };
        let response = match self.upstream.pass_through(parts, body).await {
            Ok(response) => response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _held = &upstream_slot;
                    frame
                }))
            }),
            Err(Failure::NotSent(why) | Failure::Unknown(why)) => {
                Problem::Unreachable.respond(&format!("the upstream could not be reached: {why}"))
            }
        };
        (RequestOutcome::PassedThrough, response)
    }
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn invalid(hash: Option<String>, detail: &str) -> Handled {
    (
        RequestOutcome::Invalid,
        hash,
        Problem::Invalid.respond(detail),
    )
}

/// `503` with `Retry-After: 1`: as many upstream requests are in flight as
/// the gateway sends at once.
fn upstream_busy() -> Response {
    Problem::UpstreamBusy.respond(
        "the gateway has as many requests in flight to the upstream as --max-connections allows; nothing was forwarded, retry after a moment",
    )
}

fn body_outcome(refusal: Refusal) -> RequestOutcome {
    match refusal {
        Refusal::Busy => RequestOutcome::Overloaded,
        Refusal::TooLarge | Refusal::Slow | Refusal::CutOff => RequestOutcome::Invalid,
    }
}

fn body_problem(refusal: Refusal, settings: &Settings) -> Response {
    match refusal {
        Refusal::TooLarge => Problem::TooLarge.respond(&format!(
            "the request body is larger than {} bytes; nothing was forwarded",
            settings.max_body
        )),
        Refusal::Busy => Problem::Overloaded.respond(
            "the gateway is holding as many request bodies as it buffers at once; nothing was forwarded, retry after a moment",
        ),
        Refusal::Slow => Problem::BodyTimeout.respond(&format!(
            "the request body did not arrive within {}; nothing was forwarded",
            crate::shared::units::show(settings.body_timeout)
        )),
        Refusal::CutOff => Problem::Invalid.respond("the request body was cut off before its end; nothing was forwarded"),
    }
}

/// Builds the client's answer from a stored (or just received) response.
fn respond(stored: &StoredResponse) -> Response {
    respond_with(stored, Body::from(stored.body.clone()))
}

/// The answer `stored` describes, with `body` for its body.
fn respond_with(stored: &StoredResponse, body: Body) -> Response {
    let mut response = Response::builder()
        .status(StatusCode::from_u16(stored.status).unwrap_or(StatusCode::BAD_GATEWAY))
        .body(body)
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
    response
}

/// `422`: the key was used for another request.
fn mismatch() -> (RequestOutcome, Response) {
    let detail = "this Idempotency-Key was used for a different request (method, path, query, \
                  content type, body or content coding); use a new key for a new request";
    (RequestOutcome::Mismatch, Problem::Mismatch.respond(detail))
}

/// `409` with `Retry-After: 1`: the key's first request is still being forwarded.
fn in_flight() -> (RequestOutcome, Response) {
    let detail = "a request with this Idempotency-Key is being processed; retry after a moment";
    (RequestOutcome::Conflict, Problem::InFlight.respond(detail))
}

/// The largest `Age` sent (RFC 9111, section 5.1: 2^31 when a value or a
/// sum overflows).
const AGE_MAX: u64 = 1 << 31;

/// A store call that failed before anything was forwarded.
fn store_failed(error: &StoreError) -> (RequestOutcome, Response) {
    tracing::warn!(%error, "store unavailable; request not forwarded");
    let detail =
        "the idempotency store is unavailable, so the request was not forwarded; retry later";
    (
        RequestOutcome::StoreError,
        Problem::StoreUnavailable.respond(detail),
    )
}

/// Where a replay's body finds its room in the budget of replayed answers.
enum Room<'a> {
    /// Taken from it now.
    Take(&'a Budget),
    /// Taken before the answer was read from the store.
    Held(Held),
}

/// A replay refused for want of room: its answer stays stored.
fn replay_refused() -> (RequestOutcome, Response) {
    (
        RequestOutcome::Overloaded,
        Problem::Overloaded.respond(
            "the gateway is holding as many replayed answers as it buffers at once (answers \
             that clients are slow to read); the answer is stored, retry after a moment",
        ),
    )
}

/// A stored outcome, marked as a replay; a stored answer keeps its `Date`
/// and gets one `Age`, as an HTTP cache does: the upstream's own `Age`
/// (when it sent a valid one) plus the whole seconds since it was stored.
/// Its body takes its share of the replayed answers' budget (`room`) until
/// it is written; when the share is not free the answer is `503` with
/// `Retry-After` (the record is untouched, so the retry gets it).
fn replay(
    outcome: Outcome,
    stored_at: Option<u64>,
    now: u64,
    room: Room<'_>,
) -> (RequestOutcome, Response) {
    let (outcome, mut response) = match outcome {
        Outcome::Response(mut stored) => {
            let held = match room {
                Room::Held(held) => held,
                Room::Take(budget) => match budget.hold(stored.body.len()) {
                    Ok(held) => held,
                    Err(_) => return replay_refused(),
                },
            };
            let body = held_bytes(std::mem::take(&mut stored.body), held);
            let mut response = respond_with(&stored, Body::from(body));
            if let Some(stored_at) = stored_at {
                let resident = now.saturating_sub(stored_at) / 1000;
                let received = response
                    .headers()
                    .get(header::AGE)
                    .and_then(|value| value.to_str().ok())
                    .and_then(delta_seconds)
                    .unwrap_or(0);
                let age = received.saturating_add(resident).min(AGE_MAX);
                response
                    .headers_mut()
                    .insert(header::AGE, HeaderValue::from(age));
            }
            (RequestOutcome::Replayed, response)
        }
        Outcome::Unknown(detail) => (
            RequestOutcome::OutcomeUnknown,
            Problem::OutcomeUnknown.respond(&detail),
        ),
        Outcome::NotStored(detail) => (
            RequestOutcome::Replayed,
            Problem::NotStored.respond(&detail),
        ),
    };
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    (outcome, response)
}

/// The axum handler: processes the request, counts and logs it (method,
/// path, a hash of the key, the W3C trace-id the request carries, outcome,
/// status, latency; never the raw key, a header value or a body). The
/// trace-id lets one search find every attempt of one operation in the
/// client's and the gateway's logs.
///
/// `slot` is the connection's place under `--max-connections`, held by a
/// forward until it is done ([`ConnectionSlot`]).
pub async fn handle(
    State(gateway): State<Arc<Gateway>>,
    request: Request,
    slot: ConnectionSlot,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = crate::shared::outside_text::one_line(request.uri().path());
    // Only a well-formed value is logged: the header is the caller's text.
    let trace_id = request
        .headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(TraceParent::parse)
        .map(|parent| parent.trace_id_hex());
    let (outcome, key, response) = gateway.process(request, slot).await;
    gateway.metrics.request(outcome);
    // One message, written as it is (`log_format`): every part is inert
    // (an HTTP token, a `one_line` path, hex, numbers and fixed words).
    tracing::info!(
        target: REQUEST_TARGET,
        "request method={method} path={path} key=\"{}\" trace_id={} outcome=\"{}\" status={} latency_ms={}",
        key.as_deref().unwrap_or("-"),
        trace_id.as_deref().unwrap_or("-"),
        outcome.as_str(),
        response.status().as_u16(),
        LogMillis(started.elapsed()),
    );
    response
}

/// A latency for the log: milliseconds to the microsecond (`0.016`, not
/// the `0.016243999999999998` that nanoseconds in binary floating point
/// print as), trailing zeros dropped.
struct LogMillis(std::time::Duration);

impl std::fmt::Display for LogMillis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Integers, not a float: formatting an `f64` was a tenth of the line.
        let micros = self.0.as_micros();
        let (millis, fraction) = (micros / 1000, micros % 1000);
        match fraction {
            0 => write!(f, "{millis}"),
            _ if fraction % 100 == 0 => write!(f, "{millis}.{}", fraction / 100),
            _ if fraction % 10 == 0 => write!(f, "{millis}.{:02}", fraction / 10),
            _ => write!(f, "{millis}.{fraction:03}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LogMillis;
    use std::time::Duration;

    #[test]
    fn a_logged_latency_is_milliseconds_to_the_microsecond() {
        for (nanos, text) in [
            (16_244, "0.016"),
            (895_197, "0.895"),
            (1_500_000_000, "1500"),
            (0, "0"),
            (12_300_000, "12.3"),
            (12_340_000, "12.34"),
            (1_001_999, "1.001"),
            (999, "0"),
        ] {
            assert_eq!(LogMillis(Duration::from_nanos(nanos)).to_string(), text);
        }
    }
}
