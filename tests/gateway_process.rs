//! The gateway binary as a process: crashes (SIGKILL) and restarts on the
//! same SQLite file, graceful shutdown (SIGTERM, the log's last lines
//! included), two replicas on one Redis, Redis going away, the admin
//! endpoints, and the client binary through it.
#![cfg(all(feature = "gateway", unix))]

use crate::support;

use std::time::Duration;
use support::gateway::{Gateway, http, readyz, retry_until_outcome_unknown, runtime};
use support::redis::RedisServer;
use support::{client, github_env, read_outputs, slow_upstream, wait_entered};

fn post_in_background(
    url: String,
    key: &'static str,
) -> std::thread::JoinHandle<Option<(u16, String)>> {
    std::thread::spawn(move || {
        let (status, _, body) = runtime()
            .block_on(support::gateway::try_post(&url, key))
            .ok()?;
        Some((status, body))
    })
}

/// The status of one POST with `key`, answered.
fn status_of_post(gateway: &Gateway, key: &'static str) -> u16 {
    let answered = post_in_background(gateway.url.clone(), key).join();
    answered.unwrap().expect("the POST was answered").0
}

/// POSTs `/deployments/{n}` with key `{prefix}-{n}` for `n` in `0..count`,
/// one after another; the statuses in order.
fn post_numbered(url: &str, prefix: &str, count: usize) -> Vec<u16> {
    runtime().block_on(async {
        let client = http();
        let mut answered = Vec::new();
        for n in 0..count {
            let response = client
                .post(format!("{url}/deployments/{n}"))
                .header("idempotency-key", format!("{prefix}-{n}"))
                .body("{}")
                .send()
                .await
                .unwrap();
            answered.push(response.status().as_u16());
        }
        answered
    })
}

#[test]
fn sigkill_mid_forward_then_restart_never_resends() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("records.db").display());
    let (upstream, entered) = slow_upstream(Duration::from_millis(1500));
    let args = [
        "--store",
        &store,
        "--lock-timeout",
        "2s",
        "--upstream-timeout",
        "1800ms",
    ];
    let first = Gateway::start(&upstream, &args);
    let pending = post_in_background(first.url.clone(), "crash-1");
    wait_entered(&entered);
    first.signal(libc::SIGKILL);
    drop(first);
    assert_eq!(
        pending.join().unwrap(),
        None,
        "the gateway died before answering"
    );

    let restarted = Gateway::start(&upstream, &args);
    // The client retries the 409s until the dead gateway's lease lapses,
    // then gets "outcome unknown": never a second forward.
    retry_until_outcome_unknown(&restarted.url, "crash-1");
    assert_eq!(upstream.requests().len(), 1);
}

#[test]
fn sigterm_lets_the_forward_finish_and_be_stored() {
    a_signal_lets_the_forward_finish_and_be_stored(libc::SIGTERM);
}

/// SIGHUP (the terminal the gateway ran in closed) shuts down as
/// gracefully as SIGTERM; by default it would end the process at once.
#[test]
fn sighup_lets_the_forward_finish_and_be_stored() {
    a_signal_lets_the_forward_finish_and_be_stored(libc::SIGHUP);
}

/// `signal` while a forward is in flight: the forward is answered and
/// stored, the gateway exits 0, and a restart replays the answer.
fn a_signal_lets_the_forward_finish_and_be_stored(signal: i32) {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("records.db").display());
    let (upstream, entered) = slow_upstream(Duration::from_millis(800));
    let mut gateway = Gateway::start(&upstream, &["--store", &store]);
    let pending = post_in_background(gateway.url.clone(), "term-1");
    wait_entered(&entered);
    gateway.signal(signal);
    assert_eq!(
        pending.join().unwrap(),
        Some((201, "{\"deployment\":1}".to_owned()))
    );
    assert!(
        gateway.child.wait().unwrap().success(),
        "a clean shutdown exits 0"
    );

    let restarted = Gateway::start(&upstream, &["--store", &store]);
    let replay = runtime().block_on(async {
        http()
            .post(format!("{}/deployments", restarted.url))
            .header("idempotency-key", "term-1")
            .body("{}")
            .send()
            .await
            .unwrap()
    });
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(upstream.requests().len(), 1);
}

