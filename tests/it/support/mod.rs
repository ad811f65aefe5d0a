//! Test harness shared by every integration test: throwaway real servers and the sdl process.
//!
//! - [`MariaDb`]: a fresh `mariadbd` in a temp dir, on a free loopback port, binlog on in ROW
//!   format with full row images and metadata, a replication user `sdl`/`sdl-test-pw`.
//! - [`Mongo`]: a fresh SecantusDB (`secantusd-rs`, MongoDB-compatible, one-node replica set,
//!   `--sync-on-commit`), or the real MongoDB named by `SDL_TEST_MONGODB_URI` (each test then uses
//!   a database of its own).
//! - [`Sdl`]: the sdl binary under test, run as a child process with a generated config.
//! - [`Relay`]: all three for one test, with its tables, the common waits and the exactly-once
//!   assertion.
//!
//! Every server and process is stopped and its files removed when its handle is dropped.

pub mod proxy;
pub mod relay;
pub mod replication;
pub mod snapshot;
pub mod workload;

pub use relay::{Relay, RelayBuilder};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Bson, Document};
use mysql_async::prelude::Queryable;
use tempfile::TempDir;

pub const SDL_USER: &str = "sdl";
pub const SDL_PASSWORD: &str = "sdl-test-pw";

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

fn find_binary(env_var: &str, names: &[&str]) -> PathBuf {
    if let Ok(p) = std::env::var(env_var) {
        return PathBuf::from(p);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    for name in names {
        for dir in &dirs {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("none of {names:?} found (set {env_var}); run scripts/test, which installs the test servers");
}

/// A throwaway MariaDB server.
pub struct MariaDb {
    dir: TempDir,
    pub port: u16,
    process: Option<Child>,
    extra_args: Vec<String>,
}

impl MariaDb {
    /// Starts a server with the settings sdl needs.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a server; `args` are added to (and may override) the standard ones, e.g.
    /// `--binlog-format=STATEMENT`. `--skip-log-bin` turns the binlog off.
    pub async fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sdl-mariadb-")
            .tempdir()
            .unwrap();
        let datadir = dir.path().join("data");
        // Each server gets its own tmpdir: bootstrap servers sharing /tmp have collided on temp
        // table names. A failed bootstrap is retried in a clean directory before giving up.
        let tmpdir = dir.path().join("tmp");
        std::fs::create_dir_all(&tmpdir).unwrap();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let _ = std::fs::remove_dir_all(&datadir);
            let out = Command::new(find_binary(
                "SDL_MARIADB_INSTALL_DB",
                &["mariadb-install-db", "mysql_install_db"],
            ))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg("--user=root")
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .env("TMPDIR", &tmpdir)
            .output()
            .expect("mariadb-install-db");
            if out.status.success() {
                break;
            }
            assert!(
                attempts < 3,
                "mariadb-install-db failed {attempts} times: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut db = Self {
            dir,
            port: free_port(),
            process: None,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
        };
        db.launch().await;
        let mut conn = db.root_conn().await;
        for statement in [
            format!("CREATE USER '{SDL_USER}'@'%' IDENTIFIED BY '{SDL_PASSWORD}'"),
            format!(
                // The README's grants (REPLICATION MASTER ADMIN: MariaDB 10.5+ lists replicas
                // only with it).
                "GRANT REPLICATION SLAVE, REPLICATION CLIENT, REPLICATION MASTER ADMIN, SELECT ON *.* TO '{SDL_USER}'@'%'"
            ),
            "CREATE DATABASE app".to_string(),
        ] {
            conn.query_drop(statement).await.unwrap();
        }
        conn.disconnect().await.unwrap();
        db
    }

    pub fn datadir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let mut command = Command::new(find_binary("SDL_MARIADBD", &["mariadbd", "mysqld"]));
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.datadir().display()))
            .arg("--user=root")
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("mysqld.sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("mysqld.pid").display()
            ))
            .arg(format!(
                "--tmpdir={}",
                self.dir.path().join("tmp").display()
            ))
            .arg("--skip-name-resolve")
            .arg(format!(
                "--tmpdir={}",
                self.dir.path().join("tmp").display()
            ))
            .arg("--innodb-buffer-pool-size=64M")
            .arg("--innodb-flush-log-at-trx-commit=2")
            .arg("--sync-binlog=0")
            .arg("--character-set-server=utf8mb4")
            .arg("--collation-server=utf8mb4_general_ci")
            .arg("--server-id=1");
        if !self.extra_args.iter().any(|a| a == "--skip-log-bin") {
            command.arg(format!(
                "--log-bin={}",
                self.datadir().join("mariadb-bin").display()
            ));
        }
        command
            .args([
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-row-metadata=FULL",
            ])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log);
        self.process = Some(command.spawn().expect("start mariadbd"));
        let url = self.root_url();
        let log_path = self.dir.path().join("server.log");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Ok(conn)) = tokio::time::timeout(
                Duration::from_secs(2),
                mysql_async::Conn::from_url(url.as_str()),
            )
            .await
            {
                let _ = conn.disconnect().await;
                return;
            }
            if let Some(status) = self.process.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "mariadbd exited ({status}) during start-up:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "mariadbd did not start in 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn root_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/?prefer_socket=false", self.port)
    }

    /// The URL sdl uses (the replication user).
    pub fn sdl_url(&self) -> String {
        format!("mysql://{SDL_USER}:{SDL_PASSWORD}@127.0.0.1:{}", self.port)
    }

    /// The URL sdl uses, through a proxy listening on `port`.
    pub fn sdl_url_via(&self, port: u16) -> String {
        format!("mysql://{SDL_USER}:{SDL_PASSWORD}@127.0.0.1:{port}")
    }

    pub async fn root_conn(&self) -> mysql_async::Conn {
        mysql_async::Conn::from_url(self.root_url().as_str())
            .await
            .expect("connect as root")
    }

    pub async fn gtid_binlog_pos(&self) -> String {
        let mut conn = self.root_conn().await;
        let pos: Option<String> = conn
            .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
            .await
            .unwrap();
        conn.disconnect().await.unwrap();
        pos.unwrap_or_default()
    }

    /// Rotates the binlog and purges every older file (PURGE skips, with a warning, a file that a
    /// lingering dump thread still reads: repeat until only the newest is left).
    pub async fn purge_old_binlogs(&self) {
        let mut conn = self.root_conn().await;
        conn.query_drop("FLUSH BINARY LOGS").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let logs: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await.unwrap();
            if logs.len() == 1 {
                return;
            }
            assert!(Instant::now() < deadline, "old binlogs never purged");
            let newest: String = logs.last().unwrap().get(0).unwrap();
            conn.query_drop(format!("PURGE BINARY LOGS TO '{newest}'"))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server (SIGTERM, wait).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            signal(&child, libc_sigterm());
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }

    /// SIGKILL: the server dies as in a crash (its clients see the connection drop).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn libc_sigterm() -> &'static str {
    "TERM"
}

fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status();
}

static DATABASE_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A MongoDB-compatible server and the database one test uses in it.
/// MariaDB and MongoDB for a test that kills the MongoDB server: `None`, with a note, when
/// `SDL_TEST_MONGODB_URI` names a shared MongoDB, which a test must not kill.
pub async fn start_servers_with_killable_mongo() -> Option<(MariaDb, Mongo)> {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    if mongo.is_external() {
        eprintln!("skipped: this test kills the MongoDB server, which it cannot do to SDL_TEST_MONGODB_URI");
        return None;
    }
    Some((mariadb, mongo))
}

pub struct Mongo {
    dir: Option<TempDir>,
    process: Option<Child>,
    port: u16,
    uri: String,
    pub database: String,
    external: bool,
    extra_args: Vec<String>,
    /// Added to the URI of the test's own client (e.g. its TLS files).
    client_uri_options: String,
}

impl Mongo {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// The server process's id (None for an external server).
    #[allow(dead_code)] // used by benches/forwarder.rs (MongoDB's CPU), which includes this harness
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    /// `args` go to secantusd-rs (e.g. `--standalone`); with `SDL_TEST_MONGODB_URI` set they are
    /// ignored unless the test asks for a standalone server, which a shared MongoDB cannot be.
    pub async fn start_with(args: &[&str]) -> Self {
        let n = DATABASE_COUNTER.fetch_add(1, Ordering::SeqCst);
        let database = format!("sdltest_{}_{}", std::process::id(), n);
        if let Ok(uri) = std::env::var("SDL_TEST_MONGODB_URI") {
            if args.is_empty() {
                return Self {
                    dir: None,
                    process: None,
                    port: 0,
                    uri,
                    database,
                    external: true,
                    extra_args: Vec::new(),
                    client_uri_options: String::new(),
                };
            }
        }
        let mut mongo = Self {
            dir: Some(
                tempfile::Builder::new()
                    .prefix("sdl-mongo-")
                    .tempdir()
                    .unwrap(),
            ),
            process: None,
            port: 0,
            uri: String::new(),
            database,
            external: false,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            client_uri_options: String::new(),
        };
        mongo.launch().await;
        mongo
    }

