//! Start-up phase with `[lease]` (a hot standby): wait as a standby until this instance holds the
//! lease of `source.name` in MongoDB, then keep renewing it while the stages run.
//!
//! Guarantees:
//! - A standby writes nothing to MongoDB and does not read the binlog: it runs before the source
//!   and the sink are connected (`super::connect`), so the staging reconciliation, the indexes and
//!   every commit happen only while this instance holds the lease. Meanwhile it is up: `/status`
//!   says `role: "standby"` with the holder, `/healthz` is healthy, `/readyz` is not ready
//!   ("standby"), systemd gets READY=1 with a STATUS= line saying standby, and its watchdog is fed.
//! - Takeover without comparing clocks across hosts: the standby reads the lease every
//!   `lease.duration / 3`; once the document's `(epoch, renewals)` has stayed the same for a whole
//!   `lease.duration` on this host's monotonic clock, it takes the lease with a compare-and-set on
//!   what it saw (`crate::sink::lease`). A lease released by a clean stop is taken at once.
//! - The leader renews every `lease.duration / 3`. Found taken: it stops at once, exit 6
//!   ([`crate::ExitCode::LeaseLost`]); systemd starts it again as a standby. Not renewed for a
//!   whole `lease.duration` (MongoDB does not answer it): logged, `/status` `unconfirmed_since`,
//!   `/readyz` not ready; it keeps reading the binlog into the WAL (as through any MongoDB
//!   outage: when MongoDB is away from both instances, nobody can take over, and the WAL must not
//!   stop buffering), and the first renewal MongoDB answers decides. Whatever the timing, the
//!   fence in every batch transaction keeps an old leader from committing.
//! - A standby counts "unchanged for a whole `lease.duration`" over reads that succeeded only: a
//!   standby MongoDB was away from gives the leader a whole `duration` again once it is back, so
//!   a MongoDB outage for both does not end in a needless takeover.
//! - On a clean stop the leader releases the lease (best effort), so the standby need not wait.
//! - A WAL from an earlier term: when MongoDB's offset was written from another WAL, this WAL's
//!   records are history another leader has relayed since; [`supersede_stale_wal`] acknowledges
//!   them (kept as `wal.retain_acked` allows, never deleted) and the ingester continues from
//!   MongoDB's offset. When the offset is this WAL's, the WAL continues as it is: its
//!   unacknowledged records are still the only copy.

use std::time::{Duration, Instant, SystemTime};

use sdl_wal::Wal;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::RunError;
use crate::config::Config;
use crate::event::SourceTransaction;
use crate::sink::lease::{Fence, LeaseRecord, LeaseStore};
use crate::sink::{MongoSink, SinkError};
use crate::telemetry::{metrics, LastError, LeaseStatus, Role};
use crate::ExitCode;

/// The lease this instance holds, and the task renewing it.
pub(super) struct Held {
    pub fence: Fence,
    store: std::sync::Arc<LeaseStore>,
    /// Fires when a renewal finds the lease taken over.
    pub lost: oneshot::Receiver<SinkError>,
    renewal: JoinHandle<()>,
}

/// Waits as a standby until this instance holds the lease (`[lease]` on); `None` without a lease.
pub(super) async fn acquire(
    config: &Config,
    status: &watch::Sender<LeaseStatus>,
) -> Result<Option<Held>, RunError> {
    if !config.lease.enabled {
        return Ok(None);
    }
    let store = connect(config, status).await?;
    let watchdog = feed_watchdog();
    let fence = wait_for_lease(config, &store, status).await;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    let store = std::sync::Arc::new(store);
    let (lost_tx, lost) = oneshot::channel();
    let renewal = tokio::spawn(renew(
        store.clone(),
        fence.clone(),
        config.lease.duration,
        status.clone(),
        lost_tx,
    ));
    Ok(Some(Held {
        fence,
        store,
        lost,
        renewal,
    }))
}

