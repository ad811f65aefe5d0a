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
    /// With several servers in `source.url`: the one `conn` is connected to, its index in the
    /// list and identity (`server_id N` / `server_uuid U`); `None` with one server.
    pub chosen_server: Option<(usize, String)>,
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
        let error = anyhow::anyhow!(
            "preflight check `{}` failed: {}.{fix} (`sdl check --config ...` lists every check)",
            failed.name,
            failed.detail
        );
        // A table the initial snapshot cannot read is the configuration's to change (exit 2).
        if failed.name == super::preflight_snapshot::NAME {
            return Err(RunError::new(crate::ExitCode::Config, error));
        }
        return Err(RunError::failure(error));
    }
    Ok(())
}

/// Connects to the source (its settings checked) and to MongoDB (transactions checked, indexes
/// ensured). MongoDB may be away when the WAL has a position.
/// `sink_down_tolerated`: the WAL has a position and no lease is held (a leader needs MongoDB
/// now: it just answered, and the stale-WAL check needs it).
pub(super) async fn connect(
    config: &Config,
    wal_position: Option<&str>,
    sink_down_tolerated: bool,
) -> Result<Connections, RunError> {
    let (conn, flavor, chosen_server, sink) = if config.source.server_count() > 1 {
        // A new WAL starts at MongoDB's offset when it holds one (`super::start_position`): the
        // server to follow must hold that, so MongoDB is asked first.
        let sink = match wal_position {
            Some(_) => None,
            None => Some(connect_sink(config, sink_down_tolerated).await?),
        };
        let offset = match sink.as_ref().and_then(Option::as_ref) {
            Some(sink) => sink.offset().await?.map(|offset| offset.gtid_position),
            None => None,
        };
        let relayed = wal_position
            .map(str::to_string)
            .or(offset.filter(|position| !position.is_empty()));
        let (conn, flavor, index, identity) = connect_listed(config, relayed.as_deref()).await?;
        (conn, flavor, Some((index, identity)), sink)
    } else {
        let (conn, flavor) = source::connect(&config.source).await?;
        (conn, flavor, None, None)
    };
    info!(target: "sdl::service",
        flavor = %flavor.name(),
        "source connected and configured for row-based CDC"
    );
    let sink = match sink {
        Some(sink) => sink,
        None => connect_sink(config, sink_down_tolerated).await?,
    };
    Ok(Connections {
        conn,
        flavor,
        sink,
        chosen_server,
        lease: None,
    })
}

/// Connects to MongoDB; `None` when it is away and that is tolerated (`sink_down_tolerated`).
async fn connect_sink(
    config: &Config,
    sink_down_tolerated: bool,
) -> Result<Option<MongoSink>, RunError> {
    match MongoSink::connect(&config.sink, &config.source.name).await {
        Ok(sink) => {
            info!(target: "sdl::service",
                url = %sink.url(),
                database = %config.sink.database,
                transactions = sink.uses_transactions(),
                mode = %crate::messages::transactions_text(config.sink.transactions),
                "sink connected"
            );
            Ok(Some(sink))
        }
        Err(e) if e.is_transient() && sink_down_tolerated => {
            warn!(target: "sdl::service", error = %e, "MongoDB is not reachable: following the binlog into the WAL meanwhile; the forwarder keeps trying");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Several servers in `source.url`: the first that is a safe continuation of the WAL's position
/// (`crate::source::failover`). While none is, and not every server refuses for good, start-up
/// waits and retries (1 s doubling to 30 s), saying why each server is refused; a signal ends
/// the wait (start-up's signal handling).
async fn connect_listed(
    config: &Config,
    wal_position: Option<&str>,
) -> Result<(mysql_async::Conn, Flavor, usize, String), RunError> {
    use source::failover::{choose, no_server_error};
    let cfg = &config.source;
    let mut delay = std::time::Duration::from_secs(1);
    loop {
        let chosen = choose(cfg, wal_position, |server| async move {
            source::connect(&server)
                .await
                .map(|(conn, flavor)| (conn, flavor, ()))
        })
        .await;
        let refusals = match chosen {
            Ok(chosen) => {
                info!(target: "sdl::service",
                    server = %crate::redact::redact_url(&cfg.for_server(chosen.index).url),
                    index = chosen.index,
                    identity = %chosen.identity,
                    "source server chosen from source.url: it holds every transaction sdl relayed"
                );
                return Ok((chosen.conn, chosen.flavor, chosen.index, chosen.identity));
            }
            Err(refusals) => refusals,
        };
        let e = no_server_error(cfg, wal_position, refusals);
        if !e.is_transient() {
            return Err(e.into());
        }
        warn!(target: "sdl::service", error = %e, retry_in = ?delay, "no server of source.url can be followed yet; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(30));
    }
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
