//! The gateway's settings: every one a flag and an `IDEMPOTENCY_GATEWAY_*`
//! environment variable (clap's derive is the table: it drives parsing,
//! `--help`, and `tests/docs_drift.rs` holds the README's flag table to
//! it), validated before anything starts.

use super::caller::CallerRule;
use super::proxy::Settings;
use super::server::Limits;
use super::store::postgres::{Options as PostgresOptions, Statements};
use super::store::sqlite::Durability;
use crate::shared::redact::redact_url;
use crate::shared::units::{parse_duration, parse_size};
use axum::http::{HeaderName, Method};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// Where records are kept.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// In this process only.
    Memory,
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A Redis server shared by replicas.
    Redis(String),
    /// A PostgreSQL database shared by replicas.
    Postgres(String),
}

/// Never prints a password: the URL is redacted.
impl std::fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_string())
    }
}

/// The store as the log shows it: URLs without user-info and passwords.
impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreSpec::Redis(url) | StoreSpec::Postgres(url) => {
                f.write_str(&crate::shared::redact::redact_url_text(url))
            }
        }
    }
}

fn parse_store(text: &str) -> Result<StoreSpec, String> {
    if text == "memory" {
        Ok(StoreSpec::Memory)
    } else if let Some(path) = text.strip_prefix("sqlite:").filter(|p| !p.is_empty()) {
        Ok(StoreSpec::Sqlite(PathBuf::from(path)))
    } else if text.starts_with("redis://") {
        Ok(StoreSpec::Redis(text.to_owned()))
    } else if text.starts_with("rediss://") {
        // The redis crate is built without TLS (its TLS features bring a
        // second crypto provider); say so before anything connects.
        Err(
            "`rediss://` (Redis over TLS) is not supported: use `redis://` on a trusted network \
             or a local TLS tunnel, or PostgreSQL, which verifies TLS (`--store-ca-file`)"
                .to_owned(),
        )
    } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        Ok(StoreSpec::Postgres(text.to_owned()))
    } else {
        Err(
            "expected `memory`, `sqlite:PATH`, `redis://HOST:PORT/DB` or `postgres://USER@HOST:PORT/DB`"
                .to_owned(),
        )
    }
}

fn parse_method(text: &str) -> Result<Method, String> {
    let text = text.trim();
    Method::from_bytes(text.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{text}` is not an HTTP method"))
}

fn parse_header(text: &str) -> Result<HeaderName, String> {
    let text = text.trim();
    HeaderName::from_bytes(text.as_bytes()).map_err(|_| format!("`{text}` is not a header name"))
}

/// Headers that describe a message rather than name an operation: its
/// destination and framing (`Host`, `Content-Length`, which the stack
/// rewrites per hop) and its body's form (`Content-Type`,
/// `Content-Encoding`, `Expect`). Unrelated requests share their values,
/// so as a "key" they would replay one request's answer to another.
const FRAMING_HEADERS: [HeaderName; 5] = [
    axum::http::header::HOST,
    axum::http::header::CONTENT_LENGTH,
    axum::http::header::CONTENT_TYPE,
    axum::http::header::CONTENT_ENCODING,
    axum::http::header::EXPECT,
];

/// A header the gateway reads: never a hop-by-hop one, which is removed
/// before anything reads the request (`what` says what it is read for).
fn parse_read_header(text: &str, what: &str) -> Result<HeaderName, String> {
    let name = parse_header(text)?;
    if super::hop::is_hop_by_hop(&name) {
        return Err(format!(
            "`{name}` is a hop-by-hop header, which the gateway removes before it reads {what}; name an end-to-end header"
        ));
    }
    Ok(name)
}

/// `--key-header`: read for the key, and never a framing header.
fn parse_key_header(text: &str) -> Result<HeaderName, String> {
    let name = parse_read_header(text, "the key")?;
    if FRAMING_HEADERS.contains(&name) {
        return Err(format!(
            "`{name}` describes the message, not the operation, so unrelated requests would share a key; name the header that carries one id per operation, such as `Idempotency-Key`"
        ));
    }
    Ok(name)
}

/// `auto` or a list of header names.
fn parse_scope(text: &str) -> Result<Scope, String> {
    if text.trim().eq_ignore_ascii_case("auto") {
        return Ok(Scope::Auto);
    }
    text.split(',')
        .map(|name| parse_read_header(name, "the caller"))
        .collect::<Result<Vec<_>, _>>()
        .map(Scope::Headers)
}

/// How `--scope-headers` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every header whose name marks a credential.
    Auto,
    /// Exactly these headers.
    Headers(Vec<HeaderName>),
}

fn parse_upstream(text: &str) -> Result<Url, String> {
    crate::shared::url_text::require_written_host(text)
        .map_err(|why| format!("{why}; expected an http(s) URL such as http://127.0.0.1:9000"))?;
    let url = Url::parse(text)
        .map_err(|e| format!("{e}; expected an http(s) URL such as http://127.0.0.1:9000"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("expected an http(s) URL such as http://127.0.0.1:9000".to_owned());
    }
    if url.port() == Some(0) {
        return Err(
            "port 0 cannot be connected to; give the port the upstream listens on".to_owned(),
        );
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{}` has user-info: the gateway would send it upstream as a second Authorization; give the upstream URL without it (callers send their own credentials)",
            redact_url(&url)
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`{}` has a query or a fragment; give scheme, host, port and an optional path prefix",
            redact_url(&url)
        ));
    }
    Ok(url)
}