/// Connects for the lease, waiting out an unreachable MongoDB (logged); a MongoDB without
/// transactions, a bad URL or a refused login stop start-up.
async fn connect(
    config: &Config,
    status: &watch::Sender<LeaseStatus>,
) -> Result<LeaseStore, RunError> {
    let interval = config.lease.renew_interval();
    loop {
        match LeaseStore::connect(&config.sink, &config.source.name, &config.lease.instance).await {
            Ok(store) => return Ok(store),
            Err(e) if e.is_transient() => {
                warn!(target: "sdl::service", error = %e, "lease: MongoDB does not answer; the lease is read once it does (this instance neither leads nor relays meanwhile)");
                status.send_modify(|s| s.last_error = Some(LastError::now(&e)));
                tokio::time::sleep(interval).await;
            }
            Err(e) => {
                return Err(RunError::failure(anyhow::Error::from(e).context(format!(
                    "connecting to MongoDB for the lease of source `{}`",
                    config.source.name
                ))))
            }
        }
    }
}

/// What a standby saw last, and since when (this host's monotonic clock).
struct Observed {
    epoch: i64,
    renewals: i64,
    since: Instant,
}

/// Polls the lease until this instance takes it.
async fn wait_for_lease(
    config: &Config,
    store: &LeaseStore,
    status: &watch::Sender<LeaseStatus>,
) -> Fence {
    let duration = config.lease.duration;
    let started = Instant::now();
    let mut observed: Option<Observed> = None;
    let mut told_waiting = false;
    loop {
        let attempt = async {
            let record = store.read().await?;
            // A takeover whose answer was lost (timed out below, or a network error) took it.
            if let Some(fence) = record.as_ref().and_then(|r| store.held_by_me(r)) {
                return Ok((record, Some(fence)));
            }
            let take = match &record {
                None => true,
                Some(r) if r.holder.is_none() => true,
                Some(r) => {
                    let unchanged = observed
                        .as_ref()
                        .is_some_and(|o| o.epoch == r.epoch && o.renewals == r.renewals);
                    if !unchanged {
                        observed = Some(Observed {
                            epoch: r.epoch,
                            renewals: r.renewals,
                            since: Instant::now(),
                        });
                    }
                    observed
                        .as_ref()
                        .is_some_and(|o| o.since.elapsed() >= duration)
                }
            };
            let fence = if take {
                if record.as_ref().is_some_and(|r| r.holder.is_some()) {
                    store.end_lapsed_transactions().await;
                }
                store.take(record.as_ref()).await?
            } else {
                None
            };
            Ok::<_, SinkError>((record, fence))
        };
        // A MongoDB that stops answering mid-request must not stall the standby for good.
        let attempt = tokio::time::timeout(duration, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(SinkError::Operation {
                    operation: "read lease",
                    detail: format!(
                        "no answer within lease.duration ({})",
                        humantime::format_duration(duration)
                    ),
                    transient: true,
                })
            });
        match attempt {
            Ok((_, Some(fence))) => {
                became_leader(config, &fence, started.elapsed(), status);
                return fence;
            }
            Ok((record, None)) => {
                if let Some(record) = &record {
                    if !told_waiting {
                        told_waiting = true;
                        // Up, as a standby: systemd need not wait for a takeover.
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                        info!(target: "sdl::service",
                            source_name = %config.source.name,
                            holder = %holder_name(record),
                            epoch = record.epoch,
                            lease_duration = ?duration,
                            "lease held by another instance: waiting as a standby (not reading the binlog); taking over once its lease has not been renewed for lease.duration"
                        );
                    }
                    publish_standby(config, record, started, status);
                }
            }
            Err(e) => {
                // "Unchanged for a whole duration" counts only what was seen: after MongoDB was
                // away from this standby, the leader gets a whole duration to show it renews.
                observed = None;
                warn!(target: "sdl::service", error = %e, "lease: cannot read the lease document; still waiting as a standby");
                status.send_modify(|s| s.last_error = Some(LastError::now(&e)));
            }
        }
        tokio::time::sleep(config.lease.renew_interval()).await;
    }
}

/// systemd's watchdog (when enabled) fed at half its interval while this instance waits.
fn feed_watchdog() -> Option<JoinHandle<()>> {
    sd_notify::watchdog_enabled().map(|interval| {
        tokio::spawn(async move {
            loop {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                tokio::time::sleep(interval / 2).await;
            }
        })
    })
}

