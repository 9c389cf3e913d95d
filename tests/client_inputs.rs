//! Input handling end to end: every bad input exits 2 with a clear error
//! naming it and sends nothing; the CLI's local output modes.

mod support;

use support::{Reply, Response, Server, client, github_env, read_outputs};

fn echo(request: &support::Request) -> Reply {
    Reply::Respond(Response::new(200).body(request.body.clone()))
}

#[test]
fn every_bad_input_exits_2_and_sends_nothing() {
    let server = Server::start(echo);
    let url = server.url("/");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("url", vec![]),
        ("url", vec!["--url", "ftp://127.0.0.1/"]),
        ("method", vec!["--method", "PO ST"]),
        ("headers", vec!["-H", "no colon"]),
        ("headers", vec!["--headers", "Idempotency-Key: mine"]),
        ("json", vec!["--body", "x", "--json", "{}"]),
        ("json", vec!["--json", "{unclosed: ["]),
        ("body-file", vec!["--body-file", "/nonexistent/file"]),
        ("idempotency-key", vec!["--idempotency-key", "has space"]),
        ("key-scope", vec!["--key-scope", "forever"]),
        ("key-format", vec!["--key-format", "quoted"]),
        ("key-headers", vec!["--key-headers", "X-Missing"]),
        ("accept-status", vec!["--accept-status", "2xx"]),
        ("max-attempts", vec!["--max-attempts", "0"]),
        ("retry-on-status", vec!["--retry-on-status", "600"]),
        ("retry-delay", vec!["--retry-delay", "soon"]),
        ("timeout", vec!["--timeout", "0"]),
        ("deadline", vec!["--deadline", "1d"]),
        ("follow-redirects", vec!["--follow-redirects=yes"]),
        ("ca-file", vec!["--ca-file", "/nonexistent/ca.pem"]),
        ("ca-file", vec!["--ca-file", "Cargo.toml"]),
        ("client-key", vec!["--client-cert", "Cargo.toml"]),
        ("max-response-size", vec!["--max-response-size", "big"]),
    ];
    for (input, args) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = client();
        cmd.envs(github_env(dir.path()));
        if input != "url" {
            cmd.args(["--url", &url]);
        }
        let assert = cmd.args(&args).assert().code(2);
        let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
        assert!(
            stdout.contains(&format!(
                "::error title=Invalid input::invalid input `{input}`"
            )),
            "{args:?}: {stdout}"
        );
        assert!(stdout.contains("Nothing was sent."), "{stdout}");
        let out = read_outputs(dir.path());
        assert!(out["error"].contains(input), "{args:?}: {out:?}");
    }
    assert_eq!(server.connections(), 0);
}

#[test]
fn unknown_flag_exits_2() {
    let assert = client()
        .args(["--url", "http://127.0.0.1:1/", "--retries", "3"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stderr.contains("--retries"), "{stderr}");
}

#[test]
fn inputs_come_from_the_environment_in_both_spellings() {
    let server = Server::start(echo);
    client()
        .env("INPUT_URL", server.url("/"))
        .env("INPUT_METHOD", "put")
        .env("INPUT_KEY-SALT", "x")
        .env("INPUT_BODY", " verbatim \n")
        .env("INPUT_HEADERS", "X-One: 1\n\nX-Two: 2\n")
        .assert()
        .success();
    let request = &server.requests()[0];
    assert_eq!(request.method, "PUT");
    assert_eq!(request.body, b" verbatim \n");
    assert_eq!(request.header("x-one"), Some("1"));
    assert_eq!(request.header("x-two"), Some("2"));
}

#[test]
fn local_mode_prints_the_body_on_stdout_and_logs_on_stderr() {
    let server = Server::start(|_| Reply::Respond(Response::new(200).body("hello\n")));
    let assert = client()
        .args(["--url", &server.url("/")])
        .assert()
        .success();
    assert_eq!(assert.get_output().stdout, b"hello\n");
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stderr.contains("attempt 1/5: 200 OK"), "{stderr}");
}

#[test]
fn json_output_mode_prints_every_output() {
    let server = Server::start(|_| Reply::Respond(Response::new(201).body("{\"id\":1}")));
    let assert = client()
        .env("RUNNER_TEMP", std::env::temp_dir())
        .args(["--url", &server.url("/"), "--output", "json"])
        .assert()
        .success();
    let out: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(out["status"], "201");
    assert_eq!(out["body"], "{\"id\":1}");
    assert_eq!(out["attempts"], "1");
    let body_file = out["body-file"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(body_file).unwrap(), "{\"id\":1}");
    std::fs::remove_file(body_file).unwrap();
}

#[test]
fn large_response_is_truncated_in_the_output_but_whole_in_the_file() {
    let body = "é".repeat(1000); // 2000 bytes
    let expected = body.clone();
    let server = Server::start(move |_| Reply::Respond(Response::new(200).body(body.clone())));
    let dir = tempfile::tempdir().unwrap();
    client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/"), "--max-output-size", "1001"])
        .assert()
        .success();
    let out = read_outputs(dir.path());
    assert_eq!(out["body"], "é".repeat(500));
    assert_eq!(out["body-truncated"], "true");
    assert_eq!(
        std::fs::read_to_string(&out["body-file"]).unwrap(),
        expected
    );
}

#[test]
fn response_over_max_response_size_exits_3() {
    let server = Server::start(|_| Reply::Respond(Response::new(200).body(vec![b'x'; 4096])));
    let dir = tempfile::tempdir().unwrap();
    client()
        .envs(github_env(dir.path()))
        .args(["--url", &server.url("/"), "--max-response-size", "1KiB"])
        .assert()
        .code(3);
    let out = read_outputs(dir.path());
    assert_eq!(out["attempts"], "1");
    assert!(
        out["error"].contains("max-response-size"),
        "{}",
        out["error"]
    );
}
