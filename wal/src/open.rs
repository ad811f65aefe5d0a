//! Opening a WAL: a private directory, sled with a bounded cache, a check that sled did not open a
//! damaged database as an empty one, then the metadata checks of [`crate::metadata`]. A new WAL
//! gets its format and a random id, flushed before the `initialized` marker is written.

use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use crate::error::{MetaRepair, Result, WalError};
use crate::handle::Wal;
use crate::record::Record;

/// sled's page cache (see [`Wal::open`]).
const CACHE_BYTES: u64 = 16 << 20;

impl<R: Record> Wal<R> {
    /// Opens (or creates) the WAL in `dir`. The directory is created with mode 0700.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        create_private_dir(&dir).map_err(|e| WalError::Open {
            dir: dir.clone(),
            source: sled::Error::Io(e),
        })?;
        // sled writes `conf` when it creates a database; sdl writes its format and id right after,
        // flushes them, and only then creates the `initialized` marker file. A directory with the
        // marker whose tree opens empty lost its data: sled (0.34) opens a truncated or garbled
        // `db` file as an empty database rather than refusing it. Without the marker (a process
        // killed during its very first open, or a WAL created before the marker existed, which
        // then holds data) an empty tree is a WAL that was never written: it starts anew.
        let marker = dir.join(INITIALIZED_MARKER);
        let held_a_database = dir.join("conf").exists() && marker.exists();
        let db = sled::Config::new()
            .path(&dir)
            .mode(sled::Mode::HighThroughput)
            // sled caches up to 1 GiB by default, which would make sdl's memory grow with the
            // WAL's depth; records are read once, in order, so a small cache costs little. sled
            // keeps somewhat more than this for pages it has read (with 1 M unacknowledged
            // records, a restart peaked at 154 MiB with 16 MiB here and 178-196 MiB with 32).
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|source| match source {
                sled::Error::Corruption { .. } => WalError::Damaged {
                    dir: dir.clone(),
                    detail: format!("sled refuses to open it ({source:?})"),
                },
                source => WalError::Open {
                    dir: dir.clone(),
                    source,
                },
            })?;
        let tree = db.open_tree("wal").map_err(|source| WalError::Open {
            dir: dir.clone(),
            source,
        })?;
        if held_a_database && tree.is_empty() {
            return Err(WalError::Damaged {
                dir,
                detail: "sled opened it empty although the directory held a WAL (its `conf` file is there): the `db` file is truncated, garbled or gone".into(),
            });
        }
        let mut wal = Self {
            db,
            tree,
            dir,
            id: [0; 16],
            accounting: Arc::default(),
            repairs: Arc::default(),
            _record: PhantomData,
        };
        wal.repairs = Arc::new(wal.load_metadata()?);
        if !marker.exists() {
            write_marker(&marker).map_err(|e| WalError::Open {
                dir: wal.dir.clone(),
                source: sled::Error::Io(e),
            })?;
        }
        Ok(wal)
    }

    /// Metadata values found damaged at open and rebuilt (or a format upgrade), for the log.
    pub fn metadata_repairs(&self) -> &[MetaRepair] {
        &self.repairs
    }
}

/// The file whose presence says that this directory's WAL was initialized (its format and id
/// flushed): see [`Wal::open`].
pub const INITIALIZED_MARKER: &str = "initialized";

/// Creates the marker durably: the file and its directory entry are both synced.
fn write_marker(marker: &Path) -> std::io::Result<()> {
    let file = std::fs::File::create(marker)?;
    file.sync_all()?;
    if let Some(dir) = marker.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
