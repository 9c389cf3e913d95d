//! Validation of [`RawInputs`] into a typed [`Config`]. Nothing here sends
//! anything; every failure names the input, says what is wrong and what is
//! accepted, and maps to exit code 2.

use crate::client::input::body::{Body, FileBody};
use crate::client::input::cli::RawInputs;
use crate::client::input::headers::{self, Header};
use crate::client::input::status::StatusSet;
use crate::client::input::table::spec;
use crate::client::key::derive::{self, KeyFormat};
use crate::client::key::provider::KeyScope;
use crate::client::send::backoff::Backoff;
use crate::client::send::retry::Policy;
use crate::shared::traceparent::TraceParent;
use crate::shared::units::{parse_bool, parse_count, parse_duration, parse_size};
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// An input that failed validation. The message says what is wrong and
/// what is accepted, and never quotes a value that may be secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid input `{input}`: {message}")]
pub struct ConfigError {
    /// The input's name.
    pub input: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

fn fail<T>(input: &'static str, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        input,
        message: message.into(),
    })
}

/// How the idempotency key is chosen and sent.
#[derive(Debug, Clone)]
pub struct KeySettings {
    /// `idempotency-key`: sent verbatim instead of deriving one.
    pub explicit: Option<String>,
    /// `key-header`.
    pub header: HeaderName,
    /// `key-scope`.
    pub scope: KeyScope,
    /// `key-salt`.
    pub salt: String,
    /// `key-include-body`.
    pub include_body: bool,
    /// `key-headers`.
    pub headers: Vec<HeaderName>,
    /// `key-format`.
    pub format: KeyFormat,
}

/// TLS settings; the files are read when the HTTP client is built.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// `ca-file`.
    pub ca_file: Option<PathBuf>,
    /// `client-cert` and `client-key`.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// `insecure`.
    pub insecure: bool,
}

/// The settings of `verify` (read on every run, used only by it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySettings {
    /// `verify`: the invocation checks the server instead of sending once.
    pub enabled: bool,
    /// `verify-concurrency`.
    pub concurrency: u32,
    /// `verify-id-field`: an RFC 6901 JSON pointer.
    pub id_field: Option<String>,
    /// `verify-ignore-headers`.
    pub ignore_headers: Vec<HeaderName>,
    /// `verify-retention`.
    pub retention: Option<Duration>,
}

/// The validated configuration of one run.
#[derive(Debug, Clone)]
pub struct Config {
    /// `url`.
    pub url: Url,
    /// `method`, upper-cased.
    pub method: Method,
    /// `headers` and `-H`, in order, plus the Content-Type from
    /// `content-type` or `json` at the end.
    pub headers: Vec<Header>,
    /// How many of [`Config::headers`] came from `headers` and `-H` (these
    /// never follow a redirect to another origin).
    pub user_header_count: usize,
    /// `body`, `body-file` or `json`.
    pub body: Body,
    /// Key settings.
    pub key: KeySettings,
    /// `accept-status`, `retry-on-status`, `max-attempts`.
    pub policy: Policy,
    /// `retry-delay`, `retry-max-delay`.
    pub backoff: Backoff,
    /// `timeout`.
    pub timeout: Duration,
    /// `connect-timeout`.
    pub connect_timeout: Duration,
    /// `deadline`.
    pub deadline: Duration,
    /// `follow-redirects`.
    pub follow_redirects: bool,
    /// `redirect-key-origins`: where a redirect may take a keyed request.
    pub redirect_key_origins: Vec<url::Origin>,
    /// `send-traceparent`.
    pub send_traceparent: bool,
    /// `dotenv-file`.
    pub dotenv_file: Option<PathBuf>,
    /// A `traceparent` the user set in `headers`, sent instead of ours.
    pub user_traceparent: Option<TraceParent>,
    /// `ca-file`, `client-cert`, `client-key`, `insecure`.
    pub tls: TlsSettings,
    /// `max-output-size`.
    pub max_output_size: usize,
    /// `max-response-size`.
    pub max_response_size: u64,
    /// `mask-response`.
    pub mask_response: bool,
    /// `dry-run`.
    pub dry_run: bool,
    /// `key-ttl`: the re-run guard's limit, when set.
    pub key_ttl: Option<Duration>,
    /// `github-token`, when given.
    pub github_token: Option<String>,
    /// `allow-expired-key`.
    pub allow_expired_key: bool,
    /// `oidc-audience`, when set.
    pub oidc_audience: Option<String>,
    /// `verify` and its settings.
    pub verify: VerifySettings,
}

