//! The gateway binary as a child process, started on a free loopback port
//! in front of a test upstream, and the HTTP client the tests use on it.

use super::Server;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Gateway {
    pub child: Child,
    pub url: String,
    pub admin: Option<String>,
    /// The log lines before "ready", and "ready" itself.
    pub startup: Vec<String>,
    /// Every log line after "ready", as it arrives.
    pub log: mpsc::Receiver<String>,
}

impl Gateway {
    /// Starts the binary and waits for its "ready" log line.
    pub fn start(upstream: &Server, args: &[&str]) -> Self {
        Self::spawn(Self::command(upstream, args))
    }

    /// Starts it on `store` with `password` in a `--store-password-file`
    /// of its own; the gateway and that file (in a directory that lives as
    /// long as the returned guard), to rewrite.
    pub fn with_password_file(
        upstream: &Server,
        store: &str,
        password: &str,
    ) -> (Self, std::path::PathBuf, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("store-password");
        std::fs::write(&file, format!("{password}\n")).unwrap();
        let file_arg = file.display().to_string();
        let gateway = Self::start(
            upstream,
            &["--store", store, "--store-password-file", &file_arg],
        );
        (gateway, file, dir)
    }

    /// The command [`Gateway::start`] runs, to adjust before [`Gateway::spawn`].
    pub fn command(upstream: &Server, args: &[&str]) -> Command {
        Self::command_for(&upstream.url(""), args)
    }

    /// The command for an `--upstream` given as a URL (with a path prefix).
    pub fn command_for(upstream: &str, args: &[&str]) -> Command {
        let mut command = Command::new(assert_cmd::cargo::cargo_bin("idempotency-gateway"));
        command
            .args(["--listen", "127.0.0.1:0", "--upstream", upstream])
            .args(args)
            .env_clear()
            .stderr(Stdio::piped());
        command
    }

