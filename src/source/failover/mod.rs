//! Source failover: which server of `source.url` the ingester follows.
//!
//! # Guarantees
//! - With one server in `source.url`, nothing here changes what sdl did before: the start-up
//!   identity check and the history watch guard it, its errors are its own.
//! - With several, at start and after every connection loss the servers are tried in list order
//!   (the primary first). A server is followed only when it is a safe continuation of what sdl
//!   relayed (the WAL's ingest position, see [`continuation`]): it holds every relayed
//!   transaction, it still has the binlog from there (not purged), and, when it replicates, its
//!   binlog carries what it applies (`log_slave_updates` / `log_replica_updates`). The usual
//!   settings checks apply to each server. A server that is behind or diverged is never
//!   streamed from.
//! - When no server can be followed, each one's reason is logged (warn), counted
//!   (`sdl_source_server_refusals_total`) and published in `/status` (`ingest.refused_servers`),
//!   and the ingester retries with its backoff, unless every server answered and none can ever
//!   be followed as it is: then it stops, exit 4 when any is diverged (the message names the
//!   relayed GTIDs it lacks and its errant ones: a lossy failover is refused, not papered over),
//!   exit 3 when the binlog sdl needs is purged everywhere, else the first server's own error.
//! - A switch to another server is logged (`sdl::source`, warn: from, to, position), counted
//!   (`sdl_source_failovers_total`) and published (`ingest.source_server`,
//!   `ingest.source_failovers`), and recorded in `wal.dir` ([`record`]) before anything read from
//!   the new server reaches the WAL.
//! - sdl stays on the server it switched to until the next connection loss, then tries the list
//!   from the top again.

pub mod continuation;
pub mod record;

use std::future::Future;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tracing::warn;

use super::error::query_error;
use super::start::resolve_start;
use super::{relay, SourceError};
use crate::config::{SourceConfig, StartFrom};
use crate::flavor::Flavor;
use crate::gtid::{Position, ResumePoint};
use crate::redact::redact_url;
use continuation::{
    mariadb_continuation, mariadb_purged_gap, mysql_continuation, mysql_purged_gap,
    parse_binlog_state, Continuation,
};

/// Why a server of `source.url` is not followed now.
#[derive(Debug)]
pub enum Refusal {
    /// It did not answer (or a query failed in a way worth retrying).
    Unreachable(SourceError),
    /// It lacks relayed transactions but may catch up.
    Behind(String),
    /// It moved on without relayed transactions.
    Diverged { missing: String, errant: String },
    /// It no longer has the binlog sdl needs next.
    Purged(String),
    /// It replicates but its binlog does not carry what it applies.
    NoReplicaUpdates(String),
    /// Its own definite error (settings, login, TLS, a position of the other flavor).
    Unusable(SourceError),
}

impl Refusal {
    /// The `/status` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Unreachable(_) => "unreachable",
            Refusal::Behind(_) => "behind",
            Refusal::Diverged { .. } => "diverged",
            Refusal::Purged(_) => "purged",
            Refusal::NoReplicaUpdates(_) => "no_replica_updates",
            Refusal::Unusable(_) => "unusable",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Refusal::Unreachable(e) | Refusal::Unusable(e) => e.to_string(),
            Refusal::Behind(detail) => {
                format!("behind what sdl relayed: {detail}; it may catch up, sdl asks again")
            }
            Refusal::Diverged { missing, errant } => format!(
                "diverged: relayed {missing} are not on this server; it has {errant} instead"
            ),
            Refusal::Purged(detail) => format!("the binlog sdl needs next is purged: {detail}"),
            Refusal::NoReplicaUpdates(detail) => detail.clone(),
        }
    }

    /// Waiting cannot change it.
    fn is_definite(&self) -> bool {
        matches!(
            self,
            Refusal::Diverged { .. } | Refusal::Purged(_) | Refusal::Unusable(_)
        )
    }
}

/// A server of `source.url`, connected and checked: safe to stream from.
pub struct Chosen<T> {
    pub conn: Conn,
    pub flavor: Flavor,
    /// What the connector returned besides the connection (the stream's relay).
    pub extra: T,
    pub index: usize,
    /// `server_id N` / `server_uuid U`.
    pub identity: String,
}

