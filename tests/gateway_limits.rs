//! The gateway cannot be taken down without credentials: attacks scaled
//! down with lowered limits, on real sockets against the real binary. Past
//! a limit it answers or closes, keeps its memory bounded, and goes on
//! serving everyone else.
#![cfg(all(feature = "gateway", unix))]

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::gateway::{
    Gateway, http, http2, metrics, peak_rss_kib, problem, rss_kib, runtime, sample, wait_until,
};
use support::redis::RedisServer;
use support::{Reply, Response, Server};

fn upstream() -> Server {
    Server::start(|_| {
        Reply::Respond(
            Response::new(201)
                .header("content-type", "application/json")
                .body("{\"deployment\":1}"),
        )
    })
}

/// The gateway on the memory store with its admin listener, and `limits`.
fn start(upstream: &Server, limits: &[&str]) -> Gateway {
    let mut args = vec!["--store", "memory", "--admin-listen", "127.0.0.1:0"];
    args.extend_from_slice(limits);
    Gateway::start(upstream, &args)
}

/// Status, replay marker and body length of one whole answer to a POST of
/// `body` with `key`.
fn whole(gateway: &Gateway, key: &str, body: Vec<u8>) -> (u16, bool, usize) {
    runtime().block_on(async {
        let answer = http()
            .post(format!("{}/deployments", gateway.url))
            .header("idempotency-key", key)
            .body(body)
            .send()
            .await
            .unwrap();
        let replayed = answer.headers().contains_key("idempotent-replayed");
        (
            answer.status().as_u16(),
            replayed,
            answer.bytes().await.unwrap().len(),
        )
    })
}

fn address(gateway: &Gateway) -> String {
    gateway.url.trim_start_matches("http://").to_owned()
}

