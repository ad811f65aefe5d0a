//! The forwarder: drains the WAL into the sink and moves the WAL's acknowledged cursor.
//!
//! # Guarantees
//! - Records are forwarded in sequence order, in batches bounded by `sink.batch_max_documents` and
//!   `sink.batch_max_bytes` (whole transactions; a single larger transaction travels alone).
//! - The acknowledged cursor moves only after the sink has committed the batch (or reported that
//!   its offset already covers it), so a crash anywhere replays at most the batches committed
//!   since the last acknowledgement, which the sink recognises and does not write twice. The
//!   acknowledgement (a WAL flush) runs beside the next commit, not before it.
//! - At start, an acknowledged cursor that lags the sink's offset (a crash between the MongoDB
//!   commit and the WAL flush) is moved up to the offset before anything is read; then staging
//!   entries left "pending" by an earlier run are reconciled against the offset and the WAL, and
//!   each is reported.
//! - Transient sink failures go through the circuit breaker ([`breaker`]) and are retried for
//!   as long as they last, with the same batch: nothing is skipped and nothing reordered. The
//!   ingester is independent of this loop and keeps filling the WAL meanwhile.
//! - A definite failure (a change over 16 MiB, a rejected login, a validation error, an offset
//!   conflict, a change `_id` already taken by a different change, the lease of a hot standby
//!   lost: [`ForwardError::is_lease_lost`]) stops the forwarder at once,
//!   never retried, with nothing acknowledged past the last commit.
//! - Batches carry their source's name into every change `_id`; a batch an older sdl left
//!   half-written with `<gtid>:<ordinal>` ids has those copies removed at start, before it is
//!   written again (see `reconcile.rs`).
//! - Pipelining: a producer task reads and converts the next batch (to raw BSON, off the async
//!   threads) while the current one commits; at most two batches wait ready, so the next one is
//!   usually at hand when a commit starts (its staging entry is then written inside the current
//!   transaction). The WAL acknowledgement runs beside the next commit.
//!
//! # Layout
//! The forwarder works against the [`Sink`] trait (`sink.rs`: what it needs from a sink, and the
//! contract a sink keeps); `crate::sink::MongoSink` is MongoDB's implementation. `breaker.rs` is
//! the circuit breaker, `reconcile.rs` the start-up reconciliation with the sink. `tests/` checks
//! each guarantee above in process, against a sink in memory that injects faults, over a real WAL.

pub mod breaker;
mod reconcile;
mod sink;
#[cfg(test)]
mod tests;

use reconcile::reconcile_staging;
pub use reconcile::reconcile_with_sink;
pub use sink::{
    Committed, Connect, PendingBatch, Prepared, Sink, SinkFault, SinkOffset, WalBatch,
    STAGING_COMMITTED, STAGING_NOT_APPLIED,
};

use sdl_wal::{Stored, Wal};
use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::config::SinkConfig;
use crate::event::SourceTransaction;
use crate::shutdown::stopped;
use crate::telemetry::{ForwardStatus, LastError};
use breaker::{BreakerStatus, CircuitBreaker};

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Sink(SinkFailure),
    #[error(transparent)]
    Wal(#[from] sdl_wal::WalError),
    #[error("the sink's offset names WAL sequence {sink_seq}, beyond this WAL's last sequence {wal_last} (same WAL id {wal_id}): the WAL directory was restored from an older backup. Restore the newest copy of the WAL directory, or run `sdl wal recover --config FILE` to move this WAL aside and resume from the sink's GTID position")]
    SinkAhead {
        sink_seq: u64,
        wal_last: u64,
        wal_id: String,
    },
}

impl ForwardError {
    /// Whether waiting and trying again can help (MongoDB unreachable, an election, a timeout).
    pub fn is_transient(&self) -> bool {
        matches!(self, ForwardError::Sink(e) if e.is_transient())
    }

    /// This instance lost the lease of a hot standby (`[lease]`): another sdl leads now.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, ForwardError::Sink(e) if e.0.is_lease_lost())
    }
}

impl<E: SinkFault> From<E> for ForwardError {
    fn from(e: E) -> Self {
        ForwardError::Sink(SinkFailure(Box::new(e)))
    }
}

/// A sink's error, whatever the sink: displays (and chains) exactly as the sink's own error.
#[derive(Debug)]
pub struct SinkFailure(Box<dyn SinkFault>);