/// One pass over `source.url` in order: the first server that connects (with `connect`, settings
/// checked) and is a safe continuation of `relayed` (the WAL's ingest position, `None` for a new
/// WAL); else every server's refusal, in list order.
pub async fn choose<T, F, Fut>(
    cfg: &SourceConfig,
    relayed: Option<&str>,
    connect: F,
) -> Result<Chosen<T>, Vec<(usize, Refusal)>>
where
    F: Fn(SourceConfig) -> Fut,
    Fut: Future<Output = Result<(Conn, Flavor, T), SourceError>>,
{
    let mut refusals = Vec::new();
    for index in 0..cfg.server_count() {
        let (mut conn, flavor, extra) = match connect(cfg.for_server(index)).await {
            Ok(connected) => connected,
            Err(e @ (SourceError::Unreachable { .. } | SourceError::Transient(_))) => {
                refusals.push((index, Refusal::Unreachable(e)));
                continue;
            }
            Err(e) => {
                refusals.push((index, Refusal::Unusable(e)));
                continue;
            }
        };
        let checked = match relayed.map(|text| ResumePoint::parse(flavor, text)) {
            Some(Err(e)) => Err(SourceError::Position(e)),
            Some(Ok(point)) => check_server(&mut conn, flavor, Some(&point)).await,
            None => check_server(&mut conn, flavor, None).await,
        };
        match checked {
            Ok((None, identity)) => {
                return Ok(Chosen {
                    conn,
                    flavor,
                    extra,
                    index,
                    identity,
                })
            }
            Ok((Some(refusal), _)) => refusals.push((index, refusal)),
            Err(e) if e.is_transient() => refusals.push((index, Refusal::Unreachable(e))),
            Err(e) => refusals.push((index, Refusal::Unusable(e))),
        }
        let _ = conn.disconnect().await;
    }
    Err(refusals)
}

/// What the server says about itself: its GTID state, its oldest binlog, its replication.
struct ServerState {
    identity: String,
    continuation: Continuation,
    purged_gap: Option<String>,
    /// It applies replicated transactions without writing them to its binlog.
    replica_without_updates: bool,
}

impl ServerState {
    /// A new WAL has relayed nothing: any history continues it.
    fn with_nothing_relayed(identity: String, replica_without_updates: bool) -> Self {
        Self {
            identity,
            continuation: Continuation::Contains,
            purged_gap: None,
            replica_without_updates,
        }
    }
}

/// Whether the server on `conn` can be followed from `relayed`: `None` when it can, else why
/// not; and its identity.
async fn check_server(
    conn: &mut Conn,
    flavor: Flavor,
    relayed: Option<&ResumePoint>,
) -> Result<(Option<Refusal>, String), SourceError> {
    let state = match (flavor, relayed) {
        (Flavor::Mariadb, relayed) => mariadb_state(conn, relayed).await?,
        (Flavor::Mysql, relayed) => mysql_state(conn, relayed).await?,
    };
    let refusal = if state.replica_without_updates {
        Some(Refusal::NoReplicaUpdates(format!(
            "this server replicates but does not write what it applies to its own binlog ({} is OFF), so its binlog lacks transactions sdl needs: set {} = ON (and restart it), or remove it from source.url",
            updates_variable(flavor),
            updates_variable(flavor)
        )))
    } else {
        match state.continuation {
            Continuation::Contains => state.purged_gap.map(Refusal::Purged),
            Continuation::Behind { detail } => Some(Refusal::Behind(detail)),
            Continuation::Diverged { missing, errant } => {
                Some(Refusal::Diverged { missing, errant })
            }
        }
    };
    Ok((refusal, state.identity))
}

/// A boolean server variable read as text: `OFF` (or `0`).
fn is_off(value: &str) -> bool {
    value.eq_ignore_ascii_case("OFF") || value == "0"
}

fn updates_variable(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Mariadb => "log_slave_updates",
        Flavor::Mysql => "log_replica_updates",
    }
}

/// `gtid_binlog_state`, `log_slave_updates`, `gtid_slave_pos`, `server_id` (as text).
type MariadbVariables = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

