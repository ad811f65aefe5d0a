//! The soak's fault injector: at random moments (seeded), one fault at a time, each followed by a
//! check that sdl recovered by itself (MongoDB's offset reaches the source position taken when
//! the fault ended) within a bound.
//!
//! Faults come in shuffled decks holding every kind once, so a run of any length injects each
//! kind at least once (the first deck is always completed) and a long run each kind many times.
//!
//! The source is a primary and a replica in GTID replication ([`Replication`]); sdl reaches each
//! through its own proxy (`source.url` lists both), the writer and the replica reach the primary
//! directly, so the source network faults cut sdl's paths only. The primary failover is lossless
//! and deterministic (the writer paused, the replica caught up, then the primary killed); sdl is
//! never restarted for it and must follow the promoted server by itself. The killed server comes
//! back as a replica of the new primary, so every later fault acts on the primary of that moment
//! and the next failover goes the other way.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};

use crate::soak::writer;
use crate::support::proxy::{Mode, Proxy};
use crate::support::replication::Replication;
use crate::support::{wait_until, Mongo, Rng, Sdl};

/// How long sdl may take to catch up after a fault ends (it may have a 200,000-row transaction
/// to forward, or wait out a dead transaction's 60 s lifetime).
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the writer may take to reach a pause (it may be inside the 200,000-row transaction)
/// and the replica to apply what the primary committed.
const FAILOVER_STEP_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    SdlKill,
    SdlTerm,
    MongoOutage,
    MariaDbRestart,
    SourceDrop,
    SourceBlackhole,
    SinkDrop,
    SinkBlackhole,
    PrimaryFailover,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.pad(match self {
            Fault::SdlKill => "SIGKILL of sdl + restart",
            Fault::SdlTerm => "SIGTERM of sdl (exit 0) + restart",
            Fault::MongoOutage => "MongoDB killed, restarted later",
            Fault::MariaDbRestart => "MariaDB primary restarted",
            Fault::SourceDrop => "network to MariaDB refused (drop)",
            Fault::SourceBlackhole => "network to MariaDB cut (blackhole)",
            Fault::SinkDrop => "network to MongoDB refused (drop)",
            Fault::SinkBlackhole => "network to MongoDB cut (blackhole)",
            Fault::PrimaryFailover => "primary killed, replica promoted",
        })
    }
}

const ALL: [Fault; 9] = [
    Fault::SdlKill,
    Fault::SdlTerm,
    Fault::MongoOutage,
    Fault::MariaDbRestart,
    Fault::SourceDrop,
    Fault::SourceBlackhole,
    Fault::SinkDrop,
    Fault::SinkBlackhole,
    Fault::PrimaryFailover,
];

/// Ranges (seconds) the random durations are drawn from.
pub struct Timing {
    pub mongo_outage: (u64, u64),
    pub cut: (u64, u64),
    pub mariadb_down: (u64, u64),
    pub gap: (u64, u64),
}

impl Timing {
    /// The CI run (a few minutes) scales the outages down; a long run uses the real lengths.
    pub fn for_run(seconds: u64) -> Self {
        if seconds < 600 {
            Self {
                mongo_outage: (20, 30),
                cut: (4, 10),
                mariadb_down: (0, 3),
                gap: (2, 6),
            }
        } else {
            Self {
                mongo_outage: (30, 120),
                cut: (5, 60),
                mariadb_down: (0, 10),
                gap: (5, 30),
            }
        }
    }
}

/// The servers, the proxies in front of them, sdl and the writer's controls.
pub struct Rig {
    /// `primary` and `replica` are the roles of now (they swap at each failover).
    pub source: Replication,
    /// Which server of `source.url` (and of `source_proxies`) is the primary now.
    pub primary_index: usize,
    pub mongo: Mongo,
    pub sdl: Sdl,
    /// sdl's path to each server, in `source.url`'s order (the first server's first).
    pub source_proxies: Vec<Proxy>,
    /// None when the MongoDB of `SDL_TEST_MONGODB_URI` is not on this machine.
    pub sink_proxy: Option<Proxy>,
    pub writer: writer::Control,
}

