//! Input handling end to end: every bad input exits 2 with a clear error
//! naming it and sends nothing; the CLI's local output modes.

use crate::support;

use std::time::Duration;
use support::{Reply, Response, Server, both_streams, client, github_env, read_outputs};

fn echo(request: &support::Request) -> Reply {
    Reply::Respond(Response::new(200).body(request.body.clone()))
}

#[test]
fn every_bad_input_exits_2_and_sends_nothing() {
    let server = Server::start(echo);
    let url = server.url("/");
    // A "billion laughs": nine levels of ten aliases each.
    let laughs = (1..9).fold(
        "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n".to_owned(),
        |doc, n| {
            let previous = format!("*a{}", n - 1);
            format!("{doc}a{n}: &a{n} [{}]\n", vec![previous; 10].join(", "))
        },
    );
    // What a lenient parser would read as this server's address: a URL
    // with its host after three slashes (an empty `${HOST}` before it), or
    // after one.
    let address = url.trim_start_matches("http://");
    let three_slashes = format!("http:///{address}");
    let one_slash = format!("http:/{address}");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("url", vec![]),
        ("url", vec!["--url", "ftp://127.0.0.1/"]),
        ("url", vec!["--url", &three_slashes]),
        ("url", vec!["--url", &one_slash]),
        ("url", vec!["--url", "http://127.0.0.1:0/"]),
        ("method", vec!["--method", "PO ST"]),
        ("method", vec!["--method", "connect"]),
        ("headers", vec!["-H", "no colon"]),
        ("headers", vec!["--headers", "Idempotency-Key: mine"]),
        ("json", vec!["--body", "x", "--json", "{}"]),
        ("json", vec!["--json", "{unclosed: ["]),
        ("json", vec!["--json", &laughs]),
        ("json", vec!["--json", "ref: main\ncountry: no"]),
        ("json", vec!["--json", "postcode: 01234"]),
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
        (
            "redirect-key-origins",
            vec!["--redirect-key-origins", "https:///api.example.com"],
        ),
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
            stdout.contains(&format!("::error title=Invalid input `{input}`::")),
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
fn json_output_mode_prints_every_output_with_its_json_type() {
    let server = Server::start(|_| {
        Reply::Respond(
            Response::new(201)
                .header("date", "Tue, 01 Dec 2026 10:00:00 GMT")
                .header("set-cookie", "a=1")
                .header("set-cookie", "b=2")
                .body("{\"id\":1}"),
        )
    });
    let temp = tempfile::tempdir().unwrap();
    let assert = client()
        .env("RUNNER_TEMP", temp.path())
        .args([
            "--url",
            &server.url("/"),
            "--output",
            "json",
            "--key-salt",
            "s",
        ])
        .assert()
        .success();
    let out: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(out["status"], 201);
    assert_eq!(out["attempts"], 1);
    assert!(out["elapsed-ms"].is_u64(), "{out}");
    assert_eq!(out["replayed"], false);
    assert_eq!(out["body-truncated"], false);
    assert_eq!(out["headers"]["date"], "Tue, 01 Dec 2026 10:00:00 GMT");
    assert_eq!(
        out["headers"]["set-cookie"],
        serde_json::json!(["a=1", "b=2"])
    );
    assert_eq!(out["body"], "{\"id\":1}");
    assert!(
        out.get("error").is_none(),
        "no error key without an error: {out}"
    );
    assert_eq!(out["idempotency-key"].as_str().unwrap().len(), 36);
    let body_file = out["body-file"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(body_file).unwrap(), "{\"id\":1}");

    let server = Server::start(|_| Reply::Respond(Response::new(404)));
    let assert = client()
        .env("RUNNER_TEMP", temp.path())
        .args(["--url", &server.url("/"), "--output", "json"])
        .assert()
        .code(1);
    let out: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(out["status"], 404);
    assert!(out["error"].as_str().unwrap().contains("404"), "{out}");
}

/// Regression: outside CI every run left an `idempotent-request-*.body`
/// file behind, although nothing reported its path.
#[test]
fn the_body_file_is_kept_only_when_its_path_is_reported() {
    let server = Server::start(|_| Reply::Respond(Response::new(200).body("hello")));
    let temp = tempfile::tempdir().unwrap();
    let bodies = || std::fs::read_dir(temp.path()).unwrap().count();
    client()
        .env("RUNNER_TEMP", temp.path())
        .args(["--url", &server.url("/")])
        .assert()
        .success();
    assert_eq!(bodies(), 0, "the body went to stdout; no file is left");
    client()
        .env("RUNNER_TEMP", temp.path())
        .env("TMPDIR", temp.path())
        .args(["--url", &server.url("/"), "--max-attempts", "1"])
        .args(["--retry-on-status", "200", "--accept-status", "201"])
        .assert()
        .code(1);
    assert_eq!(bodies(), 0, "a failed run leaves nothing either");
    let assert = client()
        .env("RUNNER_TEMP", temp.path())
        .args(["--url", &server.url("/"), "--output", "json"])
        .assert()
        .success();
    let out: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(bodies(), 1, "--output json reports the path, so it stays");
    assert!(std::path::Path::new(out["body-file"].as_str().unwrap()).exists());
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

/// Regression: a malformed `json` document was quoted line by line by the
/// YAML parser's snippet, and a header line without a colon was quoted
/// whole, templated secrets included.
#[test]
fn invalid_input_errors_never_quote_values_that_may_be_secret() {
    let server = Server::start(echo);
    let url = server.url("/");
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "headers",
            vec![
                "--headers".into(),
                "Accept: a\nAuthorization Bearer s3cret".into(),
            ],
        ),
        (
            "headers",
            vec![
                "-H".into(),
                "Accept: a".into(),
                "-H".into(),
                "X-Api-Key s3cret".into(),
            ],
        ),
        (
            "headers",
            vec![
                "-H".into(),
                "s3cret: x".into(),
                "-H".into(),
                "Bad Name s3cret: x".into(),
            ],
        ),
        ("headers", vec!["-H".into(), "X-Token: a\u{7}s3cret".into()]),
        (
            "json",
            vec!["--json".into(), "env: prod\npassword: \"s3cret\n  [".into()],
        ),
        (
            "json",
            vec!["--json".into(), "{\"password\": \"s3cret\",".into()],
        ),
        (
            "json",
            vec![
                "--body".into(),
                "s3cret".into(),
                "--json".into(),
                "{\"a\": 1}".into(),
            ],
        ),
        (
            "idempotency-key",
            vec!["--idempotency-key".into(), "bad s3cret".into()],
        ),
        (
            "github-token",
            vec!["--github-token".into(), "ghp_s3cret with space".into()],
        ),
        (
            "url",
            vec!["--url".into(), "http://ci:s3cret@127.0.0.1:99999/".into()],
        ),
        (
            "url",
            vec![
                "--url".into(),
                "http://127.0.0.1:99999/?token=s3cret".into(),
            ],
        ),
    ];
    for (input, args) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = client();
        cmd.envs(github_env(dir.path()));
        if input != "url" {
            cmd.args(["--url", &url]);
        }
        let assert = cmd.args(&args).assert().code(2);
        let log = both_streams(&assert);
        assert!(
            log.contains(&format!("Invalid input `{input}`")),
            "{args:?}: {log}"
        );
        let error = read_outputs(dir.path())["error"].clone();
        let summary = std::fs::read_to_string(dir.path().join("summary")).unwrap_or_default();
        for text in [&log, &error, &summary] {
            assert!(!text.contains("s3cret"), "{args:?} quoted a secret: {text}");
        }
    }
    assert_eq!(server.connections(), 0);
}