    /// Runs `command` and waits for the "ready" log line.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut startup = Vec::new();
        let ready = loop {
            let line = lines
                .next()
                .expect("the gateway exited before it was ready")
                .unwrap();
            startup.push(line.clone());
            if line.contains("idempotency-gateway ready") {
                break line;
            }
        };
        // Keep draining the log so the gateway never blocks on a full pipe.
        let (log_tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = log_tx.send(line);
            }
        });
        let field = |name: &str| {
            ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap()
                .to_owned()
        };
        let admin = Some(field("admin")).filter(|a| a != "off");
        Self {
            child,
            url: format!("http://{}", field("listen")),
            admin,
            startup,
            log,
        }
    }

    /// Runs a command that must not start a gateway: its exit code and its
    /// stderr. A gateway that reports ready instead is killed and the test
    /// fails (it would otherwise serve, and the test wait, forever).
    pub fn refused(mut command: Command) -> (Option<i32>, String) {
        let mut child = command.spawn().unwrap();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut stderr = String::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains("idempotency-gateway ready") => {
                    let _ = child.kill();
                    panic!("the gateway started:\n{stderr}{line}");
                }
                Ok(line) => stderr.push_str(&(line + "\n")),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    panic!("the gateway neither started nor exited:\n{stderr}");
                }
            }
        }
        (child.wait().unwrap().code(), stderr)
    }

    /// The next log line that contains `needle` (the wait is a safety net:
    /// it only turns a missing line into a failure).
    pub fn log_line_with(&self, needle: &str) -> String {
        loop {
            let line = self
                .log
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Every log line up to and including the `count`th that contains
    /// `needle` (the wait is a safety net, as in [`Self::log_line_with`]).
    pub fn log_lines_through(&self, needle: &str, count: usize) -> Vec<String> {
        let mut lines = Vec::new();
        let mut seen = 0;
        while seen < count {
            let line = self
                .log
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no log line {} with {needle:?}", seen + 1));
            seen += usize::from(line.contains(needle));
            lines.push(line);
        }
        lines
    }

    /// Asserts that the gateway warned at start-up that its clock is an
    /// hour `apart` (`"behind the Redis server's"`, `"ahead of the
    /// PostgreSQL server's"`) from its store server's.
    pub fn assert_warned_an_hour_apart(&self, apart: &str) {
        let startup = self.startup.join("\n");
        let warning = startup
            .lines()
            .find(|line| line.contains("clock is at least"))
            .unwrap_or_else(|| panic!("no warning about the clocks in {startup}"));
        assert!(warning.contains("WARN"), "{warning}");
        assert!(warning.contains(apart), "{warning}");
        let ms: u64 = warning
            .split("at least ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!((3_590_000..=3_600_000).contains(&ms), "{warning}");
    }

    pub fn signal(&self, signal: i32) {
        #[allow(unsafe_code)]
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0);
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs `{}` to `{url}/deployments` with `key`; the status, whether it
/// was a replay, and the body.
pub async fn post(url: &str, key: &str) -> (u16, bool, String) {
    try_post(url, key).await.unwrap()
}

/// [`post`], or the transport error (a gateway that closed the connection).
pub async fn try_post(url: &str, key: &str) -> Result<(u16, bool, String), reqwest::Error> {
    let response = http()
        .post(format!("{url}/deployments"))
        .header("idempotency-key", key)
        .body("{}")
        .send()
        .await?;
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    Ok((status, replayed, response.text().await?))
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A problem+json answer's status and body (it must be one).
pub async fn problem(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "status {status} is not a problem"
    );
    (
        status,
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(),
    )
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A client that speaks HTTP/2 with prior knowledge (h2c), as the gateway
/// serves it.
pub fn http2() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

/// Sends `request` as raw bytes on a new connection (no client library
/// that would normalise the target) and returns the whole answer as text,
/// read until the gateway closes (every request here sends
/// `Connection: close`).
pub fn raw(address: &str, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code of a raw HTTP/1.1 answer.
pub fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// The admin listener's `/metrics` text.
pub fn metrics(admin: &str) -> String {
    runtime().block_on(async {
        http()
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}

/// The admin listener's `/readyz`: its status, and the reason it gives.
pub fn readyz(admin: &str) -> (u16, String) {
    runtime().block_on(async {
        let answer = http()
            .get(format!("http://{admin}/readyz"))
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    })
}

/// A sample's value in a `/metrics` text (0 when absent, as Prometheus
/// treats a counter never incremented).
pub fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `ready()` holds, checking every 20 ms; after 30 s the test
/// fails with `what` (a safety net, not a timing assumption).
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process's resident memory, from `/proc`.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A process's peak resident memory since it started, from `/proc`.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
}

/// A TCP load balancer on 127.0.0.1 for tests: each new connection goes to
/// the next backend in turn, bytes copied both ways.
pub struct RoundRobin {
    pub url: String,
}

impl RoundRobin {
    pub fn start(backends: Vec<String>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let backends: Vec<String> = backends
            .into_iter()
            .map(|b| b.trim_start_matches("http://").to_owned())
            .collect();
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { continue };
                let Ok(backend) = std::net::TcpStream::connect(&backends[n % backends.len()])
                else {
                    continue;
                };
                let (mut client_read, mut backend_write) =
                    (client.try_clone().unwrap(), backend.try_clone().unwrap());
                let (mut backend_read, mut client_write) = (backend, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client_read, &mut backend_write);
                    let _ = backend_write.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut backend_read, &mut client_write);
                    let _ = client_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Self { url }
    }
}

/// Runs the client against `url` with `key`, retrying the gateway's 409s
/// (a dead holder's lease still running) until the key turns "outcome
/// unknown": the client must then stop with exit 1 and a 502 carrying that
/// problem, never having made the gateway forward again.
pub fn retry_until_outcome_unknown(url: &str, key: &str) {
    let dir = tempfile::tempdir().unwrap();
    super::client()
        .envs(super::github_env(dir.path()))
        .args(["--url", &format!("{url}/deployments"), "--body", "{}"])
        .args(["--idempotency-key", key, "--retry-on-status", "409"])
        .args([
            "--retry-delay",
            "200ms",
            "--retry-max-delay",
            "400ms",
            "--max-attempts",
            "30",
        ])
        .assert()
        .code(1);
    let out = super::read_outputs(dir.path());
    assert_eq!(out["status"], "502");
    assert!(out["body"].contains("outcome-unknown"), "{}", out["body"]);
}
