//! Network cuts between sdl and the source: a blackholed connection is detected by missing
//! heartbeats, a dropped one by its close; sdl reconnects from the WAL position and every row
//! change still arrives exactly once.

use std::time::Duration;

use crate::support::proxy::Mode;
use crate::support::workload::Workload;
use crate::support::{wait_until, Relay, SDL_PASSWORD};

const TIMEOUT: Duration = Duration::from_secs(180);

fn count(logs: &str, needle: &str) -> usize {
    logs.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_network_cuts_are_survived_exactly_once() {
    let mut relay = Relay::builder()
        .workload_tables()
        .source_via_proxy()
        .settings(&[
            ("source", "heartbeat_interval = \"300ms\""),
            ("source", "connect_timeout = \"2s\""),
        ])
        .following()
        .await;
    let proxy = relay.source_proxy();
    let mut conn = relay.conn().await;

    // Writes happen before, during and after each cut.
    let mut workload = Workload::new(77);
    let mut target = 0;
    let mut write = |n: u64| {
        target += n;
        target
    };
    workload.run(&mut conn, write(1000)).await;

    // A cut cable: the stream goes silent; missing heartbeats reveal it.
    proxy.set(Mode::Blackhole);
    workload.run(&mut conn, write(1000)).await;
    wait_until("the dead connection to be noticed", TIMEOUT, || async {
        relay
            .sdl
            .logs()
            .contains("the connection is presumed dead")
            .then_some(())
    })
    .await;
    wait_until("a failed reconnection attempt", TIMEOUT, || async {
        relay
            .sdl
            .logs()
            .contains("source not reachable, retrying")
            .then_some(())
    })
    .await;
    // /status shows it, as the last error, with the password in source.url hidden.
    let status = wait_until("the failed attempt on /status", TIMEOUT, || async {
        let status = relay.sdl.status();
        let message = status["ingest"]["last_error"]["message"].as_str()?;
        message
            .contains("cannot reach the source")
            .then_some(status)
    })
    .await;
    assert_eq!(status["ingest"]["state"], "reconnecting", "{status}");
    let message = status["ingest"]["last_error"]["message"].as_str().unwrap();
    assert!(
        message.contains("mysql://sdl:***@") && !message.contains(SDL_PASSWORD),
        "{status}"
    );
    proxy.set(Mode::Pass);
    workload.run(&mut conn, write(1000)).await;
    wait_until("the stream to resume", TIMEOUT, || async {
        (count(&relay.sdl.logs(), "following the binlog") >= 2).then_some(())
    })
    .await;

    // A refused network: open connections are closed, new ones refused for a while.
    proxy.set(Mode::Drop);
    workload.run(&mut conn, write(1000)).await;
    wait_until("the closed stream to be noticed", TIMEOUT, || async {
        (count(&relay.sdl.logs(), "binlog stream lost") >= 2).then_some(())
    })
    .await;
    proxy.set(Mode::Pass);
    workload.run(&mut conn, write(1000)).await;
    wait_until("the stream to resume again", TIMEOUT, || async {
        (count(&relay.sdl.logs(), "following the binlog") >= 3).then_some(())
    })
    .await;

    relay.wait_caught_up(TIMEOUT).await;
    relay.assert_exactly_once(workload.row_changes).await;

    // Each lost stream is one restart of the ingester, on /metrics and /status; the last error is
    // kept, without the password in source.url.
    let lost = count(&relay.sdl.logs(), "binlog stream lost");
    assert!(lost >= 2, "{}", relay.sdl.logs());
    let restarts = relay
        .sdl
        .metric("sdl_stage_restarts_total{stage=\"ingester\"}");
    assert_eq!(restarts, lost as f64);
    assert_eq!(
        relay
            .sdl
            .metric("sdl_stage_restarts_total{stage=\"forwarder\"}"),
        0.0
    );
    let status = relay.sdl.status();
    assert_eq!(status["ingest"]["restarts"], lost, "{status}");
    assert_eq!(status["ingest"]["state"], "following", "{status}");
    assert!(
        status["ingest"]["last_error"]["message"].is_string(),
        "{status}"
    );
    assert!(status["forwarder"]["last_error"].is_null(), "{status}");
    assert!(relay.sdl.is_running(), "{}", relay.sdl.logs());
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}
