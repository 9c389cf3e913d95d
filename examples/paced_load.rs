//! A rate-controlled load generator for the gateway benchmark (wrk2 is not
//! in the package registries this project may use).
//!
//! Open loop: request `i` is due at `start + i / rate`, whatever happened
//! to the ones before, and its latency is counted from when it was due, not
//! from when it could be sent, so a stall shows in every request it
//! delayed (no coordinated omission). Requests are spread round-robin over
//! `--connections` keep-alive HTTP/1.1 connections, each sending its share
//! in order. Every POST carries a fresh `Idempotency-Key` (`--keys
//! unique`), one key (`one`) or none (`--method GET`, `--keys none`).
//! `--rate 0` is a closed loop (each connection sends as soon as it has its
//! answer): what `scripts/bench-gateway.sh` runs beside wrk at saturation,
//! so the driver's own cost is known.
//!
//! `cargo run --release --example paced_load -- --url http://127.0.0.1:8080/deployments --rate 1000 --duration 8`
//!
//! Prints one line: `requests=… rps=… p50_us=… p99_us=… max_us=… errors=… non2xx=…`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Options {
    url: String,
    rate: f64,
    duration: Duration,
    connections: usize,
    keys: Keys,
    method: hyper::Method,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Keys {
    Unique,
    One,
    None,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        url: String::new(),
        rate: 1000.0,
        duration: Duration::from_secs(8),
        connections: 8,
        keys: Keys::Unique,
        method: hyper::Method::POST,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => options.url = value,
            "--rate" => options.rate = value.parse().map_err(|_| "--rate: a number")?,
            "--duration" => {
                let secs: f64 = value.parse().map_err(|_| "--duration: seconds")?;
                options.duration = Duration::from_secs_f64(secs);
            }
            "--connections" => {
                options.connections = value.parse().map_err(|_| "--connections: a number")?;
            }
            "--keys" => {
                options.keys = match value.as_str() {
                    "unique" => Keys::Unique,
                    "one" => Keys::One,
                    "none" => Keys::None,
                    _ => return Err("--keys: unique, one or none".into()),
                }
            }
            "--method" => {
                options.method = value.parse().map_err(|_| "--method: a method token")?;
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if options.url.is_empty() || options.connections == 0 {
        return Err("--url is required; --connections must be at least 1".into());
    }
    Ok(options)
}

#[derive(Default)]
struct Counts {
    errors: AtomicU64,
    non_2xx: AtomicU64,
}

fn main() {
    let options = match options() {
        Ok(options) => Arc::new(options),
        Err(e) => {
            eprintln!("paced_load: {e}");
            std::process::exit(2);
        }
    };
    // One thread, like `wrk -t1`: the driver takes at most one core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run(options));
}

/// Hands request `i` to connection `i % n` when it is due. A thread of its
/// own sleeping with `nanosleep` (timer slack 1 µs) is exact to tens of
/// microseconds; tokio's timer has millisecond ticks, which would make
/// every request late by up to a millisecond.
fn pace(
    rate: f64,
    start: Instant,
    end: Instant,
    schedules: Vec<tokio::sync::mpsc::UnboundedSender<(u64, Instant)>>,
) {
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes a plain integer and affects
    // only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1u64);
    }
    for i in 0u64.. {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if due >= end {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let connection = (i % schedules.len() as u64) as usize;
        if schedules[connection].send((i, due)).is_err() {
            break;
        }
    }
}

/// A keep-alive HTTP/1.1 connection to `authority`.
async fn connect(authority: &str) -> std::io::Result<http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn run(options: Arc<Options>) {
    let uri: hyper::Uri = options.url.parse().expect("--url is a URI");
    let authority = uri.authority().expect("--url has a host").clone();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let counts = Arc::new(Counts::default());
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + options.duration;
    let prefix = format!("paced-{}", std::process::id());
    let mut tasks = Vec::new();
    let mut schedules = Vec::new();
    for c in 0..options.connections {
        let mut sender = connect(authority.as_str())
            .await
            .expect("a connection to --url");
        let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
        schedules.push(due_tx);
        let options = options.clone();
        let counts = counts.clone();
        let (path, authority, prefix) = (path.clone(), authority.clone(), prefix.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c as u64;
            loop {
                let due = if options.rate > 0.0 {
                    match due_rx.recv().await {
                        Some((n, due)) => {
                            i = n;
                            due
                        }
                        None => break,
                    }
                } else {
                    tokio::time::sleep_until(start.into()).await;
                    Instant::now()
                };
                if due >= end {
                    break;
                }
                let mut request = Request::builder()
                    .method(options.method.clone())
                    .uri(&path)
                    .header("host", authority.as_str());
                match options.keys {
                    Keys::Unique => {
                        request = request.header("idempotency-key", format!("{prefix}-{i}"))
                    }
                    Keys::One => request = request.header("idempotency-key", "paced-one"),
                    Keys::None => {}
                }
                let body = if options.method == hyper::Method::GET {
                    Bytes::new()
                } else {
                    request = request.header("content-type", "application/json");
                    Bytes::from_static(br#"{"ref":"v1"}"#)
                };
                let request = request.body(Full::new(body)).expect("a request");
                // A server may close a keep-alive connection after some
                // requests (nginx: keepalive_requests); open another, as wrk does.
                if sender.ready().await.is_err() {
                    match connect(authority.as_str()).await {
                        Ok(fresh) => sender = fresh,
                        Err(_) => {
                            counts.errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                match sender.send_request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let whole = response.into_body().collect().await;
                        if whole.is_err() {
                            counts.errors.fetch_add(1, Ordering::Relaxed);
                        } else if !status.is_success() {
                            counts.non_2xx.fetch_add(1, Ordering::Relaxed);
                        }
                        latencies.push(due.elapsed().as_micros() as u64);
                    }
                    Err(_) => {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += options.connections as u64;
            }
            latencies
        }));
    }
    if options.rate > 0.0 {
        let rate = options.rate;
        std::thread::spawn(move || pace(rate, start, end, schedules));
    } else {
        drop(schedules);
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a connection task"));
    }
    let elapsed = start.elapsed().min(options.duration).as_secs_f64();
    all.sort_unstable();
    let at = |q: f64| {
        all.get(((all.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "requests={} rps={:.0} p50_us={} p99_us={} max_us={} errors={} non2xx={}",
        all.len(),
        all.len() as f64 / elapsed,
        at(0.50),
        at(0.99),
        all.last().copied().unwrap_or(0),
        counts.errors.load(Ordering::Relaxed),
        counts.non_2xx.load(Ordering::Relaxed),
    );
}
