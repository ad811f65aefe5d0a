//! Unit tests of the WAL, one module per guarantee area; the fixtures they share are here.

mod framing;
mod metadata;
mod open;
mod records;
mod retention;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TestRecord {
    n: u64,
    text: String,
}

impl Record for TestRecord {
    const FORMAT_VERSION: u16 = 7;

    fn position_after(&self) -> &[u8] {
        self.text.as_bytes()
    }
}

fn rec(n: u64) -> TestRecord {
    TestRecord {
        n,
        text: format!("pos-{n}"),
    }
}

const KEEP_NONE: Retention = Retention {
    max_age: None,
    max_bytes: Some(0),
};

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Opens the WAL at `path` once the lock of a handle dropped just before is released: sled's
/// background threads close its file a moment after the last handle is dropped.
fn reopen(path: &std::path::Path) -> Result<Wal<TestRecord>> {
    let db = path.join("db");
    if db.exists() {
        let file = std::fs::File::open(&db).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while file.try_lock().is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the WAL's lock was never released"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Wal::open(path)
}

/// Flips one bit in the middle of the stored value of `key` in the (closed) WAL at `path`.
fn damage_meta(path: &std::path::Path, key: &[u8]) {
    damage_metas(path, &[key]);
}

/// Damages several keys at once (opening the WAL between two damages would repair the first).
fn damage_metas(path: &std::path::Path, keys: &[&[u8]]) {
    let wal: Wal<TestRecord> = reopen(path).unwrap();
    for key in keys {
        let mut value = wal.raw_value(key).unwrap().expect("the key is stored");
        let middle = value.len() / 2;
        value[middle] ^= 0x04;
        wal.overwrite_raw_value(key, Some(&value)).unwrap();
    }
}

fn open_err(path: &std::path::Path) -> WalError {
    match reopen(path) {
        Ok(_) => panic!("the WAL opened"),
        Err(e) => e,
    }
}

fn repaired_keys(wal: &Wal<TestRecord>) -> Vec<String> {
    wal.metadata_repairs()
        .iter()
        .map(|r| r.key.clone())
        .collect()
}

/// A WAL with groups {1,2} {3} {4,5}, acknowledged up to 3, ingest position after record 5.
fn three_groups(path: &std::path::Path) {
    let wal: Wal<TestRecord> = reopen(path).unwrap();
    wal.append(&[], b"start").unwrap();
    wal.append(&[rec(1), rec(2)], b"pos-2").unwrap();
    wal.append(&[rec(3)], b"pos-3").unwrap();
    wal.append(&[rec(4), rec(5)], b"pos-5").unwrap();
    wal.acknowledge(3).unwrap();
}
