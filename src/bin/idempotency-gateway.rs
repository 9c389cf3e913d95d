//! The `idempotency-gateway` binary: parse, open the store, load the JWKS,
//! serve until SIGTERM or Ctrl-C. Exit codes: 0 after a clean shutdown, 2
//! for invalid settings, 1 when the store cannot be opened, the JWKS cannot
//! be read, or the listener fails.

use idempotent_request::gateway::caller::CallerRule;
use idempotent_request::gateway::config::{Args, Scope};
use idempotent_request::gateway::jwt::Jwt;
use idempotent_request::gateway::{self, clock::SystemClock, proxy::Gateway};
use idempotent_request::shared::cli_error::describe;
use idempotent_request::shared::redact::redact_url;
use std::process::ExitCode;
use std::sync::Arc;

/// jemalloc with its background threads on (a build-time default of the
/// crate's `background_threads` feature): memory freed when a crowd of
/// connections closes goes back to the system within seconds (its 10 s
/// decay), where glibc's malloc kept it for good. No measurable cost on
/// the forward path (docs/performance.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = match Args::try_parse_given(std::env::args_os()) {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            say_error(&describe(&e));
            return ExitCode::from(2);
        }
    };
    // Dropped on every way out of main, which writes the log's last lines.
    let (log, _flusher) = match gateway::log::start(std::io::stderr()) {
        Ok(started) => started,
        Err(e) => {
            say_error(&format!("cannot start the log writer thread: {e}"));
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IDEMPOTENCY_GATEWAY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .event_format(gateway::log_format::GatewayFormat::new(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ))
        .with_writer(log.clone())
        .init();
    let report_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |panic| {
        log.write_now();
        report_panic(panic);
    }));
    if let Err(message) = args.validate() {
        say_error(&message);
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            say_error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// `error: …` on stderr, before the log runs. A stderr that takes nothing
/// loses the line rather than turn the exit code into a panic's.
fn say_error(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "error: {message}");
}

async fn run(args: Args) -> Result<(), String> {
    // One TLS provider for the upstream and JWKS clients: ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let spec = args.store()?;
    let store = gateway::open_store(&spec, &args.store_options())
        .await
        .map_err(|e| format!("cannot open the store {spec}: {e}"))?;
    let caller = match (args.jwt(), &args.scope_headers) {
        (Some(jwt), _) => {
            let http = gateway::jwt::jwks_client(jwt.jwks_ca_file.as_deref())?;
            CallerRule::Jwt(Arc::new(Jwt::load(jwt, http).await?))
        }
        (None, Scope::Auto) => CallerRule::Credentials,
        (None, Scope::Headers(names)) => CallerRule::Headers(names.clone()),
    };
    let fitted = gateway::descriptors::fit(args.limits());
    let mut settings = args.settings(caller);
    // One upstream descriptor per served connection's, at most.
    settings.max_upstream_requests = fitted.limits.max_connections;
    let gateway = Arc::new(Gateway::new(settings, store, Arc::new(SystemClock))?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let admin = match args.admin_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| format!("cannot listen on {address} (admin): {e}"))?,
        ),
        None => None,
    };
    let admin_address = match &admin {
        Some(listener) => listener
            .local_addr()
            .map_err(|e| e.to_string())?
            .to_string(),
        None => "off".to_owned(),
    };
    if let (Some(given), Some(descriptors)) = (fitted.lowered_from, fitted.descriptors) {
        tracing::warn!(
            "the process may open only {descriptors} file descriptors (its RLIMIT_NOFILE hard limit), \
             so --max-connections is lowered from {given} to {} (a connection may need a second \
             descriptor for its upstream call, and {} are kept for the rest); raise the limit \
             (`ulimit -n`, systemd's LimitNOFILE=, docker's --ulimit nofile=) to serve more",
            fitted.limits.max_connections,
            gateway::descriptors::RESERVED + gateway::descriptors::REFUSING,
        );
    }
    tracing::info!(
        listen = %listener.local_addr().map_err(|e| e.to_string())?,
        admin = %admin_address,
        upstream = %redact_url(&args.upstream),
        store = %args.store,
        max_connections = fitted.limits.max_connections,
        "idempotency-gateway ready"
    );
    gateway::serve(gateway, listener, admin, shutdown_signal(), fitted.limits)
        .await
        .map_err(|e| format!("the listener failed: {e}"))
}

/// SIGTERM, SIGINT (Ctrl-C) and SIGHUP (the terminal it ran in closed):
/// each shuts down gracefully, forwards in flight finished and stored. Left
/// to its default, SIGHUP would end the process at once, and every forward
/// in flight would become "outcome unknown".
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hangup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = hangup.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
