//! A real PostgreSQL server per test: `initdb` into a temporary directory
//! and `postgres` on a free loopback port, run as `nobody` when the tests
//! run as root (the server refuses to run as root), killed on drop. Fails,
//! never skips, when PostgreSQL is not installed: `scripts/test.sh`
//! installs it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PostgresServer {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Option<Child>,
    /// The `gateway` user's password, when the server requires one.
    password: Option<String>,
}

/// Where `initdb` and `postgres` are: on PATH, or Debian's own directory.
fn binaries() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            let mut dirs: Vec<PathBuf> = entries
                .filter_map(|e| Some(e.ok()?.path().join("bin")))
                .collect();
            dirs.sort();
            dirs.reverse();
            dirs
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(debian)
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
        .expect("PostgreSQL (initdb, postgres) must be installed for these tests (apt-get install postgresql)")
}

#[allow(unsafe_code)]
fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

const NOBODY: u32 = 65534;

/// Gives a file to the server's user (when we are root).
fn owned_by_server(path: &Path) {
    if is_root() {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
}

/// A command that runs as `nobody` when we are root.
fn unprivileged(program: &Path) -> Command {
    let mut command = Command::new(program);
    if is_root() {
        command.uid(NOBODY).gid(NOBODY);
    }
    command.env_clear().env("LC_ALL", "C");
    command
}

/// How the test server differs from the plain default.
#[derive(Default)]
pub struct Options<'a> {
    /// Require this password (scram-sha-256) for the `gateway` user.
    pub password: Option<&'a str>,
    /// Serve TLS with this certificate and key (PEM).
    pub tls: Option<(&'a str, &'a str)>,
}

impl PostgresServer {
    pub fn start() -> Self {
        Self::start_with(&Options::default())
    }

