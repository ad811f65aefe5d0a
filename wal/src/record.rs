//! What the WAL stores: a [`Record`] names its format version (written into every frame) and the
//! ingest position after it; a [`Stored`] record comes back with its sequence number.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A type that can be stored in the WAL. `FORMAT_VERSION` is written into every frame; bump it on
/// any change to the serialized shape so that an old binary refuses records it cannot read.
pub trait Record: Serialize + DeserializeOwned {
    const FORMAT_VERSION: u16;

    /// Every format version this record type reads, [`Record::FORMAT_VERSION`] last: older ones
    /// whose frames decode unchanged (a format that only appended enum variants).
    const READABLE_VERSIONS: &'static [u16] = &[Self::FORMAT_VERSION];

    /// The ingest position after this record (used to rewind when later records are damaged).
    fn position_after(&self) -> &[u8];

    /// How many items the record holds, for [`Wal::read_from`]'s limit (one, unless the record
    /// is a group of items a reader consumes in units, such as the changes of a transaction).
    fn items(&self) -> usize {
        1
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
