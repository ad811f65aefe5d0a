//! Issue 12 item 4 against real servers: damaged WAL metadata under a real relay, the order of
//! start-up repair and cursor reconciliation, and `sdl wal recover` for a WAL sled refuses to open.
//! Each test checks exactly-once document by document against the source.

use std::time::Duration;

use crate::support::workload::Workload;
use crate::support::{Relay, Sdl};

const TIMEOUT: Duration = Duration::from_secs(180);

/// A Record type for opening the WAL raw; these tests only touch stored bytes, never decode them.
#[derive(serde::Serialize, serde::Deserialize)]
struct Opaque;

impl sdl_wal::Record for Opaque {
    const FORMAT_VERSION: u16 = 0;
    fn position_after(&self) -> &[u8] {
        b""
    }
}

fn open_raw(sdl: &Sdl) -> sdl_wal::Wal<Opaque> {
    wait_unlocked(sdl);
    sdl_wal::Wal::open(sdl.wal_dir()).unwrap()
}

/// Waits until no handle holds the WAL's lock: sled's background threads close its file a moment
/// after the last handle is dropped, and sdl started before that would find the WAL locked.
fn wait_unlocked(sdl: &Sdl) {
    let db = sdl.wal_dir().join("db");
    let file = std::fs::File::open(db).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while file.try_lock().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the WAL's lock was never released"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Flips one bit in the middle of stored record `seq` of a stopped sdl's WAL.
fn damage_record(sdl: &Sdl, seq: u64) {
    {
        let wal = open_raw(sdl);
        let mut frame = wal.raw_frame(seq).unwrap().unwrap();
        let middle = frame.len() / 2;
        frame[middle] ^= 0x10;
        wal.overwrite_raw_frame(seq, &frame).unwrap();
    }
    wait_unlocked(sdl);
}

/// Flips one bit in the middle of the stored values of metadata `keys` of a stopped sdl's WAL, all
/// in one open (an open between two damages would already repair the first).
fn damage_metas(sdl: &Sdl, keys: &[&[u8]]) {
    {
        let wal = open_raw(sdl);
        for key in keys {
            let mut value = wal.raw_value(key).unwrap().unwrap();
            let middle = value.len() / 2;
            value[middle] ^= 0x10;
            wal.overwrite_raw_value(key, Some(&value)).unwrap();
        }
    }
    wait_unlocked(sdl);
}

fn stats(sdl: &Sdl) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sdl"))
        .args(["wal", "stats", "--json", "--dir"])
        .arg(sdl.wal_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// sdl killed after MongoDB committed but before the local acknowledgement leaves the WAL's cursor
/// behind MongoDB's offset. If a record in that gap is damaged, start-up must first catch the
/// cursor up (the record is then acknowledged and never needed again), not discard it and re-read
/// it from the source, which left the WAL behind MongoDB's offset ("sink ahead") for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_mongodb_already_has_behind_a_lagging_cursor_is_not_repaired() {
    let mut relay = Relay::builder().workload_tables().following().await;
    if !relay.can_kill_mongo() {
        return;
    }
    let mut conn = relay.conn().await;
    let mut workload = Workload::new(41);
    workload.run(&mut conn, 300).await;
    relay.wait_caught_up(TIMEOUT).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());

    // The cursor as a crash between the MongoDB commit and the WAL flush leaves it.
    let s = stats(&relay.sdl);
    let acked = s["acked_seq"].as_u64().unwrap();
    assert_eq!(acked, s["last_seq"].as_u64().unwrap());
    assert!(acked > 10, "too few records: {s}");
    let lagging = acked - 5;
    {
        let wal = open_raw(&relay.sdl);
        wal.overwrite_raw_value(
            b"m/acked",
            Some(&sdl_wal::encode_meta(
                sdl_wal::FORMAT_VERSION,
                &lagging.to_be_bytes(),
            )),
        )
        .unwrap();
    }
    damage_record(&relay.sdl, lagging + 2);
    wait_unlocked(&relay.sdl);

    relay.sdl.start();
    workload.run(&mut conn, 600).await;
    relay.wait_caught_up(TIMEOUT).await;
    let logs = relay.sdl.logs();
    assert!(
        !logs.contains("repaired the WAL") && !logs.contains("beyond this WAL's last sequence"),
        "{logs}"
    );
    assert!(logs.contains("catching the cursor up"), "{logs}");
    assert!(relay.sdl.is_running(), "{logs}");
    relay.assert_exactly_once(workload.row_changes).await;
    let status = relay.sdl.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status:?}: {}", relay.sdl.logs());
}

