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
//! - **Checked metadata.** The cursors, positions, group index and WAL id are framed like records
//!   (WAL format version + CRC32). Damage is found when the WAL is opened and handled there:
//!   a value that can be rebuilt soundly is rebuilt from the records and rewritten (and reported by
//!   [`Wal::metadata_repairs`]); one that cannot stops the open with [`WalError::MetaDamaged`]
//!   naming the key and the fix. A damaged value is never used.
//! - **Only acknowledged records are ever pruned.** The acknowledged cursor only moves forward;
//!   [`Wal::prune`] removes whole append groups at or below it and nothing else.
//!   [`Wal::truncate_unacknowledged`] (repair) removes only records the sink has not acknowledged,
//!   and rewinds the ingest position to just before them so they are read again from the source.
//!
//! # On-disk layout (one sled tree)
//! ```text
//! key "r" ++ seq (u64 BE)        -> frame(Record::FORMAT_VERSION, bincode record)
//! key "g" ++ last_seq (u64 BE)   -> meta(append group: appended_at_ms u64 | first_seq u64 | bytes u64 (LE))
//! key "m/ingest_position"        -> meta(opaque bytes chosen by the ingester, e.g. a GTID set)
//! key "m/base_position"          -> meta(the ingest position just before the first stored record)
//! key "m/acked"                  -> meta(u64 BE, highest sequence the sink has committed)
//! key "m/wal_id"                 -> meta(16 random bytes, fixed when the WAL is created)
//! key "m/format"                 -> meta(FORMAT_VERSION: u16 LE)
//!
//! frame = version: u16 LE | payload_len: u32 LE | crc32(payload): u32 LE | payload
//! meta  = the same header with version = FORMAT_VERSION, payload = the raw value
//! ```
//! What damage to each metadata value leads to at open (a missing value where one must be counts
//! as damage):
//! - `m/format`: rewritten (only a release of format 2 or later writes the key at all).
//! - `g/<seq>`: rebuilt from the records it covers (sizes exact; append time = now, which only
//!   delays age-based pruning of that group); a stored record range no entry covers gets one.
//! - `m/acked` missing while records before the first stored one were pruned: as damaged.
//! - `m/acked`: rebuilt as the sequence before the first stored record (only acknowledged records
//!   are pruned, so that is a lower bound); a cursor behind MongoDB's offset is what a crash between
//!   a commit and its acknowledgement leaves, and sdl's forwarder catches it up at start. With no
//!   record stored the next sequence number cannot be known: [`WalError::MetaDamaged`].
//! - `m/ingest_position`: rebuilt from the last record's position (records carry it), or from
//!   `m/base_position` when no record is stored; else [`WalError::MetaDamaged`].
//! - `m/base_position`: rebuilt from the ingest position when no record is stored; else removed (it
//!   is only needed to repair the first stored record, and such a repair then stops naming it).
//! - `m/wal_id`: [`WalError::MetaDamaged`] (MongoDB's offset names the WAL by it; a guess could
//!   make records of two WALs compare). The fix is `sdl wal recover`.
//!
//! Format 1 (before metadata checksums) is upgraded at open: its metadata is checked for shape and
//! rewritten framed, with `m/format`, in one atomic batch.
//! Keeping records, groups and cursors in one tree is what makes an append a single atomic batch
//! (sled batches are atomic per tree). Group entries carry the append time and size used by
//! retention and backpressure; they are kept in memory too (one entry per group commit).

mod frame;

pub use frame::{
    decode_frame, decode_meta, encode_frame, encode_meta, FrameError, FRAME_HEADER_LEN,
};

/// The WAL's on-disk layout version, stored under `m/format` and in every metadata frame's header.
/// 1: metadata stored raw; 2: every metadata value framed with a CRC. Records carry their own
/// version ([`Record::FORMAT_VERSION`]). Bump it on any change to the layout or the metadata.
pub const FORMAT_VERSION: u16 = 2;

/// What to do about metadata that cannot be rebuilt from the WAL itself.
const RECOVER_FIX: &str = "stop sdl and run `sdl wal recover --config FILE`: it moves this WAL directory aside (kept, renamed) and starts a new WAL at MongoDB's offset, which needs the source to still have the binlogs from there (docs/operations.md, \"A WAL that cannot be opened\")";

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A type that can be stored in the WAL. `FORMAT_VERSION` is written into every frame; bump it on
/// any change to the serialized shape so that an old binary refuses records it cannot read.
pub trait Record: Serialize + DeserializeOwned {
    const FORMAT_VERSION: u16;

    /// The ingest position after this record (used to rewind when later records are damaged).
    fn position_after(&self) -> &[u8];

    /// How many items the record holds, for [`Wal::read_from`]'s limit (one, unless the record
    /// is a group of items a reader consumes in units, such as the changes of a transaction).
    fn items(&self) -> usize {
        1
    }
}

/// sled's page cache (see [`Wal::open`]).
const CACHE_BYTES: u64 = 16 << 20;

