use super::*;
use serde::Deserialize;

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

#[test]
fn appended_records_come_back_in_order_with_position() {
    let dir = temp_dir();
    let wal: Wal<TestRecord> = Wal::open(dir.path().join("wal")).unwrap();
    assert_eq!(wal.last_seq().unwrap(), 0);
    assert_eq!(wal.ingest_position().unwrap(), None);
    assert_eq!(wal.append(&[rec(1), rec(2)], b"pos-2").unwrap(), 2);
    assert_eq!(wal.append(&[rec(3)], b"pos-3").unwrap(), 3);
    let got = wal.read_from(1, 10, usize::MAX).unwrap();
    let ns: Vec<u64> = got.iter().map(|s| s.record.n).collect();
    assert_eq!(ns, vec![1, 2, 3]);
    assert_eq!(got.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(
        wal.ingest_position().unwrap().as_deref(),
        Some(&b"pos-3"[..])
    );
}

#[test]
fn state_survives_reopen() {
    let dir = temp_dir();
    let path = dir.path().join("wal");
    let id;
    {
        let wal: Wal<TestRecord> = Wal::open(&path).unwrap();
        id = wal.id();
        wal.append(&[rec(1), rec(2), rec(3)], b"p").unwrap();
        wal.acknowledge(2).unwrap();
    }
    let wal: Wal<TestRecord> = reopen(&path).unwrap();
    assert_eq!(wal.id(), id);
    assert_eq!(wal.acked().unwrap(), 2);
    assert_eq!(wal.last_seq().unwrap(), 3);
    assert_eq!(wal.read_from(3, 10, usize::MAX).unwrap()[0].record, rec(3));
}

#[test]
fn acknowledge_never_moves_back_and_never_past_the_end() {
    let dir = temp_dir();
    let wal: Wal<TestRecord> = Wal::open(dir.path()).unwrap();
    wal.append(&[rec(1), rec(2)], b"p").unwrap();
    wal.acknowledge(2).unwrap();
    wal.acknowledge(1).unwrap();
    assert_eq!(wal.acked().unwrap(), 2);
    assert!(matches!(
        wal.acknowledge(3),
        Err(WalError::AckBeyondEnd {
            requested: 3,
            last: 2
        })
    ));
}

#[test]
fn pruning_removes_only_whole_acknowledged_groups_and_sequences_continue() {
    let dir = temp_dir();
    let wal: Wal<TestRecord> = Wal::open(dir.path()).unwrap();
    wal.append(&[rec(1), rec(2)], b"pos-2").unwrap();
    wal.append(&[rec(3), rec(4)], b"pos-4").unwrap();
    wal.acknowledge(3).unwrap();
    // Group 3..4 is only partly acknowledged: it stays.
    assert_eq!(wal.prune(KEEP_NONE).unwrap().records, 2);
    assert_eq!(wal.first_seq().unwrap(), Some(3));
    assert_eq!(wal.position_before(3).unwrap(), b"pos-2");
    wal.acknowledge(4).unwrap();
    assert_eq!(wal.prune(KEEP_NONE).unwrap().records, 2);
    assert_eq!(wal.first_seq().unwrap(), None);
    assert_eq!(wal.stats().unwrap().bytes, 0);
    assert_eq!(wal.append(&[rec(5)], b"pos-5").unwrap(), 5);
    assert_eq!(wal.position_before(5).unwrap(), b"pos-4");
    drop(wal);
    let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
    assert_eq!(wal.last_seq().unwrap(), 5);
    assert_eq!(wal.append(&[rec(6)], b"pos-6").unwrap(), 6);
}

#[test]
fn retention_by_age_and_bytes_keeps_unacknowledged_records() {
    let dir = temp_dir();
    let wal: Wal<TestRecord> = Wal::open(dir.path()).unwrap();
    for n in 1..=10 {
        wal.append(&[rec(n)], format!("pos-{n}").as_bytes())
            .unwrap();
    }
    let frame = wal.get(1).unwrap().unwrap().frame_len as u64;
    // Nothing acknowledged: no retention setting removes anything.
    assert_eq!(wal.prune(KEEP_NONE).unwrap().records, 0);
    wal.acknowledge(6).unwrap();
    // Young records survive an age limit.
    let by_age = Retention {
        max_age: Some(std::time::Duration::from_secs(3600)),
        max_bytes: None,
    };
    assert_eq!(wal.prune(by_age).unwrap().records, 0);
    // A byte limit keeps the newest acknowledged records that fit.
    let by_bytes = Retention {
        max_age: None,
        max_bytes: Some(2 * frame),
    };
    assert_eq!(wal.prune(by_bytes).unwrap().records, 4);
    assert_eq!(wal.first_seq().unwrap(), Some(5));
    // An age of zero prunes every acknowledged record, never the unacknowledged 7..10.
    let zero = Retention {
        max_age: Some(std::time::Duration::ZERO),
        max_bytes: None,
    };
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert_eq!(wal.prune(zero).unwrap().records, 2);
    assert_eq!(wal.first_seq().unwrap(), Some(7));
    let stats = wal.stats().unwrap();
    assert_eq!((stats.records, stats.unacked_records), (4, 4));
    let unacked: u64 = (7..=10)
        .map(|s| wal.get(s).unwrap().unwrap().frame_len as u64)
        .sum();
    assert_eq!(stats.unacked_bytes, unacked);
}

/// The running count of unacknowledged bytes equals a fresh sum over the groups after every
/// kind of change, and after reopening.
#[test]
fn unacknowledged_bytes_stay_exact_through_appends_acks_pruning_and_truncation() {
    let dir = temp_dir();
    let path = dir.path().join("wal");
    let wal: Wal<TestRecord> = Wal::open(&path).unwrap();
    let check = |wal: &Wal<TestRecord>| {
        let mut fresh = wal.accounting().groups.clone();
        let acked = wal.acked().unwrap();
        fresh.retain(|&last, _| last > acked);
        let expected: u64 = fresh.values().map(|g| g.bytes).sum();
        assert_eq!(wal.unacked_bytes(), expected);
    };
    for n in 0..10 {
        wal.append(&[rec(3 * n + 1), rec(3 * n + 2), rec(3 * n + 3)], b"p")
            .unwrap();
        check(&wal);
    }
    for seq in [2, 3, 3, 1, 7, 16, 30] {
        wal.acknowledge(seq).unwrap();
        check(&wal);
    }
    wal.append(&[rec(31), rec(32)], b"p").unwrap();
    wal.prune(KEEP_NONE).unwrap();
    check(&wal);
    wal.truncate_unacknowledged(32).unwrap();
    check(&wal);
    assert!(wal.unacked_bytes() > 0);
    drop(wal);
    let wal: Wal<TestRecord> = reopen(&path).unwrap();
    check(&wal);
    wal.acknowledge(31).unwrap();
    assert_eq!(wal.unacked_bytes(), 0);
}

#[test]
fn truncation_rewinds_the_position_and_refuses_acknowledged_records() {
    let dir = temp_dir();
    let wal: Wal<TestRecord> = Wal::open(dir.path()).unwrap();
    wal.append(&[], b"pos-0").unwrap();
    wal.append(&[rec(1), rec(2), rec(3)], b"pos-3").unwrap();
    wal.append(&[rec(4)], b"pos-4").unwrap();
    wal.acknowledge(1).unwrap();
    assert!(matches!(
        wal.truncate_unacknowledged(1),
        Err(WalError::TruncateAcknowledged { from: 1, acked: 1 })
    ));
    assert_eq!(wal.truncate_unacknowledged(3).unwrap(), b"pos-2");
    assert_eq!(wal.ingest_position().unwrap().unwrap(), b"pos-2");
    assert_eq!(wal.last_seq().unwrap(), 2);
    assert_eq!(wal.append(&[rec(3)], b"pos-3").unwrap(), 3);
    assert_eq!(wal.position_before(1).unwrap(), b"pos-0");
    assert!(wal.verify().unwrap().is_empty());
}

#[test]
fn readers_never_see_a_record_before_its_append_is_flushed() {
    // A reader that forwards what it reads and acknowledges it (the forwarder) must never get a
    // record whose append has not returned: it is not durable yet, and acknowledging it fails
    // (AckBeyondEnd). Found by the soak test, right after a MongoDB outage, when the forwarder
    // reads at the WAL's tail while the ingester appends.
    let dir = temp_dir();
    let wal: Wal<TestRecord> = Wal::open(dir.path().join("wal")).unwrap();
    const RECORDS: u64 = 300;
    let appender = std::thread::spawn({
        let wal = wal.clone();
        move || {
            for n in 1..=RECORDS {
                wal.append(&[rec(n)], format!("pos-{n}").as_bytes())
                    .unwrap();
            }
        }
    });
    let mut next = 1;
    while next <= RECORDS {
        let appending = !appender.is_finished();
        let got = wal.read_from(next, 100, usize::MAX).unwrap();
        match got.last() {
            Some(last) => {
                assert!(
                    last.seq <= wal.last_seq().unwrap(),
                    "read past the durable end"
                );
                wal.acknowledge(last.seq).unwrap();
                next = last.seq + 1;
            }
            None if !appending => break,
            None => {}
        }
    }
    appender.join().unwrap();
    assert_eq!(next, RECORDS + 1, "every record was read");
}

#[test]
fn read_from_respects_count_and_byte_limits() {
    let dir = temp_dir();
    let wal: Wal<TestRecord> = Wal::open(dir.path()).unwrap();
    wal.append(&(1..=10).map(rec).collect::<Vec<_>>(), b"p")
        .unwrap();
    assert_eq!(wal.read_from(1, 4, usize::MAX).unwrap().len(), 4);
    // A byte limit smaller than one frame still yields one record, so the reader always progresses.
    assert_eq!(wal.read_from(5, 100, 1).unwrap().len(), 1);
    assert_eq!(wal.read_from(11, 100, usize::MAX).unwrap().len(), 0);
}

/// A record of several items (like a transaction's changes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Group(Vec<u64>);

impl Record for Group {
    const FORMAT_VERSION: u16 = 1;

    fn position_after(&self) -> &[u8] {
        b"p"
    }

    fn items(&self) -> usize {
        self.0.len()
    }
}

#[test]
fn read_from_stops_once_the_records_hold_max_items() {
    let dir = temp_dir();
    let wal: Wal<Group> = Wal::open(dir.path()).unwrap();
    let records: Vec<Group> = (1..=6).map(|n| Group(vec![n; 3])).collect();
    wal.append(&records, b"p").unwrap();
    // 3 + 3 = 6 < 7, so a third record is read; then 9 >= 7 stops.
    assert_eq!(wal.read_from(1, 7, usize::MAX).unwrap().len(), 3);
    assert_eq!(wal.read_from(1, 6, usize::MAX).unwrap().len(), 2);
    // A record larger than the limit still comes alone.
    assert_eq!(wal.read_from(4, 1, usize::MAX).unwrap().len(), 1);
}

#[test]
fn damaged_record_is_reported_with_its_sequence() {
    let dir = temp_dir();
    let wal: Wal<TestRecord> = Wal::open(dir.path()).unwrap();
    wal.append(&[rec(1), rec(2)], b"p").unwrap();
    let mut frame = wal.raw_frame(2).unwrap().unwrap();
    let last = frame.len() - 1;
    frame[last] ^= 0x01;
    wal.overwrite_raw_frame(2, &frame).unwrap();
    assert_eq!(wal.read_from(1, 1, usize::MAX).unwrap().len(), 1);
    assert_eq!(
        wal.first_damaged_unacknowledged().unwrap().map(|(s, _)| s),
        Some(2)
    );
    assert_eq!(wal.verify().unwrap().len(), 1);
    match wal.read_from(1, 10, usize::MAX) {
        Err(WalError::Corrupt {
            seq: 2,
            source: FrameError::Checksum { .. },
        }) => {}
        other => panic!("expected a checksum error on record 2, got {other:?}"),
    }
}

#[test]
fn future_version_is_an_error_naming_the_version() {
    let frame = encode_frame(8, &rec(1)).unwrap();
    assert_eq!(
        decode_frame::<TestRecord>(7, &frame),
        Err(FrameError::UnknownVersion {
            found: 8,
            supported: 7
        })
    );
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = temp_dir();
    let _first: Wal<TestRecord> = Wal::open(dir.path()).unwrap();
    let err = match Wal::<TestRecord>::open(dir.path()) {
        Ok(_) => panic!("second open succeeded"),
        Err(e) => e,
    };
    assert!(matches!(err, WalError::Open { .. }), "{err}");
}

#[test]
fn sled_refusing_the_files_or_opening_them_empty_is_a_damaged_wal_naming_the_recover_command() {
    for damage in ["conf", "db"] {
        let dir = temp_dir();
        three_groups(dir.path());
        let file = dir.path().join(damage);
        let mut bytes = std::fs::read(&file).unwrap();
        if damage == "conf" {
            // sled checks its config file's CRC and refuses the database.
            bytes[10] ^= 1;
        } else {
            // sled opens a database whose log is garbled from its start as an empty one.
            for b in bytes.iter_mut().take(4096) {
                *b ^= 0xff;
            }
        }
        std::fs::write(&file, bytes).unwrap();
        let err = open_err(dir.path());
        assert!(matches!(err, WalError::Damaged { .. }), "{damage}: {err}");
        assert!(err.to_string().contains("sdl wal recover"), "{err}");
    }
    // A second sdl on a healthy WAL is a lock, not damage.
    let dir = temp_dir();
    let _first: Wal<TestRecord> = Wal::open(dir.path()).unwrap();
    match Wal::<TestRecord>::open(dir.path()) {
        Err(e) => assert!(e.is_locked(), "{e}"),
        Ok(_) => panic!("a second open succeeded"),
    }
}

/// A process killed during its very first open leaves sled's files but no WAL metadata and no
/// `initialized` marker: the next open starts the WAL anew instead of calling it damaged (which
/// would refuse every start until an operator stepped in).
#[test]
fn a_wal_whose_first_open_was_cut_short_starts_anew() {
    let dir = temp_dir();
    {
        // sled's own files, as sled creates them, without anything sdl writes.
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        db.flush().unwrap();
    }
    assert!(dir.path().join("conf").exists());
    assert!(!dir.path().join(INITIALIZED_MARKER).exists());
    let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
    assert_eq!(wal.last_seq().unwrap(), 0);
    assert!(wal.ingest_position().unwrap().is_none());
    assert!(dir.path().join(INITIALIZED_MARKER).exists());
    drop(wal);
    // Once initialized, an empty tree is damage again.
    let dir = temp_dir();
    three_groups(dir.path());
    assert!(dir.path().join(INITIALIZED_MARKER).exists());
}

#[test]
fn directory_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    let path = dir.path().join("nested/wal");
    let _wal: Wal<TestRecord> = Wal::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
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

#[test]
fn every_metadata_value_is_framed_with_the_wal_format_and_a_crc() {
    let dir = temp_dir();
    three_groups(dir.path());
    let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
    assert!(wal.metadata_repairs().is_empty());
    let group = Wal::<TestRecord>::group_key_bytes(5);
    for key in [
        &b"m/format"[..],
        b"m/wal_id",
        b"m/acked",
        b"m/ingest_position",
        b"m/base_position",
        &group,
    ] {
        let raw = wal.raw_value(key).unwrap().unwrap();
        assert!(decode_meta(FORMAT_VERSION, &raw).is_ok(), "{key:?}");
    }
}

#[test]
fn a_damaged_ingest_position_is_rebuilt_from_the_last_record() {
    let dir = temp_dir();
    three_groups(dir.path());
    // A position whose damage still parses as a position: one changed character.
    damage_meta(dir.path(), b"m/ingest_position");
    let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
    assert_eq!(repaired_keys(&wal), vec!["m/ingest_position"]);
    assert_eq!(
        wal.ingest_position().unwrap().as_deref(),
        Some(&b"pos-5"[..])
    );
    drop(wal);
    // The rebuilt value is stored: the next open finds nothing to repair.
    let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
    assert!(wal.metadata_repairs().is_empty());
}

#[test]
fn a_damaged_ingest_position_with_no_record_stored_comes_from_the_base_position() {
    let dir = temp_dir();
    {
        let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
        wal.append(&[], b"start").unwrap();
    }
    damage_meta(dir.path(), b"m/ingest_position");
    let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
    assert_eq!(
        wal.ingest_position().unwrap().as_deref(),
        Some(&b"start"[..])
    );
    drop(wal);
    // Both damaged: nothing to rebuild from, a definite stop naming the key and the fix.
    damage_metas(dir.path(), &[b"m/ingest_position", b"m/base_position"]);
    let err = open_err(dir.path()).to_string();
    assert!(
        err.contains("m/ingest_position") && err.contains("sdl wal recover"),
        "{err}"
    );
}

#[test]
fn a_damaged_ingest_position_with_the_last_record_damaged_too_stops() {
    let dir = temp_dir();
    three_groups(dir.path());
    {
        let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
        let mut frame = wal.raw_frame(5).unwrap().unwrap();
        frame[12] ^= 1;
        wal.overwrite_raw_frame(5, &frame).unwrap();
    }
    damage_meta(dir.path(), b"m/ingest_position");
    let err = open_err(dir.path());
    assert!(
        matches!(&err, WalError::MetaDamaged { key, .. } if key == "m/ingest_position"),
        "{err}"
    );
}

#[test]
fn a_damaged_ack_cursor_is_rebuilt_as_a_lower_bound_never_above_the_truth() {
    let dir = temp_dir();
    three_groups(dir.path());
    damage_meta(dir.path(), b"m/acked");
    {
        // Nothing pruned: the sound lower bound is 0 (the sink's offset catches it up).
        let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
        assert_eq!(repaired_keys(&wal), vec!["m/acked"]);
        assert_eq!(wal.acked().unwrap(), 0);
        assert_eq!(wal.last_seq().unwrap(), 5);
        wal.acknowledge(3).unwrap();
        assert_eq!(wal.prune(KEEP_NONE).unwrap().records, 3);
    }
    damage_meta(dir.path(), b"m/acked");
    let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
    // Records 1..=3 were pruned, so they were acknowledged.
    assert_eq!(wal.acked().unwrap(), 3);
    assert_eq!(wal.read_from(4, 10, usize::MAX).unwrap().len(), 2);
    wal.acknowledge(5).unwrap();
    wal.prune(KEEP_NONE).unwrap();
    drop(wal);
    // No record stored: the next sequence number is unknowable from the WAL.
    damage_meta(dir.path(), b"m/acked");
    let err = open_err(dir.path()).to_string();
    assert!(
        err.contains("m/acked") && err.contains("sdl wal recover"),
        "{err}"
    );
}

#[test]
fn a_damaged_group_entry_is_rebuilt_from_its_records() {
    let dir = temp_dir();
    three_groups(dir.path());
    let before = reopen(dir.path()).unwrap().stats().unwrap();
    damage_metas(
        dir.path(),
        &[
            &Wal::<TestRecord>::group_key_bytes(2),
            &Wal::<TestRecord>::group_key_bytes(5),
        ],
    );
    let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
    assert_eq!(repaired_keys(&wal), vec!["g/2", "g/5"]);
    let after = wal.stats().unwrap();
    assert_eq!(after.bytes, before.bytes);
    assert_eq!(after.unacked_bytes, before.unacked_bytes);
    wal.acknowledge(5).unwrap();
    // Whole groups are still pruned: the rebuilt ones start where the originals did.
    assert_eq!(wal.prune(KEEP_NONE).unwrap().records, 5);
}

#[test]
fn deleted_group_entries_and_a_deleted_ack_cursor_after_pruning_are_rebuilt() {
    let dir = temp_dir();
    three_groups(dir.path());
    {
        let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
        wal.append(&[rec(6)], b"pos-6").unwrap();
        // Prune the first group: record 1 and 2 are gone, the cursor stays at 3.
        let third = wal.raw_frame(3).unwrap().unwrap().len() as u64;
        wal.prune(Retention {
            max_age: None,
            max_bytes: Some(third),
        })
        .unwrap();
        assert_eq!(wal.first_seq().unwrap(), Some(3));
    }
    let before = reopen(dir.path()).unwrap().stats().unwrap();
    {
        let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
        for key in [
            Wal::<TestRecord>::group_key_bytes(3),
            Wal::<TestRecord>::group_key_bytes(6),
            b"m/acked".to_vec(),
        ] {
            wal.overwrite_raw_value(&key, None).unwrap();
        }
    }
    let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
    assert_eq!(repaired_keys(&wal), vec!["g/3", "g/6", "m/acked"]);
    assert_eq!(wal.acked().unwrap(), 2);
    let after = wal.stats().unwrap();
    assert_eq!(after.bytes, before.bytes);
    assert_eq!(after.last_seq, 6);
    wal.acknowledge(6).unwrap();
    assert_eq!(wal.prune(KEEP_NONE).unwrap().records, 4);
}

#[test]
fn a_damaged_wal_id_stops_naming_the_key_and_the_recover_command() {
    let dir = temp_dir();
    three_groups(dir.path());
    damage_meta(dir.path(), b"m/wal_id");
    let err = open_err(dir.path());
    assert!(
        matches!(&err, WalError::MetaDamaged { key, .. } if key == "m/wal_id"),
        "{err}"
    );
    assert!(err.to_string().contains("sdl wal recover"), "{err}");
}

#[test]
fn a_damaged_base_position_is_rebuilt_or_dropped_and_a_repair_needing_it_stops() {
    let dir = temp_dir();
    three_groups(dir.path());
    damage_meta(dir.path(), b"m/base_position");
    let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
    assert_eq!(repaired_keys(&wal), vec!["m/base_position"]);
    // Record 1 can no longer be repaired from the source (its start is unknown)...
    assert!(matches!(
        wal.truncate_unacknowledged(1),
        Err(WalError::TruncateAcknowledged { .. })
    ));
    assert!(matches!(
        wal.position_before(1),
        Err(WalError::NoPositionBefore { seq: 1, .. })
    ));
    // ...later ones can.
    assert_eq!(wal.truncate_unacknowledged(5).unwrap(), b"pos-4");
    drop(wal);

    let dir = temp_dir();
    {
        let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
        wal.append(&[], b"start").unwrap();
    }
    damage_meta(dir.path(), b"m/base_position");
    let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
    wal.append(&[rec(1)], b"pos-1").unwrap();
    assert_eq!(wal.position_before(1).unwrap(), b"start");
}

#[test]
fn a_damaged_format_key_is_rewritten_and_another_format_is_refused() {
    let dir = temp_dir();
    three_groups(dir.path());
    damage_meta(dir.path(), b"m/format");
    let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
    assert_eq!(repaired_keys(&wal), vec!["m/format"]);
    wal.overwrite_raw_value(b"m/format", Some(&encode_meta(9, &9u16.to_le_bytes())))
        .unwrap();
    drop(wal);
    let err = open_err(dir.path());
    assert!(
        matches!(
            err,
            WalError::UnknownFormat {
                found: 9,
                supported: FORMAT_VERSION,
                ..
            }
        ),
        "{err}"
    );
}

/// Writes a WAL as format 1 did: raw metadata, no `m/format`.
fn write_format_1(path: &std::path::Path, acked: &[u8]) {
    let db = sled::open(path).unwrap();
    let tree = db.open_tree("wal").unwrap();
    tree.insert(b"m/wal_id", &[7u8; 16][..]).unwrap();
    tree.insert(b"m/acked", acked).unwrap();
    tree.insert(b"m/base_position", &b"start"[..]).unwrap();
    tree.insert(b"m/ingest_position", &b"pos-3"[..]).unwrap();
    let mut bytes = 0;
    for n in 1..=3 {
        let frame = encode_frame(7, &rec(n)).unwrap();
        bytes += frame.len() as u64;
        tree.insert(record_key(n), frame).unwrap();
    }
    let group = super::Group {
        appended_ms: now_ms(),
        first_seq: 1,
        bytes,
    };
    tree.insert(group_key(3), &group.encode()[..]).unwrap();
    db.flush().unwrap();
}

#[test]
fn a_format_1_wal_is_upgraded_in_place_keeping_its_state() {
    let dir = temp_dir();
    write_format_1(dir.path(), &2u64.to_be_bytes());
    let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
    assert_eq!(repaired_keys(&wal), vec!["m/format"]);
    assert_eq!(wal.id(), "07".repeat(16));
    assert_eq!(wal.acked().unwrap(), 2);
    assert_eq!(wal.last_seq().unwrap(), 3);
    assert_eq!(
        wal.ingest_position().unwrap().as_deref(),
        Some(&b"pos-3"[..])
    );
    assert_eq!(wal.position_before(1).unwrap(), b"start");
    let frames: u64 = (1..=3)
        .map(|n| encode_frame(7, &rec(n)).unwrap().len() as u64)
        .sum();
    assert_eq!(wal.stats().unwrap().bytes, frames);
    drop(wal);
    let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
    assert!(wal.metadata_repairs().is_empty());
    drop(wal);

    // A format-1 value of the wrong shape is named, and nothing is rewritten.
    let dir = temp_dir();
    write_format_1(dir.path(), b"bad");
    let err = open_err(dir.path());
    assert!(
        matches!(&err, WalError::MetaDamaged { key, .. } if key == "m/acked"),
        "{err}"
    );
}

mod framing_properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(n in any::<u64>(), text in ".*") {
            let r = TestRecord { n, text };
            let frame = encode_frame(7, &r).unwrap();
            prop_assert_eq!(decode_frame::<TestRecord>(7, &frame).unwrap(), r);
        }

        #[test]
        fn any_single_bit_flip_is_detected(n in any::<u64>(), text in ".{0,64}", bit in any::<prop::sample::Index>()) {
            let r = TestRecord { n, text };
            let mut frame = encode_frame(7, &r).unwrap();
            let i = bit.index(frame.len() * 8);
            frame[i / 8] ^= 1 << (i % 8);
            prop_assert!(decode_frame::<TestRecord>(7, &frame).is_err());
        }

        #[test]
        fn any_single_bit_flip_in_metadata_is_detected(value in proptest::collection::vec(any::<u8>(), 0..64), bit in any::<prop::sample::Index>()) {
            let mut frame = encode_meta(FORMAT_VERSION, &value);
            prop_assert_eq!(decode_meta(FORMAT_VERSION, &frame).unwrap(), &value[..]);
            let i = bit.index(frame.len() * 8);
            frame[i / 8] ^= 1 << (i % 8);
            prop_assert!(decode_meta(FORMAT_VERSION, &frame).is_err());
        }

        #[test]
        fn any_truncation_is_detected(n in any::<u64>(), text in ".{0,64}", cut in any::<prop::sample::Index>()) {
            let r = TestRecord { n, text };
            let frame = encode_frame(7, &r).unwrap();
            let keep = cut.index(frame.len());
            prop_assert!(decode_frame::<TestRecord>(7, &frame[..keep]).is_err());
        }
    }
}