/// A scale-down: SIGTERM to a gateway that holds a crowd of connections in
/// no request (silent since they connected, idle after an answer, and
/// halfway through their first request head) beside a forward in flight.
/// The crowd is closed while the forward is still held by the upstream,
/// whatever `--header-timeout` says (a first head still arriving gets 1 s
/// to become whole); the forward is answered and the gateway exits 0
/// without reaching `--shutdown-timeout`.
#[test]
fn a_crowd_in_no_request_is_closed_at_once_on_shutdown() {
    use std::io::{Read, Write};
    let each: u32 = 200;
    rlimit::increase_nofile_limit(u64::from(8 * each)).unwrap();
    let (upstream, entered, release) =
        support::held_upstream(support::Response::new(201).body("{\"deployment\":1}"));
    let mut gateway = Gateway::start(
        &upstream,
        &[
            "--store",
            "memory",
            "--admin-listen",
            "127.0.0.1:0",
            "--header-timeout",
            "300s",
            "--shutdown-timeout",
            "300s",
        ],
    );
    let address = gateway.url.trim_start_matches("http://").to_owned();
    let connect = || std::net::TcpStream::connect(&address).unwrap();
    let mut crowd = Vec::new();
    for _ in 0..each {
        crowd.push(connect());
    }
    for _ in 0..each {
        // Refused by the gateway itself (a path that leaves the prefix),
        // so the upstream never sees it; the connection stays open.
        let mut idle = connect();
        idle.write_all(b"POST /../x HTTP/1.1\r\nHost: gateway\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            idle.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        let length: usize = String::from_utf8_lossy(&head)
            .lines()
            .find_map(|line| line.strip_prefix("content-length: ").map(str::to_owned))
            .unwrap()
            .parse()
            .unwrap();
        idle.read_exact(&mut vec![0; length]).unwrap();
        crowd.push(idle);
    }
    for _ in 0..each {
        let mut half = connect();
        half.write_all(b"POST /deployments HTTP/1.1\r\nHost: gateway\r\n")
            .unwrap();
        crowd.push(half);
    }
    let admin = gateway.admin.clone().unwrap();
    support::gateway::wait_until("the gateway holds the crowd", || {
        support::gateway::sample(
            &support::gateway::metrics(&admin),
            "idempotency_gateway_connections_open",
        ) == f64::from(3 * each)
    });
    let pending = post_in_background(gateway.url.clone(), "scale-down-1");
    wait_entered(&entered);

    gateway.signal(libc::SIGTERM);
    for (n, mut connection) in crowd.into_iter().enumerate() {
        // The safety net is far below --header-timeout: only a connection
        // the shutdown closed ends in time.
        connection
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        match connection.read(&mut [0; 64]) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("connection {n} of the crowd was not closed: {other:?}"),
        }
    }
    release.send(()).unwrap();
    assert_eq!(
        pending.join().unwrap(),
        Some((201, "{\"deployment\":1}".to_owned()))
    );
    assert!(gateway.child.wait().unwrap().success());
    let log: Vec<String> = gateway.log.iter().collect();
    assert!(
        !log.iter().any(|line| line.contains("timeout reached")),
        "{log:#?}"
    );
}

/// The log is written in batches (src/gateway/log.rs): a clean shutdown
/// still writes every request's line, in the order they were answered.
#[test]
fn sigterm_writes_every_request_line() {
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let mut gateway = Gateway::start(&upstream, &["--store", "memory"]);
    let answered = post_numbered(&gateway.url, "log", 200);
    assert!(answered.iter().all(|&status| status == 201), "{answered:?}");
    gateway.signal(libc::SIGTERM);
    assert!(gateway.child.wait().unwrap().success());
    // The reader thread ends at the end of the log.
    let paths: Vec<String> = gateway
        .log
        .iter()
        .filter(|line| line.contains(" request "))
        .filter_map(|line| {
            let path = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("path="))?;
            Some(path.to_owned())
        })
        .collect();
    let expected: Vec<String> = (0..200).map(|n| format!("/deployments/{n}")).collect();
    assert_eq!(paths, expected);
}