fn connect(gateway: &Gateway) -> TcpStream {
    let stream = TcpStream::connect(address(gateway)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// A connection whose first request head has begun and goes no further
/// (a slowloris): it holds its place, and is never closed to make room.
fn slow_head(gateway: &Gateway) -> TcpStream {
    let mut stream = connect(gateway);
    stream
        .write_all(b"POST /deployments HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
        .unwrap();
    stream
}

/// Reads until the peer closes (or the 30 s safety timeout); the text.
fn read_all(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether a read saw the peer close (EOF or a reset), not the 30 s
/// safety timeout.
fn closed_by_peer(read: std::io::Result<usize>) -> bool {
    match read {
        Ok(n) => n == 0,
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Waits until the gateway counts `open` open connections.
fn wait_until_open(gateway: &Gateway, open: f64, what: &str) {
    let admin = gateway.admin.as_ref().unwrap();
    wait_until(what, || {
        sample(&metrics(admin), "idempotency_gateway_connections_open") == open
    });
}

/// Reads one HTTP/1.1 answer (its head and `Content-Length` bytes of
/// body), for a connection the gateway keeps open afterwards; the text.
fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => answer.push(byte[0]),
            _ => return String::from_utf8_lossy(&answer).into_owned(),
        }
    }
    let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .and_then(|length| length.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let _ = stream.read_exact(&mut body);
    answer.extend_from_slice(&body);
    String::from_utf8_lossy(&answer).into_owned()
}

/// A client on one HTTP/1.1 connection of its own, driven in the
/// background: every request sent with it goes over that connection.
async fn one_connection<B>(address: &str) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

/// A legitimate POST with `key`, sent by `client`.
fn post(
    client: &reqwest::Client,
    gateway: &Gateway,
    key: &str,
) -> reqwest::Result<reqwest::Response> {
    runtime().block_on(
        client
            .post(format!("{}/deployments", gateway.url))
            .header("idempotency-key", key)
            .body("{}")
            .send(),
    )
}

/// A legitimate POST with a key; its status.
fn legitimate(gateway: &Gateway, key: &str) -> u16 {
    post(&http(), gateway, key).map_or(0, |r| r.status().as_u16())
}

/// A `503` problem answer's type and detail.
fn refusal(answer: reqwest::Response) -> (String, String) {
    let (status, body) = runtime().block_on(problem(answer));
    assert_eq!(status, 503, "{body}");
    let text = |field: &str| body[field].as_str().unwrap_or_default().to_owned();
    (text("type"), text("detail"))
}

/// A POST on a new connection while the gateway holds `--max-connections`,
/// sent by an HTTP/1.1 and by an HTTP/2 (prior knowledge) client: each
/// reads the `503` problem whole as the answer to its request, with
/// `Retry-After: 1`, and over HTTP/1.1 `Connection: close`.
fn assert_refused_by_the_connection_limit(gateway: &Gateway, key: &str) {
    let http2 = http2();
    for (client, version) in [(http(), "HTTP/1.1"), (http2, "HTTP/2")] {
        let answer = post(&client, gateway, key).unwrap_or_else(|error| {
            panic!("{version}: the refusal reached the client as an error: {error:?}")
        });
        assert_eq!(answer.headers()["retry-after"], "1", "{version}");
        if version == "HTTP/1.1" {
            assert_eq!(answer.headers()["connection"], "close", "{version}");
        }
        let (status, body) = runtime().block_on(problem(answer));
        assert_eq!(status, 503, "{version}: {body}");
        assert_eq!(
            body["type"], "urn:idempotency-gateway:problem:too-many-connections",
            "{version}"
        );
    }
}

const DECLARED: usize = 1_000_000;

/// Many uploads that stop one byte short: only what the budget allows is
/// held, the rest are refused at once with `503` and `Retry-After`, memory
/// stays bounded, and a small request still goes through.
#[test]
fn half_sent_bodies_stay_within_the_buffer_budget() {
    let upstream = upstream();
    let gateway = start(
        &upstream,
        &["--max-body", "1000000", "--max-buffered", "2MiB"],
    );
    let admin = gateway.admin.clone().unwrap();
    assert_eq!(legitimate(&gateway, "warm-up"), 201);
    let before = rss_kib(gateway.child.id());

    let crowd = 48;
    let almost = vec![b'x'; DECLARED - 1];
    let mut connections = Vec::new(); // held open until the end
    for n in 0..crowd {
        let mut stream = connect(&gateway);
        let head = format!(
            "POST /deployments HTTP/1.1\r\nHost: gateway\r\nIdempotency-Key: half-{n}\r\nContent-Length: {DECLARED}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        // A refused upload may be closed on us mid-write: that is the point.
        let _ = stream.write_all(&almost);
        connections.push(stream);
    }
    // Two bodies fit in 2 MiB; every other upload is refused.
    wait_until("the crowd is sorted into held and refused", || {
        let text = metrics(&admin);
        sample(
            &text,
            "idempotency_gateway_requests_total{outcome=\"overloaded\"}",
        ) == f64::from(crowd - 2)
            && sample(&text, "idempotency_gateway_buffered_bytes") == (2 * DECLARED) as f64
    });
    let after = rss_kib(gateway.child.id());
    // Unbounded, the crowd would pin 48 MB of bodies.
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert_eq!(legitimate(&gateway, "legitimate"), 201);

    // What an upload over the budget is told (a fresh one that sends only
    // its head: the answer comes before the body).
    let mut probe = connect(&gateway);
    probe
        .write_all(
            format!("POST /deployments HTTP/1.1\r\nHost: gateway\r\nIdempotency-Key: probe\r\nContent-Length: {DECLARED}\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let refused = read_answer(&mut probe);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    assert!(
        refused.contains("urn:idempotency-gateway:problem:overloaded"),
        "{refused}"
    );
    drop(connections);
    assert_eq!(upstream.requests().len(), 2, "warm-up and legitimate only");
}

/// A body that stops arriving is answered `408` after `--body-timeout`,
/// and its budget is returned.
#[test]
fn a_stalled_body_is_408_and_frees_its_budget() {
    let upstream = upstream();
    let gateway = start(&upstream, &["--body-timeout", "1s"]);
    let mut stream = connect(&gateway);
    stream
        .write_all(b"POST /deployments HTTP/1.1\r\nHost: gateway\r\nIdempotency-Key: stall\r\nContent-Length: 100\r\n\r\n{\"half\":")
        .unwrap();
    let answer = read_all(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("urn:idempotency-gateway:problem:body-timeout"),
        "{answer}"
    );
    let text = metrics(gateway.admin.as_ref().unwrap());
    assert_eq!(sample(&text, "idempotency_gateway_buffered_bytes"), 0.0);
    assert!(upstream.requests().is_empty());
}

/// A client still uploading when the gateway answers (here a body over
/// `--max-body`, declared or chunked) reads that answer, not a reset or a
/// broken pipe: the unread rest of the body is read and thrown away, and
/// the connection then serves the next request. Nothing is forwarded.
#[test]
fn an_upload_answered_before_its_end_still_reads_its_answer() {
    let upstream = upstream();
    let gateway = start(&upstream, &["--max-body", "1MiB"]);
    let client = http();
    for n in 0..20 {
        let body = if n % 2 == 0 {
            reqwest::Body::from(vec![b'x'; 4_000_000])
        } else {
            reqwest::Body::wrap_stream(futures_util::stream::iter(
                (0..40).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 100_000]))),
            ))
        };
        let answer = runtime()
            .block_on(
                client
                    .post(format!("{}/deployments", gateway.url))
                    .header("idempotency-key", format!("large-{n}"))
                    .body(body)
                    .send(),
            )
            .unwrap_or_else(|error| panic!("upload {n}: an error, not the answer: {error:?}"));
        let (status, problem) = runtime().block_on(problem(answer));
        assert_eq!(status, 413, "upload {n}");
        assert_eq!(problem["type"], "urn:idempotency-gateway:problem:too-large");
    }
    assert!(upstream.requests().is_empty(), "nothing was forwarded");
    // One connection: the refused upload, then a request that is served
    // (raw, since a client library may itself close after an early answer).
    let mut stream = connect(&gateway);
    let mut writer = stream.try_clone().unwrap();
    let uploading = std::thread::spawn(move || {
        writer.write_all(
            b"POST /deployments HTTP/1.1\r\nHost: gateway\r\nIdempotency-Key: large\r\nContent-Length: 4000000\r\n\r\n",
        )?;
        writer.write_all(&vec![b'x'; 4_000_000])
    });
    let refused = read_answer(&mut stream);
    assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");
    uploading
        .join()
        .unwrap()
        .expect("the whole body was taken, no reset");
    stream
        .write_all(b"POST /deployments HTTP/1.1\r\nHost: gateway\r\nIdempotency-Key: after-the-large-one\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    let served = read_answer(&mut stream);
    assert!(served.starts_with("HTTP/1.1 201"), "{served}");
    assert_eq!(upstream.requests().len(), 1);
}

/// A client that is answered before its body and then sends nothing is
/// not read on forever: its connection is closed `--body-timeout` after
/// its request's head.
#[test]
fn an_answered_upload_that_stops_is_closed_at_the_body_timeout() {
    let upstream = upstream();
    let gateway = start(&upstream, &["--max-body", "1KiB", "--body-timeout", "1s"]);
    let mut stream = connect(&gateway);
    stream
        .write_all(b"POST /deployments HTTP/1.1\r\nHost: gateway\r\nIdempotency-Key: stops\r\nContent-Length: 1000000\r\n\r\n")
        .unwrap();
    let answer = read_answer(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Then the gateway closes (EOF), well before the 30 s read timeout.
    let mut byte = [0u8; 1];
    assert!(
        matches!(stream.read(&mut byte), Ok(0)),
        "the connection was closed by the gateway"
    );
    assert!(upstream.requests().is_empty());
}

/// A request head larger than 64 KiB, or with more than 100 header
/// fields, is answered `431` and not forwarded, over HTTP/1.1 and HTTP/2
/// alike; one just below the size is served. Over HTTP/1.1 the head also
/// bounds each connection's read buffer.
#[test]
fn a_request_head_over_64_kib_is_431() {
    let upstream = upstream();
    let gateway = start(&upstream, &[]);
    let many: String = (0..101).map(|n| format!("X-Field-{n}: {n}\r\n")).collect();
    for (extra, expected) in [
        (
            format!("X-Padding: {}\r\n", "a".repeat(60 * 1024)),
            "HTTP/1.1 201",
        ),
        (
            format!("X-Padding: {}\r\n", "a".repeat(70 * 1024)),
            "HTTP/1.1 431",
        ),
        (many, "HTTP/1.1 431"),
    ] {
        let mut stream = connect(&gateway);
        let request = format!(
            "POST /deployments HTTP/1.1\r\nHost: gateway\r\nIdempotency-Key: head-{}\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}",
            extra.len()
        );
        let _ = stream.write_all(request.as_bytes());
        let answer = read_answer(&mut stream);
        assert!(answer.starts_with(expected), "{}: {answer}", extra.len());
    }
    let http2 = http2();
    for (padding, expected) in [(60 * 1024, 201), (70 * 1024, 431)] {
        let answer = runtime()
            .block_on(
                http2
                    .post(format!("{}/deployments", gateway.url))
                    .header("idempotency-key", format!("h2-head-{padding}"))
                    .header("x-padding", "a".repeat(padding))
                    .body("{}")
                    .send(),
            )
            .unwrap();
        assert_eq!(answer.status(), expected, "HTTP/2, {padding}");
    }
    assert_eq!(upstream.requests().len(), 2, "only the smaller ones");
}

#[test]
fn a_slowloris_crowd_is_refused_then_cut_off() {
    let upstream = upstream();
    let gateway = start(
        &upstream,
        &["--max-connections", "16", "--header-timeout", "1s"],
    );
    let admin = gateway.admin.clone().unwrap();
    let mut crowd: Vec<TcpStream> = (0..16).map(|_| slow_head(&gateway)).collect();
    wait_until("the crowd holds every connection", || {
        sample(&metrics(&admin), "idempotency_gateway_connections_open") == 16.0
    });
    // Over the limit: refused at once, with a reason and a time to retry.
    assert_refused_by_the_connection_limit(&gateway, "over-the-limit");
    assert!(upstream.requests().is_empty(), "nothing was forwarded");
    // The header timeout closes every slow connection.
    for stream in &mut crowd {
        let mut byte = [0u8; 1];
        assert!(
            closed_by_peer(stream.read(&mut byte)),
            "closed by the gateway"
        );
    }
    wait_until("the crowd's connections are gone", || {
        sample(&metrics(&admin), "idempotency_gateway_connections_open") == 0.0
    });
    assert_eq!(legitimate(&gateway, "after-the-crowd"), 201);
    let text = metrics(&admin);
    assert!(sample(&text, "idempotency_gateway_connections_refused_total") >= 1.0);
}

/// At `--max-connections`, a crowd of connections in no request gives way
/// to new ones, the one idle the longest first: those that sent nothing
/// since they connected, then those idle after an answer. Each new
/// connection is served, none refused, and the crowd's connections are
/// closed in that order.
#[test]
fn a_crowd_of_idle_connections_gives_way_to_new_ones_oldest_first() {
    let upstream = upstream();
    let gateway = start(&upstream, &["--max-connections", "16"]);
    let admin = gateway.admin.clone().unwrap();
    let silent: Vec<TcpStream> = (0..8).map(|_| connect(&gateway)).collect();
    wait_until_open(&gateway, 8.0, "the silent half of the crowd is in");
    // A POST with `key` on a new connection, answered `201`; the
    // connection, kept open.
    let served = |key: String| {
        let mut stream = connect(&gateway);
        let request = format!(
            "POST /deployments HTTP/1.1\r\nHost: gateway\r\nIdempotency-Key: {key}\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let answer = read_answer(&mut stream);
        assert!(answer.starts_with("HTTP/1.1 201"), "{key}: {answer}");
        stream
    };
    let idle: Vec<TcpStream> = (0..8).map(|n| served(format!("idle-{n}"))).collect();
    wait_until_open(&gateway, 16.0, "the crowd holds every place");

    let closed = |crowd: &[TcpStream]| {
        crowd
            .iter()
            .map(|stream| {
                stream.set_nonblocking(true).unwrap();
                let gone = closed_by_peer((&*stream).read(&mut [0u8; 1]));
                stream.set_nonblocking(false).unwrap();
                gone
            })
            .collect::<Vec<bool>>()
    };
    // New connections, each kept open after its answer.
    let mut new = Vec::new();
    for round in 0..2 {
        new.extend((0..8).map(|n| served(format!("new-{round}-{n}"))));
        wait_until_open(&gateway, 16.0, "each new connection took one place");
        let expected_idle_closed = round == 1;
        assert_eq!(
            closed(&silent),
            [true; 8],
            "round {round}: the silent went first"
        );
        assert_eq!(
            closed(&idle),
            [expected_idle_closed; 8],
            "round {round}: then the idle"
        );
    }
    let text = metrics(&admin);
    assert_eq!(
        sample(&text, "idempotency_gateway_connections_reused_total"),
        16.0
    );
    assert_eq!(
        sample(&text, "idempotency_gateway_connections_refused_total"),
        0.0
    );
    gateway.log_line_with("closed the connection idle the longest to make room");
}

/// Connections over the limit are answered by a bounded number of tasks:
/// while 32 silent ones wait to send a request (up to a second each), one
/// more is closed unanswered, and each of the 32 still gets its `503`.
#[test]
fn connections_being_refused_are_bounded() {
    let upstream = upstream();
    let gateway = start(&upstream, &["--max-connections", "1"]);
    let admin = gateway.admin.clone().unwrap();
    let _held = slow_head(&gateway);
    wait_until("the only place is taken", || {
        sample(&metrics(&admin), "idempotency_gateway_connections_open") == 1.0
    });
    const REQUEST: &[u8] =
        b"POST /deployments HTTP/1.1\r\nHost: gateway\r\nIdempotency-Key: late\r\nContent-Length: 2\r\n\r\n{}";
    // Each of the 32 is given a second; a machine that stalls longer than
    // that frees their places, so such a round proves nothing: run again.
    for round in 0..5 {
        let refused_before = sample(
            &metrics(&admin),
            "idempotency_gateway_connections_refused_total",
        );
        let mut waiting: Vec<TcpStream> = (0..32).map(|_| connect(&gateway)).collect();
        let mut one_more = connect(&gateway);
        wait_until("all 33 were accepted and refused", || {
            sample(
                &metrics(&admin),
                "idempotency_gateway_connections_refused_total",
            ) == refused_before + 33.0
        });
        let _ = one_more.write_all(REQUEST);
        let unanswered = read_all(&mut one_more);
        let answers: Vec<String> = waiting
            .iter_mut()
            .map(|stream| {
                let _ = stream.write_all(REQUEST);
                read_all(stream)
            })
            .collect();
        if answers.iter().any(String::is_empty) {
            eprintln!("round {round}: a waiting connection's second ran out; again");
            continue;
        }
        assert_eq!(unanswered, "", "the 33rd is closed unanswered");
        for answer in &answers {
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
            assert!(answer.contains("too-many-connections"), "{answer}");
        }
        assert!(upstream.requests().is_empty());
        return;
    }
    panic!("no round ran within a second");
}

/// The admin listener has limits of its own: 16 connections at most (the
/// 17th is closed at once), and a half-sent request head is cut off by
/// `--header-timeout`; then it serves again.
#[test]
fn the_admin_listener_is_limited_too() {
    let upstream = upstream();
    let gateway = start(&upstream, &["--header-timeout", "3s"]);
    let admin = gateway.admin.clone().unwrap();
    let connect_admin = || {
        let stream = TcpStream::connect(&admin).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    };
    let mut crowd: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut stream = connect_admin();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
                .unwrap();
            stream
        })
        .collect();
    // Each of the 16 is being served (it has sent part of a head), so a
    // 17th has no place: closed before it can send anything.
    let mut late = connect_admin();
    let _ = late.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n");
    assert_eq!(read_all(&mut late), "", "the 17th is closed unanswered");
    // The header timeout closes every half-sent head.
    for stream in &mut crowd {
        let mut byte = [0u8; 1];
        assert!(
            closed_by_peer(stream.read(&mut byte)),
            "closed by the gateway"
        );
    }
    drop(crowd);
    wait_until("the admin listener serves again", || {
        let mut stream = connect_admin();
        let _ =
            stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        read_all(&mut stream).starts_with("HTTP/1.1 200")
    });
}

/// Clients that send a forward and hang up at once: each forward goes on
/// without its client, and holds its connection's place under
/// `--max-connections` until it is done, so hanging up cannot pile up
/// forwards (and upstream connections) past the limit. Once the forward is
/// recorded the place is free again.
#[test]
fn a_forward_whose_client_hung_up_still_counts_against_max_connections() {
    let (upstream, entered, release) =
        support::held_upstream(Response::new(201).body("{\"deployment\":1}"));
    let gateway = start(&upstream, &["--max-connections", "1"]);
    let admin = gateway.admin.clone().unwrap();
    let mut stream = connect(&gateway);
    stream
        .write_all(
            b"POST /deployments HTTP/1.1\r\nHost: gateway\r\nIdempotency-Key: hung-up\r\nContent-Length: 2\r\n\r\n{}",
        )
        .unwrap();
    support::wait_entered(&entered);
    drop(stream);
    wait_until("the client's connection is gone", || {
        sample(&metrics(&admin), "idempotency_gateway_connections_open") == 0.0
    });
    let text = metrics(&admin);
    assert_eq!(
        sample(&text, "idempotency_gateway_forwards_in_flight"),
        1.0,
        "the forward goes on without its client"
    );
    // No connection is open, but the forward holds the only place.
    assert_refused_by_the_connection_limit(&gateway, "while-hung-up");
    release.send(()).unwrap();
    gateway.log_line_with("the client went away before the answer");
    wait_until("the forward is done", || {
        sample(&metrics(&admin), "idempotency_gateway_forwards_in_flight") == 0.0
    });
    // The place is free: the retry is served, and replayed.
    let retry = post(&http(), &gateway, "hung-up").unwrap();
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(upstream.requests().len(), 1, "the upstream acted once");
}

/// `prlimit` (util-linux), found on the test's own PATH: the gateway's
/// command runs with a cleared environment.
fn prlimit() -> std::path::PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("prlimit"))
        .find(|path| path.is_file())
        .expect("prlimit (util-linux) on PATH")
}

/// A process allowed fewer descriptors than `--max-connections` needs
/// lowers the limit to what it can hold and says so. Connections past it,
/// while a crowd of slow request heads holds every place, are refused with
/// `503` at once: none waits unanswered in the listen
/// queue because `accept` ran out of descriptors, and the log is not
/// flooded with failed accepts. Without the lowering, the crowd below
/// exhausts the 160 descriptors and the late connections hang.
#[test]
fn a_descriptor_limit_below_max_connections_lowers_it_and_keeps_refusals_prompt() {
    let upstream = upstream();
    let mut command = Command::new(prlimit());
    command
        .arg("--nofile=160:160")
        .arg(assert_cmd::cargo::cargo_bin("idempotency-gateway"))
        .args(["--listen", "127.0.0.1:0", "--upstream", &upstream.url("")])
        .args(["--store", "memory", "--admin-listen", "127.0.0.1:0"])
        .env_clear()
        .stderr(Stdio::piped());
    let gateway = Gateway::spawn(command);
    let startup = gateway.startup.join("\n");
    // (160 - 64 kept for the rest - 32 for refusals) / 2 per connection.
    assert!(
        startup.contains("--max-connections is lowered from 4096 to 32")
            && startup.contains("ulimit -n"),
        "{startup}"
    );
    assert!(startup.contains("max_connections=32"), "{startup}");
    let admin = gateway.admin.clone().unwrap();
    let slow: Vec<TcpStream> = (0..32).map(|_| slow_head(&gateway)).collect();
    wait_until("the slow crowd holds every connection", || {
        sample(&metrics(&admin), "idempotency_gateway_connections_open") == 32.0
    });
    for _ in 0..150 {
        let mut late = connect(&gateway);
        late.write_all(b"GET /deployments HTTP/1.1\r\nHost: gateway\r\n\r\n")
            .unwrap();
        let refused = read_all(&mut late);
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused:?}");
    }
    drop(slow);
    wait_until("the slow crowd's connections are gone", || {
        sample(&metrics(&admin), "idempotency_gateway_connections_open") == 0.0
    });
    assert_eq!(legitimate(&gateway, "after-the-crowd"), 201);
    assert_eq!(
        upstream.requests().len(),
        1,
        "only the request after the crowd"
    );
    while let Ok(line) = gateway.log.try_recv() {
        assert!(!line.contains("accept failed"), "{line}");
    }
}

