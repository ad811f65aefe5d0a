//! Checked metadata: framing, rebuilding damaged values or stopping, the format 1 upgrade.

use super::*;
use crate::groups::{now_ms, Group};
use crate::layout::{group_key, record_key};

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
    let group = Group {
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
