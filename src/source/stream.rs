//! The binlog stream: requested from a GTID position (MariaDB: `slave_connect_state` in GTID strict
//! mode; MySQL: `COM_BINLOG_DUMP_GTID` with the GTID set), with heartbeats every
//! `source.heartbeat_interval`; and what its errors mean.
//!
//! Guarantees: each kind of error 1236 is its own definite error
//! ([`SourceError::BinlogUnavailable`] for purged binlogs, [`SourceError::SourceDiverged`] for a
//! position the source's history lacks, [`SourceError::DuplicateServerId`],
//! [`SourceError::BinlogReadFailed`] for the rest); a packet beyond the 1 GiB a replica accepts is
//! [`SourceError::EventTooLarge`]; a WAL position of the other flavor is refused; anything else
//! (network, server restart) is transient.

use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn};

use super::connect::{ER_ACCESS_DENIED, ER_SPECIFIC_ACCESS_DENIED};
use super::error::query_error;
use super::SourceError;
use crate::config::SourceConfig;
use crate::flavor::Flavor;
use crate::gtid::Position;

/// "Got fatal error from master when reading data from binary log": purged binlogs, a position
/// the source's history lacks, another replica with the same server id, ... told apart by the
/// message ([`classify_binlog_error`]).
const ER_MASTER_FATAL_READING_BINLOG: u16 = 1236;
/// MariaDB: "A slave with the same server_uuid/server_id as this slave has connected to the
/// master", sent to the replica whose dump thread was killed for a newer one with its id.
const ER_SLAVE_SAME_ID: u16 = 4052;

