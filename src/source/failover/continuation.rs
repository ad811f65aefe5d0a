//! Is a server a safe continuation of what sdl relayed? The GTID arithmetic of source failover,
//! without a network: the server's GTID state in, a [`Continuation`] out.
//!
//! # Guarantees
//! - [`Continuation::Contains`] only when the server's binlog holds every transaction sdl relayed:
//!   MariaDB, for each domain of the relayed position `d-s-n`, the server's `gtid_binlog_state`
//!   has server `s` in domain `d` at a sequence number `>= n` (with `gtid_strict_mode`, sequence
//!   numbers only grow, so it holds `d-s-n`); MySQL, `gtid_executed` contains the relayed set.
//! - [`Continuation::Behind`] when the server lacks relayed transactions but has nothing in their
//!   place: it may catch up (a lagging replica), so it is worth asking again later.
//! - [`Continuation::Diverged`] when it has moved on without them: it holds transactions sdl never
//!   relayed where sdl relayed others (errant GTIDs, a lossy failover). Both sets are named:
//!   "relayed 0-1-99..0-1-100 are not on this server; it has 0-2-99..0-2-120 instead".
//! - [`purged_gap`]: the server no longer has the binlog sdl needs next (MariaDB: its oldest
//!   binlog's GTID_LIST is past the relayed position in some domain; MySQL: `gtid_purged` holds
//!   GTIDs the relayed set lacks).
//!
//! # Limits
//! MariaDB's state keeps only the last sequence number per domain and server id, so where the
//! histories forked is known only when the server holds some transaction of the relayed
//! position's server id in that domain. When it holds none, a server below the relayed sequence
//! number counts as behind (an old primary that has not seen its successor's transactions looks
//! the same), and one at or past it as diverged. A history that failed over and back within one
//! domain while the server was away can make its older transactions look errant. MySQL: a server
//! missing relayed GTIDs is behind when every GTID it has is relayed, diverged otherwise.

use std::fmt;

use crate::gtid::{GtidParseError, MariadbGtid, MariadbPosition, MysqlGtidSet};

/// How a server's history relates to what sdl relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continuation {
    /// The server has every relayed transaction: streaming from the relayed position is exact.
    Contains,
    /// The server lacks relayed transactions and has nothing in their place (yet).
    Behind { detail: String },
    /// The server has moved on without relayed transactions: `missing` are relayed GTIDs it
    /// lacks, `errant` its own that sdl never relayed in their place.
    Diverged { missing: String, errant: String },
}

impl fmt::Display for Continuation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Continuation::Contains => f.write_str("holds every relayed transaction"),
            Continuation::Behind { detail } => write!(f, "behind: {detail}"),
            Continuation::Diverged { missing, errant } => write!(
                f,
                "diverged: relayed {missing} are not on this server; it has {errant} instead"
            ),
        }
    }
}

/// Parses `@@gtid_binlog_state`: one `domain-server-seq` per domain and server id.
pub fn parse_binlog_state(text: &str) -> Result<Vec<MariadbGtid>, GtidParseError> {
    let mut state = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let position = MariadbPosition::parse(part)?;
        state.extend(position.gtids().copied());
    }
    Ok(state)
}

/// A run of one server's sequence numbers in a domain: `d-s-a..d-s-b`, or `d-s-a` alone.
fn run(domain: u32, server: u32, from: u64, to: u64) -> String {
    if from >= to {
        format!("{domain}-{server}-{to}")
    } else {
        format!("{domain}-{server}-{from}..{domain}-{server}-{to}")
    }
}

