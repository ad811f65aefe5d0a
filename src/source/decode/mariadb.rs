//! MariaDB's own binlog events: the event types `mysql_common` does not know, and the GTID event
//! that begins each MariaDB transaction (its flags tell a standalone DDL from a transaction, and
//! an XA transaction, which sdl refuses).

use crate::gtid::MariadbGtid;

/// MariaDB event types that `mysql_common` does not know.
pub(super) mod mariadb_event {
    pub const ANNOTATE_ROWS: u8 = 160;
    pub const BINLOG_CHECKPOINT: u8 = 161;
    pub const GTID: u8 = 162;
    pub const GTID_LIST: u8 = 163;
    pub const START_ENCRYPTION: u8 = 164;
    pub const QUERY_COMPRESSED: u8 = 165;
    pub const ROWS_COMPRESSED_FIRST: u8 = 166;
    pub const ROWS_COMPRESSED_LAST: u8 = 171;
}

/// MariaDB GTID event flags (sql/log_event.h).
const FL_STANDALONE: u8 = 1;
const FL_GROUP_COMMIT_ID: u8 = 2;
const FL_PREPARED_XA: u8 = 64;
const FL_COMPLETED_XA: u8 = 128;

pub(super) struct ParsedMariadbGtid {
    gtid: MariadbGtid,
    flags: u8,
}

/// MariaDB GTID event body: seq_no u64 LE, domain_id u32 LE, flags u8, then optional fields.
pub(super) fn parse_mariadb_gtid(body: &[u8], server_id: u32) -> Result<ParsedMariadbGtid, String> {
    if body.len() < 13 {
        return Err(format!(
            "GTID event body is {} bytes, expected at least 13",
            body.len()
        ));
    }
    let seq = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
    let domain = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
    let flags = body[12];
    if flags & FL_GROUP_COMMIT_ID != 0 && body.len() < 21 {
        return Err("GTID event announces a commit id but is too short to hold it".into());
    }
    Ok(ParsedMariadbGtid {
        gtid: MariadbGtid {
            domain,
            server: server_id,
            seq,
        },
        flags,
    })
}

impl ParsedMariadbGtid {
    /// The transaction this GTID event begins: its GTID and whether it is a standalone statement
    /// (DDL). An XA transaction, which sdl does not support, is refused with the reason.
    pub(super) fn transaction(self) -> Result<(MariadbGtid, bool), String> {
        if self.flags & (FL_PREPARED_XA | FL_COMPLETED_XA) != 0 {
            return Err(format!(
                "transaction {} is an XA transaction, which sdl does not support",
                self.gtid
            ));
        }
        Ok((self.gtid, self.flags & FL_STANDALONE != 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gtid_body(seq: u64, domain: u32, flags: u8) -> Vec<u8> {
        let mut body = seq.to_le_bytes().to_vec();
        body.extend(domain.to_le_bytes());
        body.push(flags);
        if flags & FL_GROUP_COMMIT_ID != 0 {
            body.extend(7u64.to_le_bytes());
        }
        body
    }

    #[test]
    fn a_gtid_event_begins_a_transaction_or_a_standalone_statement_and_xa_is_refused() {
        let (gtid, standalone) = parse_mariadb_gtid(&gtid_body(42, 3, 0), 9)
            .unwrap()
            .transaction()
            .unwrap();
        assert_eq!(gtid.to_string(), "3-9-42");
        assert!(!standalone);

        let (_, standalone) =
            parse_mariadb_gtid(&gtid_body(43, 3, FL_STANDALONE | FL_GROUP_COMMIT_ID), 9)
                .unwrap()
                .transaction()
                .unwrap();
        assert!(standalone);

        for xa in [FL_PREPARED_XA, FL_COMPLETED_XA] {
            let refused = parse_mariadb_gtid(&gtid_body(44, 0, xa), 1)
                .unwrap()
                .transaction();
            assert_eq!(
                refused.unwrap_err(),
                "transaction 0-1-44 is an XA transaction, which sdl does not support"
            );
        }
        assert!(parse_mariadb_gtid(&gtid_body(45, 0, FL_GROUP_COMMIT_ID)[..13], 1).is_err());
    }
}
