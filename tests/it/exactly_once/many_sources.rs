//! Many sources, one audit store (issue 15, item 3): three MariaDB servers, each relayed by its
//! own sdl under its own `source.name`, into ONE database at once, with faults during the run.
//! The three servers have the stock `gtid_domain_id=0` / `server_id=1`, so they produce the very
//! same GTIDs (`0-1-N`); the change ids keep them apart. Checked per source, document by document
//! against that source's tables: every change exactly once, each document's `meta.src` its
//! source, and no `_id` shared by two sources.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::proxy::{Mode, Proxy};
use crate::support::relay::assert_documents_exactly_once;
use crate::support::workload::{create_tables, Workload, TABLES};
use crate::support::{change_documents, wait_until, MariaDb, Mongo, Sdl};
use mongodb::bson::{doc, Document};

const TIMEOUT: Duration = Duration::from_secs(60);

/// One source: its server, the sdl relaying it, and the proxy between them (the third source's).
struct Source {
    name: &'static str,
    mariadb: MariaDb,
    sdl: Sdl,
    proxy: Option<Proxy>,
}

impl Source {
    async fn start(name: &'static str, server_id: u32, mongo: &Mongo, via_proxy: bool) -> Self {
        let mariadb = MariaDb::start().await;
        create_tables(&mut mariadb.root_conn().await).await;
        let proxy = match via_proxy {
            true => Some(Proxy::start(mariadb.port).await),
            false => None,
        };
        let lines = [
            format!("name = \"{name}\""),
            format!("server_id = {server_id}"),
            "heartbeat_interval = \"300ms\"".to_string(),
            "connect_timeout = \"2s\"".to_string(),
        ];
        let url = proxy
            .as_ref()
            .map(|p| format!("url = \"{}\"", mariadb.sdl_url_via(p.port)));
        let mut settings: Vec<(&str, &str)> = lines
            .iter()
            .chain(url.iter())
            .map(|l| ("source", l.as_str()))
            .collect();
        settings.extend([
            ("sink", "transactions = \"on\""),
            ("sink", "connect_timeout = \"2s\""),
            ("sink", "retry_max_delay = \"1s\""),
        ]);
        let mut sdl = Sdl::with_settings(&mariadb, mongo, "current", &settings);
        sdl.start();
        Source {
            name,
            mariadb,
            sdl,
            proxy,
        }
    }

    /// How often this sdl's log says it follows the binlog (once per start or reconnection).
    fn times_following(&self) -> usize {
        self.sdl.logs().matches("following the binlog").count()
    }

    async fn wait_following(&self, times: usize) {
        wait_until(
            &format!("{} following the binlog ({times})", self.name),
            TIMEOUT,
            || async { (self.times_following() >= times).then_some(()) },
        )
        .await;
    }

    async fn documents_in(&self, mongo: &Mongo) -> u64 {
        mongo
            .db()
            .await
            .collection::<Document>("row_changes")
            .count_documents(doc! { "meta.src": self.name })
            .await
            .unwrap()
    }

    /// Waits until MongoDB has more than `count` of this source's documents.
    async fn wait_documents_over(&self, mongo: &Mongo, count: u64) {
        wait_until(
            &format!("more than {count} documents of {}", self.name),
            TIMEOUT,
            || async { (self.documents_in(mongo).await > count).then_some(()) },
        )
        .await;
    }

    /// Waits until this source's offset names the server's current position.
    async fn wait_caught_up(&self, mongo: &Mongo) {
        let position = self.mariadb.gtid_binlog_pos().await;
        let offsets = mongo.db().await.collection::<Document>("binlog_offsets");
        wait_until(
            &format!(
                "offset of {} at {position}; its sdl's logs:\n{}",
                self.name,
                self.sdl.logs()
            ),
            TIMEOUT,
            || {
                let offsets = offsets.clone();
                let position = position.clone();
                async move {
                    let d = offsets.find_one(doc! { "_id": self.name }).await.ok()??;
                    (d.get_str("gtid").ok()? == position).then_some(())
                }
            },
        )
        .await;
    }
}

