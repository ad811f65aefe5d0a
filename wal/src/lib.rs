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
//!
//! # Where each guarantee lives
//! Bottom to top; a module uses only those above it in this list.
//! - `frame`: the frame format and its checks (version, length, CRC, payload).
//! - `error`: [`WalError`] and [`MetaRepair`]; `layout`: the keys above and framed metadata
//!   values; `groups`: append groups and the in-memory byte accounting; `record`: [`Record`].
//! - `handle`: the [`Wal`] handle shared by clones.
//! - `cursors` (acknowledged cursor, ingest position), `append` (durable appends), `read`
//!   (checked reads, verification), `retention` ([`Wal::prune`]), `repair`
//!   ([`Wal::truncate_unacknowledged`]).
//! - `metadata` (checked metadata, format upgrade), `open` ([`Wal::open`]), `stats`, and
//!   `test_hooks` (raw access for tests that damage bytes on purpose).

mod append;
mod cursors;
mod error;
mod frame;
mod groups;
mod handle;
mod layout;
mod metadata;
mod open;
mod read;
mod record;
mod repair;
mod retention;
mod stats;
mod test_hooks;

pub use error::{MetaRepair, Result, WalError};
pub use frame::{
    decode_frame, decode_frame_of, decode_meta, encode_frame, encode_meta, FrameError,
    FRAME_HEADER_LEN,
};
pub use handle::Wal;
pub use layout::FORMAT_VERSION;
pub use open::INITIALIZED_MARKER;
pub use record::{Record, Stored};
pub use retention::{Pruned, Retention};
pub use stats::WalStats;

#[cfg(test)]
mod tests;