/// One primary failover, as the summary reports it.
pub struct Failover {
    /// sdl followed the replica (after an earlier fault) and was steered to the primary first.
    pub steered: bool,
    pub killed: usize,
    pub promoted: usize,
    /// From the kill until sdl followed the promoted server.
    pub sdl_switched_after: Duration,
}

#[derive(Default)]
pub struct FaultLog {
    /// Per kind: how many, total time the fault lasted, longest recovery after it.
    pub kinds: BTreeMap<Fault, (u32, Duration, Duration)>,
    pub skipped: Vec<String>,
    /// How many kinds this run can inject (fewer with a MongoDB that is not on this machine).
    pub expected_kinds: usize,
    pub failovers: Vec<Failover>,
}

fn between(rng: &mut Rng, (low, high): (u64, u64)) -> Duration {
    Duration::from_millis(low * 1000 + rng.below((high - low) * 1000 + 1))
}

/// `position` (MariaDB `domain-server-seq`, comma-separated) is at or past `target` in every
/// domain of `target`. What follows a `;` (sdl's progress inside a transaction or a snapshot, in
/// its ingest position) is not part of the GTID position.
pub fn covers(position: &str, target: &str) -> bool {
    let parse = |p: &str| -> BTreeMap<String, u64> {
        p.split(';')
            .next()
            .unwrap_or_default()
            .split(',')
            .filter(|g| !g.trim().is_empty())
            .filter_map(|g| {
                let mut parts = g.trim().splitn(3, '-');
                let domain = parts.next()?.to_string();
                let _server = parts.next()?;
                Some((domain, parts.next()?.parse().ok()?))
            })
            .collect()
    };
    let have = parse(position);
    parse(target)
        .iter()
        .all(|(domain, seq)| have.get(domain).is_some_and(|s| s >= seq))
}

/// Which server of `source.url` sdl follows now (`/status` `ingest.source_server.index`); None
/// while sdl is down or does not say.
pub fn followed_server(sdl: &Sdl) -> Option<usize> {
    let status = super::status_of(sdl)?;
    Some(status["ingest"]["source_server"]["index"].as_u64()? as usize)
}

/// Panics with sdl's logs when sdl stopped with an error (it must never, through any fault).
fn assert_no_error_exit(sdl: &Sdl, during: &str) {
    let logs = sdl.logs();
    if let Some(line) = logs.lines().find(|l| l.starts_with("sdl: error:")) {
        panic!("sdl stopped {during}: {line}\n{logs}");
    }
}

/// Waits until sdl has caught up with the source position of now; returns how long it took.
async fn recovery(rig: &Rig, offsets: &mongodb::Collection<Document>, fault: Fault) -> Duration {
    let target = rig.source.primary.gtid_binlog_pos().await;
    let started = Instant::now();
    let what = format!("sdl to recover after `{fault}`: MongoDB's offset to reach {target}");
    wait_until(&what, RECOVERY_TIMEOUT, || async {
        assert_no_error_exit(&rig.sdl, &format!("after `{fault}`"));
        let offset = offsets.find_one(doc! { "_id": "default" }).await.ok()??;
        covers(offset.get_str("gtid").ok()?, &target).then_some(())
    })
    .await;
    started.elapsed()
}