fn parse_jwks_url(text: &str) -> Result<Url, String> {
    crate::shared::url_text::require_written_host(text).map_err(str::to_owned)?;
    let url = Url::parse(text).map_err(|e| format!("{e}"))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err("expected an https URL (plain http only on loopback)".to_owned()),
    }
}

/// `HOST:PORT` or `IP:PORT`; a host name is resolved once, at start-up, and
/// the first address it resolves to is used (the ready line shows it).
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    const HINT: &str =
        "expected IP:PORT or HOST:PORT, such as 127.0.0.1:8080, [::1]:8080 or localhost:8080";
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("no port; {HINT}"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("the port is not a number from 0 to 65535; {HINT}"));
    }
    if host.is_empty() {
        return Err(format!("no host; {HINT}"));
    }
    text.to_socket_addrs()
        .map_err(|e| format!("the host `{host}` cannot be resolved ({e}); {HINT}"))?
        .next()
        .ok_or_else(|| format!("the host `{host}` resolves to no address; {HINT}"))
}

fn parse_pooler(text: &str) -> Result<Statements, String> {
    match text {
        "none" | "session" => Ok(Statements::Prepared),
        "transaction" => Ok(Statements::Unnamed),
        _ => Err("expected `none`, `session` or `transaction`".to_owned()),
    }
}

/// `--store-connections`: 1 to 1,024 (the pool sets aside room for as many
/// as it may open, and no server takes more).
fn store_connections(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n @ 1..=1024) => Ok(n),
        _ => Err("expected a whole number from 1 to 1024".to_owned()),
    }
}

fn parse_durability(text: &str) -> Result<Durability, String> {
    match text {
        "normal" => Ok(Durability::Process),
        "full" => Ok(Durability::Host),
        _ => Err("expected `normal` or `full`".to_owned()),
    }
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        Err("must be greater than zero".to_owned())
    } else {
        Ok(d)
    }
}

fn size(text: &str) -> Result<usize, String> {
    let s = parse_size(text)?;
    usize::try_from(s).map_err(|_| "too large".to_owned())
}

/// The largest `--max-body`: every answer up to it must fit in every store
/// (Redis takes values up to 512 MB, SQLite and PostgreSQL up to 1 GB),
/// with room for its headers.
const MAX_BODY_LIMIT: usize = 256 << 20;

/// `--max-body`: a size of at most [`MAX_BODY_LIMIT`].
fn body_size(text: &str) -> Result<usize, String> {
    match size(text)? {
        n if n > MAX_BODY_LIMIT => Err(
            "expected at most 256MiB: an answer up to --max-body is stored, and Redis takes \
             values up to 512 MB, SQLite and PostgreSQL up to 1 GB"
                .to_owned(),
        ),
        n => Ok(n),
    }
}

/// A size above zero: a bound of 0 would refuse every new key.
fn nonzero_size(text: &str) -> Result<usize, String> {
    match size(text)? {
        0 => Err("expected a size greater than zero".to_owned()),
        n => Ok(n),
    }
}

