//! What the gateway forwards, stores and says: the request target exactly
//! as fingerprinted and never above the upstream's prefix, no hop-by-hop
//! header in either direction, covered methods that letter case cannot
//! bypass, claims that a disconnect or a slow store cannot orphan,
//! "outcome unknown" replayed as a replay and understood by the client,
//! no secret in the log, store files for the owner only. The real binary
//! on 127.0.0.1.
#![cfg(all(feature = "gateway", unix))]

use crate::support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Duration;
use support::gateway::{Gateway, http, raw, runtime, status_of};
use support::redis::RedisServer;
use support::{Reply, Response, Server, client, counting, github_env, read_outputs};

/// A raw POST of `target` with a key, closing after the answer.
fn raw_post(gateway: &Gateway, method: &str, target: &str, key: &str) -> String {
    raw(
        &gateway.url,
        &format!(
            "{method} {target} HTTP/1.1\r\nHost: gateway\r\nIdempotency-Key: {key}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        ),
    )
}

#[test]
fn targets_that_could_leave_the_prefix_are_refused() {
    let (upstream, calls) = counting();
    let gateway = Gateway::spawn(Gateway::command_for(
        &upstream.url("/api"),
        &["--store", "memory"],
    ));
    for (n, target) in [
        "/../admin/users",
        "/v1/../../admin/users",
        "/%2e%2e/admin/users",
        "/%2E%2E/admin/users",
        "/.%2E/admin/users",
        "/%2e./admin/users",
        "/..%2fadmin/users",
        "/..%2Fadmin%2Fusers",
        "/..\\admin\\users",
        "/..%5cadmin",
        "/..%5Cadmin",
        "/v1/./deployments",
        "/v1/%2e/deployments",
        "/..",
        "/..?x=1",
        "/..;/admin/users",
        "/v1/..;jsessionid=x/..;/admin",
        "/%252e%252e/admin/users",
        "/%u002e%u002e/admin/users",
        "/%c0%ae%c0%ae/admin/users",
        "/v1/.%00./admin",
    ]
    .iter()
    .enumerate()
    {
        for method in ["POST", "GET"] {
            let answer = raw_post(&gateway, method, target, &format!("prefix-{n}"));
            assert_eq!(status_of(&answer), 400, "{method} {target}: {answer}");
        }
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
    assert!(upstream.requests().is_empty());
}

/// RFC 9112 §3.2: an HTTP/1.1 request without a `Host`, or any request
/// with two or a malformed one, is `400`, forwarded or passed through alike;
/// the upstream always gets `--upstream`'s authority.
#[test]
fn a_missing_repeated_or_malformed_host_is_refused() {
    let (upstream, calls) = counting();
    let gateway = Gateway::spawn(Gateway::command_for(
        &upstream.url("/"),
        &["--store", "memory"],
    ));
    for (n, hosts) in [
        "",
        "Host: a.example\r\nHost: b.example\r\n",
        "Host: a.example\r\nHost: a.example\r\n",
        "Host: user@a.example\r\n",
        "Host: a.example:port\r\n",
    ]
    .iter()
    .enumerate()
    {
        for method in ["POST", "GET"] {
            let answer = raw(
                &gateway.url,
                &format!(
                    "{method} /deployments HTTP/1.1\r\n{hosts}Idempotency-Key: host-{n}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                ),
            );
            assert_eq!(status_of(&answer), 400, "{method} {hosts:?}: {answer}");
            assert!(answer.contains("Host header"), "{answer}");
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing was forwarded");
    let answer = raw_post(&gateway, "POST", "/deployments", "host-ok");
    assert_eq!(status_of(&answer), 201, "{answer}");
    let own = upstream.url("");
    let own = own.trim_start_matches("http://").trim_end_matches('/');
    assert_eq!(
        upstream.requests()[0].header("host"),
        Some(own),
        "the upstream's own authority, not the client's"
    );
}

#[test]
fn the_target_reaches_the_upstream_exactly_as_sent_under_the_prefix() {
    let (upstream, _) = counting();
    let gateway = Gateway::spawn(Gateway::command_for(
        &upstream.url("/api"),
        &["--store", "memory"],
    ));
    let targets = [
        "/v1/\"quoted\"/{id}/'s/caf%C3%A9/%7e/a%2Fb?q=a%20b&r={c}&s='t'&u=%zz",
        "/v1//double//slashes/?empty=&=x&flag",
        "/a..b/.well-known/x.json",
        "/v1/deployments/%2e%2ex",
        "/v1/cars;color=red/%252F;x/100%25",
    ];
    for (n, target) in targets.iter().enumerate() {
        for method in ["POST", "GET"] {
            let answer = raw_post(&gateway, method, target, &format!("exact-{n}-{method}"));
            assert_eq!(status_of(&answer), 201, "{method} {target}: {answer}");
            let seen = upstream.requests().last().unwrap().path.clone();
            assert_eq!(seen, format!("/api{target}"), "{method}");
        }
    }
}

#[test]
fn hop_by_hop_headers_are_removed_in_both_directions_and_from_the_record() {
    let upstream = Server::start(|_| {
        Reply::Respond(
            Response::new(201)
                .header("connection", "X-Upstream-Hop, keep-alive")
                .header("x-upstream-hop", "internal")
                .header("keep-alive", "timeout=5")
                .header("x-end-to-end", "kept")
                .body("{}"),
        )
    });
    let gateway = Gateway::start(&upstream, &["--store", "memory"]);
    let send = |hop_value: &str| {
        raw(
            &gateway.url,
            &format!(
                "POST /deployments HTTP/1.1\r\nHost: gateway\r\nIdempotency-Key: hop\r\n\
                 Connection: X-Client-Hop, close\r\nX-Client-Hop: {hop_value}\r\n\
                 Keep-Alive: timeout=9\r\nTE: trailers\r\nX-Forward-Me: yes\r\n\
                 Content-Length: 2\r\n\r\n{{}}"
            ),
        )
        .to_ascii_lowercase()
    };
    let first = send("one");
    let seen = &upstream.requests()[0];
    for name in ["x-client-hop", "keep-alive", "te"] {
        assert!(
            seen.header(name).is_none(),
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert!(
        seen.header("connection")
            .is_none_or(|v| !v.to_ascii_lowercase().contains("x-client-hop")),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.header("x-forward-me"), Some("yes"));
    // A hop-by-hop header is not part of the request: other values, same
    // request, so the record is replayed (not 422).
    let replay = send("two");
    assert!(replay.starts_with("http/1.1 201"), "{replay}");
    assert!(replay.contains("idempotent-replayed: true"), "{replay}");
    for answer in [&first, &replay] {
        assert!(!answer.contains("x-upstream-hop"), "{answer}");
        assert!(!answer.contains("timeout=5"), "{answer}");
        assert!(answer.contains("x-end-to-end: kept"), "{answer}");
    }
    assert_eq!(upstream.requests().len(), 1);
}

/// A transfer coding besides `chunked` (`gzip, chunked`) is refused with
/// `501` and nothing forwarded, on covered and passed-through methods: the
/// HTTP stack undoes only the chunking, and with `Transfer-Encoding`
/// stripped as hop-by-hop the upstream would take the gzip bytes for the
/// body. `chunked` alone is decoded and forwarded with its length, and a
/// `Content-Length` beside it is dropped (RFC 9112 §6.3), not forwarded.
#[test]
fn a_transfer_coding_besides_chunked_is_refused_and_chunked_is_reframed() {
    let (upstream, calls) = counting();
    let gateway = Gateway::start(&upstream, &["--store", "memory"]);
    let send = |method: &str, key: &str, framing: &str| {
        raw(
            &gateway.url,
            &format!(
                "{method} /deployments HTTP/1.1\r\nHost: gateway\r\nIdempotency-Key: {key}\r\n\
                 {framing}Connection: close\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
            ),
        )
    };
    for (method, framing) in [
        ("POST", "Transfer-Encoding: gzip, chunked\r\n"),
        (
            "POST",
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        ),
        ("PUT", "Transfer-Encoding: gzip, chunked\r\n"),
    ] {
        let answer = send(method, "coded", framing);
        assert_eq!(status_of(&answer), 501, "{method} {framing:?}: {answer}");
        assert!(answer.contains("unsupported-transfer-coding"), "{answer}");
        assert!(answer.contains("nothing was forwarded"), "{answer}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let chunked = send(
        "POST",
        "chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 40\r\n",
    );
    assert_eq!(status_of(&chunked), 201, "{chunked}");
    let seen = &upstream.requests()[0];
    assert_eq!(seen.body, b"{}");
    assert_eq!(
        seen.header("content-length"),
        Some("2"),
        "{:?}",
        seen.headers
    );
    assert!(
        seen.header("transfer-encoding").is_none(),
        "{:?}",
        seen.headers
    );
}

/// Frameworks run `post` as POST; the gateway refuses a covered method in
/// another letter case instead of passing it through unguarded.
#[test]
fn a_covered_method_in_another_letter_case_is_refused() {
    let (upstream, calls) = counting();
    let gateway = Gateway::start(&upstream, &["--store", "memory", "--require-key"]);
    for method in ["post", "Post", "pOST", "patch", "Patch"] {
        let with_key = raw_post(&gateway, method, "/deployments", "case");
        assert_eq!(status_of(&with_key), 400, "{method}: {with_key}");
        assert!(with_key.contains("upper case"), "{with_key}");
        let without_key = raw(
            &gateway.url,
            &format!(
                "{method} /deployments HTTP/1.1\r\nHost: gateway\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            ),
        );
        assert_eq!(status_of(&without_key), 400, "{method} without a key");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        status_of(&raw_post(&gateway, "POST", "/deployments", "case")),
        201
    );
}

/// A forward reuses its upstream connection, and never sends on one the
/// upstream closed while it sat idle: an upstream that answers with
/// keep-alive and then closes every connection gets each request once, on
/// a connection of its own, and every forward is answered `201` (none
/// `502`, none sent twice).
#[test]
fn forwards_reuse_upstream_connections_and_never_send_on_one_closed_while_idle() {
    let (upstream, calls) = counting();
    let gateway = Gateway::start(&upstream, &["--store", "memory"]);
    for n in 0..20 {
        let answer = raw_post(&gateway, "POST", "/deployments", &format!("reuse-{n}"));
        assert_eq!(status_of(&answer), 201, "{answer}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 20);
    assert_eq!(upstream.connections(), 1, "one keep-alive connection");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (closed_tx, closed) = mpsc::channel();
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            // Headers, then the 2-byte body every forward here carries.
            while request
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .is_none_or(|end| request.len() < end + 4 + 2)
            {
                match std::io::Read::read(&mut stream, &mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            if !request.is_empty() {
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}");
            }
            // Keep-alive was implied; the upstream closes anyway.
            drop(stream);
            let _ = closed_tx.send(());
        }
    });
    let gateway = Gateway::spawn(Gateway::command_for(&url, &["--store", "memory"]));
    for n in 0..10 {
        let answer = raw_post(&gateway, "POST", "/deployments", &format!("closing-{n}"));
        assert_eq!(status_of(&answer), 201, "forward {n}: {answer}");
        closed.recv_timeout(Duration::from_secs(30)).unwrap();
    }
    assert_eq!(received.load(Ordering::SeqCst), 10, "each request once");
}

/// An upstream that resets the connection after reading the request: it
/// may have acted.
fn resetting() -> Server {
    Server::start(|_| Reply::Reset)
}

#[test]
fn outcome_unknown_is_replayed_as_a_replay_and_the_client_stops_at_once() {
    let upstream = resetting();
    let gateway = Gateway::start(&upstream, &["--store", "memory"]);
    let run = |attempt: &str| {
        let dir = tempfile::tempdir().unwrap();
        let assert = client()
            .envs(github_env(dir.path()))
            .env("GITHUB_RUN_ATTEMPT", attempt)
            .args([
                "--url",
                &format!("{}/deployments", gateway.url),
                "--json",
                "{}",
            ])
            // 502 is retried by default; "outcome unknown" must not be.
            .args(["--max-attempts", "5", "--retry-delay", "10ms"])
            .assert()
            .code(1);
        let log = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
        (read_outputs(dir.path()), log)
    };
    let (first, log) = run("1");
    assert_eq!(first["status"], "502");
    assert_eq!(first["attempts"], "1", "not retried");
    assert_eq!(first["replayed"], "false");
    assert!(
        first["error"].contains("whether the API acted is unknown"),
        "{}",
        first["error"]
    );
    assert!(
        first["error"].contains("not send the request again"),
        "{}",
        first["error"]
    );
    assert!(!first["error"].contains("Re-running the job is safe"));
    assert!(log.contains("Outcome unknown"), "{log}");
    let (rerun, _) = run("2");
    assert_eq!(rerun["attempts"], "1");
    assert_eq!(rerun["replayed"], "true", "the stored outcome is a replay");
    assert!(rerun["body"].contains("urn:idempotency-gateway:problem:outcome-unknown"));
    assert_eq!(upstream.requests().len(), 1, "never sent again");
}

/// A derived key that does not cover the body (`key-include-body: false`)
/// sent again with another body: the gateway refuses it with `422`, and
/// the client says what that means and what to do, instead of the generic
/// "fix the request".
#[test]
fn a_key_reused_for_another_request_is_explained_by_the_client() {
    let (upstream, _) = counting();
    let gateway = Gateway::start(&upstream, &["--store", "memory"]);
    let run = |json: &str| {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("{}/deployments", gateway.url);
        let assert = client()
            .envs(github_env(dir.path()))
            .args(["--url", &url, "--json", json, "--key-include-body", "false"])
            .assert();
        let code = assert.get_output().status.code();
        (code, read_outputs(dir.path()))
    };
    let (code, first) = run(r#"{"ref":"v1"}"#);
    assert_eq!((code, first["status"].as_str()), (Some(0), "201"));
    let (code, second) = run(r#"{"ref":"v2"}"#);
    assert_eq!((code, second["status"].as_str()), (Some(1), "422"));
    assert_eq!(second["idempotency-key"], first["idempotency-key"]);
    let error = &second["error"];
    assert!(
        error.contains("already used for a different request"),
        "{error}"
    );
    assert!(error.contains("`key-include-body: false`"), "{error}");
    assert!(error.contains("`key-salt`"), "{error}");
    assert_eq!(upstream.requests().len(), 1, "the second was not forwarded");
}

#[test]
fn a_replayed_not_stored_answer_is_marked_as_a_replay() {
    let upstream = Server::start(|_| Reply::Respond(Response::new(200).body(vec![b'x'; 4096])));
    let gateway = Gateway::start(&upstream, &["--store", "memory", "--max-body", "1KiB"]);
    let first = raw_post(&gateway, "POST", "/export", "big");
    assert_eq!(status_of(&first), 200, "passed through once");
    assert!(!first.to_ascii_lowercase().contains("idempotent-replayed"));
    let second = raw_post(&gateway, "POST", "/export", "big").to_ascii_lowercase();
    assert_eq!(status_of(&second), 502);
    assert!(second.contains("idempotent-replayed: true"), "{second}");
    assert!(second.contains("outcome-not-stored"), "{second}");
    assert_eq!(upstream.requests().len(), 1);
}

/// A client that gives up while its claim waits for the store. The claim
/// commits later; the forward must still happen (or the claim be
/// released), never "claimed, not forwarded, 409 then outcome unknown".
fn a_disconnect_during_the_claim_still_forwards(
    store_args: &[&str],
    hold_store: impl FnOnce() -> Box<dyn FnOnce()>,
) {
    let (upstream, calls) = counting();
    let gateway = Gateway::start(&upstream, store_args);
    assert_eq!(
        status_of(&raw_post(&gateway, "POST", "/warm-up", "warm-up")),
        201
    );
    let let_go = hold_store();
    // Two impatient clients, so one claim also waits behind the other for
    // the SQLite connection (the blocking pool at either durability).
    let impatient = |key: &'static str| {
        let url = gateway.url.clone();
        std::thread::spawn(move || {
            runtime().block_on(async move {
                http()
                    .post(format!("{url}/deployments"))
                    .header("idempotency-key", key)
                    .timeout(Duration::from_millis(300))
                    .body("{}")
                    .send()
                    .await
                    .is_err()
            })
        })
    };
    let (a, b) = (impatient("orphan-a"), impatient("orphan-b"));
    assert!(a.join().unwrap() && b.join().unwrap(), "both gave up");
    let_go();
    // A claim written before its client left was forwarded; a request the
    // gateway had not claimed yet was not. Either way the retry succeeds
    // (no 409 until "outcome unknown"), and each key acted once.
    for key in ["orphan-a", "orphan-b"] {
        let dir = tempfile::tempdir().unwrap();
        client()
            .envs(github_env(dir.path()))
            .args([
                "--url",
                &format!("{}/deployments", gateway.url),
                "--body",
                "{}",
            ])
            .args([
                "--idempotency-key",
                key,
                "--retry-delay",
                "100ms",
                "--deadline",
                "20s",
            ])
            .assert()
            .success();
        let forwarded = upstream
            .requests()
            .iter()
            .filter(|r| r.header("idempotency-key") == Some(key))
            .count();
        assert_eq!(forwarded, 1, "{key}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    drop(gateway);
}

/// Holds SQLite's write lock from another connection until let go.
fn hold_sqlite(path: std::path::PathBuf) -> impl FnOnce() -> Box<dyn FnOnce()> {
    move || {
        let (release, released) = mpsc::channel::<()>();
        let (locked, is_locked) = mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let connection = rusqlite::Connection::open(&path).unwrap();
            connection.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked.send(()).unwrap();
            let _ = released.recv();
            connection.execute_batch("ROLLBACK").unwrap();
        });
        is_locked.recv().unwrap();
        Box::new(move || {
            release.send(()).unwrap();
            holder.join().unwrap();
        })
    }
}

#[test]
fn sqlite_a_disconnect_during_the_claim_still_forwards() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.db");
    let store = format!("sqlite:{}", path.display());
    a_disconnect_during_the_claim_still_forwards(&["--store", &store], hold_sqlite(path));
}

#[test]
fn sqlite_full_durability_a_disconnect_during_the_claim_still_forwards() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.db");
    let store = format!("sqlite:{}", path.display());
    a_disconnect_during_the_claim_still_forwards(
        &["--store", &store, "--durability", "full"],
        hold_sqlite(path),
    );
}

/// Another process holds SQLite's write lock past the store's 5 s wait:
/// the new key is answered `503` after that one wait, its claim neither
/// retried (each retry would wait again) nor released in the background
/// (a failed SQLite claim wrote nothing); the key is not left stuck.
#[test]
fn sqlite_a_lock_held_past_its_wait_is_answered_after_one_wait() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.db");
    let store = format!("sqlite:{}", path.display());
    let (upstream, calls) = counting();
    let gateway = Gateway::start(
        &upstream,
        &["--store", &store, "--admin-listen", "127.0.0.1:0"],
    );
    let post = |key: &str| {
        runtime()
            .block_on(support::gateway::post(&gateway.url, key))
            .0
    };
    assert_eq!(post("before"), 201);
    let release = hold_sqlite(path)();
    assert_eq!(post("locked"), 503);
    release();
    let metrics = support::gateway::metrics(gateway.admin.as_deref().unwrap());
    let count = |series: &str, operation: &str| {
        support::gateway::sample(
            &metrics,
            &format!("idempotency_gateway_store_{series}{{operation=\"{operation}\"}}"),
        )
    };
    let calls_of = |operation: &str| count("duration_seconds_count", operation);
    assert_eq!(calls_of("claim"), 2.0, "one claim per request:\n{metrics}");
    assert_eq!(calls_of("release"), 0.0, "{metrics}");
    assert_eq!(count("errors_total", "claim"), 1.0, "{metrics}");
    assert_eq!(post("locked"), 201, "the key was left free");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// The store refuses the answer (SQLite's write lock held by another
/// process past its wait): the client gets the upstream's answer anyway,
/// and once the lock is let go the gateway stores it on a later try, so the
/// retry is a replay rather than "in flight" and then "outcome unknown".
#[test]
fn sqlite_an_answer_the_store_refused_is_stored_once_it_can_be() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.db");
    let store = format!("sqlite:{}", path.display());
    let (upstream, entered) = support::slow_upstream(Duration::from_millis(300));
    let gateway = Gateway::start(&upstream, &["--store", &store]);
    let post = |key: &'static str| {
        let url = gateway.url.clone();
        std::thread::spawn(move || {
            let (status, replayed, _) = runtime().block_on(support::gateway::post(&url, key));
            (status, replayed)
        })
    };
    let first = post("kept");
    entered.recv().unwrap();
    // Claimed and forwarded: the answer comes back to a locked store.
    let release = hold_sqlite(path)();
    assert_eq!(first.join().unwrap(), (201, false));
    release();
    support::gateway::wait_until("the retry is a replay", || {
        match post("kept").join().unwrap() {
            (201, true) => true,
            (409, false) => false,
            other => panic!("the retry got {other:?}"),
        }
    });
    assert_eq!(upstream.requests().len(), 1, "forwarded once");
}

/// The upstream answers `503` (not processed), and the store refuses to
/// release the claim (SQLite's write lock held past its wait): once the
/// lock is let go the claim is released on a later try, so the retry is
/// forwarded, not left "in flight" to become "outcome unknown" for a
/// request the upstream never acted on.
#[test]
fn sqlite_a_claim_the_store_would_not_release_is_released_once_it_can_be() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.db");
    let store = format!("sqlite:{}", path.display());
    let (entered_tx, entered) = mpsc::channel();
    let entered_tx = std::sync::Mutex::new(entered_tx);
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let upstream = Server::start(move |_| {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = entered_tx.lock().unwrap().send(());
            Reply::Delay(Duration::from_millis(300), Response::new(503))
        } else {
            Reply::Respond(Response::new(201).body("{\"deployment\":1}"))
        }
    });
    let gateway = Gateway::start(&upstream, &["--store", &store]);
    let post = |key: &'static str| {
        let url = gateway.url.clone();
        std::thread::spawn(move || runtime().block_on(support::gateway::post(&url, key)).0)
    };
    let first = post("freed");
    entered.recv().unwrap();
    let release = hold_sqlite(path)();
    assert_eq!(first.join().unwrap(), 503);
    release();
    support::gateway::wait_until("the retry is forwarded", || {
        match post("freed").join().unwrap() {
            201 => true,
            409 => false,
            other => panic!("the retry got {other}"),
        }
    });
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the 503, then the retry");
}

/// Redis holds the claim script past the gateway's response timeout (2 s):
/// the claim commits after the gateway stopped waiting for it.
#[test]
fn redis_a_claim_that_outlives_its_timeout_still_forwards() {
    let redis = RedisServer::start();
    let url = redis.url();
    let redis = Arc::new(redis);
    let paused = redis.clone();
    a_disconnect_during_the_claim_still_forwards(&["--store", &url], move || {
        assert_eq!(paused.command("CLIENT PAUSE 3000 WRITE"), "+OK");
        Box::new(|| {})
    });
}

#[test]
fn no_secret_reaches_the_log() {
    let (upstream, _) = counting();
    let gateway = Gateway::start(&upstream, &["--store", "memory"]);
    let secrets = [
        "key-value-secret",
        "bearer-secret",
        "cookie-secret",
        "body-secret",
        "query-secret",
    ];
    runtime().block_on(async {
        http()
            .post(format!(
                "{}/deployments?access_token=query-secret",
                gateway.url
            ))
            .header("idempotency-key", "key-value-secret")
            .header("authorization", "Bearer bearer-secret")
            .header("cookie", "session=cookie-secret")
            .body("{\"password\":\"body-secret\"}")
            .send()
            .await
            .unwrap();
    });
    let line = gateway.log_line_with("request");
    for secret in secrets {
        assert!(!line.contains(secret), "{secret} in {line}");
    }
    assert!(line.contains("path=/deployments"), "{line}");
}

#[test]
fn passwords_in_store_and_upstream_urls_never_reach_the_output() {
    let (upstream, _) = counting();
    let redis = RedisServer::start();
    // A password Redis does not have: start-up fails, and says so without it.
    let store = format!("redis://user:hunter2-store@127.0.0.1:{}/0", redis.port);
    let output = Gateway::command(&upstream, &["--store", &store])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(
        stderr.contains("redis://") && stderr.contains("127.0.0.1"),
        "{stderr}"
    );

    let with_user_info = format!("http://deploy:hunter2-upstream@{}", upstream.addr);
    let output = Gateway::command_for(&with_user_info, &["--store", "memory"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "user-info in --upstream is refused"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(stderr.contains("user-info"), "{stderr}");
}

/// `--store-password-file` keeps the password out of the URL, the process
/// list and the environment.
#[test]
fn the_store_password_can_come_from_a_file() {
    let (upstream, calls) = counting();
    let redis = RedisServer::start_with(&["--requirepass", "from-a-file"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-password");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let store = redis.url();
    let without = Gateway::command(&upstream, &["--store", &store])
        .output()
        .unwrap();
    assert_eq!(without.status.code(), Some(1), "no password: Redis refuses");
    let file_arg = file.display().to_string();
    let gateway = Gateway::start(
        &upstream,
        &["--store", &store, "--store-password-file", &file_arg],
    );
    for _ in 0..2 {
        assert_eq!(
            status_of(&raw_post(&gateway, "POST", "/deployments", "pw")),
            201
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // An answer over 64 KiB is stored and read on connections of its own,
    // which log in with the same password.
    let large = Server::start(|_| Reply::Respond(Response::new(201).body(vec![b'L'; 200_000])));
    let gateway = Gateway::start(
        &large,
        &["--store", &store, "--store-password-file", &file_arg],
    );
    for replayed in [false, true] {
        let answer = raw_post(&gateway, "POST", "/deployments", "pw-large");
        assert_eq!(
            status_of(&answer),
            201,
            "{}",
            &answer[..200.min(answer.len())]
        );
        assert!(answer.ends_with(&"L".repeat(200_000)));
        assert_eq!(answer.contains("idempotent-replayed: true"), replayed);
    }
    assert_eq!(large.requests().len(), 1);
    let sqlite = Gateway::command(
        &upstream,
        &["--store", "memory", "--store-password-file", &file_arg],
    )
    .output()
    .unwrap();
    assert_eq!(
        sqlite.status.code(),
        Some(2),
        "a password for a store that takes none"
    );
}

/// A password rotated in `--store-password-file` is used by every Redis
/// connection opened after it, the shared one's reconnection and the
/// large answers' alike: once Redis has closed the gateway's connections,
/// the same gateway serves and replays again without a restart.
#[test]
fn a_rotated_redis_password_is_read_again_for_new_connections() {
    let upstream = Server::start(|request| {
        let size = if request.path.contains("large") {
            200_000
        } else {
            2
        };
        Reply::Respond(Response::new(201).body(vec![b'L'; size]))
    });
    let redis = RedisServer::start_with(&["--requirepass", "first-password"]);
    let (gateway, file, _dir) =
        Gateway::with_password_file(&upstream, &redis.url(), "first-password");
    let post = |target: &str, key: &str| {
        let answer = raw_post(&gateway, "POST", target, key);
        (
            status_of(&answer),
            answer.contains("idempotent-replayed: true"),
        )
    };
    assert_eq!(post("/small", "rotated-1"), (201, false));
    assert_eq!(post("/large", "rotated-2"), (201, false));

    std::fs::write(&file, "second-password\n").unwrap();
    let set = redis.command_as("first-password", "CONFIG SET requirepass second-password");
    assert_eq!(set, "+OK");
    let killed = redis.command_as("second-password", "CLIENT KILL TYPE normal SKIPME yes");
    assert!(killed.starts_with(':') && killed != ":0", "{killed}");
    // Reconnecting is not signalled: polled, each refusal forwarding nothing.
    let until_served = |target: &str, key: &str| {
        for _ in 0..100 {
            match post(target, key) {
                (503, _) => std::thread::sleep(Duration::from_millis(100)),
                answered => return answered,
            }
        }
        panic!("{target}: still 503 with the rotated password");
    };
    assert_eq!(until_served("/small", "rotated-3"), (201, false));
    assert_eq!(until_served("/large", "rotated-4"), (201, false));
    assert_eq!(post("/small", "rotated-1"), (201, true));
    assert_eq!(post("/large", "rotated-2"), (201, true));
    assert_eq!(upstream.requests().len(), 4, "each key forwarded once");
}

/// A SQLite database deleted, or replaced by another file, or its `-wal`
/// file deleted, under a running gateway would take claims made afterwards
/// with it at the next start: once the store notices (within a second; the
/// log line, naming the file, is the signal), new keys are refused (`503`,
/// nothing forwarded) and `/readyz` says so, while what was stored before
/// is still replayed.
#[test]
fn sqlite_a_database_deleted_or_replaced_under_the_gateway_refuses_new_keys() {
    for (case, named) in [
        ("deleted", "records.db`"),
        ("replaced", "records.db`"),
        ("wal deleted", "records.db-wal`"),
    ] {
        let (upstream, calls) = counting();
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("records.db");
        let store = format!("sqlite:{}", database.display());
        let gateway = Gateway::start(
            &upstream,
            &["--store", &store, "--admin-listen", "127.0.0.1:0"],
        );
        let post = |key: &str| status_of(&raw_post(&gateway, "POST", "/deployments", key));
        assert_eq!(post("before"), 201);
        match case {
            "deleted" => std::fs::remove_file(&database).unwrap(),
            "replaced" => {
                let other = dir.path().join("other.db");
                std::fs::write(&other, "").unwrap();
                std::fs::rename(&other, &database).unwrap();
            }
            _ => std::fs::remove_file(dir.path().join("records.db-wal")).unwrap(),
        }
        let line = gateway.log_line_with("was deleted, renamed or replaced");
        assert!(
            line.contains("ERROR") && line.contains(named),
            "{case}: {line}"
        );
        let refused = raw_post(&gateway, "POST", "/deployments", "after");
        assert_eq!(status_of(&refused), 503, "{refused}");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "nothing forwarded");
        let admin = gateway.admin.as_ref().unwrap();
        assert_eq!(support::gateway::readyz(admin).0, 503);
        let replay = raw_post(&gateway, "POST", "/deployments", "before");
        assert_eq!(status_of(&replay), 201);
        assert!(replay.contains("idempotent-replayed: true"), "{replay}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Checkpoints stop with the file gone: they would copy into a file
        // no start opens, or (a deleted `-wal`) fail every second.
        let mut gateway = gateway;
        gateway.child.kill().unwrap();
        gateway.child.wait().unwrap();
        let rest: Vec<String> = gateway.log.iter().collect();
        assert!(
            !rest.iter().any(|line| line.contains("checkpoint failed")),
            "{case}: {rest:#?}"
        );
    }
}

/// An https upstream is verified: with its CA in `--upstream-ca-file` it
/// is forwarded to and its answer replayed; without, its certificate is
/// refused before anything is sent (`502`, the claim released, the retry
/// forwarded once the gateway trusts it). An http upstream needs no CA
/// certificates: a host without any (a container built from scratch)
/// serves it, where an https one does not start without
/// `--upstream-ca-file` and says so.
#[test]
fn an_https_upstream_is_verified_against_the_platform_and_the_ca_file() {
    let pki = support::tls::Pki::new();
    let upstream = Server::start_tls(pki.server_config(false), |_| {
        Reply::Respond(Response::new(201).body("{}"))
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let ca = ca.display().to_string();
    let answer = |gateway: &Gateway, key: &str| {
        let answer = raw_post(gateway, "POST", "/deployments", key);
        (status_of(&answer), answer)
    };

    let untrusted = Gateway::start(&upstream, &["--store", "memory"]);
    let (status, refused) = answer(&untrusted, "tls-1");
    assert_eq!(status, 502, "{refused}");
    assert!(refused.contains("certificate"), "{refused}");
    assert!(upstream.requests().is_empty(), "nothing sent");
    drop(untrusted);

    let trusted = Gateway::start(&upstream, &["--store", "memory", "--upstream-ca-file", &ca]);
    assert_eq!(answer(&trusted, "tls-1").0, 201);
    let (status, replay) = answer(&trusted, "tls-1");
    assert_eq!(status, 201);
    assert!(replay.contains("idempotent-replayed: true"), "{replay}");
    assert_eq!(upstream.requests().len(), 1);

    // A host with no CA certificates at all.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let without_roots = |upstream: &Server, extra: &[&str]| {
        let mut command = Gateway::command(upstream, &[&["--store", "memory"], extra].concat());
        command
            .env("SSL_CERT_FILE", &empty)
            .env("SSL_CERT_DIR", dir.path().join("no-such-dir"));
        command
    };
    let refused = without_roots(&upstream, &[]).output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--upstream-ca-file"), "{stderr}");
    let own_ca = Gateway::spawn(without_roots(&upstream, &["--upstream-ca-file", &ca]));
    assert_eq!(answer(&own_ca, "tls-2").0, 201);
    let (plain, calls) = counting();
    let plain_gateway = Gateway::spawn(without_roots(&plain, &[]));
    assert_eq!(answer(&plain_gateway, "tls-3").0, 201);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let http_with_ca = Gateway::command(&plain, &["--upstream-ca-file", &ca])
        .output()
        .unwrap();
    assert_eq!(http_with_ca.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&http_with_ca.stderr);
    assert!(stderr.contains("is for an https upstream"), "{stderr}");
}

/// A FIFO named as the store's password or CA file, or the upstream's CA
/// file, would block start-up until someone writes to it: refused at once
/// (exit 1) instead, like an oversized file. The child is killed if it has
/// not exited in 20 s, so a regression fails here rather than hanging the
/// suite.
#[test]
fn password_and_ca_files_must_be_regular_files() {
    let (upstream, _) = counting();
    let dir = tempfile::tempdir().unwrap();
    let fifo = support::fifo(dir.path(), "secret.fifo")
        .display()
        .to_string();
    let huge = dir.path().join("huge");
    std::fs::write(&huge, vec![b'a'; 2 * 1024 * 1024]).unwrap();
    let huge = huge.display().to_string();
    // Port 1 on loopback: nothing listens, and the file is read first.
    let postgres = "postgres://gateway@127.0.0.1:1/db";
    let (plain, tls) = (upstream.url(""), "https://127.0.0.1:1");
    for (flag, store, file, upstream) in [
        (
            "--store-password-file",
            "redis://127.0.0.1:1",
            &fifo,
            &*plain,
        ),
        ("--store-ca-file", postgres, &fifo, &plain),
        ("--upstream-ca-file", "memory", &fifo, tls),
        (
            "--store-password-file",
            "redis://127.0.0.1:1",
            &huge,
            &plain,
        ),
        ("--store-ca-file", postgres, &huge, &plain),
        ("--upstream-ca-file", "memory", &huge, tls),
    ] {
        let mut command = Gateway::command_for(upstream, &["--store", store, flag, file]);
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let (done, exited) = mpsc::channel();
        std::thread::spawn(move || done.send(child.wait_with_output()));
        let Ok(output) = exited.recv_timeout(Duration::from_secs(20)) else {
            #[allow(unsafe_code)]
            // SAFETY: kill(2) on the child's pid; it has not been reaped.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            panic!("{flag} {file}: the gateway blocked instead of refusing the file");
        };
        let output = output.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{flag} {file}: {stderr}");
        let why = if file == &fifo {
            "not a regular file"
        } else {
            "larger than"
        };
        assert!(
            stderr.contains(&format!("cannot read {flag}")) && stderr.contains(why),
            "{flag} {file}: {stderr}"
        );
    }
}

#[test]
fn store_files_are_for_the_owner_only_whatever_the_umask() {
    let (upstream, _) = counting();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.db");
    let store = format!("sqlite:{}", path.display());
    let mut command = Gateway::command(&upstream, &["--store", &store]);
    #[allow(unsafe_code)]
    // SAFETY: umask(2) is async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let gateway = Gateway::spawn(command);
    assert_eq!(
        status_of(&raw_post(&gateway, "POST", "/deployments", "mode")),
        201
    );
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", path.display());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file} is {mode:o}");
    }
}

/// `--key-header`: a webhook sender's delivery id is the key, so a
/// redelivery gets the stored answer and never reaches the receiver again.
#[test]
fn webhook_redeliveries_are_answered_from_the_record() {
    let (upstream, calls) = counting();
    let gateway = Gateway::start(
        &upstream,
        &[
            "--store",
            "memory",
            "--key-header",
            "X-GitHub-Delivery",
            "--require-key",
        ],
    );
    let deliver = |id: &str, body: &str| {
        raw(
            &gateway.url,
            &format!(
                "POST /hooks HTTP/1.1\r\nHost: gateway\r\nX-GitHub-Delivery: {id}\r\n\
                 X-Hub-Signature-256: sha256=same-for-the-same-body\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .to_ascii_lowercase()
    };
    let first = deliver(
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "{\"action\":\"opened\"}",
    );
    let redelivery = deliver(
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "{\"action\":\"opened\"}",
    );
    assert_eq!(status_of(&first), 201);
    assert_eq!(status_of(&redelivery), 201);
    assert!(
        redelivery.contains("idempotent-replayed: true"),
        "{redelivery}"
    );
    // The same id with another body is not the same delivery.
    assert_eq!(
        status_of(&deliver(
            "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            "{\"action\":\"closed\"}"
        )),
        422
    );
    // A new event has a new id.
    assert_eq!(
        status_of(&deliver("a1b2c3d4-0000-11e3-81ab-4c9367dc0958", "{}")),
        201
    );
    // Without the header: refused (--require-key), not passed through.
    let bare = raw(
        &gateway.url,
        "POST /hooks HTTP/1.1\r\nHost: gateway\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert_eq!(status_of(&bare), 400);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A client that hangs up while its forward waits on the upstream: the
/// forward runs on the client's connection until then, so the gateway must
/// carry the rest on its own (answer recorded, logged as orphaned) and the
/// retry gets the replay; the upstream acts once.
#[test]
fn a_client_that_hangs_up_mid_forward_leaves_its_answer_recorded() {
    let (upstream, entered, release) =
        support::held_upstream(Response::new(201).body("{\"deployment\":1}"));
    for store in ["memory", "sqlite"] {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = format!("sqlite:{}", dir.path().join("records.db").display());
        let store_arg = if store == "memory" { "memory" } else { &sqlite };
        let gateway = Gateway::start(&upstream, &["--store", store_arg]);
        let key = format!("hang-up-{store}");
        let mut stream =
            std::net::TcpStream::connect(gateway.url.trim_start_matches("http://")).unwrap();
        stream
            .write_all(
                format!(
                    "POST /deployments HTTP/1.1\r\nHost: gateway\r\nIdempotency-Key: {key}\r\nContent-Length: 2\r\n\r\n{{}}"
                )
                .as_bytes(),
            )
            .unwrap();
        support::wait_entered(&entered);
        drop(stream);
        // The upstream still holds the request: a duplicate finds it in flight.
        let duplicate = raw_post(&gateway, "POST", "/deployments", &key);
        assert_eq!(status_of(&duplicate), 409, "{store}: still in flight");
        release.send(()).unwrap();
        // Logged once the unit, carried on without its client, is done.
        let line = gateway.log_line_with("the client went away before the answer");
        assert!(line.contains("outcome=\"forwarded\""), "{store}: {line}");
        assert!(line.contains("status=201"), "{store}: {line}");
        let retry = raw_post(&gateway, "POST", "/deployments", &key);
        assert_eq!(status_of(&retry), 201, "{store}: {retry}");
        assert!(
            retry
                .to_ascii_lowercase()
                .contains("idempotent-replayed: true"),
            "{store}: {retry}"
        );
        assert!(retry.ends_with("{\"deployment\":1}"), "{store}: {retry}");
    }
    assert_eq!(upstream.requests().len(), 2, "one forward per store");
}
