//! Preflight: every check of both ends that can be made before relaying, with the fix for each
//! failure. `sdl check` prints them all as a table; `sdl run` runs the same checks first and
//! refuses to start on a failure (warnings are logged).
//!
//! Checks only read: nothing is created on either server.

use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::config::{Config, TlsMode, TransactionMode};
use crate::redact::redact_error;
use crate::sink;
use crate::source;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// What to do (empty for a pass).
    pub fix: String,
}

impl Check {
    fn new(
        name: &str,
        verdict: Verdict,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name: name.to_string(),
            verdict,
            detail: redact_error(&detail.into()),
            fix: fix.into(),
        }
    }

    fn pass(name: &str, detail: impl Into<String>) -> Self {
        Self::new(name, Verdict::Pass, detail, "")
    }
}

/// What an unreachable MongoDB means for the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkDown {
    /// A failure (`sdl check`, or a new WAL, which needs MongoDB's offset to start).
    Fails,
    /// A warning: the WAL has a position, so the ingester can run while the forwarder waits for
    /// MongoDB (`sdl run` after the first start).
    Tolerated,
}

/// Runs every check; none stops the others (a check that needs an unreachable server is reported
/// as not checked).
pub async fn run_checks(config: &Config) -> Vec<Check> {
    run_checks_with(config, SinkDown::Fails).await
}

pub async fn run_checks_with(config: &Config, sink_down: SinkDown) -> Vec<Check> {
    let mut checks = source_checks(config).await;
    checks.extend(sink_checks(config, sink_down).await);
    checks
}

async fn source_checks(config: &Config) -> Vec<Check> {
    let cfg = &config.source;
    let mut checks = Vec::new();
    let mut conn = match source::login(cfg).await {
        Ok(conn) => {
            checks.push(Check::pass("source: reachable, login", "logged in"));
            conn
        }
        Err(e) => {
            checks.push(Check::new(
                "source: reachable, login",
                Verdict::Fail,
                e.to_string(),
                "see the message",
            ));
            return checks;
        }
    };
    checks.push(source_encryption(&mut conn, cfg).await);
    match source::settings_findings(&mut conn, cfg.column_names).await {
        Ok((flavor, findings)) => {
            checks.push(Check::pass("source: flavor", format!("{flavor:?}")));
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
            "see the message",
        )),
    }
    checks.push(privileges(&mut conn).await);
    checks.push(server_id(&mut conn, cfg.server_id).await);
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
        Err(e) => Check::new(NAME, Verdict::Warn, e.to_string(), "see the message"),
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

async fn server_id(conn: &mut mysql_async::Conn, ours: u32) -> Check {
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
    let replicas: Vec<mysql_async::Row> = conn.query("SHOW SLAVE HOSTS").await.unwrap_or_default();
    let taken = replicas
        .iter()
        .any(|row| row.get::<u32, _>("Server_id") == Some(ours));
    if taken {
        Check::new(
            NAME,
            Verdict::Warn,
            format!("a replica with server_id {ours} is connected (another replica, or this sdl already running)"),
            "if it is not this sdl, choose another source.server_id: the source disconnects one of two replicas with the same id",
        )
    } else {
        Check::pass(
            NAME,
            format!(
                "{ours} (the source's own is {})",
                own.map_or("?".into(), |o| o.to_string())
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
            checks.push(Check::new(
                "sink: reachable, login",
                Verdict::Fail,
                e.to_string(),
                "see the message",
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
        (false, TransactionMode::On) => Check::new(
            "sink: transactions",
            Verdict::Fail,
            sink::SinkError::NoTransactions {
                url: probe.url.clone(),
            }
            .to_string(),
            "see the message",
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
