//! The stream loop: connect, resume from the WAL's position, follow the binlog, reconnect.
//!
//! Guarantees: the stream always resumes from the position saved in the WAL (never from what was
//! read but not saved), so a transaction half-read when the connection dropped is read again
//! from its start; transient failures are retried with backoff (100 ms doubling to 30 s, with
//! jitter), forever, and published as `reconnecting`; a definite failure stops the ingester. The
//! connection is presumed dead after three heartbeat intervals of silence, measured byte by byte
//! through the [`relay`](super::relay), so an event still arriving is never cut.
//!
//! Each connection goes to the server chosen by [`super::failover`]: the one server of
//! `source.url`, or the first of several that holds every transaction in the WAL; every query of
//! that connection's life (schema lookups, the history watch) goes to the same server. The
//! choice is logged, counted and published here (`Ingester::connect_following`), and a switch
//! is recorded in `wal.dir` before anything read from the new server is appended.
//!
//! The snapshot stage (`super::snapshot`) runs inside the same loop: its chunks are placed
//! between the transactions read, only at transaction boundaries, and every position appended
//! carries its plan.
//!
//! This file is long because the stream loop is one `select!` over every event that can move
//! it (binlog, group commit, liveness, history checks, snapshot chunks), and its order is the
//! order of the WAL.

use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::Conn;
use sdl_wal::Wal;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::connect::connect_for_stream;
use super::decode::{FragmentLimits, TransactionAssembler};
use super::failover::{choose, no_server_error, record, Chosen, Connected, Followed, Refusal};
use super::group_commit::{
    finish_append, flush, pause_while_wal_full, set_state, sleep_until_opt, PendingGroup,
};
use super::history::HistoryWatch;
use super::schema::{provide_missing_schema, JsonColumns};
use super::snapshot::{self, Emission, SnapshotSettings, Snapshotter};
use super::start::explain_unavailable;
use super::stream::{open_stream, stream_error};
use super::SourceError;
use crate::config::{ColumnNames, SourceConfig, WalConfig};
use crate::event::{Change, SourceTransaction};
use crate::flavor::Flavor;
use crate::gtid::ResumePoint;
use crate::redact::redact_url;
use crate::shutdown::stopped;
use crate::telemetry::{IngestState, IngestStatus, LastError, RefusedServer, SourceServer};

/// The event a source sends when it has had nothing newer to send for a heartbeat period.
const HEARTBEAT_EVENT: u8 = 0x1b;

/// What the ingester reads, where it writes and where it publishes: the context of the stream
/// loop, shared by every reconnection.
pub struct Ingester {
    pub source: SourceConfig,
    pub wal_config: WalConfig,
    /// The most a WAL record of one transaction holds (one sink batch).
    pub fragments: FragmentLimits,
    pub wal: Wal<SourceTransaction>,
    /// Told the WAL's last sequence number after every flushed append.
    pub appended: watch::Sender<u64>,
    /// The ingester's state, published for `/status` and `/readyz`.
    pub state: watch::Sender<IngestStatus>,
}

