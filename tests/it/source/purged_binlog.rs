//! Binlogs purged while sdl was stopped: sdl exits with the distinct code 3, names the missing
//! range and the choices, and does not skip ahead.

use std::time::Duration;

use crate::support::workload::Workload;
use crate::support::{wait_for_offset, Relay};

const TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_binlog_stops_sdl_with_exit_code_3() {
    let mut relay = Relay::builder().workload_tables().following().await;
    let mut conn = relay.conn().await;
    let mut workload = Workload::new(9);
    workload.run(&mut conn, 200).await;
    let saved = relay.mariadb.gtid_binlog_pos().await;
    wait_for_offset(&relay.mongo, &saved, TIMEOUT, &relay.sdl).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());

    // While sdl is stopped: more changes, then their binlog is rotated away and purged.
    workload.run(&mut conn, 400).await;
    relay.mariadb.purge_old_binlogs().await;
    workload.run(&mut conn, 500).await;

    relay.sdl.start();
    let status = relay.sdl.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(3), "{}", relay.sdl.logs());
    let logs = relay.sdl.logs();
    assert!(logs.contains(&format!("resuming after {saved}")), "{logs}");
    assert!(logs.contains("are missing"), "{logs}");
    assert!(logs.contains("restore the binlog files"), "{logs}");
    // Nothing after the gap was relayed: MongoDB still ends where sdl stopped.
    wait_for_offset(&relay.mongo, &saved, Duration::from_secs(5), &relay.sdl).await;
}
