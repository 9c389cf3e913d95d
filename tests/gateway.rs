//! The gateway end to end, in process: a real listener on 127.0.0.1 in
//! front of a scriptable upstream, a manual clock for expiry, real HTTP.
#![cfg(feature = "gateway")]

use crate::support;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use idempotent_request::gateway::Limits;
use idempotent_request::gateway::clock::ManualClock;
use idempotent_request::gateway::proxy::{Gateway, Settings};
use idempotent_request::gateway::store::AnyStore;
use idempotent_request::gateway::store::memory::MemoryStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::gateway::problem;
use support::{Reply, Response, Server, held_upstream};

struct Running {
    url: String,
    clock: Arc<ManualClock>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn settings(upstream: &Server) -> Settings {
    let mut settings = Settings::new(upstream.url("").parse().unwrap());
    settings.ttl = Duration::from_secs(3600);
    settings.lock_timeout = Duration::from_secs(5);
    settings.upstream_timeout = Duration::from_secs(2);
    settings.max_body = 1 << 20;
    settings
}

async fn start(settings: Settings, store: AnyStore) -> Running {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let gateway = Arc::new(Gateway::new(settings, store, clock.clone()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(idempotent_request::gateway::serve(
        gateway,
        listener,
        None,
        async move {
            let _ = stopped.await;
        },
        Limits {
            shutdown_timeout: Duration::from_secs(5),
            ..Limits::default()
        },
    ));
    Running {
        url,
        clock,
        _stop: stop,
    }
}

async fn start_memory(upstream: &Server) -> Running {
    start(settings(upstream), AnyStore::Memory(MemoryStore::default())).await
}

/// One client for the whole test binary: building one loads the platform's
/// certificate store, which is slow in a debug build.
fn client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder().no_proxy().build().unwrap()
        })
        .clone()
}