/// The request line has a target of its own (README, Logs): a filter that
/// turns it off drops request lines and keeps every other line.
#[test]
fn a_log_filter_can_drop_request_lines_alone() {
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let mut command = Gateway::command(&upstream, &["--store", "memory"]);
    command.env(
        "IDEMPOTENCY_GATEWAY_LOG",
        "info,idempotency_gateway::request=off",
    );
    let mut gateway = Gateway::spawn(command);
    assert_eq!(post_numbered(&gateway.url, "filtered", 3), [201; 3]);
    gateway.signal(libc::SIGTERM);
    assert!(gateway.child.wait().unwrap().success());
    let log: Vec<String> = gateway.log.iter().collect();
    assert!(
        !log.iter().any(|line| line.contains(" request ")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|line| line.contains(" INFO shutting down")),
        "other info lines are kept: {log:?}"
    );
}

/// A log output that takes nothing (stderr a pipe nobody reads, a stuck
/// log collector) does not stall requests: 2,000 of them, far more lines
/// than the pipe and the gathered batch hold, are all answered. Before,
/// a request's thread wrote a full batch itself and blocked on the pipe.
#[test]
fn a_log_output_that_takes_nothing_does_not_stall_requests() {
    use std::io::BufRead;
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let mut child = Gateway::command(&upstream, &["--store", "memory"])
        .spawn()
        .unwrap();
    let mut log = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut ready = String::new();
    while !ready.contains("idempotency-gateway ready") {
        ready.clear();
        assert!(
            log.read_line(&mut ready).unwrap() > 0,
            "exited before ready"
        );
    }
    let listen = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .unwrap()
        .to_owned();
    // From here on nobody reads the log.
    let answered: Vec<u16> = runtime().block_on(async {
        let client = http();
        let mut answered = Vec::new();
        for n in 0..2_000 {
            let response = client
                .post(format!("http://{listen}/deployments/{n}"))
                .header("idempotency-key", format!("unread-log-{n}"))
                .body("{}")
                // A stalled gateway fails the test instead of hanging it.
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            answered.push(response.map_or(0, |r| r.status().as_u16()));
            if answered.last() == Some(&0) {
                break;
            }
        }
        answered
    });
    assert_eq!(
        answered.len(),
        2_000,
        "request {} was not answered",
        answered.len()
    );
    assert!(answered.iter().all(|&status| status == 201));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn two_gateways_on_one_redis_forward_duplicates_once() {
    let redis = RedisServer::start();
    let (upstream, _entered) = slow_upstream(Duration::from_millis(500));
    let store = redis.url();
    let a = Gateway::start(&upstream, &["--store", &store]);
    let b = Gateway::start(&upstream, &["--store", &store]);
    let first = post_in_background(a.url.clone(), "replica-1");
    let second = post_in_background(b.url.clone(), "replica-1");
    let mut statuses = [
        first.join().unwrap().unwrap().0,
        second.join().unwrap().unwrap().0,
    ];
    statuses.sort();
    assert!(
        statuses == [201, 409] || statuses == [201, 201],
        "{statuses:?}"
    );
    let replay = post_in_background(b.url.clone(), "replica-1")
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(replay, (201, "{\"deployment\":1}".to_owned()));
    assert_eq!(upstream.requests().len(), 1);
}

#[test]
fn redis_down_is_503_and_nothing_is_forwarded() {
    let mut redis = RedisServer::start();
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let gateway = Gateway::start(
        &upstream,
        &["--store", &redis.url(), "--admin-listen", "127.0.0.1:0"],
    );
    redis.stop();
    let (status, body) = post_in_background(gateway.url.clone(), "down-1")
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("store-unavailable"), "{body}");
    assert_eq!(upstream.requests().len(), 0);
    assert_eq!(readyz(gateway.admin.as_ref().unwrap()).0, 503);
}

#[test]
fn redis_back_after_an_outage_serves_again_without_a_restart() {
    let mut redis = RedisServer::start();
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let gateway = Gateway::start(&upstream, &["--store", &redis.url()]);
    let post = |key: &'static str| status_of_post(&gateway, key);
    assert_eq!(post("before"), 201);
    redis.stop();
    assert_eq!(post("during"), 503);
    redis.restart();
    // The store's connection comes back on its own (polled: nothing signals
    // it); until it has, requests are refused with nothing forwarded.
    let mut after = post("after");
    for _ in 0..100 {
        if after != 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        after = post("after");
    }
    assert_eq!(after, 201, "the gateway serves again once Redis is back");
    assert_eq!(post("after"), 201, "and replays what it stored since");
    let forwarded = upstream.requests().len();
    assert_eq!(
        forwarded, 2,
        "before and after; nothing while Redis was down"
    );
}

