//! The one module that talks HTTP: builds the client from the TLS settings
//! and performs one attempt (the request, any redirects, the whole response
//! body) under a time limit.
//!
//! reqwest's own redirect handling is off: following is done here, through
//! [`super::redirect`], so that the rule about which headers may reach
//! another origin is ours and covers the key and every user header.

use crate::client::input::body::{Body, BodyChanged, FileBody};
use crate::client::input::config::{Config, ConfigError, TlsSettings};
use crate::client::key::prepare::Prepared;
use crate::client::send::redirect::{self, Hop, MAX_REDIRECTS};
use crate::client::send::retry::Failure;
use crate::shared::http_error::{causes, error_chain};
use crate::shared::outside_text::one_line;
use crate::shared::protocol;
use crate::shared::redact::redact_url;
use crate::shared::regular_file::{NotRegular, read_regular};
use futures_util::TryStreamExt;
use reqwest::header::{CONTENT_LENGTH, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// A complete response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: StatusCode,
    /// Headers in order, names lower-case, values decoded lossily.
    pub headers: Vec<(String, String)>,
    /// The first bytes of the body (enough for the `body` output).
    pub head: Vec<u8>,
    /// The body's length.
    pub body_len: u64,
    /// SHA-256 of the whole body.
    pub body_sha256: [u8; 32],
    /// A temporary file holding the whole body; deleted on drop unless kept.
    pub body_file: tempfile::TempPath,
}

impl Response {
    /// Whether this is the gateway's "outcome unknown" problem document.
    pub fn is_outcome_unknown(&self) -> bool {
        self.is_problem(protocol::OUTCOME_UNKNOWN_TYPE)
    }

    /// Whether this is the gateway's "key used for a different request"
    /// problem document.
    pub fn is_key_reused(&self) -> bool {
        self.is_problem(protocol::KEY_REUSED_TYPE)
    }

    /// Whether this is the gateway's "caller not identified" problem
    /// document (its JWT mode refused the bearer token).
    pub fn is_unauthorized(&self) -> bool {
        self.is_problem(protocol::UNAUTHORIZED_TYPE)
    }

    fn is_problem(&self, problem_type: &str) -> bool {
        protocol::is_problem(self.header("content-type"), &self.head, problem_type)
    }

    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An attempt that produced no complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFailure {
    /// What kind of failure, for the retry policy.
    pub kind: Failure,
    /// What happened, in plain words (never a header value or a body).
    pub reason: String,
}

/// The result of one attempt, with notes about redirects followed or refused.
#[derive(Debug)]
pub struct Attempted {
    /// The response, or why there is none.
    pub result: Result<Response, AttemptFailure>,
    /// Log lines about redirects (or the credential renewed for it).
    pub notes: Vec<String>,
    /// Secrets the attempt started to send (a renewed token), to register
    /// with the log's masking before anything else is printed.
    pub masks: Vec<String>,
}

/// Performs attempts of one prepared request.
pub struct Transport {
    client: reqwest::Client,
    follow_redirects: bool,
    /// Other origins a redirect may take a keyed request to (with its key).
    key_origins: Vec<url::Origin>,
    max_response_size: u64,
    head_size: usize,
    body_dir: PathBuf,
}

/// Largest PEM file read for `ca-file`, `client-cert` and `client-key`.
const MAX_PEM_BYTES: u64 = 16 << 20;

fn tls_error(input: &'static str, message: String) -> ConfigError {
    ConfigError { input, message }
}

fn read_pem(input: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    read_regular(path, MAX_PEM_BYTES)
        .map_err(|e| tls_error(input, format!("cannot read `{}`: {e}", path.display())))
}

fn apply_tls(
    mut builder: reqwest::ClientBuilder,
    tls: &TlsSettings,
) -> Result<reqwest::ClientBuilder, ConfigError> {
    if let Some(path) = &tls.ca_file {
        let pem = read_pem("ca-file", path)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|certs| !certs.is_empty())
            .ok_or_else(|| {
                tls_error(
                    "ca-file",
                    format!("`{}` holds no PEM certificate", path.display()),
                )
            })?;
        builder = builder.tls_certs_merge(certs);
    }
    if let Some((cert, key)) = &tls.client_identity {
        let mut pem = read_pem("client-key", key)?;
        pem.push(b'\n');
        pem.extend(read_pem("client-cert", cert)?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|_| {
            tls_error(
                "client-cert",
                "`client-cert` and `client-key` must be a PEM certificate and its PEM private key"
                    .to_owned(),
            )
        })?;
        builder = builder.identity(identity);
    }
    Ok(builder.tls_danger_accept_invalid_certs(tls.insecure))
}

