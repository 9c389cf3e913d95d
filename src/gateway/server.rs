//! The listener: accepts connections within limits and serves each with
//! hyper (HTTP/1.1, and HTTP/2 with prior knowledge), then shuts down
//! gracefully.
//!
//! Limits, each a flag with a safe default, as mature proxies ship them:
//! - `--max-connections`: past it, a new connection's first request is
//!   answered `503` with `Retry-After` and the connection closed (at most
//!   [`MAX_REFUSING`] at once, each within [`REFUSAL_TIME`]; past that it is
//!   closed unanswered); the others go on. A connection's place is
//!   held until it is closed and every forward begun on it is done, so
//!   forwards whose clients went away count against the limit too (and
//!   the descriptors reserved for it, one per connection and one per
//!   upstream connection, stay enough for HTTP/1.1).
//! - `--header-timeout`: a connection that has not sent a whole request
//!   head within it of being accepted (a slowloris) is closed; for HTTP/1.1
//!   hyper applies the same limit to every request head, counted from the
//!   head's first byte (`super::head_timer`).
//! - `--idle-timeout`: a connection with no request in progress and no
//!   bytes moving for that long (sampled: up to half as long again) is
//!   closed gracefully; it is what bounds the wait between the requests of
//!   a keep-alive connection.
//! - [`MAX_HEAD`] and [`MAX_HEADERS`]: the largest request head and the
//!   most header fields (`431` past them); over HTTP/1.1 the head also
//!   bounds each connection's read buffer.
//! - an HTTP/1.1 request body answered before its end is read on and
//!   thrown away until `--body-timeout` (`super::linger`), so the client
//!   reads the answer rather than a reset.
//! - `--max-streams`: concurrent HTTP/2 streams per connection; requests in
//!   flight to the upstream, every stream of every connection together, are
//!   held to `--max-connections` by the proxy (`super::proxy`).
//!
//! Request bodies have their own limits (`super::body`). On shutdown the
//! listener stops accepting, connections in no request are closed (a first
//! head still arriving after [`SHUTDOWN_HEAD_TIME`]), open connections
//! finish their requests, and forwards whose clients went away still finish
//! and are stored, all within one deadline (`--shutdown-timeout`).

use super::activity::{Activity, Registry};
use super::head_timer::HeadTimer;
use super::linger::Lingering;
use super::problem::Problem;
use super::proxy::{ConnectionSlot, Gateway};
use super::store::Store;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// The listener's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time for a whole request head.
    pub header_timeout: Duration,
    /// Time a connection may sit idle.
    pub idle_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams: usize,
    /// Time open requests and orphaned forwards get on shutdown.
    pub shutdown_timeout: Duration,
    /// How long an HTTP/1.1 request body answered before its end is read
    /// on (`--body-timeout`; [`super::linger`]).
    pub linger: Duration,
}

impl Default for Limits {
    /// The flags' defaults.
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_streams: 64,
            shutdown_timeout: Duration::from_secs(30),
            linger: Duration::from_secs(30),
        }
    }
}

/// Connections over `--max-connections` being answered at once. Each is
/// served by hyper, so a client gets the `503` as the answer to its request
/// (an answer written before the request, or a close with the request
/// unread, reaches an HTTP client as a transport error); past this many a
/// new connection over the limit is closed unanswered, so a flood of them
/// costs a bounded number of descriptors (counted in
/// `super::descriptors`).
pub const MAX_REFUSING: usize = 32;

/// The largest request head (`431` past it): over HTTP/1.1 also the most a
/// connection's read buffer holds (hyper's default, about 400 KiB, let
/// each connection reading a body grow its buffer that far, outside the
/// `--max-buffered` budget); over HTTP/2 the header list size advertised
/// in `SETTINGS_MAX_HEADER_LIST_SIZE` (hyper's default is 16 KiB), so a
/// head that passes over one protocol passes over the other.
pub const MAX_HEAD: usize = 64 * 1024;