/// Damaged metadata that can be rebuilt soundly (acknowledged cursor, ingest position, group index
/// entries, format key) in the WAL of a stopped sdl with unacknowledged records waiting: sdl
/// reports each at open, rebuilds it, and relays everything exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_wal_metadata_is_rebuilt_at_start_and_the_relay_stays_exactly_once() {
    let mut relay = Relay::builder().workload_tables().following().await;
    if !relay.can_kill_mongo() {
        return;
    }
    let mut conn = relay.conn().await;
    let mut workload = Workload::new(43);
    workload.run(&mut conn, 300).await;
    relay.wait_caught_up(TIMEOUT).await;

    // More transactions wait in the WAL, unacknowledged, while MongoDB is down.
    relay.mongo.kill();
    workload.run(&mut conn, 600).await;
    let position = relay.mariadb.gtid_binlog_pos().await;
    relay.sdl.wait_wal_holds(&position, TIMEOUT).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    let s = stats(&relay.sdl);
    assert!(s["last_seq"].as_u64() > s["acked_seq"].as_u64(), "{s}");
    let last = s["last_seq"].as_u64().unwrap();

    damage_metas(
        &relay.sdl,
        &[
            b"m/acked",
            b"m/ingest_position",
            b"m/format",
            &sdl_wal::Wal::<Opaque>::group_key_bytes(last),
        ],
    );

    relay.mongo.restart().await;
    relay.sdl.start();
    workload.run(&mut conn, 900).await;
    relay.wait_caught_up(TIMEOUT).await;
    let logs = relay.sdl.logs();
    for key in [
        "m/acked",
        "m/ingest_position",
        "m/format",
        &format!("g/{last}"),
    ] {
        assert!(
            logs.contains(&format!("WAL metadata repaired at open key={key} ")),
            "{key}: {logs}"
        );
    }
    assert!(relay.sdl.is_running(), "{logs}");
    relay.assert_exactly_once(workload.row_changes).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

/// Runs `sdl <args>` to completion: (exit code, stdout, stderr).
fn sdl_cmd(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sdl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Flips a byte of sled's `conf` file in a stopped sdl's WAL: sled 0.34 then refuses the database
/// (`Corruption`).
fn damage_sled_conf(sdl: &Sdl) {
    let conf = sdl.wal_dir().join("conf");
    let mut bytes = std::fs::read(&conf).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&conf, bytes).unwrap();
}

/// The directories `sdl wal recover` moved the WAL aside to.
fn moved_aside(sdl: &Sdl) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(sdl.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("wal.damaged-")
        })
        .collect()
}