#[test]
fn refuses_to_start_on_a_redis_that_may_evict_claims() {
    let redis =
        RedisServer::start_with(&["--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru"]);
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let (code, stderr) = Gateway::refused(Gateway::command(&upstream, &["--store", &redis.url()]));
    assert_eq!(code, Some(1), "the store cannot be used: {stderr}");
    assert!(
        stderr.contains("maxmemory-policy is volatile-lru"),
        "{stderr}"
    );
    assert!(
        stderr.contains("set maxmemory-policy noeviction"),
        "{stderr}"
    );
    assert!(upstream.requests().is_empty());
}

/// A Redis that cannot hold the claims: a cluster node (keys spread over
/// its nodes, MOVED for the others), a Sentinel (no data), a replica
/// (writes refused). Each is refused at start-up with what to give instead.
#[test]
fn refuses_to_start_on_a_redis_cluster_node_sentinel_or_replica() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = dir.path().join("nodes.conf");
    let cluster = RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        nodes.to_str().unwrap(),
    ]);
    let sentinel = RedisServer::sentinel(dir.path());
    let primary = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    for (server, expected) in [
        (&cluster, "cluster mode"),
        (&sentinel, "Redis Sentinel"),
        (&replica, "Redis replica"),
    ] {
        let (code, stderr) =
            Gateway::refused(Gateway::command(&upstream, &["--store", &server.url()]));
        assert_eq!(code, Some(1), "{expected}: {stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
    // The primary itself is fine, until a failover demotes it: then its
    // writes are refused, and so are requests, with nothing forwarded, and
    // the gateway is not ready.
    let gateway = Gateway::start(
        &upstream,
        &["--store", &primary.url(), "--admin-listen", "127.0.0.1:0"],
    );
    let admin = gateway.admin.clone().unwrap();
    let ready = || readyz(&admin);
    assert_eq!(ready().0, 200);
    let post = |key: &'static str| status_of_post(&gateway, key);
    assert_eq!(post("on-the-primary"), 201);
    assert_eq!(
        primary.command(&format!("REPLICAOF 127.0.0.1 {}", replica.port)),
        "+OK"
    );
    assert_eq!(post("on-a-demoted-primary"), 503);
    assert_eq!(upstream.requests().len(), 1);
    let (status, reason) = ready();
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("Redis replica"), "{reason}");
    assert_eq!(primary.command("REPLICAOF NO ONE"), "+OK");
    assert_eq!(ready().0, 200);
    assert_eq!(post("on-the-primary-again"), 201);
}

#[test]
fn a_redis_that_comes_to_evict_makes_the_gateway_not_ready() {
    // An evicting policy without a limit evicts nothing yet: a warning.
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let gateway = Gateway::start(
        &upstream,
        &["--store", &redis.url(), "--admin-listen", "127.0.0.1:0"],
    );
    let warning = gateway.startup.join("\n");
    assert!(
        warning.contains("WARN") && warning.contains("maxmemory is 0"),
        "{warning}"
    );
    let admin = gateway.admin.clone().unwrap();
    let ready = || readyz(&admin);
    assert_eq!(ready().0, 200);
    assert_eq!(redis.command("CONFIG SET maxmemory 64mb"), "+OK");
    let (status, reason) = ready();
    assert_eq!(status, 503, "{reason}");
    assert!(
        reason.contains("maxmemory-policy is allkeys-lru"),
        "{reason}"
    );
    assert_eq!(
        redis.command("CONFIG SET maxmemory-policy noeviction"),
        "+OK"
    );
    assert_eq!(ready().0, 200);
}