/// Sends `head` a byte every 100 ms (a slowloris); whether the gateway
/// closed the connection before the last byte.
fn trickle(stream: &mut TcpStream, head: &[u8]) -> bool {
    stream.set_nonblocking(true).unwrap();
    for byte in head {
        if stream.write_all(&[*byte]).is_err() {
            return true;
        }
        let mut buffer = [0u8; 64];
        if matches!(stream.read(&mut buffer), Ok(0)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A slowloris that trickles header bytes is not kept alive by them: the
/// header timeout counts from the start of the head.
#[test]
fn trickled_headers_do_not_outlast_the_header_timeout() {
    let upstream = upstream();
    let gateway = start(&upstream, &["--header-timeout", "1s"]);
    let mut stream = connect(&gateway);
    let head = b"POST /deployments HTTP/1.1\r\nHost: gateway\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    // One byte every 100 ms would take 11 s; the gateway must close first.
    assert!(
        trickle(&mut stream, head),
        "the trickling connection outlived the header timeout"
    );
}

/// A keep-alive connection with nothing in progress is closed after
/// `--idle-timeout`.
#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let upstream = upstream();
    let gateway = start(&upstream, &["--idle-timeout", "1s"]);
    let mut stream = connect(&gateway);
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 201");
    // Then nothing: the gateway closes the connection by itself.
    let rest = read_all(&mut stream);
    assert!(
        rest.contains("deployment"),
        "the answer arrived whole: {rest}"
    );
    wait_until_open(&gateway, 0.0, "the idle connection is closed");
}

/// The wait between two requests of a keep-alive connection is
/// `--idle-timeout`'s, and a later request head still has `--header-timeout`
/// from its first byte. (hyper's header timer ran from the end of each
/// request, so idle connections were closed after the header timeout.)
#[test]
fn a_keep_alive_connection_waits_by_the_idle_timeout_and_a_later_head_by_the_header_timeout() {
    let upstream = upstream();
    let gateway = start(
        &upstream,
        &["--header-timeout", "1s", "--idle-timeout", "20s"],
    );
    let request = b"GET /status HTTP/1.1\r\nHost: gateway\r\n\r\n";
    let mut stream = connect(&gateway);
    stream.write_all(request).unwrap();
    assert!(read_answer(&mut stream).starts_with("HTTP/1.1 201"));
    // Three header timeouts of silence: the connection must still be open.
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut byte = [0u8; 1];
    let waited = stream.read(&mut byte);
    assert!(
        matches!(&waited, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "closed while idle, before --idle-timeout: {waited:?}"
    );
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request).unwrap();
    assert!(
        read_answer(&mut stream).starts_with("HTTP/1.1 201"),
        "the same connection serves its next request"
    );
    // A later head trickled a byte every 100 ms (about 6 s in all, bytes
    // moving all along, so never idle) is cut off 1 s after its first byte.
    let head = b"GET /status HTTP/1.1\r\nHost: gateway\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaa";
    assert!(
        trickle(&mut stream, head),
        "the trickled later head outlived the header timeout"
    );
}

/// A partial head that came in one write with the request before it
/// (pipelined) is not held open for good: with no byte moving, the idle
/// watchdog closes its connection, after the earlier request is answered.
#[test]
fn a_pipelined_partial_head_is_closed_by_the_idle_timeout() {
    let upstream = upstream();
    let gateway = start(
        &upstream,
        &["--header-timeout", "1s", "--idle-timeout", "2s"],
    );
    let mut stream = connect(&gateway);
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: gateway\r\n\r\nGET /partial HTTP/1.1\r\nHo")
        .unwrap();
    let answer = read_all(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    wait_until_open(&gateway, 0.0, "the connection is closed");
}

/// Ten thousand idle keep-alive connections, scaled down: the crowd holds
/// memory while it is open (each connection its read and write buffers),
/// and once it has gone that memory goes back to the system within
/// seconds, rather than staying at the crowd's peak for the life of the
/// process.
#[test]
fn a_crowd_of_idle_connections_gives_its_memory_back_when_it_leaves() {
    let crowd: u32 = 1000;
    // The test's own end of every connection, beside the other tests'.
    rlimit::increase_nofile_limit(u64::from(4 * crowd)).unwrap();
    let upstream = upstream();
    let gateway = start(&upstream, &[]);
    let admin = gateway.admin.clone().unwrap();
    let open = || sample(&metrics(&admin), "idempotency_gateway_connections_open");
    assert_eq!(legitimate(&gateway, "warm-up"), 201);
    let before = rss_kib(gateway.child.id());

    let connections: Vec<TcpStream> = (0..crowd)
        .map(|_| {
            let mut stream = connect(&gateway);
            stream
                .write_all(b"GET /status HTTP/1.1\r\nHost: gateway\r\n\r\n")
                .unwrap();
            let answer = read_answer(&mut stream);
            assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
            stream
        })
        .collect();
    wait_until("the crowd holds its connections", || {
        open() == f64::from(crowd)
    });
    let held = rss_kib(gateway.child.id()).saturating_sub(before);
    assert!(
        held > 8 * 1024,
        "the crowd held {held} KiB, too little to tell whether it comes back"
    );

    drop(connections);
    wait_until("the crowd's connections are gone", || open() == 0.0);
    wait_until("the crowd's memory is back with the system", || {
        rss_kib(gateway.child.id()) < before + held / 4
    });
    assert_eq!(legitimate(&gateway, "after-the-crowd"), 201);
}

/// HTTP/2 (prior knowledge): the gateway advertises `--max-streams`, and
/// the body budget holds across the streams of one connection.
#[test]
fn http2_streams_are_limited_and_share_the_budget() {
    let upstream = upstream();
    let gateway = start(
        &upstream,
        &[
            "--max-streams",
            "8",
            "--max-body",
            "1000000",
            "--max-buffered",
            "2MiB",
        ],
    );
    let admin = gateway.admin.clone().unwrap();
    let url = gateway.url.clone();
    let (advertised, statuses) = runtime().block_on(async move {
        let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
            .await
            .unwrap();
        let (client, mut connection) = h2::client::handshake(tcp).await.unwrap();
        // Drive the connection, publishing the peer's stream limit after
        // each poll (h2 reports `usize::MAX` until the peer's SETTINGS).
        let (seen, mut limit) = tokio::sync::watch::channel(usize::MAX);
        tokio::spawn(futures_util::future::poll_fn(move |cx| {
            let polled = std::pin::Pin::new(&mut connection).poll(cx);
            seen.send_replace(connection.max_concurrent_send_streams());
            polled
        }));
        let mut client = client.ready().await.unwrap();
        let mut streams = Vec::new();
        for n in 0..8 {
            let request = axum::http::Request::post(format!("{url}/deployments"))
                .header("idempotency-key", format!("stream-{n}"))
                .header("content-length", DECLARED.to_string())
                .body(())
                .unwrap();
            client = client.ready().await.unwrap();
            let (response, mut body) = client.send_request(request, false).unwrap();
            // A fifth of the body, then nothing: the upload stays open.
            // A stream the gateway has already refused may be reset by
            // now (it answers on the headers), so a failed send is no
            // fault here: the statuses below are what the test asserts.
            let _ = body.send_data(bytes::Bytes::from(vec![b'x'; DECLARED / 5]), false);
            streams.push((response, body));
        }
        // Six refusals arrive; the two held uploads never answer.
        let mut pending: futures_util::stream::FuturesUnordered<_> =
            streams
                .into_iter()
                .map(|(response, _body)| async move {
                    (response.await.map(|r| r.status().as_u16()), _body)
                })
                .collect();
        let mut statuses = Vec::new();
        while statuses.len() < 6 {
            let next = tokio::time::timeout(
                Duration::from_secs(30),
                futures_util::StreamExt::next(&mut pending),
            );
            let (status, body) = next.await.expect("six refusals").unwrap();
            statuses.push(status.unwrap());
            drop(body);
        }
        let still_open = pending.len();
        std::mem::forget(pending);
        assert_eq!(still_open, 2);
        // The connection task publishes after its poll returns, which may
        // be just after the answers were handed over: wait for it.
        let advertised = tokio::time::timeout(
            Duration::from_secs(30),
            limit.wait_for(|limit| *limit != usize::MAX),
        )
        .await
        .expect("the gateway's SETTINGS were applied")
        .map(|limit| *limit)
        .unwrap();
        (advertised, statuses)
    });
    assert_eq!(advertised, 8);
    assert_eq!(statuses, vec![503; 6], "two uploads fit in the budget");
    let text = metrics(&admin);
    assert_eq!(
        sample(
            &text,
            "idempotency_gateway_requests_total{outcome=\"overloaded\"}"
        ),
        6.0
    );
    assert!(upstream.requests().is_empty());
}

/// HTTP/2 "rapid reset" (CVE-2023-44487): a connection that opens streams
/// and cancels each at once is closed by the gateway long before it has
/// opened 20,000, the upstream is not flooded with the cancelled
/// requests, and everyone else is still served.
#[test]
fn an_http2_rapid_reset_flood_is_cut_off() {
    let upstream = upstream();
    let gateway = start(&upstream, &[]);
    let url = gateway.url.clone();
    let opened = runtime().block_on(async move {
        let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
            .await
            .unwrap();
        let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        for n in 0..20_000 {
            client = match client.ready().await {
                Ok(client) => client,
                Err(_) => return n,
            };
            let request = axum::http::Request::get(format!("{url}/deployments?{n}"))
                .body(())
                .unwrap();
            match client.send_request(request, false) {
                Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
                Err(_) => return n,
            }
        }
        20_000
    });
    assert!(opened < 20_000, "the flood was never cut off");
    assert!(
        upstream.requests().len() < 100,
        "{} cancelled requests reached the upstream",
        upstream.requests().len()
    );
    assert_eq!(legitimate(&gateway, "after-the-flood"), 201);
}

/// HTTP/2 lets one connection carry many forwards; upstream requests in
/// flight, all connections and streams together, stop at
/// `--max-connections`, so each connection's descriptor has at most one
/// upstream descriptor beside it. Past it, forwards and pass-throughs alike
/// are answered `503` with `Retry-After` and nothing is sent.
#[test]
fn upstream_requests_in_flight_stop_at_max_connections_across_http2_streams() {
    let upstream = Server::start(|_| Reply::Hang);
    let gateway = start(&upstream, &["--max-connections", "2"]);
    let admin = gateway.admin.clone().unwrap();
    let url = gateway.url.clone();
    let runtime = runtime();
    let client = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
            .await
            .unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        client
    });
    let send = |method: &str, key: Option<&str>| {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(format!("{url}/deployments"));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let (response, _) = runtime
            .block_on(client.clone().ready())
            .unwrap()
            .send_request(request.body(()).unwrap(), true)
            .unwrap();
        response
    };
    // Two forwards the upstream never answers hold both places.
    let held: Vec<_> = ["held-1", "held-2"]
        .into_iter()
        .map(|key| send("POST", Some(key)))
        .collect();
    wait_until("both forwards reach the upstream", || {
        upstream.requests().len() == 2
    });
    for (method, key) in [("POST", Some("third")), ("GET", None)] {
        let response = send(method, key);
        let response = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(30), response).await })
            .expect("refused at once")
            .unwrap();
        assert_eq!(response.status(), 503, "{method}");
        assert_eq!(response.headers()["retry-after"], "1", "{method}");
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = runtime.block_on(body.data()) {
            text.extend_from_slice(&chunk.unwrap());
        }
        let problem: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(
            problem["type"], "urn:idempotency-gateway:problem:too-many-upstream-requests",
            "{method}"
        );
    }
    assert_eq!(upstream.requests().len(), 2, "nothing more was sent");
    let text = metrics(&admin);
    assert_eq!(
        sample(
            &text,
            "idempotency_gateway_requests_total{outcome=\"overloaded\"}"
        ),
        2.0
    );
    drop((held, client, runtime));
}

