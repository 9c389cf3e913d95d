//! Turns a [`Config`] into the exact request every attempt sends, including
//! its idempotency key. After this stage nothing about the request changes:
//! every attempt sends the same method, URL, headers, key and body bytes.

use crate::client::input::body::Body;
use crate::client::input::config::Config;
use crate::client::input::headers::Header;
use crate::client::key::derive;
use crate::client::key::fingerprint;
use crate::client::key::provider::Identity;
use crate::client::key::trace::{self, Trace};
use crate::shared::env::Env;
use reqwest::Method;
use reqwest::header::HeaderValue;

/// Where the key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `idempotency-key`.
    Explicit,
    /// Derived from the CI identity of this provider.
    Derived(&'static str),
    /// No CI and no salt: a random key for this invocation only.
    Random,
}

/// The idempotency key of this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The key itself.
    pub value: String,
    /// Where it came from.
    pub source: KeySource,
    /// On a CI system where a re-run starts a new build, what that means
    /// for this key (the log says it).
    pub caveat: Option<String>,
}

/// `Bearer TOKEN`, marked sensitive (never shown by a `Debug`); `None` for
/// a token that cannot be a header value.
fn bearer_value(token: &str) -> Option<reqwest::header::HeaderValue> {
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The request every attempt sends.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Method.
    pub method: Method,
    /// URL.
    pub url: url::Url,
    /// Headers, user headers first (see [`Config::user_header_count`]).
    pub headers: Vec<Header>,
    /// How many of `headers` came from the user.
    pub user_header_count: usize,
    /// The key and its header, when one is sent.
    pub key: Option<(Key, Header)>,
    /// Body (a file's digest pinned).
    pub body: Body,
    /// The trace context every attempt carries.
    pub trace: Trace,
}

impl Prepared {
    /// Sends an OIDC token as `Authorization: Bearer`. Added after the key
    /// is derived, so it never feeds it, and as a user header, so it never
    /// follows a redirect to another origin.
    pub fn add_bearer(&mut self, token: &str) {
        let Some(value) = bearer_value(token) else {
            return;
        };
        self.headers
            .insert(0, (reqwest::header::AUTHORIZATION, value));
        self.user_header_count += 1;
    }

    /// Replaces the bearer [`Self::add_bearer`] added (always the first
    /// header).
    pub fn replace_bearer(&mut self, token: &str) {
        let Some(value) = bearer_value(token) else {
            return;
        };
        if let Some((name, old)) = self.headers.first_mut()
            && *name == reqwest::header::AUTHORIZATION
        {
            *old = value;
        }
    }

    /// The key that is sent, or `""` when none is.
    pub fn key_value(&self) -> &str {
        self.key.as_ref().map_or("", |(key, _)| key.value.as_str())
    }

    /// The log line that says which key is sent and where it came from
    /// (`None` for an unsafe method without a key, which cannot happen).
    pub fn key_line(&self) -> Option<String> {
        match &self.key {
            None if is_safe(&self.method) => Some(format!(
                "{} is a safe method: no idempotency key is sent (give `idempotency-key` to send one)",
                self.method
            )),
            None => None,
            Some((key, (header, _))) => {
                let source = match key.source {
                    KeySource::Explicit => "given with idempotency-key".to_owned(),
                    KeySource::Derived(provider) => {
                        format!("derived from the {provider} run identity")
                    }
                    KeySource::Random => "random for this invocation: no CI was detected and no \
                                          key-salt is set, so another invocation sends a different \
                                          key (set key-salt for a stable one)"
                        .to_owned(),
                };
                let caveat = key
                    .caveat
                    .as_deref()
                    .map_or_else(String::new, |caveat| format!("; {caveat}"));
                Some(format!("{header}: {} ({source}){caveat}", key.value))
            }
        }
    }
}

/// Methods that are safe by definition (RFC 9110 §9.2.1) get no key unless
/// one is given explicitly.
pub fn is_safe(method: &Method) -> bool {
    [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE].contains(method)
}

