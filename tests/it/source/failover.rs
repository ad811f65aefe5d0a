//! Source failover by GTID against real MariaDB replication (primary → replica with
//! `log_slave_updates`): sdl follows the first server of `source.url` that is a safe continuation
//! of what it relayed, switches on a connection loss, and refuses a replica that is behind or has
//! diverged.

use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::support::proxy::{Mode, Proxy};
use crate::support::relay::assert_documents_exactly_once;
use crate::support::replication::{documents_in_gtid_order, Replication};
use crate::support::workload::{create_tables, Workload, TABLES};
use crate::support::{wait_for_offset, wait_until, MariaDb, Mongo, Sdl};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The harness itself: a write on the primary reaches the replica with the same GTID, a paused
/// replica falls behind and catches up when resumed, a promoted replica takes writes after the
/// primary is killed, and the old primary rejoins as its replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_harness_replicates_by_gtid() {
    let mut replication = Replication::start().await;
    let mut conn = replication.primary.root_conn().await;
    conn.query_drop("CREATE TABLE app.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO app.t VALUES (1), (2)")
        .await
        .unwrap();
    replication.wait_replica_applied(TIMEOUT).await;
    assert_eq!(
        replication.replica.gtid_binlog_pos().await,
        replication.primary.gtid_binlog_pos().await
    );
    let mut replica = replication.replica.root_conn().await;
    let count: Option<i64> = replica
        .query_first("SELECT COUNT(*) FROM app.t")
        .await
        .unwrap();
    assert_eq!(count, Some(2));

    replication.pause().await;
    conn.query_drop("INSERT INTO app.t VALUES (3)")
        .await
        .unwrap();
    assert_ne!(
        replication.replica.gtid_binlog_pos().await,
        replication.primary.gtid_binlog_pos().await
    );
    replication.resume().await;
    replication.wait_replica_applied(TIMEOUT).await;

    drop(conn);
    replication.kill_primary();
    replication.promote_replica().await;
    replica
        .query_drop("INSERT INTO app.t VALUES (4)")
        .await
        .unwrap();
    let count: Option<i64> = replica
        .query_first("SELECT COUNT(*) FROM app.t")
        .await
        .unwrap();
    assert_eq!(count, Some(4));

    // The old primary comes back as the promoted one's replica: the roles swap.
    replication.rejoin_killed_primary().await;
    replication.wait_replica_applied(TIMEOUT).await;
    let mut old_primary = replication.replica.root_conn().await;
    let count: Option<i64> = old_primary
        .query_first("SELECT COUNT(*) FROM app.t")
        .await
        .unwrap();
    assert_eq!(count, Some(4));
}

/// Servers in replication with the workload's tables on both, MongoDB, and an sdl configured with
/// `source.url = urls` (short heartbeat and connect timeouts), not started.
async fn failover_relay(urls: impl Fn(&Replication) -> Vec<String>) -> (Replication, Mongo, Sdl) {
    let (replication, mongo) = tokio::join!(Replication::start(), Mongo::start());
    let mut conn = replication.primary.root_conn().await;
    create_tables(&mut conn).await;
    conn.disconnect().await.unwrap();
    replication.wait_replica_applied(TIMEOUT).await;
    let sdl = sdl_for(&replication.primary, &mongo, &urls(&replication));
    (replication, mongo, sdl)
}

fn sdl_for(any_server: &MariaDb, mongo: &Mongo, urls: &[String]) -> Sdl {
    let list: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let url = format!("url = [{}]", list.join(", "));
    Sdl::with_settings(
        any_server,
        mongo,
        "current",
        &[
            ("source", url.as_str()),
            ("source", "heartbeat_interval = \"1s\""),
            ("source", "connect_timeout = \"2s\""),
        ],
    )
}

/// The workload's tables on both servers, and a running sdl with `source.url = [the primary
/// through a TCP proxy (so sdl's path alone can be cut), the replica]`, following the primary.
async fn follow_primary_through_proxy(
    replication: &Replication,
    mongo: &Mongo,
) -> (mysql_async::Conn, Proxy, Sdl) {
    let mut conn = replication.primary.root_conn().await;
    create_tables(&mut conn).await;
    replication.wait_replica_applied(TIMEOUT).await;
    let proxy = Proxy::start(replication.primary.port).await;
    let mut sdl = sdl_for(
        &replication.primary,
        mongo,
        &[
            replication.primary.sdl_url_via(proxy.port),
            replication.replica.sdl_url(),
        ],
    );
    sdl.start();
    sdl.wait_following().await;
    (conn, proxy, sdl)
}