/// The place an upstream request takes is given back when it is done: with
/// room for one, requests one after another (pass-throughs, whose answer
/// body holds the place while it streams, and forwards) are all served.
#[test]
fn one_upstream_place_serves_requests_one_after_another() {
    use http_body_util::BodyExt;
    let upstream = upstream();
    let gateway = start(&upstream, &["--max-connections", "1"]);
    let address = address(&gateway);
    // One HTTP/1.1 connection for every request (a pooling client may open
    // a second before the first is back in its pool, and the only
    // connection place would refuse it).
    runtime().block_on(async {
        let mut sender = one_connection(&address).await;
        let mut send = async |request: hyper::Request<String>| {
            sender.ready().await.unwrap();
            let answer = sender.send_request(request).await.unwrap();
            let status = answer.status().as_u16();
            let body = answer.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        };
        for n in 0..3 {
            let get = hyper::Request::get("/deployments")
                .header("host", &address)
                .body(String::new())
                .unwrap();
            let (status, body) = send(get).await;
            assert_eq!(status, 201, "pass-through {n}: {body}");
            assert_eq!(body, "{\"deployment\":1}");
            let post = hyper::Request::post("/deployments")
                .header("host", &address)
                .header("idempotency-key", format!("one-place-{n}"))
                .body("{}".to_owned())
                .unwrap();
            let (status, body) = send(post).await;
            assert_eq!(status, 201, "forward {n}: {body}");
        }
    });
    assert_eq!(upstream.requests().len(), 6);
}