/// MariaDB: the server's `gtid_binlog_state` (`state`) against the relayed position.
pub fn mariadb_continuation(relayed: &MariadbPosition, state: &[MariadbGtid]) -> Continuation {
    let mut missing = Vec::new();
    let mut errant = Vec::new();
    let mut behind = Vec::new();
    for wanted in relayed.gtids() {
        let in_domain: Vec<&MariadbGtid> =
            state.iter().filter(|g| g.domain == wanted.domain).collect();
        let own = in_domain
            .iter()
            .find(|g| g.server == wanted.server)
            .map(|g| g.seq);
        if own.is_some_and(|seq| seq >= wanted.seq) {
            continue;
        }
        let top = in_domain.iter().max_by_key(|g| g.seq).copied();
        let others_past = |after: u64| -> Vec<&MariadbGtid> {
            in_domain
                .iter()
                .filter(|g| g.server != wanted.server && g.seq > after)
                .copied()
                .collect()
        };
        let (lacks, replaced) = match own {
            // The fork is right after the last transaction of the relayed server it has.
            Some(last) => (
                run(wanted.domain, wanted.server, last + 1, wanted.seq),
                others_past(last)
                    .iter()
                    .map(|g| run(g.domain, g.server, last + 1, g.seq))
                    .collect::<Vec<_>>(),
            ),
            // None of the relayed server's transactions: diverged only when the server is past
            // the relayed sequence number without it.
            None => (
                format!(
                    "{wanted} (and the transactions of server id {} before it)",
                    wanted.server
                ),
                others_past(wanted.seq.saturating_sub(1))
                    .iter()
                    .map(|g| format!("transactions up to {g}"))
                    .collect(),
            ),
        };
        if replaced.is_empty() {
            behind.push(match top {
                Some(top) => format!(
                    "domain {} is at {top}, behind {wanted} relayed",
                    wanted.domain
                ),
                None => format!(
                    "domain {} ({wanted} relayed) is not in the server's binlog",
                    wanted.domain
                ),
            });
        } else {
            missing.push(lacks);
            errant.extend(replaced);
        }
    }
    if !missing.is_empty() {
        return Continuation::Diverged {
            missing: missing.join(", "),
            errant: errant.join(", "),
        };
    }
    if !behind.is_empty() {
        return Continuation::Behind {
            detail: behind.join("; "),
        };
    }
    Continuation::Contains
}

/// MySQL: the server's `gtid_executed` against the relayed set.
pub fn mysql_continuation(relayed: &MysqlGtidSet, executed: &MysqlGtidSet) -> Continuation {
    let missing = relayed.missing_from(executed);
    if missing.is_empty() {
        return Continuation::Contains;
    }
    let errant = executed.missing_from(relayed);
    if errant.is_empty() {
        Continuation::Behind {
            detail: format!("gtid_executed lacks {missing}, relayed"),
        }
    } else {
        Continuation::Diverged {
            missing: missing.to_string(),
            errant: errant.to_string(),
        }
    }
}

/// MariaDB: what sdl needs next that the server purged, given its oldest binlog's GTID_LIST
/// (`oldest`, the state before its first transaction); `None` when nothing is.
pub fn mariadb_purged_gap(relayed: &MariadbPosition, oldest: &MariadbPosition) -> Option<String> {
    let gaps: Vec<String> = oldest
        .gtids()
        .filter_map(|first| match relayed.domain(first.domain) {
            Some(at) if at.seq >= first.seq => None,
            Some(at) => Some(format!(
                "domain {}: the transactions after {at} up to {first} are purged",
                first.domain
            )),
            None => Some(format!(
                "domain {}: sdl relayed none of it, and its transactions up to {first} are purged",
                first.domain
            )),
        })
        .collect();
    (!gaps.is_empty()).then(|| gaps.join("; "))
}