#[test]
fn header_errors_name_the_line_or_the_flag() {
    let assert = client()
        .args([
            "--url",
            "http://127.0.0.1:9/",
            "--headers",
            "Accept: a\n\nnot a header",
        ])
        .assert()
        .code(2);
    let log = both_streams(&assert);
    assert!(
        log.contains("error: invalid input `headers`: line 3: "),
        "{log}"
    );
    assert_eq!(
        log.matches("nvalid input").count(),
        1,
        "one prefix, once: {log}"
    );
    let assert = client()
        .args([
            "--url",
            "http://127.0.0.1:9/",
            "-H",
            "A: 1",
            "-H",
            "A: 2",
            "-H",
            "nope",
        ])
        .assert()
        .code(2);
    assert!(both_streams(&assert).contains("`headers`: -H #3: "));
}

/// Regression: a user `Content-Length: 3` silently cut the body.
#[test]
fn framing_and_hop_by_hop_headers_are_refused_and_nothing_is_sent() {
    let server = Server::start(echo);
    for name in [
        "Content-Length",
        "Transfer-Encoding",
        "Host",
        "Connection",
        "TE",
        "Upgrade",
        "Keep-Alive",
        "Proxy-Connection",
    ] {
        let assert = client()
            .args(["--url", &server.url("/"), "--body", "payload"])
            .args(["-H", &format!("{name}: 3")])
            .assert()
            .code(2);
        let log = both_streams(&assert);
        assert!(log.contains("hop-by-hop"), "{name}: {log}");
        let assert = client()
            .args(["--url", &server.url("/"), "--key-header", name])
            .assert()
            .code(2);
        assert!(both_streams(&assert).contains("`key-header`"), "{name}");
    }
    assert_eq!(server.connections(), 0);
}