/// Injects faults until `duration` has passed (and at least one of each kind), while
/// `writer_alive` says the workload is still running.
pub async fn run(
    rig: &mut Rig,
    rng: &mut Rng,
    duration: Duration,
    timing: &Timing,
    writer_alive: impl Fn() -> bool,
) -> FaultLog {
    let mut log = FaultLog::default();
    let external = rig.mongo.is_external();
    if external {
        log.skipped.push(
            "MongoDB is SDL_TEST_MONGODB_URI's: its outage is a refused network (proxy) instead of a kill".into(),
        );
    }
    if rig.sink_proxy.is_none() {
        log.skipped.push(
            "SDL_TEST_MONGODB_URI names a MongoDB not on loopback: no network faults towards it"
                .into(),
        );
    }
    let offsets = rig
        .mongo
        .db()
        .await
        .collection::<Document>("binlog_offsets");
    let started = Instant::now();
    let mut first_deck = true;
    'decks: loop {
        let mut deck: Vec<Fault> = ALL
            .into_iter()
            .filter(|f| {
                rig.sink_proxy.is_some()
                    || !matches!(
                        f,
                        Fault::SinkDrop | Fault::SinkBlackhole | Fault::MongoOutage
                    )
            })
            .collect();
        log.expected_kinds = deck.len();
        for i in (1..deck.len()).rev() {
            deck.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for fault in deck {
            if !first_deck && started.elapsed() >= duration {
                break 'decks;
            }
            // A random moment: pacing between faults, not a wait for a condition.
            tokio::time::sleep(between(rng, timing.gap)).await;
            assert!(writer_alive(), "the writer stopped during the soak");
            assert!(
                rig.sdl.is_running(),
                "sdl exited by itself before `{fault}`:\n{}",
                rig.sdl.logs()
            );
            let at = started.elapsed();
            let lasted = inject(rig, rng, timing, fault, &mut log).await;
            eprintln!(
                "soak: {:>6.1}s  {fault} ({:.1}s)",
                at.as_secs_f64(),
                lasted.as_secs_f64()
            );
            let recovered = recovery(rig, &offsets, fault).await;
            assert!(
                rig.sdl.is_running(),
                "sdl exited after `{fault}`:\n{}",
                rig.sdl.logs()
            );
            let entry = log.kinds.entry(fault).or_default();
            entry.0 += 1;
            entry.1 += lasted;
            entry.2 = entry.2.max(recovered);
        }
        first_deck = false;
    }
    log
}

/// Injects one fault and ends it; returns how long it lasted.
async fn inject(
    rig: &mut Rig,
    rng: &mut Rng,
    timing: &Timing,
    fault: Fault,
    log: &mut FaultLog,
) -> Duration {
    let started = Instant::now();
    match fault {
        Fault::SdlKill => {
            rig.sdl.kill();
            rig.sdl.start();
        }
        Fault::SdlTerm => {
            let status = rig.sdl.terminate(Duration::from_secs(60));
            assert!(
                status.success(),
                "SIGTERM: sdl exited with {status}:\n{}",
                rig.sdl.logs()
            );
            rig.sdl.start();
        }
        Fault::MongoOutage => {
            let outage = between(rng, timing.mongo_outage);
            if rig.mongo.is_external() {
                let proxy = rig.sink_proxy.as_ref().unwrap();
                proxy.set(Mode::Drop);
                // The outage itself.
                tokio::time::sleep(outage).await;
                proxy.set(Mode::Pass);
            } else {
                rig.mongo.kill();
                // The outage itself.
                tokio::time::sleep(outage).await;
                rig.mongo.restart().await;
            }
        }
        Fault::MariaDbRestart => {
            rig.source.primary.stop();
            // The time the server stays down.
            tokio::time::sleep(between(rng, timing.mariadb_down)).await;
            rig.source.primary.restart().await;
        }
        Fault::SourceDrop | Fault::SourceBlackhole | Fault::SinkDrop | Fault::SinkBlackhole => {
            let proxies: Vec<&Proxy> = match fault {
                Fault::SourceDrop | Fault::SourceBlackhole => source_cut(rig, rng),
                _ => vec![rig.sink_proxy.as_ref().unwrap()],
            };
            let mode = match fault {
                Fault::SourceDrop | Fault::SinkDrop => Mode::Drop,
                _ => Mode::Blackhole,
            };
            for proxy in &proxies {
                proxy.set(mode);
            }
            // The cut itself.
            tokio::time::sleep(between(rng, timing.cut)).await;
            for proxy in &proxies {
                proxy.set(Mode::Pass);
            }
        }
        Fault::PrimaryFailover => {
            let failover = primary_failover(rig).await;
            log.failovers.push(failover);
        }
    }
    started.elapsed()
}

/// The source proxies a source network fault cuts: every one (sdl cannot reach the source at
/// all), or, one time in two, only the one to the server sdl follows (sdl must switch to the
/// other, which holds everything too).
fn source_cut<'a>(rig: &'a Rig, rng: &mut Rng) -> Vec<&'a Proxy> {
    let all = rng.below(2) == 0;
    match followed_server(&rig.sdl) {
        Some(index) if !all && index < rig.source_proxies.len() => {
            eprintln!(
                "soak: cutting only sdl's path to the server it follows (source.url #{index})"
            );
            vec![&rig.source_proxies[index]]
        }
        _ => rig.source_proxies.iter().collect(),
    }
}