impl Transport {
    /// Builds the HTTP client. Fails like a bad input when a TLS file is
    /// missing or malformed.
    pub fn new(config: &Config, body_dir: PathBuf) -> Result<Self, ConfigError> {
        // The ring provider is the only one compiled in; installing it twice
        // (tests build several transports) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("idempotent-request/", env!("CARGO_PKG_VERSION")));
        let client = apply_tls(builder, &config.tls)?.build().map_err(|e| {
            let input = if config.tls.client_identity.is_some() {
                "client-cert"
            } else {
                "ca-file"
            };
            tls_error(
                input,
                format!("the TLS settings were refused: {}", error_chain(&e)),
            )
        })?;
        Ok(Self {
            client,
            follow_redirects: config.follow_redirects,
            key_origins: config.redirect_key_origins.clone(),
            max_response_size: config.max_response_size,
            // Three bytes more than shown, so a character cut at the limit
            // is seen whole and the cut falls on its boundary.
            head_size: config.max_output_size.saturating_add(3),
            body_dir,
        })
    }

    /// Creates and removes a response body's file, as an answer would: an
    /// error says the body directory cannot hold one. Tried before a
    /// request is sent, since afterwards the server would have acted and
    /// its answer would be lost.
    pub fn check_body_dir(&self) -> std::io::Result<()> {
        self.body_file().map(drop)
    }

