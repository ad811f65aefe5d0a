//! The service's health: what `/readyz` answers, MongoDB's reachability, and stuck stages.
//!
//! # Guarantees
//! - **Readiness** ([`not_ready_reasons`]): ready means start-up is done, the ingester follows the
//!   binlog, MongoDB answers the health probe, the forwarder's last attempt succeeded (no failed
//!   attempt since the last success, whatever the circuit breaker's state) and no stage is stuck.
//!   Otherwise every reason is listed.
//! - **MongoDB reachability** ([`probe_sink`]): a `ping` every [`PROBE_INTERVAL`] on a client of
//!   its own, each allowed at most [`PROBE_TIMEOUT`], so a killed or cut-off MongoDB turns
//!   readiness red within a few seconds whether or not a commit is in flight, and independently
//!   of the driver's server-selection timeout (`sink.connect_timeout`). It writes nothing. The
//!   outage is logged once when it starts (warn) and once when it ends (info, with its wall-clock
//!   length, from the first failed ping to the first good one).
//! - **Stuck stages** ([`watch_stages`]): a stage whose attempts have failed with transient errors
//!   without getting past its position for longer than `service.stuck_after` is stuck: logged at
//!   ERROR once (stage, position, error, how long, what to check), `/readyz` 503 with the reason,
//!   `stuck_since`/`stuck_seconds` on `/status`, `sdl_stage_stuck_seconds{stage}` above 0. When the
//!   stage gets past it, that is logged at INFO and everything returns to normal. The ingester is
//!   past it when the WAL's ingest position moves or the source sends a heartbeat (the stream
//!   works and has nothing newer); the forwarder when an attempt succeeds. A change of error
//!   message does not restart the clock: what counts is that no attempt got through.
//! - This module only watches what the stages publish: retrying goes on exactly as before.

use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::SinkConfig;
use crate::event::SourceTransaction;
use crate::telemetry::{
    BreakerState, BreakerStatus, ForwardStatus, Health, IngestState, IngestStatus, SinkReach,
    Stage, Stuck, StuckReport,
};

/// How often the health probe pings MongoDB.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// The longest a ping may take before MongoDB counts as unreachable (at most
/// `sink.connect_timeout`).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often stuck stages are looked for (besides every state change).
const STUCK_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Where the admin endpoint reads the health states.
#[derive(Clone)]
pub struct HealthSources {
    pub sink: watch::Receiver<SinkReach>,
    pub stuck: watch::Receiver<StuckReport>,
}

impl HealthSources {
    pub fn now(&self) -> Health {
        Health {
            sink: self.sink.borrow().clone(),
            stuck: self.stuck.borrow().clone(),
        }
    }
}

/// Not ready while this instance waits as a standby or has lost the lease (`[lease]`).
pub fn lease_not_ready_reason(lease: &crate::telemetry::LeaseStatus) -> Option<String> {
    use crate::telemetry::Role;
    let holder = lease.holder_instance.as_deref().unwrap_or("nobody");
    match lease.role {
        Role::Single => None,
        Role::Leader => lease.unconfirmed_since.as_ref().map(|since| format!(
            "lease not renewed since {since}: MongoDB does not answer this instance; a standby may take over (commits stay fenced)"
        )),
        Role::Starting => Some("starting: reading the lease ([lease])".to_string()),
        Role::Standby => Some(format!(
            "standby: another instance ({holder}, epoch {}) holds the lease; this one takes over when it lapses",
            lease.epoch.unwrap_or_default()
        )),
        Role::SteppedDown => Some("lost the lease: stepping down".to_string()),
    }
}

