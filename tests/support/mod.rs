//! Test support: a scriptable HTTP/1.1 server on 127.0.0.1 for fault
//! injection (answer, drop the connection, reset it, or never answer), an
//! idempotent toy that counts side effects, TLS certificates generated per
//! test, and a runner for the real binary with a clean environment.
#![allow(dead_code)] // Each test file uses a different part of this module.

#[cfg(all(feature = "gateway", unix))]
pub mod gateway;
#[cfg(feature = "gateway")]
pub mod jwt;
pub mod markdown;
#[cfg(unix)]
pub mod postgres;
pub mod redis;
pub mod relay;
pub mod tls;

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// An upstream that counts its calls and answers call `n` with
/// `201 {"deployment":n}` and a session cookie of its own.
pub fn counting() -> (Server, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let server = Server::start(move |_| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        Reply::Respond(
            Response::new(201)
                .header("content-type", "application/json")
                .header("set-cookie", &format!("session=for-call-{n}"))
                .body(format!("{{\"deployment\":{n}}}")),
        )
    });
    (server, calls)
}

/// An upstream that reports each request on `entered` and answers
/// `201 {"deployment":n}` after `delay`.
pub fn slow_upstream(delay: std::time::Duration) -> (Server, std::sync::mpsc::Receiver<()>) {
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let entered_tx = Mutex::new(entered_tx);
    let count = Arc::new(Mutex::new(0));
    let server = Server::start(move |_| {
        let _ = entered_tx.lock().unwrap().send(());
        let mut n = count.lock().unwrap();
        *n += 1;
        Reply::Delay(
            delay,
            Response::new(201)
                .header("content-type", "application/json")
                .body(format!("{{\"deployment\":{n}}}")),
        )
    });
    (server, entered)
}

/// An upstream that reports each request on `entered` and holds it until
/// the test sends on `release` (or 30 s pass, so a broken test fails
/// instead of hanging), then answers `response`.
pub fn held_upstream(
    response: Response,
) -> (
    Server,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let (entered_tx, release_rx) = (Mutex::new(entered_tx), Mutex::new(release_rx));
    let server = Server::start(move |_| {
        entered_tx.lock().unwrap().send(()).unwrap();
        release_rx
            .lock()
            .unwrap()
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap();
        Reply::Respond(response.clone())
    });
    (server, entered, release)
}

/// Waits for the upstream to receive the request; a broken test fails
/// here instead of hanging.
pub fn wait_entered(entered: &std::sync::mpsc::Receiver<()>) {
    entered
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the upstream never received the request");
}

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The first MiB of the body.
    pub body: Vec<u8>,
    pub body_len: u64,
    pub body_sha256: [u8; 32],
    pub received_at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response to send.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// What the server does with a request.
