//! The source's identity: is the server behind `source.url` still the history sdl relayed?
//!
//! # Guarantees
//! - At start, before anything is read from the binlog, every position sdl has relayed under this
//!   `source.name` (the WAL's ingest position, and MongoDB's offset when MongoDB answers) must be
//!   contained in the source's own history as it reports it now: MariaDB's `gtid_binlog_pos` has
//!   every domain of the position at a sequence number at least as high; MySQL's `gtid_executed`
//!   contains the whole GTID set (so its server UUIDs too). Otherwise the GTIDs went backwards or
//!   belong to another history (`RESET MASTER`, a re-seeded or replaced server, another server
//!   behind the same `source.name`): resuming would skip the new history's changes or give them
//!   ids that already stand for other changes. sdl refuses to start with
//!   [`HistoryError::NotContained`], naming both positions and what to do (exit code 4, as for a diverged source).
//! - MariaDB, where the GTIDs alone cannot tell (a reset server that has since written *more*
//!   transactions than were relayed): the last relayed transactions are looked up where they were
//!   read, with `BINLOG_GTID_POS(file, pos)` on the binlog file and position of their first change
//!   ([`Landmark`], from the WAL's last record and from MongoDB's last documents). If the server
//!   still has that file but the GTID there is another (or no event starts there), the history is
//!   another one: refused the same way. A file the server no longer has proves nothing and is
//!   passed over.
//! - With several servers in `source.url` (`crate::source::failover`), binlog file:position are
//!   coordinates on the server they were read from, not on another: landmarks are looked up only
//!   on that server ([`landmarks_read_on`]), as recorded in `wal.dir` when the ingester switched
//!   servers. After a failover, the landmarks read on the old primary are not checked on the new
//!   one; the GTID containment check above still is. MongoDB's landmarks are not checked with
//!   several servers: MongoDB does not record which server a document was read on.
//! - What it still cannot see: a reset server whose binlog no longer holds the landmarks' files,
//!   and whose GTIDs reach past the relayed ones. Its reused ids are still never taken for the old
//!   changes: a duplicate `_id` counts as applied only when the stored document has the same
//!   content hash (`crate::sink`), else forwarding stops.

use crate::flavor::Flavor;
use crate::gtid::{not_contained, position_variable, GtidParseError, Position, ResumePoint};

/// A position sdl has relayed under this source.name: where it is kept ("the WAL", "MongoDB's
/// offset"), its text as stored, and that text parsed once for the source's flavor.
#[derive(Debug)]
pub struct RelayedPosition {
    pub what: &'static str,
    pub text: String,
    pub parsed: Result<ResumePoint, GtidParseError>,
}

impl RelayedPosition {
    pub fn parse(flavor: Flavor, what: &'static str, text: String) -> Self {
        let parsed = ResumePoint::parse(flavor, &text);
        Self { what, text, parsed }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("the source's GTID history does not contain what sdl already relayed under source.name `{source_name}`: {relayed_what} is at {relayed}, but the server's current position (`{variable}`) is {current} ({detail}). The server's GTIDs went backwards or belong to another history (RESET MASTER, a re-seeded or replaced server, or another server behind the same source.name); continuing would skip its new changes or mistake them for ones already relayed. Fix: if this is another server or a deliberately reset one, give it a new source.name (its changes then get their own ids and offset) and a new, empty WAL directory; if source.url points at the wrong server, point it back. To relay this server's new history under the same name deliberately, stop sdl, move the WAL directory away, and delete the offset document (db.binlog_offsets.deleteOne({{_id: \"{source_name}\"}})) so sdl starts at source.start")]
    NotContained {
        source_name: String,
        relayed_what: &'static str,
        relayed: String,
        variable: &'static str,
        current: String,
        detail: String,
    },
}

/// Where a relayed transaction was read: its GTID and the binlog file and position of its first
/// change (as the change documents' `meta.file` / `meta.pos` and the WAL record say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landmark {
    /// "the WAL" or "MongoDB".
    pub what: &'static str,
    pub gtid: String,
    pub file: String,
    pub pos: u64,
}

