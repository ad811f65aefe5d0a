//! Start-up phases: what was relayed under this source.name, checked against the source's
//! history; then, for a new WAL, where the ingester starts.
//!
//! Guarantees:
//! - The positions already relayed (the WAL's ingest position, and MongoDB's offset when MongoDB
//!   answers) are read once, after the WAL repair (which may rewind the WAL's position), and
//!   parsed once for the source's flavor ([`Relayed`]). The identity check and the start position
//!   both use that one value.
//! - sdl refuses to start when the source's GTID history no longer contains them
//!   (`super::identity`, exit 4).
//! - A new WAL starts at MongoDB's offset when MongoDB holds one for this source (with a
//!   warning), otherwise at `source.start`; that position is saved in the WAL before the ingester
//!   starts, so the ingester always resumes from the WAL. With `source.snapshot = "initial"` the
//!   latter (the deployment's very first start) also holds the plan of the initial snapshot, so
//!   it is taken exactly once: a later start resumes it from the saved position, or finds it done.
//!   A selected table the snapshot cannot read soundly stops the start (exit 2) before anything is
//!   relayed.

use anyhow::Context;
use sdl_wal::Wal;
use tracing::{info, warn};

use super::connect::Connections;
use super::identity::{self, Landmark, RelayedPosition};
use super::RunError;
use crate::config::{Config, SnapshotMode, StartFrom};
use crate::event::SourceTransaction;
use crate::flavor::Flavor;
use crate::gtid::ResumePoint;
use crate::sink::{MongoSink, SinkError};
use crate::source::{self, SourceError};

/// What has been relayed under this source.name, read once at start-up.
pub(super) struct Relayed {
    /// The WAL's ingest position; `None` for a new WAL.
    wal: Option<RelayedPosition>,
    /// MongoDB's offset, when MongoDB is connected (`None` otherwise): `Ok(None)` when it holds
    /// none; an error when it could not be read.
    offset: Option<Result<Option<RelayedPosition>, SinkError>>,
    /// Where the last relayed transactions were read (MariaDB: checked against the binlog).
    landmarks: Vec<Landmark>,
}

impl Relayed {
    /// The relayed positions, the WAL's first.
    fn positions(&self) -> Vec<&RelayedPosition> {
        let offset = match &self.offset {
            Some(Ok(Some(offset))) => Some(offset),
            _ => None,
        };
        self.wal.iter().chain(offset).collect()
    }
}

const THE_WAL: &str = "the WAL";
const MONGODB_OFFSET: &str = "MongoDB's offset";

/// Reads the WAL's position and last record, and MongoDB's offset and last documents.
pub(super) async fn read_relayed(
    wal: &Wal<SourceTransaction>,
    flavor: Flavor,
    sink: Option<&MongoSink>,
) -> Result<Relayed, RunError> {
    let wal_position = wal.ingest_position()?.map(|position| {
        RelayedPosition::parse(
            flavor,
            THE_WAL,
            String::from_utf8_lossy(&position).into_owned(),
        )
    });
    let mut landmarks = Vec::new();
    // Where the WAL's last record was read (MariaDB: checked against the binlog).
    let last = wal.last_seq()?;
    if last > 0 {
        // A record that cannot be read (pruned, or damaged and acknowledged) is no landmark; the
        // forwarder reports damage where it matters.
        if let Ok(Some(stored)) = wal.get(last) {
            if let Some((file, pos)) = stored
                .record
                .changes
                .first()
                .and_then(|c| c.binlog_location())
            {
                landmarks.push(Landmark {
                    what: THE_WAL,
                    gtid: stored.record.gtid.clone(),
                    file: file.to_string(),
                    pos,
                });
            }
        }
    }
    let offset = match sink {
        Some(sink) => Some(read_offset(sink, flavor, &mut landmarks).await?),
        None => None,
    };
    Ok(Relayed {
        wal: wal_position,
        offset,
        landmarks,
    })
}

