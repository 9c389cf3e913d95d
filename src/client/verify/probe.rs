//! The requests of `verify`, and its only I/O: each check's requests sent
//! through the client's [`Transport`], their answers reduced to what
//! [`super::judge`] compares.
//!
//! Every request carries a key made for verification: a random UUIDv4 per
//! check, never derived from the CI identity, so no real step sends it.
//! Answers refused while the key is in flight (409, 425, 429) are asked
//! again after their `Retry-After` (at most [`MAX_WAIT`] each) while the
//! deadline allows; nothing else is retried, since a retry would hide what
//! the server did.

use crate::client::input::body::Body;
use crate::client::input::status::StatusSet;
use crate::client::key::derive::{self, KeyFormat};
use crate::client::key::prepare::{Key, KeySource, Prepared};
use crate::client::key::trace::{self, Trace};
use crate::client::send::retry::Failure;
use crate::client::send::retry_after;
use crate::client::send::transport::{Attempted, Response, Transport};
use crate::client::verify::judge::{Answer, Observations, Rest, Sent};
use crate::github::oidc::Minter;
use bytes::Bytes;
use reqwest::header::{HeaderName, HeaderValue};
use std::time::{Duration, Instant, SystemTime};

/// The longest wait before asking again about a key in flight.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// How many times one request is asked again while its key is in flight.
const MAX_IN_FLIGHT_RETRIES: u32 = 10;

/// Why verification stopped before any check could be judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable(pub String);

/// Sends the checks' requests.
pub struct Probe<'a> {
    transport: &'a Transport,
    base: Prepared,
    settings: ProbeSettings,
    /// With `oidc-audience`: mints the tokens of the new-token check and
    /// of the retention check (sent after a wait the first token may not
    /// outlive).
    minter: Option<Minter<'a>>,
    /// Requests sent so far.
    pub sent: u32,
    /// Tokens minted by the probe, for the log to mask.
    pub minted: Vec<String>,
}

/// What a probe needs besides the transport and the request.
pub struct ProbeSettings {
    /// `key-header`.
    pub key_header: HeaderName,
    /// `key-format`.
    pub key_format: KeyFormat,
    /// `timeout`: one request.
    pub timeout: Duration,
    /// When `deadline` runs out (the retention wait is added to it).
    pub deadline_at: Instant,
    /// `verify-id-field`.
    pub id_field: Option<String>,
    /// `accept-status`.
    pub accept: StatusSet,
}

impl<'a> Probe<'a> {
    /// A probe of `base` (its body must be in memory: see [`in_memory`]).
    pub fn new(transport: &'a Transport, base: Prepared, settings: ProbeSettings) -> Self {
        Self {
            transport,
            base,
            settings,
            minter: None,
            sent: 0,
            minted: Vec::new(),
        }
    }

    /// With `oidc-audience`: `base` carries a token `minter` minted.
    pub fn with_minter(mut self, minter: Minter<'a>) -> Self {
        self.minter = Some(minter);
        self
    }

    /// Runs every check's requests in order; `Err` when the very first
    /// request got no answer at all.
    pub async fn observe(
        &mut self,
        concurrency: u32,
        retention: Option<Duration>,
    ) -> Result<Observations, Unreachable> {
        let replay_request = self.keyed(&fresh_key(), None);
        let first = self.send(&replay_request).await;
        if let Err(reason) = &first {
            return Err(Unreachable(reason.clone()));
        }
        let second = self.settle(&replay_request).await;
        let usable = matches!(&first, Ok(answer) if self.settings.accept.contains(answer.status));
        if !usable {
            return Ok(Observations {
                replay: (first, second),
                rest: None,
            });
        }
        let lost = self.lost_response().await;
        let changed = self.changed_payload().await;
        let concurrent = self.concurrent(concurrency).await;
        let no_key = self.send(&self.unkeyed()).await;
        let new_token = if self.minter.is_some() {
            Some(self.new_token(&replay_request).await)
        } else {
            None
        };
        let retention = match retention {
            Some(wait) => {
                self.settings.deadline_at += wait;
                tokio::time::sleep(wait).await;
                let mut later = replay_request.clone();
                // A re-run that late mints its own token; the first may
                // have expired during the wait.
                if let Some(Ok(token)) = self.mint().await {
                    later.replace_bearer(&token);
                }
                Some((self.settle(&later).await, wait))
            }
            None => None,
        };
        Ok(Observations {
            replay: (first, second),
            rest: Some(Rest {
                lost,
                changed,
                concurrent,
                no_key,
                new_token,
                retention,
            }),
        })
    }