/// Replays of a large stored answer to clients that do not read it: each
/// holds its answer's bytes against a `--max-buffered` of their own until
/// they are written, so past it a replay is `503` with `Retry-After`, while
/// uploads, which have their own, go on; and a connection whose answer does
/// not move is dropped after `--idle-timeout` (twice), which gives the
/// budget back without the client's help. (Before, 150 such replays of an
/// 8 MiB answer held 1.2 GB, and each connection was held for good.)
#[test]
fn replays_to_clients_that_do_not_read_stay_within_their_budget_and_are_dropped() {
    const ANSWER: usize = 4 << 20;
    let upstream = Server::start(|_| Reply::Respond(Response::new(201).body("a".repeat(ANSWER))));
    let gateway = start(
        &upstream,
        &[
            "--max-body",
            "5MiB",
            "--max-buffered",
            "10MiB",
            "--idle-timeout",
            "1s",
        ],
    );
    let admin = gateway.admin.clone().unwrap();
    let whole = |key: &str, body: Vec<u8>| whole(&gateway, key, body);
    assert_eq!(whole("large", b"{}".to_vec()), (201, false, ANSWER));
    let request = "POST /deployments HTTP/1.1\r\nHost: gateway\r\nIdempotency-Key: large\r\nContent-Length: 2\r\n\r\n{}";
    let mut statuses = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..4 {
        // A small receive window, never read: the answer stays unwritten.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let address: std::net::SocketAddr = address(&gateway).parse().unwrap();
        socket.connect(&address.into()).unwrap();
        let mut stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut status = [0u8; 12];
        stream.read_exact(&mut status).unwrap();
        statuses.push(String::from_utf8_lossy(&status[9..]).into_owned());
        readers.push(stream);
    }
    assert_eq!(
        statuses,
        ["201", "201", "503", "503"],
        "two answers fit in 10 MiB"
    );
    let text = metrics(&admin);
    assert!(sample(&text, "idempotency_gateway_replaying_bytes") >= (2 * ANSWER) as f64);
    assert_eq!(sample(&text, "idempotency_gateway_buffered_bytes"), 0.0);
    // An upload as large as the unread answers left room for is not
    // refused: request bodies have a budget of their own.
    assert_eq!(whole("upload", vec![b'u'; ANSWER]), (201, false, ANSWER));
    // The readers stay open and read nothing; the gateway lets them go.
    wait_until("the unread answers' connections are dropped", || {
        let text = metrics(&admin);
        sample(&text, "idempotency_gateway_replaying_bytes") == 0.0
            && sample(&text, "idempotency_gateway_connections_open") == 0.0
    });
    for mut reader in readers {
        let mut rest = Vec::new();
        let end = reader.read_to_end(&mut rest);
        assert!(
            end.is_err() || rest.len() < ANSWER,
            "the unread answer was cut off"
        );
    }
    assert_eq!(whole("large", b"{}".to_vec()), (201, true, ANSWER));
    assert_eq!(upstream.requests().len(), 2, "the upload and the first");
}

