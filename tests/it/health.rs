//! Health that tells the truth (docs/reliability.md, "Issue 12: health"), against real servers:
//! `/readyz` follows a killed MongoDB within seconds, the logged outage lengths match the real
//! one, the admin endpoint answers at once when sdl starts while a server is away, and a stage
//! stuck at one position for longer than `service.stuck_after` is logged at ERROR once, turns
//! `/readyz` red and shows on `/status` and `sdl_stage_stuck_seconds`, until it gets past it.

use std::time::{Duration, Instant};

use crate::support::proxy::Mode;
use crate::support::{wait_until, Relay, RelayBuilder, Sdl};
use mysql_async::prelude::Queryable;

const TIMEOUT: Duration = Duration::from_secs(120);

/// GET `path` from sdl's admin endpoint; `None` while nothing answers there.
fn try_get(sdl: &Sdl, path: &str) -> Option<(u16, String)> {
    let mut response = ureq::get(&format!("http://{}{path}", sdl.admin_addr()))
        .config()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .call()
        .ok()?;
    Some((
        response.status().as_u16(),
        response.body_mut().read_to_string().ok()?,
    ))
}

/// A relay with the table `h.t` that [`insert_rows`] writes to.
fn relay_with_table() -> RelayBuilder {
    Relay::builder().sql(&[
        "CREATE DATABASE IF NOT EXISTS h",
        "CREATE TABLE h.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(20))",
    ])
}

async fn insert_rows(conn: &mut mysql_async::Conn, n: usize) {
    for _ in 0..n {
        conn.query_drop("INSERT INTO h.t (v) VALUES ('x')")
            .await
            .unwrap();
    }
}

async fn wait_ready(sdl: &Sdl, what: &str) {
    wait_until(what, TIMEOUT, || async {
        (try_get(sdl, "/readyz")?.0 == 200).then_some(())
    })
    .await;
}

/// The `outage=...` of the last log line containing `message`, in seconds.
fn logged_outage(logs: &str, message: &str) -> Option<f64> {
    let line = logs.lines().rev().find(|l| l.contains(message))?;
    // A Duration's Debug form: `12.345s`, `345ms`.
    let value = line.split("outage=").nth(1)?.split_whitespace().next()?;
    if let Some(ms) = value.strip_suffix("ms") {
        return Some(ms.parse::<f64>().ok()? / 1000.0);
    }
    value.strip_suffix('s')?.parse().ok()
}

fn stuck_lines(logs: &str, stage: &str) -> usize {
    logs.lines()
        .filter(|l| l.contains("stage stuck") && l.contains(&format!("stage=\"{stage}\"")))
        .count()
}

/// MongoDB killed under a running relay: `/readyz` turns 503 within seconds (it answered 200 for
/// ~50 s while three 10 s server-selection timeouts passed before the breaker opened), 200 again
/// after MongoDB is back; the outage lengths logged by the breaker and the health probe match the
/// measured one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_killed_mongodb_within_seconds_and_the_outage_is_logged_truly() {
    // The default sink.connect_timeout (10 s, the driver's server-selection timeout); the
    // breaker opens at the first failure so that its outage is logged.
    let mut relay = relay_with_table()
        .sink_toml("breaker_failures = 1\nretry_max_delay = \"1s\"")
        .following()
        .await;
    if !relay.can_kill_mongo() {
        return;
    }
    let mut conn = relay.conn().await;
    wait_ready(&relay.sdl, "sdl ready").await;

    relay.mongo.kill();
    let killed = Instant::now();
    // Changes waiting while MongoDB is away: the forwarder tries to commit them.
    insert_rows(&mut conn, 5).await;
    let (code, body) = wait_until("/readyz to turn red", Duration::from_secs(5), || async {
        try_get(&relay.sdl, "/readyz").filter(|(code, _)| *code != 200)
    })
    .await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("MongoDB does not answer"), "{body}");
    eprintln!("readyz red {:?} after the kill", killed.elapsed());

    // Keep MongoDB away until a commit attempt has failed and the breaker opened.
    wait_until("the circuit breaker to open", TIMEOUT, || async {
        (relay.sdl.status()["breaker"]["state"] == "open").then_some(())
    })
    .await;
    relay.mongo.restart().await;
    let breaker_closed = "circuit breaker closed";
    let probe_back = "MongoDB answers the health probe again";
    wait_until("MongoDB back for the probe", TIMEOUT, || async {
        relay.sdl.logs().contains(probe_back).then_some(())
    })
    .await;
    let probe_measured = killed.elapsed().as_secs_f64();
    wait_until("the breaker to close", TIMEOUT, || async {
        relay.sdl.logs().contains(breaker_closed).then_some(())
    })
    .await;
    let breaker_measured = killed.elapsed().as_secs_f64();
    let logs = relay.sdl.logs();
    let breaker_logged = logged_outage(&logs, breaker_closed).expect("breaker outage logged");
    let probe_logged = logged_outage(&logs, probe_back).expect("probe outage logged");
    eprintln!(
        "outage: breaker logged {breaker_logged:.1} s, measured {breaker_measured:.1} s; probe logged {probe_logged:.1} s, measured {probe_measured:.1} s"
    );
    assert!(
        (breaker_logged - breaker_measured).abs() <= 2.0,
        "breaker logged {breaker_logged} s, measured {breaker_measured} s:\n{logs}"
    );
    assert!(
        (probe_logged - probe_measured).abs() <= 2.0,
        "probe logged {probe_logged} s, measured {probe_measured} s:\n{logs}"
    );
    wait_ready(&relay.sdl, "sdl ready again after the outage").await;
    relay.wait_caught_up(TIMEOUT).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