/// Reads input `name` (or its default) with `parse`. `show` says whether
/// the value may be quoted back in the error (never for secrets or bodies).
fn parse_input<T>(
    raw: &RawInputs,
    name: &'static str,
    show: bool,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let text = raw.get(name).unwrap_or(spec(name).default);
    parse(text).or_else(|message| {
        if show {
            fail(name, format!("`{text}`: {message}"))
        } else {
            fail(name, message)
        }
    })
}

fn duration(
    raw: &RawInputs,
    name: &'static str,
    allow_zero: bool,
) -> Result<Duration, ConfigError> {
    parse_input(raw, name, true, |text| {
        let value = parse_duration(text)?;
        if value.is_zero() && !allow_zero {
            return Err("must be greater than zero".to_owned());
        }
        Ok(value)
    })
}

fn flag(raw: &RawInputs, name: &'static str) -> Result<bool, ConfigError> {
    parse_input(raw, name, true, parse_bool)
}

fn parse_url(text: &str) -> Result<Url, String> {
    crate::shared::url_text::require_written_host(text).map_err(|why| {
        format!("{why}; give an absolute URL such as https://api.example.com/deployments")
    })?;
    let url = Url::parse(text).map_err(|e| {
        use url::ParseError::*;
        let why = match e {
            EmptyHost => "the URL has no host".to_owned(),
            IdnaError | InvalidDomainCharacter => "the host is not a valid host name: it holds \
                a space or another character host names cannot have (letters, digits, `-` \
                and `.` only, or an IP address)"
                .to_owned(),
            InvalidPort => "the port is not a number from 0 to 65535".to_owned(),
            InvalidIpv4Address => "the host is not a valid IPv4 address".to_owned(),
            InvalidIpv6Address => "the host is not a valid IPv6 address (write it in brackets, \
                such as http://[::1]:8080/)"
                .to_owned(),
            RelativeUrlWithoutBase => "it is not an absolute URL (it has no scheme)".to_owned(),
            other => other.to_string(),
        };
        format!("{why}; give an absolute URL such as https://api.example.com/deployments")
    })?;
    if url.port() == Some(0) {
        return Err(
            "port 0 cannot be connected to; give the port the server listens on".to_owned(),
        );
    }
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err("the URL has no host".to_owned()),
        other => Err(format!(
            "the scheme `{other}` is not supported; use http or https"
        )),
    }
}

fn parse_verify(raw: &RawInputs) -> Result<VerifySettings, ConfigError> {
    let id_field = raw
        .get("verify-id-field")
        .map(|pointer| {
            if pointer.starts_with('/') {
                Ok(pointer.to_owned())
            } else {
                fail(
                    "verify-id-field",
                    format!(
                        "`{pointer}` is not a JSON pointer; write it from the document's root \
                         with a leading slash, such as `/id` or `/deployment/id`"
                    ),
                )
            }
        })
        .transpose()?;
    Ok(VerifySettings {
        enabled: flag(raw, "verify")?,
        concurrency: parse_input(raw, "verify-concurrency", true, |t| parse_count(t, 2, 50))?,
        id_field,
        ignore_headers: parse_input(raw, "verify-ignore-headers", true, parse_name_list)?,
        retention: raw
            .get("verify-retention")
            .map(|_| duration(raw, "verify-retention", false))
            .transpose()?,
    })
}

fn parse_method(text: &str) -> Result<Method, String> {
    let method = Method::from_bytes(text.to_ascii_uppercase().as_bytes())
        .map_err(|_| "expected an HTTP method token such as POST, PUT or PATCH".to_owned())?;
    // CONNECT asks a proxy for a tunnel: its request line names only a host
    // and port, so the URL's path would be dropped without a word, and a 2xx
    // answer opens a tunnel with no body to report.
    if method == Method::CONNECT {
        return Err(
            "CONNECT opens a tunnel through a proxy and sends no path; use the method the API \
             expects, such as POST, PUT or PATCH"
                .to_owned(),
        );
    }
    Ok(method)
}

