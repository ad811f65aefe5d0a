//! What a snapshot still has to read ([`SnapshotPlan`]): the durable half of the initial snapshot.
//!
//! Guarantee: the plan is saved *in the ingest position* (`gtid::ResumePoint`'s text form ends
//! with `; snapshot <plan as JSON>`), so it lands in the WAL in the same atomic, flushed append as
//! the snapshot rows it accounts for, and in MongoDB's offset in the same transaction as their
//! documents. Whatever stops sdl (a crash, SIGTERM, a MongoDB outage, a lost WAL restarted from
//! MongoDB's offset), the snapshot resumes after the last row whose record or document is saved:
//! no row is read twice into MongoDB, none is missed. An empty plan is not written at all.

use serde::{Deserialize, Serialize};

use crate::event::Value;

/// The tables a snapshot still has to read, in order; the first is being read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotPlan {
    pub tables: Vec<TableTask>,
    /// The ids of the `sdl snapshot` requests already taken into this plan (the newest
    /// [`TAKEN_REMEMBERED`]), so a request file left behind by a crash is not taken twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taken: Vec<String>,
}

/// How many taken request ids a plan remembers.
pub const TAKEN_REMEMBERED: usize = 32;

/// One table of one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableTask {
    /// The snapshot's id (`YYYYMMDDTHHMMSS.mmmZ`, when it was requested): part of every snapshot
    /// document's `_id`.
    pub snapshot: String,
    pub database: String,
    pub table: String,
    /// The key columns the table is read by, when reading has started (a table whose key changes
    /// during its snapshot is refused, not resumed with another key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// How the key columns order when reading started (each column's type and collation): a
    /// table whose key order changes during its snapshot is refused, since paging on in the new
    /// order past `after` (a key of the old order) would skip rows or read them again.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_order: String,
    /// The key of the last row read and accounted for; `None` before the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<Value>>,
    /// Snapshot rows of this table written so far.
    #[serde(default)]
    pub rows: u64,
}

impl TableTask {
    pub fn new(snapshot: &str, database: &str, table: &str) -> Self {
        Self {
            snapshot: snapshot.to_string(),
            database: database.to_string(),
            table: table.to_string(),
            key: Vec::new(),
            key_order: String::new(),
            after: None,
            rows: 0,
        }
    }

    /// `db.table`, as logs and `/status` name it.
    pub fn name(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }
}

impl SnapshotPlan {
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The plan's JSON text, as saved in the ingest position.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a plan always serializes")
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("the snapshot plan does not read: {e}"))
    }

    /// Remembers a taken request id (the oldest forgotten past [`TAKEN_REMEMBERED`]).
    pub fn remember_taken(&mut self, id: &str) {
        if !self.taken.iter().any(|t| t == id) {
            self.taken.push(id.to_string());
        }
        let excess = self.taken.len().saturating_sub(TAKEN_REMEMBERED);
        self.taken.drain(..excess);
    }

    /// Adds a table unless this snapshot already has it.
    pub fn add(&mut self, task: TableTask) {
        let known = self.tables.iter().any(|t| {
            t.snapshot == task.snapshot && t.database == task.database && t.table == task.table
        });
        if !known {
            self.tables.push(task);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_round_trips_through_json_with_its_key() {
        let mut plan = SnapshotPlan::default();
        let mut task = TableTask::new("20261127T190102.123Z", "app", "t;x");
        task.key = vec!["id".into(), "name".into()];
        task.after = Some(vec![Value::Int(5), Value::Text("a; snapshot b".into())]);
        task.rows = 7;
        plan.add(task.clone());
        plan.add(task);
        plan.remember_taken("r1");
        plan.remember_taken("r1");
        assert_eq!(plan.tables.len(), 1);
        assert_eq!(plan.taken, vec!["r1".to_string()]);
        let back = SnapshotPlan::from_json(&plan.to_json()).unwrap();
        assert_eq!(back, plan);
        assert!(SnapshotPlan::from_json("{\"tables\": 3}").is_err());
    }

    #[test]
    fn only_the_newest_taken_ids_are_remembered() {
        let mut plan = SnapshotPlan::default();
        for i in 0..(TAKEN_REMEMBERED + 5) {
            plan.remember_taken(&format!("r{i:03}"));
        }
        assert_eq!(plan.taken.len(), TAKEN_REMEMBERED);
        assert_eq!(plan.taken[0], "r005");
    }
}
