//! GTID positions: where the ingester is in the source's history.
//!
//! MariaDB positions are one `domain-server-seq` per replication domain (the `gtid_slave_pos` form);
//! MySQL positions are GTID sets (`uuid[:tag]:1-5:7,...`). A position always means "everything up
//! to and including these transactions is in the WAL"; resuming from it never repeats or skips one.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, thiserror::Error)]
#[error("`{text}` is not a valid {flavor} GTID position: {reason}")]
pub struct GtidParseError {
    pub text: String,
    pub flavor: &'static str,
    pub reason: String,
}

/// A MariaDB GTID: `domain-server-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MariadbGtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl fmt::Display for MariadbGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// A MariaDB replication position: the last GTID of each domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MariadbPosition {
    domains: BTreeMap<u32, MariadbGtid>,
}

impl MariadbPosition {
    pub fn parse(text: &str) -> Result<Self, GtidParseError> {
        let err = |reason: String| GtidParseError {
            text: text.to_string(),
            flavor: "MariaDB",
            reason,
        };
        let mut domains = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let fields: Vec<&str> = part.split('-').collect();
            if fields.len() != 3 {
                return Err(err(format!(
                    "`{part}` should be domain-server-sequence, like 0-1-42"
                )));
            }
            let number = |s: &str, what: &str| {
                s.parse::<u64>()
                    .map_err(|_| err(format!("`{s}` in `{part}` is not a valid {what}")))
            };
            let gtid = MariadbGtid {
                domain: u32::try_from(number(fields[0], "domain id")?)
                    .map_err(|_| err(format!("domain id in `{part}` is too large")))?,
                server: u32::try_from(number(fields[1], "server id")?)
                    .map_err(|_| err(format!("server id in `{part}` is too large")))?,
                seq: number(fields[2], "sequence number")?,
            };
            if domains.insert(gtid.domain, gtid).is_some() {
                return Err(err(format!("domain {} appears twice", gtid.domain)));
            }
        }
        Ok(Self { domains })
    }

    /// Records that `gtid` has been consumed.
    pub fn advance(&mut self, gtid: MariadbGtid) {
        self.domains.insert(gtid.domain, gtid);
    }
}

impl fmt::Display for MariadbPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.domains.values().map(|g| g.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

/// A MySQL GTID set: per source UUID (optionally with a tag), sorted disjoint intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MysqlGtidSet {
    /// key: `uuid` or `uuid:tag`; value: closed intervals, sorted and non-adjacent.
    sources: BTreeMap<String, Vec<(u64, u64)>>,
}

impl MysqlGtidSet {
    pub fn parse(text: &str) -> Result<Self, GtidParseError> {
        let err = |reason: String| GtidParseError {
            text: text.to_string(),
            flavor: "MySQL",
            reason,
        };
        let mut set = Self::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut fields = part.split(':');
            let uuid = fields.next().unwrap_or_default().to_ascii_lowercase();
            if uuid.len() != 36 || uuid.chars().filter(|c| *c == '-').count() != 4 {
                return Err(err(format!("`{uuid}` is not a server UUID")));
            }
            let mut key = uuid;
            for field in fields {
                if field
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                {
                    key = format!("{}:{}", key.split(':').next().unwrap_or_default(), field);
                    continue;
                }
                let (lo, hi) = match field.split_once('-') {
                    Some((a, b)) => (a, b),
                    None => (field, field),
                };
                let lo: u64 = lo
                    .parse()
                    .map_err(|_| err(format!("`{field}` is not an interval")))?;
                let hi: u64 = hi
                    .parse()
                    .map_err(|_| err(format!("`{field}` is not an interval")))?;
                if lo == 0 || hi < lo {
                    return Err(err(format!("`{field}` is not an interval")));
                }
                set.add_interval(&key, lo, hi);
            }
        }
        Ok(set)
    }

    pub fn add(&mut self, source: &str, gno: u64) {
        self.add_interval(source, gno, gno);
    }

    fn add_interval(&mut self, source: &str, lo: u64, hi: u64) {
        let intervals = self.sources.entry(source.to_string()).or_default();
        intervals.push((lo, hi));
        intervals.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
        for &(a, b) in intervals.iter() {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        *intervals = merged;
    }

    /// Each source's part of the set as text (`uuid[:tag]:1-5:7`), the form `Sid` parses.
    pub fn per_source(&self) -> impl Iterator<Item = String> + '_ {
        self.sources.iter().map(|(source, intervals)| {
            let intervals: Vec<String> = intervals
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            format!("{source}:{}", intervals.join(":"))
        })
    }
}

impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.per_source().collect::<Vec<_>>().join(","))
    }
}

/// The position of either flavor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    Mariadb(MariadbPosition),
    Mysql(MysqlGtidSet),
}

impl Position {
    pub fn parse(flavor: super::Flavor, text: &str) -> Result<Self, GtidParseError> {
        match flavor {
            super::Flavor::Mariadb => MariadbPosition::parse(text).map(Position::Mariadb),
            super::Flavor::Mysql => MysqlGtidSet::parse(text).map(Position::Mysql),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Mariadb(p) => p.fmt(f),
            Position::Mysql(p) => p.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_position_round_trips_and_advances_per_domain() {
        let mut pos = MariadbPosition::parse("1-2-7, 0-1-100").unwrap();
        assert_eq!(pos.to_string(), "0-1-100,1-2-7");
        pos.advance(MariadbGtid {
            domain: 0,
            server: 3,
            seq: 101,
        });
        pos.advance(MariadbGtid {
            domain: 5,
            server: 1,
            seq: 1,
        });
        assert_eq!(pos.to_string(), "0-3-101,1-2-7,5-1-1");
        assert_eq!(
            MariadbPosition::parse("").unwrap(),
            MariadbPosition::default()
        );
    }

    #[test]
    fn mariadb_position_rejects_malformed_text() {
        for bad in ["0-1", "a-1-2", "0-1-2-3", "0-1-2,0-1-3", "99999999999-1-1"] {
            assert!(MariadbPosition::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn mysql_set_merges_intervals() {
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let mut set = MysqlGtidSet::parse(&format!("{uuid}:1-5:7")).unwrap();
        set.add(uuid, 6);
        set.add(uuid, 9);
        assert_eq!(set.to_string(), format!("{uuid}:1-7:9"));
        assert!(MysqlGtidSet::parse("nonsense:1-2").is_err());
        assert!(MysqlGtidSet::parse(&format!("{uuid}:5-2")).is_err());
    }
}
