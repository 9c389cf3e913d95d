//! Gateway replicas on one real PostgreSQL server: duplicates split across
//! replicas, a replica killed mid-forward, the server stopped and started,
//! the server killed right after a claim, and the client binary across
//! replicas. Real processes on 127.0.0.1.
#![cfg(all(feature = "gateway", unix))]

use crate::support;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::time::Duration;
use support::gateway::{
    Gateway, RoundRobin, http, post, readyz, retry_until_outcome_unknown, runtime,
};
use support::postgres::{PgBouncer, PostgresServer};
use support::{
    Reply, Response, Server, client, github_env, held_upstream, read_outputs, slow_upstream,
    wait_entered,
};

fn replicas(upstream: &Server, pg: &PostgresServer, extra: &[&str]) -> (Gateway, Gateway) {
    replicas_on(upstream, &pg.url(), extra)
}

/// Two gateways on the store at `url`.
fn replicas_on(upstream: &Server, url: &str, extra: &[&str]) -> (Gateway, Gateway) {
    let mut args = vec!["--store", url];
    args.extend_from_slice(extra);
    (
        Gateway::start(upstream, &args),
        Gateway::start(upstream, &args),
    )
}

#[test]
fn a_hundred_duplicates_across_two_replicas_reach_the_upstream_once() {
    let pg = PostgresServer::start();
    a_hundred_duplicates_reach_the_upstream_once(&pg.url(), &[]);
}

/// As platform teams pool PostgreSQL for many replicas: through PgBouncer
/// in transaction mode, where each statement may run on another server
/// connection, with `--store-pooler transaction`. Duplicates still reach the upstream once, and forty fresh
/// keys, each sent to one replica and then to the other, are forwarded
/// once and replayed once.
#[test]
fn two_replicas_through_pgbouncer_in_transaction_mode_forward_each_key_once() {
    let pg = PostgresServer::start();
    let bouncer = PgBouncer::transaction_mode(&pg);
    let pooled = ["--store-pooler", "transaction"];
    a_hundred_duplicates_reach_the_upstream_once(&bouncer.url(), &pooled);
    let upstream = Server::start(|_| Reply::Respond(Response::new(201).body("{\"id\":1}")));
    let (a, b) = replicas_on(&upstream, &bouncer.url(), &pooled);
    runtime().block_on(async {
        let keys: FuturesUnordered<_> = (0..40)
            .map(|i| {
                let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
                async move {
                    let key = format!("pooled-{i}");
                    let forwarded = post(&first.url, &key).await;
                    let replayed = post(&second.url, &key).await;
                    (forwarded, replayed)
                }
            })
            .collect();
        for (forwarded, replayed) in keys.collect::<Vec<_>>().await {
            assert_eq!(forwarded, (201, false, "{\"id\":1}".to_owned()));
            assert_eq!(replayed, (201, true, "{\"id\":1}".to_owned()));
        }
    });
    assert_eq!(upstream.requests().len(), 40);
}

fn a_hundred_duplicates_reach_the_upstream_once(store: &str, extra: &[&str]) {
    // The one forward is held until the other 99 have been answered, so
    // every one of them meets it in flight, however slow the machine.
    let (upstream, _entered, release) = held_upstream(
        Response::new(201)
            .header("content-type", "application/json")
            .body("{\"deployment\":1}"),
    );
    let (a, b) = replicas_on(&upstream, store, extra);
    let urls = [a.url.clone(), b.url.clone()];
    runtime().block_on(async {
        let mut all: FuturesUnordered<_> = (0..100)
            .map(|i| {
                let url = urls[i % 2].clone();
                async move { post(&url, "split-1").await }
            })
            .collect();
        for _ in 0..99 {
            let (status, _, body) = all.next().await.unwrap();
            assert_eq!(status, 409, "{body}");
        }
        release.send(()).unwrap();
        let winner = all.next().await.unwrap();
        assert_eq!(winner, (201, false, "{\"deployment\":1}".to_owned()));
        // Those told 409 get the replay from either replica.
        for url in &urls {
            assert_eq!(
                post(url, "split-1").await,
                (201, true, "{\"deployment\":1}".to_owned())
            );
        }
    });
    assert_eq!(upstream.requests().len(), 1);
}

