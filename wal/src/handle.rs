//! The WAL handle: one sled database and tree, the WAL's id and the in-memory accounting, shared by
//! every clone. The operations live beside it by what they guarantee: `open` and `metadata`
//! (start-up checks and repairs), `append` and `read` (records), `cursors`, `retention`, `repair`,
//! `stats`.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{MetaRepair, Result, WalError};
use crate::groups::Accounting;
use crate::layout::{key_name, meta_payload};
use crate::record::Record;

/// The WAL handle. Cheap to clone; all clones share one sled database and one accounting.
pub struct Wal<R: Record> {
    pub(crate) db: sled::Db,
    pub(crate) tree: sled::Tree,
    pub(crate) dir: PathBuf,
    pub(crate) id: [u8; 16],
    pub(crate) accounting: Arc<Mutex<Accounting>>,
    pub(crate) repairs: Arc<Vec<MetaRepair>>,
    pub(crate) _record: PhantomData<fn() -> R>,
}

impl<R: Record> Clone for Wal<R> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            tree: self.tree.clone(),
            dir: self.dir.clone(),
            id: self.id,
            accounting: self.accounting.clone(),
            repairs: self.repairs.clone(),
            _record: PhantomData,
        }
    }
}

impl<R: Record> Wal<R> {
    pub(crate) fn storage(
        &self,
        operation: &'static str,
    ) -> impl FnOnce(sled::Error) -> WalError + '_ {
        move |source| WalError::Storage {
            operation,
            dir: self.dir.clone(),
            source,
        }
    }

    pub(crate) fn accounting(&self) -> MutexGuard<'_, Accounting> {
        // A panic while holding the lock cannot leave the mirror half-updated in a way that
        // matters: it is rebuilt from disk on the next open.
        self.accounting.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn damaged(
        &self,
        key: &[u8],
        problem: impl ToString,
        fix: &'static str,
    ) -> WalError {
        WalError::MetaDamaged {
            key: key_name(key),
            problem: problem.to_string(),
            dir: self.dir.clone(),
            fix,
        }
    }

    pub(crate) fn raw(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        self.tree.get(key).map_err(self.storage("read metadata"))
    }

    /// A metadata value, checked. Damage found after open (the WAL changed underneath a running
    /// sdl) is an error; the next start rebuilds or names it.
    pub(crate) fn read_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.raw(key)? {
            None => Ok(None),
            Some(raw) => meta_payload(&raw).map(|p| Some(p.to_vec())).map_err(|e| {
                self.damaged(key, e, "restart sdl: at start-up damaged metadata is rebuilt from the records or named with its fix")
            }),
        }
    }

    /// A random identifier fixed when this WAL was created. The sink stores it beside the
    /// acknowledged sequence, so sequence numbers from two different WALs are never compared.
    pub fn id(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
