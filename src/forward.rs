//! The forwarder: drains the WAL into the sink and moves the WAL's acknowledged cursor.
//!
//! # Guarantees
//! - Records are forwarded in sequence order, in batches bounded by `sink.batch_max_documents` and
//!   `sink.batch_max_bytes` (a single larger transaction travels alone).
//! - The acknowledged cursor moves only after the sink has committed the batch (or reported that
//!   its offset already covers it), so a crash anywhere replays at most the last batch, which the
//!   sink recognises and does not write twice.
//! - At start, an acknowledged cursor that lags the sink's offset (a crash between the MongoDB
//!   commit and the WAL flush) is moved up to the offset before anything is read.
//! - Transient sink failures are retried with capped exponential backoff for as long as they last;
//!   a definite failure stops the forwarder with nothing acknowledged past the last commit.

use std::time::Duration;

use sdl_wal::{Stored, Wal};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::SinkConfig;
use crate::event::SourceTransaction;
use crate::sink::{document, Committed, MongoSink, SinkError};

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Wal(#[from] sdl_wal::WalError),
    #[error("the sink's offset names WAL sequence {sink_seq}, beyond this WAL's last sequence {wal_last} (same WAL id {wal_id}): the WAL directory was restored from an older backup. Restore the newest copy of the WAL directory, or start with an empty WAL directory to resume from the sink's GTID position")]
    SinkAhead {
        sink_seq: u64,
        wal_last: u64,
        wal_id: String,
    },
}

/// Runs until `shutdown` turns true (after finishing the batch in flight) or a definite error.
pub async fn run(
    sink: MongoSink,
    wal: Wal<SourceTransaction>,
    cfg: SinkConfig,
    mut appended: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ForwardError> {
    reconcile_with_sink(&sink, &wal).await?;
    let wal_id = wal.id();
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let next = wal.acked()? + 1;
        let batch = read_batch(&wal, next, &cfg).await?;
        if batch.is_empty() {
            tokio::select! {
                changed = appended.changed() => {
                    if changed.is_err() {
                        // The ingester is gone: drain what is left, then stop.
                        if wal.last_seq()? < next { return Ok(()); }
                    }
                }
                _ = crate::source::stopped(&mut shutdown) => return Ok(()),
            }
            continue;
        }
        let documents: Vec<_> = batch
            .iter()
            .flat_map(|stored| document::transaction_documents(&stored.record))
            .collect();
        let last = batch.last().map(|s| s.seq).unwrap_or(next);
        let outcome = tokio::select! {
            outcome = sink.commit(&wal_id, &batch, documents) => outcome,
            _ = crate::source::stopped(&mut shutdown) => {
                // Dropping the commit aborts its transaction (or, if it landed, the offset
                // check recognises the batch after restart): nothing is lost or doubled.
                info!(from = next, to = last, "shutdown: abandoning the batch in flight");
                return Ok(());
            }
        };
        match outcome {
            Ok(outcome) => {
                if let Committed::AlreadyApplied = outcome {
                    info!(
                        from = next,
                        to = last,
                        "batch was already applied in MongoDB; acknowledging"
                    );
                }
                let ack_wal = wal.clone();
                tokio::task::spawn_blocking(move || ack_wal.acknowledge(last))
                    .await
                    .expect("acknowledge task panicked")?;
                backoff = Duration::from_millis(100);
            }
            Err(e) if e.is_transient() => {
                warn!(error = %e, retry_in = ?backoff, "MongoDB commit failed, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = crate::source::stopped(&mut shutdown) => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn reconcile_with_sink(
    sink: &MongoSink,
    wal: &Wal<SourceTransaction>,
) -> Result<(), ForwardError> {
    let Some(offset) = sink.offset().await? else {
        return Ok(());
    };
    if offset.wal_id != wal.id() {
        return Ok(());
    }
    let acked = wal.acked()?;
    if offset.wal_seq > acked {
        let last = wal.last_seq()?;
        if offset.wal_seq > last {
            return Err(ForwardError::SinkAhead {
                sink_seq: offset.wal_seq,
                wal_last: last,
                wal_id: offset.wal_id,
            });
        }
        info!(
            wal_acked = acked,
            sink_seq = offset.wal_seq,
            "MongoDB already holds records the WAL had not marked acknowledged; catching the cursor up"
        );
        wal.acknowledge(offset.wal_seq)?;
    }
    Ok(())
}

async fn read_batch(
    wal: &Wal<SourceTransaction>,
    from: u64,
    cfg: &SinkConfig,
) -> Result<Vec<Stored<SourceTransaction>>, ForwardError> {
    let wal = wal.clone();
    let (max_docs, max_bytes) = (cfg.batch_max_documents, cfg.batch_max_bytes);
    let records = tokio::task::spawn_blocking(move || {
        // Records hold whole transactions, so the document limit is applied after reading.
        wal.read_from(from, max_docs, max_bytes)
    })
    .await
    .expect("WAL read task panicked")?;
    let mut documents = 0usize;
    let mut batch = Vec::with_capacity(records.len());
    for stored in records {
        let count = stored.record.changes.len();
        if !batch.is_empty() && documents + count > max_docs {
            break;
        }
        documents += count;
        batch.push(stored);
    }
    Ok(batch)
}
