//! Start-up phase: repair damaged WAL records the sink has not acknowledged.
//!
//! Guarantee: a damaged record the sink has not acknowledged is discarded, with every record after
//! it, and the ingest position rewound to just before it, so the ingester reads that range again
//! from the source. Done only after the acknowledged cursor was caught up to MongoDB's offset
//! (`sink_reconciled`), and only when the source can still serve that position; otherwise sdl
//! stops and names the damaged range. A record in another release's format is not damage and is
//! never discarded on a guess.

use sdl_wal::Wal;
use tracing::warn;

use super::RunError;
use crate::event::SourceTransaction;
use crate::flavor::Flavor;
use crate::gtid::ResumePoint;
use crate::source::{self, SourceError};
use crate::ExitCode;

pub(super) async fn repair_damaged_records(
    wal: &Wal<SourceTransaction>,
    source_cfg: &crate::config::SourceConfig,
    flavor: Flavor,
    sink_reconciled: bool,
) -> Result<(), RunError> {
    let Some((seq, damage)) = wal.first_damaged_unacknowledged()? else {
        return Ok(());
    };
    if let sdl_wal::FrameError::UnknownVersion { found, supported } = damage {
        // Not damage: another release's format. Its records are not discarded on a guess.
        return Err(RunError::failure(anyhow::anyhow!(
            "WAL record {seq} (not yet in MongoDB) was written in record format version {found}, and this sdl reads version {supported}: an upgrade or downgrade across a WAL format change while records were waiting. Either run the release that wrote it until the WAL is drained (sdl_wal_unacked_records near 0), then stop it and switch; or move the WAL directory aside and start this release: it resumes from MongoDB's offset (the source must still have the binlogs from there). docs/operations.md, \"Upgrade\""
        )));
    }
    if !sink_reconciled {
        return Err(RunError::failure(anyhow::anyhow!(
            "WAL record {seq} is damaged ({damage}) and not acknowledged, and MongoDB is not reachable to say whether it already holds it: the repair (reading the record again from the source) waits for MongoDB's offset, so that what MongoDB has is never read twice. Start sdl again once MongoDB is reachable (under systemd it restarts by itself)"
        )));
    }
    let last = wal.last_seq()?;
    let from = String::from_utf8_lossy(&wal.position_before(seq)?).into_owned();
    let to = wal
        .ingest_position()?
        .map(|p| String::from_utf8_lossy(&p).into_owned())
        .unwrap_or_default();
    // Where the repair reads from: the position before the damaged record, not the start position.
    let resume = ResumePoint::parse(flavor, &from).map_err(SourceError::from)?;
    if !source::binlog_available(source_cfg, &resume.position).await? {
        return Err(RunError::new(
            ExitCode::BinlogUnavailable,
            anyhow::anyhow!(
                "WAL record {seq} is damaged ({damage}) and not yet in MongoDB, and the source no longer has the binlog from GTID position {from} to repair it (the damaged range ends at {to}; records {seq}..={last}). Choices: restore the source's binlog files covering that range and start sdl again; or accept the loss and re-seed: move the WAL directory away and start with source.start set to a GTID position"
            ),
        ));
    }
    let rewound = wal.truncate_unacknowledged(seq)?;
    warn!(target: "sdl::service",
        damaged_seq = seq,
        %damage,
        discarded = format!("{seq}..={last}"),
        rewound_to = %String::from_utf8_lossy(&rewound),
        "repaired the WAL: damaged unacknowledged records discarded; they are read again from the source"
    );
    Ok(())
}