const RECORD_PREFIX: u8 = b'r';
const GROUP_PREFIX: u8 = b'g';
const KEY_INGEST_POSITION: &[u8] = b"m/ingest_position";
const KEY_BASE_POSITION: &[u8] = b"m/base_position";
const KEY_ACKED: &[u8] = b"m/acked";
const KEY_WAL_ID: &[u8] = b"m/wal_id";
const KEY_FORMAT: &[u8] = b"m/format";

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("cannot open the WAL at {dir}: {source}. If another sdl process uses this directory (sled holds an exclusive lock), stop it or use its admin endpoint; otherwise check that the directory is writable")]
    Open { dir: PathBuf, source: sled::Error },
    #[error("the WAL at {dir} cannot be used: {detail}; its files are damaged, and nothing in them is used: {RECOVER_FIX}")]
    Damaged { dir: PathBuf, detail: String },
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
    #[error("WAL metadata key {key} in {dir} is damaged ({problem}): {fix}")]
    MetaDamaged {
        key: String,
        problem: String,
        dir: PathBuf,
        fix: &'static str,
    },
    #[error("the WAL at {dir} is in WAL format {found}, and this sdl reads format {supported} (and upgrades format 1): run the sdl release that wrote it, or a newer one; or {RECOVER_FIX}")]
    UnknownFormat {
        found: u16,
        supported: u16,
        dir: PathBuf,
    },
    #[error("cannot acknowledge sequence {requested}: the WAL's last sequence is {last}")]
    AckBeyondEnd { requested: u64, last: u64 },
    #[error("cannot discard WAL records from {from}: records up to {acked} are acknowledged by the sink and must not be re-read")]
    TruncateAcknowledged { from: u64, acked: u64 },
    #[error("cannot find the ingest position before WAL record {seq}: {reason}")]
    NoPositionBefore { seq: u64, reason: String },
}

impl WalError {
    /// True when the open failed because another process holds the WAL's lock.
    pub fn is_locked(&self) -> bool {
        matches!(self, WalError::Open { source: sled::Error::Io(io), .. }
            if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("could not acquire lock"))
    }

    /// True when the error is the disk being full (ENOSPC): it may clear by itself.
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            WalError::Storage {
                source: sled::Error::Io(io),
                ..
            }
            | WalError::Open {
                source: sled::Error::Io(io),
                ..
            } => io,
            _ => return false,
        };
        io.raw_os_error() == Some(28) || io.kind() == std::io::ErrorKind::StorageFull
    }
}

pub type Result<T, E = WalError> = std::result::Result<T, E>;

/// One append group: the records written (and flushed) together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Group {
    appended_ms: u64,
    first_seq: u64,
    bytes: u64,
}

impl Group {
    fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[0..8].copy_from_slice(&self.appended_ms.to_le_bytes());
        out[8..16].copy_from_slice(&self.first_seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.bytes.to_le_bytes());
        out
    }

    fn decode(raw: &[u8]) -> Option<Self> {
        let raw: &[u8; 24] = raw.try_into().ok()?;
        let word = |i: usize| u64::from_le_bytes(raw[i..i + 8].try_into().expect("8 bytes"));
        Some(Self {
            appended_ms: word(0),
            first_seq: word(8),
            bytes: word(16),
        })
    }
}

/// A metadata value found damaged (or a format upgraded) at open, and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRepair {
    pub key: String,
    pub problem: String,
    pub action: String,
}

impl std::fmt::Display for MetaRepair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}; {}", self.key, self.problem, self.action)
    }
}

/// In-memory mirror of the group index, so size checks on every append cost nothing.
#[derive(Debug, Default)]
struct Accounting {
    /// key: last sequence of the group.
    groups: BTreeMap<u64, Group>,
    last_seq: u64,
    acked: u64,
    /// Bytes of the groups holding an unacknowledged record, kept current because the ingester
    /// asks for it on every transaction (summing the groups would cost O(WAL depth) each time).
    unacked: u64,
}

impl Accounting {
    fn recount_unacked(&mut self) {
        self.unacked = self
            .groups
            .range(self.acked + 1..)
            .map(|(_, g)| g.bytes)
            .sum();
    }

    fn add_group(&mut self, last_seq: u64, group: Group) {
        self.unacked += group.bytes;
        self.groups.insert(last_seq, group);
    }

    /// Moves the acknowledged cursor forward: the groups it now covers whole stop counting.
    fn advance_acked(&mut self, seq: u64) {
        if seq <= self.acked {
            return;
        }
        let covered: u64 = self
            .groups
            .range(self.acked + 1..=seq)
            .map(|(_, g)| g.bytes)
            .sum();
        self.unacked -= covered;
        self.acked = seq;
    }

    fn total_bytes(&self) -> u64 {
        self.groups.values().map(|g| g.bytes).sum()
    }

    /// Bytes of groups holding at least one unacknowledged record (a partly acknowledged group
    /// counts whole: backpressure errs on the safe side).
    fn unacked_bytes(&self) -> u64 {
        self.unacked
    }

