//! The source's history, watched while sdl is connected.
//!
//! # Guarantees
//! - Every `source.heartbeat_interval`, the ingester asks the server for its current position
//!   (MariaDB `gtid_binlog_pos`, MySQL `gtid_executed`, on the side connection) and compares it with
//!   the position after the last transaction it has read:
//!   - if the server's position no longer contains sdl's (its GTIDs went backwards: RESET MASTER,
//!     a re-seeded server), the ingester stops with [`SourceError::HistoryWentBack`], exit 4, as
//!     the start-up check refuses the same server;
//!   - (MariaDB) if the server's position is past sdl's at two checks in a row, sdl's position has not moved
//!     in between and the stream has sent heartbeats meanwhile (the server sends them only when it
//!     believes the replica has everything), the stream follows a binlog the server no longer
//!     writes: the ingester stops with [`SourceError::StreamBehindSource`] (exit 1; the next start's
//!     history check then resumes or refuses). Without this, a binlog replaced under the connection
//!     kept the stream alive on heartbeats while nothing new ever arrived: a silent stall.
//! - A check that cannot run (the side connection fails, or gives no answer within 3 intervals)
//!   is not evidence of anything: it is retried at the next interval, and the stream goes on.
//! - MySQL: only the first check. Its `gtid_executed` also holds GTIDs that never reach the
//!   binlog (`SET GLOBAL gtid_purged`, a replica without `log_replica_updates`), so a server
//!   "past" sdl proves nothing there.

use std::time::Duration;

use mysql_async::Conn;
use tokio::time::Instant;
use tracing::debug;

use super::connect::connect;
use super::start::resolve_start;
use super::SourceError;
use crate::config::{SourceConfig, StartFrom};
use crate::flavor::Flavor;
use crate::gtid::{not_contained, position_variable, Position};

/// The watch over one binlog stream: when the next check is due, and what the last one saw.
pub(super) struct HistoryWatch {
    interval: Duration,
    next_check: Instant,
    /// sdl's position at the last check where the server was already past it, and since when.
    behind_since: Option<(String, Instant)>,
    /// Heartbeats received since the last check.
    heartbeats: u64,
}

impl HistoryWatch {
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            interval,
            next_check: Instant::now() + interval,
            behind_since: None,
            heartbeats: 0,
        }
    }

    pub(super) fn next_check(&self) -> Instant {
        self.next_check
    }

    pub(super) fn heartbeat(&mut self) {
        self.heartbeats += 1;
    }

    /// Compares the server's current position with `position` (sdl's, after the last transaction
    /// read); `schema_conn` is the side connection, opened on demand.
    pub(super) async fn check(
        &mut self,
        cfg: &SourceConfig,
        flavor: Flavor,
        position: &Position,
        schema_conn: &mut Option<Conn>,
    ) -> Result<(), SourceError> {
        self.next_check = Instant::now() + self.interval;
        let heartbeats = std::mem::take(&mut self.heartbeats);
        // Bounded: a side connection on a cut network must not hold the stream loop (whose own
        // liveness check then finds the stream dead).
        let asked = tokio::time::timeout(
            self.interval * 3,
            current_position(cfg, flavor, schema_conn),
        )
        .await
        .unwrap_or_else(|_| Err(SourceError::Transient("no answer".into())));
        let current = match asked {
            Ok(current) => current,
            Err(e) => {
                debug!(target: "sdl::source", error = %e, "source history check skipped");
                *schema_conn = None;
                return Ok(());
            }
        };
        if let Some(detail) = not_contained(&current, position) {
            return Err(SourceError::HistoryWentBack {
                position: position.to_string(),
                variable: position_variable(flavor),
                current: current.to_string(),
                detail,
            });
        }
        let ours = position.to_string();
        // MariaDB's `gtid_binlog_pos` holds only what is in its binlog. MySQL's `gtid_executed`
        // also holds GTIDs that never reach the binlog (`SET GLOBAL gtid_purged`, a replica
        // without `log_replica_updates`), so a MySQL server may be "past" sdl for good while the
        // stream is healthy: only a history that went back is evidence there.
        let server_is_past =
            flavor == Flavor::Mariadb && not_contained(position, &current).is_some();
        self.behind_since = match self.behind_since.take() {
            Some((at, since)) if server_is_past && at == ours => {
                if heartbeats > 0 {
                    return Err(SourceError::StreamBehindSource {
                        position: ours,
                        variable: position_variable(flavor),
                        current: current.to_string(),
                        waited: since.elapsed(),
                    });
                }
                Some((at, since))
            }
            _ if server_is_past => Some((ours, Instant::now())),
            _ => None,
        };
        Ok(())
    }
}

async fn current_position(
    cfg: &SourceConfig,
    flavor: Flavor,
    schema_conn: &mut Option<Conn>,
) -> Result<Position, SourceError> {
    if schema_conn.is_none() {
        *schema_conn = Some(connect(cfg).await?.0);
    }
    let conn = schema_conn.as_mut().expect("connected above");
    resolve_start(conn, flavor, &StartFrom::Current).await
}
