//! `idempotent-request verify` against servers on 127.0.0.1: the project's
//! gateway in front of a key-unaware upstream (every required check
//! passes), that upstream alone, a server that replays another body, one
//! that answers 500 on a reused key, one that acts on concurrent
//! duplicates; bad input, an unreachable server, the plan and the outputs.

use crate::support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Reply, Request, Response, Server, client, counting};

/// Runs `verify` with `args` against `url`; exit code, the JSON outputs
/// and stderr.
fn verify(url: &str, args: &[&str]) -> (i32, serde_json::Value, String) {
    let output = client()
        .args(["verify", "--url", url, "--json", r#"{"ref":"v1"}"#])
        .args(["--output", "json", "--timeout", "10s"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("stdout is not one JSON object ({e}): {stdout}\nstderr: {stderr}")
    });
    (output.status.code().unwrap(), json, stderr)
}

/// Each check's verdict and what was seen.
fn verdicts(json: &serde_json::Value) -> HashMap<String, (String, String)> {
    json["verify-checks"]
        .as_object()
        .unwrap_or_else(|| panic!("no verify-checks object in {json}"))
        .iter()
        .map(|(name, check)| {
            (
                name.clone(),
                (
                    check["verdict"].as_str().unwrap().to_owned(),
                    check["seen"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

fn assert_verdict(
    verdicts: &HashMap<String, (String, String)>,
    check: &str,
    verdict: &str,
    seen: &str,
) {
    let (got, text) = &verdicts[check];
    assert_eq!(got, verdict, "{check}: {text}");
    assert!(text.contains(seen), "{check}: expected `{seen}` in: {text}");
}

/// A keyed server: the first request with a key acts (answer `201
/// {"deployment":n}`); a later one with that key gets `reuse(stored)`.
fn keyed(
    reuse: impl Fn(&Response) -> Response + Send + Sync + 'static,
) -> (Server, Arc<AtomicUsize>) {
    let effects = Arc::new(AtomicUsize::new(0));
    let counter = effects.clone();
    let stored: Mutex<HashMap<String, Response>> = Mutex::default();
    let server = Server::start(move |request: &Request| {
        let Some(key) = request.header("idempotency-key").map(str::to_owned) else {
            return Reply::Respond(Response::new(428).body("a key is required"));
        };
        let mut stored = stored.lock().unwrap();
        if let Some(first) = stored.get(&key) {
            return Reply::Respond(reuse(first));
        }
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let response = Response::new(201)
            .header("content-type", "application/json")
            .body(format!("{{\"deployment\":{n}}}"));
        stored.insert(key, response.clone());
        Reply::Respond(response)
    });
    (server, effects)
}

#[cfg(all(feature = "gateway", unix))]
#[test]
fn the_gateway_in_front_of_a_key_unaware_upstream_passes_every_required_check() {
    use support::gateway::Gateway;
    let (upstream, calls) = counting();
    let gateway = Gateway::start(&upstream, &["--store", "memory"]);
    let url = format!("{}/deployments", gateway.url);
    let (code, json, stderr) = verify(&url, &["--verify-id-field", "/deployment"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json["verify-result"], "passed", "{json}");
    let v = verdicts(&json);
    assert_verdict(
        &v,
        "replay",
        "passed",
        "marked as a replay (idempotent-replayed)",
    );
    assert_verdict(&v, "lost-response", "passed", "marked as replays");
    assert_verdict(&v, "changed-payload", "passed", "refused with 422");
    assert_verdict(&v, "concurrent", "passed", "the one after replayed it");
    assert_verdict(&v, "no-key", "info", "answered 201");
    assert_verdict(&v, "new-token", "not-applicable", "set oidc-audience");
    assert_verdict(&v, "retention", "not-applicable", "set verify-retention");
    // One execution per check that sends a key (replay, lost response,
    // changed payload, concurrent) and one for the request without a key.
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert!(stderr.contains("every required check passed"), "{stderr}");
}

#[cfg(all(feature = "gateway", unix))]
#[test]
fn retention_fails_when_the_gateway_forgets_keys_before_the_wait() {
    use support::gateway::Gateway;
    let (upstream, _calls) = counting();
    let gateway = Gateway::start(&upstream, &["--store", "memory", "--ttl", "1s"]);
    let url = format!("{}/deployments", gateway.url);
    let (code, json, _) = verify(&url, &["--verify-retention", "2s"]);
    assert_eq!(code, 1);
    let v = verdicts(&json);
    assert_verdict(&v, "replay", "passed", "identical");
    assert_verdict(&v, "retention", "failed", "not replayed after 2s");
}

#[test]
fn retention_passes_when_the_key_is_still_replayed_after_the_wait() {
    let (server, effects) = keyed(|first| first.clone().header("idempotent-replayed", "true"));
    let (code, json, stderr) = verify(&server.url("/d"), &["--verify-retention", "1s"]);
    // This server replays a changed payload instead of refusing it.
    assert_eq!(code, 1, "{stderr}");
    let v = verdicts(&json);
    assert_verdict(&v, "retention", "passed", "still replayed after 1s");
    assert_verdict(&v, "changed-payload", "failed", "silently ignored");
    assert_eq!(json["error"], "verification failed: changed-payload");
    // Replay, lost response, changed payload, concurrent: one each.
    assert_eq!(effects.load(Ordering::SeqCst), 4);
}

#[test]
fn a_key_unaware_server_fails_replay_and_lost_response_naming_the_second_execution() {
    let (server, calls) = counting();
    let (code, json, stderr) = verify(
        &server.url("/deployments"),
        &[
            "--verify-id-field",
            "/deployment",
            "--verify-concurrency",
            "3",
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(json["verify-result"], "failed");
    let v = verdicts(&json);
    assert_verdict(
        &v,
        "replay",
        "failed",
        "the `/deployment` field differs: a second execution",
    );
    assert_verdict(&v, "lost-response", "failed", "the retries acted again");
    assert_verdict(
        &v,
        "changed-payload",
        "failed",
        "acted on under the same key",
    );
    assert_verdict(&v, "concurrent", "failed", "acted 3 times");
    assert_verdict(&v, "no-key", "info", "answered 201");
    // 2 + 3 + 2 + 3 + 1 + 1 requests, each one executed.
    assert_eq!(calls.load(Ordering::SeqCst), 12);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("replay, lost-response, changed-payload, concurrent"),
        "{json}"
    );
    assert!(
        stderr.contains("put `idempotency-gateway` in front"),
        "{stderr}"
    );
}

#[test]
fn a_server_that_replays_another_body_fails_the_replay() {
    let (server, _) = keyed(|first| {
        let mut body = first.body.clone();
        body.truncate(body.len() - 1);
        body.extend_from_slice(br#","replayed_at":"now"}"#);
        first.clone().body(body)
    });
    let (code, json, _) = verify(&server.url("/d"), &[]);
    assert_eq!(code, 1);
    let v = verdicts(&json);
    assert_verdict(
        &v,
        "replay",
        "failed",
        "the bodies differ (16 bytes, then 36)",
    );
    assert_verdict(
        &v,
        "no-key",
        "info",
        "refused with 428: the server requires a key",
    );
}

#[test]
fn a_server_that_answers_500_on_a_reused_key_fails_replay_and_lost_response() {
    let (server, _) = keyed(|_| Response::new(500).body("duplicate key value violates constraint"));
    let (code, json, _) = verify(&server.url("/d"), &[]);
    assert_eq!(code, 1);
    let v = verdicts(&json);
    assert_verdict(&v, "replay", "failed", "status 201, then 500");
    assert_verdict(&v, "lost-response", "failed", "the retry 500");
    assert_verdict(&v, "changed-payload", "failed", "answered 500");
}

/// A server that checks for the key and acts in two steps: a record
/// becomes visible only when its answer is sent, a second later, so
/// duplicates that arrive meanwhile act again; sequential repeats replay.
#[test]
fn a_server_that_acts_on_concurrent_duplicates_fails_the_concurrent_check() {
    let effects = Arc::new(AtomicUsize::new(0));
    let counter = effects.clone();
    let records: Mutex<HashMap<String, (Instant, Response)>> = Mutex::default();
    let slow = Duration::from_millis(1000);
    let server = Server::start(move |request: &Request| {
        let key = request.header("idempotency-key").unwrap_or("").to_owned();
        let mut records = records.lock().unwrap();
        if let Some((visible_at, response)) = records.get(&key)
            && Instant::now() >= *visible_at
        {
            return Reply::Respond(response.clone());
        }
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let response = Response::new(201).body(format!("{{\"deployment\":{n}}}"));
        records.insert(key, (Instant::now() + slow, response.clone()));
        Reply::Delay(slow, response)
    });
    let (code, json, _) = verify(&server.url("/d"), &["--verify-concurrency", "4"]);
    assert_eq!(code, 1);
    let v = verdicts(&json);
    assert_verdict(&v, "replay", "passed", "identical");
    assert_verdict(&v, "concurrent", "failed", "acted 4 times (4 sent at once");
}

#[test]
fn an_unreachable_server_exits_3_and_judges_nothing() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, json, stderr) = verify(&format!("http://127.0.0.1:{port}/d"), &[]);
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(json["verify-result"], "failed");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{json}"
    );
    assert!(json.get("verify-checks").is_none(), "{json}");
}

#[test]
fn an_endpoint_that_refuses_the_request_fails_and_the_rest_is_not_run() {
    let server = Server::start(|_| Reply::Respond(Response::new(401).body("who are you")));
    let (code, json, _) = verify(&server.url("/d"), &[]);
    assert_eq!(code, 1);
    let v = verdicts(&json);
    assert_verdict(&v, "replay", "failed", "the first request was answered 401");
    assert_verdict(&v, "concurrent", "not-applicable", "not run");
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn the_plan_comes_first_and_a_dry_run_sends_nothing() {
    let (server, calls) = counting();
    let assert = client()
        .args([
            "verify",
            "--dry-run",
            "--url",
            &server.url("/d"),
            "--body",
            "x",
        ])
        .args(["--verify-concurrency", "7"])
        .assert()
        .code(0);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains("verify: up to 16 requests POST http://127.0.0.1:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("each of which may act on the server"),
        "{stderr}"
    );
    assert!(
        stderr.contains("7 requests with one key at once"),
        "{stderr}"
    );
    assert!(
        stderr.contains("(skipped: needs oidc-audience in a GitHub Actions job)"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was sent"), "{stderr}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(server.connections(), 0);
}

#[test]
fn bad_verify_input_exits_2_and_sends_nothing() {
    let (server, _) = counting();
    for (args, input, says) in [
        (
            ["--verify-concurrency", "1"],
            "verify-concurrency",
            "from 2 to 50",
        ),
        (
            ["--verify-id-field", "id"],
            "verify-id-field",
            "leading slash",
        ),
        (["--verify-retention", "soon"], "verify-retention", "soon"),
        (
            ["--verify-ignore-headers", "a b"],
            "verify-ignore-headers",
            "header",
        ),
    ] {
        let assert = client()
            .args(["verify", "--url", &server.url("/d")])
            .args(args)
            .assert()
            .code(2);
        let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
        assert!(stderr.contains(&format!("`{input}`")), "{stderr}");
        assert!(stderr.contains(says), "{input}: {stderr}");
        assert!(stderr.contains("Nothing was sent"), "{stderr}");
    }
    assert_eq!(server.connections(), 0);
}

#[test]
fn under_github_actions_the_verify_input_writes_outputs_and_a_summary() {
    // A hostile server: workflow commands and markup in its body and in a
    // header value, a different header on every answer.
    let served = Arc::new(AtomicUsize::new(0));
    let n = served.clone();
    let server = Server::start(move |_| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        Reply::Respond(
            Response::new(201)
                .header("x-note", "::error::owned %0A <b>x</b>")
                .header(&format!("x-call-{}", i % 2), "1")
                .body("::set-output name=verify-result::passed\n::add-mask::x"),
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(support::github_env(dir.path()))
        .env("INPUT_VERIFY", "true")
        .env("INPUT_URL", server.url("/d"))
        .env("INPUT_BODY", "x")
        .assert()
        .code(1);
    let text = support::both_streams(&assert);
    support::assert_only_own_commands(&text);
    assert!(
        text.contains("::error title=Replay check failed::"),
        "{text}"
    );
    let outputs = support::read_outputs(dir.path());
    assert_eq!(outputs["verify-result"], "failed");
    let checks: serde_json::Value = serde_json::from_str(&outputs["verify-checks"]).unwrap();
    assert_eq!(checks["replay"]["verdict"], "failed");
    assert!(
        checks["replay"]["seen"]
            .as_str()
            .unwrap()
            .contains("headers differ: x-call-0, x-call-1"),
        "{checks}"
    );
    let summary = std::fs::read_to_string(dir.path().join("summary")).unwrap();
    assert!(summary.contains("| Replay | failed |"), "{summary}");
    assert!(
        !summary.contains("<b>") && !text.contains("owned"),
        "{summary}"
    );
}

#[test]
fn the_key_command_wins_over_the_verify_input() {
    let (server, _) = counting();
    let assert = client()
        .args(["key", "--url", &server.url("/d"), "--key-salt", "s"])
        .env("INPUT_VERIFY", "true")
        .assert()
        .code(0);
    let stdout = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert_eq!(stdout.trim().len(), 36, "{stdout}");
    assert_eq!(server.connections(), 0);
}

#[test]
fn a_body_file_is_read_once_and_sent_by_every_check() {
    let (server, _) = counting();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, br#"{"ref":"v2"}"#).unwrap();
    let output = client()
        .args(["verify", "--url", &server.url("/d"), "--output", "json"])
        .args(["--body-file", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_verdict(&verdicts(&json), "changed-payload", "failed", "acted on");
    let bodies: Vec<Vec<u8>> = server.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies.len(), 14);
    let original = br#"{"ref":"v2"}"#.to_vec();
    assert_eq!(
        bodies.iter().filter(|b| **b != original).count(),
        1,
        "one changed payload"
    );
}

/// The product's two halves composed under OIDC: the new-token check
/// passes through a gateway that takes the caller from the token's verified
/// claims, and fails through one that takes it from the header (where a
/// re-run, which mints a new token, would act again). Every token the
/// client is given is masked, and the retention check's request, sent
/// after its wait, carries a token minted after the wait.
#[cfg(all(feature = "gateway", unix))]
#[test]
fn the_new_token_check_tells_a_jwt_gateway_from_a_header_scoped_one() {
    use support::gateway::Gateway;
    use support::jwt::{AUDIENCE, Jwks, SigningKey, token_service};
    let key = Arc::new(SigningKey::generate(
        jsonwebtoken::Algorithm::RS256,
        "rsa-1",
    ));
    let jwks = Jwks::serve(&[&key]);
    let (service, minted) = token_service(key, "repo:acme/app:environment:staging");
    let run = |gateway: &Gateway, extra: &[&str]| {
        minted.lock().unwrap().clear();
        let dir = tempfile::tempdir().unwrap();
        let assert = client()
            .envs(support::github_env(dir.path()))
            .env(
                "ACTIONS_ID_TOKEN_REQUEST_URL",
                service.url("/token?api-version=2.0"),
            )
            .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-request-token")
            .args(["verify", "--url", &format!("{}/deployments", gateway.url)])
            .args(["--json", r#"{"ref":"v1"}"#, "--oidc-audience", AUDIENCE])
            .args(["--verify-id-field", "/deployment"])
            .args(extra)
            .assert();
        let code = assert.get_output().status.code().unwrap();
        let text = support::both_streams(&assert);
        let outputs = support::read_outputs(dir.path());
        let checks: serde_json::Value = serde_json::from_str(&outputs["verify-checks"])
            .unwrap_or_else(|e| panic!("{e}: {text}"));
        let summary = std::fs::read_to_string(dir.path().join("summary")).unwrap();
        let minted = minted.lock().unwrap().clone();
        for token in &minted {
            assert!(text.contains(&format!("::add-mask::{token}")), "{text}");
            assert!(!summary.contains(token.as_str()));
            assert!(
                outputs
                    .values()
                    .all(|value| !value.contains(token.as_str()))
            );
        }
        (code, checks, text, minted.len())
    };
    let verdict = |checks: &serde_json::Value, name: &str| {
        (
            checks[name]["verdict"].as_str().unwrap().to_owned(),
            checks[name]["seen"].as_str().unwrap().to_owned(),
        )
    };

    let (upstream, _calls) = counting();
    let mut args = jwks.gateway_args();
    args.extend(["--store".into(), "memory".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let jwt_gateway = Gateway::start(&upstream, &args);
    let (code, checks, text, tokens) = run(&jwt_gateway, &["--verify-retention", "1s"]);
    assert_eq!(code, 0, "{text}");
    let (got, seen) = verdict(&checks, "new-token");
    assert_eq!(got, "passed", "{seen}");
    assert!(seen.contains("replayed to a newly minted token"), "{seen}");
    assert_eq!(verdict(&checks, "retention").0, "passed", "{checks}");
    // The request's token, the new-token check's, the retention check's.
    assert_eq!(tokens, 3, "{text}");

    let header_gateway = Gateway::start(&upstream, &["--store", "memory"]);
    let (code, checks, text, tokens) = run(&header_gateway, &[]);
    assert_eq!(code, 1, "{text}");
    let (got, seen) = verdict(&checks, "new-token");
    assert_eq!(got, "failed", "{seen}");
    assert!(
        seen.contains("not replayed with a newly minted token"),
        "{seen}"
    );
    assert!(seen.contains("deployment"), "{seen}");
    assert!(text.contains("--jwt-jwks-url"), "{text}");
    for check in ["replay", "lost-response", "changed-payload", "concurrent"] {
        assert_eq!(verdict(&checks, check).0, "passed", "{check}: {checks}");
    }
    assert_eq!(tokens, 2, "{text}");
}
