//! WAL benchmark (run by `scripts/bench`): append throughput with one flush per group commit, and
//! space amplification (bytes on disk / payload bytes) after N records and after pruning them.
//!
//! usage: wal_bench [records (default 1000000)] [records per group (default 100)] [payload bytes (default 200)]

use std::time::Instant;

use sdl_wal::{Record, Retention, Wal};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct BenchRecord {
    position: Vec<u8>,
    payload: Vec<u8>,
}

impl Record for BenchRecord {
    const FORMAT_VERSION: u16 = 1;

    fn position_after(&self) -> &[u8] {
        &self.position
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric arguments"))
        .collect();
    let records = args.first().copied().unwrap_or(1_000_000);
    let group = args.get(1).copied().unwrap_or(100).max(1);
    let payload_len = args.get(2).copied().unwrap_or(200) as usize;
    let dir = tempfile::tempdir().expect("temp dir");
    let wal: Wal<BenchRecord> = Wal::open(dir.path().join("wal")).expect("open");

    let mut payload_bytes = 0u64;
    let started = Instant::now();
    let mut seq = 0u64;
    while seq < records {
        let n = group.min(records - seq);
        let batch: Vec<BenchRecord> = (0..n)
            .map(|i| BenchRecord {
                position: format!("0-1-{}", seq + i + 1).into_bytes(),
                payload: vec![(seq + i) as u8; payload_len],
            })
            .collect();
        seq += n;
        wal.append(&batch, format!("0-1-{seq}").as_bytes())
            .expect("append");
        payload_bytes += batch
            .iter()
            .map(|r| (r.payload.len() + r.position.len()) as u64)
            .sum::<u64>();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = wal.stats().expect("stats");
    let disk_full = wal.disk_size().expect("size");
    let frames = stats.bytes;

    let read_started = Instant::now();
    let mut read = 0u64;
    while read < records {
        let batch = wal.read_from(read + 1, 1000, 8 << 20).expect("read");
        read += batch.len() as u64;
    }
    let read_elapsed = read_started.elapsed().as_secs_f64();

    wal.acknowledge(records).expect("ack");
    let pruned = wal
        .prune(Retention {
            max_age: None,
            max_bytes: Some(0),
        })
        .expect("prune");
    let disk_after_prune = wal.disk_size().expect("size");

    println!("| metric | value |");
    println!("| --- | --- |");
    println!(
        "| records appended | {records} ({group} per group commit, {payload_len}-byte payload) |"
    );
    println!(
        "| append throughput | {:.0} records/s, {:.1} MB/s of frames |",
        records as f64 / elapsed,
        frames as f64 / elapsed / 1e6
    );
    println!(
        "| group commits (fsyncs) per second | {:.0} |",
        (records as f64 / group as f64) / elapsed
    );
    println!(
        "| read throughput (checked) | {:.0} records/s |",
        records as f64 / read_elapsed
    );
    println!("| payload bytes | {payload_bytes} |");
    println!("| frame bytes | {frames} |");
    println!("| disk bytes after {records} records | {disk_full} |");
    println!(
        "| space amplification (disk / payload) | {:.2} |",
        disk_full as f64 / payload_bytes as f64
    );
    println!("| records pruned | {} |", pruned.records);
    println!("| disk bytes after pruning all | {disk_after_prune} |");
}