async fn mariadb_state(
    conn: &mut Conn,
    relayed: Option<&ResumePoint>,
) -> Result<ServerState, SourceError> {
    let query = "SELECT @@GLOBAL.gtid_binlog_state, CONCAT(@@GLOBAL.log_slave_updates), \
                 @@GLOBAL.gtid_slave_pos, CONCAT(@@GLOBAL.server_id)";
    let row: Option<MariadbVariables> = conn
        .query_first(query)
        .await
        .map_err(|e| query_error(query, e))?;
    let (state, updates, slave_pos, server_id) = row.unwrap_or_default();
    let state = parse_binlog_state(&state.unwrap_or_default().replace('\n', ""))?;
    let replica_without_updates =
        updates.as_deref().is_some_and(is_off) && !slave_pos.unwrap_or_default().trim().is_empty();
    let identity = format!("server_id {}", server_id.unwrap_or_default());
    let Some((Position::Mariadb(relayed), Position::Mariadb(held))) =
        relayed.map(|point| (&point.position, relayed_through(point)))
    else {
        return Ok(ServerState::with_nothing_relayed(
            identity,
            replica_without_updates,
        ));
    };
    let continuation = mariadb_continuation(&held, &state);
    // The oldest binlog's GTID_LIST; a server that will not say (a privilege) is left to the
    // stream, whose purged-binlog error names the gap.
    let purged_gap = match continuation {
        Continuation::Contains => {
            match resolve_start(conn, Flavor::Mariadb, &StartFrom::Earliest).await {
                Ok(Position::Mariadb(oldest)) => mariadb_purged_gap(relayed, &oldest),
                Err(e) if e.is_transient() => return Err(e),
                Ok(_) => None,
                Err(e) => {
                    warn!(target: "sdl::source", error = %e, "could not read where the server's oldest binlog begins; a purged binlog will show as the stream's error");
                    None
                }
            }
        }
        _ => None,
    };
    Ok(ServerState {
        identity,
        continuation,
        purged_gap,
        replica_without_updates,
    })
}

async fn mysql_state(
    conn: &mut Conn,
    relayed: Option<&ResumePoint>,
) -> Result<ServerState, SourceError> {
    let query = "SELECT @@GLOBAL.gtid_executed, @@GLOBAL.gtid_purged, @@GLOBAL.server_uuid";
    let row: Option<(Option<String>, Option<String>, Option<String>)> = conn
        .query_first(query)
        .await
        .map_err(|e| query_error(query, e))?;
    let (executed, purged, uuid) = row.unwrap_or_default();
    let uuid = uuid.unwrap_or_default();
    // MySQL 8.0.26 renamed log_slave_updates; older servers know only the old name.
    let mut updates: Option<Option<String>> = None;
    for query in [
        "SELECT CONCAT(@@GLOBAL.log_replica_updates)",
        "SELECT CONCAT(@@GLOBAL.log_slave_updates)",
    ] {
        if let Ok(value) = conn.query_first::<Option<String>, _>(query).await {
            updates = Some(value.flatten());
            break;
        }
    }
    let executed =
        crate::gtid::MysqlGtidSet::parse(&executed.unwrap_or_default().replace('\n', ""))?;
    let purged = crate::gtid::MysqlGtidSet::parse(&purged.unwrap_or_default().replace('\n', ""))?;
    // A server that has applied other servers' transactions replicates (or did).
    let applied_others = executed.per_source().any(|source| {
        !source
            .to_ascii_lowercase()
            .starts_with(&uuid.to_ascii_lowercase())
    });
    let replica_without_updates =
        applied_others && updates.flatten().as_deref().is_some_and(is_off);
    let identity = format!("server_uuid {uuid}");
    let Some((Position::Mysql(relayed), Position::Mysql(held))) =
        relayed.map(|point| (&point.position, relayed_through(point)))
    else {
        return Ok(ServerState::with_nothing_relayed(
            identity,
            replica_without_updates,
        ));
    };
    Ok(ServerState {
        identity,
        continuation: mysql_continuation(&held, &executed),
        purged_gap: mysql_purged_gap(relayed, &purged),
        replica_without_updates,
    })
}