    /// A SecantusDB that speaks only TLS, with the server certificate `cert`/`key`, and requires
    /// client certificates signed by `ca`. The test's own client ([`Mongo::client`]) connects with
    /// `ca` and the combined certificate-and-key PEM `client_pem`; [`Mongo::uri_without_tls`] is
    /// the address without them (for sdl, whose TLS settings go in its config). Always a local
    /// server, also with `SDL_TEST_MONGODB_URI` set: only a server started with the test's own
    /// certificates can be checked against them.
    pub async fn start_tls(ca: &Path, cert: &Path, key: &Path, client_pem: &Path) -> Self {
        let path = |p: &Path| p.display().to_string();
        let mut mongo = Self::start_with(&[
            "--tls-cert-file",
            &path(cert),
            "--tls-key-file",
            &path(key),
            "--tls-ca-file",
            &path(ca),
            "--tls-require-client-cert",
        ])
        .await;
        mongo.client_uri_options = format!(
            "&tls=true&tlsCAFile={}&tlsCertificateKeyFile={}",
            path(ca),
            path(client_pem)
        );
        mongo.uri.push_str(&mongo.client_uri_options);
        mongo
    }

    /// The URI without the options of [`Mongo::start_tls`].
    pub fn uri_without_tls(&self) -> String {
        self.uri.replace(&self.client_uri_options, "")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    async fn launch(&mut self) {
        let dir = self.dir.as_ref().unwrap().path().to_path_buf();
        let port = if self.port == 0 {
            free_port()
        } else {
            self.port
        };
        let mut child = Command::new(find_binary("SDL_SECANTUSD", &["secantusd-rs"]))
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(port.to_string())
            .arg("--storage-path")
            .arg(dir.join("data"))
            .arg("--sync-on-commit")
            .arg("--cache-size")
            .arg("256M")
            .args(&self.extra_args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
            .spawn()
            .expect("start secantusd-rs");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && line.contains("listening on") {
                    let _ = tx.send(());
                    sent = true;
                }
            }
        });
        let ready = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap();
        assert!(
            ready.is_ok(),
            "secantusd-rs did not report listening within 60 s"
        );
        self.port = port;
        self.process = Some(child);
        self.uri = if self.extra_args.iter().any(|a| a == "--standalone") {
            format!("mongodb://127.0.0.1:{port}/?directConnection=true")
        } else {
            format!("mongodb://127.0.0.1:{port}/?replicaSet=secantus")
        };
        self.uri.push_str(&self.client_uri_options);
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn is_external(&self) -> bool {
        self.external
    }

    pub async fn client(&self) -> mongodb::Client {
        mongodb::Client::with_uri_str(&self.uri).await.unwrap()
    }

    pub async fn db(&self) -> mongodb::Database {
        self.client().await.database(&self.database)
    }

    /// The document `_id` = `id` of `collection`, if there is one.
    pub async fn find_by_id(&self, collection: &str, id: impl Into<Bson>) -> Option<Document> {
        self.db()
            .await
            .collection::<Document>(collection)
            .find_one(doc! { "_id": id.into() })
            .await
            .unwrap_or_else(|e| panic!("reading {collection}: {e}"))
    }

