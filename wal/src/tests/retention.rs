//! The acknowledged cursor, pruning and retention, the unacknowledged-bytes count, truncation.

use super::*;

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