/// Runs the ingester until `shutdown` turns true or a definite error occurs.
///
/// `first_conn` is the connection that checked the source at start-up, if still open.
pub async fn run(
    ingester: Ingester,
    first_conn: Option<(Conn, Flavor)>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SourceError> {
    let result = ingester.ingest(first_conn, &mut shutdown).await;
    ingester.state.send_modify(|s| {
        s.state = IngestState::Stopped;
        if let Err(e) = &result {
            s.last_error = Some(LastError::now(e));
        }
    });
    result
}

/// Publishes a transient failure: the state turns `reconnecting` and the error is kept as the last
/// one.
fn set_reconnecting(state: &watch::Sender<IngestStatus>, error: &SourceError, retry_in: Duration) {
    let last = LastError::now(error);
    state.send_modify(|s| {
        s.state = IngestState::Reconnecting {
            error: last.message.clone(),
            retry_in_ms: retry_in.as_millis() as u64,
        };
        s.last_error = Some(last);
    });
}

impl Ingester {
    async fn ingest(
        &self,
        first_conn: Option<(Conn, Flavor)>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), SourceError> {
        let Self { wal, state, .. } = self;
        let mut backoff = reconnect_backoff();
        let mut followed = Followed::default();
        if let Some((conn, _)) = first_conn {
            // The connection that checked the source at start-up is not the stream's: the stream
            // runs through a relay that measures its liveness byte by byte (relay.rs).
            let _ = conn.disconnect().await;
        }
        loop {
            let connected = match self.connect_following(&mut followed).await {
                Ok(c) => {
                    // The source answers again: the next outage starts its backoff afresh.
                    backoff = reconnect_backoff();
                    c
                }
                Err(e @ (SourceError::Unreachable { .. } | SourceError::Transient(_))) => {
                    let reconnect_delay = next_delay(&mut backoff);
                    warn!(target: "sdl::source", error = %e, retry_in = ?reconnect_delay, "source not reachable, retrying");
                    set_reconnecting(state, &e, reconnect_delay);
                    if wait_or_shutdown(shutdown, reconnect_delay).await {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let saved = wal.ingest_position()?.ok_or_else(|| SourceError::Query {
                query: "WAL ingest position".into(),
                detail:
                    "the WAL has no ingest position; it must be seeded before the ingester runs"
                        .into(),
            })?;
            let flavor = connected.flavor;
            let server = connected.server.clone();
            let resume = ResumePoint::parse(flavor, &String::from_utf8_lossy(&saved))?;
            info!(target: "sdl::source", position = %resume, "following the binlog");
            set_state(
                state,
                IngestState::Following {
                    position: resume.to_string(),
                },
            );
            match self.follow(connected, resume, shutdown).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() => {
                    let reconnect_delay = next_delay(&mut backoff);
                    warn!(target: "sdl::source", error = %e, retry_in = ?reconnect_delay, "binlog stream lost, reconnecting from the WAL position");
                    let m = crate::telemetry::metrics();
                    m.source_reconnects.inc();
                    m.stage_restarted(crate::telemetry::Stage::Ingester);
                    m.source_lost();
                    set_reconnecting(state, &e, reconnect_delay);
                    if wait_or_shutdown(shutdown, reconnect_delay).await {
                        return Ok(());
                    }
                }
                Err(e) => return Err(explain_unavailable(&server, flavor, e).await),
            }
        }
    }

    /// Reads the binlog from `resume` and appends what it reads to the WAL until shutdown or an
    /// error; whatever happens, complete transactions already read are saved before it returns.
    async fn follow(
        &self,
        connected: Connected,
        resume: ResumePoint,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), SourceError> {
        // Every query of this connection's life goes to the server it streams from.
        let Connected {
            conn,
            flavor,
            relay,
            server,
        } = connected;
        let cfg = &server;
        let Self {
            wal_config: wal_cfg,
            fragments,
            wal,
            appended,
            ..
        } = self;
        let mut stream = open_stream(conn, flavor, cfg, &resume.position).await?;
        // Liveness: the source sends a heartbeat after each heartbeat interval without events,
        // but none inside an event, which may take long to arrive over a slow link. So the
        // connection is presumed dead after three intervals of *silence*: no byte from the source
        // (as the relay sees them) since sdl started waiting for the next event. Without a relay
        // (a socket URL), whole events are timed.
        let dead_after = cfg.heartbeat_interval * 3;
        let mut waiting_since = Instant::now();
        let mut still_waiting = false;
        let mut assembler =
            TransactionAssembler::new(resume.position.clone()).with_fragments(*fragments);
        if let Some(partial) = resume.partial.clone() {
            info!(target: "sdl::source",
                gtid = %partial.gtid,
                saved_changes = partial.saved_changes,
                "resuming inside a large transaction: its changes the WAL already holds are read again and dropped"
            );
            assembler.resume_inside(partial);
        }
        // A second connection for information_schema lookups (source.column_names), opened on
        // demand.
        let mut schema_conn: Option<Conn> = None;
        // MariaDB JSON columns per table (docs/change-document.md, "JSON (MariaDB)").
        let mut json_columns = JsonColumns::default();
        let mut group = PendingGroup::default();
        let mut history = HistoryWatch::new(cfg.heartbeat_interval);
        // The snapshot stage, from the plan saved with the position (a chunk not saved is read
        // again). Its chunks are placed only at transaction boundaries: not inside a large
        // transaction whose first fragments are already appended.
        let mut snapshot = Snapshotter::new(
            SnapshotSettings::new(cfg, wal_cfg.dir.clone(), *fragments),
            cfg.clone(),
            flavor,
            resume.snapshot.clone().unwrap_or_default(),
            self.state.clone(),
        );
        let mut at_boundary = resume.partial.is_none();
        let result = loop {
            if !still_waiting {
                waiting_since = Instant::now();
            }
            still_waiting = false;
            let silent_since = relay
                .as_ref()
                .map_or(waiting_since, |r| r.last_byte().max(waiting_since));
            let deadline = group.deadline();
            let next = tokio::select! {
                biased;
                _ = stopped(shutdown) => break Ok(()),
                _ = sleep_until_opt(deadline) => {
                    match self.commit_group(&mut group, shutdown).await {
                        Ok(false) => {}
                        Ok(true) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(silent_since + dead_after) => {
                    // Bytes may have arrived since: an event still arriving is not silence. The
                    // stream's read is cancel-safe (mysql_async keeps a partly read packet in the
                    // stream), so waiting again loses nothing.
                    let silent_since = relay
                        .as_ref()
                        .map_or(waiting_since, |r| r.last_byte().max(waiting_since));
                    if silent_since.elapsed() < dead_after {
                        still_waiting = true;
                        continue;
                    }
                    break Err(SourceError::Transient(format!(
                        "nothing from the source for {dead_after:?} (3 x source.heartbeat_interval): the connection is presumed dead"
                    )));
                }
                _ = sleep_until_opt(snapshot.next_wakeup()) => {
                    let emission = snapshot.wake(assembler.position(), at_boundary).await;
                    if let Some(end) = self.write_snapshot(emission, &mut group, shutdown).await {
                        break end;
                    }
                    // Not a byte from the stream.
                    still_waiting = true;
                    continue;
                }
                read = snapshot.read_finished() => {
                    let emission = read.map(|()| snapshot.place_chunk_at(assembler.position(), at_boundary));
                    if let Some(end) = self.write_snapshot(emission, &mut group, shutdown).await {
                        break end;
                    }
                    still_waiting = true;
                    continue;
                }
                _ = tokio::time::sleep_until(history.next_check()) => {
                    let checked = tokio::select! {
                        biased;
                        _ = stopped(shutdown) => break Ok(()),
                        checked = history.check(cfg, flavor, assembler.position(), &mut schema_conn) => checked,
                    };
                    if let Err(e) = checked {
                        break Err(e);
                    }
                    // Still waiting for the same event: the check is not a byte from the stream.
                    still_waiting = true;
                    continue;
                }
                next = stream.next() => next,
            };
            let event = match next {
                None => {
                    break Err(SourceError::Transient(
                        "the source closed the binlog stream".into(),
                    ))
                }
                Some(Err(e)) => break Err(stream_error(cfg.server_id, assembler.position(), e)),
                Some(Ok(event)) => {
                    let m = crate::telemetry::metrics();
                    m.binlog_events.inc();
                    let header = event.header();
                    let heartbeat = header.event_type_raw() == HEARTBEAT_EVENT;
                    m.source_event(header.timestamp(), heartbeat);
                    if heartbeat {
                        history.heartbeat();
                    }
                    event
                }
            };
            if cfg.column_names == ColumnNames::InformationSchema {
                if let Err(e) =
                    provide_missing_schema(cfg, &event, &mut assembler, &mut schema_conn).await
                {
                    break Err(e);
                }
            }
            match assembler.feed(&event) {
                Ok(Some(mut transaction)) => {
                    if flavor == Flavor::Mariadb {
                        if let Err(e) = json_columns
                            .apply(cfg, &mut schema_conn, &mut transaction)
                            .await
                        {
                            break Err(e);
                        }
                    }
                    count_read(&transaction);
                    snapshot.observe(&transaction);
                    snapshot.decorate(&mut transaction.position_after);
                    at_boundary = transaction.ends_transaction;
                    if transaction
                        .changes
                        .iter()
                        .any(|c| matches!(c, Change::Statement(_)))
                    {
                        // Any DDL may have changed any table: look the schemas up again.
                        assembler.forget_schemas();
                        json_columns.forget();
                        snapshot.forget_schema();
                    }
                    if group.add(transaction, wal_cfg) {
                        match self.commit_group(&mut group, shutdown).await {
                            Ok(false) => {}
                            Ok(true) => break Ok(()),
                            Err(e) => break Err(e),
                        }
                    }
                    let emission = Ok(snapshot.place_chunk_at(assembler.position(), at_boundary));
                    if let Some(end) = self.write_snapshot(emission, &mut group, shutdown).await {
                        break end;
                    }
                }
                Ok(None) => {}
                Err(e) => break Err(SourceError::Decode(e)),
            }
        };
        // Whatever happened, complete transactions already read are saved before returning; a
        // half-read transaction is dropped and read again from the saved position.
        let landed = finish_append(&mut group).await;
        let saved = if group.failed() {
            Ok(())
        } else {
            flush(wal, &mut group, appended).await
        };
        let last_landed = finish_append(&mut group).await;
        let _ = stream.close().await;
        result.and(landed).and(saved).and(last_landed)
    }

    /// Adds the records the snapshot stage produced to the group, after the transactions read.
    /// Requests it took are removed from `wal.dir` once the records holding them are saved.
    /// Returns how the stream loop ends, when it must: on shutdown, or on the stage's error.
    async fn write_snapshot(
        &self,
        emission: Result<Emission, SourceError>,
        group: &mut PendingGroup,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Result<(), SourceError>> {
        match emission {
            Ok(emission) => match self.append_snapshot(emission, group, shutdown).await {
                Ok(false) => None,
                Ok(true) => Some(Ok(())),
                Err(e) => Some(Err(e)),
            },
            Err(e) => Some(Err(e)),
        }
    }

    /// [`Ingester::write_snapshot`]'s appending; true when shutdown was requested.
    async fn append_snapshot(
        &self,
        emission: Emission,
        group: &mut PendingGroup,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, SourceError> {
        if emission.is_empty() {
            return Ok(false);
        }
        let Emission { records, taken } = emission;
        for record in records {
            if group.add(record, &self.wal_config) && self.commit_group(group, shutdown).await? {
                return Ok(true);
            }
        }
        if !taken.is_empty() {
            let stopping = self.commit_group(group, shutdown).await?;
            finish_append(group).await?;
            for id in taken {
                if let Err(e) = snapshot::requests::taken(&self.wal_config.dir, &id) {
                    warn!(target: "sdl::snapshot", error = %e, request = %id, "could not remove a snapshot request the WAL now holds; it is recognised and removed at the next look");
                }
            }
            return Ok(stopping);
        }
        Ok(false)
    }

    /// Starts the group commit of the transactions read so far, then waits while the WAL is full
    /// (backpressure). Returns true when shutdown was requested while waiting.
    async fn commit_group(
        &self,
        group: &mut PendingGroup,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, SourceError> {
        flush(&self.wal, group, &self.appended).await?;
        pause_while_wal_full(
            &self.wal,
            group,
            self.wal_config.max_bytes,
            &self.state,
            shutdown,
        )
        .await
    }
}

/// Pauses between reconnection attempts: from 100 ms, doubling, with jitter, up to 30 s, for as
/// long as the source stays away (`backon`, as the forwarder's circuit breaker).
fn reconnect_backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

fn next_delay(backoff: &mut backon::ExponentialBackoff) -> Duration {
    // Built without a limit on attempts, the iterator never ends.
    backoff.next().unwrap_or(Duration::from_secs(30))
}

/// Returns true when shutdown was requested during the wait.
async fn wait_or_shutdown(shutdown: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => *shutdown.borrow(),
        _ = stopped(shutdown) => true,
    }
}

/// Publishes a transaction (or a fragment of one) read from the binlog: its rows, and the
/// transaction when this is its end.
fn count_read(transaction: &SourceTransaction) {
    let m = crate::telemetry::metrics();
    if transaction.ends_transaction {
        m.binlog_transactions.inc();
    }
    m.binlog_rows.inc_by(
        transaction
            .changes
            .iter()
            .filter(|c| matches!(c, Change::Row(_)))
            .count() as u64,
    );
}

/// Choosing the server to follow (`super::failover`): connect, then log, count, record and
/// publish the choice or the refusals.
impl Ingester {
    /// Connects the binlog stream to the server to follow: the one server of `source.url`, or
    /// the first of several that is a safe continuation of the WAL's position.
    pub(super) async fn connect_following(
        &self,
        followed: &mut Followed,
    ) -> Result<Connected, SourceError> {
        let cfg = &self.source;
        if cfg.server_count() <= 1 {
            let (conn, flavor, relay) = connect_for_stream(cfg).await?;
            if followed.index.is_none() {
                followed.index = Some(0);
                self.state.send_modify(|s| {
                    s.source_server = Some(SourceServer {
                        url: redact_url(&cfg.url),
                        index: 0,
                    })
                });
            }
            return Ok(Connected {
                conn,
                flavor,
                relay,
                server: cfg.clone(),
            });
        }
        let relayed = self
            .wal
            .ingest_position()?
            .map(|p| String::from_utf8_lossy(&p).into_owned());
        let chosen = choose(cfg, relayed.as_deref(), |server| async move {
            connect_for_stream(&server).await
        })
        .await;
        match chosen {
            Ok(chosen) => {
                self.note_followed(followed, &chosen, relayed.as_deref().unwrap_or_default());
                Ok(Connected {
                    server: cfg.for_server(chosen.index),
                    conn: chosen.conn,
                    flavor: chosen.flavor,
                    relay: chosen.extra,
                })
            }
            Err(refusals) => {
                self.publish_refusals(&refusals);
                Err(no_server_error(cfg, relayed.as_deref(), refusals))
            }
        }
    }

    fn publish_refusals(&self, refusals: &[(usize, Refusal)]) {
        let cfg = &self.source;
        let m = crate::telemetry::metrics();
        let refused: Vec<RefusedServer> = refusals
            .iter()
            .map(|(index, refusal)| {
                let url = redact_url(&cfg.for_server(*index).url);
                m.source_server_refusals.inc();
                if matches!(refusal, Refusal::Diverged { .. }) {
                    // A lossy failover needs an operator: it will not heal by waiting.
                    error!(target: "sdl::source",
                        server = %url,
                        index = *index,
                        reason = refusal.reason(),
                        "source server not followed: {}", refusal.detail()
                    );
                } else {
                    warn!(target: "sdl::source",
                        server = %url,
                        index = *index,
                        reason = refusal.reason(),
                        "source server not followed: {}", refusal.detail()
                    );
                }
                RefusedServer {
                    url,
                    index: *index,
                    reason: refusal.reason(),
                    detail: crate::messages::tidy(&crate::redact::redact_error(&refusal.detail())),
                }
            })
            .collect();
        self.state.send_modify(|s| s.refused_servers = refused);
    }

    /// Logs, counts, records and publishes the server now followed, when it is another one.
    fn note_followed<T>(&self, followed: &mut Followed, chosen: &Chosen<T>, position: &str) {
        let cfg = &self.source;
        let url = redact_url(&cfg.for_server(chosen.index).url);
        if followed.index != Some(chosen.index) {
            // Starting on a server other than the first is a failover too: the primary was not
            // usable.
            if followed.index.is_some() || chosen.index > 0 {
                let from = followed.index.unwrap_or(0);
                warn!(target: "sdl::source",
                    from = %redact_url(&cfg.for_server(from).url),
                    from_index = from,
                    to = %url,
                    to_index = chosen.index,
                    position = %position,
                    "source failover: following another server of source.url, which holds every transaction sdl relayed"
                );
                crate::telemetry::metrics().source_failovers.inc();
                followed.failovers += 1;
            }
            followed.index = Some(chosen.index);
        }
        let record = record::FollowedServer {
            url: url.clone(),
            identity: chosen.identity.clone(),
            since: position.to_string(),
        };
        let recorded = record::load(&self.wal_config.dir);
        if recorded.as_ref().map(|r| &r.identity) != Some(&record.identity) {
            if let Err(e) = record::save(&self.wal_config.dir, &record) {
                warn!(target: "sdl::source", error = %e, dir = %self.wal_config.dir.display(), "could not record the followed server in wal.dir; after a restart the start-up check may look its binlog landmarks up on the wrong server");
            }
        }
        let failovers = followed.failovers;
        self.state.send_modify(|s| {
            s.source_server = Some(SourceServer {
                url,
                index: chosen.index,
            });
            s.source_failovers = failovers;
            s.refused_servers.clear();
        });
    }
}