/// Why the service is not ready; empty when it is.
pub fn not_ready_reasons(
    ingest: &IngestState,
    breaker: &BreakerStatus,
    sink: &SinkReach,
    stuck: &StuckReport,
) -> Vec<String> {
    let mut reasons = Vec::new();
    match ingest {
        IngestState::Following { .. } => {}
        IngestState::Starting => reasons.push(
            "starting: the start-up checks and the connections to the source and MongoDB are under way".to_string(),
        ),
        IngestState::PausedWalFull { unacked_bytes, max_bytes } => reasons.push(format!(
            "ingester paused: the WAL holds {unacked_bytes} unacknowledged bytes (wal.max_bytes = {max_bytes}) while the forwarder catches up"
        )),
        IngestState::Reconnecting { error, .. } => {
            reasons.push(format!("ingester reconnecting to the source: {error}"))
        }
        IngestState::Stopped => reasons.push("ingester stopped".to_string()),
    }
    match sink {
        SinkReach::Reachable => {}
        SinkReach::Unknown => {
            reasons.push("MongoDB has not answered the health probe yet".to_string())
        }
        SinkReach::Unreachable { since, error } => reasons.push(format!(
            "MongoDB does not answer the health probe (since {since}): {error}"
        )),
    }
    if breaker.consecutive_failures > 0 {
        let state = match breaker.state {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        };
        reasons.push(format!(
            "forwarder: {} MongoDB attempt(s) failed since the last success (circuit breaker {state})",
            breaker.consecutive_failures
        ));
    }
    for stage in [Stage::Ingester, Stage::Forwarder] {
        if let Some(s) = stuck.get(stage) {
            reasons.push(format!(
                "{} stuck for {:.0} s at {}: {}",
                stage.name(),
                s.seconds(),
                s.position,
                s.error
            ));
        }
    }
    reasons
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Pings MongoDB every [`PROBE_INTERVAL`] and publishes whether it answers, until shutdown.
pub async fn probe_sink(
    cfg: SinkConfig,
    reach: watch::Sender<SinkReach>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ping_timeout = PROBE_TIMEOUT.min(cfg.connect_timeout);
    let mut client: Option<mongodb::Client> = None;
    // When the current outage started (wall clock and monotonic).
    let mut outage: Option<(SystemTime, Instant)> = None;
    loop {
        let (started_wall, started) = (SystemTime::now(), Instant::now());
        let answer = async {
            match &client {
                Some(c) => tokio::time::timeout(
                    ping_timeout,
                    c.database("admin")
                        .run_command(mongodb::bson::doc! { "ping": 1 }),
                )
                .await
                .map_err(|_| format!("no answer to a ping within {ping_timeout:?}"))?
                .map(drop)
                .map_err(|e| crate::redact::redact_error(&e.to_string())),
                // The first connection gets the whole connect timeout (TLS, authentication).
                None => match crate::sink::probe(&cfg).await {
                    Ok(p) => {
                        client = Some(p.client);
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                },
            }
        };
        let answer = tokio::select! {
            a = answer => a,
            _ = crate::shutdown::stopped(&mut shutdown) => break,
        };
        match answer {
            Ok(()) => {
                if let Some((since, began)) = outage.take() {
                    info!(target: "sdl::health",
                        outage = ?Duration::from_millis(began.elapsed().as_millis() as u64),
                        since = %rfc3339(since),
                        "MongoDB answers the health probe again"
                    );
                }
                reach.send_if_modified(|r| {
                    let changed = *r != SinkReach::Reachable;
                    *r = SinkReach::Reachable;
                    changed
                });
            }
            Err(error) => {
                let (since, _) = *outage.get_or_insert_with(|| {
                    warn!(target: "sdl::health", error = %error, "MongoDB does not answer the health probe: not ready until it does (the forwarder keeps retrying; the ingester keeps filling the WAL)");
                    (started_wall, started)
                });
                reach.send_replace(SinkReach::Unreachable {
                    since: rfc3339(since),
                    error,
                });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_INTERVAL.saturating_sub(started.elapsed())) => {}
            _ = crate::shutdown::stopped(&mut shutdown) => break,
        }
    }
    if let Some(client) = client {
        crate::sink::shut_down(client).await;
    }
}

/// One run of failed attempts at one position.
struct Episode {
    since: Instant,
    since_wall: SystemTime,
    position: String,
    error: String,
    /// Source heartbeats counted when it began (ingester only).
    heartbeats: u64,
    /// Whether it has been reported stuck.
    reported: bool,
}

impl Episode {
    fn new(since: Instant, position: String, error: String, heartbeats: u64) -> Self {
        let since_wall = SystemTime::now()
            .checked_sub(since.elapsed())
            .unwrap_or_else(SystemTime::now);
        Self {
            since,
            since_wall,
            position,
            error,
            heartbeats,
            reported: false,
        }
    }

    fn stuck(&self) -> Stuck {
        Stuck {
            since: self.since,
            since_wall: rfc3339(self.since_wall),
            position: self.position.clone(),
            error: self.error.clone(),
        }
    }
}

/// What to check, per stage, in the stuck ERROR.
fn what_to_check(stage: Stage) -> &'static str {
    match stage {
        Stage::Ingester => "check that the source server is running and reachable at source.url (network, firewall, DNS, TLS) and read its error log; sdl keeps retrying",
        Stage::Forwarder => "check that MongoDB is running and reachable at sink.url, that its replica set has a primary, and read its log; sdl keeps retrying, and the ingester keeps filling the WAL up to wal.max_bytes",
    }
}

/// Ends an episode because the stage got past it.
fn progressed(stage: Stage, episode: Option<Episode>) {
    if let Some(e) = episode.filter(|e| e.reported) {
        info!(target: "sdl::health",
            stage = stage.name(),
            position = %e.position,
            stuck_for = ?Duration::from_secs(e.since.elapsed().as_secs()),
            "stage no longer stuck: it got past the position it was stuck at"
        );
    }
}

/// Reports the episode stuck (once) when it has lasted `stuck_after`.
fn check_stuck(
    stage: Stage,
    episode: &mut Option<Episode>,
    stuck_after: Duration,
) -> Option<Stuck> {
    let e = episode.as_mut()?;
    if e.since.elapsed() < stuck_after {
        return None;
    }
    if !e.reported {
        e.reported = true;
        error!(target: "sdl::health",
            stage = stage.name(),
            position = %e.position,
            error = %e.error,
            stuck_for = ?Duration::from_secs(e.since.elapsed().as_secs()),
            since = %rfc3339(e.since_wall),
            stuck_after = ?stuck_after,
            "stage stuck: every attempt for longer than service.stuck_after failed at the same position; {}",
            what_to_check(stage)
        );
    }
    Some(e.stuck())
}

/// The states [`watch_stages`] watches.
pub struct Watched {
    pub ingest: watch::Receiver<IngestStatus>,
    pub forward: watch::Receiver<ForwardStatus>,
    pub breaker: watch::Receiver<BreakerStatus>,
}

/// Finds stuck stages from their published states and publishes them on `report`, until
/// shutdown.
pub async fn watch_stages(
    wal: sdl_wal::Wal<SourceTransaction>,
    stuck_after: Duration,
    mut watched: Watched,
    report: watch::Sender<StuckReport>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ingest: Option<Episode> = None;
    let mut forward: Option<Episode> = None;
    let ingest_position = |wal: &sdl_wal::Wal<SourceTransaction>| {
        wal.ingest_position()
            .ok()
            .flatten()
            .map(|p| format!("GTID position {}", String::from_utf8_lossy(&p)))
            .unwrap_or_else(|| "the start".to_string())
    };
    loop {
        tokio::select! {
            Ok(()) = watched.ingest.changed() => {}
            Ok(()) = watched.breaker.changed() => {}
            _ = tokio::time::sleep(STUCK_CHECK_INTERVAL) => {}
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }

        // The ingester: failing while it reconnects; past it once the position moves or a
        // heartbeat arrives.
        let state = watched.ingest.borrow_and_update().state.clone();
        let position = ingest_position(&wal);
        let heartbeats = crate::telemetry::metrics().source_heartbeats();
        if ingest
            .as_ref()
            .is_some_and(|e| e.position != position || heartbeats > e.heartbeats)
            || state == IngestState::Stopped
        {
            progressed(Stage::Ingester, ingest.take());
        }
        if let IngestState::Reconnecting { error, .. } = state {
            match &mut ingest {
                Some(e) => e.error = error,
                None => ingest = Some(Episode::new(Instant::now(), position, error, heartbeats)),
            }
        }

        // The forwarder: failing from the breaker's first failed attempt to the next success.
        let breaker = watched.breaker.borrow_and_update().clone();
        let last_error = || {
            watched
                .forward
                .borrow()
                .last_error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default()
        };
        match (breaker.failing_since, &mut forward) {
            (None, _) => progressed(Stage::Forwarder, forward.take()),
            (Some(_), Some(e)) => e.error = last_error(),
            (Some(since), None) => {
                let position = match wal.acked() {
                    Ok(acked) => format!("WAL sequence {} (the next batch)", acked + 1),
                    Err(_) => "the next batch".to_string(),
                };
                forward = Some(Episode::new(since, position, last_error(), 0));
            }
        }

        let now = StuckReport {
            ingest: check_stuck(Stage::Ingester, &mut ingest, stuck_after),
            forwarder: check_stuck(Stage::Forwarder, &mut forward, stuck_after),
        };
        report.send_if_modified(|r| {
            let changed = *r != now;
            *r = now;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_is_not_ready_and_says_who_leads_a_leader_or_single_instance_is() {
        use crate::telemetry::{LeaseStatus, Role};
        let mut lease = LeaseStatus::initial(false, "b");
        assert_eq!(lease_not_ready_reason(&lease), None);
        lease.role = Role::Leader;
        assert_eq!(lease_not_ready_reason(&lease), None);
        lease.unconfirmed_since = Some("2026-11-27T10:00:00.000Z".into());
        let reason = lease_not_ready_reason(&lease).unwrap();
        assert!(
            reason.contains("not renewed since 2026-11-27T10:00:00.000Z"),
            "{reason}"
        );
        lease.role = Role::Standby;
        lease.holder_instance = Some("a".into());
        lease.epoch = Some(4);
        let reason = lease_not_ready_reason(&lease).unwrap();
        assert!(
            reason.starts_with("standby: ") && reason.contains("(a, epoch 4)"),
            "{reason}"
        );
        lease.role = Role::SteppedDown;
        assert!(lease_not_ready_reason(&lease).is_some());
        assert_eq!(LeaseStatus::initial(true, "b").role, Role::Starting);
    }

    #[test]
    fn ready_only_when_every_part_is_well() {
        let following = IngestState::Following {
            position: "0-1-1".into(),
        };
        let well = BreakerStatus::default();
        let none = StuckReport::default();
        assert!(not_ready_reasons(&following, &well, &SinkReach::Reachable, &none).is_empty());

        let reasons = not_ready_reasons(&following, &well, &SinkReach::Unknown, &none);
        assert_eq!(reasons.len(), 1, "{reasons:?}");

        // One failed attempt is enough, before the breaker opens.
        let failing = BreakerStatus {
            consecutive_failures: 1,
            failing_since: Some(Instant::now()),
            ..BreakerStatus::default()
        };
        let reasons = not_ready_reasons(&following, &failing, &SinkReach::Reachable, &none);
        assert!(
            reasons[0].contains("1 MongoDB attempt(s) failed"),
            "{reasons:?}"
        );

        let stuck = StuckReport {
            ingest: None,
            forwarder: Some(Stuck {
                since: Instant::now(),
                since_wall: "t".into(),
                position: "WAL sequence 7".into(),
                error: "down".into(),
            }),
        };
        let reasons = not_ready_reasons(&following, &well, &SinkReach::Reachable, &stuck);
        assert!(
            reasons[0].starts_with("forwarder stuck for") && reasons[0].contains("WAL sequence 7"),
            "{reasons:?}"
        );
        let reasons = not_ready_reasons(&IngestState::Starting, &well, &SinkReach::Unknown, &none);
        assert!(reasons[0].starts_with("starting"), "{reasons:?}");
    }

    #[test]
    fn an_episode_is_reported_stuck_once_after_stuck_after() {
        let mut episode = Some(Episode::new(Instant::now(), "p".into(), "e".into(), 0));
        assert_eq!(
            check_stuck(Stage::Forwarder, &mut episode, Duration::from_secs(60)),
            None
        );
        let stuck = check_stuck(Stage::Forwarder, &mut episode, Duration::ZERO).unwrap();
        assert_eq!((stuck.position.as_str(), stuck.error.as_str()), ("p", "e"));
        assert!(episode.as_ref().unwrap().reported);
    }
}