    /// A new file for a response body, in the body directory (removed when
    /// dropped, unless kept).
    fn body_file(&self) -> std::io::Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix("idempotent-request-")
            .suffix(".body")
            .tempfile_in(&self.body_dir)
    }

    /// One attempt: the request and any redirects, within `timeout`, with a
    /// `traceparent` span of its own.
    pub async fn attempt(&self, request: &Prepared, timeout: Duration) -> Attempted {
        let mut notes = Vec::new();
        let traceparent = traceparent(request);
        let follow = self.follow(request, traceparent.as_ref(), &mut notes);
        let result = match tokio::time::timeout(timeout, follow).await {
            Ok(result) => result,
            Err(_) => Err(AttemptFailure {
                kind: Failure::NoResponse,
                reason: format!(
                    "no complete response within {}",
                    crate::shared::units::show(timeout)
                ),
            }),
        };
        Attempted {
            result,
            notes,
            masks: Vec::new(),
        }
    }

    /// Sends the request (no redirects followed) and closes the connection
    /// as soon as the response head arrives, reading none of the body: the
    /// answer is lost after the server acted. The status, or why there is
    /// none.
    pub async fn abandon_at_head(
        &self,
        request: &Prepared,
        timeout: Duration,
    ) -> Result<StatusCode, AttemptFailure> {
        let traceparent = traceparent(request);
        let send = self.send(
            request,
            &request.method,
            &request.url,
            true,
            traceparent.as_ref(),
        );
        match tokio::time::timeout(timeout, send).await {
            // Dropping a response whose body was not read closes its
            // connection instead of returning it to the pool.
            Ok(response) => response.map(|r| r.status()),
            Err(_) => Err(AttemptFailure {
                kind: Failure::NoResponse,
                reason: format!(
                    "no response head within {}",
                    crate::shared::units::show(timeout)
                ),
            }),
        }
    }

    async fn follow(
        &self,
        request: &Prepared,
        traceparent: Option<&HeaderValue>,
        notes: &mut Vec<String>,
    ) -> Result<Response, AttemptFailure> {
        let mut method = request.method.clone();
        let mut url = request.url.clone();
        let mut with_body = true;
        for _ in 0..=MAX_REDIRECTS {
            let response = self
                .send(request, &method, &url, with_body, traceparent)
                .await?;
            let status = response.status().as_u16();
            if !self.follow_redirects || !(300..400).contains(&status) {
                return self.read(response).await;
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok());
            match redirect::next_hop(&method, status, &url, location) {
                Hop::Final => return self.read(response).await,
                Hop::Refused(why) => {
                    notes.push(format!("not following the {status} redirect: {why}"));
                    return self.read(response).await;
                }
                Hop::Follow { url: next_url, .. }
                    if request.key.is_some() && !self.key_may_reach(&request.url, &next_url) =>
                {
                    notes.push(format!(
                        "not following the {status} redirect to {}: it is another origin, and the \
                         request would go there without its idempotency key (a retry could then \
                         act twice); list that origin in redirect-key-origins to follow it with \
                         the key",
                        redact_url(&next_url)
                    ));
                    return self.read(response).await;
                }
                Hop::Follow {
                    method: next_method,
                    url: next_url,
                    keep_body,
                } => {
                    notes.push(format!("following {status} to {}", redact_url(&next_url)));
                    method = next_method;
                    url = next_url;
                    with_body &= keep_body;
                }
            }
        }
        Err(AttemptFailure {
            kind: Failure::NoResponse,
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Whether the key may go to `next`: its own origin, or one listed in
    /// `redirect-key-origins`.
    fn key_may_reach(&self, original: &Url, next: &Url) -> bool {
        redirect::same_origin(original, next) || self.key_origins.contains(&next.origin())
    }

    /// Sends one request. Headers from the user go only to the request's
    /// own origin, the key also to a listed origin; the Content-Type goes
    /// wherever the body goes, the `traceparent` everywhere.
    async fn send(
        &self,
        request: &Prepared,
        method: &Method,
        url: &Url,
        with_body: bool,
        traceparent: Option<&HeaderValue>,
    ) -> Result<reqwest::Response, AttemptFailure> {
        let same_origin = redirect::same_origin(&request.url, url);
        let mut builder = self.client.request(method.clone(), url.clone());
        for (index, (name, value)) in request.headers.iter().enumerate() {
            let from_user = index < request.user_header_count;
            let is_body_header = name == reqwest::header::CONTENT_TYPE;
            if (same_origin || !from_user) && (with_body || !is_body_header) {
                builder = builder.header(name, value);
            }
        }
        if let Some((_, (name, value))) = &request.key
            && self.key_may_reach(&request.url, url)
        {
            builder = builder.header(name, value);
        }
        if let Some(value) = traceparent {
            builder = builder.header("traceparent", value);
        }
        if with_body {
            builder = attach_body(builder, &request.body).await?;
        }
        builder.send().await.map_err(|e| classify(&e))
    }

    /// Reads the whole body into a temporary file, keeping its first bytes.
    async fn read(&self, response: reqwest::Response) -> Result<Response, AttemptFailure> {
        let status = response.status();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let too_large = |len: u64| AttemptFailure {
            kind: Failure::TooLarge,
            reason: format!(
                "the response body ({len} bytes or more) is larger than max-response-size ({} bytes)",
                self.max_response_size
            ),
        };
        if let Some(len) = response
            .content_length()
            .filter(|&l| l > self.max_response_size)
        {
            return Err(too_large(len));
        }
        let mut file = self
            .body_file()
            .map_err(|e| local_failure(&self.body_dir, e))?;
        let mut head = Vec::new();
        let mut total = 0u64;
        let mut hasher = Sha256::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.try_next().await.map_err(|e| classify(&e))? {
            total += chunk.len() as u64;
            hasher.update(&chunk);
            if total > self.max_response_size {
                return Err(too_large(total));
            }
            let room = self.head_size.saturating_sub(head.len());
            head.extend_from_slice(&chunk[..room.min(chunk.len())]);
            file.write_all(&chunk)
                .map_err(|e| local_failure(&self.body_dir, e))?;
        }
        file.flush().map_err(|e| local_failure(&self.body_dir, e))?;
        Ok(Response {
            status,
            headers,
            head,
            body_len: total,
            body_sha256: hasher.finalize().into(),
            body_file: file.into_temp_path(),
        })
    }
}

/// The `traceparent` of one attempt of `request`: a fresh span, when ours.
fn traceparent(request: &Prepared) -> Option<HeaderValue> {
    request
        .trace
        .header_for_attempt(rand::random())
        .and_then(|value| HeaderValue::from_str(&value).ok())
}

async fn attach_body(
    builder: reqwest::RequestBuilder,
    body: &Body,
) -> Result<reqwest::RequestBuilder, AttemptFailure> {
    Ok(match body {
        Body::Empty => builder,
        Body::Bytes(bytes) => builder.body(bytes.clone()),
        Body::File(file) => {
            let (opened, digest) = file
                .open()
                .and_then(|opened| {
                    let digest = file.sha256.ok_or_else(|| {
                        std::io::Error::other("the body file's digest was not pinned")
                    })?;
                    Ok((opened, digest))
                })
                .map_err(|e| body_failure(file, &e))?;
            // A fixed Content-Length (not chunked encoding) keeps every
            // attempt byte-identical and lets the server see the size.
            builder
                .header(CONTENT_LENGTH, HeaderValue::from(file.len))
                .body(reqwest::Body::wrap_stream(verified_stream(
                    tokio::fs::File::from_std(opened),
                    file.clone(),
                    digest,
                )))
        }
    })
}

/// The file's bytes, failing before the last chunk leaves when they do not
/// hash to `digest`: the server then sees an upload cut short (fewer bytes
/// than its `Content-Length`), never a whole body other than the one the
/// key was derived for.
fn verified_stream(
    file: tokio::fs::File,
    body: FileBody,
    digest: [u8; 32],
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    struct State {
        chunks: tokio_util::io::ReaderStream<tokio::fs::File>,
        hasher: Sha256,
        sent: u64,
        body: FileBody,
        digest: [u8; 32],
        done: bool,
    }
    let state = State {
        chunks: tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024),
        hasher: Sha256::new(),
        sent: 0,
        body,
        digest,
        done: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let item = match futures_util::StreamExt::next(&mut state.chunks).await {
            Some(Ok(chunk)) => {
                state.sent += chunk.len() as u64;
                state.hasher.update(&chunk);
                if state.sent > state.body.len {
                    Err(state.body.changed("it grew while it was sent".to_owned()))
                } else if state.sent == state.body.len
                    && <[u8; 32]>::from(state.hasher.clone().finalize()) != state.digest
                {
                    Err(state
                        .body
                        .changed("its bytes differ from those the key was derived for".to_owned()))
                } else {
                    Ok(chunk)
                }
            }
            Some(Err(e)) => Err(e),
            None if state.sent < state.body.len => {
                Err(state.body.changed("it shrank while it was sent".to_owned()))
            }
            None => return None,
        };
        state.done = item.is_err();
        Some((item, state))
    })
}