/// MongoDB's offset, and (MariaDB) where its last documents were read, added to `landmarks`. An
/// offset that cannot be read is logged: the history is then checked against the WAL alone
/// (MongoDB's offset never leads the WAL's position).
async fn read_offset(
    sink: &MongoSink,
    flavor: Flavor,
    landmarks: &mut Vec<Landmark>,
) -> Result<Result<Option<RelayedPosition>, SinkError>, RunError> {
    let offset = match sink.offset().await {
        Ok(Some(offset)) => offset,
        Ok(None) => return Ok(Ok(None)),
        Err(e) => {
            warn!(target: "sdl::service", error = %e, "could not read MongoDB's offset to check the source's history");
            return Ok(Err(e));
        }
    };
    if flavor == Flavor::Mariadb {
        for (gtid, file, pos) in sink.last_change_locations(&offset.gtid_position).await? {
            if !landmarks
                .iter()
                .any(|l| l.gtid == gtid && l.file == file && l.pos == pos)
            {
                landmarks.push(Landmark {
                    what: identity::MONGODB_LANDMARK,
                    gtid,
                    file,
                    pos,
                });
            }
        }
    }
    Ok(Ok(Some(RelayedPosition::parse(
        flavor,
        MONGODB_OFFSET,
        offset.gtid_position,
    ))))
}

/// Refuses to start when the source's GTID history no longer contains what was relayed under
/// this source.name (`super::identity`): the WAL's position, and MongoDB's offset if it answered.
pub(super) async fn check_source_history(
    connections: &mut Connections,
    config: &Config,
    relayed: &Relayed,
) -> Result<(), RunError> {
    let flavor = connections.flavor;
    let positions = relayed.positions();
    if positions.is_empty() {
        return Ok(());
    }
    // One server: a lossy failover behind the same address shows as errant GTIDs in place of
    // relayed ones (with several, the failover check refused such a server already).
    if connections.chosen_server.is_none() {
        if let Some(Ok(point)) = relayed.wal.as_ref().map(|wal| &wal.parsed) {
            source::failover::refuse_if_diverged(
                &config.source,
                &mut connections.conn,
                flavor,
                &point.to_string(),
            )
            .await?;
        }
    }
    let conn = &mut connections.conn;
    let current = source::resolve_start(conn, flavor, &StartFrom::Current).await?;
    identity::check(flavor, &config.source.name, &current, &positions)?;
    if flavor == Flavor::Mariadb {
        // With several servers, file:pos landmarks are looked up only where they were read.
        let landmarks = match &connections.chosen_server {
            Some((index, identity)) => {
                let recorded = source::failover::record::load(&config.wal.dir);
                identity::landmarks_read_on(*index, identity, recorded.as_ref(), &relayed.landmarks)
            }
            None => relayed.landmarks.clone(),
        };
        identity::check_landmarks(&mut connections.conn, &config.source.name, &landmarks).await?;
    }
    Ok(())
}

/// A new WAL: saves where the ingester starts, MongoDB's offset when it holds one for this
/// source, otherwise `source.start`.
pub(super) async fn seed_start_position(
    connections: &mut Connections,
    config: &Config,
    wal: &Wal<SourceTransaction>,
    relayed: Relayed,
) -> Result<(), RunError> {
    let (conn, flavor) = (&mut connections.conn, connections.flavor);
    let sink = connections
        .sink
        .as_ref()
        .expect("a new WAL is only started with MongoDB reachable");
    let offset = match relayed.offset {
        Some(Ok(offset)) => offset,
        // Not read at the history check: without it a new WAL cannot know where to start.
        _ => sink
            .offset()
            .await?
            .map(|offset| RelayedPosition::parse(flavor, MONGODB_OFFSET, offset.gtid_position)),
    };
    let position = match offset {
        Some(offset) if !offset.text.is_empty() => {
            warn!(target: "sdl::service",
                position = %offset.text,
                "the WAL is new but MongoDB holds an offset for this source; continuing from MongoDB's position"
            );
            offset.parsed.map_err(SourceError::from)?
        }
        _ => {
            let mut start =
                ResumePoint::at(source::resolve_start(conn, flavor, &config.source.start).await?);
            if config.source.snapshot == SnapshotMode::Initial {
                // The deployment's very first start: the tables' existing rows come first, read
                // in chunks while the stream runs from `start` (source::snapshot).
                let plan = source::snapshot::plan_for(conn, &config.source.snapshot_tables).await?;
                info!(target: "sdl::snapshot",
                    tables = plan.tables.len(),
                    "initial snapshot (source.snapshot = \"initial\"): {}",
                    plan.tables.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
                );
                start.snapshot = Some(plan);
            }
            start
        }
    };
    info!(target: "sdl::service",
        position = %position,
        start = %crate::messages::start_text(&config.source.start),
        "new WAL: starting position"
    );
    wal.append(&[], position.to_string().as_bytes())
        .context("saving the starting position in the WAL")?;
    Ok(())
}