#[test]
fn a_replica_killed_mid_forward_is_never_forwarded_again_by_the_other() {
    let pg = PostgresServer::start();
    let (upstream, entered) = slow_upstream(Duration::from_millis(1500));
    let (a, b) = replicas(
        &upstream,
        &pg,
        &["--lock-timeout", "2s", "--upstream-timeout", "1800ms"],
    );
    let url = a.url.clone();
    let pending = std::thread::spawn(move || {
        runtime().block_on(async move {
            http()
                .post(format!("{url}/deployments"))
                .header("idempotency-key", "killed-1")
                .body("{}")
                .send()
                .await
                .is_ok()
        })
    });
    wait_entered(&entered);
    a.signal(libc::SIGKILL);
    assert!(
        !pending.join().unwrap(),
        "the replica died before answering"
    );
    // The other replica: 409 while the dead one's lease runs, then
    // "outcome unknown"; never a second forward.
    retry_until_outcome_unknown(&b.url, "killed-1");
    assert_eq!(upstream.requests().len(), 1);
}

#[test]
fn postgres_stopped_is_503_with_nothing_forwarded_and_started_again_serves() {
    let mut pg = PostgresServer::start();
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let gateway = Gateway::start(
        &upstream,
        &["--store", &pg.url(), "--admin-listen", "127.0.0.1:0"],
    );
    let admin = gateway.admin.clone().unwrap();
    let ready = || readyz(&admin).0;
    assert_eq!(ready(), 200);
    pg.stop();
    let (status, _, body) = runtime().block_on(post(&gateway.url, "down-1"));
    assert_eq!(status, 503);
    assert!(body.contains("store-unavailable"), "{body}");
    assert_eq!(ready(), 503);
    assert!(upstream.requests().is_empty(), "nothing forwarded");
    // Back: the same gateway process serves again, no restart.
    pg.resume();
    assert_eq!(ready(), 200);
    let (status, replayed, _) = runtime().block_on(post(&gateway.url, "down-1"));
    assert_eq!((status, replayed), (201, false));
    assert_eq!(upstream.requests().len(), 1);
}

#[test]
fn a_claim_acknowledged_before_postgres_crashed_is_still_there_after_it_restarts() {
    let mut pg = PostgresServer::start();
    // The upstream holds the one request until the test lets go.
    let (upstream, entered, release_tx) =
        held_upstream(Response::new(201).body("{\"deployment\":1}"));
    let gateway = Gateway::start(&upstream, &["--store", &pg.url()]);
    let url = gateway.url.clone();
    let first = std::thread::spawn(move || runtime().block_on(post(&url, "crash-1")));
    // Forwarded, so its claim was committed; then the server crashes.
    wait_entered(&entered);
    pg.kill();
    pg.resume();
    let (status, _, body) = runtime().block_on(post(&gateway.url, "crash-1"));
    assert_eq!(status, 409, "the claim survived the crash: {body}");
    release_tx.send(()).unwrap();
    assert_eq!(first.join().unwrap().0, 201);
    let (status, replayed, _) = runtime().block_on(post(&gateway.url, "crash-1"));
    assert_eq!((status, replayed), (201, true));
    assert_eq!(upstream.requests().len(), 1);
}

/// The client binary behind a round-robin balancer over two replicas: the
/// first attempt's answer is lost, the re-run's attempts land on either
/// replica; then a plain re-run.
#[test]
fn the_client_binary_across_two_replicas_acts_once() {
    let pg = PostgresServer::start();
    let (upstream, _entered) = slow_upstream(Duration::from_millis(1200));
    let (a, b) = replicas(&upstream, &pg, &[]);
    let balancer = RoundRobin::start(vec![a.url.clone(), b.url.clone()]);
    let run = |attempt: &str, patience: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let assert = client()
            .envs(github_env(dir.path()))
            .env("GITHUB_RUN_ATTEMPT", attempt)
            .args([
                "--url",
                &format!("{}/deployments", balancer.url),
                "--json",
                "{\"ref\":\"v1\"}",
            ])
            .args(patience)
            .assert();
        (assert.get_output().status.code(), read_outputs(dir.path()))
    };
    let (code, first) = run("1", &["--timeout", "300ms", "--max-attempts", "1"]);
    assert_eq!(code, Some(3), "no response: {first:?}");
    let (code, rerun) = run("2", &["--retry-delay", "200ms", "--max-attempts", "20"]);
    assert_eq!(code, Some(0));
    assert_eq!(rerun["idempotency-key"], first["idempotency-key"]);
    assert_eq!(rerun["replayed"], "true");
    assert_eq!(rerun["body"], "{\"deployment\":1}");
    for attempt in ["3", "4"] {
        let (code, again) = run(attempt, &[]);
        assert_eq!(code, Some(0));
        assert_eq!(again["replayed"], "true");
    }
    assert_eq!(upstream.requests().len(), 1);
}