fn tables() -> Vec<(&'static str, &'static str)> {
    TABLES.to_vec()
}

/// The ingester's `/status` report.
fn ingest_status(sdl: &Sdl) -> serde_json::Value {
    sdl.status()["ingest"].clone()
}

/// Waits until `/status` lists server `index` of `source.url` as refused for `reason`; returns
/// that entry (`url`, `index`, `reason`, `detail`).
async fn wait_refused(sdl: &Sdl, index: u64, reason: &str, what: &str) -> serde_json::Value {
    wait_until(what, TIMEOUT, || async {
        let refused = ingest_status(sdl)["refused_servers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        refused
            .into_iter()
            .find(|r| r["index"] == index && r["reason"] == reason)
    })
    .await
}

/// Waits until sdl follows the server at `index` of `source.url`.
async fn wait_following_server(sdl: &Sdl, index: u64) {
    wait_until(
        &format!("sdl following server {index} of source.url"),
        TIMEOUT,
        || async {
            let ingest = ingest_status(sdl);
            (ingest["source_server"]["index"] == index && ingest["state"] == "following")
                .then_some(())
        },
    )
    .await;
}

/// The primary is SIGKILLed mid-workload and the replica promoted: sdl switches to it, and every
/// change committed on either arrives exactly once; `/status` and the metric show the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_mid_workload_sdl_fails_over_to_the_promoted_replica_exactly_once() {
    let (mut replication, mongo, mut sdl) =
        failover_relay(|r| vec![r.primary.sdl_url(), r.replica.sdl_url()]).await;
    sdl.start();
    sdl.wait_following().await;
    wait_following_server(&sdl, 0).await;

    let mut workload = Workload::new(15);
    let mut primary = replication.primary.root_conn().await;
    workload.run(&mut primary, 300).await;
    // The writer pauses; everything the primary committed reaches the replica; the primary dies
    // (sdl may or may not have read all of it: the replica has it either way).
    replication.wait_replica_applied(TIMEOUT).await;
    let primary_position = replication.primary.gtid_binlog_pos().await;
    drop(primary);
    replication.kill_primary();
    replication.promote_replica().await;
    let mut promoted = replication.replica.root_conn().await;
    workload.run(&mut promoted, 600).await;

    wait_following_server(&sdl, 1).await;
    let end = replication.replica.gtid_binlog_pos().await;
    assert_ne!(end, primary_position, "the promoted replica took writes");
    wait_for_offset(&mongo, &end, TIMEOUT, &sdl).await;

    let ingest = ingest_status(&sdl);
    assert_eq!(ingest["source_failovers"], 1, "{ingest}");
    assert_eq!(
        ingest["source_server"]["url"],
        redacted(&replication.replica.sdl_url()),
        "{ingest}"
    );
    assert_eq!(sdl.metric("sdl_source_failovers_total"), 1.0);
    let logs = sdl.logs();
    assert!(logs.contains("source failover"), "{logs}");

    // A restart with the old primary still gone: sdl starts on the replica (its binlog landmarks
    // are looked up there only for what it read there) and goes on exactly once.
    assert!(sdl.terminate(TIMEOUT).success());
    workload.run(&mut promoted, 800).await;
    sdl.start();
    sdl.wait_following().await;
    let end = replication.replica.gtid_binlog_pos().await;
    wait_for_offset(&mongo, &end, TIMEOUT, &sdl).await;
    let docs = documents_in_gtid_order(&mongo).await;
    assert_documents_exactly_once(&replication.replica, &docs, workload.row_changes, &tables())
        .await;
}

/// A URL as sdl prints it: the password replaced by `***`.
fn redacted(url: &str) -> String {
    url.replace(crate::support::SDL_PASSWORD, "***")
}