/// A body file that could not be sent: changed (final, exit 2) or unreadable.
fn body_failure(file: &FileBody, e: &std::io::Error) -> AttemptFailure {
    let changed = e
        .get_ref()
        .is_some_and(|inner| inner.is::<BodyChanged>() || inner.is::<NotRegular>());
    AttemptFailure {
        kind: if changed {
            Failure::BodyChanged
        } else {
            Failure::Local
        },
        reason: one_line(&format!(
            "cannot send body-file `{}`: {e}",
            file.path.display()
        )),
    }
}

fn local_failure(dir: &std::path::Path, e: std::io::Error) -> AttemptFailure {
    AttemptFailure {
        kind: Failure::Local,
        reason: format!(
            "cannot store the response body under `{}`: {e}",
            dir.display()
        ),
    }
}

/// Classifies a reqwest error for the retry policy and describes it in
/// plain words, without the URL (it may hold credentials).
fn classify(error: &reqwest::Error) -> AttemptFailure {
    if let Some(changed) = causes(error).find_map(|e| e.downcast_ref::<BodyChanged>()) {
        return AttemptFailure {
            kind: Failure::BodyChanged,
            reason: one_line(&format!(
                "{changed}; the upload was cut off before its last byte, so the server never \
                 received the changed body whole"
            )),
        };
    }
    // Certificate names and alert texts come from the peer: one inert line.
    if let Some(tls) = causes(error).find_map(|e| e.downcast_ref::<rustls::Error>()) {
        return AttemptFailure {
            kind: Failure::Tls,
            reason: one_line(&format!("TLS failure: {tls}")),
        };
    }
    // A head hyper could not parse (HTTP/1.1) is an answer, not a lost
    // one; reqwest does not expose it as a kind of its own error.
    if let Some(parse) = causes(error)
        .filter_map(|e| e.downcast_ref::<hyper::Error>())
        .find(|e| e.is_parse())
    {
        // hyper's own words for `Parse::TooLarge`: its `is_parse_too_large`
        // exists only in builds with its server, which the client is not.
        // hyper gives the same error for a `Content-Length` it cannot
        // frame, and the head is gone by then: the reason names both.
        if parse.to_string().contains("message head is too large") {
            return AttemptFailure {
                kind: Failure::HeadTooLarge,
                reason: format!(
                    "the server's response head is larger than this client reads (at most \
                     {HEAD_FIELDS} header fields and {} KiB in all over HTTP/1.1), or declares \
                     a body longer than HTTP/1.1 can frame (a Content-Length of 2^64 - 2 bytes \
                     or more)",
                    HEAD_BYTES / 1024
                ),
            };
        }
        // hyper's own fixed words (`invalid HTTP status-code parsed`),
        // never the peer's bytes.
        return AttemptFailure {
            kind: Failure::NotHttp,
            reason: one_line(&format!(
                "the server's answer is not a valid HTTP response ({parse})"
            )),
        };
    }
    let kind = if error.is_connect() {
        Failure::NotSent
    } else {
        Failure::NoResponse
    };
    AttemptFailure {
        kind,
        reason: plain_words(error),
    }
}