    pub fn start_with(options: &Options<'_>) -> Self {
        let bin = binaries();
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let data = dir.path().join("data");
        let mut initdb = unprivileged(&bin.join("initdb"));
        initdb.args(["--no-sync", "--username=gateway", "--encoding=UTF8"]);
        match options.password {
            Some(password) => {
                let file = dir.path().join("password");
                std::fs::write(&file, password).unwrap();
                owned_by_server(&file);
                initdb.args(["--auth=scram-sha-256", "--pwfile"]).arg(&file);
            }
            None => {
                initdb.arg("--auth=trust");
            }
        }
        let output = initdb.arg("-D").arg(&data).output().unwrap();
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        if let Some((cert, key)) = options.tls {
            let (cert_file, key_file) = (data.join("server.crt"), data.join("server.key"));
            std::fs::write(&cert_file, cert).unwrap();
            std::fs::write(&key_file, key).unwrap();
            std::fs::set_permissions(
                &key_file,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .unwrap();
            owned_by_server(&cert_file);
            owned_by_server(&key_file);
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .unwrap();
            std::io::Write::write_all(
                &mut conf,
                b"ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            )
            .unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            port,
            dir,
            bin,
            child: None,
            password: options.password.map(str::to_owned),
        };
        server.resume();
        server
    }

    /// `postgres://gateway@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://gateway@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs each of `statements` as the `gateway` superuser (with its
    /// password, if it has one), one at a time (so `CREATE DATABASE` can be
    /// among them).
    #[cfg(feature = "gateway")]
    pub fn sql(&self, statements: &[&str]) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut config: tokio_postgres::Config = self.url().parse().unwrap();
            if let Some(password) = &self.password {
                config.password(password);
            }
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            for statement in statements {
                client.batch_execute(statement).await.unwrap();
            }
        });
    }

    /// Changes the `gateway` user's password (sessions already open stay
    /// logged in, as on any PostgreSQL server).
    #[cfg(feature = "gateway")]
    pub fn set_password(&mut self, password: &str) {
        self.sql(&[&format!("ALTER ROLE gateway PASSWORD '{password}'")]);
        self.password = Some(password.to_owned());
    }

    /// Starts the server again on the same data directory and port (after
    /// [`stop`](Self::stop) or [`kill`](Self::kill)), and waits until it
    /// accepts connections.
    pub fn resume(&mut self) {
        let child = unprivileged(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "max_connections=200",
                "-c",
                "fsync=off",
                "-c",
                "logging_collector=off",
            ])
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("log")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_until_ready();
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "PostgreSQL exited at start-up ({status}); its log: {}",
                    self.log()
                );
            }
            // The server's own word, in its log (truncated at each start).
            let ready = self
                .log()
                .contains("database system is ready to accept connections");
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start on port {}; its log: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// A fast shutdown (SIGINT), waited for.
    pub fn stop(&mut self) {
        self.signal(libc::SIGINT);
    }

    /// SIGKILL to the server and all its processes at once (a crash).
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
    }

    #[allow(unsafe_code)]
    fn signal(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            let group = child.id() as i32;
            // SAFETY: killpg(2) on the process group we created for it.
            unsafe {
                libc::killpg(group, signal);
            }
            let _ = child.wait();
            // Its backends are in the same group; wait until they are gone.
            let deadline = Instant::now() + Duration::from_secs(30);
            // SAFETY: killpg with signal 0 only checks that the group exists.
            while unsafe { libc::killpg(group, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `count` (a query of one number) on `client` until it gives
/// `wanted`; fails after 30 s, with the last count.
#[cfg(feature = "gateway")]
pub async fn until_count(client: &tokio_postgres::Client, count: &str, wanted: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now: i64 = client.query_one(count, &[]).await.unwrap().get(0);
        if now == wanted {
            return;
        }
        assert!(Instant::now() < deadline, "{count}: {now}, not {wanted}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// PgBouncer in front of a [`PostgresServer`], on a free loopback port, as
/// platform teams pool PostgreSQL for many replicas. Run as `nobody` when
/// the tests run as root (PgBouncer refuses root), killed on drop; fails,
/// never skips, when PgBouncer is not installed.
pub struct PgBouncer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl PgBouncer {
    /// In transaction mode with 4 server connections: consecutive
    /// statements of one client connection may run on different server
    /// connections, so nothing a session prepared or set is there for its
    /// next statement.
    pub fn transaction_mode(server: &PostgresServer) -> Self {
        Self::start(server, "transaction", 4)
    }

    /// In session mode: each client connection has a server connection of
    /// its own for as long as it is open, 40 at most (two gateways' pools).
    pub fn session_mode(server: &PostgresServer) -> Self {
        Self::start(server, "session", 40)
    }

    fn start(server: &PostgresServer, mode: &str, server_connections: u16) -> Self {
        let program = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
            .expect("PgBouncer must be installed for these tests (apt-get install pgbouncer)");
        let dir = tempfile::tempdir().unwrap();
        owned_by_server(dir.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let users = dir.path().join("users.txt");
        std::fs::write(&users, "\"gateway\" \"\"\n").unwrap();
        let config = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &config,
            format!(
                "[databases]\npostgres = host=127.0.0.1 port={} dbname=postgres\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                 unix_socket_dir =\nauth_type = trust\nauth_file = {}\n\
                 pool_mode = {mode}\ndefault_pool_size = {server_connections}\n\
                 max_client_conn = 200\n",
                server.port,
                users.display()
            ),
        )
        .unwrap();
        for file in [&users, &config] {
            owned_by_server(file);
        }
        let log = dir.path().join("log");
        let child = unprivileged(&program)
            .arg(&config)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut bouncer = Self { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !bouncer.log().contains("process up") {
            if let Ok(Some(status)) = bouncer.child.try_wait() {
                panic!(
                    "PgBouncer exited at start-up ({status}); its log: {}",
                    bouncer.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "PgBouncer did not start on port {port}; its log: {}",
                bouncer.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        bouncer
    }

    /// `postgres://gateway@127.0.0.1:PORT/postgres`, through the pooler.
    pub fn url(&self) -> String {
        format!("postgres://gateway@127.0.0.1:{}/postgres", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
