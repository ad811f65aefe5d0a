//! sdl's local write-ahead log: the durable buffer between the binlog ingester and the forwarder.
//!
//! # Guarantees
//! - **Durable appends.** [`Wal::append`] writes a group of records *and* the ingest position that
//!   follows them in one atomic sled batch, then flushes (fsync) before it returns. After a crash the
//!   WAL holds either the whole group with its position, or neither: the position never runs ahead of
//!   the records it covers.
//! - **Dense, ordered sequence numbers.** Records get consecutive `u64` sequence numbers starting at 1;
//!   a reader sees them in that order with no holes.
//! - **Checked reads.** Every record is framed with a format version and a CRC32 of its payload. A read
//!   that meets a damaged, truncated or future-format record returns an error naming its sequence
//!   number; it never hands out a record it could not verify.
//! - **Acknowledged records are the only ones ever removed.** The acknowledged cursor only moves
//!   forward; [`Wal::prune_acknowledged`] removes records at or below it and nothing else.
//!
//! # On-disk layout (one sled tree)
//! ```text
//! key "r" ++ seq (u64 big-endian)   -> frame
//! key "m/ingest_position"           -> opaque bytes chosen by the ingester (e.g. a GTID set)
//! key "m/acked"                     -> u64 big-endian, highest sequence the sink has committed
//! key "m/wal_id"                    -> 16 random bytes, fixed when the WAL is created
//!
//! frame = version: u16 LE | payload_len: u32 LE | crc32(payload): u32 LE | payload (bincode)
//! ```
//! Keeping records and cursors in one tree is what makes a group and its position a single atomic
//! batch (sled batches are atomic per tree).

mod frame;

pub use frame::{decode_frame, encode_frame, FrameError, FRAME_HEADER_LEN};

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A type that can be stored in the WAL. `FORMAT_VERSION` is written into every frame; bump it on
/// any change to the serialized shape so that an old binary refuses records it cannot read.
pub trait Record: Serialize + DeserializeOwned {
    const FORMAT_VERSION: u16;
}

const RECORD_PREFIX: u8 = b'r';
const KEY_INGEST_POSITION: &[u8] = b"m/ingest_position";
const KEY_ACKED: &[u8] = b"m/acked";
const KEY_WAL_ID: &[u8] = b"m/wal_id";

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("cannot open the WAL at {dir}: {source}. If another sdl process uses this directory, stop it first; otherwise check that the directory is writable")]
    Open { dir: PathBuf, source: sled::Error },
    #[error("WAL storage error during {operation} in {dir}: {source}")]
    Storage {
        operation: &'static str,
        dir: PathBuf,
        source: sled::Error,
    },
    #[error("WAL record {seq} is unreadable: {source}. The record is not forwarded; run `sdl wal verify` to list every damaged record")]
    Corrupt { seq: u64, source: FrameError },
    #[error("WAL record {seq} could not be encoded: {source}")]
    Encode {
        seq: u64,
        source: bincode::error::EncodeError,
    },
    #[error("WAL metadata key {key} is damaged ({len} bytes); the WAL directory {dir} was modified outside sdl")]
    BadMeta {
        key: &'static str,
        len: usize,
        dir: PathBuf,
    },
    #[error("cannot acknowledge sequence {requested}: the WAL's last sequence is {last}")]
    AckBeyondEnd { requested: u64, last: u64 },
}

pub type Result<T, E = WalError> = std::result::Result<T, E>;

/// The WAL handle. Cheap to clone; all clones share one sled database.
pub struct Wal<R: Record> {
    db: sled::Db,
    tree: sled::Tree,
    dir: PathBuf,
    id: [u8; 16],
    _record: PhantomData<fn() -> R>,
}

impl<R: Record> Clone for Wal<R> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            tree: self.tree.clone(),
            dir: self.dir.clone(),
            id: self.id,
            _record: PhantomData,
        }
    }
}

/// A record read back from the WAL with its sequence number.
#[derive(Debug)]
pub struct Stored<R> {
    pub seq: u64,
    pub record: R,
    /// Size of the frame on disk (header + payload).
    pub frame_len: usize,
}