    /// A token minted now, when there is a minter (kept for masking).
    async fn mint(&mut self) -> Option<Result<String, String>> {
        let minter = self.minter.as_ref()?;
        let minted = minter.mint(self.settings.timeout).await;
        if let Ok(token) = &minted {
            self.minted.push(token.clone());
        }
        Some(minted)
    }

    /// The replay check's request again with a newly minted token, as a
    /// re-run sends it; `Err` when no new token came.
    async fn new_token(&mut self, replay_request: &Prepared) -> Result<Sent, String> {
        let token = match self.mint().await {
            Some(Ok(token)) => token,
            Some(Err(why)) => return Err(format!("no second token: {why}")),
            None => return Err("no token service".to_owned()),
        };
        let mut request = replay_request.clone();
        let before = request.headers.first().map(|(_, value)| value.clone());
        request.replace_bearer(&token);
        if request.headers.first().map(|(_, value)| value.clone()) == before {
            return Err("the token service answered with the same token again".to_owned());
        }
        Ok(self.settle(&request).await)
    }

    async fn lost_response(&mut self) -> (Result<u16, String>, Sent, Sent) {
        let request = self.keyed(&fresh_key(), None);
        self.sent += 1;
        let abandoned = self
            .transport
            .abandon_at_head(&request, self.settings.timeout)
            .await
            .map(|status| status.as_u16())
            .map_err(|failure| failure.reason);
        let retry = self.settle(&request).await;
        let again = self.settle(&request).await;
        (abandoned, retry, again)
    }

    async fn changed_payload(&mut self) -> Option<(Sent, Sent)> {
        let Body::Bytes(bytes) = &self.base.body else {
            return None;
        };
        let changed = changed_body(bytes);
        let key = fresh_key();
        let first = self.settle(&self.keyed(&key, None)).await;
        let second = self.send(&self.keyed(&key, Some(changed))).await;
        Some((first, second))
    }

    async fn concurrent(&mut self, n: u32) -> (Vec<Sent>, Sent) {
        let request = self.keyed(&fresh_key(), None);
        let timeout = self.settings.timeout;
        self.sent += n;
        let attempts = (0..n).map(|_| self.transport.attempt(&request, timeout));
        let burst = futures_util::future::join_all(attempts).await;
        let burst = burst
            .into_iter()
            .map(|attempted| answer(attempted, self.settings.id_field.as_deref()))
            .collect();
        let after = self.settle(&request).await;
        (burst, after)
    }

    /// One request, one attempt.
    async fn send(&mut self, request: &Prepared) -> Sent {
        self.sent += 1;
        let attempted = self.transport.attempt(request, self.settings.timeout).await;
        answer(attempted, self.settings.id_field.as_deref())
    }

    /// One request, asked again while its key is in flight.
    async fn settle(&mut self, request: &Prepared) -> Sent {
        let mut sent = self.send(request).await;
        for _ in 0..MAX_IN_FLIGHT_RETRIES {
            let wait = match &sent {
                Ok(answer) if answer.is_in_flight() => answer
                    .headers
                    .iter()
                    .find(|(name, _)| name == "retry-after")
                    .and_then(|(_, value)| retry_after::parse(value, SystemTime::now()))
                    .unwrap_or(Duration::from_secs(1))
                    .min(MAX_WAIT),
                _ => break,
            };
            if Instant::now() + wait >= self.settings.deadline_at {
                break;
            }
            tokio::time::sleep(wait).await;
            sent = self.send(request).await;
        }
        sent
    }