fn holder_name(record: &LeaseRecord) -> String {
    match (&record.holder, &record.instance) {
        (None, _) => "nobody (released)".to_string(),
        (Some(_), Some(instance)) => instance.clone(),
        (Some(token), None) => token.clone(),
    }
}

fn now_text() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn publish_standby(
    config: &Config,
    record: &LeaseRecord,
    started: Instant,
    status: &watch::Sender<LeaseStatus>,
) {
    metrics().lease_epoch.set(record.epoch);
    metrics().lease_is_leader.set(0);
    let waiting_since = SystemTime::now() - started.elapsed();
    let line = format!(
        "standby: waiting for the lease of source {} (held by {}, epoch {})",
        config.source.name,
        holder_name(record),
        record.epoch
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&line)]);
    status.send_modify(|s| {
        s.role = Role::Standby;
        s.epoch = Some(record.epoch);
        s.holder_instance = record.holder.as_ref().and(record.instance.clone());
        s.waiting_since = Some(humantime::format_rfc3339_millis(waiting_since).to_string());
        s.last_error = None;
    });
}

fn became_leader(
    config: &Config,
    fence: &Fence,
    waited: Duration,
    status: &watch::Sender<LeaseStatus>,
) {
    let m = metrics();
    m.lease_epoch.set(fence.epoch);
    m.lease_is_leader.set(1);
    m.lease_takeovers.inc();
    info!(target: "sdl::service",
        source_name = %config.source.name,
        instance = %fence.instance,
        epoch = fence.epoch,
        waited_ms = waited.as_millis() as u64,
        "lease taken: this instance leads (epoch {}) after waiting {:.1} s", fence.epoch, waited.as_secs_f64()
    );
    let line = format!(
        "leader of source {} (epoch {})",
        config.source.name, fence.epoch
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&line)]);
    status.send_modify(|s| {
        s.role = Role::Leader;
        s.epoch = Some(fence.epoch);
        s.holder_instance = Some(fence.instance.clone());
        s.waiting_since = None;
        s.leader_since = Some(now_text());
        s.last_error = None;
    });
}

/// Renews the lease every `duration / 3` until it is found taken; then publishes why on `lost`.
///
/// A renewal MongoDB does not answer is retried; it does not end the lease here. Past `duration`
/// without one, a standby that reaches MongoDB may have taken over: that is logged, shown
/// (`unconfirmed_since`, `/readyz`), and commits stay fenced, while the ingester keeps reading
/// the binlog into the WAL, as it does through any MongoDB outage. The first renewal MongoDB
/// answers again says which it was: still this instance's, or taken (then the stop, exit 6).
async fn renew(
    store: std::sync::Arc<LeaseStore>,
    fence: Fence,
    duration: Duration,
    status: watch::Sender<LeaseStatus>,
    lost: oneshot::Sender<SinkError>,
) {
    let interval = duration / 3;
    // The start of the last renewal that succeeded: the lease lasts `duration` from there at
    // least, on any standby's clock.
    let mut renewed = Instant::now();
    let mut unconfirmed = false;
    let mut next = interval;
    let error = loop {
        tokio::time::sleep(next).await;
        let attempt = Instant::now();
        let outcome = tokio::time::timeout(interval, store.renew(&fence)).await;
        match outcome {
            Ok(Ok(())) => {
                if unconfirmed {
                    info!(target: "sdl::service", epoch = fence.epoch, "lease renewed again: this instance still leads");
                    unconfirmed = false;
                }
                renewed = attempt;
                next = interval;
                status.send_modify(|s| {
                    s.last_error = None;
                    s.unconfirmed_since = None;
                });
                continue;
            }
            Ok(Err(e)) if e.is_lease_lost() => break e,
            Ok(Err(e)) => {
                warn!(target: "sdl::service", error = %e, epoch = fence.epoch, "lease: renewal failed; retrying");
                status.send_modify(|s| s.last_error = Some(LastError::now(&e)));
            }
            Err(_) => {
                warn!(target: "sdl::service", epoch = fence.epoch, timeout = ?interval, "lease: renewal got no answer in time; retrying");
            }
        }
        if !unconfirmed && renewed.elapsed() >= duration {
            unconfirmed = true;
            let since = SystemTime::now() - renewed.elapsed();
            warn!(target: "sdl::service",
                epoch = fence.epoch,
                lease_duration = ?duration,
                "lease not renewed for lease.duration: MongoDB does not answer this instance, so a standby that reaches it may take over. Commits stay fenced (none can land if it does); the binlog is still read into the WAL; the next renewal MongoDB answers decides"
            );
            status.send_modify(|s| {
                s.unconfirmed_since = Some(humantime::format_rfc3339_millis(since).to_string())
            });
        }
        // Try again soon, but not in a busy loop.
        next = (interval / 4).max(Duration::from_millis(50));
    };
    metrics().lease_is_leader.set(0);
    status.send_modify(|s| {
        s.role = Role::SteppedDown;
        s.last_error = Some(LastError::now(&error));
    });
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(
        "lost the lease: stepping down",
    )]);
    let _ = lost.send(error);
}

