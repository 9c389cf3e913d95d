//! The forward's own HTTP/1.1 connections to a plain-`http` upstream, each
//! polled by the forward that holds it.
//!
//! hyper's pooled client runs every connection as a task of its own, so a
//! forward hands its request to that task and waits to be woken with the
//! answer: two hand-offs between tasks per forward, and for a small answer
//! they cost more than the request's own I/O. Here a forward checks a
//! connection out, drives it itself while it sends and reads, and puts it
//! back idle. `https` upstreams (TLS, HTTP/2) keep hyper's pooled client.
//!
//! The rule that a request is never sent twice holds as in hyper's client:
//! a request goes out on a second connection only when hyper hands it back
//! unsent (the connection was already closed when it was offered). An idle
//! connection is polled once when it is checked out, so one the upstream
//! closed while it sat idle is seen closed and dropped before it is used.
//! Whatever happens after the first byte of the request was written is the
//! caller's [`Failure::Unknown`].

use super::upstream::Failure;
use crate::shared::http_error::describe;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Idle connections kept at most (hyper's pooled client keeps as many).
const MAX_IDLE: usize = 256;

/// An idle connection older than this is closed rather than reused, as by
/// hyper's pooled client: upstreams close idle connections on timers of
/// their own, and a request should not race one.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection: the handle requests are offered on, and the connection
/// future that does its I/O when polled.
pub struct Conn {
    sender: SendRequest<Body>,
    io: Connection<TokioIo<TcpStream>, Body>,
    /// The connection future completed: closed, or failed.
    done: bool,
}

impl Conn {
    /// Lets the connection do the I/O it can, noting when it has ended.
    fn poll_io(&mut self, cx: &mut Context<'_>) {
        if !self.done && Pin::new(&mut self.io).poll(cx).is_ready() {
            self.done = true;
        }
    }

    /// Polls `future` to completion, driving the connection beside it.
    pub async fn drive<F: Future>(&mut self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        poll_fn(|cx| {
            self.poll_io(cx);
            future.as_mut().poll(cx)
        })
        .await
    }

    /// Polls the connection once without waiting: whether it is still open
    /// and ready for a request.
    async fn usable(&mut self) -> bool {
        poll_fn(|cx| {
            self.poll_io(cx);
            Poll::Ready(())
        })
        .await;
        !self.done && self.sender.is_ready()
    }

    /// Runs the connection to its end on a task of its own, for an answer
    /// that streams on after the forward returns.
    pub fn detach(self) {
        if !self.done {
            tokio::spawn(async move {
                let _ = self.io.await;
            });
        }
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Idle connections to one upstream address.
pub struct Pool {
    /// `HOST` or `HOST:PORT` as in `--upstream`, sent as `Host` (made into
    /// a header value once, not per request).
    authority: Option<HeaderValue>,
    /// Where to dial.
    host: String,
    port: u16,
    connect_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    /// A pool for `host:port`, sending `authority` as the `Host` header.
    pub fn new(authority: &str, host: String, port: u16, connect_timeout: Duration) -> Self {
        Self {
            authority: HeaderValue::from_str(authority).ok(),
            host,
            port,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `request` (origin-form target, end-to-end headers) and returns
    /// the answer's head and the connection its body arrives on: the caller
    /// reads the body through [`Conn::drive`] and then [`Pool::put_back`]s
    /// or [`Conn::detach`]es it.
    pub async fn send(
        &self,
        mut request: Request<Body>,
    ) -> Result<(Response<Incoming>, Conn), Failure> {
        if let Some(host) = &self.authority {
            request
                .headers_mut()
                .insert(axum::http::header::HOST, host.clone());
        }
        loop {
            let (mut conn, fresh) = match self.take_idle().await {
                Some(conn) => (conn, false),
                None => (self.connect().await?, true),
            };
            let sent = conn.sender.try_send_request(request);
            match conn.drive(sent).await {
                Ok(response) => return Ok((response, conn)),
                Err(mut error) => match error.take_message() {
                    // Handed back unsent: the connection closed before it
                    // took the request. Another one may carry it, unless
                    // this one was new (then the upstream is refusing).
                    Some(unsent) if !fresh => request = unsent,
                    Some(_) => return Err(Failure::NotSent(describe(error.error()))),
                    None => return Err(Failure::Unknown(describe(error.error()))),
                },
            }
        }
    }

    /// Keeps `conn` for the next forward when it is open and ready (its
    /// answer read whole), else closes it.
    pub async fn put_back(&self, mut conn: Conn) {
        if !conn.usable().await {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// The most recently used idle connection that is still open.
    async fn take_idle(&self) -> Option<Conn> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            let mut conn = idle.conn;
            if idle.since.elapsed() < IDLE_TIMEOUT && conn.usable().await {
                return Some(conn);
            }
        }
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        let dial = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, dial).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(Failure::NotSent(format!("tcp connect error: {e}"))),
            Err(_) => return Err(Failure::NotSent("tcp connect timed out".to_owned())),
        };
        let _ = stream.set_nodelay(true);
        // The handshake is local (no bytes are exchanged for HTTP/1.1).
        let (sender, io) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::NotSent(describe(&e)))?;
        Ok(Conn {
            sender,
            io,
            done: false,
        })
    }
}
