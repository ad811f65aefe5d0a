//! Crash safety: a child process appends (and acknowledges and prunes) in a loop and is killed
//! with SIGKILL at random moments, 60 times. After each kill the WAL must open and hold every
//! append that had returned, intact and in order, with an ingest position consistent with its
//! records and an acknowledged cursor no older than the last acknowledgement that returned.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sdl_wal::{Record, Wal};
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

const KILLS: u32 = 60;

#[test]
fn sigkill_at_random_moments_never_loses_a_returned_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut total_appends_seen = 0u64;
    for round in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wal-crash-child"))
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Let it run until a random number of appends have returned, then kill it mid-flight.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let appends_before_kill = 1 + rng % 40;
        let mut last_appended = 0u64;
        let mut last_acked = 0u64;
        let mut appends = 0u64;
        while appends < appends_before_kill {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("round {round}: child stopped appending"));
            parse(&line, &mut last_appended, &mut last_acked, &mut appends);
        }
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        // Lines printed before the kill but not yet read are confirmations too.
        while let Ok(line) = rx.try_recv() {
            parse(&line, &mut last_appended, &mut last_acked, &mut appends);
        }
        total_appends_seen += appends;

        let wal: Wal<CrashRecord> = Wal::open(dir.path())
            .unwrap_or_else(|e| panic!("round {round}: WAL does not open after SIGKILL: {e}"));
        let last = wal.last_seq().unwrap();
        assert!(
            last >= last_appended,
            "round {round}: returned append {last_appended} lost (last {last})"
        );
        let position = wal.ingest_position().unwrap().unwrap();
        assert_eq!(
            position,
            format!("pos-{last}").into_bytes(),
            "round {round}: position vs records"
        );
        let acked = wal.acked().unwrap();
        assert!(
            acked >= last_acked,
            "round {round}: acknowledgement {last_acked} lost"
        );
        assert!(
            wal.verify().unwrap().is_empty(),
            "round {round}: damaged records"
        );
        let first = wal.first_seq().unwrap().unwrap_or(last + 1);
        assert!(
            first <= acked + 1,
            "round {round}: unacknowledged records pruned"
        );
        let mut expected = acked + 1;
        for stored in wal.read_from(acked + 1, usize::MAX, usize::MAX).unwrap() {
            assert_eq!(stored.seq, expected);
            assert_eq!(
                stored.record.seq, stored.seq,
                "round {round}: record out of order"
            );
            assert_eq!(
                stored.record.payload,
                vec![stored.seq as u8; (stored.seq % 700) as usize]
            );
            expected += 1;
        }
        assert_eq!(
            expected,
            last + 1,
            "round {round}: records missing before the end"
        );
    }
    assert!(total_appends_seen >= u64::from(KILLS));
}

fn parse(line: &str, appended: &mut u64, acked: &mut u64, appends: &mut u64) {
    if let Some(n) = line.strip_prefix("appended ") {
        *appended = n.parse().unwrap();
        *appends += 1;
    } else if let Some(n) = line.strip_prefix("acked ") {
        *acked = n.parse().unwrap();
    }
}