/// A workload on `mariadb` until `keep_going` turns false, paced so that three sources, three
/// sdl and MongoDB share two cores.
fn spawn_workload(
    mariadb: &MariaDb,
    seed: u64,
    keep_going: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Workload> {
    let url = mariadb.root_url();
    tokio::spawn(async move {
        let mut conn = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
        let mut workload = Workload::new(seed);
        while keep_going.load(Ordering::SeqCst) {
            let next = workload.row_changes + 30;
            workload.run(&mut conn, next).await;
            // Pacing of the load, not a wait for a condition.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        conn.disconnect().await.unwrap();
        workload
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sources_into_one_database_each_arrive_exactly_once_through_faults() {
    let mut mongo = Mongo::start().await;
    if mongo.is_external() {
        eprintln!("skipped: this test kills the MongoDB server, which it cannot do to SDL_TEST_MONGODB_URI");
        return;
    }
    let (east, west, north) = tokio::join!(
        Source::start("east", 4201, &mongo, false),
        Source::start("west", 4202, &mongo, false),
        Source::start("north", 4203, &mongo, true),
    );
    let mut sources = [east, west, north];
    for source in &sources {
        source.wait_following(1).await;
    }
    let keep_going = Arc::new(AtomicBool::new(true));
    let workloads: Vec<_> = sources
        .iter()
        .zip([15, 16, 17])
        .map(|(source, seed)| spawn_workload(&source.mariadb, seed, keep_going.clone()))
        .collect();
    for source in &sources {
        source.wait_documents_over(&mongo, 100).await;
    }

    // 1. One sdl SIGKILLed mid-stream and started again; the others keep writing.
    let east = &mut sources[0];
    east.sdl.kill();
    east.sdl.start();
    east.wait_following(2).await;
    let before = east.documents_in(&mongo).await;
    east.wait_documents_over(&mongo, before).await;

    // 2. The one store killed under all three, then started again: every forwarder's breaker
    //    opens, every ingester keeps filling its WAL.
    mongo.kill();
    for source in &sources {
        wait_until(
            &format!("{}'s breaker to open", source.name),
            TIMEOUT,
            || async {
                source
                    .sdl
                    .logs()
                    .contains("circuit breaker open")
                    .then_some(())
            },
        )
        .await;
    }
    mongo.restart().await;
    for source in &sources {
        let before = source.documents_in(&mongo).await;
        source.wait_documents_over(&mongo, before).await;
    }

    // 3. One source's connection cut (a blackhole: only missing heartbeats tell), then restored.
    let north = &sources[2];
    let proxy = north.proxy.as_ref().unwrap();
    proxy.set(Mode::Blackhole);
    wait_until("north's dead connection to be noticed", TIMEOUT, || async {
        north
            .sdl
            .logs()
            .contains("the connection is presumed dead")
            .then_some(())
    })
    .await;
    proxy.set(Mode::Pass);
    north.wait_following(2).await;

    keep_going.store(false, Ordering::SeqCst);
    let mut committed = Vec::new();
    for workload in workloads {
        committed.push(workload.await.unwrap());
    }
    for source in &sources {
        source.wait_caught_up(&mongo).await;
    }

    let docs = change_documents(&mongo).await;
    let mut per_source: BTreeMap<String, Vec<Document>> = BTreeMap::new();
    for d in &docs {
        let meta = d.get_document("meta").unwrap();
        let src = meta.get_str("src").unwrap_or_else(|_| panic!("{d}"));
        assert_eq!(meta.get_str("source").unwrap(), src, "{d}");
        let id = d.get_str("_id").unwrap();
        assert!(id.starts_with(&format!("{src}/")), "{id} is not of {src}");
        per_source
            .entry(src.to_string())
            .or_default()
            .push(d.clone());
    }
    let names: BTreeSet<&str> = per_source.keys().map(String::as_str).collect();
    assert_eq!(names, sources.iter().map(|s| s.name).collect());
    for (source, workload) in sources.iter().zip(&committed) {
        assert_documents_exactly_once(
            &source.mariadb,
            &per_source[source.name],
            workload.row_changes,
            &TABLES,
        )
        .await;
    }
    // The sources' GTIDs are the same (the ids had to keep them apart), and no id is shared.
    let gtids = |name: &str| -> BTreeSet<String> {
        per_source[name]
            .iter()
            .map(|d| {
                d.get_document("meta")
                    .unwrap()
                    .get_str("gtid")
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let shared: BTreeSet<String> = gtids("east")
        .intersection(&gtids("west"))
        .cloned()
        .collect::<BTreeSet<_>>()
        .intersection(&gtids("north"))
        .cloned()
        .collect();
    assert!(
        shared.len() > 100,
        "the three sources share {} GTIDs",
        shared.len()
    );
    let ids: BTreeSet<&str> = docs.iter().map(|d| d.get_str("_id").unwrap()).collect();
    assert_eq!(ids.len(), docs.len(), "an _id shared by two documents");
    assert_eq!(docs.len(), per_source.values().map(Vec::len).sum::<usize>());

    for source in &mut sources {
        assert!(source.sdl.is_running(), "{}", source.sdl.logs());
        assert!(source.sdl.terminate(Duration::from_secs(30)).success());
    }
    eprintln!(
        "row changes per source, each exactly once: {:?}",
        sources
            .iter()
            .zip(&committed)
            .map(|(s, w)| (s.name, w.row_changes))
            .collect::<Vec<_>>()
    );
}