fn parse_scope(text: &str) -> Result<KeyScope, String> {
    match text {
        "run" => Ok(KeyScope::Run),
        "attempt" => Ok(KeyScope::Attempt),
        _ => Err("expected `run` or `attempt`".to_owned()),
    }
}

fn parse_format(text: &str) -> Result<KeyFormat, String> {
    match text {
        "plain" => Ok(KeyFormat::Plain),
        "structured" => Ok(KeyFormat::Structured),
        _ => Err("expected `plain` or `structured`".to_owned()),
    }
}

fn parse_name_list(text: &str) -> Result<Vec<HeaderName>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(headers::parse_name)
        .collect()
}

fn parse_body(raw: &RawInputs) -> Result<Body, ConfigError> {
    let given: Vec<&'static str> = ["body", "body-file", "json"]
        .into_iter()
        .filter(|name| raw.get(name).is_some())
        .collect();
    if given.len() > 1 {
        return fail(
            given[1],
            format!(
                "`{}` and `{}` are both set; give only one of body, body-file and json",
                given[0], given[1]
            ),
        );
    }
    if let Some(text) = raw.get("body") {
        return Ok(Body::Bytes(text.as_bytes().to_vec().into()));
    }
    if let Some(path) = raw.get("body-file") {
        return FileBody::new(path.as_ref())
            .map(Body::File)
            .or_else(|e| fail("body-file", format!("cannot read `{path}`: {e}")));
    }
    if let Some(document) = raw.get("json") {
        return crate::client::input::json::to_json_bytes(document)
            .map(|bytes| Body::Bytes(bytes.into()))
            .or_else(|message| fail("json", message));
    }
    Ok(Body::Empty)
}

fn parse_headers(raw: &RawInputs) -> Result<Vec<Header>, ConfigError> {
    let mut headers = match raw.get("headers") {
        Some(text) => headers::parse_lines(text).or_else(|m| fail("headers", m))?,
        None => Vec::new(),
    };
    for (n, line) in raw.header_flags.iter().enumerate() {
        let header = headers::parse_line(line)
            .or_else(|m| fail("headers", format!("-H #{}: {m}", n + 1)))?;
        headers.push(header);
    }
    Ok(headers)
}

fn parse_key(raw: &RawInputs, headers: &[Header]) -> Result<KeySettings, ConfigError> {
    let header = parse_input(raw, "key-header", true, |text| {
        let name = headers::parse_name(text)?;
        headers::check_settable(&name)?;
        Ok(name)
    })?;
    if headers.iter().any(|(name, _)| *name == header) {
        return fail(
            "headers",
            format!(
                "`{header}` is set in headers, but the tool sends that header itself; give the key with `idempotency-key` instead"
            ),
        );
    }
    let explicit = raw
        .get("idempotency-key")
        .map(|_| {
            parse_input(raw, "idempotency-key", false, |k| {
                derive::validate_explicit(k).map(|()| k.to_owned())
            })
        })
        .transpose()?;
    let key_headers = parse_input(raw, "key-headers", true, parse_name_list)?;
    for name in &key_headers {
        if !headers.iter().any(|(n, _)| n == name) {
            return fail(
                "key-headers",
                format!(
                    "`{name}` is not among the request's headers; add it to headers or remove it from key-headers"
                ),
            );
        }
    }
    Ok(KeySettings {
        explicit,
        header,
        scope: parse_input(raw, "key-scope", true, parse_scope)?,
        salt: raw.get("key-salt").unwrap_or_default().to_owned(),
        include_body: flag(raw, "key-include-body")?,
        headers: key_headers,
        format: parse_input(raw, "key-format", true, parse_format)?,
    })
}

/// `redirect-key-origins`: `scheme://host[:port]` origins, nothing more.
fn parse_origins(text: &str) -> Result<Vec<url::Origin>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let url = crate::shared::url_text::require_written_host(item)
                .ok()
                .and_then(|()| Url::parse(item).ok())
                .ok_or_else(|| {
                "each origin must be `https://host` or `https://host:port`".to_owned()
            })?;
            let bare = matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.username().is_empty()
                && url.password().is_none()
                && url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none();
            if bare {
                Ok(url.origin())
            } else {
                Err(format!(
                    "`{}` is not an origin; give scheme, host and port only, such as https://api.example.com:8443",
                    crate::shared::redact::redact_url(&url)
                ))
            }
        })
        .collect()
}