    /// This server's URL through a proxy on `port`: a direct connection (the driver must not
    /// discover the real address from the replica set's `hello` and go around the proxy).
    pub fn uri_via_proxy(&self, port: u16) -> String {
        let (scheme, rest) = self.uri.split_once("://").unwrap();
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let userinfo = authority
            .split('/')
            .next()
            .unwrap()
            .rsplit_once('@')
            .map_or(String::new(), |(u, _)| format!("{u}@"));
        let mut params: Vec<&str> = query
            .split('&')
            .filter(|p| {
                !p.is_empty()
                    && !p.starts_with("replicaSet=")
                    && !p.starts_with("directConnection=")
            })
            .collect();
        params.push("directConnection=true");
        format!(
            "{scheme}://{userinfo}127.0.0.1:{port}/?{}",
            params.join("&")
        )
    }

    /// Kills the server (SIGKILL), as an outage.
    pub fn kill(&mut self) {
        assert!(!self.external, "cannot kill an external MongoDB");
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and storage.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }
}

impl Drop for Mongo {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.external {
            let uri = self.uri.clone();
            let database = self.database.clone();
            // Best effort: leave the shared server as we found it.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(client) = mongodb::Client::with_uri_str(&uri).await {
                        let _ = client.database(&database).drop().await;
                    }
                });
            })
            .join();
        }
    }
}

/// The sdl binary under test.
pub struct Sdl {
    dir: TempDir,
    pub config_path: PathBuf,
    process: Option<Child>,
    runs: usize,
    env: Vec<(String, String)>,
}

impl Sdl {
    /// Writes a config for `mariadb` → `mongo`, starting at `start` when the WAL is new.
    pub fn new(mariadb: &MariaDb, mongo: &Mongo, start: &str) -> Self {
        Self::with_settings(mariadb, mongo, start, &[])
    }