/// Regression: a FIFO as `body-file` or `ca-file` blocked the process
/// forever (no writer ever comes), past every timeout.
#[cfg(unix)]
#[test]
fn a_fifo_named_by_an_input_is_refused_at_once() {
    let server = Server::start(echo);
    let dir = tempfile::tempdir().unwrap();
    let fifo = support::fifo(dir.path(), "fifo");
    for input in ["--body-file", "--ca-file", "--client-cert", "--dotenv-file"] {
        let mut cmd = client();
        cmd.args(["--url", &server.url("/"), input, fifo.to_str().unwrap()]);
        if input == "--client-cert" {
            cmd.args(["--client-key", fifo.to_str().unwrap()]);
        }
        // The timeout only turns a hang into a failure; it decides nothing.
        let assert = cmd.timeout(Duration::from_secs(60)).assert().code(2);
        let log = both_streams(&assert);
        assert!(log.contains("not a regular file"), "{input}: {log}");
    }
    assert_eq!(server.connections(), 0);
    // A dotenv-file in a directory that does not exist is found before
    // sending, not after.
    let assert = client()
        .args(["--url", &server.url("/")])
        .args([
            "--dotenv-file",
            dir.path().join("none/out.env").to_str().unwrap(),
        ])
        .assert()
        .code(2);
    let log = both_streams(&assert);
    assert!(log.contains("directory does not exist"), "{log}");
    assert_eq!(server.connections(), 0);
}

/// The directory the response body goes to is tried before the request is
/// sent: found unusable afterwards, the server would have acted and its
/// answer would be lost.
#[test]
fn a_temporary_directory_that_cannot_hold_the_body_is_found_before_sending() {
    let server = Server::start(echo);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    for variable in ["TMPDIR", "RUNNER_TEMP"] {
        let assert = client()
            .env(variable, &missing)
            .args(["--url", &server.url("/"), "--key-salt", "s"])
            .assert()
            .code(2);
        let log = both_streams(&assert);
        assert!(
            log.contains(&format!("invalid input `{variable}`")),
            "{log}"
        );
        assert!(log.contains("No such file or directory"), "{log}");
        assert!(log.contains("Nothing was sent"), "{log}");
    }
    assert_eq!(server.connections(), 0);
    // A dry run writes no body: it does not need the directory.
    client()
        .env("TMPDIR", &missing)
        .args(["--url", &server.url("/"), "--key-salt", "s", "--dry-run"])
        .assert()
        .code(0);
}

/// Regression: under GitHub Actions `key` printed masks and warnings on
/// stdout too, so `KEY=$(idempotent-request key …)` captured them.
#[test]
fn key_prints_exactly_the_key_on_stdout_under_github_actions() {
    let dir = tempfile::tempdir().unwrap();
    let assert = client()
        .envs(github_env(dir.path()))
        .args(["key", "--url", "https://api.example/deploy", "--insecure"])
        .args(["-H", "Authorization: Bearer s3cret"])
        .assert()
        .success();
    let output = assert.get_output();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let key = stdout.strip_suffix('\n').unwrap();
    assert!(uuid::Uuid::parse_str(key).is_ok(), "{stdout:?}");
    assert!(stderr.contains("::add-mask::Bearer s3cret"), "{stderr}");
    assert!(
        stderr.contains("::warning title=TLS verification is off::"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("idempotency-key: {key}")),
        "{stderr}"
    );
}

/// A stdout that takes nothing (its reader gone, as in `… | true`) is an
/// output that could not be written: exit 3 and a line that says so, for
/// `key`, a dry run, the body and JSON alike; never a panic.
#[test]
fn a_stdout_whose_reader_is_gone_is_exit_3_not_a_panic() {
    let server = Server::start(|_| Reply::Respond(Response::new(201).body("created")));
    let url = server.url("/d");
    let cases: [&[&str]; 4] = [
        &["key", "--url", &url],
        &["--url", &url, "--dry-run"],
        &["--url", &url],
        &["--url", &url, "--output", "json"],
    ];
    for args in cases {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_idempotent-request"))
            .args(args)
            .args(["--key-salt", "s"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot write outputs"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