/// A replica that lacks what sdl relayed from the primary is not followed (it is behind) while
/// the primary is out of reach; once replication catches up, sdl follows it, losing and
/// duplicating nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_is_refused_until_it_has_caught_up() {
    let (replication, mongo) = tokio::join!(Replication::start(), Mongo::start());
    let (mut conn, proxy, mut sdl) = follow_primary_through_proxy(&replication, &mongo).await;

    let mut workload = Workload::new(16);
    workload.run(&mut conn, 100).await;
    replication.wait_replica_applied(TIMEOUT).await;
    // Replication stops; sdl relays more of the primary's changes than the replica has.
    replication.pause().await;
    workload.run(&mut conn, 250).await;
    let relayed = replication.primary.gtid_binlog_pos().await;
    sdl.wait_wal_holds(&relayed, TIMEOUT).await;

    // sdl's route to the primary is cut (replication's is not): the replica is behind.
    proxy.set(Mode::Drop);
    let refused = wait_until("the replica refused as behind", TIMEOUT, || async {
        let ingest = ingest_status(&sdl);
        let refused = ingest["refused_servers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        refused
            .iter()
            .any(|r| r["index"] == 1 && r["reason"] == "behind")
            .then_some(ingest)
    })
    .await;
    assert_eq!(refused["state"], "reconnecting", "{refused}");
    assert_eq!(refused["source_server"]["index"], 0, "{refused}");
    assert!(sdl.logs().contains("behind"), "{}", sdl.logs());
    assert!(sdl.metric("sdl_source_server_refusals_total") >= 2.0);
    assert_eq!(sdl.metric("sdl_source_failovers_total"), 0.0);

    // Replication resumes: the replica catches up and sdl follows it, from where it was.
    replication.resume().await;
    replication.wait_replica_applied(TIMEOUT).await;
    wait_following_server(&sdl, 1).await;
    workload.run(&mut conn, 400).await;
    replication.wait_replica_applied(TIMEOUT).await;
    let end = replication.primary.gtid_binlog_pos().await;
    wait_for_offset(&mongo, &end, TIMEOUT, &sdl).await;
    assert_eq!(ingest_status(&sdl)["source_failovers"], 1);
    let docs = documents_in_gtid_order(&mongo).await;
    assert_documents_exactly_once(&replication.primary, &docs, workload.row_changes, &tables())
        .await;
}

/// A lossy failover: the replica missed transactions sdl relayed, was promoted and wrote its
/// own. sdl does not stream from it: it names the relayed GTIDs it lacks and its errant ones,
/// keeps trying while the old primary may come back, and with the replica the only server, it
/// stops with exit code 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_replica_that_lost_relayed_transactions_is_refused_as_diverged() {
    let (mut replication, _mongo, mut sdl) =
        failover_relay(|r| vec![r.primary.sdl_url(), r.replica.sdl_url()]).await;
    sdl.start();
    sdl.wait_following().await;
    let mut workload = Workload::new(17);
    let mut primary = replication.primary.root_conn().await;
    workload.run(&mut primary, 100).await;
    replication.wait_replica_applied(TIMEOUT).await;
    let replica_has = replication.replica.gtid_binlog_pos().await;
    replication.pause().await;
    workload.run(&mut primary, 200).await;
    let relayed = replication.primary.gtid_binlog_pos().await;
    sdl.wait_wal_holds(&relayed, TIMEOUT).await;

    drop(primary);
    replication.kill_primary();
    replication.promote_replica().await;
    let mut promoted = replication.replica.root_conn().await;
    promoted
        .query_drop("INSERT INTO app.events (kind, payload) VALUES ('errant', 'x')")
        .await
        .unwrap();
    let errant = replication.replica.gtid_binlog_pos().await;

    let refused = wait_refused(
        &sdl,
        1,
        "diverged",
        "the promoted replica refused as diverged",
    )
    .await;
    let detail = refused["detail"].as_str().unwrap().to_string();
    // The relayed GTIDs it lacks (after what it has, up to what sdl relayed) and its own.
    let seq = |gtid: &str| gtid.rsplit('-').next().unwrap().parse::<u64>().unwrap();
    let first_missing = format!("0-1-{}", seq(&replica_has) + 1);
    assert!(
        detail.contains(&format!("relayed {first_missing}..{relayed}")),
        "{detail}"
    );
    assert!(
        detail.contains(&format!("0-2-{}", seq(&errant))),
        "{detail}"
    );
    assert!(
        sdl.is_running(),
        "the old primary may come back: sdl keeps trying"
    );
    assert_eq!(sdl.metric("sdl_source_failovers_total"), 0.0);
    assert!(sdl.status()["wal"]["ingest_position"] == relayed.as_str());
    assert!(sdl.terminate(TIMEOUT).success());

    // The replica is the only server left in source.url: exit 4, naming the GTIDs.
    let config_path = sdl.dir().join("sdl.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let replica_only = config
        .lines()
        .map(|line| match line.starts_with("url = [") {
            true => format!("url = \"{}\"", replication.replica.sdl_url()),
            false => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config_path, replica_only).unwrap();
    sdl.start();
    let status = sdl.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(4), "{}", sdl.logs());
    let logs = sdl.logs();
    let last_run = logs.rsplit("SIGTERM").next().unwrap();
    assert!(
        last_run.contains(&format!("relayed {first_missing}..{relayed}")),
        "{logs}"
    );
    assert!(last_run.contains("lossy failover is refused"), "{logs}");
}