pub(super) async fn open_stream(
    mut conn: Conn,
    flavor: Flavor,
    cfg: &SourceConfig,
    position: &Position,
) -> Result<mysql_async::BinlogStream, SourceError> {
    // Heartbeats let a silent but healthy stream be told apart from a dead connection.
    let heartbeat = format!(
        "SET @master_heartbeat_period = {}",
        cfg.heartbeat_interval.as_nanos()
    );
    conn.query_drop(&heartbeat)
        .await
        .map_err(|e| query_error(&heartbeat, e))?;
    let request = BinlogStreamRequest::new(cfg.server_id);
    let request = match (flavor, position) {
        (Flavor::Mariadb, Position::Mariadb(pos)) => {
            for statement in [
                "SET @mariadb_slave_capability=4".to_string(),
                format!("SET @slave_connect_state='{pos}'"),
                "SET @slave_gtid_strict_mode=1".to_string(),
                "SET @slave_gtid_ignore_duplicates=0".to_string(),
            ] {
                conn.query_drop(&statement)
                    .await
                    .map_err(|e| query_error(&statement, e))?;
            }
            request
        }
        (Flavor::Mysql, Position::Mysql(set)) => {
            let sids = set
                .per_source()
                .map(|text| {
                    text.parse::<mysql_async::Sid<'static>>()
                        .map_err(|e| SourceError::Query {
                            query: "COM_BINLOG_DUMP_GTID".into(),
                            detail: format!("GTID set `{text}` is not accepted: {e}"),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            request.with_gtid().with_gtid_set(sids)
        }
        (_, position) => {
            return Err(SourceError::Setting {
                setting: "source flavor",
                actual: flavor.name().to_string(),
                required: "the flavor that wrote the WAL position",
                fix: match position {
                    Position::Mariadb(_) => "The WAL holds a MariaDB position but the source is MySQL: point source.url at the original server, or use a new WAL directory.",
                    Position::Mysql(_) => "The WAL holds a MySQL position but the source is MariaDB: point source.url at the original server, or use a new WAL directory.",
                },
            })
        }
    };
    conn.get_binlog_stream(request)
        .await
        .map_err(|e| stream_error(cfg.server_id, position, e))
}

/// What an error 1236 (or MariaDB's 4052) from the binlog stream means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinlogErrorKind {
    /// The binlog files holding the position were purged (exit 3).
    Purged,
    /// The position is not in the source's history: sdl is ahead of it (lossy failover).
    Diverged,
    /// Another replica connected with the same server id.
    DuplicateServerId,
    /// Anything else the source cannot go on from.
    Other,
}

/// Tells the kinds of error 1236 apart by their text, as MariaDB and MySQL (5.7 to 9) word them.
fn classify_binlog_error(code: u16, message: &str) -> BinlogErrorKind {
    let m = message.to_ascii_lowercase();
    if code == ER_SLAVE_SAME_ID
        || m.contains("same server_uuid/server_id")
        || m.contains("same server_id")
    {
        BinlogErrorKind::DuplicateServerId
    } else if m.contains("which is not in the master's binlog")
        || m.contains("slave's gtid position is ahead")
        || m.contains("has more gtids than the")
        || m.contains("is missing the gtid")
        || m.contains("conflicts with the binary log")
    {
        // MariaDB: "connecting slave requested to start from GTID d-s-n, which is not in the
        // master's binlog" (and "... the slave has diverged"), "The binlog on the master is
        // missing the GTID ... requested by the slave"; MySQL: "Slave has more GTIDs than the
        // master has" / "Replica has more GTIDs than the source has".
        BinlogErrorKind::Diverged
    } else if m.contains("purged")
        || m.contains("could not find first log file name")
        || m.contains("could not find gtid state requested")
    {
        // MariaDB: "Could not find GTID state requested by slave in any binlog files. Probably
        // the slave state is too old and required binlog files have been purged."; MySQL: "...
        // the master has purged binary logs containing GTIDs that the slave requires", "Cannot
        // replicate because the source purged required binary logs", "Could not find first log
        // file name in binary log index file".
        BinlogErrorKind::Purged
    } else {
        BinlogErrorKind::Other
    }
}

pub(super) fn stream_error(
    server_id: u32,
    position: &Position,
    e: mysql_async::Error,
) -> SourceError {
    if is_packet_too_large(&e) {
        return SourceError::EventTooLarge {
            position: position.to_string(),
            detail: e.to_string(),
        };
    }
    match e {
        mysql_async::Error::Server(s)
            if s.code == ER_MASTER_FATAL_READING_BINLOG || s.code == ER_SLAVE_SAME_ID =>
        {
            let position = position.to_string();
            let detail = s.message;
            match classify_binlog_error(s.code, &detail) {
                BinlogErrorKind::Purged => SourceError::BinlogUnavailable { position, detail },
                BinlogErrorKind::Diverged => SourceError::SourceDiverged { position, detail },
                BinlogErrorKind::DuplicateServerId => {
                    SourceError::DuplicateServerId { server_id, detail }
                }
                BinlogErrorKind::Other => SourceError::BinlogReadFailed { position, detail },
            }
        }
        mysql_async::Error::Server(s)
            if s.code == ER_ACCESS_DENIED || s.code == ER_SPECIFIC_ACCESS_DENIED =>
        {
            SourceError::AccessDenied {
                url: "(binlog stream)".into(),
                detail: s.message,
                check: "the sdl user's privileges".into(),
            }
        }
        other => SourceError::Transient(other.to_string()),
    }
}

/// The client's packet limit was exceeded (only possible beyond 1 GiB, see
/// `connect::opts_builder`).
fn is_packet_too_large(e: &mysql_async::Error) -> bool {
    use mysql_async::{DriverError, IoError};
    match e {
        mysql_async::Error::Driver(DriverError::PacketTooLarge) => true,
        mysql_async::Error::Io(IoError::Io(io)) => io
            .get_ref()
            .and_then(|inner| {
                inner.downcast_ref::<mysql_common::proto::codec::error::PacketCodecError>()
            })
            .is_some_and(|inner| {
                matches!(
                    inner,
                    mysql_common::proto::codec::error::PacketCodecError::PacketTooLarge
                )
            }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_1236_texts_are_told_apart() {
        use BinlogErrorKind::*;
        for (code, text, kind) in [
            (1236, "Could not find GTID state requested by slave in any binlog files. Probably the slave state is too old and required binlog files have been purged.", Purged),
            (1236, "Could not find first log file name in binary log index file", Purged),
            (1236, "The slave is connecting using CHANGE MASTER TO MASTER_AUTO_POSITION = 1, but the master has purged binary logs containing GTIDs that the slave requires.", Purged),
            (1236, "Cannot replicate because the source purged required binary logs. Replicate the missing transactions from elsewhere, or provision a new replica from backup.", Purged),
            (1236, "Error: connecting slave requested to start from GTID 0-1-1005, which is not in the master's binlog", Diverged),
            (1236, "Error: connecting slave requested to start from GTID 0-2-980, which is not in the master's binlog. Since the master's binlog contains GTIDs with higher sequence numbers, it probably means that the slave has diverged due to executing extra erroneous transactions", Diverged),
            (1236, "The binlog on the master is missing the GTID 0-1-7 requested by the slave (even though both a prior and a subsequent sequence number does exist), and GTID strict mode is enabled", Diverged),
            (1236, "Slave has more GTIDs than the master has, using the master's SERVER_UUID. This may indicate that the end of the binary log was truncated", Diverged),
            (1236, "Replica has more GTIDs than the source has, using the source's SERVER_UUID.", Diverged),
            (1236, "A slave with the same server_uuid/server_id as this slave has connected to the master; the first event 'mysql-bin.000001' at 4", DuplicateServerId),
            (1236, "A replica with the same server_uuid/server_id as this replica has connected to the source", DuplicateServerId),
            (4052, "A slave with the same server_uuid/server_id is already connected", DuplicateServerId),
            (1236, "binlog truncated in the middle of event; consider out of disk space on master", Other),
        ] {
            assert_eq!(classify_binlog_error(code, text), kind, "{text}");
        }
    }
}