fn count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) | Err(_) => Err("expected a whole number greater than zero".to_owned()),
        Ok(n) => Ok(n),
    }
}

fn non_empty(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(text.to_owned())
    }
}

const AFTER_HELP: &str = "\
Exit codes:
  0  clean shutdown after SIGTERM, SIGHUP or Ctrl-C
  1  the store cannot be opened, the JWKS or a CA file cannot be read, or a
     listener fails
  2  invalid flags or environment variables

Every flag can also be set as the environment variable shown with it; a flag
on the command line wins. IDEMPOTENCY_GATEWAY_LOG sets the log filter
(default: info; for example debug, or warn,idempotent_request=debug).";

/// `idempotency-gateway`: a reverse proxy that gives any HTTP API
/// Idempotency-Key semantics.
#[derive(Debug, Parser)]
#[command(
    name = "idempotency-gateway",
    version,
    about = "A reverse proxy that gives any HTTP API Idempotency-Key semantics: one forward per key, stored answers replayed.",
    after_help = AFTER_HELP
)]
pub struct Args {
    /// Address to accept requests on (IP:PORT or HOST:PORT).
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// The API behind the gateway, e.g. http://127.0.0.1:9000 (a path prefix is kept; no user-info).
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_UPSTREAM", value_parser = parse_upstream)]
    pub upstream: Url,
    /// Regular PEM file (at most 1 MiB) of CA certificates trusted for an https upstream, besides the platform's roots.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Where records live: `sqlite:PATH`, `postgres://USER@HOST:PORT/DB` or `redis://HOST:PORT/DB` (shared by replicas), or `memory`.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_STORE", default_value = "sqlite:./idempotency.db", value_parser = parse_store)]
    pub store: StoreSpec,
    /// Regular file (at most 64 KiB) whose first line is the store's password (PostgreSQL, Redis), so it is not in the URL; read again for each new connection, so a rotated password needs no restart.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_STORE_PASSWORD_FILE")]
    pub store_password_file: Option<PathBuf>,
    /// Regular PEM file (at most 1 MiB) of CA certificates trusted for TLS to PostgreSQL, besides the platform's roots.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_STORE_CA_FILE")]
    pub store_ca_file: Option<PathBuf>,
    /// How PostgreSQL is reached: `none` (directly), `session` (through a pooler in session mode) or `transaction` (through a pooler in transaction mode, such as PgBouncer's: statements are sent unnamed, never prepared).
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_STORE_POOLER", default_value = "none", value_parser = parse_pooler)]
    pub store_pooler: Statements,
    /// PostgreSQL connections per gateway at most (every replica opens its own).
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_STORE_CONNECTIONS", default_value = "16", value_parser = store_connections)]
    pub store_connections: usize,
    /// Methods given idempotency semantics, in upper case; others pass through untouched.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_METHODS", default_value = "POST,PATCH", value_delimiter = ',', value_parser = parse_method)]
    pub methods: Vec<Method>,
    /// Refuse (400) covered requests that carry no key, instead of passing them through.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_REQUIRE_KEY", num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub require_key: bool,
    /// Header that carries the key (a webhook's delivery id, for instance).
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_KEY_HEADER", default_value = "Idempotency-Key", value_parser = parse_key_header)]
    pub key_header: HeaderName,
    /// Headers whose values identify the caller: `auto` (every header whose name marks a credential) or a comma-separated list.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_SCOPE_HEADERS", default_value = "auto", value_parser = parse_scope)]
    pub scope_headers: Scope,
    /// JWKS URL; turns on caller identity from verified JWT claims (fetched at start, refreshed on an unknown kid).
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_JWT_JWKS_URL", value_parser = parse_jwks_url, conflicts_with = "jwt_jwks_file")]
    pub jwt_jwks_url: Option<Url>,
    /// Regular PEM file (at most 1 MiB) of CA certificates trusted for an https --jwt-jwks-url, besides the platform's roots.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_JWT_JWKS_CA_FILE")]
    pub jwt_jwks_ca_file: Option<PathBuf>,
    /// JWKS file, instead of a URL (read at start, read again on an unknown kid).
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// Accepted JWT issuers (`iss`), comma-separated; required with a JWKS.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_JWT_ISSUER", value_delimiter = ',', value_parser = non_empty)]
    pub jwt_issuer: Vec<String>,
    /// Accepted JWT audiences (`aud`), comma-separated; required with a JWKS.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_JWT_AUDIENCE", value_delimiter = ',', value_parser = non_empty)]
    pub jwt_audience: Vec<String>,
    /// The verified claims that identify a caller, comma-separated.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_JWT_CLAIMS", default_value = "iss,sub", value_delimiter = ',', value_parser = non_empty)]
    pub jwt_claims: Vec<String>,
    /// Clock leeway for `exp` and `nbf`.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_JWT_LEEWAY", default_value = "60s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,
    /// How long a stored answer is replayed, counted from when it was stored.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_TTL", default_value = "24h", value_parser = positive_duration)]
    pub ttl: Duration,
    /// Lease of a claim, renewed while its forward is live; a lapsed lease means "outcome unknown".
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_LOCK_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
    pub lock_timeout: Duration,
    /// Time allowed for the upstream's complete answer; must be below --lock-timeout.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub upstream_timeout: Duration,
    /// Largest request body accepted (413 past it), and largest answer stored; at most 256MiB.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_MAX_BODY", default_value = "10MiB", value_parser = body_size)]
    pub max_body: usize,
    /// Request body bytes buffered at once, all requests together, and as much again for replayed answers not yet written (503 with Retry-After past either).
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_MAX_BUFFERED", default_value = "256MiB", value_parser = size)]
    pub max_buffered: usize,
    /// Time allowed for a request's whole body, from its headers (408 past it); an HTTP/1.1 body answered before its end is read on and discarded until then.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_BODY_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub body_timeout: Duration,
    /// Time allowed for a request's headers: the first request's from the connection's start, each later one's from its first byte (the connection is closed past it).
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_HEADER_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub header_timeout: Duration,
    /// How long a connection may sit idle between requests, or with an answer its client does not read (closed gracefully after one to one and a half times it; dropped if an answer still moves no byte for as long again).
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_IDLE_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
    pub idle_timeout: Duration,
    /// Open client connections at most (one more takes the place of the connection idle the longest, closed gracefully; with none idle, its request is answered 503 with Retry-After and its connection closed), and upstream requests in flight at most; lowered at start-up to what the descriptor limit holds.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_MAX_CONNECTIONS", default_value = "4096", value_parser = count)]
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_MAX_STREAMS", default_value = "64", value_parser = count)]
    pub max_streams: usize,
    /// With `--store memory`: the records' bytes held at most; past it new keys are answered 503 and not forwarded.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_MEMORY_MAX_BYTES", default_value = "512MiB", value_parser = nonzero_size)]
    pub memory_max_bytes: usize,
    /// `normal`: records survive a crash of the gateway; `full`: also of the host (fsync per write; SQLite).
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_DURABILITY", default_value = "normal", value_parser = parse_durability)]
    pub durability: Durability,
    /// Address for /healthz, /readyz and /metrics; off unless given.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_ADMIN_LISTEN", value_parser = parse_listen)]
    pub admin_listen: Option<SocketAddr>,
    /// On SIGTERM, SIGINT or SIGHUP, how long in-flight forwards may take to finish and be stored.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// The PostgreSQL-only flags (`--store-ca-file`, `--store-pooler`,
    /// `--store-connections`) given on the command line or in the
    /// environment, at their default or not ([`Args::try_parse_given`]).
    #[arg(skip)]
    pub given: Vec<&'static str>,
}