impl SinkFailure {
    pub fn is_transient(&self) -> bool {
        self.0.is_transient()
    }

    /// The sink's own error, when it is a `T`.
    pub fn downcast_ref<T: SinkFault>(&self) -> Option<&T> {
        (&*self.0 as &dyn std::error::Error).downcast_ref()
    }
}

impl std::fmt::Display for SinkFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SinkFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Everything the forwarder runs with.
pub struct Forwarder<S: Sink, C: Connect<S>> {
    /// The sink, when the service connected it already; else `connect` makes one.
    pub sink: Option<S>,
    pub connect: C,
    /// `source.name`, in every change `_id`.
    pub source_name: String,
    pub wal: Wal<SourceTransaction>,
    pub cfg: SinkConfig,
    /// The ingester's last appended sequence; closed when the ingester is gone.
    pub appended: watch::Receiver<u64>,
    pub shutdown: watch::Receiver<bool>,
    /// Where the breaker's state is published.
    pub breaker: watch::Sender<BreakerStatus>,
    /// Where what the sink has committed, and the last failure, are published.
    pub status: watch::Sender<ForwardStatus>,
}

/// Runs until `shutdown` turns true (after finishing the commit in flight) or a definite error.
/// The breaker's state is published on `breaker`, what MongoDB has committed and the last
/// failure on `status`.
pub async fn run<S: Sink, C: Connect<S>>(forwarder: Forwarder<S, C>) -> Result<(), ForwardError> {
    let status = forwarder.status.clone();
    let result = forward(forwarder).await;
    if let Err(e) = &result {
        status.send_modify(|s| s.last_error = Some(LastError::now(e)));
    }
    result
}

/// Publishes the end of an outage (the breaker closed again).
fn on_success(breaker: &mut CircuitBreaker) {
    if breaker.on_success() {
        crate::telemetry::metrics().stage_restarted(crate::telemetry::Stage::Forwarder);
    }
}

