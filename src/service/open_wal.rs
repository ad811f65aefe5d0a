//! Start-up phase: open the WAL (and take its lock) before anything else is read or connected.
//!
//! Guarantee: sdl never runs on a WAL directory other users can reach (`super::wal_dir`), and a
//! WAL it cannot open stops start-up with what to do (`messages::wal_open_error`). What the WAL
//! repaired in its own metadata at open is logged, one line per repair.

use sdl_wal::Wal;
use tracing::{info, warn};

use super::RunError;
use crate::config::Config;
use crate::event::SourceTransaction;

pub(super) async fn open_wal(config: &Config) -> Result<Wal<SourceTransaction>, RunError> {
    if let Some(warning) = super::wal_dir::make_private(&config.wal.dir)? {
        warn!(target: "sdl::service", "{warning}");
    }
    let wal_dir = config.wal.dir.clone();
    let wal: Wal<SourceTransaction> = tokio::task::spawn_blocking(move || Wal::open(wal_dir))
        .await
        .map_err(RunError::failure)?
        .map_err(|e| RunError::failure(anyhow::anyhow!(crate::messages::wal_open_error(&e))))?;
    info!(target: "sdl::service",
        dir = %wal.dir().display(),
        id = %wal.id(),
        wal_format = <SourceTransaction as sdl_wal::Record>::FORMAT_VERSION,
        wal_metadata_format = sdl_wal::FORMAT_VERSION,
        version = %crate::build_info::build_info().version,
        "WAL open"
    );
    for repair in wal.metadata_repairs() {
        warn!(target: "sdl::service", key = %repair.key, problem = %repair.problem, action = %repair.action, "WAL metadata repaired at open");
    }
    // Every WAL write is flushed when it is made, so nothing depends on sled's flush-on-drop; and
    // after a disk-full error that flush would block forever. Keep one handle alive to the end.
    std::mem::forget(wal.clone());
    Ok(wal)
}