/// MySQL: the purged GTIDs (`gtid_purged`) sdl has not relayed; `None` when there are none.
pub fn mysql_purged_gap(relayed: &MysqlGtidSet, purged: &MysqlGtidSet) -> Option<String> {
    let gap = purged.missing_from(relayed);
    (!gap.is_empty()).then(|| format!("gtid_purged holds {gap}, which sdl has not relayed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maria(text: &str) -> MariadbPosition {
        MariadbPosition::parse(text).unwrap()
    }

    fn state(text: &str) -> Vec<MariadbGtid> {
        parse_binlog_state(text).unwrap()
    }

    fn mysql(text: &str) -> MysqlGtidSet {
        MysqlGtidSet::parse(text).unwrap()
    }

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "4e11fa47-71ca-11e1-9e33-c80aa9429562";

    #[test]
    fn a_replica_holding_the_relayed_gtid_is_a_continuation() {
        // Caught up, ahead, or promoted and written on since (another server id, same domain).
        for server in ["0-1-100", "0-1-130", "0-1-100,0-2-120", "0-1-100,1-5-3"] {
            assert_eq!(
                mariadb_continuation(&maria("0-1-100"), &state(server)),
                Continuation::Contains,
                "{server}"
            );
        }
        assert_eq!(
            mariadb_continuation(&maria("0-1-100,1-5-3"), &state("1-5-3,0-1-100")),
            Continuation::Contains
        );
    }

    #[test]
    fn a_replica_with_fewer_transactions_and_nothing_else_is_behind() {
        let behind = mariadb_continuation(&maria("0-1-100"), &state("0-1-90"));
        let Continuation::Behind { detail } = &behind else {
            panic!("{behind:?}");
        };
        assert!(
            detail.contains("0-1-90") && detail.contains("0-1-100"),
            "{detail}"
        );
        // A domain it has never seen.
        let absent = mariadb_continuation(&maria("0-1-5,1-1-7"), &state("0-1-5"));
        assert!(matches!(absent, Continuation::Behind { .. }), "{absent:?}");
        // An old primary that has not seen its successor's transactions.
        let old = mariadb_continuation(&maria("0-2-150"), &state("0-1-100"));
        assert!(matches!(old, Continuation::Behind { .. }), "{old:?}");
    }

    #[test]
    fn a_promoted_replica_that_missed_relayed_transactions_is_diverged_naming_both_sets() {
        let diverged = mariadb_continuation(&maria("0-1-100"), &state("0-1-98,0-2-120"));
        assert_eq!(
            diverged.to_string(),
            "diverged: relayed 0-1-99..0-1-100 are not on this server; it has 0-2-99..0-2-120 instead"
        );
        // Fewer errant transactions than missing ones: still diverged, not behind.
        let short = mariadb_continuation(&maria("0-1-100"), &state("0-1-95,0-2-97"));
        assert_eq!(
            short,
            Continuation::Diverged {
                missing: "0-1-96..0-1-100".into(),
                errant: "0-2-96..0-2-97".into()
            }
        );
        // One transaction each.
        let one = mariadb_continuation(&maria("0-1-100"), &state("0-1-99,0-2-100"));
        assert_eq!(
            one,
            Continuation::Diverged {
                missing: "0-1-100".into(),
                errant: "0-2-100".into()
            }
        );
        // Past the relayed sequence number without any of the relayed server's transactions.
        let other = mariadb_continuation(&maria("0-2-150"), &state("0-1-160"));
        let Continuation::Diverged { missing, errant } = &other else {
            panic!("{other:?}");
        };
        assert!(missing.contains("0-2-150"), "{missing}");
        assert!(errant.contains("0-1-160"), "{errant}");
    }

    #[test]
    fn mysql_sets_are_contained_behind_or_diverged() {
        assert_eq!(
            mysql_continuation(
                &mysql(&format!("{A}:1-100")),
                &mysql(&format!("{A}:1-120,{B}:1-3"))
            ),
            Continuation::Contains
        );
        let behind =
            mysql_continuation(&mysql(&format!("{A}:1-100")), &mysql(&format!("{A}:1-90")));
        let Continuation::Behind { detail } = &behind else {
            panic!("{behind:?}");
        };
        assert!(detail.contains(&format!("{A}:91-100")), "{detail}");
        let diverged = mysql_continuation(
            &mysql(&format!("{A}:1-100")),
            &mysql(&format!("{A}:1-90,{B}:1-20")),
        );
        assert_eq!(
            diverged,
            Continuation::Diverged {
                missing: format!("{A}:91-100"),
                errant: format!("{B}:1-20")
            }
        );
    }

    #[test]
    fn purged_binlogs_past_the_relayed_position_are_a_gap() {
        assert_eq!(
            mariadb_purged_gap(&maria("0-1-100"), &maria("0-1-100")),
            None
        );
        assert_eq!(
            mariadb_purged_gap(&maria("0-1-100"), &maria("0-1-40")),
            None
        );
        assert_eq!(mariadb_purged_gap(&maria("0-1-100"), &maria("")), None);
        let gap = mariadb_purged_gap(&maria("0-1-100"), &maria("0-1-150")).unwrap();
        assert!(gap.contains("0-1-100") && gap.contains("0-1-150"), "{gap}");
        let other_domain = mariadb_purged_gap(&maria("0-1-100"), &maria("0-1-3,1-1-9")).unwrap();
        assert!(other_domain.contains("domain 1"), "{other_domain}");
        assert_eq!(
            mysql_purged_gap(&mysql(&format!("{A}:1-100")), &mysql(&format!("{A}:1-50"))),
            None
        );
        let gap =
            mysql_purged_gap(&mysql(&format!("{A}:1-100")), &mysql(&format!("{A}:1-120"))).unwrap();
        assert!(gap.contains(&format!("{A}:101-120")), "{gap}");
    }
}
