//! TLS (custom CA, mutual TLS, verification failures), redirects across
//! origins, and what the log may and may not show.

use crate::support;

use std::sync::Arc;
use support::tls::Pki;
use support::{
    AfterCommit, Reply, Response, Server, Toy, assert_only_own_commands, both_streams, client,
    github_env, read_outputs, runner_commands,
};

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
fn cross_origin_redirect_to_a_listed_origin_carries_the_key_but_no_credentials() {
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
            "--redirect-key-origins",
            &target.url(""),
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
    let key = same.header("idempotency-key").unwrap().to_owned();
    let landed = &target.requests()[0];
    assert_eq!(landed.method, "POST");
    assert_eq!(landed.body, b"payload");
    assert_eq!(landed.header("idempotency-key"), Some(key.as_str()));
    for header in ["authorization", "cookie", "x-custom"] {
        assert_eq!(landed.header(header), None, "{header} crossed origins");
    }
}

/// Regression: a cross-origin 307 used to be followed without the key, and
/// the unkeyed request was retried after a lost answer: two executions.
#[test]
fn cross_origin_redirect_of_a_keyed_request_is_not_followed_unless_listed() {
    let toy = Arc::new(Toy::default());
    // Another port on the same host is another origin.
    let target = Server::start(toy.handler(AfterCommit::Drop));
    let location = target.url("/deployments");
    let origin =
        Server::start(move |_| Reply::Respond(Response::new(307).header("location", &location)));
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(github_env(dir.path()))
        .args(["--url", &origin.url("/deployments"), "--follow-redirects"])
        .args(["--json", "{}", "--retry-delay", "10ms"])
        .assert()
        .code(1);
    assert_eq!(
        target.requests().len(),
        0,
        "nothing reached the other origin"
    );
    assert_eq!(read_outputs(dir.path())["status"], "307");
    let log = both_streams(&assert);
    assert!(log.contains("redirect-key-origins"), "{log}");

    // Listed: followed with the key, so the retry after the lost answer
    // is replayed, not executed again.
    let dir = tempfile::tempdir().unwrap();
    client()
        .envs(github_env(dir.path()))
        .args(["--url", &origin.url("/deployments"), "--follow-redirects"])
        .args(["--json", "{}", "--retry-delay", "10ms"])
        .args(["--redirect-key-origins", &target.url("")])
        .assert()
        .success();
    assert_eq!(toy.effects(), 1, "exactly one execution");
    assert_eq!(target.requests().len(), 2);
    let out = read_outputs(dir.path());
    assert_eq!(out["replayed"], "true");
    assert_eq!(out["attempts"], "2");
}

#[test]
fn redirect_key_origins_must_be_origins() {
    for bad in [
        "https://api.example/path",
        "https://user:pw@api.example",
        "ftp://api.example",
        "api.example",
        "https://api.example?x=1",
    ] {
        let assert = client()
            .args([
                "--url",
                "http://127.0.0.1:9/",
                "--redirect-key-origins",
                bad,
            ])
            .assert()
            .code(2);
        let log = both_streams(&assert);
        assert!(log.contains("`redirect-key-origins`"), "{bad}: {log}");
        assert!(!log.contains("pw@"), "{log}");
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

/// An HTTPS server that speaks HTTP/2 just far enough to end the connection
/// with a GOAWAY frame carrying `debug` (whose content the server chooses
/// freely, RFC 9113 §6.8).
fn goaway_server(pki: &Pki, debug: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config_h2());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    continue;
                };
                // The client's preface, SETTINGS and request headers.
                let mut seen = [0u8; 4096];
                let _ = tls.read(&mut seen).await;
                let mut frames = vec![0, 0, 0, 4, 0, 0, 0, 0, 0]; // empty SETTINGS
                let len = (8 + debug.len()) as u32;
                frames.extend_from_slice(&len.to_be_bytes()[1..]);
                frames.extend_from_slice(&[7, 0, 0, 0, 0, 0]); // GOAWAY, stream 0
                frames.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]); // last stream 0, INTERNAL_ERROR
                frames.extend_from_slice(debug);
                let _ = tls.write_all(&frames).await;
                let _ = tls.flush().await;
                let _ = tls.read(&mut seen).await;
            }
        });
    });
    addr
}