/// A crowd that asks at once for the replay of a large stored answer: the
/// answer is read from the store only once its room in the replayed
/// answers' budget is held, so the gateway's peak memory grows by about
/// that budget, not by the answer once per request. (Before, a claim read
/// the whole record first: 400 such replays of an 8 MiB answer took the
/// gateway on SQLite to a peak of 3.3 GB, with the default budget.)
#[test]
fn a_crowd_of_replays_of_a_large_answer_reads_it_within_the_budget() {
    const ANSWER: usize = 4 << 20;
    const CROWD: usize = 200;
    let upstream = Server::start(|_| Reply::Respond(Response::new(201).body("a".repeat(ANSWER))));
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("records.db").display());
    let gateway = Gateway::start(
        &upstream,
        &[
            "--store",
            &store,
            "--admin-listen",
            "127.0.0.1:0",
            "--max-body",
            "5MiB",
            "--max-buffered",
            "9MiB",
        ],
    );
    let admin = gateway.admin.clone().unwrap();
    let request = "POST /deployments HTTP/1.1\r\nHost: gateway\r\nIdempotency-Key: large\r\nContent-Length: 2\r\n\r\n{}";
    // The forward, then one replay read whole: the answer's own copies.
    for replayed in [false, true] {
        let mut stream = connect(&gateway);
        stream.write_all(request.as_bytes()).unwrap();
        let mut head = vec![0u8; 4096];
        let n = stream.read(&mut head).unwrap();
        let head = String::from_utf8_lossy(&head[..n]).to_lowercase();
        assert!(head.starts_with("http/1.1 201"), "{head}");
        assert_eq!(head.contains("idempotent-replayed: true"), replayed);
    }
    let before = peak_rss_kib(gateway.child.id());
    // The crowd: every request sent before any answer is read, and then
    // none read (a small receive window), so answers stay held.
    let mut crowd: Vec<TcpStream> = (0..CROWD)
        .map(|_| {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let address: std::net::SocketAddr = address(&gateway).parse().unwrap();
            socket.connect(&address.into()).unwrap();
            let stream: TcpStream = socket.into();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            stream
        })
        .collect();
    for stream in &mut crowd {
        stream.write_all(request.as_bytes()).unwrap();
    }
    let mut statuses = std::collections::BTreeMap::new();
    for stream in &mut crowd {
        let mut status = [0u8; 12];
        stream.read_exact(&mut status).unwrap();
        *statuses
            .entry(String::from_utf8_lossy(&status[9..]).into_owned())
            .or_insert(0) += 1;
    }
    // Two answers (and their headers) fit in the 9 MiB budget at a time;
    // the rest are told to come back.
    assert_eq!(statuses.get("201"), Some(&2), "{statuses:?}");
    assert_eq!(statuses.get("503"), Some(&(CROWD - 2)), "{statuses:?}");
    let grown = peak_rss_kib(gateway.child.id()).saturating_sub(before);
    assert!(
        grown < 64 << 10,
        "the crowd raised the gateway's peak resident size by {grown} KiB"
    );
    drop(crowd);
    wait_until("the held answers are let go", || {
        sample(&metrics(&admin), "idempotency_gateway_replaying_bytes") == 0.0
    });
    assert_eq!(upstream.requests().len(), 1);
}