#[derive(Debug, Clone)]
pub enum Reply {
    Respond(Response),
    /// Close the connection without answering.
    Drop,
    /// Close the connection with a TCP reset.
    Reset,
    /// Never answer; wait until the client gives up and closes.
    Hang,
    /// Send the status line, headers and part of the body, then close.
    Truncate(Response),
    /// Answer after a delay (a slow upstream; other connections go on).
    Delay(std::time::Duration, Response),
    /// Send these bytes as they are (a broken or non-HTTP answer), then close.
    Raw(Vec<u8>),
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A running server; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    connections: Arc<AtomicUsize>,
    scheme: &'static str,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Server {
    /// Starts a plain HTTP server.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        Self::spawn(None, Arc::new(handler))
    }

    /// Starts an HTTPS server with `config`.
    pub fn start_tls(
        config: Arc<rustls::ServerConfig>,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::spawn(
            Some(tokio_rustls::TlsAcceptor::from(config)),
            Arc::new(handler),
        )
    }

    fn spawn(tls: Option<tokio_rustls::TlsAcceptor>, handler: Handler) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (reqs, conns) = (requests.clone(), connections.clone());
        let scheme = if tls.is_some() { "https" } else { "http" };
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        conns.fetch_add(1, Ordering::SeqCst);
                        let (handler, reqs, tls) = (handler.clone(), reqs.clone(), tls.clone());
                        tokio::spawn(async move {
                            let raw = stream.into_std().unwrap();
                            let reset_handle = raw.try_clone().unwrap();
                            let stream = tokio::net::TcpStream::from_std(raw).unwrap();
                            match tls {
                                Some(acceptor) => {
                                    if let Ok(stream) = acceptor.accept(stream).await {
                                        serve(stream, reset_handle, handler, reqs).await;
                                    }
                                }
                                None => serve(stream, reset_handle, handler, reqs).await,
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Self {
            addr,
            requests,
            connections,
            scheme,
            _stop: stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    reset_handle: std::net::TcpStream,
    handler: Handler,
    requests: Arc<Mutex<Vec<Request>>>,
) {
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buffer).await else {
            return;
        };
        requests.lock().unwrap().push(request.clone());
        match handler(&request) {
            Reply::Respond(response) => {
                if stream.write_all(&encode(&response, None)).await.is_err() {
                    return;
                }
                let _ = stream.flush().await;
            }
            Reply::Truncate(response) => {
                let keep = response.body.len() / 2;
                let _ = stream.write_all(&encode(&response, Some(keep))).await;
                let _ = stream.flush().await;
                return;
            }
            Reply::Delay(delay, response) => {
                tokio::time::sleep(delay).await;
                if stream.write_all(&encode(&response, None)).await.is_err() {
                    return;
                }
                let _ = stream.flush().await;
            }
            Reply::Raw(bytes) => {
                let _ = stream.write_all(&bytes).await;
                let _ = stream.flush().await;
                return;
            }
            Reply::Drop => return,
            Reply::Reset => {
                socket2::SockRef::from(&reset_handle)
                    .set_linger(Some(std::time::Duration::ZERO))
                    .unwrap();
                return;
            }
            Reply::Hang => {
                // Wait for the client to close its side: no timer involved.
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
        }
    }
}

fn encode(response: &Response, keep_body: Option<usize>) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} X\r\n", response.status).into_bytes();
    for (name, value) in &response.headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", response.body.len()).as_bytes());
    let keep = keep_body.unwrap_or(response.body.len());
    out.extend_from_slice(&response.body[..keep]);
    out
}

/// Reads one request; the body is hashed as it streams in (constant memory).
async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
) -> Option<Request> {
    let head_end = loop {
        if let Some(pos) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    buffer.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    assert!(
        !headers.iter().any(|(n, _)| n == "transfer-encoding"),
        "the client must send a Content-Length, not chunked encoding"
    );
    let len: u64 = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut hasher = Sha256::new();
    let mut body = Vec::new();
    let mut remaining = len;
    let mut chunk = vec![0u8; 256 * 1024];
    while remaining > 0 {
        if buffer.is_empty() {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        let take = (remaining as usize).min(buffer.len());
        hasher.update(&buffer[..take]);
        let room = (1usize << 20).saturating_sub(body.len());
        body.extend_from_slice(&buffer[..take.min(room)]);
        buffer.drain(..take);
        remaining -= take as u64;
    }
    Some(Request {
        method,
        path,
        headers,
        body,
        body_len: len,
        body_sha256: hasher.finalize().into(),
        received_at: Instant::now(),
    })
}

/// What the idempotent toy does right after it performed an operation for
/// the first time.
#[derive(Debug, Clone, Copy)]
pub enum AfterCommit {
    Answer,
    Drop,
    Hang,
}

/// An idempotent endpoint: performs each key's operation once (counting it)
/// and replays the stored response, marked `Idempotent-Replayed: true`.
#[derive(Default)]
pub struct Toy {
    pub effects: AtomicUsize,
    stored: Mutex<HashMap<String, Response>>,
}

impl Toy {
    pub fn handler(
        self: &Arc<Self>,
        after_commit: AfterCommit,
    ) -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
        let toy = self.clone();
        move |request| {
            let Some(key) = request.header("idempotency-key").map(str::to_owned) else {
                return Reply::Respond(Response::new(400).body("missing key"));
            };
            let mut stored = toy.stored.lock().unwrap();
            if let Some(response) = stored.get(&key) {
                return Reply::Respond(response.clone().header("Idempotent-Replayed", "true"));
            }
            let n = toy.effects.fetch_add(1, Ordering::SeqCst) + 1;
            let response = Response::new(201)
                .header("content-type", "application/json")
                .body(format!("{{\"deployment\":{n}}}"));
            stored.insert(key, response.clone());
            match after_commit {
                AfterCommit::Answer => Reply::Respond(response),
                AfterCommit::Drop => Reply::Drop,
                AfterCommit::Hang => Reply::Hang,
            }
        }
    }

    pub fn effects(&self) -> usize {
        self.effects.load(Ordering::SeqCst)
    }
}

/// A FIFO named `name` in `dir`, which nobody writes to: opening it for
/// reading in blocking mode would wait forever.
pub fn fifo(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let fifo = dir.join(name);
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", fifo.display());
    fifo
}

/// The binary under test with an empty environment (no CI variables, no
/// proxies leak in from the host).
pub fn client() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("idempotent-request").unwrap();
    cmd.env_clear();
    cmd
}