/// The most header fields the HTTP client reads in a response head
/// (hyper's HTTP/1.1 default).
const HEAD_FIELDS: usize = 100;

/// The most bytes of a response head the HTTP client reads over HTTP/1.1
/// (hyper's read buffer: 8 KiB and 4 KiB a field).
const HEAD_BYTES: u64 = 8192 + 4096 * 100;

/// Says what went wrong in words a CI log reader knows.
fn plain_words(error: &reqwest::Error) -> String {
    use std::io::ErrorKind::*;
    let io_kind = causes(error)
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind)
        .find(|kind| *kind != Other);
    let detail = error_chain(error);
    let phase = if error.is_connect() {
        "could not connect"
    } else {
        "no complete response"
    };
    match io_kind {
        Some(ConnectionRefused) => format!("{phase}: connection refused"),
        Some(ConnectionReset) => format!("{phase}: the connection was reset"),
        Some(TimedOut) => format!("{phase}: timed out"),
        _ if error.is_timeout() => format!("{phase}: timed out"),
        _ if detail.contains("connection closed before message completed") => {
            "no complete response: the server closed the connection before answering".to_owned()
        }
        _ if detail.contains("dns error") => format!("{phase}: DNS lookup failed ({detail})"),
        _ => format!("{phase}: {detail}"),
    }
}

/// Whether the server marked the response as a replay.
pub fn is_replayed(response: &Response) -> bool {
    protocol::replay_marker(&response.headers).is_some()
}
