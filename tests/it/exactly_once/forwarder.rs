//! The forwarder against a real MongoDB-compatible server: exactly-once through a long MongoDB
//! outage, through SIGKILLs at random moments (with and without transactions), through a crash
//! between staging and commit; and a definite error (a change over 16 MiB) that stops forwarding
//! with nothing acknowledged past it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::workload::Workload;
use crate::support::{documents_of, wait_for_offset, wait_until, MariaDb, Mongo, Relay, Rng, Sdl};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mysql_async::prelude::Queryable;

const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);

/// A WAL record type for opening sdl's WAL from the test: only cursors are read, never records.
#[derive(serde::Serialize, serde::Deserialize)]
struct Opaque;

impl sdl_wal::Record for Opaque {
    const FORMAT_VERSION: u16 = 1;

    fn position_after(&self) -> &[u8] {
        b""
    }
}

/// (acknowledged, last) of sdl's WAL; sdl must not be running.
fn wal_cursors(sdl: &Sdl) -> (u64, u64) {
    let wal = sdl_wal::Wal::<Opaque>::open(sdl.wal_dir()).expect("open sdl's WAL");
    (wal.acked().unwrap(), wal.last_seq().unwrap())
}

async fn count(mongo: &Mongo, collection: &str, filter: Document) -> u64 {
    mongo
        .db()
        .await
        .collection::<Document>(collection)
        .count_documents(filter)
        .await
        .unwrap()
}

/// The WAL sequence the offset document names (0 before the first commit).
async fn offset_seq(mongo: &Mongo) -> i64 {
    mongo
        .find_by_id("binlog_offsets", "default")
        .await
        .and_then(|d| d.get_i64("wal_seq").ok())
        .unwrap_or(0)
}