/// Waits for the admin endpoint to answer and checks what it says while start-up waits for a
/// server: `/healthz` 200, `/readyz` 503 with the reason, `/status` 200.
async fn admin_answers_during_start_up(sdl: &mut Sdl) -> String {
    let started = Instant::now();
    sdl.start();
    wait_until(
        "the admin endpoint to answer",
        Duration::from_secs(3),
        || async { try_get(sdl, "/healthz").filter(|(code, _)| *code == 200) },
    )
    .await;
    eprintln!(
        "admin endpoint answered {:?} after start",
        started.elapsed()
    );
    let (code, readyz) = try_get(sdl, "/readyz").expect("/readyz answers");
    assert_eq!(code, 503, "{readyz}");
    let readyz: serde_json::Value = serde_json::from_str(&readyz).unwrap();
    assert_eq!(readyz["ready"], false, "{readyz}");
    let reasons = readyz["reasons"].as_array().expect("reasons").clone();
    assert!(!reasons.is_empty(), "{readyz}");
    let (code, status) = try_get(sdl, "/status").expect("/status answers");
    assert_eq!(code, 200, "{status}");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(status["wal"]["ingest_position"].is_string(), "{status}");
    readyz.to_string()
}

/// sdl restarted during a MongoDB outage (with a WAL that has a position, so it starts anyway):
/// the admin endpoint answers at once, not after the start-up's two 10 s connect timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint_answers_at_once_when_sdl_starts_during_a_mongodb_outage() {
    let mut relay = relay_with_table().following().await;
    if !relay.can_kill_mongo() {
        return;
    }
    let mut conn = relay.conn().await;
    insert_rows(&mut conn, 3).await;
    relay.wait_caught_up(TIMEOUT).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());

    relay.mongo.kill();
    let readyz = admin_answers_during_start_up(&mut relay.sdl).await;
    assert!(readyz.contains("starting"), "{readyz}");
    // Once the checks are done, it follows the binlog and says MongoDB is why it is not ready.
    wait_until("sdl following during the outage", TIMEOUT, || async {
        (relay.sdl.logs().matches("following the binlog").count() >= 2).then_some(())
    })
    .await;
    let (code, body) = try_get(&relay.sdl, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("MongoDB does not answer"), "{body}");
    relay.mongo.restart().await;
    wait_ready(&relay.sdl, "sdl ready once MongoDB is back").await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

/// sdl started while the source does not answer (a cut network): the admin endpoint answers at
/// once, while the start-up checks wait for their connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint_answers_at_once_when_sdl_starts_during_a_source_outage() {
    let mut relay = Relay::builder().source_via_proxy().following().await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());

    relay.source_proxy().set(Mode::Blackhole);
    let readyz = admin_answers_during_start_up(&mut relay.sdl).await;
    assert!(readyz.contains("starting"), "{readyz}");
}

