//! Start-up phases: the preflight checks, then the connections to the source and to MongoDB, then
//! the WAL's acknowledged cursor caught up to MongoDB's offset.
//!
//! Guarantees:
//! - The same checks as `sdl check` run first: a failed check refuses the start and names the fix;
//!   warnings are logged.
//! - A WAL that already has a position can be filled from the binlog while MongoDB is away
//!   ([`SinkDown::Tolerated`]: the forwarder keeps trying); a new WAL needs MongoDB's offset to
//!   know where to start, so MongoDB must answer.
//! - The acknowledged cursor is caught up before any WAL repair (`super::repair`): a crash between
//!   a MongoDB commit and the WAL's flush leaves it behind MongoDB's offset, and records in that
//!   gap are MongoDB's already, damaged or not.

use sdl_wal::Wal;
use tracing::{info, warn};

use super::preflight::{self, SinkDown, Verdict};
use super::RunError;
use crate::config::Config;
use crate::event::SourceTransaction;
use crate::flavor::Flavor;
use crate::forward;
use crate::sink::MongoSink;
use crate::source;

/// The connections start-up made, handed to the stages.
pub(super) struct Connections {
    /// The source connection the ingester starts on (the identity check uses it first).
    pub conn: mysql_async::Conn,
    pub flavor: Flavor,
    /// `None` when MongoDB did not answer and the WAL has a position (the forwarder connects
    /// once it answers).
    pub sink: Option<MongoSink>,
    /// The lease this instance holds (`[lease]`), set once the connections are made.
    pub lease: Option<super::lease::Held>,
}

/// The same checks as `sdl check`: refuses to start on a failure, logs the warnings.
pub(super) async fn run_preflight(config: &Config, wal_has_position: bool) -> Result<(), RunError> {
    let sink_down = if wal_has_position {
        SinkDown::Tolerated
    } else {
        SinkDown::Fails
    };
    let checks = preflight::run_checks_with(config, sink_down).await;
    for check in checks.iter().filter(|c| c.verdict == Verdict::Warn) {
        warn!(target: "sdl::service", check = %check.name, fix = %check.fix, "preflight: {}", check.detail);
    }
    if let Some(failed) = checks.iter().find(|c| c.verdict == Verdict::Fail) {
        let fix = if failed.fix.is_empty() {
            String::new()
        } else {
            format!(" Fix: {}", failed.fix)
        };
        return Err(RunError::failure(anyhow::anyhow!(
            "preflight check `{}` failed: {}.{fix} (`sdl check --config ...` lists every check)",
            failed.name,
            failed.detail
        )));
    }
    Ok(())
}

/// Connects to the source (its settings checked) and to MongoDB (transactions checked, indexes
/// ensured). MongoDB may be away when the WAL has a position.
pub(super) async fn connect(
    config: &Config,
    wal_has_position: bool,
) -> Result<Connections, RunError> {
    let (conn, flavor) = source::connect(&config.source).await?;
    info!(target: "sdl::service",
        flavor = %flavor.name(),
        "source connected and configured for row-based CDC"
    );
    let sink = match MongoSink::connect(&config.sink, &config.source.name).await {
        Ok(sink) => {
            info!(target: "sdl::service",
                url = %sink.url(),
                database = %config.sink.database,
                transactions = sink.uses_transactions(),
                mode = %crate::messages::transactions_text(config.sink.transactions),
                "sink connected"
            );
            Some(sink)
        }
        Err(e) if e.is_transient() && wal_has_position => {
            warn!(target: "sdl::service", error = %e, "MongoDB is not reachable: following the binlog into the WAL meanwhile; the forwarder keeps trying");
            None
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Connections {
        conn,
        flavor,
        sink,
        lease: None,
    })
}

/// Catches the WAL's acknowledged cursor up to MongoDB's offset. Returns whether it did: not when
/// MongoDB is away or its offset could not be read (the forwarder keeps trying).
pub(super) async fn reconcile_acknowledged(
    sink: Option<&MongoSink>,
    wal: &Wal<SourceTransaction>,
) -> Result<bool, RunError> {
    let Some(sink) = sink else {
        return Ok(false);
    };
    match forward::reconcile_with_sink(sink, wal).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_transient() => {
            warn!(target: "sdl::service", error = %e, "MongoDB's offset could not be read at start-up; the forwarder keeps trying");
            Ok(false)
        }
        Err(e) => Err(RunError::failure(anyhow::Error::from(e).context(
            "catching the WAL's acknowledged cursor up to MongoDB's offset at start-up",
        ))),
    }
}
