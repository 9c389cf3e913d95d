//! Keys across separate runs of the binary: re-runs of a job reuse the key
//! (and the server acts once); matrix legs and attempt scope do not.

use crate::support;

use std::sync::Arc;
use support::{AfterCommit, Server, Toy, client, github_env, read_outputs};

/// Runs the binary once as a GitHub step with `extra` variables; returns its outputs.
fn run_step(
    server: &Server,
    extra: &[(&str, &str)],
    args: &[&str],
) -> std::collections::HashMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    client()
        .envs(github_env(dir.path()))
        .envs(extra.iter().copied())
        .args([
            "--url",
            &server.url("/releases"),
            "--json",
            "{\"tag\":\"v1.2.3\"}",
        ])
        .args(args)
        .assert()
        .success();
    read_outputs(dir.path())
}

#[test]
fn rerun_sends_the_same_key_and_the_server_acts_once() {
    let toy = Arc::new(Toy::default());
    let server = Server::start(toy.handler(AfterCommit::Answer));
    let first = run_step(&server, &[("GITHUB_RUN_ATTEMPT", "1")], &[]);
    let rerun = run_step(&server, &[("GITHUB_RUN_ATTEMPT", "2")], &[]);
    assert_eq!(first["idempotency-key"], rerun["idempotency-key"]);
    assert_eq!(toy.effects(), 1);
    assert_eq!(first["replayed"], "false");
    assert_eq!(rerun["replayed"], "true");
    assert_eq!(rerun["body"], first["body"]);
}

#[test]
fn attempt_scope_sends_a_new_key_per_run_attempt() {
    let toy = Arc::new(Toy::default());
    let server = Server::start(toy.handler(AfterCommit::Answer));
    let scope = ["--key-scope", "attempt"];
    let first = run_step(&server, &[("GITHUB_RUN_ATTEMPT", "1")], &scope);
    let rerun = run_step(&server, &[("GITHUB_RUN_ATTEMPT", "2")], &scope);
    assert_ne!(first["idempotency-key"], rerun["idempotency-key"]);
    assert_eq!(toy.effects(), 2);
}

#[test]
fn matrix_legs_send_different_keys() {
    let toy = Arc::new(Toy::default());
    let server = Server::start(toy.handler(AfterCommit::Answer));
    let leg0 = run_step(&server, &[("IDEMPOTENT_REQUEST_JOB_INDEX", "0")], &[]);
    let leg1 = run_step(&server, &[("IDEMPOTENT_REQUEST_JOB_INDEX", "1")], &[]);
    assert_ne!(leg0["idempotency-key"], leg1["idempotency-key"]);
    assert_eq!(toy.effects(), 2);
}

#[test]
fn gitlab_retry_of_a_job_sends_the_same_key() {
    let toy = Arc::new(Toy::default());
    let server = Server::start(toy.handler(AfterCommit::Answer));
    let key = |job_id: &str| {
        let assert = client()
            .envs([
                ("GITLAB_CI", "true"),
                ("CI_SERVER_URL", "https://gitlab.example"),
                ("CI_PROJECT_ID", "12"),
                ("CI_PIPELINE_ID", "345"),
                ("CI_JOB_NAME", "deploy"),
                ("CI_JOB_ID", job_id),
            ])
            .args(["key", "--url", &server.url("/releases"), "--body", "x"])
            .assert()
            .success();
        String::from_utf8(assert.get_output().stdout.clone()).unwrap()
    };
    assert_eq!(key("1001"), key("1002"));
    assert_eq!(server.requests().len(), 0, "`key` sends nothing");
}

#[test]
fn key_subcommand_prints_the_key_a_send_uses() {
    let toy = Arc::new(Toy::default());
    let server = Server::start(toy.handler(AfterCommit::Answer));
    let dir = tempfile::tempdir().unwrap();
    let printed = client()
        .envs(github_env(dir.path()))
        .args([
            "key",
            "--url",
            &server.url("/releases"),
            "--json",
            "{\"tag\":\"v1.2.3\"}",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let sent = run_step(&server, &[], &[]);
    assert_eq!(
        String::from_utf8(printed).unwrap().trim(),
        sent["idempotency-key"]
    );
}

#[test]
fn dry_run_prints_the_key_and_sends_nothing() {
    let toy = Arc::new(Toy::default());
    let server = Server::start(toy.handler(AfterCommit::Answer));
    let assert = client()
        .args([
            "--url",
            &server.url("/releases?token=abc"),
            "--key-salt",
            "s",
            "--dry-run",
        ])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert_eq!(stdout.trim().len(), 36, "{stdout}");
    assert!(
        stderr.contains("would send POST http://127.0.0.1"),
        "{stderr}"
    );
    assert!(stderr.contains("token=REDACTED"), "{stderr}");
    assert_eq!(server.connections(), 0);
}

/// Regression: URL user-info and token query values fed the key, so a
/// re-run with a token minted per attempt got a new key and ran again.
#[test]
fn url_credentials_and_secret_query_values_do_not_change_the_key() {
    let key = |url: &str, attempt: &str| {
        let dir = tempfile::tempdir().unwrap();
        let assert = client()
            .envs(github_env(dir.path()))
            .env("GITHUB_RUN_ATTEMPT", attempt)
            .args(["key", "--url", url, "--json", "{}"])
            .assert()
            .success();
        String::from_utf8(assert.get_output().stdout.clone()).unwrap()
    };
    let first = key(
        "https://ci:tok-1@api.example/d?access_token=a1&env=prod",
        "1",
    );
    let rerun = key(
        "https://ci:tok-2@api.example/d?access_token=b2&env=prod",
        "2",
    );
    assert_eq!(first, rerun);
    assert_eq!(
        first,
        key("https://api.example/d?access_token=c3&env=prod", "1")
    );
    assert_ne!(
        first,
        key("https://api.example/d?access_token=c3&env=dev", "1")
    );
}
