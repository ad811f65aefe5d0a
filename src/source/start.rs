//! Where the ingester starts and whether it still can: `source.start` (`current`, `earliest` or a
//! GTID position) resolved into a concrete position on this server; whether the source can still
//! stream the binlog from a position (before WAL repair rewinds to it); and, when the binlogs
//! were purged, which transactions are missing.

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::connect::connect;
use super::error::query_error;
use super::stream::{open_stream, stream_error};
use super::SourceError;
use crate::config::{SourceConfig, StartFrom};
use crate::flavor::Flavor;
use crate::gtid::Position;

async fn query_string(conn: &mut Conn, query: &str) -> Result<String, SourceError> {
    conn.query_first::<Option<String>, _>(query)
        .await
        .map_err(|e| query_error(query, e))
        .map(|v| v.flatten().unwrap_or_default())
}

/// Resolves `source.start` into a concrete position on this server.
pub async fn resolve_start(
    conn: &mut Conn,
    flavor: Flavor,
    start: &StartFrom,
) -> Result<Position, SourceError> {
    let text = match (start, flavor) {
        (StartFrom::Gtid(text), _) => text.clone(),
        (StartFrom::Current, Flavor::Mariadb) => {
            query_string(conn, "SELECT @@GLOBAL.gtid_binlog_pos").await?
        }
        (StartFrom::Current, Flavor::Mysql) => {
            query_string(conn, "SELECT @@GLOBAL.gtid_executed").await?
        }
        (StartFrom::Earliest, Flavor::Mysql) => {
            query_string(conn, "SELECT @@GLOBAL.gtid_purged").await?
        }
        (StartFrom::Earliest, Flavor::Mariadb) => mariadb_earliest(conn).await?,
    };
    Ok(Position::parse(flavor, &text.replace('\n', ""))?)
}

/// The GTID state at the start of the oldest binlog file the server still has: its GTID_LIST.
async fn mariadb_earliest(conn: &mut Conn) -> Result<String, SourceError> {
    let logs: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| query_error("SHOW BINARY LOGS", e))?;
    let first: String = logs
        .first()
        .and_then(|row| row.get::<String, _>(0))
        .ok_or_else(|| SourceError::Query {
            query: "SHOW BINARY LOGS".into(),
            detail: "the server lists no binary logs".into(),
        })?;
    let query = format!(
        "SHOW BINLOG EVENTS IN '{}' LIMIT 10",
        first.replace('\'', "''")
    );
    let events: Vec<mysql_async::Row> = conn
        .query(&query)
        .await
        .map_err(|e| query_error(&query, e))?;
    for row in events {
        let kind: Option<String> = row.get("Event_type");
        if kind.as_deref() == Some("Gtid_list") {
            let info: String = row.get("Info").unwrap_or_default();
            return Ok(last_per_domain(info.trim_matches(['[', ']', ' '])));
        }
    }
    Err(SourceError::Query {
        query,
        detail: format!("no Gtid_list event at the start of {first}"),
    })
}

/// A GTID_LIST names the binlog state: the last GTID of each (domain, server id), so a domain
/// that has had several primaries appears once per server (`0-1-100,0-2-150`). The position
/// before the binlog is the last of each domain: its highest sequence number. Text that does not
/// parse is returned as it is, for the caller's parse to name.
fn last_per_domain(list: &str) -> String {
    let mut last: std::collections::BTreeMap<u32, crate::gtid::MariadbGtid> = Default::default();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Ok(position) = crate::gtid::MariadbPosition::parse(part) else {
            return list.to_string();
        };
        for gtid in position.gtids() {
            let kept = last.entry(gtid.domain).or_insert(*gtid);
            if gtid.seq > kept.seq {
                *kept = *gtid;
            }
        }
    }
    last.values()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Asks the source whether it can still stream the binlog from `position` (nothing is read
/// beyond the first event). Used before WAL repair, which rewinds to such a position.
pub async fn binlog_available(
    cfg: &SourceConfig,
    position: &Position,
) -> Result<bool, SourceError> {
    let (conn, flavor) = connect(cfg).await?;
    let mut stream = match open_stream(conn, flavor, cfg, position).await {
        Ok(stream) => stream,
        Err(SourceError::BinlogUnavailable { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    let first = tokio::time::timeout(cfg.connect_timeout, stream.next()).await;
    let _ = stream.close().await;
    match first {
        Ok(Some(Ok(_))) => Ok(true),
        Ok(Some(Err(e))) => match stream_error(cfg.server_id, position, e) {
            SourceError::BinlogUnavailable { .. } => Ok(false),
            other => Err(other),
        },
        Ok(None) => Err(SourceError::Transient(
            "the source closed the binlog stream".into(),
        )),
        Err(_) => Err(SourceError::Transient(format!(
            "no binlog event within {:?}",
            cfg.connect_timeout
        ))),
    }
}

/// Adds to a purged-binlog error where the server's binlogs now begin, so the operator sees which
/// transactions are missing. Other errors pass through unchanged.
pub(super) async fn explain_unavailable(
    cfg: &SourceConfig,
    flavor: Flavor,
    e: SourceError,
) -> SourceError {
    let SourceError::BinlogUnavailable { position, detail } = e else {
        return e;
    };
    let oldest = async {
        let (mut conn, _) = connect(cfg).await?;
        resolve_start(&mut conn, flavor, &StartFrom::Earliest).await
    };
    let detail = match oldest.await {
        Ok(oldest) => format!(
            "{detail} The oldest binlog the server still has begins after GTID position {oldest}: the transactions after {position} up to {oldest} are missing."
        ),
        Err(_) => detail,
    };
    SourceError::BinlogUnavailable { position, detail }
}

#[cfg(test)]
mod tests {
    use super::last_per_domain;

    #[test]
    fn a_gtid_list_with_several_servers_in_a_domain_gives_each_domains_last_gtid() {
        assert_eq!(last_per_domain("0-1-100,0-2-150,1-1-7"), "0-2-150,1-1-7");
        assert_eq!(last_per_domain("0-2-150, 0-1-100"), "0-2-150");
        assert_eq!(last_per_domain("0-1-5"), "0-1-5");
        assert_eq!(last_per_domain(""), "");
        assert_eq!(last_per_domain("not a gtid"), "not a gtid");
    }
}