/// A `traceparent` in `headers` is sent as it is, and must be one.
fn parse_user_traceparent(headers: &[Header]) -> Result<Option<TraceParent>, ConfigError> {
    let mut values = headers.iter().filter(|(name, _)| name == "traceparent");
    let Some((_, value)) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return fail(
            "headers",
            "`traceparent` is given more than once; give it once",
        );
    }
    value
        .to_str()
        .ok()
        .and_then(TraceParent::parse)
        .map(Some)
        .ok_or_else(|| ConfigError {
            input: "headers",
            message: "`traceparent` is not a W3C traceparent (00-<32 hex digits>-<16 hex digits>-<2 hex digits>, lower case); fix it, or remove it and the tool sends one derived from the key".to_owned(),
        })
}

/// `github-token`: sent as a header, so it must be one (never quoted back).
fn parse_token(raw: &RawInputs) -> Result<Option<String>, ConfigError> {
    match raw.get("github-token") {
        Some(token) if token.bytes().all(|b| b.is_ascii_graphic()) => Ok(Some(token.to_owned())),
        Some(_) => fail(
            "github-token",
            "holds spaces, control characters or non-ASCII text, which no GitHub token has; \
             pass the token itself (the action's default is github.token)",
        ),
        None => Ok(None),
    }
}

fn parse_tls(raw: &RawInputs) -> Result<TlsSettings, ConfigError> {
    let path = |name| raw.get(name).map(PathBuf::from);
    let client_identity = match (path("client-cert"), path("client-key")) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            return fail(
                "client-key",
                "`client-cert` is set without `client-key`; mutual TLS needs both",
            );
        }
        (None, Some(_)) => {
            return fail(
                "client-cert",
                "`client-key` is set without `client-cert`; mutual TLS needs both",
            );
        }
    };
    Ok(TlsSettings {
        ca_file: path("ca-file"),
        client_identity,
        insecure: flag(raw, "insecure")?,
    })
}