/// Flags only a PostgreSQL store reads, by clap's id; each is refused with
/// another store when given at all, even at its default value.
const POSTGRES_ONLY: [(&str, &str, &str); 3] = [
    ("store_ca_file", "--store-ca-file", ""),
    ("store_pooler", "--store-pooler", ""),
    (
        "store_connections",
        "--store-connections",
        " (Redis uses one connection)",
    ),
];

impl Args {
    /// Parses `words` (the program's name first) and the environment, and
    /// notes which PostgreSQL-only flags were given ([`Args::given`]),
    /// which their parsed values cannot tell from their defaults.
    pub fn try_parse_given<I, T>(words: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
        let matches = Self::command().try_get_matches_from(words)?;
        let mut args = Self::from_arg_matches(&matches)?;
        args.given = POSTGRES_ONLY
            .iter()
            .map(|(id, ..)| *id)
            .filter(|id| {
                matches
                    .value_source(id)
                    .is_some_and(|source| source != ValueSource::DefaultValue)
            })
            .collect();
        Ok(args)
    }
}

/// How to verify bearer JWTs, when `--jwt-*` is given.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// Where the keys are.
    pub jwks: JwksSource,
    /// Accepted `iss` values.
    pub issuers: Vec<String>,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// The claims whose values identify a caller.
    pub claims: Vec<String>,
    /// Leeway for `exp` and `nbf`.
    pub leeway: Duration,
    /// CA certificates trusted for the JWKS URL besides the platform's
    /// roots (`--jwt-jwks-ca-file`).
    pub jwks_ca_file: Option<PathBuf>,
}