    fn oldest_unacked_ms(&self) -> Option<u64> {
        self.groups
            .range(self.acked + 1..)
            .next()
            .map(|(_, g)| g.appended_ms)
    }
}

/// The WAL handle. Cheap to clone; all clones share one sled database and one accounting.
pub struct Wal<R: Record> {
    db: sled::Db,
    tree: sled::Tree,
    dir: PathBuf,
    id: [u8; 16],
    accounting: Arc<Mutex<Accounting>>,
    repairs: Arc<Vec<MetaRepair>>,
    _record: PhantomData<fn() -> R>,
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

/// A record read back from the WAL with its sequence number.
#[derive(Debug)]
pub struct Stored<R> {
    pub seq: u64,
    pub record: R,
    /// Size of the frame on disk (header + payload).
    pub frame_len: usize,
}

/// How long acknowledged records are kept. Unacknowledged records are never pruned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Prune acknowledged groups appended longer ago than this.
    pub max_age: Option<Duration>,
    /// Prune the oldest acknowledged groups while acknowledged data exceeds this many bytes.
    pub max_bytes: Option<u64>,
}

/// A summary of the WAL's state (for `sdl wal stats` and metrics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WalStats {
    pub wal_id: String,
    pub first_seq: Option<u64>,
    pub last_seq: u64,
    pub acked_seq: u64,
    pub records: u64,
    pub unacked_records: u64,
    pub bytes: u64,
    pub unacked_bytes: u64,
    /// Age of the oldest unacknowledged record, in milliseconds.
    pub oldest_unacked_age_ms: Option<u64>,
    pub ingest_position: Option<String>,
    pub disk_bytes: u64,
}