/// The largest answer that can be stored, with its headers, is replayed
/// when `--max-buffered` is no larger than `--max-body`: its room is the
/// body's, which the budget always holds.
#[test]
fn an_answer_as_large_as_max_body_is_replayed_with_max_buffered_at_that_size() {
    const ANSWER: usize = 1 << 20;
    let upstream = Server::start(|_| {
        Reply::Respond(
            Response::new(201)
                .header("x-padding", &"p".repeat(8 << 10))
                .body("a".repeat(ANSWER)),
        )
    });
    let gateway = start(&upstream, &["--max-body", "1MiB", "--max-buffered", "1MiB"]);
    for replayed in [false, true] {
        assert_eq!(
            whole(&gateway, "largest", b"{}".to_vec()),
            (201, replayed, ANSWER)
        );
    }
    assert_eq!(upstream.requests().len(), 1);
}

/// A flood of fresh keys against the memory store: once its records reach
/// `--memory-max-bytes`, new keys get a `503` problem and are not
/// forwarded, and the keys already stored are still replayed.
#[test]
fn a_flood_of_fresh_keys_stops_at_the_memory_store_bound() {
    let upstream = upstream();
    let gateway = start(&upstream, &["--memory-max-bytes", "64KiB"]);
    let admin = gateway.admin.clone().unwrap();
    let client = http();
    let (mut accepted, mut refused) = (0usize, 0u32);
    for n in 0..500 {
        let answer = post(&client, &gateway, &format!("flood-{n}")).unwrap();
        match answer.status().as_u16() {
            201 => accepted += 1,
            503 => {
                assert_eq!(answer.headers()["retry-after"], "60");
                let (kind, detail) = refusal(answer);
                assert_eq!(kind, "urn:idempotency-gateway:problem:store-full");
                assert!(detail.contains("--memory-max-bytes"), "{detail}");
                refused += 1;
            }
            other => panic!("key {n}: status {other}"),
        }
    }
    // Each record is counted at a few hundred bytes: some hundreds fit.
    assert!((50..400).contains(&accepted), "{accepted} accepted");
    assert_eq!(accepted + refused as usize, 500);
    assert_eq!(
        upstream.requests().len(),
        accepted,
        "a refused key was not forwarded"
    );
    let text = metrics(&admin);
    assert_eq!(
        sample(
            &text,
            "idempotency_gateway_requests_total{outcome=\"overloaded\"}"
        ),
        f64::from(refused)
    );
    assert!(sample(&text, "idempotency_gateway_memory_store_bytes") >= 65_536.0);
    // The first key is still replayed, without another forward.
    let replay = post(&client, &gateway, "flood-0").unwrap();
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(upstream.requests().len(), accepted);
    // The operator is told once, when the store fills, not per refusal.
    let warning = "the memory store holds --memory-max-bytes";
    gateway.log_line_with(warning);
    loop {
        let line = gateway.log_line_with("");
        assert!(!line.contains(warning), "warned again: {line}");
        if line.contains("outcome=\"replayed\"") {
            break;
        }
    }
}