/// A JWKS source.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// Fetched, and fetched again for an unknown `kid`.
    Url(Url),
    /// Read once at start-up.
    File(PathBuf),
}

impl Args {
    /// Checks the settings that depend on each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.upstream_timeout >= self.lock_timeout {
            return Err(format!(
                "--upstream-timeout ({:?}) must be below --lock-timeout ({:?}): a forward must end before its claim's lease can lapse",
                self.upstream_timeout, self.lock_timeout
            ));
        }
        if self.max_buffered < self.max_body {
            return Err(format!(
                "--max-buffered ({} bytes) must be at least --max-body ({} bytes), or no body of the largest allowed size could ever be read",
                self.max_buffered, self.max_body
            ));
        }
        if self.upstream_ca_file.is_some() && self.upstream.scheme() != "https" {
            return Err(
                "--upstream-ca-file is for an https upstream; an http --upstream uses no TLS"
                    .to_owned(),
            );
        }
        if self.store_password_file.is_some()
            && !matches!(self.store, StoreSpec::Redis(_) | StoreSpec::Postgres(_))
        {
            return Err(
                "--store-password-file is for a Redis or PostgreSQL store; SQLite and memory take no password"
                    .to_owned(),
            );
        }
        // Any value counts, the default too: it would be ignored.
        if !matches!(self.store, StoreSpec::Postgres(_))
            && let Some((_, flag, why)) = POSTGRES_ONLY
                .iter()
                .find(|(id, ..)| self.given.contains(id))
        {
            return Err(format!("{flag} is for a PostgreSQL store{why}"));
        }
        if self.jwt_jwks_ca_file.is_some()
            && self.jwt_jwks_url.as_ref().map(Url::scheme) != Some("https")
        {
            return Err(
                "--jwt-jwks-ca-file is for an https --jwt-jwks-url (a JWKS file or a loopback http URL uses no TLS)"
                    .to_owned(),
            );
        }
        let jwt = self.jwt_jwks_url.is_some() || self.jwt_jwks_file.is_some();
        if jwt && (self.jwt_issuer.is_empty() || self.jwt_audience.is_empty()) {
            return Err(
                "--jwt-jwks-url or --jwt-jwks-file needs --jwt-issuer and --jwt-audience: a token is accepted only from the issuers and for the audiences you name"
                    .to_owned(),
            );
        }
        if !jwt && (!self.jwt_issuer.is_empty() || !self.jwt_audience.is_empty()) {
            return Err(
                "--jwt-issuer and --jwt-audience need --jwt-jwks-url or --jwt-jwks-file (the keys to verify tokens with)"
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// The store, with the password from `--store-password-file` (its first
    /// line) put into the URL: the start-up password, which also checks the
    /// file before anything opens (the stores read it again for each new
    /// connection). Never prints the password.
    pub fn store(&self) -> Result<StoreSpec, String> {
        let Some(file) = &self.store_password_file else {
            return Ok(self.store.clone());
        };
        let password = super::store::password::read(file)?;
        let password = password.as_str();
        let with_password = |url: &str| -> Result<String, String> {
            let mut parsed = Url::parse(url)
                .map_err(|_| format!("the --store URL {} is not a valid URL", self.store))?;
            parsed
                .set_password(Some(password))
                .map_err(|()| format!("the --store URL {} cannot carry a password", self.store))?;
            Ok(parsed.to_string())
        };
        match &self.store {
            StoreSpec::Redis(url) => Ok(StoreSpec::Redis(with_password(url)?)),
            StoreSpec::Postgres(url) => Ok(StoreSpec::Postgres(with_password(url)?)),
            other => Ok(other.clone()),
        }
    }

    /// The JWT settings, when a JWKS is given.
    pub fn jwt(&self) -> Option<JwtSettings> {
        let jwks = match (&self.jwt_jwks_url, &self.jwt_jwks_file) {
            (Some(url), _) => JwksSource::Url(url.clone()),
            (None, Some(file)) => JwksSource::File(file.clone()),
            (None, None) => return None,
        };
        Some(JwtSettings {
            jwks,
            issuers: self.jwt_issuer.clone(),
            audiences: self.jwt_audience.clone(),
            claims: self.jwt_claims.clone(),
            leeway: self.jwt_leeway,
            jwks_ca_file: self.jwt_jwks_ca_file.clone(),
        })
    }

    /// The proxy's settings; `caller` is built by the binary (a JWT
    /// verifier needs its keys first).
    pub fn settings(&self, caller: CallerRule) -> Settings {
        Settings {
            upstream: self.upstream.clone(),
            upstream_ca_file: self.upstream_ca_file.clone(),
            methods: self.methods.clone(),
            require_key: self.require_key,
            key_header: self.key_header.clone(),
            caller,
            ttl: self.ttl,
            lock_timeout: self.lock_timeout,
            upstream_timeout: self.upstream_timeout,
            max_body: self.max_body,
            max_buffered: self.max_buffered,
            body_timeout: self.body_timeout,
            max_upstream_requests: self.max_connections,
        }
    }

    /// How to open the store.
    pub fn store_options(&self) -> super::StoreOptions {
        super::StoreOptions {
            durability: self.durability,
            ttl_ms: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
            postgres: PostgresOptions {
                ca_file: self.store_ca_file.clone(),
                statements: self.store_pooler,
                connections: self.store_connections,
            },
            password_file: self.store_password_file.clone(),
            memory_max_bytes: self.memory_max_bytes,
        }
    }

    /// The server's connection limits.
    pub fn limits(&self) -> Limits {
        Limits {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            max_streams: self.max_streams,
            shutdown_timeout: self.shutdown_timeout,
            linger: self.body_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        let base = ["idempotency-gateway", "--upstream", "http://127.0.0.1:9000"];
        Args::try_parse_given(base.iter().chain(extra))
    }

    #[test]
    fn defaults() {
        let a = args(&[]).unwrap();
        assert_eq!(a.store, StoreSpec::Sqlite("./idempotency.db".into()));
        assert_eq!(a.methods, [Method::POST, Method::PATCH]);
        assert_eq!(a.scope_headers, Scope::Auto);
        assert_eq!(a.key_header, HeaderName::from_static("idempotency-key"));
        assert_eq!(a.ttl, Duration::from_secs(86_400));
        assert_eq!(a.lock_timeout, Duration::from_secs(60));
        assert_eq!(a.upstream_timeout, Duration::from_secs(30));
        assert_eq!(a.max_body, 10 << 20);
        assert_eq!(a.max_buffered, 256 << 20);
        assert_eq!(a.memory_max_bytes, 512 << 20);
        assert_eq!(a.body_timeout, Duration::from_secs(30));
        assert_eq!(a.header_timeout, Duration::from_secs(10));
        assert_eq!(a.idle_timeout, Duration::from_secs(60));
        assert_eq!(a.max_connections, 4096);
        assert_eq!(a.max_streams, 64);
        assert_eq!(a.durability, Durability::Process);
        assert!(!a.require_key && a.admin_listen.is_none() && a.jwt().is_none());
        assert!(a.validate().is_ok());
    }

    #[test]
    fn store_specs() {
        assert_eq!(parse_store("memory"), Ok(StoreSpec::Memory));
        assert_eq!(
            parse_store("redis://127.0.0.1:6379/0"),
            Ok(StoreSpec::Redis("redis://127.0.0.1:6379/0".into()))
        );
        assert_eq!(
            parse_store("postgresql://gw@db:5432/idem"),
            Ok(StoreSpec::Postgres("postgresql://gw@db:5432/idem".into()))
        );
        assert!(parse_store("sqlite:").is_err());
        assert!(parse_store("mysql://x").is_err());
        let tls = parse_store("rediss://:pa55@cache:6380/0").unwrap_err();
        assert!(
            tls.contains("not supported") && !tls.contains("pa55"),
            "{tls}"
        );
    }

    #[test]
    fn store_passwords_are_never_shown() {
        let spec = parse_store("postgres://gw:pa55@db:5432/idem").unwrap();
        assert_eq!(spec.to_string(), "postgres://db:5432/idem");
        assert!(!format!("{spec:?}").contains("pa55"));
        let spec = parse_store("redis://:pa55@127.0.0.1:6379/0").unwrap();
        assert!(!format!("{spec:?} {spec}").contains("pa55"));
    }

    #[test]
    fn upstream_user_info_is_refused_without_quoting_it() {
        let err = parse_upstream("http://svc:pa55@127.0.0.1:9000/api").unwrap_err();
        assert!(err.contains("user-info") && !err.contains("pa55"), "{err}");
        assert!(parse_upstream("http://127.0.0.1:9000/api?x=1").is_err());
        assert!(parse_upstream("http://127.0.0.1:9000/api").is_ok());
    }

    #[test]
    fn scope_headers_are_auto_or_a_list() {
        assert_eq!(parse_scope("AUTO"), Ok(Scope::Auto));
        assert_eq!(
            parse_scope("Authorization, X-Api-Key"),
            Ok(Scope::Headers(vec![
                HeaderName::from_static("authorization"),
                HeaderName::from_static("x-api-key")
            ]))
        );
        assert!(parse_scope("bad name").is_err());
    }

    #[test]
    fn jwt_needs_issuer_and_audience() {
        let a = args(&["--jwt-jwks-url", "https://issuer.example/jwks"]).unwrap();
        assert!(a.validate().unwrap_err().contains("--jwt-issuer"));
        let a = args(&[
            "--jwt-jwks-url",
            "https://token.actions.githubusercontent.com/.well-known/jwks",
            "--jwt-issuer",
            "https://token.actions.githubusercontent.com",
            "--jwt-audience",
            "https://deploy.example",
        ])
        .unwrap();
        assert!(a.validate().is_ok());
        let jwt = a.jwt().unwrap();
        assert_eq!(jwt.claims, ["iss", "sub"]);
        assert!(args(&["--jwt-jwks-url", "http://issuer.example/jwks"]).is_err());
        assert!(args(&["--jwt-issuer", "x"]).unwrap().validate().is_err());
    }

    #[test]
    fn listen_takes_host_names_and_says_what_it_needs() {
        assert_eq!(
            parse_listen("127.0.0.1:18081"),
            Ok("127.0.0.1:18081".parse().unwrap())
        );
        let resolved = parse_listen("localhost:18081").unwrap();
        assert!(resolved.ip().is_loopback() && resolved.port() == 18081);
        for bad in [
            "localhost",
            "localhost:http",
            ":8080",
            "no.such.host.invalid:80",
        ] {
            let err = parse_listen(bad).unwrap_err();
            assert!(err.contains("IP:PORT or HOST:PORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn help_lists_the_exit_codes_and_the_log_variable() {
        let help = <Args as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        for needle in [
            "Exit codes:",
            "0  clean shutdown",
            "1  the store",
            "2  invalid",
            "IDEMPOTENCY_GATEWAY_LOG",
        ] {
            assert!(help.contains(needle), "--help lacks {needle:?}");
        }
    }

    #[test]
    fn the_pooler_mode_is_for_postgres_only() {
        let pooled = ["--store-pooler", "transaction"];
        let a = args(&pooled).unwrap();
        assert_eq!(a.store_pooler, Statements::Unnamed);
        assert!(a.validate().unwrap_err().contains("--store-pooler"));
        let postgres = ["--store", "postgres://gateway@db:5432/idempotency"];
        let a = args(&[&postgres[..], &pooled[..]].concat()).unwrap();
        assert!(a.validate().is_ok());
        assert_eq!(a.store_options().postgres.statements, Statements::Unnamed);
        let a = args(&postgres).unwrap();
        assert_eq!(a.store_options().postgres.statements, Statements::Prepared);
        let a = args(&[&postgres[..], &["--store-pooler", "session"][..]].concat()).unwrap();
        assert_eq!(a.store_options().postgres.statements, Statements::Prepared);
        assert!(args(&["--store-pooler", "statement"]).is_err());
        let a = args(&["--store-ca-file", "ca.pem"]).unwrap();
        assert!(a.validate().unwrap_err().contains("--store-ca-file"));
        // Given at its default, it would be ignored all the same.
        for mode in ["none", "session"] {
            let a = args(&["--store-pooler", mode]).unwrap();
            assert!(
                a.validate().unwrap_err().contains("--store-pooler"),
                "{mode}"
            );
        }
        assert!(
            args(&["--store", "redis://127.0.0.1:6379/0"])
                .unwrap()
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn store_connections_are_bounded_and_for_postgres_only() {
        let postgres = ["--store", "postgres://gateway@db:5432/idempotency"];
        let a = args(&postgres).unwrap();
        assert_eq!(a.store_options().postgres.connections, 16);
        let a = args(&[&postgres[..], &["--store-connections", "4"][..]].concat()).unwrap();
        assert!(a.validate().is_ok());
        assert_eq!(a.store_options().postgres.connections, 4);
        for bad in ["0", "1025", "many", "18446744073709551615"] {
            assert!(args(&["--store-connections", bad]).is_err(), "{bad}");
        }
        for connections in ["4", "16"] {
            let a = args(&["--store-connections", connections]).unwrap();
            assert!(a.validate().unwrap_err().contains("--store-connections"));
        }
        let a = args(&postgres).unwrap();
        assert_eq!(
            a.store_options().postgres.connections,
            crate::gateway::store::postgres::DEFAULT_CONNECTIONS
        );
    }

    #[test]
    fn upstream_timeout_must_be_below_lock_timeout() {
        let a = args(&["--upstream-timeout", "60s", "--lock-timeout", "60s"]).unwrap();
        assert!(a.validate().unwrap_err().contains("--upstream-timeout"));
        let a = args(&["--max-body", "10MiB", "--max-buffered", "1MiB"]).unwrap();
        assert!(a.validate().unwrap_err().contains("--max-buffered"));
    }

    #[test]
    fn max_body_is_bounded_by_what_every_store_holds() {
        assert_eq!(args(&["--max-body", "256MiB"]).unwrap().max_body, 256 << 20);
        let refused = body_size("257MiB").unwrap_err();
        assert!(refused.contains("at most 256MiB"), "{refused}");
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            vec!["--ttl", "0"],
            vec!["--methods", "PO ST"],
            vec!["--durability", "paranoid"],
            vec!["--max-body", "lots"],
            vec!["--max-body", "257MiB"],
            vec!["--max-body", "5GiB"],
            vec!["--memory-max-bytes", "plenty"],
            vec!["--memory-max-bytes", "0"],
            vec!["--upstream", "ftp://x"],
            vec!["--max-connections", "0"],
            vec!["--max-streams", "many"],
            vec!["--key-header", "bad header"],
        ] {
            assert!(args(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers_the_gateway_cannot_read_a_key_or_caller_from_are_refused() {
        for hop in [
            "Connection",
            "Transfer-Encoding",
            "TE",
            "Upgrade",
            "Keep-Alive",
        ] {
            let key = parse_key_header(hop).unwrap_err();
            assert!(
                key.contains("hop-by-hop") && key.contains("the key"),
                "{key}"
            );
            let scope = parse_scope(&format!("X-Tenant,{hop}")).unwrap_err();
            assert!(
                scope.contains("hop-by-hop") && scope.contains("the caller"),
                "{scope}"
            );
        }
        for framing in [
            "Host",
            "Content-Length",
            "content-type",
            "Content-Encoding",
            "Expect",
        ] {
            let key = parse_key_header(framing).unwrap_err();
            assert!(key.contains("not the operation"), "{key}");
        }
        assert_eq!(
            parse_key_header(" X-GitHub-Delivery "),
            Ok(HeaderName::from_static("x-github-delivery"))
        );
        // A tenant's host name is a fine caller.
        assert!(parse_scope("Host,X-Api-Key").is_ok());
    }
}
