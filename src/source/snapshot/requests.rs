//! STUB (replaced by the `select` branch at merge).
use std::path::Path;

pub struct SnapshotRequest {
    pub id: String,
    pub tables: Vec<String>,
}

pub fn pending(_wal_dir: &Path) -> Result<Vec<SnapshotRequest>, String> {
    todo!()
}

pub fn taken(_wal_dir: &Path, _id: &str) -> std::io::Result<()> {
    todo!()
}

pub fn refused(_wal_dir: &Path, _id: &str, _reason: &str) -> std::io::Result<()> {
    todo!()
}
