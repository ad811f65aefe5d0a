//! Start-up reconciliation with the sink, before anything is forwarded: the WAL's acknowledged
//! cursor is caught up to the sink's offset (a crash between a commit and the WAL flush), and
//! staging entries an earlier run left "pending" are settled against the offset and the WAL and
//! each reported. A WAL older than the sink's offset (restored from a backup) stops with
//! [`ForwardError::SinkAhead`].

use sdl_wal::Wal;
use tracing::{info, warn};

use super::{
    read_records, ForwardError, PendingBatch, Prepared, Sink, SinkOffset, STAGING_COMMITTED,
    STAGING_NOT_APPLIED,
};
use crate::event::SourceTransaction;

/// Returns the sink's offset, as read. Also run at start-up before the WAL's repair (service.rs),
/// so that a damaged record MongoDB already holds is acknowledged rather than read again.
pub async fn reconcile_with_sink<S: Sink>(
    sink: &S,
    wal: &Wal<SourceTransaction>,
) -> Result<Option<SinkOffset>, ForwardError> {
    let Some(offset) = sink.offset().await? else {
        return Ok(None);
    };
    if offset.wal_id != wal.id() {
        return Ok(Some(offset));
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
        info!(target: "sdl::forward",
            wal_acked = acked,
            sink_seq = offset.wal_seq,
            "MongoDB already holds records the WAL had not marked acknowledged; catching the cursor up"
        );
        wal.acknowledge(offset.wal_seq)?;
    }
    Ok(Some(offset))
}

/// A batch an sdl with `<gtid>:<ordinal>` ids left half-written (transactions off) holds documents with the old
/// `<gtid>:<ordinal>` ids; the replay writes them with `<source>/<gtid>:<ordinal>` ids. The old
/// copies of the same changes are removed first, so each change stays in MongoDB once.
async fn remove_legacy_copies<S: Sink>(
    sink: &S,
    wal: &Wal<SourceTransaction>,
    p: &PendingBatch,
    acked: u64,
    last: u64,
) -> Result<(), ForwardError> {
    if p.wal_id != wal.id() || p.first_seq <= acked || p.last_seq > last {
        warn!(target: "sdl::forward",
            staging = %p.id,
            first_gtid = %p.first_gtid,
            last_gtid = %p.last_gtid,
            "a batch written in part by an sdl with `<gtid>:<ordinal>` ids is no longer in this WAL: documents with the old `<gtid>:<ordinal>` ids between these GTIDs may now also exist with `<source>/<gtid>:<ordinal>` ids; see docs/change-document.md, \"Upgrading\""
        );
        return Ok(());
    }
    let mut next = p.first_seq;
    let (mut removed, mut kept) = (0, 0);
    while next <= p.last_seq {
        let records: Vec<_> = read_records(wal, next, 10_000, 64 << 20)
            .await?
            .into_iter()
            .filter(|s| s.seq <= p.last_seq)
            .collect();
        let Some(last_read) = records.last().map(|s| s.seq) else {
            break;
        };
        next = last_read + 1;
        let source = sink.source_name().to_string();
        let prepared = tokio::task::spawn_blocking(move || {
            S::prepare(&source, &records, usize::MAX, usize::MAX)
        })
        .await
        .expect("batch preparation panicked");
        let batch = match prepared {
            Prepared::Batch(b) | Prepared::BatchThenStop(b, _) => b,
            Prepared::Stop(_) => continue,
        };
        let (r, k) = sink.remove_legacy_copies(&batch).await?;
        removed += r;
        kept += k;
    }
    info!(target: "sdl::forward",
        staging = %p.id,
        removed,
        kept_different = kept,
        "upgrade: removed the old-id copies of a batch an earlier sdl left half-written; it is written again with source-qualified ids"
    );
    Ok(())
}

/// Settles staging entries an earlier run left "pending" (it stopped between staging a batch and
/// committing it), and reports each one.
pub(super) async fn reconcile_staging<S: Sink>(
    sink: &S,
    wal: &Wal<SourceTransaction>,
) -> Result<(), ForwardError> {
    let pending = sink.pending_batches().await?;
    if pending.is_empty() {
        return Ok(());
    }
    let offset = sink.offset().await?;
    let (wal_id, acked, last) = (wal.id(), wal.acked()?, wal.last_seq()?);
    for p in &pending {
        if p.session.is_some() {
            // The dead run's transaction may still be open and hold locks: end it first.
            sink.end_pending_transaction(p).await;
        }
        let covered = offset
            .as_ref()
            .is_some_and(|o| o.wal_id == p.wal_id && o.wal_seq >= p.last_seq);
        let (status, note) = if covered {
            (
                STAGING_COMMITTED,
                "applied before the restart: the offset covers it".to_string(),
            )
        } else if p.wal_id == wal_id && last >= p.last_seq && acked < p.first_seq {
            (
                STAGING_NOT_APPLIED,
                format!(
                    "not applied: the WAL still holds it and it is forwarded again from WAL sequence {}",
                    acked + 1
                ),
            )
        } else if p.wal_id == wal_id {
            // Not covered by the offset, yet not where the WAL would forward it from.
            warn!(target: "sdl::forward",
                staging = %p.id,
                first_seq = p.first_seq,
                last_seq = p.last_seq,
                wal_acked = acked,
                wal_last = last,
                "pending staging entry does not match the WAL's cursor; its records are forwarded from the WAL's acknowledged cursor on, whatever it says"
            );
            (
                STAGING_NOT_APPLIED,
                format!(
                    "not applied; the WAL (acknowledged {acked}, last {last}) did not match it at reconciliation"
                ),
            )
        } else {
            (
                STAGING_NOT_APPLIED,
                format!(
                    "not applied; written by WAL {} which this WAL ({wal_id}) replaced: its changes are read again from the binlog after the offset's GTID position",
                    p.wal_id
                ),
            )
        };
        if !covered && p.legacy_ids {
            remove_legacy_copies(sink, wal, p, acked, last).await?;
        }
        info!(target: "sdl::forward",
            staging = %p.id,
            first_seq = p.first_seq,
            last_seq = p.last_seq,
            first_gtid = %p.first_gtid,
            last_gtid = %p.last_gtid,
            documents = p.count,
            status,
            "staging: reconciled a batch left pending by an earlier run: {note}"
        );
        sink.resolve_pending(&p.id, status, &note).await?;
    }
    info!(target: "sdl::forward",
        count = pending.len(),
        "staging: all pending batches reconciled"
    );
    Ok(())
}