/// What [`Wal::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub records: u64,
    pub bytes: u64,
}

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

    fn storage(&self, operation: &'static str) -> impl FnOnce(sled::Error) -> WalError + '_ {
        move |source| WalError::Storage {
            operation,
            dir: self.dir.clone(),
            source,
        }
    }

    fn accounting(&self) -> MutexGuard<'_, Accounting> {
        // A panic while holding the lock cannot leave the mirror half-updated in a way that
        // matters: it is rebuilt from disk on the next open.
        self.accounting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn damaged(&self, key: &[u8], problem: impl ToString, fix: &'static str) -> WalError {
        WalError::MetaDamaged {
            key: key_name(key),
            problem: problem.to_string(),
            dir: self.dir.clone(),
            fix,
        }
    }

    fn raw(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        self.tree.get(key).map_err(self.storage("read metadata"))
    }

    /// Reads the metadata, upgrading format 1 and rebuilding what damage allows (see the module
    /// header), and fills the in-memory accounting. Rebuilt values are written in one batch.
    fn load_metadata(&mut self) -> Result<Vec<MetaRepair>> {
        let mut repairs = Vec::new();
        let mut batch = sled::Batch::default();
        match self.raw(KEY_FORMAT)? {
            None if self.tree.is_empty() => {
                // A new WAL: its format and id, together.
                let id = random_id();
                batch.insert(KEY_FORMAT, format_value());
                batch.insert(KEY_WAL_ID, encode_meta(FORMAT_VERSION, &id));
                self.tree
                    .apply_batch(batch)
                    .map_err(self.storage("create"))?;
                self.db.flush().map_err(self.storage("flush"))?;
                self.id = id;
                return Ok(repairs);
            }
            None => repairs.push(self.upgrade_from_format_1()?),
            Some(raw) => match stored_format(&raw) {
                Ok(FORMAT_VERSION) => {}
                Ok(found) => {
                    return Err(WalError::UnknownFormat {
                        found,
                        supported: FORMAT_VERSION,
                        dir: self.dir.clone(),
                    })
                }
                Err(problem) => {
                    batch.insert(KEY_FORMAT, format_value());
                    repairs.push(MetaRepair {
                        key: key_name(KEY_FORMAT),
                        problem,
                        action: format!("rewritten as format {FORMAT_VERSION} (only format {FORMAT_VERSION} or later writes this key)"),
                    });
                }
            },
        }

        self.id = match self
            .raw(KEY_WAL_ID)?
            .map(|raw| meta_payload(&raw).map(<[u8; 16]>::try_from))
        {
            Some(Ok(Ok(id))) => id,
            Some(Ok(Err(_))) => return Err(self.damaged(KEY_WAL_ID, "not 16 bytes", RECOVER_FIX)),
            Some(Err(e)) => return Err(self.damaged(KEY_WAL_ID, e, RECOVER_FIX)),
            None => return Err(self.damaged(KEY_WAL_ID, "missing", RECOVER_FIX)),
        };

        let first_record = self.first_seq()?;
        let last_record = self
            .tree
            .scan_prefix([RECORD_PREFIX])
            .next_back()
            .transpose()
            .map_err(self.storage("find last record"))?
            .map(|(key, _)| seq_from_key(&key));

        // The group index; a damaged entry is rebuilt from the records it covers, which start
        // after the previous group's last record (or at the first stored record).
        let mut groups = BTreeMap::new();
        let mut previous_last: Option<u64> = None;
        let entries: Vec<(u64, sled::IVec)> = self
            .tree
            .scan_prefix([GROUP_PREFIX])
            .map(|item| item.map(|(k, v)| (seq_from_key(&k), v)))
            .collect::<Result<_, _>>()
            .map_err(self.storage("read groups"))?;
        for (last, value) in entries {
            let decoded = meta_payload(&value)
                .map_err(|e| e.to_string())
                .and_then(|p| Group::decode(p).ok_or_else(|| format!("{} bytes, not 24", p.len())));
            match decoded {
                Ok(group) => {
                    groups.insert(last, group);
                }
                Err(problem) => {
                    let first = match previous_last {
                        Some(p) => p + 1,
                        None => first_record.unwrap_or(last + 1),
                    };
                    let bytes = self.record_bytes(first, last)?;
                    let key = group_key(last);
                    if first > last || bytes == 0 {
                        batch.remove(&key[..]);
                        repairs.push(MetaRepair {
                            key: key_name(&key),
                            problem,
                            action: "removed: no record it covered is stored".into(),
                        });
                    } else {
                        let group = Group {
                            appended_ms: now_ms(),
                            first_seq: first,
                            bytes,
                        };
                        batch.insert(&key[..], encode_meta(FORMAT_VERSION, &group.encode()));
                        groups.insert(last, group);
                        repairs.push(MetaRepair {
                            key: key_name(&key),
                            problem,
                            action: format!("rebuilt from records {first}..={last} ({bytes} bytes; append time set to now, which delays its age-based pruning)"),
                        });
                    }
                }
            }
            previous_last = Some(last);
        }
        // Groups are contiguous and cover every stored record: a range no entry covers lost its
        // entry (deleted, not just damaged). Only the gaps are scanned, so this costs nothing on
        // an intact WAL.
        if let (Some(first), Some(last_stored)) = (first_record, last_record) {
            let mut gaps = Vec::new();
            let mut expected = first;
            for (&last, group) in &groups {
                if group.first_seq > expected {
                    gaps.push((expected, group.first_seq - 1));
                }
                expected = expected.max(last + 1);
            }
            if last_stored >= expected {
                gaps.push((expected, last_stored));
            }
            for (gap_first, gap_last) in gaps {
                let bytes = self.record_bytes(gap_first, gap_last)?;
                if bytes == 0 {
                    continue;
                }
                let group = Group {
                    appended_ms: now_ms(),
                    first_seq: gap_first,
                    bytes,
                };
                let key = group_key(gap_last);
                batch.insert(&key[..], encode_meta(FORMAT_VERSION, &group.encode()));
                groups.insert(gap_last, group);
                repairs.push(MetaRepair {
                    key: key_name(&key),
                    problem: format!(
                        "missing: no group entry covers records {gap_first}..={gap_last}"
                    ),
                    action: format!(
                        "rebuilt from those records ({bytes} bytes; append time set to now)"
                    ),
                });
            }
        }

        let acked = match self
            .raw(KEY_ACKED)?
            .map(|raw| meta_payload(&raw).map(<[u8; 8]>::try_from))
        {
            // Never acknowledged, unless records were pruned (only acknowledged ones are).
            None if first_record.is_none_or(|first| first <= 1) => 0,
            Some(Ok(Ok(bytes))) => u64::from_be_bytes(bytes),
            decoded => {
                let problem = match decoded {
                    None => {
                        "missing while records before the first stored one were pruned".to_string()
                    }
                    Some(Ok(_)) => "not 8 bytes".to_string(),
                    Some(Err(e)) => e.to_string(),
                };
                let Some(first) = first_record else {
                    return Err(self.damaged(KEY_ACKED, format!("{problem}; no record is stored to rebuild it from, so the next sequence number is unknown"), RECOVER_FIX));
                };
                let rebuilt = first - 1;
                batch.insert(
                    KEY_ACKED,
                    encode_meta(FORMAT_VERSION, &rebuilt.to_be_bytes()),
                );
                repairs.push(MetaRepair {
                    key: key_name(KEY_ACKED),
                    problem,
                    action: format!("rebuilt as {rebuilt}, the sequence before the first stored record (only acknowledged records are pruned); sdl catches it up to MongoDB's offset before forwarding"),
                });
                rebuilt
            }
        };

        let last_record_position = |this: &Self| -> Result<Option<Vec<u8>>> {
            Ok(match last_record {
                Some(last) => match this.get(last) {
                    Ok(Some(stored)) => Some(stored.record.position_after().to_vec()),
                    _ => None,
                },
                None => None,
            })
        };
        let ingest = self.raw(KEY_INGEST_POSITION)?;
        let base = self.raw(KEY_BASE_POSITION)?;
        let ingest_problem = match &ingest {
            Some(raw) => meta_payload(raw).err().map(|e| e.to_string()),
            None if last_record.is_some() => Some("missing while records are stored".into()),
            None => None,
        };
        let base_decoded = base
            .as_ref()
            .map(|raw| meta_payload(raw).map(<[u8]>::to_vec));
        let mut ingest_rebuilt = None;
        if let Some(problem) = ingest_problem {
            let (position, from) = match (last_record, last_record_position(self)?, &base_decoded) {
                (Some(last), Some(position), _) => (position, format!("record {last}'s position")),
                (None, _, Some(Ok(base))) => (base.clone(), "m/base_position (no record is stored)".to_string()),
                (Some(last), None, _) => {
                    return Err(self.damaged(KEY_INGEST_POSITION, format!("{problem}; the last record, {last}, is unreadable too, so the position cannot be rebuilt"), RECOVER_FIX))
                }
                (None, _, _) => {
                    return Err(self.damaged(KEY_INGEST_POSITION, format!("{problem}; no record is stored and m/base_position is damaged too, so the position cannot be rebuilt"), RECOVER_FIX))
                }
            };
            batch.insert(KEY_INGEST_POSITION, encode_meta(FORMAT_VERSION, &position));
            repairs.push(MetaRepair {
                key: key_name(KEY_INGEST_POSITION),
                problem,
                action: format!(
                    "rebuilt from {from}: {}",
                    String::from_utf8_lossy(&position)
                ),
            });
            ingest_rebuilt = Some(position);
        }
        if let Some(Err(e)) = base_decoded {
            let ingest_now = match ingest_rebuilt {
                Some(p) => Some(p),
                None => ingest
                    .as_ref()
                    .and_then(|raw| meta_payload(raw).ok().map(<[u8]>::to_vec)),
            };
            match (first_record, ingest_now) {
                (None, Some(position)) => {
                    batch.insert(KEY_BASE_POSITION, encode_meta(FORMAT_VERSION, &position));
                    repairs.push(MetaRepair {
                        key: key_name(KEY_BASE_POSITION),
                        problem: e.to_string(),
                        action: "rebuilt from m/ingest_position (no record is stored)".into(),
                    });
                }
                _ => {
                    batch.remove(KEY_BASE_POSITION);
                    repairs.push(MetaRepair {
                        key: key_name(KEY_BASE_POSITION),
                        problem: e.to_string(),
                        action: "removed: it is needed only to repair the first stored record, and such a repair now stops naming it".into(),
                    });
                }
            }
        }

        if !repairs.is_empty() {
            self.tree
                .apply_batch(batch)
                .map_err(self.storage("rewrite metadata"))?;
            self.tree.flush().map_err(self.storage("flush"))?;
        }
        let mut accounting = self.accounting();
        accounting.groups = groups;
        accounting.acked = acked;
        accounting.recount_unacked();
        // With every record pruned, numbering continues after the acknowledged cursor.
        accounting.last_seq = last_record.unwrap_or(acked).max(acked);
        drop(accounting);
        Ok(repairs)
    }

    /// Sum of the frame sizes of the stored records in `first..=last`.
    fn record_bytes(&self, first: u64, last: u64) -> Result<u64> {
        if first > last {
            return Ok(0);
        }
        let mut bytes = 0;
        for item in self.tree.range(record_key(first)..=record_key(last)) {
            let (_, value) = item.map_err(self.storage("read records"))?;
            bytes += value.len() as u64;
        }
        Ok(bytes)
    }

    /// Format 1 stored metadata raw: check each value's shape as that format did, and rewrite all
    /// of them framed, with `m/format`, in one batch.
    fn upgrade_from_format_1(&self) -> Result<MetaRepair> {
        let old = |key: &[u8], problem: String| WalError::MetaDamaged {
            key: key_name(key),
            problem: format!("format 1 value: {problem}"),
            dir: self.dir.clone(),
            fix: RECOVER_FIX,
        };
        let mut batch = sled::Batch::default();
        match self.raw(KEY_WAL_ID)? {
            Some(id) if id.len() == 16 => {
                batch.insert(KEY_WAL_ID, encode_meta(FORMAT_VERSION, &id))
            }
            Some(id) => return Err(old(KEY_WAL_ID, format!("{} bytes, not 16", id.len()))),
            None => return Err(old(KEY_WAL_ID, "missing".into())),
        }
        if let Some(acked) = self.raw(KEY_ACKED)? {
            if acked.len() != 8 {
                return Err(old(KEY_ACKED, format!("{} bytes, not 8", acked.len())));
            }
            batch.insert(KEY_ACKED, encode_meta(FORMAT_VERSION, &acked));
        }
        for key in [KEY_INGEST_POSITION, KEY_BASE_POSITION] {
            if let Some(value) = self.raw(key)? {
                batch.insert(key, encode_meta(FORMAT_VERSION, &value));
            }
        }
        let mut groups = 0;
        for item in self.tree.scan_prefix([GROUP_PREFIX]) {
            let (key, value) = item.map_err(self.storage("read groups"))?;
            if value.len() != 24 {
                return Err(old(&key, format!("{} bytes, not 24", value.len())));
            }
            batch.insert(key, encode_meta(FORMAT_VERSION, &value));
            groups += 1;
        }
        batch.insert(KEY_FORMAT, format_value());
        self.tree
            .apply_batch(batch)
            .map_err(self.storage("upgrade"))?;
        self.tree.flush().map_err(self.storage("flush"))?;
        Ok(MetaRepair {
            key: key_name(KEY_FORMAT),
            problem: "WAL format 1 (metadata without checksums)".into(),
            action: format!("upgraded to format {FORMAT_VERSION}: the WAL id, cursors, positions and {groups} group entries rewritten with checksums in one batch"),
        })
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
        self.read_meta(KEY_INGEST_POSITION)
    }

    /// A metadata value, checked. Damage found after open (the WAL changed underneath a running
    /// sdl) is an error; the next start rebuilds or names it.
    fn read_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.raw(key)? {
            None => Ok(None),
            Some(raw) => meta_payload(&raw).map(|p| Some(p.to_vec())).map_err(|e| {
                self.damaged(key, e, "restart sdl: at start-up damaged metadata is rebuilt from the records or named with its fix")
            }),
        }
    }

    /// The highest sequence number the sink has acknowledged (0 when none).
    pub fn acked(&self) -> Result<u64> {
        Ok(self.accounting().acked)
    }

    /// The last sequence number in the WAL (0 when no record was ever appended).
    pub fn last_seq(&self) -> Result<u64> {
        Ok(self.accounting().last_seq)
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

    /// Bytes of frames not yet acknowledged (whole append groups; see [`WalStats`]).
    pub fn unacked_bytes(&self) -> u64 {
        self.accounting().unacked_bytes()
    }

    /// Appends `records` with consecutive sequence numbers and saves `ingest_position` with them,
    /// atomically, then flushes to disk. Returns the sequence number of the last record appended.
    ///
    /// When this returns `Ok`, the records and the position survive a crash. An empty `records`
    /// only moves the ingest position (used to save the starting position of a new WAL).
    pub fn append(&self, records: &[R], ingest_position: &[u8]) -> Result<u64> {
        let first_seq = self.accounting().last_seq + 1;
        let mut seq = first_seq - 1;
        let mut batch = sled::Batch::default();
        let mut bytes = 0u64;
        for record in records {
            seq += 1;
            let frame = encode_frame(R::FORMAT_VERSION, record)
                .map_err(|source| WalError::Encode { seq, source })?;
            bytes += frame.len() as u64;
            batch.insert(&record_key(seq)[..], frame);
        }
        let group = (!records.is_empty()).then(|| Group {
            appended_ms: now_ms(),
            first_seq,
            bytes,
        });
        if let Some(group) = group {
            batch.insert(&group_key(seq)[..], meta(&group.encode()));
        }
        if self.first_seq()?.is_none() {
            // Nothing stored: the position before the next record is the current one.
            let base = self
                .ingest_position()?
                .unwrap_or_else(|| ingest_position.to_vec());
            batch.insert(
                KEY_BASE_POSITION,
                meta(if records.is_empty() {
                    ingest_position
                } else {
                    &base
                }),
            );
        }
        batch.insert(KEY_INGEST_POSITION, meta(ingest_position));
        self.tree
            .apply_batch(batch)
            .map_err(self.storage("append"))?;
        self.tree.flush().map_err(self.storage("flush"))?;
        let mut accounting = self.accounting();
        accounting.last_seq = seq;
        if let Some(group) = group {
            accounting.add_group(seq, group);
        }
        Ok(seq)
    }

    /// Reads records starting at `from` (inclusive) until they hold `max_items` items
    /// ([`Record::items`]) or `max_bytes` of frames would be exceeded (at least one record is
    /// returned when available), so a reader holds about one unit of work in memory.
    /// Only records whose [`Wal::append`] has returned are read: a record being appended is in the
    /// tree before it is flushed, and a reader that forwarded it could neither acknowledge it nor
    /// count on it surviving a crash.
    pub fn read_from(
        &self,
        from: u64,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored<R>>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut items = 0usize;
        let last = self.accounting().last_seq;
        if from > last {
            return Ok(out);
        }
        let records = self.tree.range(record_key(from)..=record_key(last));
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
            if items >= max_items || (!out.is_empty() && bytes + value.len() > max_bytes) {
                break;
            }
            let record = self.decode(seq, &value)?;
            bytes += value.len();
            items += record.items();
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

    /// Checks every stored record (version, length, CRC, payload) and every sequence number
    /// between the first and the last. Returns the damaged ones with their errors.
    pub fn verify(&self) -> Result<Vec<(u64, FrameError)>> {
        let mut bad = Vec::new();
        let mut expected = None;
        for item in self.tree.scan_prefix([RECORD_PREFIX]) {
            let (key, value) = item.map_err(self.storage("verify"))?;
            let seq = seq_from_key(&key);
            if let Some(expected) = expected {
                for missing in expected..seq {
                    bad.push((missing, FrameError::Missing));
                }
            }
            if let Err(e) = decode_frame::<R>(R::FORMAT_VERSION, &value) {
                bad.push((seq, e));
            }
            expected = Some(seq + 1);
        }
        let last = self.last_seq()?;
        if let Some(expected) = expected {
            for missing in expected..=last {
                bad.push((missing, FrameError::Missing));
            }
        }
        Ok(bad)
    }

    /// Finds the first damaged record after the acknowledged cursor, if any.
    pub fn first_damaged_unacknowledged(&self) -> Result<Option<(u64, FrameError)>> {
        let acked = self.acked()?;
        let last = self.last_seq()?;
        let mut expected = acked + 1;
        for item in self.tree.range(record_key(acked + 1)..record_key(u64::MAX)) {
            let (key, value) = item.map_err(self.storage("verify"))?;
            let seq = seq_from_key(&key);
            if seq != expected {
                return Ok(Some((expected, FrameError::Missing)));
            }
            if let Err(e) = decode_frame::<R>(R::FORMAT_VERSION, &value) {
                return Ok(Some((seq, e)));
            }
            expected += 1;
        }
        if expected <= last {
            return Ok(Some((expected, FrameError::Missing)));
        }
        Ok(None)
    }

    /// The ingest position just before record `seq`: the position after record `seq - 1`, or the
    /// base position when `seq` is the first record stored.
    pub fn position_before(&self, seq: u64) -> Result<Vec<u8>> {
        let first = self.first_seq()?;
        if first.is_none_or(|first| seq <= first) {
            return self
                .read_meta(KEY_BASE_POSITION)?
                .ok_or_else(|| WalError::NoPositionBefore {
                    seq,
                    reason: "the WAL has no base position".into(),
                });
        }
        match self.get(seq - 1)? {
            Some(stored) => Ok(stored.record.position_after().to_vec()),
            None => Err(WalError::NoPositionBefore {
                seq,
                reason: format!("record {} is missing", seq - 1),
            }),
        }
    }

    /// Repair: discards records from `from` to the end (none of them acknowledged) and rewinds the
    /// ingest position to just before `from`, so the ingester reads them again from the source.
    /// Returns the rewound position.
    pub fn truncate_unacknowledged(&self, from: u64) -> Result<Vec<u8>> {
        let acked = self.acked()?;
        if from <= acked {
            return Err(WalError::TruncateAcknowledged { from, acked });
        }
        let position = self.position_before(from)?;
        let last = self.last_seq()?;
        let mut batch = sled::Batch::default();
        for seq in from..=last {
            batch.remove(&record_key(seq)[..]);
        }
        let groups: Vec<(u64, Group)> = self
            .accounting()
            .groups
            .range(from..)
            .map(|(k, g)| (*k, *g))
            .collect();
        let mut kept_groups = Vec::new();
        for (group_last, group) in &groups {
            batch.remove(&group_key(*group_last)[..]);
            if group.first_seq < from {
                // The group keeps its records before `from`; its size is no longer exact, which
                // only makes backpressure slightly conservative until it is pruned.
                let kept = Group {
                    first_seq: group.first_seq,
                    ..*group
                };
                batch.insert(&group_key(from - 1)[..], meta(&kept.encode()));
                kept_groups.push((from - 1, kept));
            }
        }
        batch.insert(KEY_INGEST_POSITION, meta(&position));
        self.tree
            .apply_batch(batch)
            .map_err(self.storage("truncate"))?;
        self.tree.flush().map_err(self.storage("flush"))?;
        let mut accounting = self.accounting();
        for (group_last, _) in groups {
            accounting.groups.remove(&group_last);
        }
        accounting.groups.extend(kept_groups);
        accounting.recount_unacked();
        accounting.last_seq = from - 1;
        Ok(position)
    }

    /// Moves the acknowledged cursor forward to `seq` and flushes. Moving it backwards is a no-op:
    /// the cursor never retreats.
    pub fn acknowledge(&self, seq: u64) -> Result<()> {
        let (last, acked) = {
            let a = self.accounting();
            (a.last_seq, a.acked)
        };
        if seq > last {
            return Err(WalError::AckBeyondEnd {
                requested: seq,
                last,
            });
        }
        if seq <= acked {
            return Ok(());
        }
        self.tree
            .insert(KEY_ACKED, meta(&seq.to_be_bytes()))
            .map_err(self.storage("acknowledge"))?;
        self.tree.flush().map_err(self.storage("flush"))?;
        self.accounting().advance_acked(seq);
        Ok(())
    }

    /// Removes acknowledged append groups that `retention` no longer keeps, oldest first. A group
    /// with any unacknowledged record is never removed.
    pub fn prune(&self, retention: Retention) -> Result<Pruned> {
        let now = now_ms();
        let (victims, acked) = {
            let accounting = self.accounting();
            let acked = accounting.acked;
            let mut acked_bytes: u64 = accounting
                .groups
                .range(..=acked)
                .map(|(_, g)| g.bytes)
                .sum();
            let mut victims = Vec::new();
            for (&last, group) in accounting.groups.range(..=acked) {
                let too_old = retention.max_age.is_some_and(|age| {
                    now.saturating_sub(group.appended_ms) > age.as_millis() as u64
                });
                let too_big = retention.max_bytes.is_some_and(|max| acked_bytes > max);
                if !(too_old || too_big) {
                    break;
                }
                acked_bytes -= group.bytes;
                victims.push((last, *group));
            }
            (victims, acked)
        };
        let Some(&(last_pruned, _)) = victims.last() else {
            return Ok(Pruned::default());
        };
        debug_assert!(last_pruned <= acked);
        let base = match self.get(last_pruned) {
            Ok(Some(stored)) => Some(stored.record.position_after().to_vec()),
            // A damaged acknowledged record: its position is not needed unless the next record
            // is damaged too, and then repair will say so.
            _ => None,
        };
        let mut batch = sled::Batch::default();
        let mut pruned = Pruned::default();
        for (last, group) in &victims {
            for seq in group.first_seq..=*last {
                batch.remove(&record_key(seq)[..]);
            }
            batch.remove(&group_key(*last)[..]);
            pruned.records += last - group.first_seq + 1;
            pruned.bytes += group.bytes;
        }
        if let Some(base) = base {
            batch.insert(KEY_BASE_POSITION, meta(&base));
        }
        self.tree
            .apply_batch(batch)
            .map_err(self.storage("prune"))?;
        self.tree.flush().map_err(self.storage("flush"))?;
        let mut accounting = self.accounting();
        for (last, _) in victims {
            accounting.groups.remove(&last);
        }
        Ok(pruned)
    }

    /// A summary of the WAL's state.
    pub fn stats(&self) -> Result<WalStats> {
        let first_seq = self.first_seq()?;
        let disk_bytes = self.disk_size()?;
        let ingest_position = self
            .ingest_position()?
            .map(|p| String::from_utf8_lossy(&p).into_owned());
        let accounting = self.accounting();
        let last_seq = accounting.last_seq;
        let acked_seq = accounting.acked;
        Ok(WalStats {
            wal_id: self.id(),
            first_seq,
            last_seq,
            acked_seq,
            records: first_seq.map_or(0, |f| last_seq + 1 - f),
            unacked_records: last_seq - acked_seq,
            bytes: accounting.total_bytes(),
            unacked_bytes: accounting.unacked_bytes(),
            oldest_unacked_age_ms: accounting
                .oldest_unacked_ms()
                .map(|t| now_ms().saturating_sub(t)),
            ingest_position,
            disk_bytes,
        })
    }

    /// Bytes the database occupies on disk.
    pub fn disk_size(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(self.storage("size"))
    }

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

/// A metadata value framed with the current WAL format version.
fn meta(payload: &[u8]) -> Vec<u8> {
    encode_meta(FORMAT_VERSION, payload)
}

fn meta_payload(raw: &[u8]) -> Result<&[u8], FrameError> {
    decode_meta(FORMAT_VERSION, raw)
}

fn format_value() -> Vec<u8> {
    meta(&FORMAT_VERSION.to_le_bytes())
}

/// The format stored under `m/format`: its header's version, confirmed by an intact frame whose
/// payload says the same (so a damaged header is told apart from another release's format).
fn stored_format(raw: &[u8]) -> Result<u16, String> {
    if raw.len() < 2 {
        return Err(format!("{} bytes", raw.len()));
    }
    let version = u16::from_le_bytes([raw[0], raw[1]]);
    let payload = decode_meta(version, raw).map_err(|e| e.to_string())?;
    match <[u8; 2]>::try_from(payload) {
        Ok(bytes) if u16::from_le_bytes(bytes) == version => Ok(version),
        _ => Err("the header and the value disagree".into()),
    }
}

/// A key as the module header and the error messages name it ("g/<seq>" for a group entry).
fn key_name(key: &[u8]) -> String {
    if key.len() == 9 && key[0] == GROUP_PREFIX {
        format!("g/{}", seq_from_key(key))
    } else {
        String::from_utf8_lossy(key).into_owned()
    }
}

fn record_key(seq: u64) -> [u8; 9] {
    let mut key = [RECORD_PREFIX; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn group_key(last_seq: u64) -> [u8; 9] {
    let mut key = [GROUP_PREFIX; 9];
    key[1..].copy_from_slice(&last_seq.to_be_bytes());
    key
}

fn seq_from_key(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&key[1..9]);
    u64::from_be_bytes(bytes)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
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

fn random_id() -> [u8; 16] {
    // The id only has to differ between WALs; time and pid mixed through a hash suffice and avoid
    // a dependency for it.
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut id = [0u8; 16];
    for (i, chunk) in id.chunks_mut(8).enumerate() {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
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