/// The environment of a GitHub Actions step, with fresh output files in `dir`.
pub fn github_env(dir: &std::path::Path) -> Vec<(String, String)> {
    [
        ("GITHUB_ACTIONS", "true".to_owned()),
        ("GITHUB_SERVER_URL", "https://github.com".to_owned()),
        ("GITHUB_REPOSITORY", "acme/app".to_owned()),
        ("GITHUB_REPOSITORY_ID", "4242".to_owned()),
        ("GITHUB_RUN_ID", "1000001".to_owned()),
        ("GITHUB_RUN_ATTEMPT", "1".to_owned()),
        ("GITHUB_JOB", "deploy".to_owned()),
        ("GITHUB_ACTION", "create".to_owned()),
        ("GITHUB_OUTPUT", dir.join("output").display().to_string()),
        (
            "GITHUB_STEP_SUMMARY",
            dir.join("summary").display().to_string(),
        ),
        ("RUNNER_TEMP", dir.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Reads the outputs file the way the runner does.
pub fn read_outputs(dir: &std::path::Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(dir.join("output")).unwrap_or_default();
    idempotent_request::client::report::outputs::parse_like_runner(&text)
        .expect("the runner would accept the outputs file")
        .into_iter()
        .collect()
}

/// The workflow commands the runner would act on in `text` (a step's
/// stdout and stderr), by name, in order: lines are split and read the way
/// the runner does, and nothing between `::stop-commands::TOKEN` and
/// `::TOKEN::` counts.
pub fn runner_commands(text: &str) -> Vec<String> {
    use idempotent_request::shared::outside_text::{command_like_runner, lines_like_runner};
    let mut commands = Vec::new();
    let mut stopped: Option<String> = None;
    for line in lines_like_runner(text) {
        let Some(name) = command_like_runner(line) else {
            continue;
        };
        match &stopped {
            Some(token) if name == *token => stopped = None,
            Some(_) => {}
            None => {
                if name == "stop-commands" {
                    let token = line.trim_start().split("::").nth(2).unwrap_or_default();
                    stopped = Some(token.to_owned());
                }
                commands.push(name);
            }
        }
    }
    commands
}

/// Both streams of a finished run, as the runner reads them.
pub fn both_streams(assert: &assert_cmd::assert::Assert) -> String {
    let output = assert.get_output();
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Fails when the runner would act on any command but masks and
/// annotations this program writes (`add-mask`, `error`, `warning`, and the
/// `stop-commands` fence around server text).
pub fn assert_only_own_commands(text: &str) {
    for name in runner_commands(text) {
        assert!(
            ["add-mask", "error", "warning", "stop-commands"].contains(&name.as_str()),
            "the runner would act on `{name}`:\n{text}"
        );
    }
}