/// Regression: GOAWAY debug data reached the `attempt n/N:` line verbatim,
/// where `##[…]` is a live workflow command anywhere in a line.
#[test]
fn goaway_debug_data_cannot_issue_workflow_commands() {
    let pki = Pki::new();
    let addr = goaway_server(
        &pki,
        b"##[pwned name=x]y\n::pwned2::z\r\n##[set-output name=status]200",
    );
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = pki.write(dir.path());
    let assert = client()
        .envs(github_env(dir.path()))
        .args(["--url", &format!("https://127.0.0.1:{}/", addr.port())])
        .args(["--ca-file", ca.to_str().unwrap(), "--max-attempts", "1"])
        .assert()
        .code(3);
    let log = both_streams(&assert);
    assert!(
        log.contains("pwned"),
        "the debug data is shown, inert: {log}"
    );
    assert_only_own_commands(&log);
    let out = read_outputs(dir.path());
    assert!(
        !out["error"].contains('\n') && !out["error"].contains("##["),
        "{}",
        out["error"]
    );
    let summary = std::fs::read_to_string(dir.path().join("summary")).unwrap();
    assert!(!summary.contains("##[pwned"), "{summary}");
}

/// Regression: the names in a peer's certificate reached the log verbatim.
#[test]
fn certificate_names_cannot_issue_workflow_commands() {
    let pki = Pki::for_names(&["x##[pwned name=a]b.example", "::pwned2::c.example"]);
    let server = Server::start_tls(pki.server_config(false), ok);
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = pki.write(dir.path());
    let assert = client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/"), "--ca-file", ca.to_str().unwrap()])
        .assert()
        .code(3);
    let log = both_streams(&assert);
    assert!(log.contains("TLS failure"), "{log}");
    assert!(log.contains("pwned"), "the names are shown, inert: {log}");
    assert_only_own_commands(&log);
}

#[test]
fn a_hostile_retry_after_is_ignored_and_never_printed() {
    let server = Server::start(|_| {
        Reply::Respond(Response::new(503).header("retry-after", "##[pwned name=a]b ::pwned2::c"))
    });
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/"), "--max-attempts", "2"])
        .args(["--retry-delay", "10ms"])
        .assert()
        .code(1);
    let log = both_streams(&assert);
    assert!(!log.contains("pwned"), "{log}");
    assert!(log.contains("(backoff)"), "{log}");
    assert_only_own_commands(&log);
}

/// Regression: a query component without `=` (a bare token) was printed.
#[test]
fn every_query_component_is_redacted() {
    let server = Server::start(ok);
    let dir = tempfile::tempdir().unwrap();
    let url = server.url("/hook?ghp_s3cretvalue&sig=s3cret2&env=prod");
    let assert = client()
        .envs(github_env(dir.path()))
        .args(["--url", &url, "--follow-redirects"])
        .assert()
        .success();
    let log = both_streams(&assert);
    let summary = std::fs::read_to_string(dir.path().join("summary")).unwrap();
    for text in [&log, &summary] {
        assert!(!text.contains("s3cret") && !text.contains("prod"), "{text}");
    }
    assert!(
        log.contains("/hook?REDACTED&sig=REDACTED&env=REDACTED"),
        "{log}"
    );
    // The request itself went out as given.
    assert_eq!(
        server.requests()[0].path,
        "/hook?ghp_s3cretvalue&sig=s3cret2&env=prod"
    );
}

#[test]
fn the_scanner_catches_what_it_must() {
    // The test helpers must see a live command where the runner would.
    assert_eq!(runner_commands("x ##[pwned]y"), ["pwned"]);
    assert_eq!(runner_commands("  ::pwned::z"), ["pwned"]);
    assert_eq!(
        runner_commands("::stop-commands::t1\n::pwned::a\n::t1::\n::pwned2::b"),
        ["stop-commands", "pwned2"]
    );
}