/// The most header fields in an HTTP/1.1 request (`431` past it; hyper's
/// default, pinned).
pub const MAX_HEADERS: usize = 100;

/// The most time a connection over the limit is given to send its request
/// and take the `503` (less when `--header-timeout` is less).
pub const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// The most time a connection's first request head, still arriving when
/// the shutdown begins, is given to become whole (less when
/// `--header-timeout` is less); after it such a connection is dropped, so
/// half-sent heads cannot hold a shutdown for `--header-timeout`.
pub const SHUTDOWN_HEAD_TIME: Duration = Duration::from_secs(1);

/// Serves until `shutdown` completes, then stops accepting, lets open
/// requests and in-flight forwards finish within `limits.shutdown_timeout`,
/// and returns.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> std::io::Result<()> {
    // `None` while serving; on shutdown, the one deadline for everything.
    let (stop, stopped) = watch::channel(None::<Instant>);
    let sweeper = tokio::spawn(sweep(gateway.clone(), stopped.clone()));
    let admin = admin.map(|listener| {
        tokio::spawn(super::admin::serve(
            listener,
            gateway.clone(),
            stopped.clone(),
            limits.header_timeout,
        ))
    });
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(u32::try_from(limits.max_streams).unwrap_or(u32::MAX))
        .max_header_list_size(MAX_HEAD as u32)
        // HTTP/2 "rapid reset" (CVE-2023-44487): a connection whose peer
        // cancels streams faster than they are served, or that makes the
        // gateway reset many, gets GOAWAY. h2's own defaults, pinned here.
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024);
    let builder = Arc::new(builder);
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let refusal_time = limits.header_timeout.min(REFUSAL_TIME);
    let refusals = Arc::new(refusal_builder(refusal_time));
    let mut accept_failures = Throttle::default();
    // One allocation shared by every connection: each takes one reference.
    let shared = Arc::new(Shared {
        builder,
        app: gateway.clone(),
        stopped: stopped.clone(),
        limits,
        registry: Arc::default(),
        reused: std::sync::Mutex::default(),
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors or a connection reset before accept:
                // the listener itself is fine; back off a moment.
                Err(error) => {
                    if let Some(suppressed) = accept_failures.admit(Instant::now()) {
                        tracing::warn!(%error, suppressed, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Without a place to wait or answer from, dropping it closes it.
            let Ok(place) = refusing.clone().try_acquire_owned() else {
                gateway.metrics.connection_refused();
                continue;
            };
            let (slots, refusals) = (slots.clone(), refusals.clone());
            connections.spawn(async move {
                // Room made by closing an idle connection, if one is.
                let made = if shared.registry.close_idlest() {
                    shared.app.metrics.connection_reused();
                    shared
                        .reused
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .note();
                    tokio::time::timeout(refusal_time, slots.acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok)
                } else {
                    None
                };
                match made {
                    Some(slot) => {
                        drop(place);
                        serve_connection(stream, &shared, Arc::new(slot)).await;
                    }
                    None => {
                        shared.app.metrics.connection_refused();
                        refuse(stream, &refusals, refusal_time).await;
                        drop(place);
                    }
                }
            });
            continue;
        };
        connections.spawn(async move {
            serve_connection(stream, &shared, Arc::new(slot)).await;
        });
    }
    tracing::info!("shutting down: no new connections; waiting for requests in flight");
    let deadline = Instant::now() + limits.shutdown_timeout;
    let _ = stop.send(Some(deadline));
    connections.close();
    if tokio::time::timeout_at(deadline, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout reached with requests still open");
    }
    // Forwards whose clients went away still finish and are stored, within
    // what is left of the same deadline.
    gateway.forwards.close();
    if tokio::time::timeout_at(deadline, gateway.forwards.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "shutdown timeout reached with forwards in flight; their keys become outcome unknown"
        );
    }
    sweeper.abort();
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    Ok(())
}

/// At most one warning a second for a failure that repeats every few
/// milliseconds while it lasts (`accept` out of descriptors), so the log
/// cannot be flooded; each warning counts the ones it stood in for.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(suppressed since the last warning)` when a warning is due at
    /// `now`; `None` when this one is to be counted and not written.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// How connections over the limit are served: one request each (HTTP/1.1
/// without keep-alive, so the answer says `Connection: close`), its head
/// within `time`.
fn refusal_builder(time: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(time)
        .max_buf_size(MAX_HEAD)
        .keep_alive(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1);
    builder
}

/// Answers every request of a connection over the limit with the `503`
/// problem until it closes, for `time` at most (an HTTP/2 client may keep
/// its connection open; it has had its answer).
async fn refuse(stream: TcpStream, builder: &auto::Builder<TokioExecutor>, time: Duration) {
    let service = hyper::service::service_fn(|_: hyper::Request<hyper::body::Incoming>| async {
        Ok::<_, std::convert::Infallible>(
            Problem::TooManyConnections
                .respond("the gateway has as many connections as it accepts; retry after a moment"),
        )
    });
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(time, connection).await;
}

/// Watches one connection, in a task of its own so that serving requests
/// costs no timer: a connection that began no request within
/// `--header-timeout` of being accepted is dropped; one that moved no byte
/// and had no request in progress for two samples half `--idle-timeout`
/// apart (so idle for between one and one and a half `--idle-timeout`) is
/// closed gracefully. The samples are taken every half `--idle-timeout`
/// from the accept, beside the header check rather than after it, so that
/// bound holds for the wait after the first request too.
///
/// A graceful close waits for the answer being written, and an answer its
/// client does not read is never written: so if no byte moves for two more
/// samples after the close was asked, the connection is dropped, and with
/// it its place under `--max-connections` and what its answer holds.
async fn watchdog(activity: Arc<Activity>, limits: Limits) {
    let header = tokio::time::sleep(limits.header_timeout);
    tokio::pin!(header);
    let mut header_checked = false;
    let sample = (limits.idle_timeout / 2).max(Duration::from_millis(1));
    let mut samples = tokio::time::interval_at(Instant::now() + sample, sample);
    // A late tick must not be followed at once by another: each sample has
    // to span half `--idle-timeout`.
    samples.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_samples = 0;
    let mut close_asked = false;
    loop {
        tokio::select! {
            () = &mut header, if !header_checked => {
                header_checked = true;
                if activity.begun.load(Ordering::Relaxed) == 0 {
                    activity.drop_now.store(true, Ordering::Relaxed);
                    activity.verdict.notify_one();
                    return;
                }
            }
            _ = samples.tick() => {
                let moved = activity.moved.swap(false, Ordering::Relaxed);
                let busy = activity.in_flight.load(Ordering::Relaxed) > 0;
                idle_samples = if moved || busy { 0 } else { idle_samples + 1 };
                if idle_samples >= 2 {
                    if close_asked {
                        activity.drop_now.store(true, Ordering::Relaxed);
                        activity.verdict.notify_one();
                        return;
                    }
                    activity.verdict.notify_one();
                    close_asked = true;
                    idle_samples = 0;
                }
            }
        }
    }
}

/// What every connection is served with.
struct Shared {
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Arc<Gateway>,
    stopped: watch::Receiver<Option<Instant>>,
    limits: Limits,
    /// The open connections, for room at `--max-connections`.
    registry: Arc<Registry>,
    /// Idle connections closed to make room, warned about once a second.
    reused: std::sync::Mutex<Reused>,
}

/// Counts idle connections closed to make room, and warns at most once a
/// second: a gateway that does this often needs a higher
/// `--max-connections` (or clients that keep fewer connections open).
#[derive(Debug, Default)]
struct Reused(Throttle);

impl Reused {
    fn note(&mut self) {
        if let Some(suppressed) = self.0.admit(Instant::now()) {
            tracing::warn!(
                suppressed,
                "--max-connections reached: closed the connection idle the longest to make room \
                 for a new one; raise --max-connections if this repeats"
            );
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: &Shared, slot: ConnectionSlot) {
    let open = shared.app.metrics.connection_opened();
    let (builder, app, limits) = (&*shared.builder, shared.app.clone(), shared.limits);
    let mut stopped = shared.stopped.clone();
    let activity = Arc::new(Activity::default());
    let _entered = shared.registry.enter(activity.clone());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    // The shared builder's settings, with a header timer of this
    // connection's own: it starts at a head's first byte.
    let mut builder = builder.clone();
    builder
        .http1()
        .timer(HeadTimer::new(activity.reads.clone()));
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let guard = activity.begin();
            let (gateway, slot) = (app.clone(), slot.clone());
            async move {
                // The proxy is the whole application: called directly, no
                // router in between (every path is the upstream's).
                // HTTP/2 ends an unread stream with RST_STREAM instead.
                let request = if request.version() <= hyper::Version::HTTP_11 {
                    request.map(|body| axum::body::Body::new(Lingering::new(body, limits.linger)))
                } else {
                    request.map(axum::body::Body::new)
                };
                let response =
                    super::proxy::handle(axum::extract::State(gateway), request, slot).await;
                drop(guard);
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let watching = tokio::spawn(watchdog(activity.clone(), limits));
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let verdict = activity.verdict.notified();
    tokio::pin!(verdict);
    let mut closing = false;
    // Armed on shutdown: when it ends, a connection that has still begun no
    // request (its first head not yet whole) is dropped.
    let unbegun = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(unbegun);
    let (mut stopping, mut unbegun_checked) = (false, false);
    loop {
        tokio::select! {
            _ = connection.as_mut() => break,
            _ = stopped.wait_for(Option::is_some), if !stopping => {
                // hyper closes an idle connection at once, but waits out a
                // first request head that has begun to arrive (for up to
                // `--header-timeout`), and would hold the shutdown that long.
                stopping = true;
                unbegun
                    .as_mut()
                    .reset(Instant::now() + limits.header_timeout.min(SHUTDOWN_HEAD_TIME));
                if !closing {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            () = unbegun.as_mut(), if stopping && !unbegun_checked => {
                if activity.begun.load(Ordering::Relaxed) == 0 {
                    // No request was begun: nothing to answer or finish.
                    break;
                }
                unbegun_checked = true;
            }
            () = verdict.as_mut() => {
                if activity.drop_now.load(Ordering::Relaxed) {
                    // Never sent a request head (a slowloris, or a client
                    // that connected and forgot), or an answer that has not
                    // moved since the close was asked: nothing to finish.
                    break;
                }
                if !closing {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                verdict.set(activity.verdict.notified());
            }
        }
    }
    watching.abort();
    drop(open);
}

/// A stream that flags when bytes move, and counts the reads that return
/// some (for the header timer and the registry).
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.moved.store(true, Ordering::Relaxed);
            self.activity.reads.count();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved.store(true, Ordering::Relaxed);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved.store(true, Ordering::Relaxed);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Deletes expired records and turns lapsed leases into "outcome unknown"
/// now and then (expired records are never replayed even before this runs).
async fn sweep(gateway: Arc<Gateway>, mut stopped: watch::Receiver<Option<Instant>>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = stopped.wait_for(Option::is_some) => return,
        }
        let now = gateway.now_ms();
        match gateway.store().sweep(now, gateway.sweep_ttl_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "swept expired records and lapsed claims"),
            Err(error) => tracing::warn!(%error, "sweeping expired records failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_failure_is_warned_about_once_a_second_with_a_count() {
        let start = Instant::now();
        let mut throttle = Throttle::default();
        assert_eq!(throttle.admit(start), Some(0));
        for ms in [10, 500, 999] {
            assert_eq!(throttle.admit(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(throttle.admit(start + Duration::from_secs(1)), Some(3));
        assert_eq!(throttle.admit(start + Duration::from_millis(1001)), None);
        assert_eq!(throttle.admit(start + Duration::from_secs(5)), Some(1));
    }
}