/// A replica whose binlog does not carry what it replicates (`log_slave_updates` OFF) is never
/// followed, and `/status` says why and how to fix it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_log_slave_updates_is_refused_with_the_fix() {
    let (replication, mongo) = tokio::join!(
        Replication::start_with_replica_args(&["--skip-log-slave-updates"]),
        Mongo::start()
    );
    let (mut conn, proxy, mut sdl) = follow_primary_through_proxy(&replication, &mongo).await;
    Workload::new(18).run(&mut conn, 50).await;
    replication.wait_replica_applied(TIMEOUT).await;
    sdl.wait_wal_holds(&replication.primary.gtid_binlog_pos().await, TIMEOUT)
        .await;

    proxy.set(Mode::Drop);
    let refused = wait_refused(
        &sdl,
        1,
        "no_replica_updates",
        "the replica refused for log_slave_updates",
    )
    .await;
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains("log_slave_updates = ON"), "{detail}");
    assert_eq!(ingest_status(&sdl)["source_server"]["index"], 0);
    assert_eq!(sdl.metric("sdl_source_failovers_total"), 0.0);
}

/// `sdl check` with a list: each server is checked and named, an unreachable primary is a
/// warning while a replica passes, and the server sdl would follow is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdl_check_checks_each_listed_server_and_names_the_one_to_follow() {
    let (replication, mongo) = tokio::join!(Replication::start(), Mongo::start());
    let nothing_there = format!(
        "mysql://{}:{}@127.0.0.1:{}",
        crate::support::SDL_USER,
        crate::support::SDL_PASSWORD,
        crate::support::free_port()
    );
    let sdl = sdl_for(
        &replication.primary,
        &mongo,
        &[nothing_there.clone(), replication.replica.sdl_url()],
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sdl"))
        .args(["check", "--config"])
        .arg(&sdl.config_path)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{table}");
    let line = |needle: &str| {
        table
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` line in:\n{table}"))
            .to_string()
    };
    let first = format!(
        "source 1/2 ({}): reachable, login",
        redacted(&nothing_there)
    );
    assert!(line(&first).starts_with("WARN"), "{table}");
    let second = format!("source 2/2 ({})", redacted(&replication.replica.sdl_url()));
    assert!(
        line(&format!("{second}: binlog_format")).starts_with("PASS"),
        "{table}"
    );
    let follow = line("source: server to follow");
    assert!(
        follow.starts_with("PASS") && follow.contains(&second),
        "{table}"
    );
    assert!(!table.contains(crate::support::SDL_PASSWORD), "{table}");
}

/// A new WAL (a replaced WAL directory, a standby's first takeover) starts at MongoDB's offset:
/// with a replica listed first that lacks what MongoDB holds, sdl follows the next server, the
/// one that holds the offset, instead of refusing to start or streaming from the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_wal_follows_the_first_listed_server_that_holds_mongodbs_offset() {
    let (replication, mongo) = tokio::join!(Replication::start(), Mongo::start());
    let mut conn = replication.primary.root_conn().await;
    create_tables(&mut conn).await;
    replication.wait_replica_applied(TIMEOUT).await;
    let mut workload = Workload::new(19);
    replication.pause().await;
    let mut first = sdl_for(
        &replication.primary,
        &mongo,
        &[replication.primary.sdl_url()],
    );
    first.start();
    first.wait_following().await;
    workload.run(&mut conn, 120).await;
    let relayed = replication.primary.gtid_binlog_pos().await;
    wait_for_offset(&mongo, &relayed, TIMEOUT, &first).await;
    assert!(first.terminate(TIMEOUT).success());

    // Another WAL directory, the replica (behind MongoDB's offset) listed first.
    let mut second = sdl_for(
        &replication.primary,
        &mongo,
        &[replication.replica.sdl_url(), replication.primary.sdl_url()],
    );
    second.start();
    second.wait_following().await;
    wait_following_server(&second, 1).await;
    workload.run(&mut conn, 200).await;
    let end = replication.primary.gtid_binlog_pos().await;
    wait_for_offset(&mongo, &end, TIMEOUT, &second).await;
    let logs = second.logs();
    assert!(
        logs.contains("the WAL is new but MongoDB holds an offset"),
        "{logs}"
    );
    replication.resume().await;
    let docs = documents_in_gtid_order(&mongo).await;
    assert_documents_exactly_once(&replication.primary, &docs, workload.row_changes, &tables())
        .await;
}
