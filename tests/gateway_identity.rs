//! Who the gateway thinks the caller is: verified JWT claims that survive a
//! token minted afresh per job attempt, forged tokens refused before
//! anything is forwarded, JWKS rotation, and a default scope under which
//! callers who authenticate by cookie or API-key header never read each
//! other's answers. Real processes on 127.0.0.1.
#![cfg(all(feature = "gateway", unix))]

use crate::support;

use base64::Engine as _;
use jsonwebtoken::Algorithm;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use support::gateway::{Gateway, http, runtime};
use support::jwt::{
    AUDIENCE, ISSUER, Jwks, SigningKey, claims, document, now, short_lived_token_service,
    token_service,
};
use support::{Reply, Response, Server, client, counting, github_env, read_outputs, slow_upstream};

fn start(upstream: &Server, jwks: &Jwks) -> Gateway {
    let mut args = jwks.gateway_args();
    args.extend(["--store".into(), "memory".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Gateway::start(upstream, &args)
}

/// POSTs `{}` with `key` and the given headers; status, headers, body.
fn post(
    gateway: &Gateway,
    key: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    runtime().block_on(async {
        let mut request = http()
            .post(format!("{}/deployments", gateway.url))
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body("{}");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The client binary, as attempt `attempt` of one GitHub Actions job, with
/// `oidc-audience`; returns its outputs.
fn run_client(
    gateway: &Gateway,
    service: &Server,
    attempt: &str,
) -> std::collections::HashMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    oidc_client(gateway, service, dir.path())
        .env("GITHUB_RUN_ATTEMPT", attempt)
        .assert()
        .success();
    read_outputs(dir.path())
}

/// The client binary in a GitHub Actions job writing its outputs under
/// `dir`, POSTing `{"ref":"v1"}` through `gateway` with `oidc-audience`.
fn oidc_client(gateway: &Gateway, service: &Server, dir: &std::path::Path) -> assert_cmd::Command {
    let mut client = client();
    client
        .envs(github_env(dir))
        .env(
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            service.url("/token?api-version=2.0"),
        )
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-request-token")
        .args([
            "--url",
            &format!("{}/deployments", gateway.url),
            "--json",
            "{\"ref\":\"v1\"}",
            "--oidc-audience",
            AUDIENCE,
        ]);
    client
}

/// The product's two halves composed: a re-run mints a new OIDC token, and
/// the gateway, identifying the caller by its verified `iss` and `sub`,
/// still forwards once.
#[test]
fn an_oidc_rerun_through_the_gateway_reaches_the_upstream_once() {
    let key = Arc::new(SigningKey::generate(Algorithm::RS256, "rsa-1"));
    let jwks = Jwks::serve(&[&key]);
    let (upstream, calls) = counting();
    let gateway = start(&upstream, &jwks);
    let (service, minted) = token_service(key, "repo:acme/app:environment:production");

    let first = run_client(&gateway, &service, "1");
    let rerun = run_client(&gateway, &service, "2");

    let minted = minted.lock().unwrap().clone();
    assert_eq!(minted.len(), 2, "one token per attempt");
    assert_ne!(minted[0], minted[1], "the attempts sent different tokens");
    assert_eq!(first["idempotency-key"], rerun["idempotency-key"]);
    assert_eq!(first["replayed"], "false");
    assert_eq!(rerun["replayed"], "true");
    assert_eq!(rerun["body"], "{\"deployment\":1}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A token minted for another audience than the gateway accepts: `401`,
/// nothing forwarded, and the client's error says where to look
/// (`oidc-audience` against `--jwt-audience`), not "fix the request".
#[test]
fn a_token_for_another_audience_is_explained_by_the_client() {
    let key = Arc::new(SigningKey::generate(Algorithm::RS256, "rsa-1"));
    let jwks = Jwks::serve(&[&key]);
    let (upstream, calls) = counting();
    let gateway = start(&upstream, &jwks);
    let service = Server::start(move |_| {
        let mut claims = claims("repo:acme/app:environment:production");
        claims["aud"] = "https://elsewhere.example".into();
        let token = key.sign(&claims);
        Reply::Respond(Response::new(200).body(format!("{{\"value\":\"{token}\"}}")))
    });
    let dir = tempfile::tempdir().unwrap();
    oidc_client(&gateway, &service, dir.path())
        .env("GITHUB_RUN_ATTEMPT", "1")
        .assert()
        .code(1);
    let outputs = read_outputs(dir.path());
    assert_eq!(outputs["status"], "401");
    let error = &outputs["error"];
    assert!(error.contains("did not verify"), "{error}");
    assert!(error.contains("`--jwt-audience`"), "{error}");
    assert!(error.contains("id-token: write"), "{error}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// The halves composed across a renewal: the first attempt's answer is
/// lost (the client's attempt times out while the gateway's forward goes
/// on), the retry carries a freshly minted token because the first was
/// about to expire, and the gateway, seeing the same verified caller,
/// answers `409` while the forward runs and then replays it: the upstream
/// acts once.
#[test]
fn a_retry_with_a_renewed_oidc_token_is_the_same_caller_and_is_replayed() {
    let key = Arc::new(SigningKey::generate(Algorithm::ES256, "ec-renew"));
    let jwks = Jwks::serve(&[&key]);
    let (upstream, entered) = slow_upstream(std::time::Duration::from_millis(1500));
    let gateway = start(&upstream, &jwks);
    let (service, minted) =
        short_lived_token_service(key, "repo:acme/app:environment:production", 30);
    let dir = tempfile::tempdir().unwrap();
    let assert = oidc_client(&gateway, &service, dir.path())
        .args([
            "--timeout",
            "300ms",
            "--max-attempts",
            "20",
            "--retry-delay",
            "10ms",
        ])
        .assert()
        .success();
    let log = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    let outputs = read_outputs(dir.path());
    assert_eq!(outputs["status"], "201", "{log}");
    assert_eq!(outputs["replayed"], "true", "{log}");
    assert_eq!(outputs["body"], "{\"deployment\":1}");
    assert!(
        log.contains("attempt 2/20: the OIDC token was about to expire; sending a fresh one"),
        "{log}"
    );
    let minted = minted.lock().unwrap();
    assert!(minted.len() >= 2, "the retries sent renewed tokens");
    entered.recv().unwrap();
    assert!(entered.try_recv().is_err(), "the upstream was called once");
    assert_eq!(upstream.requests().len(), 1);
}

/// The trade-off the JWT flags exist for, shown: with header scoping, a
/// token minted per attempt makes each attempt a new caller. The gateway
/// says so in its log, once, without the token or its claims.
#[test]
fn without_jwt_identity_a_new_token_is_a_new_caller_and_warned_about_once() {
    const WARNING: &str = "bearer JWT that lives a day or less";
    let key = Arc::new(SigningKey::generate(Algorithm::ES256, "ec-1"));
    let (upstream, calls) = counting();
    let gateway = Gateway::start(&upstream, &["--store", "memory"]);
    let (service, minted) = token_service(key, "repo:acme/app:ref:refs/heads/main");
    run_client(&gateway, &service, "1");
    let rerun = run_client(&gateway, &service, "2");
    assert_eq!(rerun["replayed"], "false");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let lines = gateway.log_lines_through("request method=POST", 2);
    let warnings: Vec<_> = lines.iter().filter(|line| line.contains(WARNING)).collect();
    assert_eq!(warnings.len(), 1, "{lines:#?}");
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(warnings[0].contains("--jwt-issuer"), "{}", warnings[0]);
    for token in minted.lock().unwrap().iter() {
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            lines.iter().all(|line| !line.contains(signature)),
            "{lines:#?}"
        );
    }
    assert!(
        lines.iter().all(|line| !line.contains("acme")),
        "{lines:#?}"
    );

    // Opaque tokens, and long-lived JWTs, are not what the warning is about.
    let gateway = Gateway::start(&upstream, &["--store", "memory"]);
    let mut long_lived = claims("service-account");
    long_lived["exp"] = (now() + 90 * 86_400).into();
    let long_lived = bearer(&SigningKey::generate(Algorithm::RS256, "rsa-1").sign(&long_lived));
    post(
        &gateway,
        "opaque",
        &[("authorization", "Bearer ghp_opaque")],
    );
    post(&gateway, "long", &[("authorization", &long_lived)]);
    let lines = gateway.log_lines_through("request method=POST", 2);
    assert!(
        lines.iter().all(|line| !line.contains(WARNING)),
        "{lines:#?}"
    );
}

#[test]
fn another_subject_with_the_same_key_is_another_caller() {
    let key = SigningKey::generate(Algorithm::RS256, "rsa-1");
    let jwks = Jwks::serve(&[&key]);
    let (upstream, calls) = counting();
    let gateway = start(&upstream, &jwks);
    let alice = bearer(&key.sign(&claims("repo:acme/app:ref:refs/heads/main")));
    let mallory = bearer(&key.sign(&claims("repo:mallory/app:ref:refs/heads/main")));
    let (_, _, first) = post(&gateway, "same-key", &[("authorization", &alice)]);
    let (status, headers, second) = post(&gateway, "same-key", &[("authorization", &mallory)]);
    assert_eq!((first.as_str(), status), ("{\"deployment\":1}", 201));
    assert_eq!(second, "{\"deployment\":2}", "not alice's answer");
    assert_eq!(headers["set-cookie"], "session=for-call-2");
    assert!(headers.get("idempotent-replayed").is_none());
    // Alice, with a freshly minted token, is still replayed her own answer.
    let alice_again = bearer(&key.sign(&claims("repo:acme/app:ref:refs/heads/main")));
    let (_, headers, third) = post(&gateway, "same-key", &[("authorization", &alice_again)]);
    assert_eq!(third, "{\"deployment\":1}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with any header and claims and no signature.
fn unsigned(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

#[test]
fn forged_and_invalid_tokens_are_401_and_nothing_is_forwarded() {
    let key = SigningKey::generate(Algorithm::RS256, "rsa-1");
    let jwks = Jwks::serve(&[&key]);
    let (upstream, calls) = counting();
    let gateway = start(&upstream, &jwks);
    let sub = "repo:acme/app:ref:refs/heads/main";
    // The attacker's own key, published nowhere, under the real key's kid.
    let impostor = SigningKey::generate(Algorithm::RS256, "rsa-1");
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims(sub);
        change(&mut c);
        c
    };
    let hs256 = {
        let header = jsonwebtoken::Header::new(Algorithm::HS256);
        jsonwebtoken::encode(
            &header,
            &claims(sub),
            &jsonwebtoken::EncodingKey::from_secret(b"guessable").unwrap(),
        )
        .unwrap()
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("signed by another key", Some(impostor.sign(&claims(sub)))),
        (
            "another issuer",
            Some(key.sign(&with(&|c| c["iss"] = "https://evil.example".into()))),
        ),
        (
            "another audience",
            Some(key.sign(&with(&|c| c["aud"] = "https://other.example".into()))),
        ),
        (
            "expired an hour ago",
            Some(key.sign(&with(&|c| c["exp"] = (now() - 3600).into()))),
        ),
        (
            "not valid for an hour",
            Some(key.sign(&with(&|c| c["nbf"] = (now() + 3600).into()))),
        ),
        (
            "alg none",
            Some(unsigned(
                &serde_json::json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"}),
                &claims(sub),
            )),
        ),
        ("HMAC", Some(hs256)),
        (
            "a tampered payload",
            Some({
                let token = key.sign(&claims("repo:acme/other:ref:refs/heads/main"));
                let parts: Vec<&str> = token.split('.').collect();
                let forged = b64(claims(sub).to_string().as_bytes());
                format!("{}.{forged}.{}", parts[0], parts[2])
            }),
        ),
        (
            "no sub",
            Some(key.sign(&with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }))),
        ),
        ("not a JWT", Some("opaque-session-token".into())),
        ("no token", None),
    ];
    for (case, token) in cases {
        let auth = token.as_deref().map(bearer);
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let (status, response_headers, body) = post(
            &gateway,
            &format!("forged-{}", case.replace(' ', "-")),
            &headers,
        );
        assert_eq!(status, 401, "{case}: {body}");
        assert_eq!(response_headers["www-authenticate"], "Bearer", "{case}");
        assert_eq!(response_headers["content-type"], "application/problem+json");
        assert!(
            body.contains("urn:idempotency-gateway:problem:unauthorized"),
            "{case}: {body}"
        );
        if let Some(token) = &token {
            assert!(
                !body.contains(token.as_str()),
                "{case}: the token was quoted back"
            );
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing was forwarded");
    // The genuine token still works.
    let (status, _, _) = post(
        &gateway,
        "genuine",
        &[("authorization", &bearer(&key.sign(&claims(sub))))],
    );
    assert_eq!(status, 201);
}

#[test]
fn a_rotated_jwks_is_picked_up_and_made_up_key_ids_do_not_flood_it() {
    let old = SigningKey::generate(Algorithm::RS256, "2026-11");
    let jwks = Jwks::serve(&[&old]);
    let (upstream, calls) = counting();
    let gateway = start(&upstream, &jwks);
    let sub = "project_path:acme/app:ref_type:branch:ref:main";
    let (status, _, _) = post(
        &gateway,
        "before",
        &[("authorization", &bearer(&old.sign(&claims(sub))))],
    );
    assert_eq!(status, 201);
    let fetches_at_start = jwks.server.requests().len();
    assert_eq!(fetches_at_start, 1, "fetched once at start-up");

    // The issuer rotates to a new EC key; the old one is withdrawn.
    let new = SigningKey::generate(Algorithm::ES256, "2026-12");
    jwks.publish(&[&new]);
    let (status, _, _) = post(
        &gateway,
        "after",
        &[("authorization", &bearer(&new.sign(&claims(sub))))],
    );
    assert_eq!(
        status, 201,
        "the new kid made the gateway fetch the JWKS again"
    );
    assert_eq!(jwks.server.requests().len(), 2);

    // Tokens naming made-up kids: refused, and at most one fetch per interval.
    for n in 0..20 {
        let unknown = SigningKey::generate(Algorithm::ES256, &format!("made-up-{n}"));
        let token = bearer(&unknown.sign(&claims(sub)));
        let (status, _, _) = post(
            &gateway,
            &format!("made-up-{n}"),
            &[("authorization", &token)],
        );
        assert_eq!(status, 401);
    }
    assert_eq!(jwks.server.requests().len(), 2, "no fetch per made-up kid");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A JWKS file replaced on disk (a rotated, mounted secret: written beside
/// and renamed over, as Kubernetes does) is read again when a token names
/// a key it does not hold, without a restart; a file that is broken
/// mid-rotation keeps the keys already loaded.
#[test]
fn a_replaced_jwks_file_is_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let replace = |text: &str| {
        let next = dir.path().join("jwks.json.next");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, &path).unwrap();
    };
    let old = SigningKey::generate(Algorithm::RS256, "2026-11");
    replace(&document(&[&old]));
    let (upstream, calls) = counting();
    let path_arg = path.display().to_string();
    let gateway = Gateway::start(
        &upstream,
        &[
            "--jwt-jwks-file",
            &path_arg,
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
            "--store",
            "memory",
        ],
    );
    let sub = "repo:acme/app:environment:production";
    let token = |key: &SigningKey| bearer(&key.sign(&claims(sub)));
    let (status, _, _) = post(&gateway, "before", &[("authorization", &token(&old))]);
    assert_eq!(status, 201);

    let new = SigningKey::generate(Algorithm::ES256, "2026-12");
    replace(&document(&[&new]));
    let (status, _, body) = post(&gateway, "after", &[("authorization", &token(&new))]);
    assert_eq!(
        status, 201,
        "the new kid made the gateway read the file again: {body}"
    );
    gateway.log_line_with("JWKS refreshed");
    // The old key was withdrawn with the rotation.
    let (status, _, _) = post(&gateway, "withdrawn", &[("authorization", &token(&old))]);
    assert_eq!(status, 401);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn the_gateway_does_not_start_without_issuer_and_audience_or_with_an_unreadable_jwks() {
    let (upstream, _) = counting();
    // The exit code and stderr of a gateway that must not start.
    let run = |args: &[&str]| {
        let mut command = Gateway::command(&upstream, &["--store", "memory"]);
        command.args(args);
        Gateway::refused(command)
    };
    let (code, stderr) = run(&["--jwt-jwks-file", "/nonexistent/jwks.json"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--jwt-issuer"), "{stderr}");
    let unreadable = run(&[
        "--jwt-jwks-file",
        "/nonexistent/jwks.json",
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ]);
    let (code, stderr) = unreadable;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("JWKS") && stderr.contains("/nonexistent/jwks.json"),
        "{stderr}"
    );
    // A FIFO would block the read (and, on a refresh, a runtime thread)
    // for as long as nobody writes to it: refused at once instead.
    let dir = tempfile::tempdir().unwrap();
    let fifo = support::fifo(dir.path(), "jwks.fifo");
    let fifo_arg = fifo.display().to_string();
    let blocked = run(&[
        "--jwt-jwks-file",
        &fifo_arg,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ]);
    let (code, stderr) = blocked;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
}

/// A JWKS URL behind an internal CA: without `--jwt-jwks-ca-file` its
/// certificate is refused and the gateway does not start (exit 1, saying
/// it cannot fetch the JWKS); with it, tokens verify. The flag without an
/// https JWKS URL is refused (exit 2).
#[test]
fn a_jwks_url_behind_an_internal_ca_is_trusted_with_its_ca_file() {
    let pki = support::tls::Pki::new();
    let key = SigningKey::generate(Algorithm::ES256, "ec-1");
    let published = document(&[&key]);
    let server = Server::start_tls(pki.server_config(false), move |_| {
        Reply::Respond(
            Response::new(200)
                .header("content-type", "application/json")
                .body(published.clone()),
        )
    });
    let url = server.url("/.well-known/jwks");
    assert!(url.starts_with("https://"), "{url}");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let ca = ca.display().to_string();
    let (upstream, calls) = counting();
    let verifying = [
        "--store",
        "memory",
        "--jwt-jwks-url",
        &url,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ];

    let (code, stderr) = Gateway::refused(Gateway::command(&upstream, &verifying));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot fetch the JWKS"), "{stderr}");

    let gateway = Gateway::start(
        &upstream,
        &[&verifying[..], &["--jwt-jwks-ca-file", &ca]].concat(),
    );
    let token = bearer(&key.sign(&claims("repo:acme/app:environment:production")));
    let (status, _, body) = post(&gateway, "ca-1", &[("authorization", &token)]);
    assert_eq!(status, 201, "{body}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, document(&[&key])).unwrap();
    let file_arg = jwks_file.display().to_string();
    let (code, stderr) = Gateway::refused(Gateway::command(
        &upstream,
        &[
            "--jwt-jwks-file",
            &file_arg,
            "--jwt-jwks-ca-file",
            &ca,
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
        ],
    ));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("is for an https --jwt-jwks-url"),
        "{stderr}"
    );
}

/// A JWKS URL that sends without end (chunked, no length) is read to
/// 1 MiB and no further: the gateway refuses to start, promptly, rather
/// than filling its memory for the fetch's 10 s.
#[test]
fn an_endless_jwks_is_cut_off_at_one_mebibyte() {
    use std::io::{Read, Write};
    let (upstream, _) = counting();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let jwks_url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = [0u8; 4096];
        let _ = stream.read(&mut head);
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
        while stream.write_all(chunk.as_bytes()).is_ok() {
            counter.fetch_add(0x10000, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let output = std::process::Command::new(assert_cmd::cargo::cargo_bin("idempotency-gateway"))
        .args(["--listen", "127.0.0.1:0", "--upstream", &upstream.url("")])
        .args(["--store", "memory", "--jwt-jwks-url", &jwks_url])
        .args(["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("larger than the 1048576 bytes allowed"),
        "{stderr}"
    );
    // What the socket buffers held beyond the limit, not gigabytes.
    let sent = sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        sent < 64 << 20,
        "{sent} bytes were sent before it stopped reading"
    );
}

/// With the default `--scope-headers auto`, every common way of
/// authenticating is a caller of its own: another caller with the same key
/// is forwarded, never replayed the first caller's answer or cookie.
#[test]
fn by_default_callers_apart_by_every_common_credential_header() {
    let (upstream, calls) = counting();
    let gateway = Gateway::start(&upstream, &["--store", "memory"]);
    let mut expected_calls = 0;
    for header in [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "private-token",
        "x-auth-token",
        "x-session-id",
        "jsessionid",
    ] {
        let key = format!("scope-{header}");
        let (_, _, first) = post(&gateway, &key, &[(header, "caller-a-secret")]);
        let (status, headers, second) = post(&gateway, &key, &[(header, "caller-b-secret")]);
        expected_calls += 2;
        assert_eq!(status, 201, "{header}");
        assert_ne!(
            first, second,
            "{header}: caller B was replayed caller A's answer"
        );
        assert!(headers.get("idempotent-replayed").is_none(), "{header}");
        assert_ne!(
            headers["set-cookie"],
            format!("session=for-call-{}", expected_calls - 1),
            "{header}: caller B got caller A's cookie"
        );
        // The same caller again is replayed its own answer.
        let (_, headers, again) = post(&gateway, &key, &[(header, "caller-a-secret")]);
        assert_eq!(again, first, "{header}");
        assert_eq!(headers["idempotent-replayed"], "true");
    }
    assert_eq!(calls.load(Ordering::SeqCst), expected_calls);
}

/// `--scope-headers` names exactly the headers that identify a caller.
#[test]
fn named_scope_headers_replace_the_default() {
    let (upstream, calls) = counting();
    let gateway = Gateway::start(
        &upstream,
        &["--store", "memory", "--scope-headers", "X-Tenant"],
    );
    let (_, _, first) = post(&gateway, "tenant", &[("x-tenant", "a"), ("cookie", "one")]);
    let (_, headers, second) = post(&gateway, "tenant", &[("x-tenant", "a"), ("cookie", "two")]);
    assert_eq!(first, second, "the cookie is not part of the caller here");
    assert_eq!(headers["idempotent-replayed"], "true");
    let (_, _, third) = post(&gateway, "tenant", &[("x-tenant", "b")]);
    assert_ne!(third, first);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
