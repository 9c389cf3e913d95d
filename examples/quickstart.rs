//! Quickstart: `cargo run --release --example quickstart`.
//!
//! Runs the real `idempotency-gateway` (embedded SQLite store, in a
//! temporary directory) in front of a toy deployment API that knows nothing
//! about idempotency keys and answers slowly, then runs the client through
//! it as a GitHub Actions step would:
//! 1. the client gives up on the slow answer (its `timeout` is shorter),
//!    retries with the same key, waits out the gateway's `409 in flight`,
//!    and gets the stored answer: one deployment;
//! 2. "Re-run failed jobs" (run attempt 2) sends the same key and gets the
//!    same answer replayed: still one deployment.

#[path = "../tests/support/mod.rs"]
mod support;

use idempotent_request::client::input::cli;
use idempotent_request::client::pipeline as app;
use idempotent_request::client::report::{log::Log, outputs};
use idempotent_request::gateway::clock::SystemClock;
use idempotent_request::gateway::config::StoreSpec;
use idempotent_request::gateway::proxy::{Gateway, Settings};
use idempotent_request::gateway::store::sqlite::Durability;
use idempotent_request::gateway::{Limits, StoreOptions, open_store};
use idempotent_request::shared::env::Env;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::{Reply, Response, Server};

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");

    // A deployment API that ignores Idempotency-Key and takes 1.5 s.
    let deployments = Arc::new(AtomicUsize::new(0));
    let counter = deployments.clone();
    let api = Server::start(move |_| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        Reply::Delay(
            Duration::from_millis(1500),
            Response::new(201)
                .header("content-type", "application/json")
                .body(format!("{{\"deployment\":{n}}}")),
        )
    });

    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let database = dir.path().join("idempotency.db");
    let gateway_url = runtime.block_on(async {
        let ttl = Duration::from_secs(24 * 3600);
        let store = open_store(
            &StoreSpec::Sqlite(database.clone()),
            &StoreOptions {
                durability: Durability::Process,
                ttl_ms: ttl.as_millis() as u64,
                postgres: Default::default(),
                password_file: None,
                memory_max_bytes: idempotent_request::gateway::store::memory::DEFAULT_MAX_BYTES,
            },
        )
        .await
        .expect("the SQLite store");
        let mut settings = Settings::new(api.url("").parse().unwrap());
        settings.ttl = ttl;
        let gateway = Gateway::new(settings, store, Arc::new(SystemClock)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(idempotent_request::gateway::serve(
            Arc::new(gateway),
            listener,
            None,
            std::future::pending(),
            Limits::default(),
        ));
        url
    });
    println!("Toy API (no idempotency):   {}", api.url("/"));
    println!(
        "idempotency-gateway:        {gateway_url}  (SQLite: {})\n",
        database.display()
    );

    println!(
        "1. Run attempt 1: the API is slower than the client's timeout, so the first answer is lost."
    );
    let first = run_step(&gateway_url, "1", dir.path());
    show(&first, &deployments);

    println!("2. \"Re-run failed jobs\": run attempt 2 of the same workflow run.");
    let rerun = run_step(&gateway_url, "2", dir.path());
    show(&rerun, &deployments);

    let key = |o: &[(String, String)]| o.iter().find(|(n, _)| n == "idempotency-key").cloned();
    let same_key = key(&first) == key(&rerun);
    println!(
        "Same key on the re-run: {same_key}. Deployments performed: {} (exactly once).",
        deployments.load(Ordering::SeqCst)
    );
    assert!(
        same_key && deployments.load(Ordering::SeqCst) == 1,
        "the quickstart's guarantee did not hold"
    );
}

/// Runs the client as one GitHub Actions step and returns its outputs.
fn run_step(gateway: &str, attempt: &str, dir: &std::path::Path) -> Vec<(String, String)> {
    let output_file = dir.join(format!("outputs-{attempt}"));
    let env: Env = [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_SERVER_URL", "https://github.com"),
        ("GITHUB_REPOSITORY_ID", "4242"),
        ("GITHUB_RUN_ID", "1000001"),
        ("GITHUB_RUN_ATTEMPT", attempt),
        ("GITHUB_JOB", "deploy"),
        ("GITHUB_ACTION", "create-deployment"),
        ("GITHUB_OUTPUT", output_file.to_str().unwrap()),
        ("RUNNER_TEMP", dir.to_str().unwrap()),
    ]
    .into_iter()
    .collect();
    let url = format!("{gateway}/deployments");
    let args = [
        "idempotent-request",
        "--url",
        &url,
        "--json",
        "ref: v1.2.3\nenvironment: production",
        "--timeout",
        "500ms",
        "--retry-delay",
        "300ms",
    ];
    let invocation = cli::parse(args, &env).expect("valid arguments");
    // A plain log on stderr keeps the demo readable; under a real runner the
    // binary writes workflow commands to stdout.
    let mut log = Log::to_writer(Box::new(std::io::stderr()), false);
    let exit = app::run(invocation, &env, &mut log);
    println!("  exit code: {}", exit as u8);
    let text = std::fs::read_to_string(&output_file).unwrap_or_default();
    outputs::parse_like_runner(&text).unwrap_or_default()
}

fn show(outputs: &[(String, String)], deployments: &AtomicUsize) {
    for (name, value) in outputs {
        if ["status", "body", "idempotency-key", "attempts", "replayed"].contains(&name.as_str()) {
            println!("  {name:16} {value}");
        }
    }
    println!(
        "  deployments performed so far: {}\n",
        deployments.load(Ordering::SeqCst)
    );
}