/// Checks each MariaDB landmark against the server's binlog: the event at `file`:`pos` must
/// belong to the transaction `gtid`. Landmarks in files the server no longer has are skipped.
pub async fn check_landmarks(
    conn: &mut mysql_async::Conn,
    source_name: &str,
    landmarks: &[Landmark],
) -> Result<(), CheckError> {
    use mysql_async::prelude::Queryable;
    if landmarks.is_empty() {
        return Ok(());
    }
    let logs: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| CheckError::Query(format!("SHOW BINARY LOGS: {e}")))?;
    let files: Vec<String> = logs
        .iter()
        .filter_map(|row| row.get::<String, _>(0))
        .collect();
    for landmark in landmarks {
        if !files.contains(&landmark.file) || landmark.file.contains('\'') {
            continue;
        }
        let query = format!(
            "SELECT BINLOG_GTID_POS('{}', {})",
            landmark.file, landmark.pos
        );
        let found: Option<Option<String>> = conn
            .query_first(&query)
            .await
            .map_err(|e| CheckError::Query(format!("{query}: {e}")))?;
        let found = found.flatten().unwrap_or_default();
        if landmark_matches(&landmark.gtid, &found) {
            continue;
        }
        let current =
            crate::source::resolve_start(conn, Flavor::Mariadb, &crate::config::StartFrom::Current)
                .await
                .map(|p| p.to_string())
                .unwrap_or_else(|e| format!("(unknown: {e})"));
        return Err(CheckError::History(Box::new(HistoryError::NotContained {
            source_name: source_name.to_string(),
            relayed_what: landmark.what,
            relayed: format!(
                "transaction {} read at {}:{}",
                landmark.gtid, landmark.file, landmark.pos
            ),
            variable: position_variable(Flavor::Mariadb),
            current,
            detail: if found.is_empty() {
                format!(
                    "no event of transaction {} starts at {}:{} in the server's binlog now",
                    landmark.gtid, landmark.file, landmark.pos
                )
            } else {
                format!(
                    "the server's binlog has another transaction at {}:{}: its GTID position there is {found}",
                    landmark.file, landmark.pos
                )
            },
        })));
    }
    Ok(())
}

/// Where MongoDB's last documents were read (a [`Landmark`]'s `what`).
pub const MONGODB_LANDMARK: &str = "MongoDB";

/// The landmarks that were read on the server at `index` of `source.url`, identified as
/// `identity` (`server_id N`), given the server the ingester recorded following (`recorded`,
/// since which WAL position). Only the WAL's own: MongoDB does not record which server its
/// documents were read on, and with several servers (or another instance under a lease) they may
/// come from any of them. Of the WAL's: when nothing is recorded (a WAL written with one server
/// in `source.url`), all of them on the first server (where they were most likely read) and none
/// on another; none when the recorded server is another; else those of transactions after the
/// switch to it.
pub fn landmarks_read_on(
    index: usize,
    identity: &str,
    recorded: Option<&crate::source::failover::record::FollowedServer>,
    landmarks: &[Landmark],
) -> Vec<Landmark> {
    let landmarks: Vec<Landmark> = landmarks
        .iter()
        .filter(|landmark| landmark.what != MONGODB_LANDMARK)
        .cloned()
        .collect();
    let landmarks = landmarks.as_slice();
    let Some(recorded) = recorded else {
        return match index {
            0 => landmarks.to_vec(),
            _ => Vec::new(),
        };
    };
    if recorded.identity != identity {
        return Vec::new();
    }
    let since = ResumePoint::parse(Flavor::Mariadb, &recorded.since).ok();
    let Some(Position::Mariadb(since)) = since.map(|point| point.position) else {
        return landmarks.to_vec();
    };
    landmarks
        .iter()
        .filter(|landmark| {
            crate::gtid::MariadbPosition::parse(&landmark.gtid).is_ok_and(|gtid| {
                gtid.gtids()
                    .all(|g| since.domain(g.domain).is_none_or(|s| g.seq > s.seq))
            })
        })
        .cloned()
        .collect()
}

/// Whether `BINLOG_GTID_POS` at a transaction's event (`found`) names that transaction (`gtid`).
pub fn landmark_matches(gtid: &str, found: &str) -> bool {
    let (Ok(wanted), Ok(found)) = (
        crate::gtid::MariadbPosition::parse(gtid),
        crate::gtid::MariadbPosition::parse(found),
    ) else {
        return false;
    };
    let matches = wanted
        .gtids()
        .all(|g| found.domain(g.domain).is_some_and(|f| f == g));
    matches
}

/// A failed start-up identity check: the source's history, or a query that could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    History(Box<HistoryError>),
    #[error("checking the source's binlog history: {0}")]
    Query(String),
}

