//! The binary against fault-injecting servers on 127.0.0.1: retries, the
//! key on every attempt, lost responses replayed, and exit codes.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::{
    AfterCommit, Reply, Response, Server, Toy, both_streams, client, github_env, read_outputs,
};

/// Answers the statuses in `script` in order, then the last one forever.
fn scripted(script: Vec<Response>) -> impl Fn(&support::Request) -> Reply + Send + Sync {
    let count = AtomicUsize::new(0);
    move |_| {
        let i = count.fetch_add(1, Ordering::SeqCst).min(script.len() - 1);
        Reply::Respond(script[i].clone())
    }
}

const FAST: [&str; 2] = ["--retry-delay", "10ms"];

#[test]
fn plain_success_writes_outputs() {
    let server = Server::start(scripted(vec![
        Response::new(201)
            .header("content-type", "application/json")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .body(r#"{"id":7}"#),
    ]));
    let dir = tempfile::tempdir().unwrap();
    client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/deployments"), "--json", "ref: v1"])
        .assert()
        .success();
    let out = read_outputs(dir.path());
    assert_eq!(out["status"], "201");
    assert_eq!(out["body"], r#"{"id":7}"#);
    assert_eq!(out["body-truncated"], "false");
    assert_eq!(out["attempts"], "1");
    assert_eq!(out["replayed"], "false");
    assert!(!out.contains_key("error"));
    let headers: serde_json::Value = serde_json::from_str(&out["headers"]).unwrap();
    assert_eq!(headers["set-cookie"], serde_json::json!(["a=1", "b=2"]));
    assert_eq!(
        std::fs::read_to_string(&out["body-file"]).unwrap(),
        r#"{"id":7}"#
    );
    assert!(out["body-file"].starts_with(&dir.path().display().to_string()));
    let request = &server.requests()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.body, br#"{"ref":"v1"}"#);
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.header("idempotency-key"),
        Some(out["idempotency-key"].as_str())
    );
    let summary = std::fs::read_to_string(dir.path().join("summary")).unwrap();
    assert!(summary.contains("| Final status | ` 201 ` |"), "{summary}");
}

#[test]
fn two_503s_then_201_sends_the_same_key_three_times() {
    let server = Server::start(scripted(vec![
        Response::new(503),
        Response::new(503),
        Response::new(201).body("created"),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/d"), "--body", "x"])
        .args(FAST)
        .assert()
        .success();
    let log = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    let keys: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    let out = read_outputs(dir.path());
    assert_eq!(out["attempts"], "3");
    assert_eq!(out["idempotency-key"], keys[0]);
    assert!(
        log.contains("attempt 1/5: 503 Service Unavailable; retrying in"),
        "{log}"
    );
    assert!(log.contains("attempt 3/5: 201 Created"), "{log}");
}

#[test]
fn retry_after_is_honoured() {
    let server = Server::start(scripted(vec![
        Response::new(429).header("retry-after", "1"),
        Response::new(200),
    ]));
    let assert = client()
        .args(["--url", &server.url("/"), "--retry-delay", "0"])
        .assert()
        .success();
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].received_at - requests[0].received_at;
    assert!(
        gap >= std::time::Duration::from_secs(1),
        "waited only {gap:?}"
    );
    let log = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(log.contains("retrying in 1s (Retry-After)"), "{log}");
}

#[test]
fn retry_after_past_the_deadline_gives_up_at_once() {
    let server = Server::start(scripted(vec![
        Response::new(503).header("retry-after", "3600"),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/"), "--deadline", "5m"])
        .assert()
        .code(1);
    assert_eq!(server.requests().len(), 1);
    let out = read_outputs(dir.path());
    assert_eq!(out["attempts"], "1");
    assert_eq!(out["status"], "503");
    assert!(
        out["error"].contains("would pass the deadline"),
        "{}",
        out["error"]
    );
    // Far below the hour the server asked for: it did not wait.
    assert!(out["elapsed-ms"].parse::<u64>().unwrap() < 60_000);
    let log = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(
        log.contains("::error title=Request gave up%3A deadline::"),
        "{log}"
    );
}

/// A `Retry-After` beyond any deadline (past `u64` seconds, or a date in
/// the year 9999) is shown as "more than a year", not as the twenty-digit
/// count of seconds it saturates to.
#[test]
fn an_absurd_retry_after_is_shown_in_words() {
    for retry_after in ["99999999999999999999", "Fri, 31 Dec 9999 23:59:59 GMT"] {
        let server = Server::start(scripted(vec![
            Response::new(503).header("retry-after", retry_after),
        ]));
        let dir = tempfile::tempdir().unwrap();
        client()
            .envs(github_env(dir.path()))
            .args(["--url", &server.url("/")])
            .assert()
            .code(1);
        let out = read_outputs(dir.path());
        assert!(
            out["error"].contains("the next wait (more than a year) would pass the deadline")
                && !out["error"].contains("18446744073709551615"),
            "{}",
            out["error"]
        );
    }
}

#[test]
fn lost_response_after_commit_is_retried_and_replayed_once() {
    let toy = Arc::new(Toy::default());
    let server = Server::start(toy.handler(AfterCommit::Drop));
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/deployments"), "--body", "deploy"])
        .args(FAST)
        .assert()
        .success();
    let log = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(
        log.contains(
            "attempt 1/5: no complete response: the server closed the connection before answering"
        ),
        "{log}"
    );
    assert_eq!(toy.effects(), 1);
    let out = read_outputs(dir.path());
    assert_eq!(out["attempts"], "2");
    assert_eq!(out["replayed"], "true");
    assert_eq!(out["body"], r#"{"deployment":1}"#);
}

#[test]
fn read_timeout_after_commit_is_retried_and_replayed_once() {
    let toy = Arc::new(Toy::default());
    let server = Server::start(toy.handler(AfterCommit::Hang));
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/deployments"), "--timeout", "300ms"])
        .args(FAST)
        .assert()
        .success();
    assert_eq!(toy.effects(), 1);
    let out = read_outputs(dir.path());
    assert_eq!(out["attempts"], "2");
    assert_eq!(out["replayed"], "true");
    let log = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(
        log.contains("attempt 1/5: no complete response within 300ms"),
        "{log}"
    );
}

#[test]
fn reset_and_truncated_body_are_retried() {
    let count = AtomicUsize::new(0);
    let server = Server::start(move |_| match count.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::Reset,
        1 => Reply::Truncate(Response::new(200).body("0123456789")),
        _ => Reply::Respond(Response::new(200).body("whole")),
    });
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/")])
        .args(FAST)
        .assert()
        .success();
    let out = read_outputs(dir.path());
    assert_eq!(out["attempts"], "3");
    assert_eq!(out["body"], "whole");
    let log = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(
        log.contains("attempt 1/5: no complete response: the connection was reset"),
        "{log}"
    );
    assert!(log.contains("attempt 2/5: no complete response"), "{log}");
}

#[test]
fn connection_refused_until_attempts_run_out_exits_3() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(github_env(dir.path()))
        .args([
            "--url",
            &format!("http://127.0.0.1:{port}/"),
            "--max-attempts",
            "3",
        ])
        .args(FAST)
        .assert()
        .code(3);
    let out = read_outputs(dir.path());
    assert_eq!(out["attempts"], "3");
    assert!(!out.contains_key("status"));
    assert!(
        out["error"].contains("No HTTP response after 3 attempt(s)"),
        "{}",
        out["error"]
    );
    let log = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(
        log.contains("attempt 1/3: could not connect: connection refused; retrying"),
        "{log}"
    );
}

/// A response head past what the client reads (101 fields; one field of
/// 500 KiB), or one declaring a length HTTP/1.1 cannot frame (hyper's same
/// error), is an answer the server gave, and would be given again: it is
/// not retried, the error says what was too large and what to do, and no
/// header value reaches the log or the outputs. Exit 3: no response read.
#[test]
fn a_response_head_too_large_to_read_is_final_and_named() {
    let secret = "hunter2-in-a-header";
    let many = (0..101).fold(Response::new(201), |r, n| {
        r.header(&format!("x-field-{n}"), secret)
    });
    let long = Response::new(201).header("x-long", &format!("{secret}{}", "a".repeat(500 << 10)));
    let unframable = format!(
        "HTTP/1.1 201 Created\r\nx-secret: {secret}\r\ncontent-length: 18446744073709551614\r\n\r\n{{}}"
    )
    .into_bytes();
    let servers = [
        ("101 fields", Server::start(scripted(vec![many]))),
        ("a 500 KiB field", Server::start(scripted(vec![long]))),
        (
            "a Content-Length of 2^64 - 2",
            Server::start(move |_| Reply::Raw(unframable.clone())),
        ),
    ];
    for (what, server) in servers {
        let error = final_after_one_attempt(server, secret, what);
        assert!(
            error.contains("response head is larger than this client reads")
                && error.contains("100 header fields")
                && error.contains("Not retried")
                && error.contains("fewer or shorter headers")
                && error.contains("a Content-Length of 2^64 - 2 bytes or more"),
            "{what}: {error}"
        );
    }
}

/// Runs the client under GitHub Actions against `server`, which answers
/// with something it cannot read: exit 3 after one request, no `status`,
/// and `secret` (in the answer) nowhere in the log or the outputs. The
/// `error` output.
fn final_after_one_attempt(server: Server, secret: &str, what: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/")])
        .args(FAST)
        .assert()
        .code(3);
    assert_eq!(server.requests().len(), 1, "{what}: retried");
    let out = read_outputs(dir.path());
    assert_eq!(out["attempts"], "1", "{what}");
    assert!(!out.contains_key("status"), "{what}");
    let log = both_streams(&assert);
    assert!(!log.contains(secret), "{what}: {log}");
    let outputs = std::fs::read_to_string(dir.path().join("output")).unwrap_or_default();
    assert!(!outputs.contains(secret), "{what}");
    out["error"].clone()
}

/// An answer that is not a valid HTTP response head (another protocol on
/// the port, an invalid status line, two `Content-Length`s that disagree)
/// came from something that read the request, and a retry would get the
/// same: it is not retried, exit 3, and the error says what to check
/// without quoting the answer's bytes. A head cut off by a close is a lost
/// answer and still retried.
#[test]
fn an_answer_that_is_not_http_is_final_and_not_quoted() {
    let secret = "hunter2-in-an-answer";
    for (what, bytes) in [
        (
            "another protocol",
            format!("-ERR unknown command '{secret}'\r\n"),
        ),
        (
            "a bad status line",
            format!("HTTP/1.1 20 {secret}\r\ncontent-length: 0\r\n\r\n"),
        ),
        (
            "conflicting lengths",
            format!(
                "HTTP/1.1 201 Created\r\ncontent-length: 2\r\ncontent-length: 3\r\nx: {secret}\r\n\r\nok!"
            ),
        ),
    ] {
        let server = Server::start(move |_| Reply::Raw(bytes.clone().into_bytes()));
        let error = final_after_one_attempt(server, secret, what);
        assert!(
            error.contains("is not a valid HTTP response")
                && error.contains("Not retried")
                && error.contains("scheme matches the port"),
            "{what}: {error}"
        );
    }
    let cut = Server::start(|_| Reply::Raw(b"HTTP/1.1 201 Created\r\ncontent-le".to_vec()));
    client()
        .args(["--url", &cut.url("/"), "--max-attempts", "2"])
        .args(FAST)
        .assert()
        .code(3);
    assert_eq!(cut.requests().len(), 2, "a head cut off is retried");
}

#[test]
fn client_errors_are_final_and_outputs_are_written() {
    let server = Server::start(scripted(vec![
        Response::new(422).body("::set-output name=status::200\n{\"error\":\"bad ref\"}"),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/")])
        .assert()
        .code(1);
    assert_eq!(server.requests().len(), 1);
    let out = read_outputs(dir.path());
    assert_eq!(out["status"], "422");
    assert!(out["body"].contains("bad ref"));
    assert!(out["error"].contains("422"));
    // The server's text is printed only between stop-commands markers.
    let log = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    let start = log
        .find("::stop-commands::")
        .expect("stop-commands before server text");
    let token = log[start + 17..].lines().next().unwrap();
    let resume = log.find(&format!("::{token}::")).expect("commands resumed");
    let body_at = log.find("::set-output").unwrap();
    assert!(start < body_at && body_at < resume, "{log}");
}

/// Two attempts, both answered `response`: exit 1; the outputs.
fn until_attempts_run_out(response: Response) -> std::collections::HashMap<String, String> {
    let server = Server::start(scripted(vec![response]));
    let dir = tempfile::tempdir().unwrap();
    client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/"), "--max-attempts", "2"])
        .args(FAST)
        .assert()
        .code(1);
    read_outputs(dir.path())
}

#[test]
fn retryable_status_until_attempts_run_out_exits_1() {
    let out = until_attempts_run_out(Response::new(502));
    assert_eq!(out["status"], "502");
    assert_eq!(out["attempts"], "2");
    assert!(
        out["error"].contains("Re-running the job is safe"),
        "{}",
        out["error"]
    );
    assert!(
        !out["error"].contains("still in progress"),
        "{}",
        out["error"]
    );
}

/// 409s until the attempts run out: the error says what a 409 to a keyed
/// request means (the first request with the key still in progress).
#[test]
fn a_409_until_attempts_run_out_says_the_first_request_may_be_in_progress() {
    let out = until_attempts_run_out(Response::new(409).header("retry-after", "0"));
    assert_eq!(out["status"], "409");
    assert!(
        out["error"].contains("an earlier request with this key is still in progress")
            && out["error"].contains("Re-running the job is safe"),
        "{}",
        out["error"]
    );
}

/// Regression: a `body-file` rewritten at the same size between attempts
/// was sent with the old key; a server would have replayed the first
/// operation's answer for a different request, or acted on it.
#[test]
fn a_body_file_rewritten_between_attempts_is_never_sent_whole() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payload.bin");
    let original = vec![b'a'; 1 << 20];
    std::fs::write(&path, &original).unwrap();
    let rewrite = path.clone();
    let server = Server::start(move |_| {
        // The first attempt arrived whole; change the file before the
        // retry, at the same size, and lose the answer.
        std::fs::write(&rewrite, vec![b'b'; 1 << 20]).unwrap();
        Reply::Drop
    });
    let assert = client()
        .envs(github_env(dir.path()))
        .args([
            "--url",
            &server.url("/upload"),
            "--body-file",
            path.to_str().unwrap(),
        ])
        .args(FAST)
        .assert()
        .code(2);
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "only the original body arrived whole");
    assert_eq!(
        requests[0].body_sha256,
        <[u8; 32]>::from(Sha256::digest(&original))
    );
    assert_eq!(server.connections(), 2, "the second attempt started");
    let log = both_streams(&assert);
    assert!(log.contains("changed during the run"), "{log}");
    let out = read_outputs(dir.path());
    assert_eq!(out["attempts"], "2");
    assert!(
        out["error"].contains("never received the changed body whole"),
        "{}",
        out["error"]
    );
}

#[test]
fn every_attempt_and_every_rerun_shares_one_trace_id() {
    let server = Server::start(scripted(vec![
        Response::new(503),
        Response::new(201).body("created"),
    ]));
    let run = |attempt: &str| {
        let dir = tempfile::tempdir().unwrap();
        client()
            .envs(github_env(dir.path()))
            .env("GITHUB_RUN_ATTEMPT", attempt)
            .args(["--url", &server.url("/deployments"), "--json", "{}"])
            .args(FAST)
            .assert()
            .success();
        read_outputs(dir.path())
    };
    let first = run("1");
    let rerun = run("2");
    assert_eq!(first["trace-id"].len(), 32);
    assert_eq!(first["trace-id"], rerun["trace-id"]);
    let parents: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.header("traceparent").unwrap().to_owned())
        .collect();
    assert_eq!(parents.len(), 3);
    let mut spans = std::collections::HashSet::new();
    for parent in &parents {
        let parts: Vec<&str> = parent.split('-').collect();
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], first["trace-id"], "{parent}");
        assert_eq!(parts[3], "01");
        spans.insert(parts[2].to_owned());
    }
    assert_eq!(spans.len(), 3, "a fresh span per attempt: {parents:?}");
}

#[test]
fn a_traceparent_in_headers_is_sent_instead_and_none_when_turned_off() {
    let server = Server::start(scripted(vec![Response::new(201)]));
    let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let dir = tempfile::tempdir().unwrap();
    client()
        .envs(github_env(dir.path()))
        .args([
            "--url",
            &server.url("/"),
            "-H",
            &format!("traceparent: {theirs}"),
        ])
        .assert()
        .success();
    assert_eq!(
        read_outputs(dir.path())["trace-id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let dir = tempfile::tempdir().unwrap();
    client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/"), "--send-traceparent", "false"])
        .assert()
        .success();
    assert_eq!(read_outputs(dir.path())["trace-id"], "");
    let requests = server.requests();
    assert_eq!(requests[0].header("traceparent"), Some(theirs));
    assert_eq!(requests[1].header("traceparent"), None);
    client()
        .args(["--url", &server.url("/"), "-H", "traceparent: 00-zz-zz-01"])
        .assert()
        .code(2);
    assert_eq!(server.requests().len(), 2);
}