/// The password from a file or PGPASSWORD, never in any output; without
/// one the gateway does not start (exit 1).
#[test]
fn the_postgres_password_comes_from_a_file_or_pgpassword_and_is_never_printed() {
    let password = "pg-secret-password";
    let pg = PostgresServer::start_with(&support::postgres::Options {
        password: Some(password),
        ..Default::default()
    });
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let url = pg.url();
    let without = Gateway::command(&upstream, &["--store", &url])
        .output()
        .unwrap();
    assert_eq!(without.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(stderr.contains("PostgreSQL"), "{stderr}");

    let in_url = url.replacen("gateway@", "gateway:wrong-password@", 1);
    let wrong = Gateway::command(&upstream, &["--store", &in_url])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!stderr.contains("wrong-password"), "{stderr}");
    assert!(
        stderr.contains("postgres://127.0.0.1:"),
        "shown without user-info: {stderr}"
    );
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg-password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let file = file.display().to_string();
    let from_file = Gateway::start(
        &upstream,
        &["--store", &url, "--store-password-file", &file],
    );
    let (status, _, _) = runtime().block_on(post(&from_file.url, "pw-1"));
    assert_eq!(status, 201);
    drop(from_file);

    let mut command = Gateway::command(&upstream, &["--store", &url]);
    command.env("PGPASSWORD", password);
    let from_env = Gateway::spawn(command);
    let (status, replayed, _) = runtime().block_on(post(&from_env.url, "pw-1"));
    assert_eq!((status, replayed), (201, true), "the same database");
    // Every line the gateway wrote: it writes the last ones as it exits.
    let mut from_env = from_env;
    from_env.signal(libc::SIGTERM);
    assert!(from_env.child.wait().unwrap().success());
    let lines: Vec<String> = from_env.log.iter().collect();
    assert!(lines.iter().any(|l| l.contains(" request ")), "{lines:?}");
    assert!(lines.iter().all(|l| !l.contains(password)), "{lines:?}");
}

/// A password rotated in `--store-password-file` is used by the
/// connections opened after it: once the server has ended the gateway's
/// sessions, the same gateway serves and replays again without a restart.
#[test]
fn a_rotated_postgres_password_is_read_again_for_new_connections() {
    let mut pg = PostgresServer::start_with(&support::postgres::Options {
        password: Some("first-password"),
        ..Default::default()
    });
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let (gateway, file, _dir) = Gateway::with_password_file(&upstream, &pg.url(), "first-password");
    let post = |key: &'static str| {
        let (status, replayed, _) = runtime().block_on(post(&gateway.url, key));
        (status, replayed)
    };
    assert_eq!(post("rotated-1"), (201, false));

    pg.set_password("second-password");
    std::fs::write(&file, "second-password\n").unwrap();
    pg.sql(&["SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
              WHERE application_name = 'idempotency-gateway'"]);
    // The pool notices closed connections as calls meet them: polled, each
    // refusal forwarding nothing.
    let mut after = post("rotated-2");
    for _ in 0..100 {
        if after.0 != 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        after = post("rotated-2");
    }
    assert_eq!(after, (201, false), "still 503 with the rotated password");
    assert_eq!(post("rotated-1"), (201, true));
    assert_eq!(upstream.requests().len(), 2, "each key forwarded once");
}

/// TLS to PostgreSQL, verified: a CA given with --store-ca-file is
/// trusted; without it the server's certificate is refused.
#[test]
fn tls_to_postgres_is_verified() {
    let pki = support::tls::Pki::new();
    let pg = PostgresServer::start_with(&support::postgres::Options {
        tls: Some((&pki.server_cert_pem, &pki.server_key_pem)),
        ..Default::default()
    });
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let url = format!("{}?sslmode=require", pg.url());
    let untrusted = Gateway::command(&upstream, &["--store", &url])
        .output()
        .unwrap();
    assert_eq!(untrusted.status.code(), Some(1), "an unknown CA is refused");
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = pki.write(dir.path());
    let ca = ca.display().to_string();
    let gateway = Gateway::start(&upstream, &["--store", &url, "--store-ca-file", &ca]);
    let (status, _, _) = runtime().block_on(post(&gateway.url, "tls-1"));
    assert_eq!(status, 201);
}

/// libfaketime, which shifts the clock of the process it is preloaded in
/// (`scripts/test.sh` installs it).
fn faketime() -> std::path::PathBuf {
    std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|entry| Some(entry.ok()?.path().join("faketime/libfaketime.so.1")))
        .find(|path| path.is_file())
        .expect("libfaketime must be installed for this test (apt-get install libfaketime)")
}