    /// The request with `key` (and `body` instead of its own, if given).
    fn keyed(&self, key: &str, body: Option<Bytes>) -> Prepared {
        let mut request = self.unkeyed();
        let text = derive::header_value(key, self.settings.key_format);
        if let Ok(value) = HeaderValue::from_str(&text) {
            let key = Key {
                value: key.to_owned(),
                source: KeySource::Random,
                caveat: None,
            };
            request.key = Some((key, (self.settings.key_header.clone(), value)));
        }
        if let Trace::Ours(_) = request.trace {
            request.trace = Trace::Ours(trace::trace_id(Some(key)));
        }
        if let Some(body) = body {
            request.body = Body::Bytes(body);
        }
        request
    }

    /// The request without any key.
    fn unkeyed(&self) -> Prepared {
        let mut request = self.base.clone();
        request.key = None;
        if let Trace::Ours(_) = request.trace {
            request.trace = Trace::Ours(trace::trace_id(None));
        }
        request
    }
}

/// A fresh verification key.
fn fresh_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The changed payload: a JSON object with one member more, a JSON array
/// with one element more, anything else with a newline appended.
pub fn changed_body(body: &[u8]) -> Bytes {
    const MARK: &str = "idempotent-request-verify";
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut members)) => {
            members.insert(MARK.to_owned(), "changed payload".into());
            Bytes::from(serde_json::Value::Object(members).to_string())
        }
        Ok(serde_json::Value::Array(mut elements)) => {
            elements.push(MARK.into());
            Bytes::from(serde_json::Value::Array(elements).to_string())
        }
        _ => {
            let mut changed = body.to_vec();
            changed.push(b'\n');
            Bytes::from(changed)
        }
    }
}

/// The largest `body-file` verification reads into memory: it sends the
/// body many times and changes it once.
pub const MAX_FILE_BODY: u64 = 64 << 20;

/// `body` with a file read into memory (at most [`MAX_FILE_BODY`]).
pub fn in_memory(body: Body) -> std::io::Result<Body> {
    match body {
        Body::File(file) => crate::shared::regular_file::read_regular(&file.path, MAX_FILE_BODY)
            .map(|bytes| Body::Bytes(Bytes::from(bytes))),
        other => Ok(other),
    }
}

/// An attempt's answer, or why there was none.
fn answer(attempted: Attempted, id_field: Option<&str>) -> Sent {
    match attempted.result {
        Ok(response) => Ok(reduce(response, id_field)),
        Err(failure) if failure.kind == Failure::TooLarge => {
            Err(format!("{} (raise max-response-size)", failure.reason))
        }
        Err(failure) => Err(failure.reason),
    }
}

fn reduce(response: Response, id_field: Option<&str>) -> Answer {
    let id = id_field.and_then(|pointer| {
        let bytes = std::fs::read(&response.body_file).ok()?;
        let document = serde_json::from_slice::<serde_json::Value>(&bytes).ok()?;
        document.pointer(pointer).map(serde_json::Value::to_string)
    });
    Answer {
        status: response.status.as_u16(),
        headers: response.headers,
        body_len: response.body_len,
        body_sha256: response.body_sha256,
        id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_changed_body_differs_and_stays_the_same_kind() {
        let object = changed_body(br#"{"ref":"v1"}"#);
        let value: serde_json::Value = serde_json::from_slice(&object).unwrap();
        assert_eq!(value["ref"], "v1");
        assert_eq!(value["idempotent-request-verify"], "changed payload");
        let array: serde_json::Value = serde_json::from_slice(&changed_body(b"[1]")).unwrap();
        assert_eq!(array.as_array().unwrap().len(), 2);
        assert_eq!(&changed_body(b"a=b")[..], b"a=b\n");
    }
}
