//! The upstream client: sends a request to `--upstream` with the request
//! target exactly as received (see [`super::target`]) and the end-to-end
//! headers only (see [`super::hop`]), over pooled keep-alive connections
//! (HTTP/1.1, or HTTP/2 where TLS negotiates it), and reads or streams the
//! answer. A forward to an `http` upstream drives a connection of its own
//! ([`super::upstream_pool`]); everything else uses hyper's pooled client.
//! Failures are sorted by what they mean for idempotency: nothing reached
//! the upstream ([`Failure::NotSent`]) or it may have acted
//! ([`Failure::Unknown`]).

use super::hop;
use super::target::Base;
use super::upstream_pool::{Conn, Pool};
use crate::shared::http_error::describe;
use axum::body::Body;
use axum::http::{HeaderMap, Request, Response, Uri, request::Parts};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Why there is no answer.
#[derive(Debug)]
pub enum Failure {
    /// Nothing reached the upstream (DNS, refused, TLS handshake).
    NotSent(String),
    /// Sent; whether it acted is unknown (reset, timeout, cut-off answer).
    Unknown(String),
}

/// An answer read whole, within `limit` bytes.
pub struct Complete {
    /// Status code.
    pub status: u16,
    /// End-to-end headers, in order, repeated ones kept.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body as sent (content encoding untouched).
    pub body: Vec<u8>,
}

/// An answer larger than the limit: what was read, and the rest.
pub struct TooLarge {
    /// Status code.
    pub status: u16,
    /// End-to-end headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The bytes read so far.
    pub prefix: Vec<u8>,
    /// The rest of the body, still streaming.
    pub rest: Incoming,
}

/// A read answer.
pub enum Answer {
    /// Whole, within the limit.
    Complete(Complete),
    /// Too large to keep.
    TooLarge(TooLarge),
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The upstream and the client that reaches it.
pub struct Upstream {
    client: Client<Connector, Body>,
    /// The forwards' own connections, for an `http` upstream.
    pool: Option<Pool>,
    base: Base,
    timeout: Duration,
}

impl Upstream {
    /// A client for `url` whose answers must be complete within `timeout`.
    /// An `https` upstream is verified against the platform's roots and
    /// the CA certificates in `ca_file` (`--upstream-ca-file`); an `http`
    /// one needs neither, so a host without CA certificates (a container
    /// built from scratch) can serve it.
    pub fn new(
        url: &url::Url,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connect_timeout = timeout.min(Duration::from_secs(10));
        http.set_connect_timeout(Some(connect_timeout));
        let roots = match url.scheme() {
            "https" => {
                let roots = crate::gateway::tls::roots(ca_file, "--upstream-ca-file")?;
                if roots.is_empty() {
                    return Err(
                        "no CA certificates to verify the https upstream with: this \
                                host has none (install its CA certificates package) and no \
                                --upstream-ca-file was given"
                            .to_owned(),
                    );
                }
                roots
            }
            _ => rustls::RootCertStore::empty(),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::gateway::tls::client_config(roots)?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        let base = Base::new(url)?;
        let pool = match (url.scheme(), url.host_str(), url.port_or_known_default()) {
            ("http", Some(host), Some(port)) => {
                // `url` keeps IPv6 hosts in brackets; dialling wants them bare.
                let dial = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                Some(Pool::new(base.authority(), dial, port, connect_timeout))
            }
            _ => None,
        };
        Ok(Self {
            client,
            pool,
            base,
            timeout,
        })
    }

    /// The time an answer must be complete within.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The request for the upstream: `parts`' method, its target (already
    /// checked) under the prefix, its end-to-end headers, `body`. The target
    /// in absolute form for hyper's pooled client, which sends the origin
    /// form; in origin form for a connection of the [`Pool`].
    fn request(
        &self,
        parts: &Parts,
        body: Body,
        origin_form: bool,
    ) -> Result<Request<Body>, Failure> {
        let target = parts
            .uri
            .path_and_query()
            .ok_or_else(|| Failure::NotSent("the request has no target".to_owned()))?;
        let uri = if origin_form {
            self.base.origin(target).map(Uri::from)
        } else {
            self.base.uri(target)
        }
        .map_err(Failure::NotSent)?;
        let mut request = Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .body(body)
            .map_err(|e| Failure::NotSent(describe(&e)))?;
        let headers = request.headers_mut();
        for (name, value) in &parts.headers {
            headers.append(name, value.clone());
        }
        hop::strip_for_forwarding(headers);
        Ok(request)
    }

    /// Sends `parts` with `body` on hyper's pooled client; returns the
    /// answer's head and its streaming body. Bounded by the timeout only up
    /// to the head: the caller bounds the body.
    pub async fn send(&self, parts: &Parts, body: Body) -> Result<Response<Incoming>, Failure> {
        let request = self.request(parts, body, false)?;
        let sent = tokio::time::timeout(self.timeout, self.client.request(request)).await;
        match sent {
            Err(_) => Err(self.no_answer()),
            Ok(Err(e)) if e.is_connect() => Err(Failure::NotSent(describe(&e))),
            Ok(Err(e)) => Err(Failure::Unknown(describe(&e))),
            Ok(Ok(response)) => Ok(response),
        }
    }

    fn no_answer(&self) -> Failure {
        Failure::Unknown(format!(
            "no answer within {}",
            crate::shared::units::show(self.timeout)
        ))
    }

    /// Sends, then reads the answer whole when it fits in `limit` bytes,
    /// all within the timeout: on a connection of the [`Pool`] for an `http`
    /// upstream, else on hyper's pooled client.
    pub async fn call(&self, parts: &Parts, body: Body, limit: usize) -> Result<Answer, Failure> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let Some(pool) = &self.pool else {
            let response = self.send(parts, body).await?;
            return self.read(response, deadline, limit, None).await;
        };
        let request = self.request(parts, body, true)?;
        let (response, mut conn) = tokio::time::timeout_at(deadline, pool.send(request))
            .await
            .map_err(|_| self.no_answer())??;
        let answer = self.read(response, deadline, limit, Some(&mut conn)).await;
        match &answer {
            Ok(Answer::Complete(_)) => pool.put_back(conn).await,
            // The rest of the body streams on after the forward returns.
            Ok(Answer::TooLarge(_)) => conn.detach(),
            Err(_) => {}
        }
        answer
    }

