//! The WAL as an operator sees it: `sdl wal` on a stopped and a running service, retention,
//! backpressure while MongoDB is down, repair of a damaged record from the source (and refusal of
//! a record in another release's format), a full disk, and the lock against a second sdl.

use std::process::Command;
use std::time::Duration;

use crate::support;
use crate::support::workload::Workload;
use crate::support::{run_sdl_with_output, wait_for_offset, wait_until, Relay, Sdl};
use serde_json::Value as Json;

const TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `sdl wal <args>` and returns (exit code, stdout, stderr).
fn sdl_wal(args: &[&str]) -> (i32, String, String) {
    run_sdl_with_output(&[&["wal"], args].concat())
}

fn stats(target: &[&str]) -> Json {
    let mut args = vec!["stats", "--json"];
    args.extend_from_slice(target);
    let (code, stdout, stderr) = sdl_wal(&args);
    assert_eq!(code, 0, "sdl wal stats failed: {stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// Waits until sdl's WAL holds every transaction up to the source position `position`, then stops
/// sdl (SIGTERM, clean exit): the records stay in the WAL, unacknowledged while MongoDB is down.
async fn stop_once_the_wal_holds(sdl: &mut Sdl, position: &str) {
    sdl.wait_wal_holds(position, TIMEOUT).await;
    assert!(sdl.terminate(Duration::from_secs(30)).success());
}

/// Flips one bit (`mask`) in the middle of stored record `seq` of a stopped sdl's WAL.
fn damage_record(sdl: &Sdl, seq: u64, mask: u8) {
    let wal: sdl_wal::Wal<Opaque> = sdl_wal::Wal::open(sdl.wal_dir()).unwrap();
    let mut frame = wal.raw_frame(seq).unwrap().unwrap();
    let middle = frame.len() / 2;
    frame[middle] ^= mask;
    wal.overwrite_raw_frame(seq, &frame).unwrap();
}

/// Writes `version` into the frame header of stored record `seq` of a stopped sdl's WAL (as a
/// release with another record format would have written it); returns the version it had.
fn set_format_version(sdl: &Sdl, seq: u64, version: u16) -> u16 {
    let wal: sdl_wal::Wal<Opaque> = sdl_wal::Wal::open(sdl.wal_dir()).unwrap();
    let mut frame = wal.raw_frame(seq).unwrap().unwrap();
    let old = u16::from_le_bytes([frame[0], frame[1]]);
    frame[..2].copy_from_slice(&version.to_le_bytes());
    wal.overwrite_raw_frame(seq, &frame).unwrap();
    old
}

/// A Record type for opening the WAL raw; these tests only touch frames, never decode them.
#[derive(serde::Serialize, serde::Deserialize)]
struct Opaque;

impl sdl_wal::Record for Opaque {
    const FORMAT_VERSION: u16 = 0;
    fn position_after(&self) -> &[u8] {
        b""
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_commands_work_on_a_running_and_a_stopped_service() {
    let mut relay = Relay::builder().workload_tables().following().await;
    let mut conn = relay.conn().await;
    let mut workload = Workload::new(3);
    workload.run(&mut conn, 300).await;
    let position = relay.mariadb.gtid_binlog_pos().await;
    wait_for_offset(&relay.mongo, &position, TIMEOUT, &relay.sdl).await;

    // Running: the WAL is locked, so the command goes through the admin endpoint.
    let config = relay.sdl.config_path.display().to_string();
    let running = stats(&["--config", &config]);
    assert_eq!(running["last_seq"], workload.transactions);
    assert_eq!(running["acked_seq"], workload.transactions);
    assert_eq!(running["unacked_records"], 0);
    assert_eq!(running["ingest_position"], position.as_str());

    let (code, stdout, _) = sdl_wal(&[
        "list", "--config", &config, "--json", "--from", "1", "--limit", "5",
    ]);
    assert_eq!(code, 0);
    let entries: Vec<Json> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[0]["seq"], 1);
    assert!(entries
        .iter()
        .all(|e| e["acked"] == true && e["error"].is_null()));

    let (code, stdout, _) = sdl_wal(&["show", "2", "--config", &config]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("position after:") && stdout.contains("app."),
        "{stdout}"
    );

    let (code, stdout, _) = sdl_wal(&["verify", "--config", &config]);
    assert_eq!(code, 0, "{stdout}");

    // The same service's status, metrics and readiness.
    let status = relay.sdl.status();
    assert_eq!(status["source"]["position"], position.as_str(), "{status}");
    assert!(status["source"]["lag_seconds"].is_f64(), "{status}");
    let forwarder = &status["forwarder"];
    assert_eq!(
        forwarder["committed_seq"], workload.transactions,
        "{status}"
    );
    assert_eq!(forwarder["committed_position"], position.as_str());
    // One domain, one server: the position after the last transaction is its GTID.
    assert_eq!(forwarder["committed_gtid"], position.as_str());
    assert!(forwarder["committed_at"].is_string(), "{status}");
    assert!(forwarder["end_to_end_lag_seconds"].is_f64(), "{status}");
    assert_eq!(forwarder["lag_seconds"], 0.0);
    for stage in ["ingest", "forwarder"] {
        assert_eq!(status[stage]["restarts"], 0, "{status}");
        assert!(status[stage]["last_error"].is_null(), "{status}");
    }
    assert_eq!(status["ingest"]["state"], "following");
    assert_eq!(status["breaker"]["state"], "closed");
    assert_eq!(status["wal"]["unacked_records"], 0);
    assert!(status["wal"]["oldest_unacked_age_ms"].is_null(), "{status}");

    let get = |path: &str| relay.sdl.admin_get(path);
    let (code, metrics) = get("/metrics");
    assert_eq!(code, 200);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("sdl_binlog_rows_total"), workload.row_changes as f64);
    assert_eq!(
        value("sdl_binlog_transactions_total"),
        workload.transactions as f64
    );
    assert_eq!(
        value("sdl_wal_appended_records_total"),
        workload.transactions as f64
    );
    assert_eq!(value("sdl_wal_unacked_records"), 0.0);
    assert_eq!(
        value("sdl_documents_written_total"),
        workload.row_changes as f64
    );
    assert!(value("sdl_batch_commit_seconds_count") >= 1.0);
    assert_eq!(value("sdl_breaker_state"), 0.0);
    assert_eq!(value("sdl_ingest_paused"), 0.0);
    assert_eq!(value("sdl_stage_restarts_total{stage=\"ingester\"}"), 0.0);
    assert_eq!(value("sdl_stage_restarts_total{stage=\"forwarder\"}"), 0.0);
    assert!(
        metrics.contains("# TYPE sdl_batch_commit_seconds histogram"),
        "{metrics}"
    );
    assert_eq!(get("/readyz").0, 200);
    assert_eq!(get("/healthz"), (200, "ok".to_string()));

    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());

    // Stopped: opened directly from the directory.
    let wal_dir = relay.sdl.wal_dir().display().to_string();
    let stopped = stats(&["--dir", &wal_dir]);
    assert_eq!(stopped["last_seq"], running["last_seq"]);
    assert_eq!(stopped["wal_id"], running["wal_id"]);
    let (code, stdout, _) = sdl_wal(&["dump", "--dir", &wal_dir, "--from", "1", "--to", "3"]);
    assert_eq!(code, 0);
    let lines: Vec<Json> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // One change document per line, as MongoDB holds it.
    assert!(!lines.is_empty());
    assert!(lines
        .iter()
        .all(|d| d["meta"]["gtid"].as_str().unwrap().starts_with("0-1-")
            && d["_id"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}/0-1-", d["meta"]["source"].as_str().unwrap()))));
    // The source in `meta.src` too, as the sink writes it (docs/change-document.md).
    assert!(
        lines
            .iter()
            .all(|d| d["meta"]["src"] == d["meta"]["source"] && d["meta"]["src"].is_string()),
        "{lines:?}"
    );

    let (code, _, stderr) = sdl_wal(&["stats"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--config FILE") && stderr.contains("--dir DIR"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sdl_on_the_same_wal_is_refused() {
    let mut relay = Relay::builder().following().await;
    let first = &mut relay.sdl;
    let (code, stderr) =
        support::run_sdl(&["run", "--config", &first.config_path.display().to_string()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot open the WAL") && stderr.contains("another sdl process"),
        "{stderr}"
    );
    assert!(first.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_acknowledged_records_only() {
    let mut relay = Relay::builder()
        .workload_tables()
        .settings(&[
            ("wal", "retain_acked_bytes = 0"),
            ("wal", "prune_interval = \"100ms\""),
        ])
        .following()
        .await;
    let mut conn = relay.conn().await;
    let mut workload = Workload::new(5);
    workload.run(&mut conn, 500).await;
    relay.wait_caught_up(TIMEOUT).await;
    wait_until("a prune", TIMEOUT, || async {
        relay
            .sdl
            .logs()
            .contains("pruned acknowledged WAL records")
            .then_some(())
    })
    .await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    let s = stats(&["--dir", &relay.sdl.wal_dir().display().to_string()]);
    assert_eq!(s["unacked_records"], 0);
    assert_ne!(s["first_seq"], 1, "acknowledged records were pruned: {s}");
    assert_eq!(s["last_seq"], workload.transactions);
    relay.assert_exactly_once(workload.row_changes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_wal_pauses_ingest_while_mongodb_is_down_and_loses_nothing() {
    let mut relay = Relay::builder()
        .workload_tables()
        .settings(&[
            ("wal", "max_bytes = 1048576"),
            ("sink", "connect_timeout = \"1s\""),
            ("wal", "retain_acked_bytes = 0"),
            ("wal", "prune_interval = \"100ms\""),
        ])
        .following()
        .await;
    if !relay.can_kill_mongo() {
        return;
    }
    let mut conn = relay.conn().await;
    relay.mongo.kill();
    let mut workload = Workload::new(11);
    // Several times wal.max_bytes, so that the pause comes well before the end of the workload
    // (ingest may overshoot the limit by a group commit or two).
    workload.run(&mut conn, 36_000).await;
    wait_until("the ingester to pause", TIMEOUT, || async {
        relay
            .sdl
            .logs()
            .contains("WAL full (wal.max_bytes): pausing")
            .then_some(())
    })
    .await;
    let config = relay.sdl.config_path.display().to_string();
    let paused = stats(&["--config", &config]);
    assert!(
        paused["unacked_bytes"].as_u64().unwrap() >= 1_048_576,
        "{paused}"
    );
    assert_eq!(
        paused["records"], paused["unacked_records"],
        "unacknowledged records pruned: {paused}"
    );
    assert_ne!(
        paused["ingest_position"],
        relay.mariadb.gtid_binlog_pos().await.as_str(),
        "ingest did not pause"
    );
    // The pause and the outage are visible on /status.
    let status = relay.sdl.status();
    assert_eq!(status["ingest"]["state"], "paused_wal_full", "{status}");
    assert_eq!(status["ingest"]["max_bytes"], 1_048_576);
    assert_eq!(status["source"]["position"], paused["ingest_position"]);
    wait_until("the circuit breaker to open", TIMEOUT, || async {
        (relay.sdl.status()["breaker"]["state"] == "open").then_some(())
    })
    .await;
    let status = relay.sdl.status();
    let outage = &status["forwarder"];
    assert!(outage["lag_seconds"].as_f64().unwrap() > 0.0, "{status}");
    assert!(
        outage["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("MongoDB")),
        "{status}"
    );
    assert!(outage["last_error"]["at"].is_string(), "{status}");
    assert_eq!(outage["restarts"], 0, "{status}");

    relay.mongo.restart().await;
    relay.wait_caught_up(TIMEOUT).await;
    assert!(relay.sdl.logs().contains("WAL has space again: resuming"));
    let status = relay.sdl.status();
    assert_eq!(status["ingest"]["state"], "following", "{status}");
    assert_eq!(status["breaker"]["state"], "closed", "{status}");
    assert_eq!(status["wal"]["unacked_records"], 0, "{status}");
    // The forwarder recovered each time the breaker had opened; its last error is kept.
    let forwarder = &status["forwarder"];
    let opened = status["breaker"]["times_opened"].as_u64().unwrap();
    assert!(opened >= 1, "{status}");
    assert_eq!(forwarder["restarts"], opened, "{status}");
    assert_eq!(
        relay
            .sdl
            .metric("sdl_stage_restarts_total{stage=\"forwarder\"}"),
        opened as f64
    );
    assert_eq!(forwarder["lag_seconds"], 0.0, "{status}");
    assert_eq!(
        forwarder["committed_position"],
        relay.mariadb.gtid_binlog_pos().await.as_str()
    );
    assert_eq!(forwarder["committed_seq"], status["wal"]["last_seq"]);
    assert!(forwarder["last_error"]["message"].is_string(), "{status}");
    relay.assert_exactly_once(workload.row_changes).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_unacknowledged_record_is_read_again_and_another_format_is_refused() {
    let mut relay = Relay::builder().workload_tables().following().await;
    if !relay.can_kill_mongo() {
        return;
    }
    let mut conn = relay.conn().await;
    let mut workload = Workload::new(21);
    workload.run(&mut conn, 300).await;
    relay.wait_caught_up(TIMEOUT).await;

    // With MongoDB down, more transactions wait in the WAL, unacknowledged.
    relay.mongo.kill();
    workload.run(&mut conn, 600).await;
    let position = relay.mariadb.gtid_binlog_pos().await;
    stop_once_the_wal_holds(&mut relay.sdl, &position).await;

    let s = stats(&["--dir", &relay.sdl.wal_dir().display().to_string()]);
    let damaged = s["acked_seq"].as_u64().unwrap() + 2;
    assert!(damaged < s["last_seq"].as_u64().unwrap());
    relay.mongo.restart().await;

    // A record in another release's format (an upgrade or downgrade across a WAL format change
    // while records waited) is not discarded as damage: sdl stops and says what to do.
    let version = set_format_version(&relay.sdl, damaged, 99);
    let (code, stderr) = support::run_sdl(&[
        "run",
        "--config",
        &relay.sdl.config_path.display().to_string(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "WAL record {damaged} (not yet in MongoDB) was written in record format version 99"
        )) && stderr.contains("move the WAL directory aside"),
        "{stderr}"
    );
    set_format_version(&relay.sdl, damaged, version);

    damage_record(&relay.sdl, damaged, 0x40);
    let (code, stdout, _) = sdl_wal(&[
        "verify",
        "--dir",
        &relay.sdl.wal_dir().display().to_string(),
    ]);
    assert_eq!(code, 1, "verify must fail on a damaged record: {stdout}");
    assert!(
        stdout.contains(&format!("DAMAGED record {damaged}: CRC mismatch")),
        "{stdout}"
    );

    relay.sdl.start();
    wait_for_offset(&relay.mongo, &position, TIMEOUT, &relay.sdl).await;
    assert!(
        relay.sdl.logs().contains("repaired the WAL")
            && relay.sdl.logs().contains(&format!("damaged_seq={damaged}")),
        "{}",
        relay.sdl.logs()
    );
    relay.assert_exactly_once(workload.row_changes).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

/// A small tmpfs for the WAL, unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: std::path::PathBuf, size: &str) -> Option<Self> {
        std::fs::create_dir_all(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(Self(path))
    }

    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_ingest_cleanly_and_a_restart_resumes() {
    let mut relay = Relay::builder()
        .sql(&["CREATE TABLE app.blobs (id INT PRIMARY KEY, body LONGTEXT NOT NULL)"])
        .stopped()
        .await;
    let mut conn = relay.conn().await;
    let Some(disk) = SmallDisk::mount(relay.sdl.wal_dir(), "8M") else {
        panic!("mounting a tmpfs needs root (CI runs as root): cannot test a full disk");
    };
    std::fs::write(relay.sdl.wal_dir().join("filler"), vec![0u8; 2 << 20]).unwrap();
    relay.sdl.start();
    relay.sdl.wait_following().await;
    let mut rows = 0u64;
    {
        use mysql_async::prelude::Queryable;
        while relay.sdl.is_running() && rows < 2000 {
            rows += 1;
            conn.query_drop(format!(
                "INSERT INTO app.blobs VALUES ({rows}, REPEAT('{}', 20000))",
                (b'a' + (rows % 26) as u8) as char
            ))
            .await
            .unwrap();
        }
    }
    let status = relay.sdl.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(1), "{}", relay.sdl.logs());
    assert!(
        relay.sdl.logs().contains("the disk holding the WAL"),
        "{}",
        relay.sdl.logs()
    );
    assert!(relay.sdl.logs().contains("is full"));

    // More space (the volume grown), then a restart: everything arrives exactly once.
    disk.grow("512M");
    std::fs::remove_file(relay.sdl.wal_dir().join("filler")).unwrap();
    relay.sdl.start();
    relay.wait_caught_up(TIMEOUT).await;
    let docs = relay.documents().await;
    let inserts = docs
        .iter()
        .filter(|d| d.get_str("op") == Ok("insert"))
        .count() as u64;
    assert_eq!(inserts, rows, "every inserted row arrived once");
    let mut ids: Vec<i64> = docs
        .iter()
        .filter_map(|d| d.get_document("after").ok()?.get_i64("id").ok())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=rows as i64).collect::<Vec<_>>());
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_whose_binlog_was_purged_stops_sdl_naming_it() {
    let mut relay = Relay::builder().workload_tables().following().await;
    if !relay.can_kill_mongo() {
        return;
    }
    let mut conn = relay.conn().await;
    relay.mongo.kill();
    let mut workload = Workload::new(31);
    workload.run(&mut conn, 300).await;
    let position = relay.mariadb.gtid_binlog_pos().await;
    stop_once_the_wal_holds(&mut relay.sdl, &position).await;
    damage_record(&relay.sdl, 3, 0x01);
    relay.mariadb.purge_old_binlogs().await;
    relay.mongo.restart().await;
    relay.sdl.start();
    let status = relay.sdl.wait_exit(Duration::from_secs(40));
    assert_eq!(status.code(), Some(3), "{}", relay.sdl.logs());
    let logs = relay.sdl.logs();
    assert!(logs.contains("WAL record 3 is damaged"), "{logs}");
    assert!(logs.contains("no longer has the binlog"), "{logs}");
    assert!(logs.contains("restore the source's binlog files"), "{logs}");
    // Nothing was discarded: the WAL still holds the damaged record and everything after it.
    let s = stats(&["--dir", &relay.sdl.wal_dir().display().to_string()]);
    assert_eq!(s["last_seq"], workload.transactions);
}