/// A WAL sled refuses to open, and one whose WAL id is damaged: `sdl run` stops naming
/// `sdl wal recover`; the command moves the WAL aside and starts a new one at MongoDB's offset;
/// `sdl run` then relays everything, including what waited unacknowledged in the lost WAL,
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdl_wal_recover_resumes_from_mongodbs_offset_exactly_once() {
    let mut relay = Relay::builder().workload_tables().following().await;
    if !relay.can_kill_mongo() {
        return;
    }
    let mut conn = relay.conn().await;
    let config = relay.sdl.config_path.display().to_string();
    let mut workload = Workload::new(47);
    workload.run(&mut conn, 300).await;
    relay.wait_caught_up(TIMEOUT).await;

    // Transactions wait in the WAL, unacknowledged, while MongoDB is down; then the WAL's files
    // are damaged.
    relay.mongo.kill();
    workload.run(&mut conn, 600).await;
    let position = relay.mariadb.gtid_binlog_pos().await;
    relay.sdl.wait_wal_holds(&position, TIMEOUT).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    relay.mongo.restart().await;
    damage_sled_conf(&relay.sdl);

    let (code, _, stderr) = sdl_cmd(&["run", "--config", &config]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("sled refuses to open it") && stderr.contains("sdl wal recover --config"),
        "{stderr}"
    );

    let (code, stdout, stderr) = sdl_cmd(&["wal", "recover", "--config", &config]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("starts at MongoDB's offset"), "{stdout}");
    assert_eq!(moved_aside(&relay.sdl).len(), 1, "{stdout}");

    relay.sdl.start();
    workload.run(&mut conn, 900).await;
    relay.wait_caught_up(TIMEOUT).await;
    relay.assert_exactly_once(workload.row_changes).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());

    // Metadata that cannot be rebuilt (the WAL id MongoDB's offset names the WAL by).
    damage_metas(&relay.sdl, &[b"m/wal_id"]);
    let (code, _, stderr) = sdl_cmd(&["run", "--config", &config]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("m/wal_id") && stderr.contains("sdl wal recover --config"),
        "{stderr}"
    );
    let (code, stdout, stderr) = sdl_cmd(&["wal", "recover", "--config", &config]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(moved_aside(&relay.sdl).len(), 2, "{stdout}");
    relay.sdl.start();
    workload.run(&mut conn, 1200).await;
    relay.wait_caught_up(TIMEOUT).await;
    relay.assert_exactly_once(workload.row_changes).await;

    // A running sdl is never pulled from under.
    let (code, _, stderr) = sdl_cmd(&["wal", "recover", "--config", &config]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("in use by a running sdl"), "{stderr}");
    assert_eq!(moved_aside(&relay.sdl).len(), 2);
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

/// `sdl wal recover` checks that the source still has the binlog from MongoDB's offset: when it
/// was purged, the command refuses (exit 3) and leaves the WAL directory where it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdl_wal_recover_refuses_when_the_source_purged_the_binlog_from_the_offset() {
    let mut relay = Relay::builder().workload_tables().following().await;
    if !relay.can_kill_mongo() {
        return;
    }
    let mut conn = relay.conn().await;
    let config = relay.sdl.config_path.display().to_string();
    let mut workload = Workload::new(53);
    workload.run(&mut conn, 100).await;
    relay.wait_caught_up(TIMEOUT).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    // MongoDB's offset falls in binlogs the source then purges.
    workload.run(&mut conn, 200).await;
    relay.mariadb.purge_old_binlogs().await;
    damage_sled_conf(&relay.sdl);

    let (code, stdout, stderr) = sdl_cmd(&["wal", "recover", "--config", &config]);
    assert_eq!(code, Some(3), "{stdout}{stderr}");
    assert!(
        stderr.contains("no longer has the binlog from MongoDB's offset"),
        "{stderr}"
    );
    assert!(moved_aside(&relay.sdl).is_empty());
    assert!(relay.sdl.wal_dir().join("conf").exists());
}

/// With MongoDB unreachable at start-up, nobody can say whether a damaged unacknowledged record is
/// in MongoDB already: sdl stops saying so instead of repairing on a guess, and repairs once
/// MongoDB answers, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_is_not_repaired_while_mongodb_cannot_say_whether_it_holds_it() {
    let mut relay = Relay::builder().workload_tables().following().await;
    if !relay.can_kill_mongo() {
        return;
    }
    let mut conn = relay.conn().await;
    let config = relay.sdl.config_path.display().to_string();
    let mut workload = Workload::new(59);
    workload.run(&mut conn, 200).await;
    relay.wait_caught_up(TIMEOUT).await;
    relay.mongo.kill();
    workload.run(&mut conn, 400).await;
    let position = relay.mariadb.gtid_binlog_pos().await;
    relay.sdl.wait_wal_holds(&position, TIMEOUT).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    let s = stats(&relay.sdl);
    let damaged = s["acked_seq"].as_u64().unwrap() + 1;
    assert!(damaged <= s["last_seq"].as_u64().unwrap(), "{s}");
    damage_record(&relay.sdl, damaged);

    let (code, _, stderr) = sdl_cmd(&["run", "--config", &config]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("WAL record {damaged} is damaged"))
            && stderr.contains("MongoDB is not reachable"),
        "{stderr}"
    );
    assert_eq!(
        stats(&relay.sdl)["last_seq"],
        s["last_seq"],
        "nothing was discarded"
    );

    relay.mongo.restart().await;
    relay.sdl.start();
    workload.run(&mut conn, 600).await;
    relay.wait_caught_up(TIMEOUT).await;
    assert!(
        relay.sdl.logs().contains("repaired the WAL"),
        "{}",
        relay.sdl.logs()
    );
    relay.assert_exactly_once(workload.row_changes).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}