/// Failure to prepare the request: the body file could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash `body-file` for the key: {0}")]
pub struct PrepareError(#[from] pub std::io::Error);

/// Resolves the key (explicit, derived or random), pins a file body's
/// digest and the trace context, and assembles the request.
pub fn prepare(config: Config, env: &Env) -> Result<Prepared, PrepareError> {
    let (key, file_digest) = resolve_key(&config, env)?;
    let mut body = config.body;
    if let Body::File(file) = &mut body {
        file.pin(file_digest)?;
    }
    let trace = match (config.user_traceparent, config.send_traceparent) {
        (Some(theirs), _) => Trace::Users(theirs.trace_id),
        (None, true) => Trace::Ours(trace::trace_id(key.as_ref().map(|k| k.value.as_str()))),
        (None, false) => Trace::Off,
    };
    let key = key.map(|key| {
        let text = derive::header_value(&key.value, config.key.format);
        // Keys are visible ASCII (validated or UUIDs), always a valid value.
        let value = HeaderValue::from_str(&text).expect("keys are visible ASCII");
        (key, (config.key.header.clone(), value))
    });
    Ok(Prepared {
        method: config.method,
        url: config.url,
        headers: config.headers,
        user_header_count: config.user_header_count,
        key,
        body,
        trace,
    })
}

/// The key, and a file body's digest when deriving it read the file.
fn resolve_key(
    config: &Config,
    env: &Env,
) -> Result<(Option<Key>, Option<[u8; 32]>), PrepareError> {
    if let Some(value) = &config.key.explicit {
        let key = Key {
            value: value.clone(),
            source: KeySource::Explicit,
            caveat: None,
        };
        return Ok((Some(key), None));
    }
    if is_safe(&config.method) {
        return Ok((None, None));
    }
    let identity = Identity::detect(env, config.key.scope);
    if identity.provider == "local" && config.key.salt.is_empty() {
        let key = Key {
            value: uuid::Uuid::new_v4().to_string(),
            source: KeySource::Random,
            caveat: None,
        };
        return Ok((Some(key), None));
    }
    let (fp, file_digest) = fingerprint::fingerprint_and_file_digest(&fingerprint::Request {
        method: config.method.as_str(),
        url: &config.url,
        headers: &config.headers,
        key_headers: &config.key.headers,
        body: config.key.include_body.then_some(&config.body),
    })?;
    // An explicit key, which returned above, is the answer to the caveat.
    let caveat = identity.rerun_caveat();
    let key = Key {
        value: derive::derive(&identity, &config.key.salt, &fp).to_string(),
        source: KeySource::Derived(identity.provider),
        caveat,
    };
    Ok((Some(key), file_digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::input::cli::RawInputs;
    use crate::client::input::table::spec;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let mut raw = RawInputs::default();
        raw.set(spec("url"), "https://api.example/deploy");
        for &(name, value) in pairs {
            raw.set(spec(name), value);
        }
        Config::from_raw(&raw).unwrap()
    }

    fn github() -> Env {
        [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_RUN_ID", "1"),
            ("GITHUB_RUN_ATTEMPT", "1"),
        ]
        .into_iter()
        .collect()
    }

    fn key_of(pairs: &[(&str, &str)], env: &Env) -> Option<String> {
        prepare(config(pairs), env)
            .unwrap()
            .key
            .map(|(k, _)| k.value)
    }

    #[test]
    fn safe_methods_get_no_key_unless_explicit() {
        for method in ["GET", "HEAD", "OPTIONS", "TRACE"] {
            assert_eq!(key_of(&[("method", method)], &github()), None);
        }
        assert_eq!(
            key_of(&[("method", "GET"), ("idempotency-key", "k1")], &github()),
            Some("k1".to_owned())
        );
    }

    #[test]
    fn authorization_does_not_feed_the_key() {
        let a = key_of(&[("headers", "Authorization: Bearer one")], &github());
        let b = key_of(&[("headers", "Authorization: Bearer two")], &github());
        assert_eq!(a, b);
    }

    #[test]
    fn body_feeds_the_key_unless_excluded() {
        let a = key_of(&[("body", "ts=1")], &github());
        let b = key_of(&[("body", "ts=2")], &github());
        assert_ne!(a, b);
        let a = key_of(
            &[("body", "ts=1"), ("key-include-body", "false")],
            &github(),
        );
        let b = key_of(
            &[("body", "ts=2"), ("key-include-body", "false")],
            &github(),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn key_headers_feed_the_key() {
        let a = key_of(
            &[("headers", "X-Tenant: a"), ("key-headers", "x-tenant")],
            &github(),
        );
        let b = key_of(
            &[("headers", "X-Tenant: b"), ("key-headers", "x-tenant")],
            &github(),
        );
        assert_ne!(a, b);
    }

    #[test]
    fn local_without_salt_is_random_and_with_salt_is_stable() {
        let env = Env::default();
        let first = prepare(config(&[]), &env).unwrap().key.unwrap().0;
        assert_eq!(first.source, KeySource::Random);
        assert_ne!(Some(first.value), key_of(&[], &env));
        assert_eq!(
            key_of(&[("key-salt", "s")], &env),
            key_of(&[("key-salt", "s")], &env)
        );
    }

    #[test]
    fn structured_format_quotes_the_header_value() {
        let prepared = prepare(config(&[("key-format", "structured")]), &github()).unwrap();
        let (key, (name, value)) = prepared.key.unwrap();
        assert_eq!(name, "idempotency-key");
        assert_eq!(value.to_str().unwrap(), format!("\"{}\"", key.value));
    }
}