impl Held {
    /// After a stage failed: the lease lost meanwhile, if it was, which then is the failure's
    /// cause (a new leader sharing this one's `source.server_id` pushes it off the source). One
    /// renewal decides, waited for at most `duration`; unanswered, the stage's failure stands.
    pub(super) async fn lost_meanwhile(&mut self, duration: Duration) -> Option<SinkError> {
        if let Ok(e) = self.lost.try_recv() {
            return Some(e);
        }
        match tokio::time::timeout(duration, self.store.renew(&self.fence)).await {
            Ok(Err(e)) if e.is_lease_lost() => Some(e),
            _ => None,
        }
    }

    /// A clean stop: gives the lease up so that a standby takes over at once (best effort).
    pub(super) async fn release(self, lost: bool) {
        self.renewal.abort();
        if !lost {
            match tokio::time::timeout(Duration::from_secs(5), self.store.release(&self.fence))
                .await
            {
                Ok(Ok(())) => {
                    info!(target: "sdl::service", epoch = self.fence.epoch, "lease released: a standby can take over at once")
                }
                Ok(Err(e)) => {
                    warn!(target: "sdl::service", error = %e, "lease: could not release it; a standby takes over once it lapses (lease.duration)")
                }
                Err(_) => {
                    warn!(target: "sdl::service", "lease: releasing it got no answer; a standby takes over once it lapses (lease.duration)")
                }
            }
        }
        if let Ok(store) = std::sync::Arc::try_unwrap(self.store) {
            store.close().await;
        }
    }
}

/// The lease lost: exit 6.
pub(super) fn lease_lost_error(error: SinkError) -> RunError {
    RunError::new(ExitCode::LeaseLost, error)
}

/// With a lease: when MongoDB's offset was written from another WAL, this WAL is from an earlier
/// term (another leader relayed since). Its records are acknowledged (kept as `wal.retain_acked`
/// allows, never deleted) so that nothing of it is forwarded, and the caller seeds the ingest
/// position from MongoDB's offset. Returns whether it did.
pub(super) async fn supersede_stale_wal(
    held: Option<&Held>,
    sink: Option<&MongoSink>,
    wal: &Wal<SourceTransaction>,
) -> Result<bool, RunError> {
    let (Some(held), Some(sink)) = (held, sink) else {
        return Ok(false);
    };
    if wal.ingest_position()?.is_none() {
        return Ok(false);
    }
    let Some(offset) = sink.offset().await? else {
        return Ok(false);
    };
    if offset.wal_id == wal.id() || offset.gtid_position.is_empty() {
        return Ok(false);
    }
    let (acked, last) = (wal.acked()?, wal.last_seq()?);
    warn!(target: "sdl::service",
        wal_id = %wal.id(),
        offset_wal_id = %offset.wal_id,
        offset_position = %offset.gtid_position,
        epoch = held.fence.epoch,
        wal_acked = acked,
        wal_last = last,
        "this WAL is from an earlier term: another leader has relayed since (MongoDB's offset was written from WAL {}). Its records {}..{} are set aside (acknowledged, kept as wal.retain_acked allows) and relaying continues from MongoDB's offset; what they held is read again from the binlog",
        offset.wal_id, acked + 1, last
    );
    if last > acked {
        wal.acknowledge(last)?;
    }
    Ok(true)
}