impl<R: Record> Wal<R> {
    /// Opens (or creates) the WAL in `dir`. The directory is created with mode 0700.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        create_private_dir(&dir).map_err(|e| WalError::Open {
            dir: dir.clone(),
            source: sled::Error::Io(e),
        })?;
        let db = sled::Config::new()
            .path(&dir)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|source| WalError::Open {
                dir: dir.clone(),
                source,
            })?;
        let tree = db.open_tree("wal").map_err(|source| WalError::Open {
            dir: dir.clone(),
            source,
        })?;
        let mut wal = Self {
            db,
            tree,
            dir,
            id: [0; 16],
            _record: PhantomData,
        };
        wal.id = wal.load_or_create_id()?;
        Ok(wal)
    }

    fn storage(&self, operation: &'static str) -> impl FnOnce(sled::Error) -> WalError + '_ {
        move |source| WalError::Storage {
            operation,
            dir: self.dir.clone(),
            source,
        }
    }

    fn load_or_create_id(&self) -> Result<[u8; 16]> {
        if let Some(raw) = self.tree.get(KEY_WAL_ID).map_err(self.storage("read id"))? {
            return raw.as_ref().try_into().map_err(|_| WalError::BadMeta {
                key: "m/wal_id",
                len: raw.len(),
                dir: self.dir.clone(),
            });
        }
        let id = random_id();
        self.tree
            .insert(KEY_WAL_ID, &id[..])
            .map_err(self.storage("write id"))?;
        self.db.flush().map_err(self.storage("flush"))?;
        Ok(id)
    }

    /// A random identifier fixed when this WAL was created. The sink stores it beside the
    /// acknowledged sequence, so sequence numbers from two different WALs are never compared.
    pub fn id(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The ingest position saved with the last appended group, if any group was ever appended.
    pub fn ingest_position(&self) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree
            .get(KEY_INGEST_POSITION)
            .map_err(self.storage("read ingest position"))?
            .map(|v| v.to_vec()))
    }

    /// The highest sequence number the sink has acknowledged (0 when none).
    pub fn acked(&self) -> Result<u64> {
        self.read_u64_meta(KEY_ACKED, "m/acked")
    }

    fn read_u64_meta(&self, key: &[u8], name: &'static str) -> Result<u64> {
        match self.tree.get(key).map_err(self.storage("read cursor"))? {
            None => Ok(0),
            Some(raw) => {
                let bytes: [u8; 8] = raw.as_ref().try_into().map_err(|_| WalError::BadMeta {
                    key: name,
                    len: raw.len(),
                    dir: self.dir.clone(),
                })?;
                Ok(u64::from_be_bytes(bytes))
            }
        }
    }

    /// The last sequence number in the WAL (0 when no record was ever appended and none remains).
    pub fn last_seq(&self) -> Result<u64> {
        let last = self
            .tree
            .scan_prefix([RECORD_PREFIX])
            .next_back()
            .transpose()
            .map_err(self.storage("find last record"))?;
        match last {
            Some((key, _)) => Ok(seq_from_key(&key)),
            // All records pruned: the next sequence continues after the acknowledged cursor.
            None => self.acked(),
        }
    }

    /// The first sequence number still stored, if any.
    pub fn first_seq(&self) -> Result<Option<u64>> {
        let first = self
            .tree
            .scan_prefix([RECORD_PREFIX])
            .next()
            .transpose()
            .map_err(self.storage("find first record"))?;
        Ok(first.map(|(key, _)| seq_from_key(&key)))
    }

    /// Appends `records` with consecutive sequence numbers and saves `ingest_position` with them,
    /// atomically, then flushes to disk. Returns the sequence number of the last record appended.
    ///
    /// When this returns `Ok`, the records and the position survive a crash.
    pub fn append(&self, records: &[R], ingest_position: &[u8]) -> Result<u64> {
        let mut seq = self.last_seq()?;
        let mut batch = sled::Batch::default();
        for record in records {
            seq += 1;
            let frame = encode_frame(R::FORMAT_VERSION, record)
                .map_err(|source| WalError::Encode { seq, source })?;
            batch.insert(&record_key(seq)[..], frame);
        }
        batch.insert(KEY_INGEST_POSITION, ingest_position);
        self.tree
            .apply_batch(batch)
            .map_err(self.storage("append"))?;
        self.tree.flush().map_err(self.storage("flush"))?;
        Ok(seq)
    }

    /// Reads up to `max_records` records starting at `from` (inclusive), stopping early once
    /// `max_bytes` of frames have been collected (at least one record is returned when available).
    pub fn read_from(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored<R>>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let records = self.tree.range(record_key(from)..record_key(u64::MAX));
        for (expected, item) in (from..).zip(records) {
            let (key, value) = item.map_err(self.storage("read records"))?;
            let seq = seq_from_key(&key);
            if seq != expected {
                // A hole means something deleted records the sink never acknowledged.
                return Err(WalError::Corrupt {
                    seq: expected,
                    source: FrameError::Missing,
                });
            }
            if out.len() >= max_records || (!out.is_empty() && bytes + value.len() > max_bytes) {
                break;
            }
            let record = self.decode(seq, &value)?;
            bytes += value.len();
            out.push(Stored {
                seq,
                record,
                frame_len: value.len(),
            });
        }
        Ok(out)
    }

    /// Reads one record.
    pub fn get(&self, seq: u64) -> Result<Option<Stored<R>>> {
        let Some(value) = self
            .tree
            .get(record_key(seq))
            .map_err(self.storage("read record"))?
        else {
            return Ok(None);
        };
        Ok(Some(Stored {
            seq,
            record: self.decode(seq, &value)?,
            frame_len: value.len(),
        }))
    }

    fn decode(&self, seq: u64, frame: &[u8]) -> Result<R> {
        decode_frame(R::FORMAT_VERSION, frame).map_err(|source| WalError::Corrupt { seq, source })
    }

    /// Moves the acknowledged cursor forward to `seq` and flushes. Moving it backwards is a no-op:
    /// the cursor never retreats.
    pub fn acknowledge(&self, seq: u64) -> Result<()> {
        let last = self.last_seq()?;
        if seq > last {
            return Err(WalError::AckBeyondEnd {
                requested: seq,
                last,
            });
        }
        if seq <= self.acked()? {
            return Ok(());
        }
        self.tree
            .insert(KEY_ACKED, &seq.to_be_bytes())
            .map_err(self.storage("acknowledge"))?;
        self.tree.flush().map_err(self.storage("flush"))?;
        Ok(())
    }

    /// Removes acknowledged records with sequence numbers below `keep_from` (never past the
    /// acknowledged cursor). Returns how many were removed.
    pub fn prune_acknowledged(&self, keep_from: u64) -> Result<usize> {
        let limit = keep_from.min(self.acked()?.saturating_add(1));
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for item in self.tree.range(record_key(0)..record_key(limit)) {
            let (key, _) = item.map_err(self.storage("prune"))?;
            batch.remove(key);
            removed += 1;
        }
        self.tree
            .apply_batch(batch)
            .map_err(self.storage("prune"))?;
        self.tree.flush().map_err(self.storage("flush"))?;
        Ok(removed)
    }

    /// Bytes the database occupies on disk.
    pub fn disk_size(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(self.storage("size"))
    }
}

fn record_key(seq: u64) -> [u8; 9] {
    let mut key = [RECORD_PREFIX; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn seq_from_key(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&key[1..9]);
    u64::from_be_bytes(bytes)
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

fn random_id() -> [u8; 16] {
    // The id only has to differ between WALs; time and pid mixed through a hash suffice and avoid
    // a dependency for it.
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut id = [0u8; 16];
    for (i, chunk) in id.chunks_mut(8).enumerate() {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.write_u32(std::process::id());
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    id
}

#[cfg(test)]
mod tests;
