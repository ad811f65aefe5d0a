//! GTID positions: where the ingester is in the source's history. Shared vocabulary below every
//! stage: `source.start` is checked against it when the config is read, the ingester advances it,
//! the service and `sdl wal recover` compare the WAL's and MongoDB's positions with it.
//!
//! MariaDB positions are one `domain-server-seq` per replication domain (the `gtid_slave_pos` form);
//! MySQL positions are GTID sets (`uuid[:tag]:1-5:7,...`). A position always means "everything up
//! to and including these transactions is in the WAL"; resuming from it never repeats or skips one.

use std::collections::BTreeMap;
use std::fmt;

use crate::flavor::Flavor;
use crate::snapshot_plan::SnapshotPlan;

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

    /// The last GTID of each domain, in domain order.
    pub fn gtids(&self) -> impl Iterator<Item = &MariadbGtid> + '_ {
        self.domains.values()
    }

    /// The last GTID of `domain`, if the position has that domain.
    pub fn domain(&self, domain: u32) -> Option<&MariadbGtid> {
        self.domains.get(&domain)
    }
}

impl fmt::Display for MariadbPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.domains.values().map(|g| g.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

/// A MySQL GTID set: per source UUID (optionally with a tag), sorted disjoint intervals.
///
/// Each source keeps its text form, updated when that source changes: a transaction adds one
/// GTID, so rendering the whole set after it re-renders one source and copies the others' text
/// (a source with 50 UUIDs in `gtid_executed` costs one allocation per transaction, not 100).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MysqlGtidSet {
    /// key: `uuid` or `uuid:tag`.
    sources: BTreeMap<String, SourceIntervals>,
}

/// One source's closed intervals, sorted and non-adjacent, and their text (`1-5:7`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SourceIntervals {
    intervals: Vec<(u64, u64)>,
    text: String,
}

impl SourceIntervals {
    fn render(&mut self) {
        use std::fmt::Write;
        self.text.clear();
        for (i, (a, b)) in self.intervals.iter().enumerate() {
            if i > 0 {
                self.text.push(':');
            }
            let _ = if a == b {
                write!(self.text, "{a}")
            } else {
                write!(self.text, "{a}-{b}")
            };
        }
    }
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
        // The common case, the next GTID of a source already in the set, allocates nothing for
        // the key.
        if let Some(entry) = self.sources.get_mut(source) {
            if let Some(last) = entry.intervals.last_mut() {
                if gno == last.1.saturating_add(1) {
                    last.1 = gno;
                    entry.render();
                    return;
                }
            }
        }
        self.add_interval(source, gno, gno);
    }

    /// The part of `self` that `other` does not contain (empty when `other` ⊇ `self`).
    pub fn missing_from(&self, other: &MysqlGtidSet) -> MysqlGtidSet {
        let mut missing = MysqlGtidSet::default();
        for (source, ours) in &self.sources {
            let theirs = other
                .sources
                .get(source)
                .map(|s| s.intervals.as_slice())
                .unwrap_or(&[]);
            for &(lo, hi) in &ours.intervals {
                // Walk [lo, hi] through `theirs` (sorted, disjoint), keeping the uncovered parts.
                let mut next = lo;
                for &(a, b) in theirs {
                    if b < next || next > hi {
                        continue;
                    }
                    if a > hi {
                        break;
                    }
                    if a > next {
                        missing.add_interval(source, next, a - 1);
                    }
                    next = b.saturating_add(1);
                }
                if next <= hi {
                    missing.add_interval(source, next, hi);
                }
            }
        }
        missing
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    fn add_interval(&mut self, source: &str, lo: u64, hi: u64) {
        let entry = self.sources.entry(source.to_string()).or_default();
        let intervals = &mut entry.intervals;
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
        entry.render();
    }

    /// Each source's part of the set as text (`uuid[:tag]:1-5:7`), the form `Sid` parses.
    pub fn per_source(&self) -> impl Iterator<Item = String> + '_ {
        self.sources
            .iter()
            .map(|(source, entry)| format!("{source}:{}", entry.text))
    }
}

impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (source, entry)) in self.sources.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(source)?;
            f.write_str(":")?;
            f.write_str(&entry.text)?;
        }
        Ok(())
    }
}

/// The position of either flavor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    Mariadb(MariadbPosition),
    Mysql(MysqlGtidSet),
}

