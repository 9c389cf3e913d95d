//! A real `redis-server` on a free loopback port, started per test and
//! killed on drop. Fails (never skips) when redis-server is not installed:
//! `.ci/run` installs it.

use std::process::{Child, Command, Stdio};

pub struct RedisServer {
    pub port: u16,
    child: Child,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With extra `redis-server` arguments (`--requirepass`, …).
    pub fn start_with(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let extra: Vec<String> = extra.iter().map(|&a| a.to_owned()).collect();
        let child = Self::spawn(port, &extra);
        let server = Self { port, child, extra };
        server.wait_until_ready();
        server
    }

    fn spawn(port: u16, extra: &[String]) -> Child {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for these tests (apt-get install redis-server)")
    }

    /// A Redis Sentinel that watches nothing, its configuration file (which
    /// Sentinel rewrites) in `dir`. Not restartable.
    pub fn sentinel(dir: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("sentinel.conf");
        std::fs::write(&config, "").unwrap();
        let child = Command::new("redis-server")
            .arg(&config)
            .args([
                "--sentinel",
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server must be installed for these tests (apt-get install redis-server)",
            );
        let server = Self {
            port,
            child,
            extra: Vec::new(),
        };
        server.wait_until_ready();
        server
    }

    /// Starts a stopped server again on its port, empty (no persistence).
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.port, &self.extra);
        self.wait_until_ready();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Polls PING until the server answers (start-up has no other signal).
    fn wait_until_ready(&self) {
        use std::io::{Read, Write};
        for _ in 0..200 {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                // Any reply (PONG, or NOAUTH with a password) means it is up.
                let mut reply = [0u8; 1];
                if stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() {
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    /// Sends one inline command (`CLIENT PAUSE 3000 WRITE`); its first
    /// reply line.
    pub fn command(&self, command: &str) -> String {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }

    /// Sends one inline command after `AUTH password` on the same
    /// connection; the command's first reply line.
    pub fn command_as(&self, password: &str, command: &str) -> String {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .write_all(format!("AUTH {password}\r\n{command}\r\n").as_bytes())
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), "+OK", "AUTH");
        line.clear();
        reader.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