/// MongoDB away for longer than service.stuck_after while changes wait: the forwarder is stuck at
/// the same WAL position; ERROR once, /readyz red, /status and the metric say so, retrying goes
/// on; MongoDB back: cleared, and every change arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarder_stuck_on_an_unreachable_mongodb_is_reported_once_and_clears() {
    let mut relay = relay_with_table()
        .settings(&[
            ("service", "stuck_after = \"3s\""),
            ("sink", "connect_timeout = \"1s\""),
            ("sink", "retry_max_delay = \"1s\""),
        ])
        .following()
        .await;
    if !relay.can_kill_mongo() {
        return;
    }
    let mut conn = relay.conn().await;
    wait_ready(&relay.sdl, "sdl ready").await;
    let series = "sdl_stage_stuck_seconds{stage=\"forwarder\"}";
    assert_eq!(relay.sdl.metric(series), 0.0);

    relay.mongo.kill();
    insert_rows(&mut conn, 5).await;
    wait_until("the forwarder reported stuck", TIMEOUT, || async {
        (relay.sdl.metric(series) > 0.0).then_some(())
    })
    .await;
    let (code, body) = try_get(&relay.sdl, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("forwarder stuck for"), "{body}");
    let status = relay.sdl.status();
    assert!(status["forwarder"]["stuck_since"].is_string(), "{status}");
    assert!(
        status["forwarder"]["stuck_position"]
            .as_str()
            .is_some_and(|p| p.contains("WAL sequence")),
        "{status}"
    );
    assert_eq!(status["ingest"]["stuck_seconds"], 0.0, "{status}");
    // Stuck for a while longer: still one ERROR, and the forwarder keeps trying.
    let failures = status["breaker"]["consecutive_failures"].as_u64().unwrap();
    wait_until("stuck for twice stuck_after", TIMEOUT, || async {
        let status = relay.sdl.status();
        (status["forwarder"]["stuck_seconds"].as_f64()? > 6.0
            && status["breaker"]["consecutive_failures"].as_u64()? > failures)
            .then_some(())
    })
    .await;
    let logs = relay.sdl.logs();
    assert_eq!(stuck_lines(&logs, "forwarder"), 1, "{logs}");
    let line = logs.lines().find(|l| l.contains("stage stuck")).unwrap();
    eprintln!("{line}");
    assert!(
        line.contains("ERROR") && line.contains("WAL sequence") && line.contains("sink.url"),
        "{line}"
    );

    relay.mongo.restart().await;
    wait_until("the forwarder no longer stuck", TIMEOUT, || async {
        (relay.sdl.metric(series) == 0.0).then_some(())
    })
    .await;
    assert!(
        relay.sdl.logs().contains("stage no longer stuck"),
        "{}",
        relay.sdl.logs()
    );
    assert!(relay.sdl.status()["forwarder"]["stuck_since"].is_null());
    wait_ready(&relay.sdl, "sdl ready again").await;
    relay.wait_caught_up(TIMEOUT).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

/// The source refusing connections for longer than service.stuck_after: the ingester is stuck at
/// its WAL position; ERROR once, /readyz red, /status and the metric say so; the source back:
/// cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingester_stuck_on_an_unreachable_source_is_reported_once_and_clears() {
    let mut relay = Relay::builder()
        .source_via_proxy()
        .settings(&[
            ("source", "heartbeat_interval = \"300ms\""),
            ("source", "connect_timeout = \"1s\""),
            ("service", "stuck_after = \"3s\""),
        ])
        .following()
        .await;
    wait_ready(&relay.sdl, "sdl ready").await;
    let series = "sdl_stage_stuck_seconds{stage=\"ingester\"}";
    assert_eq!(relay.sdl.metric(series), 0.0);

    relay.source_proxy().set(Mode::Drop);
    wait_until("the ingester reported stuck", TIMEOUT, || async {
        (relay.sdl.metric(series) > 0.0).then_some(())
    })
    .await;
    let (code, body) = try_get(&relay.sdl, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("ingester stuck for"), "{body}");
    let status = relay.sdl.status();
    assert!(
        status["ingest"]["stuck_seconds"].as_f64().unwrap() > 0.0,
        "{status}"
    );
    assert!(
        status["ingest"]["stuck_position"]
            .as_str()
            .is_some_and(|p| p.contains("GTID position")),
        "{status}"
    );
    wait_until("stuck for twice stuck_after", TIMEOUT, || async {
        (relay.sdl.status()["ingest"]["stuck_seconds"].as_f64()? > 6.0).then_some(())
    })
    .await;
    let logs = relay.sdl.logs();
    assert_eq!(stuck_lines(&logs, "ingester"), 1, "{logs}");

    relay.source_proxy().set(Mode::Pass);
    wait_until("the ingester no longer stuck", TIMEOUT, || async {
        (relay.sdl.metric(series) == 0.0).then_some(())
    })
    .await;
    assert!(
        relay.sdl.logs().contains("stage no longer stuck"),
        "{}",
        relay.sdl.logs()
    );
    wait_ready(&relay.sdl, "sdl ready again").await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}
