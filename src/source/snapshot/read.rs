//! STUB (replaced by the `read` branch at merge).
use std::sync::Arc;

use mysql_async::Conn;

use crate::event::{Table, Value};
use crate::flavor::Flavor;
use crate::source::SourceError;

pub struct SnapshotTable {
    pub table: Arc<Table>,
    pub rows_estimate: Option<u64>,
}

pub async fn describe(
    _conn: &mut Conn,
    _flavor: Flavor,
    _database: &str,
    _table: &str,
    _key_columns: &[String],
) -> Result<SnapshotTable, SourceError> {
    todo!()
}

pub async fn prepare_session(_conn: &mut Conn) -> Result<(), SourceError> {
    todo!()
}

pub async fn read_chunk(
    _conn: &mut Conn,
    _table: &SnapshotTable,
    _after: Option<&[Value]>,
    _limit: usize,
) -> Result<Vec<Vec<Value>>, SourceError> {
    todo!()
}

pub fn key_of(_table: &SnapshotTable, _row: &[Value]) -> Vec<Value> {
    todo!()
}