/// Starts a workload that keeps writing until `keep_going` turns false (and at least `target`
/// row changes), pausing `pause` after every `chunk` row changes to hold a steady rate.
fn spawn_workload(
    mariadb: &MariaDb,
    mut workload: Workload,
    target: u64,
    keep_going: Arc<AtomicBool>,
    pacing: Option<(u64, Duration)>,
) -> tokio::task::JoinHandle<Workload> {
    let url = mariadb.root_url();
    tokio::spawn(async move {
        let mut conn = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
        match pacing {
            None => workload.run_while(&mut conn, target, &keep_going).await,
            Some((chunk, pause)) => {
                while workload.row_changes < target || keep_going.load(Ordering::SeqCst) {
                    let next = workload.row_changes + chunk;
                    workload.run(&mut conn, next).await;
                    // Pacing of the load, not a wait for a condition.
                    tokio::time::sleep(pause).await;
                }
            }
        }
        conn.disconnect().await.unwrap();
        workload
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_outage_of_90_seconds_under_load_loses_and_duplicates_nothing() {
    let mut relay = Relay::builder()
        .workload_tables()
        .sink_toml("transactions = \"on\"\nretry_max_delay = \"5s\"\nconnect_timeout = \"2s\"")
        .following()
        .await;
    if !relay.can_kill_mongo() {
        return;
    }

    let keep_going = Arc::new(AtomicBool::new(true));
    let workload = spawn_workload(
        &relay.mariadb,
        Workload::new(90),
        0,
        keep_going.clone(),
        Some((40, Duration::from_millis(100))),
    );
    relay.wait_documents_over(200, DRAIN_TIMEOUT).await;

    relay.mongo.kill();
    let outage_started = Instant::now();
    let wal_dir = relay.sdl.wal_dir();
    let wal_size = || {
        std::fs::read_dir(&wal_dir)
            .unwrap()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum::<u64>()
    };
    wait_until("the breaker to open", Duration::from_secs(60), || async {
        relay
            .sdl
            .logs()
            .contains("circuit breaker open")
            .then_some(())
    })
    .await;
    let position_at_open = relay.mariadb.gtid_binlog_pos().await;
    let size_at_open = wal_size();
    // The outage itself: MongoDB stays down for 90 s while the workload keeps writing.
    let outage = Duration::from_secs(90);
    tokio::time::sleep(outage.saturating_sub(outage_started.elapsed())).await;
    assert!(
        relay.sdl.is_running(),
        "sdl exited during the outage:\n{}",
        relay.sdl.logs()
    );
    assert_ne!(
        relay.mariadb.gtid_binlog_pos().await,
        position_at_open,
        "the workload kept writing"
    );
    assert!(
        wal_size() > size_at_open,
        "the ingester kept writing into the WAL during the outage (WAL files did not grow)"
    );
    relay.mongo.restart().await;
    let outage_length = outage_started.elapsed();

    wait_until("the breaker to close", DRAIN_TIMEOUT, || async {
        relay
            .sdl
            .logs()
            .contains("circuit breaker closed")
            .then_some(())
    })
    .await;
    keep_going.store(false, Ordering::SeqCst);
    let workload = workload.await.unwrap();
    relay.wait_caught_up(DRAIN_TIMEOUT).await;
    relay.assert_exactly_once(workload.row_changes).await;

    let logs = relay.sdl.logs();
    for (transition, times) in [
        ("circuit breaker open", 1),
        ("circuit breaker half-open", 1),
        ("circuit breaker closed", 1),
    ] {
        assert_eq!(
            logs.matches(transition).count(),
            times,
            "`{transition}` is logged once per outage:\n{logs}"
        );
    }
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    let (acked, last) = wal_cursors(&relay.sdl);
    assert_eq!(acked, last, "the WAL drained");
    eprintln!(
        "{} row changes in {} transactions arrived exactly once across a MongoDB outage of {:?}",
        workload.row_changes, workload.transactions, outage_length
    );
}

/// SIGKILLs sdl `kills` times at random moments while it forwards under load; checks
/// exactly-once (workload paused, WAL drained) after every `check_every` kills.
async fn kills_during_forwarding(extra_sink_toml: &str, mongo_args: &[&str], seed: u64) {
    const KILLS: usize = 20;
    const CHECK_EVERY: usize = 10;
    let mut relay = Relay::builder()
        .mongo_args(mongo_args)
        .workload_tables()
        .sink_toml(extra_sink_toml)
        .following()
        .await;

    let mut rng = Rng::new(seed);
    let mut workload = Workload::new(seed);
    let mut kills = 0;
    while kills < KILLS {
        let keep_going = Arc::new(AtomicBool::new(true));
        let running = spawn_workload(
            &relay.mariadb,
            workload,
            0,
            keep_going.clone(),
            Some((20, Duration::from_millis(20))),
        );
        for _ in 0..CHECK_EVERY {
            // Kill only while sdl is forwarding: after MongoDB's offset has moved.
            let seen = offset_seq(&relay.mongo).await;
            wait_until("sdl forwarding", DRAIN_TIMEOUT, || async {
                (offset_seq(&relay.mongo).await > seen).then_some(())
            })
            .await;
            assert!(relay.sdl.is_running(), "sdl exited:\n{}", relay.sdl.logs());
            // A random moment inside the forwarding.
            tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
            relay.sdl.kill();
            kills += 1;
            relay.sdl.start();
        }
        keep_going.store(false, Ordering::SeqCst);
        workload = running.await.unwrap();
        relay.wait_caught_up(DRAIN_TIMEOUT).await;
        relay.assert_exactly_once(workload.row_changes).await;
        assert_eq!(
            count(
                &relay.mongo,
                "row_changes_staging",
                doc! { "status": "pending" }
            )
            .await,
            0,
            "every staging entry is settled once the WAL is drained"
        );
        eprintln!(
            "{kills} SIGKILLs: {} row changes arrived exactly once",
            workload.row_changes
        );
    }
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    let logs = relay.sdl.logs();
    assert!(!logs.contains("ERROR"), "no errors:\n{logs}");
    eprintln!(
        "restarts that found a batch left pending: {}; that found MongoDB ahead of the WAL cursor: {}",
        logs.matches("staging: reconciled a batch").count(),
        logs.matches("catching the cursor up").count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_with_transactions_keeps_exactly_once() {
    kills_during_forwarding("transactions = \"on\"\nbatch_max_documents = 100", &[], 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_without_transactions_keeps_exactly_once() {
    // A standalone server: "auto" must choose the idempotent path by itself.
    kills_during_forwarding("batch_max_documents = 100", &["--standalone"], 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_server_without_transactions_gets_every_change_once() {
    let mut relay = Relay::builder()
        .mongo_args(&["--standalone"])
        .workload_tables()
        .sink_toml("transactions = \"off\"")
        .following()
        .await;
    let mut conn = relay.conn().await;
    let mut workload = Workload::new(5);
    workload.run(&mut conn, 3000).await;
    relay.wait_caught_up(DRAIN_TIMEOUT).await;
    relay.assert_exactly_once(workload.row_changes).await;
    let staging = documents_of(&relay.mongo, "row_changes_staging").await;
    assert!(!staging.is_empty());
    for entry in &staging {
        assert_eq!(entry.get_str("status"), Ok("committed"), "{entry}");
        assert_eq!(entry.get_str("mode"), Ok("idempotent"), "{entry}");
    }
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_left_pending_between_staging_and_commit_is_reconciled_on_start() {
    let mut relay = Relay::builder()
        .workload_tables()
        .start_from("earliest")
        .sink_toml("transactions = \"on\"\nstaging_ttl = \"3days\"")
        .stopped()
        .await;
    let mut conn = relay.conn().await;
    let mut workload = Workload::new(3);
    workload.run(&mut conn, 500).await;

    // The test hook: sdl exits right after writing the first batch's staging entry.
    relay
        .sdl
        .set_env("FAILPOINTS", "sdl-exit-after-staging=return");
    relay.sdl.start();
    let status = relay.sdl.wait_exit(DRAIN_TIMEOUT);
    assert_eq!(status.code(), Some(97), "{}", relay.sdl.logs());
    let pending = documents_of(&relay.mongo, "row_changes_staging").await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].get_str("status"), Ok("pending"));
    assert_eq!(count(&relay.mongo, "row_changes", doc! {}).await, 0);
    let pending_id = pending[0].get_str("_id").unwrap().to_string();

    relay.sdl.remove_env("FAILPOINTS");
    relay.sdl.start();
    relay.wait_caught_up(DRAIN_TIMEOUT).await;
    relay.assert_exactly_once(workload.row_changes).await;
    let logs = relay.sdl.logs();
    assert!(
        logs.contains("staging: reconciled a batch left pending by an earlier run: not applied"),
        "{logs}"
    );
    assert!(
        logs.contains(&pending_id),
        "the report names the entry:\n{logs}"
    );
    let staging = relay
        .mongo
        .db()
        .await
        .collection::<Document>("row_changes_staging");
    let reconciled = staging
        .find_one(doc! { "_id": &pending_id })
        .await
        .unwrap()
        .expect("the reconciled entry");
    assert!(
        reconciled
            .get_str("note")
            .is_ok_and(|n| n.starts_with("not applied")),
        "{reconciled}"
    );
    // "not_applied", or "committed" when the batch sent again covered the very same range.
    assert!(
        matches!(
            reconciled.get_str("status"),
            Ok("not_applied" | "committed")
        ),
        "{reconciled}"
    );
    assert_eq!(
        count(
            &relay.mongo,
            "row_changes_staging",
            doc! { "status": "pending" }
        )
        .await,
        0
    );

    // A pending entry whose batch the offset covers (committed, staging mark lost) is reported
    // as committed.
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    let offset = relay
        .mongo
        .find_by_id("binlog_offsets", "default")
        .await
        .expect("the offset document");
    let wal_id = offset.get_str("wal_id").unwrap();
    staging
        .insert_one(doc! {
            "_id": "covered", "source": "default", "wal_id": wal_id,
            "first_seq": 1_i64, "last_seq": 1_i64, "first_gtid": "0-1-1", "last_gtid": "0-1-1",
            "count": 1_i64, "status": "pending", "createdAt": mongodb::bson::DateTime::now(),
        })
        .await
        .unwrap();
    relay.sdl.start();
    wait_until("the covered entry reconciled", DRAIN_TIMEOUT, || async {
        let d = staging.find_one(doc! { "_id": "covered" }).await.unwrap()?;
        (d.get_str("status") == Ok("committed")).then_some(())
    })
    .await;
    assert!(relay
        .sdl
        .logs()
        .contains("applied before the restart: the offset covers it"));

    // The indexes ensured at start, with the configured TTL (3 days).
    let indexes: Vec<Document> = staging
        .list_indexes()
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(|i| mongodb::bson::to_document(&i).unwrap())
        .collect();
    let ttl = indexes
        .iter()
        .find(|i| i.get_document("key").unwrap().contains_key("createdAt"))
        .unwrap_or_else(|| panic!("no TTL index: {indexes:?}"));
    assert_eq!(
        ttl.get("expireAfterSeconds")
            .and_then(|v| v.as_i64().or(v.as_i32().map(i64::from))),
        Some(3 * 24 * 3600),
        "{ttl}"
    );
    assert!(
        indexes
            .iter()
            .any(|i| i.get_document("key").unwrap().contains_key("status")),
        "{indexes:?}"
    );
    let change_indexes: Vec<String> = relay
        .mongo
        .db()
        .await
        .collection::<Document>("row_changes")
        .list_index_names()
        .await
        .unwrap();
    for name in ["ts", "db_tbl_pk"] {
        assert!(
            change_indexes.iter().any(|n| n == name),
            "{change_indexes:?}"
        );
    }
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_over_16_mib_stops_forwarding_with_nothing_acknowledged_past_it() {
    let mut relay = Relay::builder()
        .mariadb_args(&["--max-allowed-packet=64M"])
        .sql(&["CREATE TABLE app.blobs (id INT PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB"])
        .following()
        .await;
    let mut conn = relay.conn().await;

    conn.query_drop("INSERT INTO app.blobs VALUES (1, 'small')")
        .await
        .unwrap();
    let before_big = relay.mariadb.gtid_binlog_pos().await;
    conn.query_drop("INSERT INTO app.blobs VALUES (2, REPEAT('x', 17 * 1024 * 1024))")
        .await
        .unwrap();
    let big_gtid = relay.mariadb.gtid_binlog_pos().await;
    conn.query_drop("INSERT INTO app.blobs VALUES (3, 'after')")
        .await
        .unwrap();

    // A definite error: sdl stops by itself (it does not spin), exit code 1.
    let status = relay.sdl.wait_exit(DRAIN_TIMEOUT);
    assert_eq!(status.code(), Some(1), "{}", relay.sdl.logs());
    let logs = relay.sdl.logs();
    let error = logs
        .lines()
        .find(|l| l.starts_with("sdl: error:"))
        .unwrap_or_else(|| panic!("no error line:\n{logs}"));
    for needle in [
        "app.blobs",
        "\"id\": 2",
        big_gtid.as_str(),
        "16 MiB",
        "docs/operations.md",
    ] {
        assert!(error.contains(needle), "`{needle}` missing from: {error}");
    }
    assert_eq!(
        logs.matches("16 MiB document limit").count(),
        2,
        "reported once (log + exit line), never retried:\n{logs}"
    );

    // Everything before the big change is in MongoDB; nothing at or after it.
    let ids: Vec<i64> = relay
        .documents()
        .await
        .iter()
        .filter(|d| d.get_str("op") == Ok("insert"))
        .map(|d| d.get_document("after").unwrap().get_i64("id").unwrap())
        .collect();
    assert_eq!(ids, vec![1]);
    let offset = relay
        .mongo
        .find_by_id("binlog_offsets", "default")
        .await
        .expect("the offset document");
    assert_eq!(offset.get_str("gtid"), Ok(before_big.as_str()));
    let (acked, last) = wal_cursors(&relay.sdl);
    assert!(
        acked < last,
        "the big change is still unacknowledged in the WAL"
    );

    // Starting again stops again at the same place.
    relay.sdl.start();
    assert_eq!(relay.sdl.wait_exit(DRAIN_TIMEOUT).code(), Some(1));
    assert_eq!(
        wal_cursors(&relay.sdl).0,
        acked,
        "nothing acknowledged past it"
    );
}

/// A restart while MongoDB is down (systemd restarting sdl during an outage, say): with a WAL that
/// has a position, sdl starts anyway, reads the binlog into the WAL, and forwards when MongoDB
/// is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdl_starts_during_a_mongodb_outage_and_catches_up_after_it() {
    let mut relay = Relay::builder()
        .workload_tables()
        .sink_toml("retry_max_delay = \"1s\"\nconnect_timeout = \"1s\"")
        .following()
        .await;
    if !relay.can_kill_mongo() {
        return;
    }
    let mut conn = relay.conn().await;
    let mut workload = Workload::new(31);
    workload.run(&mut conn, 500).await;
    relay.wait_caught_up(DRAIN_TIMEOUT).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());

    relay.mongo.kill();
    workload.run(&mut conn, 1500).await;
    let position = relay.mariadb.gtid_binlog_pos().await;
    relay.sdl.start();
    // Once it follows, its admin endpoint is up and `/status` says how far the WAL got.
    wait_until("sdl following again", DRAIN_TIMEOUT, || async {
        (relay.sdl.logs().matches("following the binlog").count() >= 2).then_some(())
    })
    .await;
    // The WAL fills while MongoDB is down; sdl must stay up meanwhile.
    relay.sdl.wait_wal_holds(&position, DRAIN_TIMEOUT).await;
    assert!(relay.sdl.is_running(), "sdl exited:\n{}", relay.sdl.logs());
    assert!(relay
        .sdl
        .logs()
        .contains("MongoDB is not reachable: following the binlog into the WAL meanwhile"));

    relay.mongo.restart().await;
    wait_for_offset(&relay.mongo, &position, DRAIN_TIMEOUT, &relay.sdl).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    relay.assert_exactly_once(workload.row_changes).await;
}
