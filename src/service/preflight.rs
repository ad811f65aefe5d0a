//! Preflight: every check of both ends that can be made before relaying, with the fix for each
//! failure. `sdl check` prints them all as a table; `sdl run` runs the same checks first and
//! refuses to start on a failure (warnings are logged).
//!
//! Checks only read: nothing is created on either server. Locally, `sdl check` also checks what
//! `sdl run` needs on this host: that `wal.dir` can be created and written (a probe file is
//! written and removed) and that `admin.listen` is free. A check that cannot be made (a privilege
//! missing to see other replicas) says so as a warning with the grant that makes it possible; it
//! never passes unchecked. With `source.snapshot = "initial"`, `sdl check` also resolves the
//! initial snapshot's tables and each one's key (`preflight_snapshot.rs`).

use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::config::{Config, TlsMode, TransactionMode};
use crate::sink;
use crate::source;

pub use super::preflight_check::{Check, Verdict};

/// What an unreachable MongoDB means for the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkDown {
    /// A failure (`sdl check`, or a new WAL, which needs MongoDB's offset to start).
    Fails,
    /// A warning: the WAL has a position, so the ingester can run while the forwarder waits for
    /// MongoDB (`sdl run` after the first start).
    Tolerated,
}

/// Runs every check (`sdl check`); none stops the others (a check that needs an unreachable
/// server is reported as not checked).
pub async fn run_checks(config: &Config) -> Vec<Check> {
    let (wal, wal_in_use) = wal_dir(&config.wal.dir);
    let mut checks = vec![wal];
    // (`sdl run` binds its admin endpoint before its checks: a bind failure there is the check.)
    if let Some(addr) = config.admin.listen_addr() {
        checks.push(admin_listen(addr, wal_in_use).await);
    }
    checks.extend(run_checks_inner(config, SinkDown::Fails, wal_in_use).await);
    // (`sdl run` refuses an initial snapshot's tables itself, when it plans the snapshot.)
    checks.extend(super::preflight_snapshot::snapshot_checks(config).await);
    checks
}

/// The checks `sdl run` makes once it holds the WAL (so the WAL directory is not checked again).
pub async fn run_checks_with(config: &Config, sink_down: SinkDown) -> Vec<Check> {
    run_checks_inner(config, sink_down, false).await
}

async fn run_checks_inner(config: &Config, sink_down: SinkDown, wal_in_use: bool) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.extend(source_checks(config, wal_in_use).await);
    checks.extend(sink_checks(config, sink_down).await);
    checks
}