#[test]
fn a_redis_that_hides_its_settings_is_used_with_a_warning() {
    // As managed services do: CONFIG is not allowed.
    let redis = RedisServer::start_with(&[
        "--maxmemory",
        "64mb",
        "--maxmemory-policy",
        "allkeys-lru",
        "--user",
        "default",
        "on",
        "nopass",
        "~*",
        "&*",
        "+@all",
        "-config",
    ]);
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let gateway = Gateway::start(&upstream, &["--store", &redis.url()]);
    let startup = gateway.startup.join("\n");
    assert!(
        startup.contains("could not read Redis's maxmemory-policy"),
        "{startup}"
    );
    let status = post_in_background(gateway.url.clone(), "hidden-1")
        .join()
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(status, 201);
}

#[test]
fn a_redis_that_keeps_nothing_on_disk_is_warned_about() {
    const WARNING: &str = "Redis keeps nothing on disk";
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    // The test servers' default: no snapshots, no append-only file.
    let memory_only = RedisServer::start();
    let gateway = Gateway::start(&upstream, &["--store", &memory_only.url()]);
    let startup = gateway.startup.join("\n");
    assert!(startup.contains(WARNING), "{startup}");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap();
    let appending = RedisServer::start_with(&["--dir", dir, "--appendonly", "yes"]);
    let gateway = Gateway::start(&upstream, &["--store", &appending.url()]);
    let startup = gateway.startup.join("\n");
    assert!(!startup.contains(WARNING), "{startup}");
}