impl Config {
    /// Validates `raw`.
    pub fn from_raw(raw: &RawInputs) -> Result<Self, ConfigError> {
        let Some(url_text) = raw.get("url") else {
            return fail(
                "url",
                "is required; give the URL to send the request to (--url or INPUT_URL)",
            );
        };
        let url = parse_url(url_text).or_else(|m| fail("url", m))?;
        let method = parse_input(raw, "method", true, parse_method)?;
        let mut headers = parse_headers(raw)?;
        let user_header_count = headers.len();
        let body = parse_body(raw)?;
        let has_content_type = headers.iter().any(|(n, _)| n == CONTENT_TYPE);
        let content_type = match raw.get("content-type") {
            Some(_) if has_content_type => {
                return fail(
                    "content-type",
                    "Content-Type is also set in headers; keep one of the two",
                );
            }
            Some(text) => Some(
                HeaderValue::from_str(text)
                    .or_else(|_| fail("content-type", "holds a control character"))?,
            ),
            None if raw.get("json").is_some() && !has_content_type => {
                Some(HeaderValue::from_static("application/json"))
            }
            None => None,
        };
        headers.extend(content_type.map(|value| (CONTENT_TYPE, value)));
        let user_traceparent = parse_user_traceparent(&headers)?;
        let key = parse_key(raw, &headers)?;
        let policy = Policy {
            accept: parse_input(raw, "accept-status", true, StatusSet::parse)?,
            retry_on: parse_input(raw, "retry-on-status", true, StatusSet::parse)?,
            max_attempts: parse_input(raw, "max-attempts", true, |t| parse_count(t, 1, 100))?,
        };
        let backoff = Backoff {
            base: duration(raw, "retry-delay", true)?,
            cap: duration(raw, "retry-max-delay", true)?,
        };
        let oidc_audience = raw.get("oidc-audience").map(str::to_owned);
        if oidc_audience.is_some()
            && headers
                .iter()
                .any(|(n, _)| n == reqwest::header::AUTHORIZATION)
        {
            return fail(
                "oidc-audience",
                "headers already sets Authorization, which the OIDC token would replace; remove one of the two",
            );
        }
        let key_ttl = raw
            .get("key-ttl")
            .map(|_| duration(raw, "key-ttl", false))
            .transpose()?;
        let max_output_size = parse_input(raw, "max-output-size", true, |text| {
            let size = parse_size(text)?;
            usize::try_from(size)
                .ok()
                .filter(|&s| s <= 1 << 30)
                .ok_or_else(|| "must be at most 1GiB".to_owned())
        })?;
        Ok(Self {
            url,
            method,
            headers,
            user_header_count,
            body,
            key,
            policy,
            backoff,
            timeout: duration(raw, "timeout", false)?,
            connect_timeout: duration(raw, "connect-timeout", false)?,
            deadline: duration(raw, "deadline", false)?,
            follow_redirects: flag(raw, "follow-redirects")?,
            redirect_key_origins: parse_input(raw, "redirect-key-origins", false, parse_origins)?,
            send_traceparent: flag(raw, "send-traceparent")?,
            dotenv_file: raw.get("dotenv-file").map(PathBuf::from),
            user_traceparent,
            tls: parse_tls(raw)?,
            max_output_size,
            max_response_size: parse_input(raw, "max-response-size", true, parse_size)?,
            mask_response: flag(raw, "mask-response")?,
            dry_run: flag(raw, "dry-run")?,
            key_ttl,
            github_token: parse_token(raw)?,
            allow_expired_key: flag(raw, "allow-expired-key")?,
            oidc_audience,
            verify: parse_verify(raw)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawInputs {
        let mut raw = RawInputs::default();
        for &(name, value) in pairs {
            raw.set(spec(name), value);
        }
        raw
    }

    fn error(pairs: &[(&str, &str)]) -> ConfigError {
        Config::from_raw(&raw(pairs)).unwrap_err()
    }

    const URL: (&str, &str) = ("url", "https://api.example/deploy");

    #[test]
    fn defaults_match_the_documented_table() {
        let config = Config::from_raw(&raw(&[URL])).unwrap();
        assert_eq!(config.method, Method::POST);
        assert_eq!(config.key.header, "idempotency-key");
        assert_eq!(config.key.scope, KeyScope::Run);
        assert!(config.key.include_body);
        assert_eq!(config.key.format, KeyFormat::Plain);
        assert!(config.policy.accept.contains(204) && !config.policy.accept.contains(300));
        assert!(config.policy.retry_on.contains(409) && !config.policy.retry_on.contains(501));
        assert_eq!(config.policy.max_attempts, 5);
        assert_eq!(config.backoff.base, Duration::from_secs(1));
        assert_eq!(config.backoff.cap, Duration::from_secs(30));
        assert_eq!(config.timeout, Duration::from_secs(60));
        assert_eq!(config.connect_timeout, Duration::from_secs(10));
        assert_eq!(config.deadline, Duration::from_secs(600));
        assert!(!config.follow_redirects && !config.tls.insecure);
        assert_eq!(config.max_output_size, 1 << 20);
        assert_eq!(config.max_response_size, 100 << 20);
        assert!(!config.mask_response && !config.dry_run);
        assert!(config.body.is_empty());
    }

    #[test]
    fn url_is_required_and_must_be_http() {
        assert_eq!(error(&[]).input, "url");
        for bad in [
            "api.example/deploy",
            "ftp://api.example/",
            "https://",
            "mailto:a@b",
        ] {
            assert_eq!(error(&[("url", bad)]).input, "url", "{bad}");
        }
    }

    #[test]
    fn url_errors_say_what_is_wrong_with_the_host() {
        let err = error(&[("url", "https://api example.com/x")]);
        assert!(
            err.message.contains("the host is not a valid host name"),
            "{err}"
        );
        assert!(!err.message.contains("international"), "{err}");
        let err = error(&[("url", "https://api.example.com:99999/")]);
        assert!(err.message.contains("port"), "{err}");
        let err = error(&[("url", "/deployments")]);
        assert!(err.message.contains("absolute"), "{err}");
    }

    #[test]
    fn method_is_upper_cased() {
        let config = Config::from_raw(&raw(&[URL, ("method", "patch")])).unwrap();
        assert_eq!(config.method, Method::PATCH);
        assert_eq!(error(&[URL, ("method", "PO ST")]).input, "method");
    }

    #[test]
    fn connect_is_refused_in_any_case() {
        for method in ["CONNECT", "connect", "Connect"] {
            let err = error(&[URL, ("method", method)]);
            assert_eq!(err.input, "method");
            assert!(err.message.contains("tunnel"), "{err}");
        }
        let config = Config::from_raw(&raw(&[URL, ("method", "connection")])).unwrap();
        assert_eq!(config.method.as_str(), "CONNECTION");
    }

    #[test]
    fn body_inputs_are_exclusive() {
        let err = error(&[URL, ("body", "x"), ("json", "{}")]);
        assert_eq!(err.input, "json");
        assert!(err.message.contains("only one"), "{err}");
    }

    #[test]
    fn missing_body_file_names_the_path() {
        let err = error(&[URL, ("body-file", "/nonexistent/payload.bin")]);
        assert_eq!(err.input, "body-file");
        assert!(err.message.contains("/nonexistent/payload.bin"), "{err}");
    }

    #[test]
    fn json_sets_content_type_unless_given() {
        let config = Config::from_raw(&raw(&[URL, ("json", "a: 1")])).unwrap();
        assert_eq!(config.headers.last().unwrap().1, "application/json");
        let config = Config::from_raw(&raw(&[
            URL,
            ("json", "{}"),
            ("headers", "Content-Type: application/vnd+json"),
        ]))
        .unwrap();
        assert_eq!(config.headers.len(), 1);
        assert_eq!(config.user_header_count, 1);
    }

    #[test]
    fn content_type_twice_is_an_error() {
        let err = error(&[
            URL,
            ("content-type", "text/plain"),
            ("headers", "Content-Type: a/b"),
        ]);
        assert_eq!(err.input, "content-type");
    }

    #[test]
    fn key_header_in_headers_is_an_error() {
        let err = error(&[URL, ("headers", "Idempotency-Key: mine")]);
        assert_eq!(err.input, "headers");
        assert!(err.message.contains("idempotency-key"), "{err}");
    }

    #[test]
    fn key_headers_must_be_sent() {
        assert_eq!(
            error(&[URL, ("key-headers", "X-Tenant")]).input,
            "key-headers"
        );
        let config = Config::from_raw(&raw(&[
            URL,
            ("key-headers", "X-Tenant"),
            ("headers", "X-Tenant: a"),
        ]))
        .unwrap();
        assert_eq!(config.key.headers, ["x-tenant"]);
    }

    #[test]
    fn secrets_are_not_echoed_in_errors() {
        let err = error(&[URL, ("idempotency-key", "bad key with s3cret")]);
        assert_eq!(err.input, "idempotency-key");
        assert!(!err.to_string().contains("s3cret"));
        let err = error(&[URL, ("headers", "Authorization Bearer s3cret")]);
        assert!(!err.to_string().contains("s3cret"));
    }

    #[test]
    fn each_scalar_input_rejects_junk_by_name() {
        for (name, junk) in [
            ("key-scope", "forever"),
            ("key-format", "quoted"),
            ("key-include-body", "maybe"),
            ("accept-status", "2xx"),
            ("retry-on-status", "5xx"),
            ("max-attempts", "0"),
            ("retry-delay", "soon"),
            ("retry-max-delay", "-1"),
            ("timeout", "0"),
            ("connect-timeout", "x"),
            ("deadline", "0s"),
            ("follow-redirects", "yes"),
            ("insecure", "1"),
            ("max-output-size", "2GiB"),
            ("max-response-size", "lots"),
            ("mask-response", "no"),
            ("dry-run", "y"),
            ("key-header", "bad header"),
            ("key-ttl", "0"),
            ("key-ttl", "a day"),
            ("allow-expired-key", "maybe"),
            ("key-headers", "ok, bad name"),
        ] {
            let err = error(&[URL, (name, junk)]);
            assert_eq!(err.input, name, "{name}={junk}: {err}");
        }
    }

    #[test]
    fn oidc_audience_refuses_a_second_authorization() {
        let err = error(&[
            URL,
            ("oidc-audience", "api"),
            ("headers", "Authorization: Bearer x"),
        ]);
        assert_eq!(err.input, "oidc-audience");
        let config =
            Config::from_raw(&raw(&[URL, ("oidc-audience", "api"), ("key-ttl", "24h")])).unwrap();
        assert_eq!(config.oidc_audience.as_deref(), Some("api"));
        assert_eq!(config.key_ttl, Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn mutual_tls_needs_both_files() {
        assert_eq!(error(&[URL, ("client-cert", "c.pem")]).input, "client-key");
        assert_eq!(error(&[URL, ("client-key", "k.pem")]).input, "client-cert");
    }
}
