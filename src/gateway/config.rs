//! The gateway's settings: every one a flag and an `IDEMPOTENCY_GATEWAY_*`
//! environment variable, validated before anything starts.

use super::proxy::Settings;
use super::store::sqlite::Durability;
use crate::shared::units::{parse_duration, parse_size};
use axum::http::{HeaderName, Method};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// Where records are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// In this process only.
    Memory,
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A Redis server shared by replicas.
    Redis(String),
}

fn parse_store(text: &str) -> Result<StoreSpec, String> {
    if text == "memory" {
        Ok(StoreSpec::Memory)
    } else if let Some(path) = text.strip_prefix("sqlite:").filter(|p| !p.is_empty()) {
        Ok(StoreSpec::Sqlite(PathBuf::from(path)))
    } else if text.starts_with("redis://") || text.starts_with("rediss://") {
        Ok(StoreSpec::Redis(text.to_owned()))
    } else {
        Err("expected `memory`, `sqlite:PATH` or `redis://HOST:PORT/DB`".to_owned())
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

fn parse_upstream(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("expected an http(s) URL such as http://127.0.0.1:9000".to_owned());
    }
    Ok(url)
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

const AFTER_HELP: &str = "\
Exit codes:
  0  clean shutdown after SIGTERM or Ctrl-C
  1  the store cannot be opened, or a listener fails
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
    /// Address to accept requests on.
    #[arg(
        long,
        env = "IDEMPOTENCY_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8080",
        value_parser = parse_listen
    )]
    pub listen: SocketAddr,
    /// The API behind the gateway, e.g. http://127.0.0.1:9000 (a path prefix is kept).
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_UPSTREAM", value_parser = parse_upstream)]
    pub upstream: Url,
    /// Where records live: `sqlite:PATH`, `redis://HOST:PORT/DB` (shared by replicas) or `memory`.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_STORE", default_value = "sqlite:./idempotency.db", value_parser = parse_store)]
    pub store: StoreSpec,
    /// Methods given idempotency semantics; others pass through untouched.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_METHODS", default_value = "POST,PATCH", value_delimiter = ',', value_parser = parse_method)]
    pub methods: Vec<Method>,
    /// Refuse (400) covered requests that carry no Idempotency-Key, instead of passing them through.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_REQUIRE_KEY", num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub require_key: bool,
    /// Comma-separated headers whose values identify the caller; records are never shared across callers.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_SCOPE_HEADERS", default_value = "Authorization", value_delimiter = ',', value_parser = parse_header)]
    pub scope_headers: Vec<HeaderName>,
    /// How long a stored answer is replayed, counted from when it was stored.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_TTL", default_value = "24h", value_parser = positive_duration)]
    pub ttl: Duration,
    /// Lease of a claim, renewed while its forward is live; a lapsed lease means "outcome unknown".
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_LOCK_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
    pub lock_timeout: Duration,
    /// Time allowed for the upstream's complete answer; must be below --lock-timeout.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub upstream_timeout: Duration,
    /// Largest request body accepted (413 past it), and largest answer stored.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_MAX_BODY", default_value = "10MiB", value_parser = size)]
    pub max_body: usize,
    /// `normal`: records survive a crash of the gateway; `full`: also of the host (fsync per write; SQLite).
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_DURABILITY", default_value = "normal", value_parser = parse_durability)]
    pub durability: Durability,
    /// Address for /healthz, /readyz and /metrics; off unless given.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_ADMIN_LISTEN", value_parser = parse_listen)]
    pub admin_listen: Option<SocketAddr>,
    /// On SIGTERM, how long in-flight forwards may take to finish and be stored.
    #[arg(long, env = "IDEMPOTENCY_GATEWAY_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
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
        Ok(())
    }

    /// The proxy's settings.
    pub fn settings(&self) -> Settings {
        Settings {
            upstream: self.upstream.clone(),
            methods: self.methods.clone(),
            require_key: self.require_key,
            scope_headers: self.scope_headers.clone(),
            ttl: self.ttl,
            lock_timeout: self.lock_timeout,
            upstream_timeout: self.upstream_timeout,
            max_body: self.max_body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        let base = ["idempotency-gateway", "--upstream", "http://127.0.0.1:9000"];
        Args::try_parse_from(base.iter().chain(extra))
    }

    #[test]
    fn defaults() {
        let a = args(&[]).unwrap();
        assert_eq!(a.store, StoreSpec::Sqlite("./idempotency.db".into()));
        assert_eq!(a.methods, [Method::POST, Method::PATCH]);
        assert_eq!(a.scope_headers, [HeaderName::from_static("authorization")]);
        assert_eq!(a.ttl, Duration::from_secs(86_400));
        assert_eq!(a.lock_timeout, Duration::from_secs(60));
        assert_eq!(a.upstream_timeout, Duration::from_secs(30));
        assert_eq!(a.max_body, 10 << 20);
        assert_eq!(a.durability, Durability::Process);
        assert!(!a.require_key && a.admin_listen.is_none());
        assert!(a.validate().is_ok());
    }

    #[test]
    fn store_specs() {
        assert_eq!(parse_store("memory"), Ok(StoreSpec::Memory));
        assert_eq!(
            parse_store("redis://127.0.0.1:6379/0"),
            Ok(StoreSpec::Redis("redis://127.0.0.1:6379/0".into()))
        );
        assert!(parse_store("sqlite:").is_err());
        assert!(parse_store("postgres://x").is_err());
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
    fn upstream_timeout_must_be_below_lock_timeout() {
        let a = args(&["--upstream-timeout", "60s", "--lock-timeout", "60s"]).unwrap();
        assert!(a.validate().unwrap_err().contains("--upstream-timeout"));
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            vec!["--ttl", "0"],
            vec!["--methods", "PO ST"],
            vec!["--durability", "paranoid"],
            vec!["--max-body", "lots"],
            vec!["--upstream", "ftp://x"],
        ] {
            assert!(args(&bad).is_err(), "{bad:?}");
        }
    }
}