async fn post(url: &str, key: &str, body: &str) -> reqwest::Response {
    client()
        .post(url)
        .header("idempotency-key", key)
        .header("authorization", "Bearer alice")
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

fn created(n: usize) -> Response {
    Response::new(201)
        .header("content-type", "application/json")
        .body(format!("{{\"deployment\":{n}}}"))
}

/// An upstream that counts calls and answers `created(n)`.
fn counting() -> (Server, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let server =
        Server::start(move |_| Reply::Respond(created(counter.fetch_add(1, Ordering::SeqCst) + 1)));
    (server, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_duplicates_reach_the_upstream_once() {
    // The upstream holds the one forwarded request until the test lets go.
    let (upstream, entered_rx, release_tx) = held_upstream(created(1));
    let mut s = settings(&upstream);
    s.upstream_timeout = Duration::from_secs(20);
    s.lock_timeout = Duration::from_secs(30);
    let gw = start(s, AnyStore::Memory(MemoryStore::default())).await;
    let url = format!("{}/deployments", gw.url);
    let mut pending: FuturesUnordered<_> = (0..100).map(|_| post(&url, "dup-1", "{}")).collect();
    let mut conflicts = 0;
    while conflicts < 99 {
        let response = pending.next().await.unwrap();
        assert_eq!(response.status(), 409);
        assert_eq!(response.headers()["retry-after"], "1");
        conflicts += 1;
    }
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(Duration::from_secs(30)).unwrap())
        .await
        .unwrap();
    release_tx.send(()).unwrap();
    let winner = pending.next().await.unwrap();
    assert_eq!(winner.status(), 201);
    assert!(winner.headers().get("idempotent-replayed").is_none());
    // A client retrying its 409 gets the stored answer.
    let retried = post(&url, "dup-1", "{}").await;
    assert_eq!(retried.status(), 201);
    assert_eq!(retried.headers()["idempotent-replayed"], "true");
    assert_eq!(retried.text().await.unwrap(), "{\"deployment\":1}");
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_adds_its_time_in_the_store_to_the_upstreams_age() {
    let upstream = Server::start(|request| {
        let age = match request.path.as_str() {
            "/cached" => "100",
            "/huge" => "99999999999999999999",
            _ => "soon",
        };
        Reply::Respond(Response::new(201).header("age", age).body("{}"))
    });
    let gw = start_memory(&upstream).await;
    for (path, first_age, replayed_age) in [
        ("/cached", "100", "107"),
        ("/huge", "99999999999999999999", "2147483648"),
        ("/invalid", "soon", "7"),
    ] {
        let url = format!("{}{path}", gw.url);
        let key = format!("age{path}");
        let first = post(&url, &key, "{}").await;
        assert_eq!(first.headers()["age"], first_age, "{path}: passed through");
        gw.clock.advance(7_400);
        let replay = post(&url, &key, "{}").await;
        let ages: Vec<_> = replay.headers().get_all("age").iter().collect();
        assert_eq!(ages, [replayed_age], "{path}: one Age");
    }
    assert_eq!(upstream.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_byte_identical() {
    let body: Vec<u8> = vec![0x1f, 0x8b, 0x08, 0x00, 0xff, 0x00, 0x10, 0x80];
    let answer = Response::new(201)
        .header("content-encoding", "gzip")
        .header("set-cookie", "a=1; Path=/")
        .header("x-request-id", "r-1")
        .header("date", "Tue, 01 Dec 2026 08:00:00 GMT")
        .header("set-cookie", "b=2; Path=/")
        .body(body.clone());
    let upstream = Server::start(move |_| Reply::Respond(answer.clone()));
    let gw = start_memory(&upstream).await;
    let url = format!("{}/deployments", gw.url);
    let headers = |r: &reqwest::Response| -> Vec<(String, Vec<u8>)> {
        r.headers()
            .iter()
            .filter(|(n, _)| !["age", "idempotent-replayed"].contains(&n.as_str()))
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    };
    let first = post(&url, "bytes-1", "{}").await;
    let (first_status, first_headers) = (first.status(), headers(&first));
    assert!(first.headers().get("age").is_none());
    let first_body = first.bytes().await.unwrap();
    gw.clock.advance(7_400);
    let replay = post(&url, "bytes-1", "{}").await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    // As an HTTP cache does: the stored Date (compared with the other
    // headers below), and Age in whole seconds since it was stored.
    assert_eq!(replay.headers()["age"], "7");
    assert_eq!(replay.status(), first_status);
    assert_eq!(headers(&replay), first_headers);
    assert_eq!(replay.headers()["date"], "Tue, 01 Dec 2026 08:00:00 GMT");
    let set_cookies: Vec<_> = replay.headers().get_all("set-cookie").iter().collect();
    assert_eq!(set_cookies, ["a=1; Path=/", "b=2; Path=/"]);
    assert_eq!(replay.bytes().await.unwrap(), first_body);
    assert_eq!(
        first_body.as_ref(),
        body.as_slice(),
        "content encoding passed through untouched"
    );
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_for_another_request_is_422() {
    let (upstream, calls) = counting();
    let gw = start_memory(&upstream).await;
    assert_eq!(
        post(&format!("{}/deployments", gw.url), "k-422", "{\"a\":1}")
            .await
            .status(),
        201
    );
    let (status, body) =
        problem(post(&format!("{}/deployments", gw.url), "k-422", "{\"a\":2}").await).await;
    assert_eq!(status, 422);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("different request")
    );
    let (status, _) = problem(post(&format!("{}/other", gw.url), "k-422", "{\"a\":1}").await).await;
    assert_eq!(status, 422);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bytes_with_another_content_coding_are_another_request() {
    // Bytes sent as gzip and the same bytes sent plain are two payloads: the
    // retry must not be given the first one's answer.
    let (upstream, calls) = counting();
    let gw = start_memory(&upstream).await;
    let url = format!("{}/deployments", gw.url);
    let send = |coding: Option<&'static str>| {
        let mut request = client()
            .post(&url)
            .header("idempotency-key", "k-coding")
            .header("authorization", "Bearer alice")
            .body(&b"\x1f\x8b\x08\x00"[..]);
        if let Some(coding) = coding {
            request = request.header("content-encoding", coding);
        }
        request.send()
    };
    assert_eq!(send(Some("gzip")).await.unwrap().status(), 201);
    assert_eq!(send(Some("gzip")).await.unwrap().status(), 201, "a replay");
    let (status, _) = problem(send(None).await.unwrap()).await;
    assert_eq!(status, 422);
    let (status, _) = problem(send(Some("br")).await.unwrap()).await;
    assert_eq!(status, 422);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_are_400_and_nothing_is_forwarded() {
    let (upstream, calls) = counting();
    let gw = start_memory(&upstream).await;
    let url = format!("{}/deployments", gw.url);
    for key in ["has space", "\"\"", "\"unterminated", &"k".repeat(256)] {
        let (status, _) = problem(post(&url, key, "{}").await).await;
        assert_eq!(status, 400, "{key:?}");
    }
    let twice = client()
        .post(&url)
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(twice).await.0, 400);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_and_bare_forms_are_the_same_key() {
    let (upstream, calls) = counting();
    let gw = start_memory(&upstream).await;
    let url = format!("{}/deployments", gw.url);
    assert_eq!(post(&url, "\"same-key\"", "{}").await.status(), 201);
    let second = post(&url, "same-key", "{}").await;
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_expire_after_the_ttl_and_replays_do_not_extend_it() {
    let (upstream, calls) = counting();
    let gw = start_memory(&upstream).await;
    let url = format!("{}/deployments", gw.url);
    assert_eq!(post(&url, "ttl-1", "{}").await.status(), 201);
    gw.clock.advance(3_599_000);
    assert_eq!(
        post(&url, "ttl-1", "{}").await.headers()["idempotent-replayed"],
        "true"
    );
    gw.clock.advance(1_000);
    let after = post(&url, "ttl-1", "{}").await;
    assert!(after.headers().get("idempotent-replayed").is_none());
    assert_eq!(after.text().await.unwrap(), "{\"deployment\":2}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_never_share_records() {
    let (upstream, calls) = counting();
    let gw = start_memory(&upstream).await;
    let url = format!("{}/deployments", gw.url);
    let as_caller = |token: &'static str| {
        client()
            .post(&url)
            .header("idempotency-key", "shared")
            .header("authorization", token)
            .body("{}")
            .send()
    };
    let alice = as_caller("Bearer alice").await.unwrap();
    let bob = as_caller("Bearer bob").await.unwrap();
    assert!(bob.headers().get("idempotent-replayed").is_none());
    assert_eq!(alice.text().await.unwrap(), "{\"deployment\":1}");
    assert_eq!(bob.text().await.unwrap(), "{\"deployment\":2}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_503_is_not_stored_and_500_is() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let upstream = Server::start(move |request| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        match (request.path.as_str(), n) {
            ("/busy", 0) => Reply::Respond(Response::new(503).body("busy")),
            ("/busy", _) => Reply::Respond(created(1)),
            _ => Reply::Respond(Response::new(500).body("boom")),
        }
    });
    let gw = start_memory(&upstream).await;
    assert_eq!(
        post(&format!("{}/busy", gw.url), "b-1", "{}")
            .await
            .status(),
        503
    );
    let retry = post(&format!("{}/busy", gw.url), "b-1", "{}").await;
    assert_eq!(
        retry.status(),
        201,
        "the retry after a 503 reaches the upstream"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        post(&format!("{}/fails", gw.url), "f-1", "{}")
            .await
            .status(),
        500
    );
    let replay = post(&format!("{}/fails", gw.url), "f-1", "{}").await;
    assert_eq!(replay.status(), 500);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.text().await.unwrap(), "boom");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout_is_outcome_unknown_and_never_resent() {
    let upstream = Server::start(|_| Reply::Hang);
    let mut settings = settings(&upstream);
    settings.upstream_timeout = Duration::from_millis(300);
    let gw = start(settings, AnyStore::Memory(MemoryStore::default())).await;
    let url = format!("{}/deployments", gw.url);
    let (status, body) = problem(post(&url, "t-1", "{}").await).await;
    assert_eq!(status, 502);
    assert_eq!(
        body["type"],
        "urn:idempotency-gateway:problem:outcome-unknown"
    );
    let (status, again) = problem(post(&url, "t-1", "{}").await).await;
    assert_eq!(status, 502);
    assert_eq!(again["detail"], body["detail"]);
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_after_acting_is_outcome_unknown() {
    let upstream = Server::start(|_| Reply::Reset);
    let gw = start_memory(&upstream).await;
    let url = format!("{}/deployments", gw.url);
    let (status, body) = problem(post(&url, "reset-1", "{}").await).await;
    assert_eq!(status, 502);
    assert_eq!(
        body["type"],
        "urn:idempotency-gateway:problem:outcome-unknown"
    );
    assert_eq!(problem(post(&url, "reset-1", "{}").await).await.0, 502);
    assert_eq!(upstream.requests().len(), 1);
}

/// An upstream that answers `101 Switching Protocols` to a request that
/// asked for no upgrade: had the request, so the outcome is unknown; the
/// 101 is neither returned nor stored, and a pass-through gets a `502`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unasked_protocol_switch_is_outcome_unknown() {
    let upstream =
        Server::start(|_| Reply::Respond(Response::new(101).header("upgrade", "websocket")));
    let gw = start_memory(&upstream).await;
    let url = format!("{}/deployments", gw.url);
    for _ in 0..2 {
        let (status, body) = problem(post(&url, "switch-1", "{}").await).await;
        assert_eq!(status, 502);
        assert_eq!(
            body["type"],
            "urn:idempotency-gateway:problem:outcome-unknown"
        );
        assert!(body["detail"].as_str().unwrap().contains("101"), "{body}");
    }
    assert_eq!(upstream.requests().len(), 1, "never re-sent");
    let passed = client().get(&url).send().await.unwrap();
    assert_eq!(passed.status(), 502);
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502_and_released() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = settings(&Server::start(|_| Reply::Drop));
    s.upstream = format!("http://127.0.0.1:{port}").parse().unwrap();
    let gw = start(s, AnyStore::Memory(MemoryStore::default())).await;
    let url = format!("{}/deployments", gw.url);
    let (status, body) = problem(post(&url, "u-1", "{}").await).await;
    assert_eq!(status, 502);
    assert_eq!(
        body["type"],
        "urn:idempotency-gateway:problem:upstream-unreachable"
    );
    // Released: the next attempt tries again rather than replaying.
    let (_, again) = problem(post(&url, "u-1", "{}").await).await;
    assert_eq!(
        again["type"],
        "urn:idempotency-gateway:problem:upstream-unreachable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_uncovered_requests() {
    let (upstream, calls) = counting();
    let mut s = settings(&upstream);
    s.max_body = 1024;
    s.require_key = true;
    let gw = start(s, AnyStore::Memory(MemoryStore::default())).await;
    let url = format!("{}/deployments", gw.url);
    let (status, _) = problem(post(&url, "big", &"x".repeat(2048)).await).await;
    assert_eq!(status, 413);
    let no_key = client().post(&url).body("{}").send().await.unwrap();
    assert_eq!(problem(no_key).await.0, 400);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // GET is not covered: passed through, every time.
    for _ in 0..2 {
        assert_eq!(client().get(&url).send().await.unwrap().status(), 201);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_larger_than_max_body_pass_once_then_502() {
    let upstream = Server::start(|_| Reply::Respond(Response::new(200).body(vec![b'z'; 4096])));
    let mut s = settings(&upstream);
    s.max_body = 1024;
    let gw = start(s, AnyStore::Memory(MemoryStore::default())).await;
    let url = format!("{}/export", gw.url);
    let first = post(&url, "large-1", "{}").await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.bytes().await.unwrap().len(), 4096);
    let (status, body) = problem(post(&url, "large-1", "{}").await).await;
    assert_eq!(status, 502);
    assert_eq!(
        body["type"],
        "urn:idempotency-gateway:problem:outcome-not-stored"
    );
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_and_headers_reach_the_upstream_but_hop_by_hop_do_not() {
    let (upstream, _) = counting();
    let gw = start_memory(&upstream).await;
    client()
        .post(format!("{}/deployments?env=prod", gw.url))
        .header("idempotency-key", "h-1")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("connection", "keep-alive")
        .body("{}")
        .send()
        .await
        .unwrap();
    let seen = &upstream.requests()[0];
    assert_eq!(seen.path, "/deployments?env=prod");
    assert_eq!(
        seen.header("traceparent"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(seen.header("idempotency-key"), Some("h-1"));
}