async fn forward<S: Sink, C: Connect<S>>(
    Forwarder {
        sink,
        mut connect,
        source_name,
        wal,
        cfg,
        appended,
        mut shutdown,
        breaker,
        status,
    }: Forwarder<S, C>,
) -> Result<(), ForwardError> {
    let shutdown = &mut shutdown;
    let status = &status;
    let mut breaker = CircuitBreaker::new(cfg.breaker_failures, cfg.retry_max_delay, breaker);
    // Connecting and the start-up reconciliation wait out an unreachable MongoDB like commits do.
    let mut connected = sink;
    let (sink, offset) = loop {
        breaker.before_attempt();
        let attempt = async {
            let sink = match connected.take() {
                Some(sink) => sink,
                None => connect.connect().await?,
            };
            let offset = reconcile_with_sink(&sink, &wal).await?;
            reconcile_staging(&sink, &wal).await?;
            Ok::<_, ForwardError>((sink, offset))
        };
        match attempt.await {
            Ok(ready) => {
                on_success(&mut breaker);
                break ready;
            }
            Err(e) if e.is_transient() => {
                status.send_modify(|s| s.last_error = Some(LastError::now(&e)));
                let delay = breaker.on_failure(&e);
                if pause_unless_stopped(delay, shutdown).await {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    };
    status.send_modify(|s| {
        s.committed_seq = wal.acked().unwrap_or_default();
        // The offset of this WAL names the position after the acknowledged cursor.
        s.committed_position = offset
            .filter(|o| o.wal_id == wal.id() && o.wal_seq == s.committed_seq)
            .map(|o| o.gtid_position);
    });

    let (ready_tx, ready) = mpsc::channel(2);
    let producer = tokio::spawn(produce::<S>(
        std::sync::Arc::from(source_name.as_str()),
        wal.clone(),
        cfg.clone(),
        wal.acked()? + 1,
        appended,
        shutdown.clone(),
        ready_tx,
    ));
    let _abort_producer = AbortOnDrop(producer);
    let (ack_tx, ack_rx) = watch::channel(wal.acked()?);
    let (ack_failed_tx, ack_failed) = mpsc::channel(1);
    let acknowledger = tokio::spawn(acknowledge(wal.clone(), ack_rx, ack_failed_tx));

    let mut commits = CommitLoop {
        sink: &sink,
        wal_id: wal.id(),
        ready,
        breaker: &mut breaker,
        acked: &ack_tx,
        ack_failed,
        shutdown,
        status,
    };
    let result = commits.run().await;
    let mut ack_failed = commits.ack_failed;
    // Let the acknowledger write the last committed sequence before returning.
    drop(ack_tx);
    acknowledger.await.expect("acknowledger panicked");
    sink.close().await;
    match ack_failed.try_recv() {
        Ok(e) => result.and(Err(e)),
        Err(_) => result,
    }
}

/// The commit loop's state: the sink, the batches the producer prepared, and where it publishes.
struct CommitLoop<'a, S: Sink> {
    sink: &'a S,
    wal_id: String,
    ready: mpsc::Receiver<Result<S::Batch, ForwardError>>,
    breaker: &'a mut CircuitBreaker,
    /// The acknowledger's input: the last committed sequence.
    acked: &'a watch::Sender<u64>,
    ack_failed: mpsc::Receiver<ForwardError>,
    shutdown: &'a mut watch::Receiver<bool>,
    status: &'a watch::Sender<ForwardStatus>,
}

impl<S: Sink> CommitLoop<'_, S> {
    /// Commits the prepared batches one after the other; hands each committed sequence to the
    /// acknowledger.
    async fn run(&mut self) -> Result<(), ForwardError> {
        // The batch received after the current one, if it was ready; its staging entry is written in
        // the current batch's transaction.
        let mut following: Option<S::Batch> = None;
        let mut stop_after: Option<ForwardError> = None;
        let mut staged = None;
        loop {
            if let Some(e) = stop_after.take() {
                return Err(e);
            }
            let batch = match following.take() {
                Some(batch) => batch,
                None => {
                    let next = tokio::select! {
                        next = self.ready.recv() => next,
                        _ = stopped(self.shutdown) => return Ok(()),
                        // The acknowledger stops early only on a WAL error.
                        Some(e) = self.ack_failed.recv() => return Err(e),
                    };
                    match next {
                        // The producer is done: shutdown, or the ingester is gone and the WAL drained.
                        None => return Ok(()),
                        Some(Err(e)) => return Err(e),
                        Some(Ok(batch)) => batch,
                    }
                }
            };
            match self.ready.try_recv() {
                Ok(Ok(next)) => following = Some(next),
                // A definite error after this batch: commit this one first.
                Ok(Err(e)) => stop_after = Some(e),
                Err(_) => {}
            }
            loop {
                self.breaker.before_attempt();
                let started = std::time::Instant::now();
                let outcome = tokio::select! {
                    outcome = self.sink.commit(&self.wal_id, &batch, staged.take(), following.as_ref()) => outcome,
                    _ = stopped(self.shutdown) => {
                        // Dropping the commit aborts its transaction (or, if it landed, the offset
                        // check recognises the batch after restart): nothing is lost or doubled.
                        info!(from = batch.first_seq(), to = batch.last_seq(), "shutdown: abandoning the batch in flight");
                        return Ok(());
                    }
                };
                match outcome {
                    Ok((outcome, next_staged)) => {
                        on_success(self.breaker);
                        let m = crate::telemetry::metrics();
                        m.batch_commit_seconds
                            .observe(started.elapsed().as_secs_f64());
                        if let Committed::Written { documents } = outcome {
                            m.documents_written.inc_by(documents as u64);
                            m.batches_committed.inc();
                        }
                        let lag = crate::telemetry::metrics::seconds_since(batch.last_timestamp());
                        if let Some(lag) = lag {
                            m.end_to_end_lag_seconds.set(lag);
                        }
                        self.status.send_modify(|s| {
                            s.committed_seq = batch.last_seq();
                            s.committed_gtid = Some(batch.last_gtid().to_string());
                            s.committed_position = Some(batch.position_after().to_string());
                            s.committed_at = Some(
                                humantime::format_rfc3339_millis(std::time::SystemTime::now())
                                    .to_string(),
                            );
                            s.end_to_end_lag_seconds = lag;
                        });
                        staged = next_staged;
                        if let Committed::AlreadyApplied = outcome {
                            info!(
                                from = batch.first_seq(),
                                to = batch.last_seq(),
                                "batch was already applied in MongoDB; acknowledging"
                            );
                        }
                        self.acked.send_replace(batch.last_seq());
                        break;
                    }
                    Err(e) if e.is_transient() => {
                        self.status
                            .send_modify(|s| s.last_error = Some(LastError::now(&e)));
                        let delay = self.breaker.on_failure(&e);
                        if pause_unless_stopped(delay, self.shutdown).await {
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

/// Moves the WAL's acknowledged cursor to the latest committed sequence, off the commit path: the
/// flush (an fsync) overlaps the next commit, and commits that finish during one flush share the
/// next. Runs until its channel closes, then writes the last value. The cursor may lag MongoDB's
/// offset, never lead it; a lag left by a crash is caught up at start.
async fn acknowledge(
    wal: Wal<SourceTransaction>,
    mut committed: watch::Receiver<u64>,
    failed: mpsc::Sender<ForwardError>,
) {
    let mut done = *committed.borrow();
    loop {
        let closed = committed.changed().await.is_err();
        let seq = *committed.borrow_and_update();
        if seq > done {
            let ack_wal = wal.clone();
            let result = tokio::task::spawn_blocking(move || ack_wal.acknowledge(seq))
                .await
                .expect("acknowledge task panicked");
            if let Err(e) = result {
                let _ = failed.send(e.into()).await;
                return;
            }
            done = seq;
        }
        if closed {
            return;
        }
    }
}

/// Waits `delay` (the breaker's backoff); true when shutdown was requested meanwhile.
async fn pause_unless_stopped(
    delay: std::time::Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stopped(shutdown) => true,
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads and converts batches from `next` on, handing each to the commit loop; stops after a
/// definite error (sent last), on shutdown, or when the ingester is gone and the WAL is drained.
/// Each record is read and decoded once: what a batch does not take waits for the next one.
async fn produce<S: Sink>(
    source: std::sync::Arc<str>,
    wal: Wal<SourceTransaction>,
    cfg: SinkConfig,
    next: u64,
    mut appended: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
    ready: mpsc::Sender<Result<S::Batch, ForwardError>>,
) {
    let (max_docs, max_bytes) = (cfg.batch_max_documents, cfg.batch_max_bytes);
    // Records read but not yet in a batch (a read may bring more than one batch takes).
    let mut buffer: Vec<Stored<SourceTransaction>> = Vec::new();
    let mut next_read = next;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let buffered: usize = buffer.iter().map(|s| s.record.changes.len()).sum();
        if buffered < max_docs {
            match read_records(&wal, next_read, max_docs, max_bytes).await {
                Ok(records) => {
                    if let Some(last) = records.last() {
                        next_read = last.seq + 1;
                    }
                    buffer.extend(records);
                }
                Err(e) => {
                    let _ = ready.send(Err(e)).await;
                    return;
                }
            }
        }
        if buffer.is_empty() {
            tokio::select! {
                changed = appended.changed() => {
                    if changed.is_err() {
                        // The ingester is gone: drain what is left, then stop.
                        match wal.last_seq() {
                            Ok(last) if last < next_read => return,
                            Ok(_) => {}
                            Err(e) => {
                                let _ = ready.send(Err(e.into())).await;
                                return;
                            }
                        }
                    }
                }
                _ = stopped(&mut shutdown) => return,
            }
            continue;
        }
        let records = std::mem::take(&mut buffer);
        let source = source.clone();
        let (prepared, records) = tokio::task::spawn_blocking(move || {
            (S::prepare(&source, &records, max_docs, max_bytes), records)
        })
        .await
        .expect("batch preparation panicked");
        let (batch, stop) = match prepared {
            Prepared::Batch(b) => (Some(b), None),
            Prepared::BatchThenStop(b, e) => (Some(b), Some(e)),
            Prepared::Stop(e) => (None, Some(e)),
        };
        if let Some(b) = batch {
            let last = b.last_seq();
            buffer = records.into_iter().filter(|s| s.seq > last).collect();
            if ready.send(Ok(b)).await.is_err() {
                return;
            }
        }
        if let Some(e) = stop {
            let _ = ready.send(Err(e.into())).await;
            return;
        }
    }
}

async fn read_records(
    wal: &Wal<SourceTransaction>,
    from: u64,
    max_docs: usize,
    max_bytes: usize,
) -> Result<Vec<Stored<SourceTransaction>>, ForwardError> {
    let wal = wal.clone();
    // About one batch of changes per read: what is read is decoded and held until batched.
    Ok(
        tokio::task::spawn_blocking(move || wal.read_from(from, max_docs, max_bytes))
            .await
            .expect("WAL read task panicked")?,
    )
}