    /// Reads `response`'s body whole within `deadline` and `limit`, driving
    /// `conn` beside it when the forward holds its connection.
    async fn read(
        &self,
        response: Response<Incoming>,
        deadline: tokio::time::Instant,
        limit: usize,
        mut conn: Option<&mut Conn>,
    ) -> Result<Answer, Failure> {
        let (head, mut incoming) = response.into_parts();
        unasked_switch(head.status)?;
        let status = head.status.as_u16();
        let headers = end_to_end(head.headers);
        let mut body = Vec::new();
        loop {
            let next = incoming.frame();
            let frame = match conn.as_deref_mut() {
                Some(conn) => tokio::time::timeout_at(deadline, conn.drive(next)).await,
                None => tokio::time::timeout_at(deadline, next).await,
            };
            match frame {
                Err(_) => {
                    return Err(Failure::Unknown(format!(
                        "the answer did not complete within {}",
                        crate::shared::units::show(self.timeout)
                    )));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(Failure::Unknown(format!(
                        "the answer broke off: {}",
                        describe(&e)
                    )));
                }
                Ok(Some(Ok(frame))) => {
                    let Ok(chunk) = frame.into_data() else {
                        continue; // trailers are hop-by-hop here
                    };
                    body.extend_from_slice(&chunk);
                    if body.len() > limit {
                        return Ok(Answer::TooLarge(TooLarge {
                            status,
                            headers,
                            prefix: body,
                            rest: incoming,
                        }));
                    }
                }
            }
        }
        Ok(Answer::Complete(Complete {
            status,
            headers,
            body,
        }))
    }

    /// Proxies a request as it is (streaming its body and the answer's).
    pub async fn pass_through(&self, parts: &Parts, body: Body) -> Result<Response<Body>, Failure> {
        let response = self.send(parts, body).await?;
        let (mut head, incoming) = response.into_parts();
        unasked_switch(head.status)?;
        hop::strip(&mut head.headers);
        Ok(Response::from_parts(head, Body::new(incoming)))
    }
}

/// A final answer in the 1xx range: hyper passes on only `101 Switching
/// Protocols`, which no request the gateway sends asks for (`Upgrade` is
/// hop-by-hop and removed). The upstream had the request, so whether it
/// acted is unknown; storing or replaying a 101 would hand the client a
/// switch to a protocol nobody speaks.
fn unasked_switch(status: axum::http::StatusCode) -> Result<(), Failure> {
    if status.is_informational() {
        return Err(Failure::Unknown(format!(
            "the upstream answered {} without being asked to switch protocols",
            status.as_u16()
        )));
    }
    Ok(())
}

/// The answer's end-to-end headers as stored: names and raw values, in order.
fn end_to_end(mut headers: HeaderMap) -> Vec<(String, Vec<u8>)> {
    hop::strip(&mut headers);
    headers.remove(axum::http::header::CONTENT_LENGTH);
    let mut out = Vec::with_capacity(headers.len());
    let mut last = None;
    for (name, value) in headers {
        if let Some(name) = name {
            last = Some(name);
        }
        if let Some(name) = &last {
            out.push((name.as_str().to_owned(), value.as_bytes().to_vec()));
        }
    }
    out
}