/// `wal.dir`: an existing directory sdl can write, or a path it can create. Returns whether the
/// directory holds a WAL another process has open (locked), i.e. a running sdl.
fn wal_dir(dir: &std::path::Path) -> (Check, bool) {
    const NAME: &str = "wal: directory writable";
    let fix = "point wal.dir at a directory the user sdl runs as can write (under systemd, StateDirectory= creates /var/lib/sdl with the right owner), or make it so: chown/chmod it";
    let probe = |dir: &std::path::Path| -> std::io::Result<()> {
        let path = dir.join(format!(".sdl-check-{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"probe"));
        let _ = std::fs::remove_file(&path);
        written
    };
    if dir.exists() {
        if !dir.is_dir() {
            return (
                Check::new(
                    NAME,
                    Verdict::Fail,
                    format!("wal.dir = {} is a file, not a directory", dir.display()),
                    fix,
                ),
                false,
            );
        }
        if let Err(e) = probe(dir) {
            return (
                Check::new(
                    NAME,
                    Verdict::Fail,
                    format!("cannot write in wal.dir = {}: {e}", dir.display()),
                    fix,
                ),
                false,
            );
        }
        if !crate::wal_view::is_wal_dir(dir) {
            return (
                Check::pass(
                    NAME,
                    format!("{} (no WAL yet: created at the first start)", dir.display()),
                ),
                false,
            );
        }
        let locked = std::fs::File::open(dir.join("db"))
            .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
        let detail = if locked {
            format!(
                "{} (in use: an sdl running with this wal.dir holds it)",
                dir.display()
            )
        } else {
            dir.display().to_string()
        };
        return (Check::pass(NAME, detail), locked);
    }
    // Missing: sdl creates it, so the nearest existing ancestor must be a writable directory.
    let ancestor = dir.ancestors().skip(1).find(|a| a.exists());
    let verdict = match ancestor {
        Some(a) if !a.is_dir() => Err(format!("{} is a file, not a directory", a.display())),
        Some(a) => probe(a).map_err(|e| format!("cannot write in {}: {e}", a.display())),
        None => Err("no part of the path exists".to_string()),
    };
    let check = match verdict {
        Ok(()) => Check::pass(
            NAME,
            format!(
                "{} does not exist yet: sdl creates it at the first start",
                dir.display()
            ),
        ),
        Err(why) => Check::new(
            NAME,
            Verdict::Fail,
            format!("wal.dir = {} cannot be created: {why}", dir.display()),
            fix,
        ),
    };
    (check, false)
}

/// `admin.listen`: the address must be free for `sdl run` to start (or, for `sdl check` while
/// this service runs, taken by its own admin endpoint).
async fn admin_listen(addr: String, wal_in_use: bool) -> Check {
    const NAME: &str = "admin: listen address free";
    let fix = "set admin.listen to a free host:port (each sdl on a host needs its own), or to \"\" to turn the admin endpoint off";
    match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => {
            drop(listener);
            Check::pass(NAME, addr)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let answers_as_sdl = {
                let url = format!("http://{addr}/healthz");
                tokio::task::spawn_blocking(move || {
                    ureq::get(&url)
                        .config()
                        .timeout_global(Some(Duration::from_secs(2)))
                        .build()
                        .call()
                        .ok()
                        .and_then(|mut r| r.body_mut().read_to_string().ok())
                        .is_some_and(|body| body.trim() == "ok")
                })
                .await
                .unwrap_or(false)
            };
            match (wal_in_use, answers_as_sdl) {
                (true, true) => Check::pass(
                    NAME,
                    format!("{addr} is this service's own admin endpoint (sdl is running with this config)"),
                ),
                (true, false) => Check::new(
                    NAME,
                    Verdict::Warn,
                    format!("admin.listen = {addr} is in use, most likely by this service (an sdl holds this config's WAL), though /healthz did not answer \"ok\""),
                    "if this service is not running, another program holds the port: set admin.listen to a free host:port",
                ),
                (false, _) => Check::new(
                    NAME,
                    Verdict::Fail,
                    format!(
                        "admin.listen = {addr} is already in use by {}: sdl run would fail to start its admin endpoint",
                        if answers_as_sdl { "another sdl" } else { "another program" }
                    ),
                    fix,
                ),
            }
        }
        Err(e) => Check::new(
            NAME,
            Verdict::Fail,
            format!("cannot listen on admin.listen = {addr}: {e}"),
            fix,
        ),
    }
}

/// The source's checks: one server's, or each listed server's (`super::preflight_list`).
async fn source_checks(config: &Config, wal_in_use: bool) -> Vec<Check> {
    let cfg = &config.source;
    if cfg.server_count() <= 1 {
        return server_checks(cfg, wal_in_use).await;
    }
    super::preflight_list::list_checks(cfg, |server| async move {
        server_checks(&server, wal_in_use).await
    })
    .await
}

/// Every check of one source server.
pub(super) async fn server_checks(
    cfg: &crate::config::SourceConfig,
    wal_in_use: bool,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut conn = match source::login(cfg).await {
        Ok(conn) => {
            checks.push(Check::pass("source: reachable, login", "logged in"));
            conn
        }
        Err(e) => {
            // The message says what to check.
            checks.push(Check::new(
                "source: reachable, login",
                Verdict::Fail,
                e.to_string(),
                "",
            ));
            return checks;
        }
    };
    checks.push(source_encryption(&mut conn, cfg).await);
    match source::settings_findings(&mut conn, cfg.column_names).await {
        Ok((flavor, findings)) => {
            checks.push(Check::pass("source: flavor", flavor.name()));
            for f in findings {
                let name = format!("source: {}", f.setting);
                checks.push(if f.ok {
                    Check::pass(&name, f.actual)
                } else {
                    Check::new(
                        &name,
                        Verdict::Fail,
                        format!("{} is {}, sdl needs {}", f.setting, f.actual, f.required),
                        f.fix,
                    )
                });
            }
        }
        Err(e) => checks.push(Check::new(
            "source: settings",
            Verdict::Fail,
            e.to_string(),
            "grant the sdl user SELECT (it reads the server's global variables), then check again",
        )),
    }
    checks.push(privileges(&mut conn).await);
    checks.push(server_id(&mut conn, cfg.server_id, wal_in_use).await);
    checks.push(binlog_retention(&mut conn, cfg.min_binlog_retention).await);
    let _ = conn.disconnect().await;
    checks
}

/// Whether the source connection is encrypted: asked of the server (`Ssl_cipher`), so TLS set up
/// in `source.url` counts too. Clear text is a warning unless the server is on this host.
async fn source_encryption(
    conn: &mut mysql_async::Conn,
    cfg: &crate::config::SourceConfig,
) -> Check {
    const NAME: &str = "source: encryption";
    match source::encryption(conn).await {
        Ok(Some(tls)) if cfg.tls == TlsMode::On => Check::pass(
            NAME,
            format!(
                "TLS ({tls}), server certificate verified against {}{}{}",
                cfg.tls_ca_file
                    .as_ref()
                    .map_or("the built-in roots".into(), |p| p.display().to_string()),
                match &cfg.tls_server_name {
                    Some(name) => format!(" for the name {name} (source.tls_server_name)"),
                    None => " for the host in source.url".to_string(),
                },
                if cfg.tls_cert_file.is_some() {
                    ", client certificate presented"
                } else {
                    ""
                }
            ),
        ),
        Ok(Some(tls)) => Check::pass(NAME, format!("TLS ({tls}), as set up in source.url")),
        Ok(None) => {
            let local = mysql_async::Opts::from_url(&cfg.url)
                .is_ok_and(|o| is_loopback(o.ip_or_hostname()));
            if local {
                Check::pass(NAME, "not encrypted (the server is on this host)")
            } else {
                Check::new(
                    NAME,
                    Verdict::Warn,
                    "not encrypted: the password and every row change cross the network in clear text",
                    "set source.tls = \"on\" with source.tls_ca_file (docs/operations.md, \"TLS\")",
                )
            }
        }
        Err(e) => Check::new(
            NAME,
            Verdict::Warn,
            format!("unknown: the server did not say whether the connection is encrypted ({e})"),
            "check source.tls and the server's TLS settings (SHOW STATUS LIKE 'Ssl_cipher')",
        ),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn privileges(conn: &mut mysql_async::Conn) -> Check {
    const NAME: &str = "source: privileges";
    let grants: Vec<String> = match conn.query("SHOW GRANTS").await {
        Ok(g) => g,
        Err(e) => {
            return Check::new(
                NAME,
                Verdict::Fail,
                e.to_string(),
                "grant the user SHOW GRANTS on itself (any user has it by default)",
            )
        }
    };
    let text = grants.join(" ").to_ascii_uppercase();
    let has = |names: &[&str]| names.iter().any(|n| text.contains(n));
    let mut missing = Vec::new();
    if !has(&["ALL PRIVILEGES", "REPLICATION SLAVE", "REPLICATION REPLICA"]) {
        missing.push("REPLICATION SLAVE");
    }
    if !has(&[
        "ALL PRIVILEGES",
        "REPLICATION CLIENT",
        "BINLOG MONITOR",
        "SUPER",
    ]) {
        missing.push("REPLICATION CLIENT");
    }
    if !has(&[
        "ALL PRIVILEGES",
        "GRANT SELECT",
        ", SELECT",
        "SELECT,",
        "SELECT ON",
    ]) {
        missing.push("SELECT");
    }
    if missing.is_empty() {
        Check::pass(NAME, "REPLICATION SLAVE, REPLICATION CLIENT, SELECT")
    } else {
        Check::new(
            NAME,
            Verdict::Fail,
            format!("missing {}", missing.join(", ")),
            format!("GRANT {} ON *.* TO the sdl user", missing.join(", ")),
        )
    }
}

/// A replica registered with our id is a warning, not a failure: the source forgets a replica only
/// when its dump thread notices the connection is gone (up to a heartbeat interval after this sdl
/// stopped), so a just-stopped or restarting sdl would otherwise fail its own check.
async fn server_id(conn: &mut mysql_async::Conn, ours: u32, this_service_runs: bool) -> Check {
    const NAME: &str = "source: server_id unique";
    let own: Option<u32> = conn.query_first("SELECT @@server_id").await.ok().flatten();
    if own == Some(ours) {
        return Check::new(
            NAME,
            Verdict::Fail,
            format!("source.server_id = {ours} is the source's own server_id"),
            "set source.server_id to a number no server or replica of this source uses",
        );
    }
    // MariaDB 10.5+ wants REPLICATION MASTER ADMIN for this, MySQL REPLICATION SLAVE: without
    // it the check cannot be made, which is said (never a pass).
    let replicas: Vec<mysql_async::Row> = match conn.query("SHOW SLAVE HOSTS").await {
        Ok(rows) => rows,
        Err(e) => {
            return Check::new(
                NAME,
                Verdict::Warn,
                format!(
                    "unknown: the source refused to list its replicas (SHOW SLAVE HOSTS: {}), so whether another replica uses {ours} cannot be checked",
                    crate::messages::tidy(&e.to_string())
                ),
                "grant REPLICATION MASTER ADMIN to the sdl user to check (MariaDB 10.5+; on MySQL REPLICATION SLAVE suffices): GRANT REPLICATION MASTER ADMIN ON *.* TO the sdl user",
            );
        }
    };
    let taken = replicas
        .iter()
        .any(|row| row.get::<u32, _>("Server_id") == Some(ours));
    if taken {
        let whose = if this_service_runs {
            "(this sdl, which is running with this config, or another replica)"
        } else {
            "while this service is not running: another replica or sdl uses it, unless this sdl stopped moments ago (the source forgets a replica a heartbeat interval later)"
        };
        Check::new(
            NAME,
            Verdict::Warn,
            format!("a replica with server_id {ours} is connected {whose}"),
            "choose another source.server_id unless it is this sdl: the source disconnects one of two replicas with the same id, and they knock each other off",
        )
    } else {
        Check::pass(
            NAME,
            format!(
                "{ours} (the source's own is {}; {} other replica(s) connected)",
                own.map_or("unknown".into(), |o| o.to_string()),
                replicas.len()
            ),
        )
    }
}

async fn binlog_retention(conn: &mut mysql_async::Conn, minimum: Duration) -> Check {
    const NAME: &str = "source: binlog retention";
    let vars: Vec<(String, String)> = conn
        .query("SHOW GLOBAL VARIABLES WHERE Variable_name IN ('binlog_expire_logs_seconds', 'expire_logs_days')")
        .await
        .unwrap_or_default();
    let get = |name: &str| -> f64 {
        vars.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0.0)
    };
    let seconds = match get("binlog_expire_logs_seconds") {
        s if s > 0.0 => s,
        _ => get("expire_logs_days") * 86_400.0,
    };
    let days = |s: f64| format!("{:.1} days", s / 86_400.0);
    if seconds == 0.0 {
        Check::pass(NAME, "binlogs are never expired automatically")
    } else if seconds < minimum.as_secs_f64() {
        Check::new(
            NAME,
            Verdict::Warn,
            format!("binlogs expire after {}, below source.min_binlog_retention ({})", days(seconds), days(minimum.as_secs_f64())),
            format!(
                "SET GLOBAL binlog_expire_logs_seconds = {} (and in the server config): sdl can only be down, or paused by a full WAL, for as long as the binlogs last",
                minimum.as_secs()
            ),
        )
    } else {
        Check::pass(NAME, format!("binlogs kept {}", days(seconds)))
    }
}

async fn sink_checks(config: &Config, sink_down: SinkDown) -> Vec<Check> {
    let cfg = &config.sink;
    let mut checks = Vec::new();
    let probe = match sink::probe(cfg).await {
        Ok(probe) => {
            checks.push(Check::pass("sink: reachable, login", "hello answered"));
            probe
        }
        Err(e) if e.is_transient() && sink_down == SinkDown::Tolerated => {
            checks.push(Check::new(
                "sink: reachable, login",
                Verdict::Warn,
                format!(
                    "{e}; starting anyway: the WAL has a position, so the binlog is read into the \
                     WAL while the forwarder retries until MongoDB answers (its other checks \
                     run when it does)"
                ),
                "start MongoDB, or check sink.url and the network",
            ));
            return checks;
        }
        Err(e) => {
            // The message says what to check.
            checks.push(Check::new(
                "sink: reachable, login",
                Verdict::Fail,
                e.to_string(),
                "",
            ));
            return checks;
        }
    };
    checks.push(sink_encryption(&probe));
    checks.push(match (probe.supports_transactions, cfg.transactions) {
        (true, TransactionMode::Off) => Check::new(
            "sink: transactions",
            Verdict::Warn,
            "the server supports transactions but sink.transactions = \"off\"",
            "use \"auto\" unless you have a reason: both are exactly-once, transactions also keep each batch atomic for readers",
        ),
        (true, _) => Check::pass("sink: transactions", "available and used"),
        (false, _) if config.lease.enabled => Check::new(
            "sink: transactions",
            Verdict::Fail,
            sink::SinkError::LeaseNeedsTransactions {
                url: probe.url.clone(),
            }
            .to_string(),
            "use a replica set (a one-node replica set is enough) or a sharded cluster, or turn [lease] off",
        ),
        (false, TransactionMode::On) => Check::new(
            "sink: transactions",
            Verdict::Fail,
            sink::SinkError::NoTransactions {
                url: probe.url.clone(),
            }
            .to_string(),
            "use a replica set (or a sharded cluster), or set sink.transactions = \"auto\" or \"off\" (still exactly-once, without atomic batches)",
        ),
        (false, _) => Check::new(
            "sink: transactions",
            Verdict::Warn,
            "a standalone server: idempotent writes instead of transactions (still exactly-once)",
            "prefer a replica set: a standalone server has no failover and no majority write concern",
        ),
    });
    checks.push(Check::pass(
        "sink: write concern",
        "sdl writes with w: \"majority\", j: true",
    ));
    sink::shut_down(probe.client).await;
    checks
}

/// Whether the MongoDB connection is encrypted, as configured (in sink.tls or sink.url): the
/// driver fails the `hello` of a TLS connection whose handshake does not complete.
fn sink_encryption(probe: &sink::Probe) -> Check {
    const NAME: &str = "sink: encryption";
    match &probe.encryption {
        sink::Encryption::Verified { detail } => Check::pass(NAME, detail.clone()),
        sink::Encryption::Unverified => Check::new(
            NAME,
            Verdict::Warn,
            "TLS without certificate verification (tlsInsecure or tlsAllowInvalidCertificates in sink.url): anyone in the path can pose as the server",
            "remove those URL options and set sink.tls = \"on\" with sink.tls_ca_file",
        ),
        sink::Encryption::None if probe.hosts.iter().all(|h| is_loopback(h)) => {
            Check::pass(NAME, "not encrypted (the server is on this host)")
        }
        sink::Encryption::None => Check::new(
            NAME,
            Verdict::Warn,
            "not encrypted: credentials and change documents cross the network in clear text",
            "set sink.tls = \"on\" with sink.tls_ca_file (docs/operations.md, \"TLS\")",
        ),
    }
}

/// The checks as a table, one line each, with the fix under a failure or warning.
pub fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let verdict = match c.verdict {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        out.push_str(&format!("{verdict}  {:<width$}  {}\n", c.name, c.detail));
        if !c.fix.is_empty() && c.verdict != Verdict::Pass {
            out.push_str(&format!("      {:<width$}  fix: {}\n", "", c.fix));
        }
    }
    out
}