/// A full disk fails closed: once SQLite cannot write, a new key is
/// answered `503` and not forwarded; every key that was answered from the
/// upstream is, asked again, replayed or (its answer could not be stored)
/// `409`, and never forwarded again. The disk fills here by a file size
/// limit on the gateway process (`RLIMIT_FSIZE`, `SIGXFSZ` ignored): its
/// writes past the limit fail as they do on a full disk, without a
/// filesystem to fill.
#[test]
fn a_full_disk_fails_closed_on_sqlite() {
    let upstream = upstream();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("records.db").display());
    let mut command = Gateway::command(&upstream, &["--store", &store]);
    #[allow(unsafe_code)]
    // SAFETY: between fork and exec only async-signal-safe calls
    // (setrlimit, signal) on the child's own process.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            let limit = libc::rlimit {
                rlim_cur: 256 << 10,
                rlim_max: 256 << 10,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0
                || libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let gateway = Gateway::spawn(command);
    let client = http();
    let (mut answered, mut refused) = (Vec::new(), 0);
    // Each forward writes a few KiB of WAL: the limit is reached within a
    // few hundred keys.
    for n in 0..2_000 {
        let key = format!("full-{n}");
        let answer = post(&client, &gateway, &key).unwrap();
        match answer.status().as_u16() {
            201 => answered.push(key),
            503 => {
                let (kind, detail) = refusal(answer);
                assert_eq!(kind, "urn:idempotency-gateway:problem:store-unavailable");
                assert!(detail.contains("not forwarded"), "{detail}");
                refused += 1;
                if refused == 5 {
                    break;
                }
            }
            other => panic!("key {n}: status {other}"),
        }
    }
    assert_eq!(refused, 5, "the disk filled");
    assert_eq!(
        upstream.requests().len(),
        answered.len(),
        "a refused key was not forwarded"
    );
    for key in &answered {
        let again = post(&client, &gateway, key).unwrap();
        match again.status().as_u16() {
            201 => assert_eq!(again.headers()["idempotent-replayed"], "true", "{key}"),
            409 => {}
            other => panic!("{key} asked again: status {other}"),
        }
    }
    assert_eq!(
        upstream.requests().len(),
        answered.len(),
        "no key was forwarded twice"
    );
}

/// Redis at `maxmemory` with `noeviction` (what the README asks for) fails
/// closed too: its writes are refused, so a new key is answered `503` and
/// not forwarded, and the keys stored before are still replayed, by this
/// gateway and by one started since, without another forward.
#[test]
fn a_full_redis_fails_closed() {
    let upstream = upstream();
    let redis = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let gateway = Gateway::start(&upstream, &["--store", &redis.url()]);
    let client = http();
    for n in 0..20 {
        let answer = post(&client, &gateway, &format!("stored-{n}")).unwrap();
        assert_eq!(answer.status(), 201);
    }
    // Full from here on: every write is over the limit.
    assert_eq!(redis.command("CONFIG SET maxmemory 1"), "+OK");
    for n in 0..5 {
        let answer = post(&client, &gateway, &format!("refused-{n}")).unwrap();
        assert_eq!(answer.status(), 503, "key {n}");
        let (kind, _) = refusal(answer);
        assert_eq!(kind, "urn:idempotency-gateway:problem:store-unavailable");
    }
    assert_eq!(
        upstream.requests().len(),
        20,
        "a refused key was not forwarded"
    );
    // A second gateway has nothing in its memory: its replays read Redis.
    let fresh = Gateway::start(&upstream, &["--store", &redis.url()]);
    for gateway in [&gateway, &fresh] {
        for n in 0..20 {
            let replay = post(&client, gateway, &format!("stored-{n}")).unwrap();
            assert_eq!(replay.status(), 201);
            assert_eq!(replay.headers()["idempotent-replayed"], "true");
        }
    }
    assert_eq!(upstream.requests().len(), 20);
}
