//! The re-run guard, the earlier-attempts history and OIDC, against a mock
//! GitHub API and token service on 127.0.0.1 answering the documented JSON
//! shapes.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use support::{
    AfterCommit, Reply, Response, Server, Toy, assert_only_own_commands, both_streams, client,
    github_env, markdown, read_outputs,
};

const TOKEN: &str = "ghs_T0kenThatMustNeverLeak";

fn rfc3339(ago: Duration) -> String {
    chrono::DateTime::<chrono::Utc>::from(SystemTime::now() - ago).to_rfc3339()
}

fn job(name: &str, status: &str, conclusion: Option<&str>, runner: &str) -> serde_json::Value {
    serde_json::json!({
        "id": 1, "run_id": 1000001, "name": name, "status": status,
        "conclusion": conclusion, "runner_name": runner, "started_at": "2026-11-20T10:00:00Z"
    })
}

/// A mock API for run 1000001 of acme/app: attempt 1 started `ago`; its jobs
/// include `deploy`, which failed; attempt 2 has `deploy` in progress on runner-2.
fn mock_api(ago: Duration) -> Server {
    let started = rfc3339(ago);
    Server::start(move |request| {
        let path = request.path.as_str();
        let json = |value: serde_json::Value| {
            Reply::Respond(
                Response::new(200)
                    .header("content-type", "application/json")
                    .body(value.to_string()),
            )
        };
        if path.ends_with("/repos/acme/app/actions/runs/1000001/attempts/1") {
            json(
                serde_json::json!({"id": 1000001, "run_attempt": 1, "status": "completed",
                                    "conclusion": "failure", "run_started_at": started}),
            )
        } else if path.contains("/repos/acme/app/actions/runs/1000001/attempts/1/jobs") {
            json(serde_json::json!({"total_count": 2, "jobs": [
                job("build", "completed", Some("success"), "runner-1"),
                job("deploy", "completed", Some("failure"), "runner-1")]}))
        } else if path.contains("/repos/acme/app/actions/runs/1000001/attempts/2/jobs") {
            json(
                serde_json::json!({"total_count": 1, "jobs": [job("deploy", "in_progress", None, "runner-2")]}),
            )
        } else {
            Reply::Respond(Response::new(404).body(r#"{"message":"Not Found"}"#))
        }
    })
}

fn rerun_env(dir: &std::path::Path, api: &str) -> Vec<(String, String)> {
    let mut env = github_env(dir);
    env.retain(|(k, _)| k != "GITHUB_RUN_ATTEMPT");
    env.extend([
        ("GITHUB_RUN_ATTEMPT".to_owned(), "2".to_owned()),
        ("GITHUB_API_URL".to_owned(), api.to_owned()),
        ("RUNNER_NAME".to_owned(), "runner-2".to_owned()),
    ]);
    env
}

fn target() -> (Server, Arc<Toy>) {
    let toy = Arc::new(Toy::default());
    (Server::start(toy.handler(AfterCommit::Answer)), toy)
}

/// The client on attempt 2 of a run whose API is at `api`, sending to
/// `target`, with a 24h `key-ttl` and a token: the re-run guard is on.
fn guarded_client(dir: &std::path::Path, api: &str, target: &Server) -> assert_cmd::Command {
    let mut client = client();
    client.envs(rerun_env(dir, api)).args([
        "--url",
        &target.url("/deploy"),
        "--key-ttl",
        "24h",
        "--github-token",
        TOKEN,
    ]);
    client
}

fn stdout(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stdout).into_owned()
}

#[test]
fn rerun_older_than_key_ttl_is_refused_with_exit_4() {
    let api = mock_api(Duration::from_secs(3 * 86_400));
    let (target, toy) = target();
    let dir = tempfile::tempdir().unwrap();
    let assert = guarded_client(dir.path(), &api.url(""), &target)
        .args(["--body", "x"])
        .assert()
        .code(4);
    assert_eq!(target.connections(), 0, "nothing is sent");
    assert_eq!(toy.effects(), 0);
    let out = read_outputs(dir.path());
    assert!(out["error"].contains("3 days ago"), "{}", out["error"]);
    assert!(
        out["error"].contains("allow-expired-key"),
        "{}",
        out["error"]
    );
    assert_eq!(out["attempts"], "0");
    assert!(!out["idempotency-key"].is_empty());
    let log = stdout(&assert);
    assert!(
        log.contains("::error title=Re-run refused%3A the idempotency key may have expired::"),
        "{log}"
    );
    assert!(log.contains("attempt 1: failure"), "{log}");
    let summary = std::fs::read_to_string(dir.path().join("summary")).unwrap();
    assert!(summary.contains("not sent"), "{summary}");
    assert!(summary.contains("- ` attempt 1: failure"), "{summary}");
}

#[test]
fn rerun_younger_than_key_ttl_is_sent_and_the_history_is_shown() {
    let api = mock_api(Duration::from_secs(2 * 3600));
    let (target, toy) = target();
    let dir = tempfile::tempdir().unwrap();
    let assert = guarded_client(dir.path(), &api.url(""), &target)
        .args(["--body", "x"])
        .assert()
        .success();
    assert_eq!(toy.effects(), 1);
    let log = stdout(&assert);
    assert!(
        log.contains("this is run attempt 2; earlier attempts of this job:"),
        "{log}"
    );
    assert!(
        log.contains("  attempt 1: failure (started 2026-11-20T10:00:00Z)"),
        "{log}"
    );
    // The token went to the API, and only there.
    assert!(
        api.requests()
            .iter()
            .all(|r| r.header("authorization") == Some(&format!("Bearer {TOKEN}")))
    );
    assert!(
        target
            .requests()
            .iter()
            .all(|r| r.header("authorization").is_none())
    );
}

#[test]
fn unknown_age_is_refused_unless_allow_expired_key() {
    let forbidden = Server::start(|_| {
        Reply::Respond(
            Response::new(403).body(r#"{"message":"Resource not accessible by integration"}"#),
        )
    });
    let missing =
        Server::start(|_| Reply::Respond(Response::new(404).body(r#"{"message":"Not Found"}"#)));
    for (api, expect) in [(&forbidden, "HTTP 403"), (&missing, "HTTP 404")] {
        let (target, _) = target();
        let dir = tempfile::tempdir().unwrap();
        guarded_client(dir.path(), &api.url(""), &target)
            .assert()
            .code(4);
        let error = &read_outputs(dir.path())["error"];
        assert!(
            error.contains(expect) && error.contains("actions: read"),
            "{error}"
        );
        assert_eq!(target.connections(), 0);
    }
    // No token at all.
    let (target, _) = target();
    let dir = tempfile::tempdir().unwrap();
    client()
        .envs(rerun_env(dir.path(), &forbidden.url("")))
        .args(["--url", &target.url("/deploy"), "--key-ttl", "24h"])
        .assert()
        .code(4);
    assert!(read_outputs(dir.path())["error"].contains("no github-token"));
    // allow-expired-key sends anyway, with a warning.
    let dir = tempfile::tempdir().unwrap();
    let assert = guarded_client(dir.path(), &forbidden.url(""), &target)
        .args(["--allow-expired-key"])
        .assert()
        .success();
    assert!(stdout(&assert).contains("::warning title=The idempotency key may have expired::"));
    assert_eq!(target.requests().len(), 1);
}

#[test]
fn first_attempts_make_no_api_call() {
    let api = mock_api(Duration::from_secs(3 * 86_400));
    let (target, toy) = target();
    let dir = tempfile::tempdir().unwrap();
    guarded_client(dir.path(), &api.url(""), &target)
        // Set last, so it replaces the attempt 2 of the re-run environment.
        .env("GITHUB_RUN_ATTEMPT", "1")
        .assert()
        .success();
    assert_eq!(api.connections(), 0);
    assert_eq!(toy.effects(), 1);
}

#[test]
fn jobs_are_read_across_pages() {
    let started = rfc3339(Duration::from_secs(3600));
    let api = Server::start(move |request| {
        let path = request.path.as_str();
        let body = if path.contains("/attempts/1/jobs") && path.contains("&page=1") {
            let jobs: Vec<_> = (0..100)
                .map(|i| job(&format!("shard {i}"), "completed", Some("success"), "r"))
                .collect();
            serde_json::json!({"total_count": 101, "jobs": jobs})
        } else if path.contains("/attempts/1/jobs") && path.contains("&page=2") {
            serde_json::json!({"total_count": 101, "jobs": [job("deploy", "completed", Some("cancelled"), "r")]})
        } else if path.contains("/attempts/2/jobs") {
            serde_json::json!({"total_count": 1, "jobs": [job("deploy", "in_progress", None, "runner-2")]})
        } else {
            serde_json::json!({"run_started_at": started})
        };
        Reply::Respond(
            Response::new(200)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
    });
    let (target, _) = target();
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(rerun_env(dir.path(), &api.url("")))
        .args(["--url", &target.url("/deploy"), "--github-token", TOKEN])
        .assert()
        .success();
    assert!(
        stdout(&assert).contains("  attempt 1: cancelled"),
        "{}",
        stdout(&assert)
    );
    assert!(api.requests().iter().any(|r| r.path.contains("&page=2")));
}

#[test]
fn api_calls_honour_the_proxy_variables() {
    // The proxy answers as the API would; it sees absolute-form requests.
    let proxy = mock_api(Duration::from_secs(3600));
    let (target, _) = target();
    let dir = tempfile::tempdir().unwrap();
    guarded_client(dir.path(), "http://localhost:9/", &target)
        .env("HTTP_PROXY", proxy.url(""))
        .env("NO_PROXY", "127.0.0.1")
        .assert()
        .success();
    let seen: Vec<String> = proxy.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        seen.iter()
            .any(|p| p
                .starts_with("http://localhost:9/repos/acme/app/actions/runs/1000001/attempts/1")),
        "{seen:?}"
    );
    assert_eq!(
        target.requests().len(),
        1,
        "the target itself was reached directly (NO_PROXY)"
    );
}

#[test]
fn the_token_never_appears_in_output() {
    let api = mock_api(Duration::from_secs(3 * 86_400));
    let (target, _) = target();
    let dir = tempfile::tempdir().unwrap();
    let assert = guarded_client(dir.path(), &api.url(""), &target)
        .assert()
        .code(4);
    let everything = [
        stdout(&assert),
        String::from_utf8_lossy(&assert.get_output().stderr).into_owned(),
        std::fs::read_to_string(dir.path().join("output")).unwrap(),
        std::fs::read_to_string(dir.path().join("summary")).unwrap(),
    ];
    for text in &everything {
        for line in text.lines().filter(|l| !l.starts_with("::add-mask::")) {
            assert!(!line.contains(TOKEN), "the token leaked: {line}");
        }
    }
    assert!(everything[0].contains(&format!("::add-mask::{TOKEN}\n")));
}

/// A token service that checks the audience and its own bearer.
fn token_service() -> Server {
    Server::start(|request| {
        let ok = request
            .path
            .contains("audience=https%3A%2F%2Fdeploy.example")
            && request.header("authorization") == Some("Bearer runner-request-token");
        if ok {
            Reply::Respond(Response::new(200).body(r#"{"value":"eyJhbGciOi.payload.signature"}"#))
        } else {
            Reply::Respond(Response::new(403).body("{}"))
        }
    })
}

fn oidc_env(dir: &std::path::Path, service: &Server) -> Vec<(String, String)> {
    let mut env = github_env(dir);
    env.push((
        "ACTIONS_ID_TOKEN_REQUEST_URL".into(),
        service.url("/token?api-version=2.0"),
    ));
    env.push((
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN".into(),
        "runner-request-token".into(),
    ));
    env
}

/// The client in a GitHub Actions job writing its outputs under `dir`,
/// sending `x` to `target` with a token for `https://deploy.example`.
fn oidc_client(dir: &std::path::Path, service: &Server, target: &Server) -> assert_cmd::Command {
    let mut client = client();
    client.envs(oidc_env(dir, service)).args([
        "--url",
        &target.url("/deploy"),
        "--body",
        "x",
        "--oidc-audience",
        "https://deploy.example",
    ]);
    client
}

#[test]
fn oidc_token_is_sent_as_bearer_masked_and_keeps_the_key() {
    let service = token_service();
    let (target, _) = target();
    let dir = tempfile::tempdir().unwrap();
    let assert = oidc_client(dir.path(), &service, &target)
        .assert()
        .success();
    assert_eq!(
        target.requests()[0].header("authorization"),
        Some("Bearer eyJhbGciOi.payload.signature")
    );
    let log = stdout(&assert);
    assert!(
        log.contains("::add-mask::eyJhbGciOi.payload.signature\n"),
        "{log}"
    );
    for line in log.lines().filter(|l| !l.starts_with("::add-mask::")) {
        assert!(!line.contains("payload.signature"), "{line}");
    }
    let with_oidc = read_outputs(dir.path())["idempotency-key"].clone();
    let dir2 = tempfile::tempdir().unwrap();
    client()
        .envs(github_env(dir2.path()))
        .args(["--url", &target.url("/deploy"), "--body", "x"])
        .assert()
        .success();
    assert_eq!(
        read_outputs(dir2.path())["idempotency-key"],
        with_oidc,
        "the token does not feed the key"
    );
}

#[test]
fn oidc_without_permission_is_a_clear_error_and_nothing_is_sent() {
    let (target, _) = target();
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(github_env(dir.path()))
        .args([
            "--url",
            &target.url("/deploy"),
            "--oidc-audience",
            "https://deploy.example",
        ])
        .assert()
        .code(2);
    assert!(
        stdout(&assert).contains("id-token: write"),
        "{}",
        stdout(&assert)
    );
    assert_eq!(target.connections(), 0);
    // The token service refusing (audience or permission) is the same.
    let service = token_service();
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(oidc_env(dir.path(), &service))
        .args(["--url", &target.url("/deploy"), "--oidc-audience", "other"])
        .assert()
        .code(2);
    assert!(stdout(&assert).contains("HTTP 403"), "{}", stdout(&assert));
    assert_eq!(target.connections(), 0);
}

/// The client against a token service that answers `body`: exit 2 and
/// nothing sent to the target; the log.
fn refused_token_answer(body: String) -> String {
    let service = Server::start(move |_| Reply::Respond(Response::new(200).body(body.clone())));
    let (target, _) = target();
    let dir = tempfile::tempdir().unwrap();
    let assert = oidc_client(dir.path(), &service, &target).assert().code(2);
    assert_eq!(target.connections(), 0, "nothing was sent");
    stdout(&assert)
}

/// A token that could not be sent as a header value (a control
/// character, a space, a line break, or nothing) is refused before
/// anything is sent, without being quoted.
#[test]
fn an_unusable_oidc_token_is_refused_and_nothing_is_sent() {
    for value in [
        r"Zq9\u0001Xw.x.y",
        "Zq9 Xw.x.y",
        r"Zq9\nXw.x.y",
        r"Zq9\u007fXw",
        "",
    ] {
        let log = refused_token_answer(format!(r#"{{"value":"{value}"}}"#));
        assert!(
            log.contains("the OIDC token service answered with an unusable token"),
            "{value}: {log}"
        );
        assert!(!log.contains("Zq9"), "{value}: the token was quoted: {log}");
    }
}

/// A token service answer larger than a token could be (here 1 MiB) is
/// refused at 64 KiB, before anything is sent.
#[test]
fn an_oversized_oidc_answer_is_refused_and_nothing_is_sent() {
    let log = refused_token_answer(format!(r#"{{"value":"{}"}}"#, "a".repeat(1 << 20)));
    assert!(
        log.contains("the OIDC token response: it is larger than the 65536 bytes allowed"),
        "{log}"
    );
}

/// A token service that mints numbered JWT-shaped tokens expiring
/// `lifetime_secs` after now (negative: already expired), answering `500`
/// to the calls numbered in `failing` (1-based); returns the server and
/// the tokens minted, in order.
fn expiring_token_service(
    lifetime_secs: i64,
    failing: &'static [usize],
) -> (Server, Arc<std::sync::Mutex<Vec<String>>>) {
    use base64::Engine as _;
    let minted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let log = minted.clone();
    let server = Server::start(move |_| {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if failing.contains(&n) {
            return Reply::Respond(Response::new(500).body("{}"));
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let b64 = |text: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        let token = format!(
            "{}.{}.sig{n}",
            b64(r#"{"alg":"RS256","typ":"JWT"}"#.to_owned()),
            b64(format!(
                r#"{{"sub":"repo:acme/app","n":{n},"exp":{}}}"#,
                now + lifetime_secs
            )),
        );
        log.lock().unwrap().push(token.clone());
        Reply::Respond(Response::new(200).body(format!(r#"{{"value":"{token}"}}"#)))
    });
    (server, minted)
}

/// A target that answers `503` to the first request and `201` after it.
fn unavailable_once() -> Server {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Server::start(move |_| {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Reply::Respond(Response::new(503).body("busy"))
        } else {
            Reply::Respond(Response::new(201).body("{}"))
        }
    })
}

/// What one run of the client with `oidc-audience` left behind.
struct RenewalRun {
    /// The tokens the service minted, in order.
    minted: Vec<String>,
    /// The `Authorization` of each request the target received.
    bearers: Vec<String>,
    log: String,
    outputs: std::collections::HashMap<String, String>,
}

impl RenewalRun {
    fn bearer(&self, n: usize) -> String {
        format!("Bearer {}", self.minted[n])
    }
}

/// Runs the client with `oidc-audience` and fast retries against a target
/// that answers `503` once, with tokens from
/// [`expiring_token_service`]`(lifetime_secs, failing)`; it must succeed.
fn run_with_expiring_tokens(lifetime_secs: i64, failing: &'static [usize]) -> RenewalRun {
    let (service, minted) = expiring_token_service(lifetime_secs, failing);
    let target = unavailable_once();
    let dir = tempfile::tempdir().unwrap();
    let assert = oidc_client(dir.path(), &service, &target)
        .args(["--retry-delay", "1ms", "--retry-max-delay", "5ms"])
        .assert()
        .success();
    let minted = minted.lock().unwrap().clone();
    RenewalRun {
        minted,
        bearers: target
            .requests()
            .iter()
            .map(|r| r.header("authorization").unwrap_or_default().to_owned())
            .collect(),
        log: stdout(&assert),
        outputs: read_outputs(dir.path()),
    }
}

/// The default deadline (10 minutes) outlives a GitHub OIDC token (about
/// 5): a retry must not send a token that has lapsed or is about to.
#[test]
fn an_oidc_token_about_to_expire_is_renewed_before_a_retry() {
    let run = run_with_expiring_tokens(30, &[]);
    assert_eq!(run.minted.len(), 2, "one token for each attempt");
    assert_eq!(run.bearers, [run.bearer(0), run.bearer(1)]);
    let second_mask = run
        .log
        .find(&format!("::add-mask::{}\n", run.minted[1]))
        .expect("the fresh token is masked");
    let note = run
        .log
        .find("attempt 2/5: the OIDC token was about to expire; sending a fresh one (masked)")
        .expect(&run.log);
    assert!(
        second_mask < note,
        "masked before anything about it is printed"
    );
    for line in run.log.lines().filter(|l| !l.starts_with("::add-mask::")) {
        assert!(!line.contains(".sig"), "a token leaked: {line}");
    }
    assert_eq!(run.outputs["status"], "201");
    assert_eq!(run.outputs["attempts"], "2");
}

/// A token with time left is sent again unchanged, so a server that tells
/// callers apart by the header's value sees one caller across retries.
#[test]
fn an_oidc_token_with_time_left_is_sent_again_on_a_retry() {
    let run = run_with_expiring_tokens(3600, &[]);
    assert_eq!(run.minted.len(), 1, "no token minted for the retry");
    assert_eq!(run.bearers, [run.bearer(0), run.bearer(0)]);
}

/// An expired token is not sent when no fresh one comes: that attempt is
/// "not sent" and retried, and the next renewal gets through.
#[test]
fn an_expired_oidc_token_that_cannot_be_renewed_is_not_sent() {
    let run = run_with_expiring_tokens(-5, &[2]);
    assert_eq!(run.minted.len(), 2, "the first and the third call minted");
    assert_eq!(
        run.bearers,
        [run.bearer(0), run.bearer(1)],
        "the second attempt sent nothing"
    );
    assert!(
        run.log.contains(
            "attempt 2/5: not sent: the OIDC token has expired and no fresh one came \
             (the OIDC token service answered HTTP 500"
        ),
        "{}",
        run.log
    );
    assert_eq!(run.outputs["attempts"], "3");
}

/// A token about to expire but not yet expired is sent when no fresh one
/// comes, with a note: it may still be accepted.
#[test]
fn a_renewal_that_fails_before_expiry_sends_the_current_token() {
    let run = run_with_expiring_tokens(30, &[2]);
    assert_eq!(run.minted.len(), 1);
    assert_eq!(run.bearers, [run.bearer(0), run.bearer(0)]);
    assert!(
        run.log.contains(
            "attempt 2/5: the OIDC token is about to expire and no fresh one came \
             (the OIDC token service answered HTTP 500"
        ),
        "{}",
        run.log
    );
}

const HOSTILE: &str = "failure\n::pwned::a ##[pwned2 name=b]c\r<img src=x onerror=alert(1)> \
                       [click](https://evil.example) https://evil.example/x www.evil.example \
                       mail@evil.example `tick` | pipe";

/// Regression: API job fields were printed as they came, so a job name or
/// conclusion with a newline started a live workflow command.
#[test]
fn hostile_api_fields_cannot_issue_commands_or_render_markup() {
    let api = Server::start(|request| {
        let path = request.path.as_str();
        let body = if path.contains("/attempts/1/jobs") {
            serde_json::json!({"total_count": 1, "jobs": [{
                "name": "deploy", "status": "completed", "conclusion": HOSTILE,
                "runner_name": "r", "started_at": "2026-11-20T10:00:00Z\n::pwned3::d"}]})
        } else if path.contains("/attempts/2/jobs") {
            serde_json::json!({"total_count": 1, "jobs": [job("deploy", "in_progress", None, "runner-2")]})
        } else {
            serde_json::json!({"message": "Not Found\n::pwned4::e"})
        };
        Reply::Respond(
            Response::new(if path.contains("/jobs") { 200 } else { 404 })
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
    });
    let (target, _) = target();
    let dir = tempfile::tempdir().unwrap();
    let assert = guarded_client(dir.path(), &api.url(""), &target)
        .args(["--allow-expired-key"])
        .assert()
        .success();
    let log = both_streams(&assert);
    assert!(log.contains("pwned2"), "the fields are shown, inert: {log}");
    assert_only_own_commands(&log);
    let summary = std::fs::read_to_string(dir.path().join("summary")).unwrap();
    assert!(summary.contains("pwned2"), "{summary}");
    markdown::assert_no_markup_from_outside(&markdown::to_html(&summary));
}

#[test]
fn a_summary_of_hostile_text_renders_no_link_image_or_html() {
    use idempotent_request::client::report::summary::{Summary, render};
    let earlier = [HOSTILE.to_owned(), "``` ``x`` ```".to_owned()];
    let text = render(&Summary {
        method: "POST",
        url: "https://www.example.com/a?b=REDACTED",
        key: Some(HOSTILE),
        trace_id: Some(HOSTILE),
        attempts: 2,
        outcome: HOSTILE,
        replayed: false,
        elapsed_ms: 1,
        earlier_attempts: &earlier,
    });
    let html = markdown::to_html(&text);
    markdown::assert_no_markup_from_outside(&html);
    assert!(
        html.contains("<table>") && html.contains("pwned2"),
        "{html}"
    );
    assert_eq!(html.matches("<tr>").count(), 9, "one row per field: {html}");
}

/// A hostile `total_count` cannot keep the client paging.
#[test]
fn job_pagination_stops_at_its_page_cap() {
    let started = rfc3339(Duration::from_secs(3600));
    let api = Server::start(move |request| {
        let body = if request.path.contains("/jobs") {
            serde_json::json!({"total_count": 1_000_000_000u64,
                               "jobs": [job("shard", "completed", Some("success"), "r")]})
        } else {
            serde_json::json!({"run_started_at": started})
        };
        Reply::Respond(
            Response::new(200)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
    });
    let (target, toy) = target();
    let dir = tempfile::tempdir().unwrap();
    guarded_client(dir.path(), &api.url(""), &target)
        .timeout(Duration::from_secs(120))
        .assert()
        .success();
    let pages = |attempt: &str| {
        api.requests()
            .iter()
            .filter(|r| r.path.contains(&format!("/attempts/{attempt}/jobs")))
            .count()
    };
    assert_eq!(pages("1"), 10);
    assert_eq!(pages("2"), 10);
    assert_eq!(toy.effects(), 1);
}

/// The deadline bounds the whole invocation, the API calls on a re-run too.
#[test]
fn an_api_that_never_answers_is_cut_off_by_the_deadline() {
    let api = Server::start(|_| Reply::Hang);
    let (target, toy) = target();
    let dir = tempfile::tempdir().unwrap();
    let assert = guarded_client(dir.path(), &api.url(""), &target)
        .args(["--deadline", "2s"])
        // Only turns a hang into a failure; the deadline decides.
        .timeout(Duration::from_secs(60))
        .assert()
        .code(4);
    let log = both_streams(&assert);
    assert!(log.contains("did not answer before the deadline"), "{log}");
    assert_eq!(target.connections(), 0);
    assert_eq!(toy.effects(), 0);
}