/// A stand-in for Redis whose clock is an hour ahead: it answers what the
/// gateway asks at start-up (`PING`, `CONFIG GET`, `TIME`) and `+OK` to
/// anything else. Its port.
fn redis_an_hour_ahead() -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                let mut line = String::new();
                // Each command: `*N`, then `$LEN` and the argument, N times.
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let count: usize = line.trim()[1..].parse().unwrap();
                    let mut words = Vec::new();
                    for _ in 0..count {
                        let (mut length, mut word) = (String::new(), String::new());
                        reader.read_line(&mut length).unwrap();
                        reader.read_line(&mut word).unwrap();
                        words.push(word.trim_end().to_ascii_uppercase());
                    }
                    line.clear();
                    let reply = match words[0].as_str() {
                        "PING" => "+PONG\r\n".to_owned(),
                        "CONFIG" => "*4\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n".to_owned(),
                        "TIME" => {
                            let now = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap();
                            let seconds = (now.as_secs() + 3600).to_string();
                            let micros = now.subsec_micros().to_string();
                            format!("*2\r\n${}\r\n{seconds}\r\n${}\r\n{micros}\r\n", seconds.len(), micros.len())
                        }
                        _ => "+OK\r\n".to_owned(),
                    };
                    if writer.write_all(reply.as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_clock_apart_from_the_store_servers_is_warned_about() {
    let port = redis_an_hour_ahead();
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let store = format!("redis://127.0.0.1:{port}/0");
    let gateway = Gateway::start(&upstream, &["--store", &store]);
    gateway.assert_warned_an_hour_apart("behind the Redis server's");
}

#[test]
fn admin_endpoints_report_health_and_metrics() {
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let gateway = Gateway::start(
        &upstream,
        &["--store", "memory", "--admin-listen", "127.0.0.1:0"],
    );
    post_in_background(gateway.url.clone(), "m-1")
        .join()
        .unwrap();
    post_in_background(gateway.url.clone(), "m-1")
        .join()
        .unwrap();
    let admin = gateway.admin.clone().unwrap();
    let (health, ready, metrics) = runtime().block_on(async {
        let get = |path: &'static str| {
            let url = format!("http://{admin}{path}");
            async move { http().get(url).send().await.unwrap() }
        };
        (
            get("/healthz").await.status(),
            get("/readyz").await.status(),
            get("/metrics").await.text().await.unwrap(),
        )
    });
    assert_eq!((health.as_u16(), ready.as_u16()), (200, 200));
    for line in [
        "idempotency_gateway_requests_total{outcome=\"forwarded\"} 1",
        "idempotency_gateway_requests_total{outcome=\"replayed\"} 1",
        "idempotency_gateway_upstream_duration_seconds_count 1",
        // The replay is answered from memory: no second store call.
        "idempotency_gateway_store_duration_seconds_count{operation=\"claim\"} 1",
        // Exported at 0 before the first failure.
        "idempotency_gateway_store_errors_total{operation=\"finish\"} 0",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

#[test]
fn refuses_to_start_when_the_upstream_timeout_is_not_below_the_lease() {
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let (code, stderr) = Gateway::refused(Gateway::command(
        &upstream,
        &[
            "--store",
            "memory",
            "--upstream-timeout",
            "60s",
            "--lock-timeout",
            "60s",
        ],
    ));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--upstream-timeout"), "{stderr}");
}

#[test]
fn refuses_to_start_with_a_key_or_caller_header_it_cannot_read() {
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    for (flag, name) in [
        ("--key-header", "Connection"),
        ("--key-header", "Host"),
        ("--scope-headers", "X-Tenant,Transfer-Encoding"),
    ] {
        let (code, stderr) = Gateway::refused(Gateway::command(
            &upstream,
            &["--store", "memory", flag, name],
        ));
        assert_eq!(code, Some(2), "{flag} {name}: {stderr}");
        assert!(stderr.contains(flag), "{stderr}");
    }
    assert!(upstream.requests().is_empty());
}

/// A URL flag whose text names no host after `scheme://` is refused (and
/// an upstream on port 0, which nothing can connect to), where
/// a lenient parser would take a host from its path: `http:///127.0.0.1:PORT`
/// (an empty `${HOST}` before it) would otherwise forward to that address.
#[test]
fn refuses_a_url_flag_without_a_written_host_or_with_port_0() {
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let address = upstream.url("/").trim_start_matches("http://").to_owned();
    for (flag, url) in [
        ("--upstream", format!("http:///{address}")),
        ("--upstream", format!("http:/{address}")),
        ("--upstream", "http://127.0.0.1:0".to_owned()),
        (
            "--jwt-jwks-url",
            "https:///jwks.example.com/keys".to_owned(),
        ),
    ] {
        let mut args = vec![flag, url.as_str(), "--store", "memory"];
        if flag == "--jwt-jwks-url" {
            args.extend(["--jwt-issuer", "https://issuer", "--jwt-audience", "a"]);
        }
        let command = if flag == "--upstream" {
            Gateway::command_for(&url, &args[2..])
        } else {
            Gateway::command(&upstream, &args)
        };
        let (code, stderr) = Gateway::refused(command);
        assert_eq!(code, Some(2), "{flag} {url}: {stderr}");
        assert!(stderr.contains(flag), "{stderr}");
        assert!(
            ["no host", "does not begin", "port 0"]
                .iter()
                .any(|says| stderr.contains(says)),
            "{stderr}"
        );
    }
    assert!(upstream.requests().is_empty());
}

/// A SQLite path that names a FIFO (which SQLite would wait on for ever,
/// before the gateway logs a word) or a directory is refused at start-up.
#[test]
fn refuses_a_sqlite_path_that_is_not_a_regular_file() {
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let fifo = support::fifo(dir.path(), "records.db");
    for path in [fifo.as_path(), dir.path()] {
        let store = format!("sqlite:{}", path.display());
        // The safety net in `refused` turns a hang into a failure.
        let (code, stderr) = Gateway::refused(Gateway::command(&upstream, &["--store", &store]));
        assert_eq!(code, Some(1), "{store}: {stderr}");
        assert!(stderr.contains("not a regular file"), "{stderr}");
    }
}

/// An error at start-up with a stderr that takes nothing (its reader gone)
/// still exits with the error's code, never a panic's (101).
#[test]
fn a_start_up_error_with_stderr_gone_keeps_its_exit_code() {
    for (upstream, args) in [
        ("ftp://127.0.0.1/", &[][..]),
        ("http://127.0.0.1:9", &["--lock-timeout", "1ms"]),
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let status = Gateway::command_for(upstream, args)
            .args(["--store", "memory"])
            .stderr(writer)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(2), "{upstream} {args:?}");
    }
}

/// A PostgreSQL-only flag given with another store is refused, even at its
/// default value and from the environment: it would be ignored.
#[test]
fn refuses_postgres_only_settings_for_another_store() {
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let given = [
        (
            "--store-ca-file",
            "ca.pem",
            "IDEMPOTENCY_GATEWAY_STORE_CA_FILE",
        ),
        (
            "--store-pooler",
            "session",
            "IDEMPOTENCY_GATEWAY_STORE_POOLER",
        ),
        (
            "--store-connections",
            "16",
            "IDEMPOTENCY_GATEWAY_STORE_CONNECTIONS",
        ),
    ];
    for (flag, value, variable) in given {
        for store in ["memory", "sqlite:never-created.db"] {
            for by_variable in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let mut command = if by_variable {
                    let mut command = Gateway::command(&upstream, &["--store", store]);
                    command.env(variable, value);
                    command
                } else {
                    Gateway::command(&upstream, &["--store", store, flag, value])
                };
                command.current_dir(dir.path());
                let (code, stderr) = Gateway::refused(command);
                assert_eq!(code, Some(2), "{flag} {store} {by_variable}: {stderr}");
                assert!(
                    stderr.contains(&format!("{flag} is for a PostgreSQL store")),
                    "{stderr}"
                );
                assert!(!dir.path().join("never-created.db").exists());
            }
        }
    }
    assert!(upstream.requests().is_empty());
}

