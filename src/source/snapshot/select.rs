//! STUB (replaced by the `select` branch at merge).
use mysql_async::Conn;

use crate::source::SourceError;

pub async fn resolve_tables(
    _conn: &mut Conn,
    _patterns: &[String],
) -> Result<Vec<(String, String)>, SourceError> {
    todo!()
}

pub async fn snapshot_key(
    _conn: &mut Conn,
    _database: &str,
    _table: &str,
) -> Result<Vec<String>, SourceError> {
    todo!()
}

pub fn new_snapshot_id(_now: std::time::SystemTime) -> String {
    todo!()
}