impl Position {
    pub fn parse(flavor: Flavor, text: &str) -> Result<Self, GtidParseError> {
        match flavor {
            Flavor::Mariadb => MariadbPosition::parse(text).map(Position::Mariadb),
            Flavor::Mysql => MysqlGtidSet::parse(text).map(Position::Mysql),
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

/// Where the ingester resumes: a [`Position`], and, when the WAL holds only the first part of a
/// large transaction (split into several records, see `crate::event`), that transaction and how
/// many of its changes are saved. Resuming streams from `position`, which is before the partial
/// transaction, and drops its first `saved_changes` changes as they are decoded again.
///
/// Text form (saved in the WAL and in MongoDB's offset): the position alone, or
/// `<position>; partial <gtid>:<saved_changes>`: `<gtid>:<saved_changes>` is the `_id` of the next
/// change document that transaction will produce; either followed by `; snapshot <plan JSON>`
/// while a snapshot has tables left to read ([`SnapshotPlan`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ResumePoint {
    pub position: Position,
    pub partial: Option<PartialTransaction>,
    /// The snapshot still to read, saved with the position it is consistent with.
    pub snapshot: Option<SnapshotPlan>,
}

/// A transaction saved in part: its GTID and the number of its changes already saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialTransaction {
    pub gtid: String,
    pub saved_changes: u64,
}

const PARTIAL_MARKER: &str = "; partial ";
const SNAPSHOT_MARKER: &str = "; snapshot ";

/// `"; snapshot <plan JSON>"`, what a position holding `plan` ends with (empty for an empty plan).
pub fn snapshot_suffix(plan: &SnapshotPlan) -> String {
    if plan.is_empty() {
        String::new()
    } else {
        format!("{SNAPSHOT_MARKER}{}", plan.to_json())
    }
}

/// The position text without its snapshot plan, if it has one, and the plan's JSON text. The
/// plan comes last and the text before it never holds the marker (GTIDs and a
/// `<gtid>:<count>`), so the first marker is the plan's, whatever its JSON holds.
pub fn split_snapshot_plan(text: &str) -> (&str, Option<&str>) {
    match text.split_once(SNAPSHOT_MARKER) {
        Some((before, plan)) => (before, Some(plan)),
        None => (text, None),
    }
}

impl ResumePoint {
    pub fn at(position: Position) -> Self {
        Self {
            position,
            partial: None,
            snapshot: None,
        }
    }

    pub fn parse(flavor: Flavor, text: &str) -> Result<Self, GtidParseError> {
        let err = |reason: &str| GtidParseError {
            text: text.to_string(),
            flavor: flavor.name(),
            reason: reason.to_string(),
        };
        let (text_before, plan) = split_snapshot_plan(text);
        let snapshot = match plan {
            Some(json) => Some(SnapshotPlan::from_json(json.trim()).map_err(|e| err(&e))?),
            None => None,
        };
        let mut point = Self::parse_without_plan(flavor, text_before)?;
        point.snapshot = snapshot.filter(|plan| !plan.is_empty());
        Ok(point)
    }

    fn parse_without_plan(flavor: Flavor, text: &str) -> Result<Self, GtidParseError> {
        let Some((position, partial)) = text.split_once(PARTIAL_MARKER) else {
            return Ok(Self::at(Position::parse(flavor, text)?));
        };
        let err = |reason: &str| GtidParseError {
            text: text.to_string(),
            flavor: flavor.name(),
            reason: reason.to_string(),
        };
        let (gtid, saved) = partial
            .trim()
            .rsplit_once(':')
            .ok_or_else(|| err("the partial transaction should read `<gtid>:<saved changes>`"))?;
        let saved_changes = saved
            .parse::<u64>()
            .map_err(|_| err("the partial transaction's saved change count is not a number"))?;
        if gtid.is_empty() {
            return Err(err("the partial transaction has no GTID"));
        }
        Ok(Self {
            position: Position::parse(flavor, position)?,
            partial: Some(PartialTransaction {
                gtid: gtid.to_string(),
                saved_changes,
            }),
            snapshot: None,
        })
    }
}

impl fmt::Display for ResumePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.position.fmt(f)?;
        if let Some(partial) = &self.partial {
            write!(
                f,
                "{PARTIAL_MARKER}{}:{}",
                partial.gtid, partial.saved_changes
            )?;
        }
        if let Some(plan) = &self.snapshot {
            f.write_str(&snapshot_suffix(plan))?;
        }
        Ok(())
    }
}

/// The server variable holding the source's current GTID position.
pub fn position_variable(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Mariadb => "gtid_binlog_pos",
        Flavor::Mysql => "gtid_executed",
    }
}

