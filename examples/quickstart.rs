//! Quickstart: `cargo run --release --example quickstart`.
//!
//! Starts a small idempotent API on 127.0.0.1 that performs an operation
//! and then loses the response (it drops the connection), runs the client
//! as a GitHub Actions step would, and shows: the lost response retried and
//! replayed with one side effect, then a "Re-run failed jobs" (run attempt
//! 2) that sends the same key and gets the same answer.

#[path = "../tests/support/mod.rs"]
mod support;

use idempotent_request::{app, cli, env::Env, log::Log, outputs};
use std::sync::Arc;
use support::{AfterCommit, Server, Toy};

fn run_step(server: &Server, attempt: &str, dir: &std::path::Path) -> Vec<(String, String)> {
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
    let url = server.url("/deployments");
    let args = [
        "idempotent-request",
        "--url",
        &url,
        "--json",
        "ref: v1.2.3\nenvironment: production",
        "--retry-delay",
        "200ms",
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

fn show(outputs: &[(String, String)]) {
    for (name, value) in outputs {
        if ["status", "body", "idempotency-key", "attempts", "replayed"].contains(&name.as_str()) {
            println!("  {name:16} {value}");
        }
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let toy = Arc::new(Toy::default());
    let server = Server::start(toy.handler(AfterCommit::Drop));
    println!(
        "An idempotent API at {} that loses its first response.\n",
        server.url("/")
    );

    println!("1. Run attempt 1: the server deploys, the response is lost, the client retries.");
    let first = run_step(&server, "1", dir.path());
    show(&first);
    println!("  deployments performed so far: {}\n", toy.effects());

    println!("2. \"Re-run failed jobs\": run attempt 2 of the same workflow run.");
    let rerun = run_step(&server, "2", dir.path());
    show(&rerun);
    println!("  deployments performed so far: {}\n", toy.effects());

    let same_key = first.iter().find(|(n, _)| n == "idempotency-key")
        == rerun.iter().find(|(n, _)| n == "idempotency-key");
    println!(
        "Same key on the re-run: {same_key}. Deployments performed: {} (exactly once).",
        toy.effects()
    );
    assert!(
        same_key && toy.effects() == 1,
        "the quickstart's guarantee did not hold"
    );
}
