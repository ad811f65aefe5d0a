//! Raw access for tests that damage stored bytes on purpose (hidden from the docs; not for sdl's
//! own use: nothing here checks a frame).

use crate::error::Result;
use crate::handle::Wal;
use crate::layout::{group_key, record_key};
use crate::record::Record;

impl<R: Record> Wal<R> {
    /// Raw access for tests that damage stored bytes on purpose.
    #[doc(hidden)]
    pub fn raw_frame(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.raw(&record_key(seq))?.map(|v| v.to_vec()))
    }

    /// Raw access for tests that damage stored metadata on purpose (`key` as in the module
    /// header, e.g. `b"m/acked"`, or [`Wal::group_key_bytes`]).
    #[doc(hidden)]
    pub fn raw_value(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.raw(key)?.map(|v| v.to_vec()))
    }

    /// Raw access for tests that damage stored metadata on purpose; `None` removes the key.
    #[doc(hidden)]
    pub fn overwrite_raw_value(&self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        match value {
            Some(value) => self.tree.insert(key, value).map(drop),
            None => self.tree.remove(key).map(drop),
        }
        .map_err(self.storage("overwrite"))?;
        self.tree.flush().map_err(self.storage("flush"))?;
        Ok(())
    }

    /// The key of the group entry ending at `last_seq`, for the test hooks above.
    #[doc(hidden)]
    pub fn group_key_bytes(last_seq: u64) -> Vec<u8> {
        group_key(last_seq).to_vec()
    }

    /// Raw access for tests that damage stored bytes on purpose.
    #[doc(hidden)]
    pub fn overwrite_raw_frame(&self, seq: u64, frame: &[u8]) -> Result<()> {
        self.tree
            .insert(record_key(seq), frame)
            .map_err(self.storage("overwrite"))?;
        self.tree.flush().map_err(self.storage("flush"))?;
        Ok(())
    }
}
