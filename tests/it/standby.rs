//! A hot standby fenced through MongoDB (`[lease]`, docs/operations.md "Hot standby"): two sdl
//! with the same `source.name`, their own WAL directories and admin ports, against one MariaDB
//! and one SecantusDB. The leader is SIGKILLed, SIGSTOPped (then SIGCONTed) or cut off from MongoDB
//! under load; the standby takes over within `lease.duration` plus two polls plus slack, every
//! change arrives exactly once (document by document against the source), and the old leader
//! commits nothing after the takeover: its batches' staging entries stamped `committedAt` (set
//! only inside its own commit transactions) are counted once the new leader commits and again
//! after the old leader has exited with code 6. A MongoDB outage for both, longer than the lease,
//! ends in no takeover, and the leader's WAL keeps buffering through it.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};

use crate::support::proxy::{Mode, Proxy};
use crate::support::workload::Workload;
use crate::support::{run_sdl, wait_for_offset, wait_until, Relay, Sdl};

const LEASE_DURATION: Duration = Duration::from_secs(2);
/// The standby looks at the lease every third of its duration.
const POLL: Duration = Duration::from_millis(667);
/// Scheduling on a loaded 2-core machine, a MongoDB round trip or two.
const SLACK: Duration = Duration::from_secs(3);
const DRAIN: Duration = Duration::from_secs(90);
/// The exit code of a lost lease.
const LEASE_LOST: i32 = 6;

/// The settings of one member of the pair: short lease, short timeouts, and a `source.server_id`
/// of its own, as docs/operations.md "Hot standby" asks (around a takeover both may stream).
fn member(instance: &str) -> Vec<(&'static str, String)> {
    let server_id = if instance == "a" { 4242 } else { 4243 };
    vec![
        ("source", format!("server_id = {server_id}")),
        ("lease", "enabled = true".into()),
        ("lease", "duration = \"2s\"".into()),
        ("lease", format!("instance = \"{instance}\"")),
        ("source", "heartbeat_interval = \"500ms\"".into()),
        ("sink", "connect_timeout = \"1s\"".into()),
        ("sink", "retry_max_delay = \"1s\"".into()),
    ]
}

fn as_settings<'a>(settings: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    settings.iter().map(|(s, l)| (*s, l.as_str())).collect()
}

/// `role` from `/status`, `None` while the endpoint does not answer.
fn role(sdl: &Sdl) -> Option<String> {
    let mut response = ureq::get(&format!("http://{}/status", sdl.admin_addr()))
        .call()
        .ok()?;
    let status: serde_json::Value =
        serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()?;
    status["role"].as_str().map(str::to_string)
}

async fn wait_role(sdl: &mut Sdl, wanted: &str, timeout: Duration) {
    let what = format!("role {wanted}");
    wait_until(&what, timeout, || {
        assert!(sdl.is_running(), "sdl exited:\n{}", sdl.logs());
        let now = role(sdl);
        async move { (now.as_deref() == Some(wanted)).then_some(()) }
    })
    .await;
}

/// A leader `a` (the relay's sdl, following the binlog) and a standby `b` (waiting).
struct Pair {
    relay: Relay,
    standby: Sdl,
    /// Where the standby's systemd notifications arrive (its `NOTIFY_SOCKET`).
    standby_notify: UnixDatagram,
}

impl Pair {
    /// The notifications the standby has sent to "systemd" since the last call.
    fn standby_notifications(&self) -> String {
        let mut all = String::new();
        let mut buffer = [0u8; 4096];
        while let Ok(n) = self.standby_notify.recv(&mut buffer) {
            all.push_str(&String::from_utf8_lossy(&buffer[..n]));
            all.push('\n');
        }
        all
    }
}

impl Pair {
    /// With `mongo_via_proxy`, the leader reaches MongoDB through the returned proxy (and the
    /// standby directly), for a cut between the leader and MongoDB only.
    async fn start(mongo_via_proxy: bool) -> (Self, Option<Proxy>) {
        let a = member("a");
        let mut relay = Relay::builder()
            .workload_tables()
            .start_from("earliest")
            .settings(&as_settings(&a))
            .stopped()
            .await;
        let proxy = match mongo_via_proxy {
            true => {
                let proxy = Proxy::start(relay.mongo.port()).await;
                let mut a = a.clone();
                let url = relay.mongo.uri_via_proxy(proxy.port);
                a.push(("sink", format!("url = \"{url}\"")));
                relay.sdl =
                    Sdl::with_settings(&relay.mariadb, &relay.mongo, "earliest", &as_settings(&a));
                Some(proxy)
            }
            false => None,
        };
        relay.sdl.start();
        relay.sdl.wait_following().await;
        wait_role(&mut relay.sdl, "leader", Duration::from_secs(30)).await;
        let b = member("b");
        let mut standby =
            Sdl::with_settings(&relay.mariadb, &relay.mongo, "earliest", &as_settings(&b));
        let socket = standby.dir().join("notify.sock");
        let standby_notify = UnixDatagram::bind(&socket).unwrap();
        standby_notify.set_nonblocking(true).unwrap();
        standby.set_env("NOTIFY_SOCKET", socket.to_str().unwrap());
        standby.start();
        wait_role(&mut standby, "standby", Duration::from_secs(30)).await;
        let pair = Pair {
            relay,
            standby,
            standby_notify,
        };
        (pair, proxy)
    }