/// Why `current` does not contain `relayed`, or `None` when it does.
pub fn not_contained(current: &Position, relayed: &Position) -> Option<String> {
    match (current, relayed) {
        (Position::Mariadb(current), Position::Mariadb(relayed)) => {
            let problems: Vec<String> = relayed
                .gtids()
                .filter_map(|gtid| match current.domain(gtid.domain) {
                    None => Some(format!(
                        "domain {} ({gtid} relayed) is not in the server's binlog",
                        gtid.domain
                    )),
                    Some(now) if now.seq < gtid.seq => Some(format!(
                        "domain {} is at {now}, behind {gtid} relayed",
                        gtid.domain
                    )),
                    Some(_) => None,
                })
                .collect();
            (!problems.is_empty()).then(|| problems.join("; "))
        }
        (Position::Mysql(current), Position::Mysql(relayed)) => {
            let missing = relayed.missing_from(current);
            (!missing.is_empty()).then(|| format!("the server has not executed {missing}"))
        }
        _ => Some("the positions are of different flavors (MariaDB and MySQL)".into()),
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

    #[test]
    fn a_set_of_50_sources_renders_incrementally_and_exactly() {
        let uuids: Vec<String> = (0..50)
            .map(|i| format!("3e11fa47-71ca-11e1-9e33-c80aa94295{i:02}"))
            .collect();
        let text: Vec<String> = uuids.iter().map(|u| format!("{u}:1-1000:1002")).collect();
        let mut set = MysqlGtidSet::parse(&text.join(",")).unwrap();
        // Transactions of one source, then a gap, then one filling a hole, then a new source.
        let started = std::time::Instant::now();
        for gno in 1003..11_003 {
            set.add(&uuids[7], gno);
            let _position_text = set.to_string();
        }
        let per_transaction = started.elapsed() / 10_000;
        // What the assembler did per transaction before: copy the set before and after it.
        let started = std::time::Instant::now();
        for gno in 11_003..21_003 {
            let _before = set.clone();
            let mut after = set.clone();
            after.add(&uuids[9], gno);
            let _position_text = after.to_string();
        }
        let with_copies = started.elapsed() / 10_000;
        set.add(&uuids[7], 20_000);
        set.add(&uuids[3], 1001);
        set.add("aaaaaaaa-71ca-11e1-9e33-c80aa9429500", 5);
        let rendered = set.to_string();
        assert_eq!(MysqlGtidSet::parse(&rendered).unwrap(), set);
        assert!(rendered.contains(&format!("{}:1-1000:1002-11002:20000", uuids[7])));
        assert!(rendered.contains(&format!("{}:1-1002", uuids[3])));
        assert!(rendered.starts_with("3e11fa47"));
        assert!(rendered.ends_with("aaaaaaaa-71ca-11e1-9e33-c80aa9429500:5"));
        // Not a timing assertion (see DEVELOPERS.md): printed for the record.
        eprintln!(
            "50-source GTID set: add + render {per_transaction:?} per transaction; with two \
             copies of the set {with_copies:?}"
        );
    }

    #[test]
    fn resume_points_round_trip_with_and_without_a_partial_transaction() {
        for text in [
            "0-1-41,1-2-7",
            "0-1-41; partial 0-1-42:5000",
            "; partial 0-1-1:3",
        ] {
            let point = ResumePoint::parse(Flavor::Mariadb, text).unwrap();
            assert_eq!(point.to_string(), text);
        }
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let text = format!("{uuid}:1-41; partial {uuid}:42:1000");
        let point = ResumePoint::parse(Flavor::Mysql, &text).unwrap();
        let partial = point.partial.as_ref().unwrap();
        assert_eq!(partial.gtid, format!("{uuid}:42"));
        assert_eq!(partial.saved_changes, 1000);
        assert_eq!(point.to_string(), text);
        for bad in [
            "0-1-41; partial 0-1-42",
            "0-1-41; partial 0-1-42:x",
            "0-1-41; partial :5",
        ] {
            assert!(
                ResumePoint::parse(Flavor::Mariadb, bad).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn a_resume_point_carries_the_snapshot_plan_after_a_partial_transaction() {
        use crate::event::Value;
        use crate::snapshot_plan::TableTask;
        let mut plan = SnapshotPlan::default();
        let mut task = TableTask::new("20261127T190102.123Z", "app", "t");
        task.after = Some(vec![Value::Text("a; partial 0-1-1:5; snapshot x".into())]);
        plan.add(task);
        let point = ResumePoint {
            position: Position::parse(Flavor::Mariadb, "0-1-100").unwrap(),
            partial: Some(PartialTransaction {
                gtid: "0-1-101".into(),
                saved_changes: 500,
            }),
            snapshot: Some(plan.clone()),
        };
        let text = point.to_string();
        assert!(
            text.starts_with("0-1-100; partial 0-1-101:500; snapshot {"),
            "{text}"
        );
        assert_eq!(ResumePoint::parse(Flavor::Mariadb, &text).unwrap(), point);
        assert_eq!(split_snapshot_plan(&text).0, "0-1-100; partial 0-1-101:500");
        // Without a partial transaction, and an empty plan is not written.
        let plain = ResumePoint {
            partial: None,
            ..point.clone()
        };
        assert_eq!(
            ResumePoint::parse(Flavor::Mariadb, &plain.to_string()).unwrap(),
            plain
        );
        let empty = ResumePoint {
            snapshot: Some(SnapshotPlan::default()),
            ..plain.clone()
        };
        assert_eq!(empty.to_string(), "0-1-100");
        assert!(ResumePoint::parse(Flavor::Mariadb, "0-1-100; snapshot {oops").is_err());
    }
}