/// A lossless failover: the writer paused, the replica caught up with everything the primary
/// committed, the primary SIGKILLed, the replica promoted, the writer pointed at it and resumed;
/// sdl must then follow the promoted server by itself (it is the only one up). The killed server
/// comes back as a replica of the new primary.
///
/// sdl follows the primary when it dies, so that every failover is a switch for sdl: when an
/// earlier fault left it on the replica, its path to the replica is refused until it follows the
/// primary again.
async fn primary_failover(rig: &mut Rig) -> Failover {
    rig.writer.pause(FAILOVER_STEP_TIMEOUT).await;
    rig.source.wait_replica_applied(FAILOVER_STEP_TIMEOUT).await;
    let killed = rig.primary_index;
    let promoted = 1 - killed;
    let steered = followed_server(&rig.sdl) != Some(killed);
    if steered {
        rig.source_proxies[promoted].set(Mode::Drop);
        let what = format!("sdl to follow the primary (source.url #{killed}) before it is killed");
        wait_until(&what, RECOVERY_TIMEOUT, || async {
            assert_no_error_exit(&rig.sdl, "while steered to the primary");
            (followed_server(&rig.sdl) == Some(killed)).then_some(())
        })
        .await;
        rig.source_proxies[promoted].set(Mode::Pass);
    }
    rig.source.kill_primary();
    let killed_at = Instant::now();
    rig.source.promote_replica().await;
    rig.primary_index = promoted;
    rig.writer.point_at(rig.source.replica.root_url());
    rig.writer.resume();
    let what = format!("sdl to follow the promoted server (source.url #{promoted})");
    wait_until(&what, RECOVERY_TIMEOUT, || async {
        assert_no_error_exit(&rig.sdl, "after the primary was killed");
        (followed_server(&rig.sdl) == Some(promoted)).then_some(())
    })
    .await;
    let sdl_switched_after = killed_at.elapsed();
    rig.source.rejoin_killed_primary().await;
    Failover {
        steered,
        killed,
        promoted,
        sdl_switched_after,
    }
}

/// The failover the soak injects, twice in a row (as a long run does): each time the killed
/// primary comes back as a replica of the promoted one, the new primary takes writes, and both
/// servers hold one history (the same GTID position, the same rows), so the next failover goes
/// the other way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_goes_both_ways_and_the_killed_primary_rejoins_as_a_replica() {
    use mysql_async::prelude::Queryable;

    let timeout = Duration::from_secs(60);
    let mut pair = Replication::start().await;
    let first_primary = pair.primary.port;
    let mut conn = pair.primary.root_conn().await;
    conn.query_drop("CREATE TABLE app.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO app.t VALUES (1)")
        .await
        .unwrap();
    drop(conn);
    for round in 2..=3 {
        pair.wait_replica_applied(timeout).await;
        let (old, new) = (pair.primary.port, pair.replica.port);
        pair.kill_primary();
        pair.promote_replica().await;
        pair.rejoin_killed_primary().await;
        assert_eq!((pair.primary.port, pair.replica.port), (new, old));
        let mut conn = pair.primary.root_conn().await;
        conn.query_drop(format!("INSERT INTO app.t VALUES ({round})"))
            .await
            .unwrap();
        drop(conn);
        pair.wait_replica_applied(timeout).await;
        assert_eq!(
            pair.replica.gtid_binlog_pos().await,
            pair.primary.gtid_binlog_pos().await,
            "after failover {}",
            round - 1
        );
        for server in [&pair.primary, &pair.replica] {
            let mut conn = server.root_conn().await;
            let ids: Vec<i64> = conn
                .query("SELECT id FROM app.t ORDER BY id")
                .await
                .unwrap();
            assert_eq!(
                ids,
                (1..=round).collect::<Vec<i64>>(),
                "port {}",
                server.port
            );
        }
    }
    assert_eq!(
        pair.primary.port, first_primary,
        "the second failover went back"
    );
}
