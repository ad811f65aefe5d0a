//! Test helper for `wal/tests/crash.rs`, not a user tool: appends to the WAL in `argv[1]` forever,
//! printing `appended N` after each append returns and `acked N` after each acknowledgement, so
//! the parent can SIGKILL it at any moment and check what survived.

use std::io::Write;

use sdl_wal::{Record, Retention, Wal};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct CrashRecord {
    seq: u64,
    payload: Vec<u8>,
    position: Vec<u8>,
}

impl Record for CrashRecord {
    const FORMAT_VERSION: u16 = 1;

    fn position_after(&self) -> &[u8] {
        &self.position
    }
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: wal-crash-child DIR");
    let wal: Wal<CrashRecord> = Wal::open(&dir).expect("open WAL");
    let mut out = std::io::stdout().lock();
    let mut seq = wal.last_seq().expect("last_seq");
    let mut rounds = 0u64;
    loop {
        rounds += 1;
        let group = 1 + (seq * 7 + rounds) % 16;
        let records: Vec<CrashRecord> = (1..=group)
            .map(|i| {
                let s = seq + i;
                CrashRecord {
                    seq: s,
                    payload: vec![s as u8; (s % 700) as usize],
                    position: format!("pos-{s}").into_bytes(),
                }
            })
            .collect();
        seq += group;
        let last = wal
            .append(&records, format!("pos-{seq}").as_bytes())
            .expect("append");
        assert_eq!(last, seq);
        writeln!(out, "appended {seq}").unwrap();
        out.flush().unwrap();
        if rounds.is_multiple_of(5) {
            let ack = seq - seq / 3;
            wal.acknowledge(ack).expect("acknowledge");
            writeln!(out, "acked {ack}").unwrap();
            out.flush().unwrap();
            wal.prune(Retention {
                max_age: None,
                max_bytes: Some(20_000),
            })
            .expect("prune");
        }
    }
}