    /// Like [`Sdl::new`], with `extra_sink_toml` (lines such as `transactions = "off"`) added to
    /// the `[sink]` section.
    pub fn new_with(mariadb: &MariaDb, mongo: &Mongo, start: &str, extra_sink_toml: &str) -> Self {
        let lines: Vec<(&str, &str)> = extra_sink_toml
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| ("sink", l))
            .collect();
        Self::with_settings(mariadb, mongo, start, &lines)
    }

    /// Like [`Sdl::new`], with extra `key = value` lines per section, e.g.
    /// `&[("wal", "max_bytes = 1048576")]`.
    pub fn with_settings(
        mariadb: &MariaDb,
        mongo: &Mongo,
        start: &str,
        settings: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sdl-run-")
            .tempdir()
            .unwrap();
        let mut sections: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        sections.entry("source").or_default().extend([
            format!("url = \"{}\"", mariadb.sdl_url()),
            "server_id = 4242".to_string(),
            format!("start = \"{start}\""),
        ]);
        sections
            .entry("wal")
            .or_default()
            .push(format!("dir = \"{}\"", dir.path().join("wal").display()));
        sections.entry("sink").or_default().extend([
            format!("url = \"{}\"", mongo.uri()),
            format!("database = \"{}\"", mongo.database),
        ]);
        sections
            .entry("admin")
            .or_default()
            .push(format!("listen = \"127.0.0.1:{}\"", free_port()));
        for (section, line) in settings {
            let lines = sections.entry(section).or_default();
            let key = line.split('=').next().unwrap_or_default().trim();
            // A setting given by the test replaces the default line for the same key.
            lines.retain(|l| l.split('=').next().unwrap_or_default().trim() != key);
            lines.push(line.to_string());
        }
        let config: String = sections
            .iter()
            .map(|(section, lines)| format!("[{section}]\n{}\n\n", lines.join("\n")))
            .collect();
        Self::with_config(dir, &config)
    }

    /// The admin endpoint address from the config.
    pub fn admin_addr(&self) -> String {
        let config = std::fs::read_to_string(&self.config_path).unwrap();
        let value: toml::Value = config.parse().unwrap();
        value["admin"]["listen"].as_str().unwrap().to_string()
    }

    /// GET `path` from the admin endpoint: (HTTP status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let mut response = ureq::get(&format!("http://{}{path}", self.admin_addr()))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap_or_else(|e| panic!("GET {path} from sdl's admin endpoint: {e}"));
        (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap(),
        )
    }

    /// The `/status` document.
    pub fn status(&self) -> serde_json::Value {
        let (code, body) = self.admin_get("/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The value of the metric `series` (a name with its labels, as `/metrics` prints it).
    pub fn metric(&self, series: &str) -> f64 {
        let (_, metrics) = self.admin_get("/metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{series} ")))
            .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{metrics}"))
            .parse()
            .unwrap()
    }

    /// Sets an environment variable for the following starts (e.g. a test hook).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    pub fn remove_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    pub fn with_config(dir: TempDir, config: &str) -> Self {
        let config_path = dir.path().join("sdl.toml");
        std::fs::write(&config_path, config).unwrap();
        Self {
            dir,
            config_path,
            process: None,
            runs: 0,
            env: Vec::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.dir.path().join("wal")
    }

    pub fn start(&mut self) {
        assert!(self.process.is_none(), "sdl already running");
        self.runs += 1;
        let log =
            std::fs::File::create(self.dir.path().join(format!("sdl-{}.log", self.runs))).unwrap();
        // SDL_TEST_BINARY runs another build of sdl (e.g. one built for profiling).
        let binary =
            std::env::var("SDL_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sdl").into());
        let child = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .env(
                "SDL_LOG",
                std::env::var("SDL_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sdl");
        self.process = Some(child);
    }

    /// Waits until sdl has resolved its position and follows the binlog.
    pub async fn wait_following(&self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !self.logs().contains("following the binlog") {
            // The log says why when it never comes (a failed start, a refused check).
            assert!(
                Instant::now() < deadline,
                "timed out after 180 s waiting for sdl following the binlog; its log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// All log output of every run so far.
    pub fn logs(&self) -> String {
        (1..=self.runs)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("sdl-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until sdl's WAL holds every transaction up to the source position `position` (its
    /// `/status` `wal.ingest_position`), failing at once if sdl exits meanwhile.
    pub async fn wait_wal_holds(&mut self, position: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            assert!(
                self.is_running(),
                "sdl exited while its WAL was to reach {position}:\n{}",
                self.logs()
            );
            if self.status()["wal"]["ingest_position"] == position {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the WAL did not reach {position} within {timeout:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.process.as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Sends SIGTERM and waits for the exit (at most `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.process.take().expect("sdl not running");
        signal(&child, "TERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "sdl did not exit within {timeout:?} of SIGTERM:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The running process's id.
    #[allow(dead_code)] // used by benches/e2e.rs (CPU and memory of sdl), which includes this harness
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    /// Sends signal `name` (e.g. `STOP`, `CONT`) to the running process.
    pub fn send_signal(&self, name: &str) {
        signal(self.process.as_ref().expect("sdl not running"), name);
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        let mut child = self.process.take().expect("sdl not running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.process.take().expect("sdl not running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("sdl still running after {timeout:?}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sdl {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `sdl` with `args` to completion and returns (exit code, stderr).
pub fn run_sdl(args: &[&str]) -> (Option<i32>, String) {
    let out = sdl_output(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `sdl` with `args` to completion and returns (exit code, -1 when a signal ended it;
/// stdout; stderr).
pub fn run_sdl_with_output<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String, String) {
    let out = sdl_output(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sdl_output<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sdl"))
        .args(args)
        .output()
        .expect("run sdl")
}

/// Waits until the offset document for source `default` names `position`.
pub async fn wait_for_offset(mongo: &Mongo, position: &str, timeout: Duration, sdl: &Sdl) {
    let db = mongo.db().await;
    let offsets = db.collection::<Document>("binlog_offsets");
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(d)) = offsets.find_one(doc! { "_id": "default" }).await {
            if d.get_str("gtid").ok() == Some(position) {
                return;
            }
        }
        if Instant::now() > deadline {
            panic!(
                "MongoDB offset did not reach {position} within {timeout:?}; sdl logs:\n{}",
                sdl.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A row as compared between MariaDB and the rebuilt-from-MongoDB table: column → text.
pub type Row = BTreeMap<String, String>;

/// Renders a BSON value the way [`mysql_value_text`] renders the MariaDB value.
pub fn bson_text(v: &Bson) -> String {
    match v {
        Bson::Null => "NULL".into(),
        Bson::Int32(i) => i.to_string(),
        Bson::Int64(i) => i.to_string(),
        Bson::Double(d) => d.to_string(),
        Bson::Decimal128(d) => d.to_string(),
        Bson::String(s) => s.clone(),
        Bson::Binary(b) => format!("0x{}", hex(&b.bytes)),
        other => format!("{other}"),
    }
}

pub fn mysql_value_text(v: &mysql_async::Value) -> String {
    use mysql_async::Value::*;
    match v {
        NULL => "NULL".into(),
        Int(i) => i.to_string(),
        UInt(u) => u.to_string(),
        Float(f) => f64::from(*f).to_string(),
        Double(d) => d.to_string(),
        Bytes(b) => String::from_utf8(b.clone()).unwrap_or_else(|_| format!("0x{}", hex(b))),
        other => format!("{other:?}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `SELECT *` of a table, keyed by its primary-key column `key`.
pub async fn select_table(
    conn: &mut mysql_async::Conn,
    table: &str,
    key: &str,
) -> BTreeMap<String, Row> {
    let rows: Vec<mysql_async::Row> = conn.query(format!("SELECT * FROM {table}")).await.unwrap();
    let mut out = BTreeMap::new();
    for row in rows {
        let columns = row.columns();
        let mut r = Row::new();
        for (i, c) in columns.iter().enumerate() {
            r.insert(c.name_str().into_owned(), mysql_value_text(&row[i]));
        }
        out.insert(r[key].clone(), r);
    }
    out
}

/// Every document of the test database's `collection`, in no particular order.
pub async fn documents_of(mongo: &Mongo, collection: &str) -> Vec<Document> {
    use futures_util::TryStreamExt;
    mongo
        .db()
        .await
        .collection::<Document>(collection)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// Every document of the test's `row_changes` (change and snapshot documents), in no particular
/// order.
pub async fn all_documents(mongo: &Mongo) -> Vec<Document> {
    documents_of(mongo, "row_changes").await
}

/// All change documents of the test's database, in source commit order.
pub async fn change_documents(mongo: &Mongo) -> Vec<Document> {
    let mut docs = all_documents(mongo).await;
    docs.sort_by_key(|d| {
        let meta = d.get_document("meta").unwrap();
        (
            meta.get_str("file").unwrap().to_string(),
            meta.get_i64("pos").unwrap(),
            meta.get_i64("row").unwrap(),
        )
    });
    docs
}

/// Replays the row change documents of `db.tbl` into a table keyed by column `key`.
pub fn rebuild_table(docs: &[Document], db: &str, tbl: &str, key: &str) -> BTreeMap<String, Row> {
    let mut table = BTreeMap::new();
    let image = |d: &Document, which: &str| -> Row {
        d.get_document(which)
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), bson_text(v)))
            .collect()
    };
    for d in docs {
        let meta = d.get_document("meta").unwrap();
        if meta.get_str("db").ok() != Some(db) || meta.get_str("tbl").ok() != Some(tbl) {
            continue;
        }
        match d.get_str("op").unwrap() {
            "insert" => {
                let after = image(d, "after");
                let previous = table.insert(after[key].clone(), after);
                assert!(previous.is_none(), "insert over an existing row: {d}");
            }
            "update" => {
                let before = image(d, "before");
                let after = image(d, "after");
                assert!(
                    table.remove(&before[key]).is_some(),
                    "update of a missing row: {d}"
                );
                table.insert(after[key].clone(), after);
            }
            "delete" => {
                let before = image(d, "before");
                assert!(
                    table.remove(&before[key]).is_some(),
                    "delete of a missing row: {d}"
                );
            }
            other => panic!("unexpected op {other} in {d}"),
        }
    }
    table
}

/// A small deterministic PRNG (xorshift64*), so workloads are reproducible from their seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