/// Checks each relayed position ("the WAL", "MongoDB's offset") against the source's `current`
/// position.
pub fn check(
    flavor: Flavor,
    source_name: &str,
    current: &Position,
    relayed: &[&RelayedPosition],
) -> Result<(), Box<HistoryError>> {
    for relayed in relayed {
        if relayed.text.trim().is_empty() {
            continue;
        }
        // A position this flavor cannot parse is reported where it is used; here it is not
        // evidence of another history.
        let Ok(point) = &relayed.parsed else {
            continue;
        };
        if let Some(detail) = not_contained(current, &point.position) {
            return Err(Box::new(HistoryError::NotContained {
                source_name: source_name.to_string(),
                relayed_what: relayed.what,
                relayed: relayed.text.clone(),
                variable: position_variable(flavor),
                current: current.to_string(),
                detail,
            }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maria(text: &str) -> Position {
        Position::parse(Flavor::Mariadb, text).unwrap()
    }

    fn mysql(text: &str) -> Position {
        Position::parse(Flavor::Mysql, text).unwrap()
    }

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "4e11fa47-71ca-11e1-9e33-c80aa9429562";

    #[test]
    fn mariadb_history_must_reach_every_relayed_domain() {
        assert!(not_contained(&maria("0-1-10,1-2-3"), &maria("0-1-10")).is_none());
        // A failover to another server id continues the domain's sequence.
        assert!(not_contained(&maria("0-2-11"), &maria("0-1-10")).is_none());
        let behind = not_contained(&maria("0-1-2"), &maria("0-1-10")).unwrap();
        assert!(
            behind.contains("0-1-2") && behind.contains("0-1-10"),
            "{behind}"
        );
        let gone = not_contained(&maria(""), &maria("0-1-10")).unwrap();
        assert!(gone.contains("domain 0"), "{gone}");
    }

    #[test]
    fn mysql_history_must_contain_the_relayed_set() {
        assert!(
            not_contained(&mysql(&format!("{A}:1-100")), &mysql(&format!("{A}:1-50"))).is_none()
        );
        let missing = not_contained(
            &mysql(&format!("{A}:1-20,{B}:1-5")),
            &mysql(&format!("{A}:1-30:40,{B}:1-5")),
        )
        .unwrap();
        assert!(missing.contains(&format!("{A}:21-30:40")), "{missing}");
        let other =
            not_contained(&mysql(&format!("{B}:1-100")), &mysql(&format!("{A}:1-3"))).unwrap();
        assert!(other.contains(A), "{other}");
    }

    #[test]
    fn a_landmark_matches_only_its_own_transaction() {
        assert!(landmark_matches("0-1-7", "0-1-7"));
        assert!(landmark_matches("0-1-7", "1-2-3,0-1-7"));
        assert!(!landmark_matches("0-1-7", "0-1-3"));
        assert!(!landmark_matches("0-1-7", "0-2-7"));
        assert!(!landmark_matches("0-1-7", ""));
    }

    #[test]
    fn landmarks_are_checked_only_on_the_server_they_were_read_from() {
        use crate::source::failover::record::FollowedServer;
        let landmark = |gtid: &str| Landmark {
            what: "the WAL",
            gtid: gtid.into(),
            file: "mariadb-bin.000001".into(),
            pos: 400,
        };
        let landmarks = [landmark("0-1-90"), landmark("0-2-120")];
        let replica = FollowedServer {
            url: "mysql://sdl:***@db2:3306".into(),
            identity: "server_id 2".into(),
            since: "0-1-100".into(),
        };
        assert_eq!(
            landmarks_read_on(0, "server_id 1", None, &landmarks),
            landmarks
        );
        assert!(landmarks_read_on(1, "server_id 2", None, &landmarks).is_empty());
        assert!(landmarks_read_on(0, "server_id 1", Some(&replica), &landmarks).is_empty());
        assert_eq!(
            landmarks_read_on(1, "server_id 2", Some(&replica), &landmarks),
            [landmark("0-2-120")]
        );
        // MongoDB's last documents may have been read on any server (or by another instance):
        // never looked up with several servers.
        let from_mongodb = Landmark {
            what: MONGODB_LANDMARK,
            ..landmark("0-2-130")
        };
        assert!(
            landmarks_read_on(0, "server_id 1", None, std::slice::from_ref(&from_mongodb))
                .is_empty()
        );
        assert!(landmarks_read_on(1, "server_id 2", Some(&replica), &[from_mongodb]).is_empty());
    }

    #[test]
    fn a_refusal_names_both_positions_and_the_fix() {
        let e = check(
            Flavor::Mariadb,
            "orders",
            &maria("0-1-2"),
            &[&RelayedPosition::parse(
                Flavor::Mariadb,
                "the WAL",
                "0-1-7; partial 0-1-8:500".into(),
            )],
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "orders",
            "0-1-7; partial 0-1-8:500",
            "0-1-2",
            "gtid_binlog_pos",
            "RESET MASTER",
            "new source.name",
        ] {
            assert!(e.contains(needle), "`{needle}` missing from: {e}");
        }
    }
}
