//! Appends and checked reads: order, limits, flushed-only reads, damaged and future records.

use super::*;

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
