//! TLS (custom CA, mutual TLS, verification failures), redirects across
//! origins, and what the log may and may not show.

mod support;

use support::tls::Pki;
use support::{Reply, Response, Server, client, github_env, read_outputs};

fn ok(_: &support::Request) -> Reply {
    Reply::Respond(Response::new(200).body("secure"))
}

#[test]
fn custom_ca_is_trusted() {
    let pki = Pki::new();
    let server = Server::start_tls(pki.server_config(false), ok);
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = pki.write(dir.path());
    client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/"), "--ca-file", ca.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(read_outputs(dir.path())["body"], "secure");
}

#[test]
fn unknown_ca_is_a_tls_failure_that_is_not_retried() {
    let pki = Pki::new();
    let server = Server::start_tls(pki.server_config(false), ok);
    let dir = tempfile::tempdir().unwrap();
    client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/")])
        .assert()
        .code(3);
    let out = read_outputs(dir.path());
    assert_eq!(out["attempts"], "1");
    assert!(out["error"].contains("TLS failure"), "{}", out["error"]);
    assert!(out["error"].contains("ca-file"), "{}", out["error"]);
    assert_eq!(server.requests().len(), 0);
}

#[test]
fn insecure_skips_verification_and_warns() {
    let pki = Pki::new();
    let server = Server::start_tls(pki.server_config(false), ok);
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/"), "--insecure"])
        .assert()
        .success();
    let log = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(
        log.contains("::warning title=TLS verification is off::"),
        "{log}"
    );
}

#[test]
fn mutual_tls_with_client_certificate() {
    let pki = Pki::new();
    let server = Server::start_tls(pki.server_config(true), ok);
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki.write(dir.path());
    client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/"), "--ca-file", ca.to_str().unwrap()])
        .args([
            "--client-cert",
            cert.to_str().unwrap(),
            "--client-key",
            key.to_str().unwrap(),
        ])
        .assert()
        .success();
    assert_eq!(server.requests().len(), 1);
    // Without the client certificate the server refuses the handshake.
    client()
        .args(["--url", &server.url("/"), "--ca-file", ca.to_str().unwrap()])
        .args(["--max-attempts", "1"])
        .assert()
        .code(3);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn cross_origin_redirect_carries_no_credentials_or_key() {
    let target = Server::start(ok);
    let location = target.url("/landed");
    let origin = Server::start(move |request| {
        if request.path == "/start" {
            Reply::Respond(Response::new(307).header("location", "/same"))
        } else {
            Reply::Respond(Response::new(308).header("location", &location))
        }
    });
    let dir = tempfile::tempdir().unwrap();
    client()
        .envs(github_env(dir.path()))
        .args([
            "--url",
            &origin.url("/start"),
            "--follow-redirects",
            "--body",
            "payload",
        ])
        .args([
            "-H",
            "Authorization: Bearer s3cr3t",
            "-H",
            "Cookie: c=1",
            "-H",
            "X-Custom: v",
        ])
        .assert()
        .success();
    let same = &origin.requests()[1];
    assert_eq!(same.path, "/same");
    assert_eq!(same.header("authorization"), Some("Bearer s3cr3t"));
    assert!(same.header("idempotency-key").is_some());
    let landed = &target.requests()[0];
    assert_eq!(landed.method, "POST");
    assert_eq!(landed.body, b"payload");
    for header in ["authorization", "cookie", "x-custom", "idempotency-key"] {
        assert_eq!(landed.header(header), None, "{header} crossed origins");
    }
}

#[test]
fn post_does_not_follow_a_303() {
    let target = Server::start(ok);
    let location = target.url("/");
    let origin =
        Server::start(move |_| Reply::Respond(Response::new(303).header("location", &location)));
    let dir = tempfile::tempdir().unwrap();
    client()
        .envs(github_env(dir.path()))
        .args(["--url", &origin.url("/"), "--follow-redirects"])
        .assert()
        .code(1);
    assert_eq!(target.requests().len(), 0);
    assert_eq!(read_outputs(dir.path())["status"], "303");
}

#[test]
fn secrets_never_reach_the_log() {
    let server = Server::start(|_| Reply::Respond(Response::new(500).body("oops")));
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/x?api_token=QUERYSECRET")])
        .args([
            "-H",
            "Authorization: Bearer HEADERSECRET",
            "-H",
            "X-Api-Key: KEYSECRET",
        ])
        .args([
            "--body",
            "BODYSECRET",
            "--max-attempts",
            "2",
            "--retry-delay",
            "1ms",
        ])
        .assert()
        .code(1);
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    let summary = std::fs::read_to_string(dir.path().join("summary")).unwrap();
    for line in stdout.lines().chain(stderr.lines()).chain(summary.lines()) {
        if line.starts_with("::add-mask::") {
            continue;
        }
        for secret in ["HEADERSECRET", "KEYSECRET", "QUERYSECRET", "BODYSECRET"] {
            assert!(!line.contains(secret), "{secret} leaked: {line}");
        }
    }
    for mask in ["Bearer HEADERSECRET", "HEADERSECRET", "KEYSECRET"] {
        assert!(
            stdout.contains(&format!("::add-mask::{mask}\n")),
            "{mask} not masked: {stdout}"
        );
    }
}

#[test]
fn mask_response_registers_every_body_line() {
    let server = Server::start(|_| Reply::Respond(Response::new(200).body("tok1\r\ntok2\rtok3\n")));
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/"), "--mask-response"])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    for line in ["::add-mask::tok1", "::add-mask::tok2", "::add-mask::tok3"] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line} missing: {stdout}"
        );
    }
}

#[test]
fn hostile_body_cannot_set_other_outputs() {
    let body = "x\nstatus<<EOF\n200\nEOF\nreplayed=true\nghadelimiter_1\n";
    let server = Server::start(move |_| Reply::Respond(Response::new(201).body(body)));
    let dir = tempfile::tempdir().unwrap();
    client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/")])
        .assert()
        .success();
    let out = read_outputs(dir.path());
    assert_eq!(out["status"], "201");
    assert_eq!(out["replayed"], "false");
    assert_eq!(out["body"], body);
}

#[test]
fn http_proxy_from_the_environment_is_used() {
    let proxy = Server::start(ok);
    client()
        .env("HTTP_PROXY", proxy.url(""))
        .args([
            "--url",
            "http://api.invalid/deploy",
            "--key-salt",
            "p",
            "--max-attempts",
            "1",
        ])
        .assert()
        .success();
    let seen = &proxy.requests()[0];
    assert_eq!(seen.path, "http://api.invalid/deploy");
    assert!(seen.header("idempotency-key").is_some());
}

#[test]
fn no_proxy_bypasses_the_proxy() {
    let proxy = Server::start(ok);
    let target = Server::start(ok);
    client()
        .env("HTTP_PROXY", proxy.url(""))
        .env("NO_PROXY", "127.0.0.1")
        .args(["--url", &target.url("/direct"), "--max-attempts", "1"])
        .assert()
        .success();
    assert_eq!(proxy.requests().len(), 0);
    assert_eq!(target.requests()[0].path, "/direct");
}