#[test]
fn client_binary_lost_response_is_replayed_through_the_gateway() {
    // The upstream knows nothing about keys; the client gives up on the
    // slow first answer, retries, waits out the 409s, and gets the replay.
    let (upstream, _entered) = slow_upstream(Duration::from_millis(1200));
    let gateway = Gateway::start(&upstream, &["--store", "memory"]);
    let dir = tempfile::tempdir().unwrap();
    client()
        .envs(github_env(dir.path()))
        .args([
            "--url",
            &format!("{}/deployments", gateway.url),
            "--json",
            "{\"ref\":\"v1\"}",
        ])
        .args([
            "--timeout",
            "300ms",
            "--retry-delay",
            "100ms",
            "--retry-max-delay",
            "300ms",
            "--max-attempts",
            "20",
        ])
        .assert()
        .success();
    let out = read_outputs(dir.path());
    assert_eq!(out["status"], "201");
    assert_eq!(out["replayed"], "true");
    assert_eq!(out["body"], "{\"deployment\":1}");
    assert_eq!(upstream.requests().len(), 1);
}

#[test]
fn client_binary_rerun_is_replayed_through_the_gateway() {
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let gateway = Gateway::start(&upstream, &["--store", "memory"]);
    let run = |attempt: &str| {
        let dir = tempfile::tempdir().unwrap();
        client()
            .envs(github_env(dir.path()))
            .env("GITHUB_RUN_ATTEMPT", attempt)
            .args([
                "--url",
                &format!("{}/deployments", gateway.url),
                "--json",
                "{\"ref\":\"v1\"}",
            ])
            .assert()
            .success();
        read_outputs(dir.path())
    };
    let first = run("1");
    let rerun = run("2");
    assert_eq!(first["idempotency-key"], rerun["idempotency-key"]);
    assert_eq!(first["replayed"], "false");
    assert_eq!(rerun["replayed"], "true");
    assert_eq!(rerun["body"], first["body"]);
    assert_eq!(upstream.requests().len(), 1);
}

/// One search by trace-id finds every attempt of one operation in the
/// client's outputs and the gateway's log.
#[test]
fn the_gateway_logs_the_trace_id_the_client_sends() {
    let (upstream, _entered) = slow_upstream(Duration::ZERO);
    let gateway = Gateway::start(&upstream, &["--store", "memory"]);
    let dir = tempfile::tempdir().unwrap();
    client()
        .envs(github_env(dir.path()))
        .args([
            "--url",
            &format!("{}/deployments", gateway.url),
            "--json",
            "{}",
        ])
        .assert()
        .success();
    let trace_id = read_outputs(dir.path())["trace-id"].clone();
    assert_eq!(trace_id.len(), 32);
    let line = gateway.log_line_with("request");
    assert!(line.contains(&format!("trace_id={trace_id}")), "{line}");
    // A malformed header is not logged.
    runtime().block_on(async {
        http()
            .post(format!("{}/deployments", gateway.url))
            .header("traceparent", "00-not-a-trace-01")
            .send()
            .await
            .unwrap();
    });
    let line = gateway.log_line_with("request");
    assert!(line.contains("trace_id=-"), "{line}");
}