    async fn lease(&self) -> Document {
        self.relay
            .mongo
            .find_by_id("relay_leases", "default")
            .await
            .expect("the lease document")
    }

    async fn offset_wal_id(&self) -> Option<String> {
        let offset = self
            .relay
            .mongo
            .find_by_id("binlog_offsets", "default")
            .await?;
        offset.get_str("wal_id").ok().map(str::to_string)
    }

    /// Batches committed from WAL `wal_id` (stamped inside their own commit transactions).
    async fn commits_from(&self, wal_id: &str) -> u64 {
        self.relay
            .mongo
            .db()
            .await
            .collection::<Document>("row_changes_staging")
            .count_documents(doc! { "wal_id": wal_id, "committedAt": { "$exists": true } })
            .await
            .unwrap()
    }

    /// Waits until the lease is at `epoch` and its holder has committed a batch in it; on a
    /// timeout, fails with both instances' logs.
    async fn wait_commit_in_epoch(&self, epoch: i64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let lease = self.lease().await;
            if lease.get_i64("epoch") == Ok(epoch) && lease.get_i64("commits").unwrap_or(0) > 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no commit in epoch {epoch} within 60 s (lease {lease}); a's logs:\n{}\nb's logs:\n{}",
                self.relay.sdl.logs(),
                self.standby.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The workload, writing until told to stop (so that faults land mid-stream).
fn start_workload(
    conn: mysql_async::Conn,
    seed: u64,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Workload>) {
    let keep_going = Arc::new(AtomicBool::new(true));
    let task = tokio::spawn({
        let keep_going = keep_going.clone();
        async move {
            let mut conn = conn;
            let mut workload = Workload::new(seed);
            workload.run_while(&mut conn, 1, &keep_going).await;
            workload
        }
    });
    (keep_going, task)
}

/// Stops the workload, waits until `leader` has relayed all of it, checks exactly once.
async fn finish(
    relay: &Relay,
    leader: &Sdl,
    keep_going: Arc<AtomicBool>,
    workload: tokio::task::JoinHandle<Workload>,
) -> Workload {
    keep_going.store(false, Ordering::SeqCst);
    let workload = workload.await.unwrap();
    let position = relay.mariadb.gtid_binlog_pos().await;
    wait_for_offset(&relay.mongo, &position, DRAIN, leader).await;
    relay.assert_exactly_once(workload.row_changes).await;
    workload
}

/// The takeover bound: the lease lapses `duration` after the standby last saw it move, which it
/// sees within a poll of the last renewal; then one more poll at most.
fn assert_takeover_within_bound(what: &str, took: Duration) {
    let bound = LEASE_DURATION + POLL * 2 + SLACK;
    eprintln!(
        "takeover after {what}: {:.2} s (bound {:.2} s)",
        took.as_secs_f64(),
        bound.as_secs_f64()
    );
    assert!(
        took <= bound,
        "takeover after {what} took {took:?}, over {bound:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_under_load_hands_over_to_the_standby_exactly_once() {
    let (mut pair, _) = Pair::start(false).await;
    // The standby: up and healthy (systemd told so), not ready, not reading the binlog, saying
    // who leads.
    let notified = pair.standby_notifications();
    assert!(
        notified.contains("READY=1") && notified.contains("STATUS=standby: waiting for the lease"),
        "{notified}"
    );
    let Pair { relay, standby, .. } = &mut pair;
    let (code, body) = standby.admin_get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("standby"), "{body}");
    assert_eq!(standby.admin_get("/healthz").0, 200);
    assert_eq!(standby.status()["lease"]["holder_instance"], "a");
    assert_eq!(standby.metric("sdl_lease_is_leader"), 0.0);
    assert_eq!(relay.sdl.metric("sdl_lease_is_leader"), 1.0);
    assert!(
        standby.logs().contains("waiting as a standby"),
        "{}",
        standby.logs()
    );
    assert!(
        !standby.logs().contains("following the binlog"),
        "{}",
        standby.logs()
    );

    let (keep_going, workload) = start_workload(relay.conn().await, 11);
    relay.wait_documents_over(500, DRAIN).await;
    let killed = Instant::now();
    relay.sdl.kill();
    wait_role(standby, "leader", Duration::from_secs(30)).await;
    let took = killed.elapsed();
    pair.wait_commit_in_epoch(2).await;
    let first_commit = killed.elapsed();
    eprintln!(
        "SIGKILL: standby leads {:.2} s after the kill, first commit {:.2} s after it",
        took.as_secs_f64(),
        first_commit.as_secs_f64()
    );
    assert_takeover_within_bound("a SIGKILL", took);
    let notified = pair.standby_notifications();
    assert!(
        notified.contains("STATUS=leader of source default (epoch 2)"),
        "{notified}"
    );
    let Pair { relay, standby, .. } = &mut pair;
    assert_eq!(standby.metric("sdl_lease_takeovers_total"), 1.0);
    assert_eq!(standby.metric("sdl_lease_epoch"), 2.0);
    assert!(standby.logs().contains("lease taken"), "{}", standby.logs());

    let workload = finish(relay, standby, keep_going, workload).await;
    assert_eq!(pair.lease().await.get_str("instance"), Ok("b"));
    // A clean stop releases the lease for the next standby.
    assert!(pair.standby.terminate(Duration::from_secs(30)).success());
    assert_eq!(
        pair.lease().await.get("holder"),
        Some(&mongodb::bson::Bson::Null)
    );
    eprintln!(
        "{} row changes arrived exactly once across a SIGKILL of the leader",
        workload.row_changes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_commits_nothing_after_the_takeover_and_steps_down() {
    let (mut pair, _) = Pair::start(false).await;
    let (keep_going, workload) = start_workload(pair.relay.conn().await, 12);
    pair.relay.wait_documents_over(500, DRAIN).await;
    let wal_a = pair.offset_wal_id().await.expect("the leader's offset");

    let stopped = Instant::now();
    pair.relay.sdl.send_signal("STOP");
    wait_role(&mut pair.standby, "leader", Duration::from_secs(30)).await;
    assert_takeover_within_bound("a SIGSTOP", stopped.elapsed());
    pair.wait_commit_in_epoch(2).await;
    let committed_by_a = pair.commits_from(&wal_a).await;

    // Resumed, the old leader's next renewal or commit finds the lease taken: exit 6.
    pair.relay.sdl.send_signal("CONT");
    let status = pair.relay.sdl.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(LEASE_LOST), "{}", pair.relay.sdl.logs());
    assert!(
        pair.relay.sdl.logs().contains("lost the lease"),
        "{}",
        pair.relay.sdl.logs()
    );
    assert_eq!(
        pair.commits_from(&wal_a).await,
        committed_by_a,
        "the old leader committed a batch after the takeover"
    );
    assert_ne!(pair.offset_wal_id().await.as_deref(), Some(wal_a.as_str()));

    // Started again it waits as a standby; its WAL is from an earlier term. When the new leader
    // dies it takes over again, sets that WAL aside and continues from MongoDB's offset.
    pair.relay.sdl.start();
    wait_role(&mut pair.relay.sdl, "standby", Duration::from_secs(30)).await;
    let killed = Instant::now();
    pair.standby.kill();
    wait_role(&mut pair.relay.sdl, "leader", Duration::from_secs(30)).await;
    assert_takeover_within_bound("a SIGKILL of the second leader", killed.elapsed());
    pair.wait_commit_in_epoch(3).await;
    assert!(
        pair.relay.sdl.logs().contains("from an earlier term"),
        "{}",
        pair.relay.sdl.logs()
    );
    let workload = finish(&pair.relay, &pair.relay.sdl, keep_going, workload).await;
    eprintln!(
        "{} row changes arrived exactly once across a SIGSTOP takeover and a takeover back",
        workload.row_changes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_mongodb_steps_down_and_commits_nothing_after_the_takeover() {
    let (mut pair, proxy) = Pair::start(true).await;
    let proxy = proxy.unwrap();
    let (keep_going, workload) = start_workload(pair.relay.conn().await, 13);
    pair.relay.wait_documents_over(500, DRAIN).await;
    let wal_a = pair.offset_wal_id().await.expect("the leader's offset");

    // A cut cable between the leader and MongoDB; the source stays reachable to both.
    let cut = Instant::now();
    proxy.set(Mode::Blackhole);
    wait_role(&mut pair.standby, "leader", Duration::from_secs(30)).await;
    assert_takeover_within_bound("a cut from MongoDB", cut.elapsed());
    pair.wait_commit_in_epoch(2).await;
    let committed_by_a = pair.commits_from(&wal_a).await;
    // Cut off, the old leader cannot know yet: it says its lease is unconfirmed, is not ready,
    // and keeps running (reading the binlog into its WAL, as through any MongoDB outage).
    wait_lease_unconfirmed(&mut pair.relay.sdl, "the old leader's lease unconfirmed").await;
    let (code, body) = pair.relay.sdl.admin_get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("lease not renewed since"), "{body}");

    // Healed: the old leader has stepped down, or finds the lease taken now; it commits nothing.
    proxy.set(Mode::Pass);
    let status = pair.relay.sdl.wait_exit(Duration::from_secs(60));
    let logs = pair.relay.sdl.logs();
    assert_eq!(status.code(), Some(LEASE_LOST), "{logs}");
    assert!(logs.contains("lost the lease"), "{logs}");
    assert_eq!(
        pair.commits_from(&wal_a).await,
        committed_by_a,
        "the old leader committed a batch after the takeover"
    );
    let workload = finish(&pair.relay, &pair.standby, keep_going, workload).await;
    assert_ne!(pair.offset_wal_id().await.as_deref(), Some(wal_a.as_str()));
    eprintln!(
        "{} row changes arrived exactly once across a cut between the leader and MongoDB",
        workload.row_changes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mongodb_outage_longer_than_the_lease_keeps_the_leader_and_its_wal_buffering() {
    let (mut pair, _) = Pair::start(false).await;
    if !pair.relay.can_kill_mongo() {
        return;
    }
    let (keep_going, workload) = start_workload(pair.relay.conn().await, 14);
    pair.relay.wait_documents_over(500, DRAIN).await;
    // MongoDB away from both for three lease durations: nobody can take over, and the leader
    // keeps reading the binlog into its WAL.
    pair.relay.mongo.kill();
    let before = pair.relay.sdl.status()["wal"]["last_seq"].as_u64().unwrap();
    wait_lease_unconfirmed(&mut pair.relay.sdl, "the leader's lease unconfirmed").await;
    tokio::time::sleep(LEASE_DURATION * 2).await; // the outage itself, not a wait on a condition
    let during = pair.relay.sdl.status()["wal"]["last_seq"].as_u64().unwrap();
    assert!(
        during > before,
        "the WAL stopped buffering during the outage ({before} → {during})"
    );
    pair.relay.mongo.restart().await;
    keep_going.store(false, Ordering::SeqCst);
    // Back: the leader's next renewal confirms its lease; the standby saw nothing lapse.
    let a = &mut pair.relay.sdl;
    wait_until(
        "the leader's lease confirmed",
        Duration::from_secs(30),
        || {
            assert!(a.is_running(), "{}", a.logs());
            let status = a.status();
            async move { status["lease"]["unconfirmed_since"].is_null().then_some(()) }
        },
    )
    .await;
    assert!(pair.relay.sdl.logs().contains("lease renewed again"));
    let workload = finish(&pair.relay, &pair.relay.sdl, keep_going, workload).await;
    assert_eq!(pair.lease().await.get_i64("epoch"), Ok(1), "no takeover");
    assert_eq!(role(&pair.standby).as_deref(), Some("standby"));
    eprintln!(
        "{} row changes arrived exactly once across a MongoDB outage of three lease durations",
        workload.row_changes
    );
}

#[test]
fn a_lease_without_transactions_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sdl.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"mysql://sdl:pw@127.0.0.1:1\"\nserver_id = 7\n[wal]\ndir = \"{}\"\n[sink]\nurl = \"mongodb://127.0.0.1:1/\"\ntransactions = \"off\"\n[lease]\nenabled = true\n",
            dir.path().join("wal").display()
        ),
    )
    .unwrap();
    let (code, stderr) = run_sdl(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("lease.enabled") && stderr.contains("transactions"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_on_a_standalone_mongodb_is_refused_naming_the_server() {
    let settings = member("a");
    let mut relay = Relay::builder()
        .mongo_args(&["--standalone"])
        .settings(&as_settings(&settings))
        .stopped()
        .await;
    relay.sdl.start();
    let status = relay.sdl.wait_exit(Duration::from_secs(60));
    let logs = relay.sdl.logs();
    assert_eq!(status.code(), Some(1), "{logs}");
    let server = format!("127.0.0.1:{}", relay.mongo.port());
    assert!(logs.contains("[lease] is enabled but MongoDB at"), "{logs}");
    assert!(logs.contains(&server), "{logs}");
    // `sdl check` says the same, as a failed check.
    let config = relay.sdl.config_path.to_str().unwrap().to_string();
    let (code, stderr) = run_sdl(&["check", "--config", &config]);
    assert_eq!(code, Some(1), "{stderr}");
}

/// Waits (15 s at most) until a running leader says in `/status` that its lease is unconfirmed.
async fn wait_lease_unconfirmed(leader: &mut Sdl, what: &str) {
    wait_until(what, Duration::from_secs(15), || {
        assert!(leader.is_running(), "{}", leader.logs());
        let status = leader.status();
        async move {
            status["lease"]["unconfirmed_since"]
                .is_string()
                .then_some(())
        }
    })
    .await;
}