/// What sdl has relayed from `point`: its position and, when sdl stopped inside a large
/// transaction, that transaction too (its first changes may be in MongoDB already, so a server
/// without it is no continuation, though the stream starts before it).
fn relayed_through(point: &ResumePoint) -> Position {
    let mut held = point.position.clone();
    if let Some(partial) = &point.partial {
        match &mut held {
            Position::Mariadb(position) => {
                if let Ok(gtid) = crate::gtid::MariadbPosition::parse(&partial.gtid) {
                    for gtid in gtid.gtids() {
                        position.advance(*gtid);
                    }
                }
            }
            Position::Mysql(set) => {
                if let Some((source, gno)) = partial.gtid.rsplit_once(':') {
                    if let Ok(gno) = gno.parse() {
                        set.add(source, gno);
                    }
                }
            }
        }
    }
    held
}

/// Start-up with one server in `source.url`: refuses (exit 4) a server that has moved on without
/// transactions sdl relayed (`relayed`, the WAL's position), naming the relayed GTIDs it lacks
/// and its errant ones. (A server that is merely behind is the start-up identity check's.)
pub async fn refuse_if_diverged(
    cfg: &SourceConfig,
    conn: &mut Conn,
    flavor: Flavor,
    relayed: &str,
) -> Result<(), SourceError> {
    let point = ResumePoint::parse(flavor, relayed)?;
    let state = match flavor {
        Flavor::Mariadb => mariadb_state(conn, Some(&point)).await?,
        Flavor::Mysql => mysql_state(conn, Some(&point)).await?,
    };
    match state.continuation {
        Continuation::Diverged { missing, errant } => Err(SourceError::SourceDiverged {
            position: relayed.to_string(),
            detail: format!(
                "the server at {} has moved on without transactions sdl relayed: relayed {missing} are not on this server; it has {errant} instead. A lossy failover is refused, not papered over: bring back a server that has the missing transactions (the old primary, or a replica that received them) and list it in source.url",
                redact_url(&cfg.url)
            ),
        }),
        _ => Ok(()),
    }
}

/// The error when no server of `source.url` can be followed: transient (retry) unless every
/// server answered and none ever can as it is.
pub fn no_server_error(
    cfg: &SourceConfig,
    relayed: Option<&str>,
    refusals: Vec<(usize, Refusal)>,
) -> SourceError {
    let describe = |refusals: &[(usize, Refusal)]| -> String {
        refusals
            .iter()
            .map(|(index, refusal)| {
                format!(
                    "server {} ({}): {}",
                    index + 1,
                    redact_url(&cfg.for_server(*index).url),
                    refusal.detail()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let position = relayed.unwrap_or("(new WAL)").to_string();
    if !refusals.iter().all(|(_, r)| r.is_definite()) {
        return SourceError::Transient(format!(
            "no server of source.url can be followed now: {}",
            describe(&refusals)
        ));
    }
    if refusals
        .iter()
        .any(|(_, r)| matches!(r, Refusal::Diverged { .. }))
    {
        return SourceError::SourceDiverged {
            position,
            detail: format!(
                "every server of source.url answered, and none holds every transaction sdl relayed: {}. A lossy failover is refused, not papered over: bring back a server that has the missing transactions (the old primary, or a replica that received them) and put it in source.url",
                describe(&refusals)
            ),
        };
    }
    if refusals
        .iter()
        .any(|(_, r)| matches!(r, Refusal::Purged(_)))
    {
        return SourceError::BinlogUnavailable {
            position,
            detail: describe(&refusals),
        };
    }
    let (_, first) = refusals
        .into_iter()
        .next()
        .expect("source.url lists at least one server");
    match first {
        Refusal::Unusable(e) | Refusal::Unreachable(e) => e,
        other => SourceError::Transient(other.detail()),
    }
}

/// The binlog stream's connection to the server followed, and that server's settings (every
/// query of the connection's life goes to it, never to another server of the list).
pub struct Connected {
    pub conn: Conn,
    pub flavor: Flavor,
    pub relay: Option<relay::Relay>,
    pub server: SourceConfig,
}

/// The ingester's knowledge of the servers it followed in this run.
#[derive(Debug, Default)]
pub struct Followed {
    /// The index in `source.url` of the server followed last.
    pub index: Option<usize>,
    pub failovers: u64,
}

#[cfg(test)]
mod tests;