/// A gateway whose clock runs an hour ahead of PostgreSQL's (libfaketime
/// shifts its wall clock, not its monotonic one) warns at start-up, and
/// says by how much.
#[test]
fn a_clock_an_hour_ahead_of_postgres_is_warned_about() {
    let pg = PostgresServer::start();
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let mut command = Gateway::command(&upstream, &["--store", &pg.url()]);
    command
        .env("LD_PRELOAD", faketime())
        .env("FAKETIME", "+1h")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let gateway = Gateway::spawn(command);
    gateway.assert_warned_an_hour_apart("ahead of the PostgreSQL server's");
    // Without the shift, no warning.
    let gateway = Gateway::start(&upstream, &["--store", &pg.url()]);
    let startup = gateway.startup.join("\n");
    assert!(!startup.contains("clock is at least"), "{startup}");
}

/// A role that PostgreSQL lets open two connections. Forty concurrent
/// forwards meet the records table locked, so every claim holds its
/// connection while the lock is held and the pool grows as far as it may:
/// with
/// `--store-connections 2` the gateway stays within the role's limit and
/// serves all forty once the lock goes; with the default 16, the
/// connections past the limit are refused, their requests answered 503 with
/// nothing forwarded, and the log says what to change.
#[test]
fn store_connections_keep_a_gateway_within_the_server_s_limit() {
    let pg = PostgresServer::start();
    pg.sql(&[
        "CREATE ROLE limited LOGIN CONNECTION LIMIT 2",
        "CREATE DATABASE limited OWNER limited",
    ]);
    let url = format!("postgres://limited@127.0.0.1:{}/limited", pg.port);
    let admin_url = format!("postgres://gateway@127.0.0.1:{}/limited", pg.port);
    let upstream = Server::start(|_| Reply::Respond(Response::new(201).body("{}")));
    // With `refusals`, the lock is held until the gateway has logged a
    // refused connection: by then the pool has tried to grow past the
    // role's limit, however slowly the forty requests arrived.
    let forty_behind_a_lock = |gateway: &Gateway,
                               round: &'static str,
                               refusals: bool|
     -> (Vec<u16>, Option<String>) {
        runtime().block_on(async {
            let (admin, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            admin
                .batch_execute("BEGIN; LOCK TABLE idempotency_gateway_records IN EXCLUSIVE MODE")
                .await
                .unwrap();
            let url = gateway.url.clone();
            let posts = tokio::spawn(async move {
                let posts: FuturesUnordered<_> = (0..40)
                    .map(|i| {
                        let url = url.clone();
                        async move { post(&url, &format!("{round}-{i}")).await.0 }
                    })
                    .collect();
                posts.collect::<Vec<u16>>().await
            });
            // The role's two connections wait for the lock: the pool has
            // opened all it could.
            support::postgres::until_count(
                &admin,
                // pg_locks, not pg_stat_activity: this transaction would
                // see one snapshot of the latter.
                "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted \
                 AND relation = 'idempotency_gateway_records'::regclass",
                2,
            )
            .await;
            let refused = refusals.then(|| {
                tokio::task::block_in_place(|| gateway.log_line_with("no connection left"))
            });
            admin.batch_execute("COMMIT").await.unwrap();
            (posts.await.unwrap(), refused)
        })
    };
    let within = Gateway::start(&upstream, &["--store", &url, "--store-connections", "2"]);
    let (statuses, _) = forty_behind_a_lock(&within, "within", false);
    assert!(statuses.iter().all(|&s| s == 201), "{statuses:?}");
    assert_eq!(upstream.requests().len(), 40);
    drop(within);
    let past = Gateway::start(&upstream, &["--store", &url]);
    let (statuses, line) = forty_behind_a_lock(&past, "past", true);
    let refused = statuses.iter().filter(|&&s| s == 503).count();
    assert!(refused > 0, "{statuses:?}");
    assert!(
        statuses.iter().all(|&s| s == 201 || s == 503),
        "{statuses:?}"
    );
    assert_eq!(upstream.requests().len(), 40 + (40 - refused));
    let line = line.unwrap();
    assert!(line.contains("--store-connections"), "{line}");
}
