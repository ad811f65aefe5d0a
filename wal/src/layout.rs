//! The on-disk layout (see the crate header): the keys of the one sled tree, and metadata values
//! framed with the WAL format version and a CRC ([`crate::encode_meta`]).

use crate::frame::{decode_meta, encode_meta, FrameError};

/// The WAL's on-disk layout version, stored under `m/format` and in every metadata frame's header.
/// 1: metadata stored raw; 2: every metadata value framed with a CRC. Records carry their own
/// version ([`Record::FORMAT_VERSION`]). Bump it on any change to the layout or the metadata.
pub const FORMAT_VERSION: u16 = 2;

pub(crate) const RECORD_PREFIX: u8 = b'r';
pub(crate) const GROUP_PREFIX: u8 = b'g';
pub(crate) const KEY_INGEST_POSITION: &[u8] = b"m/ingest_position";
pub(crate) const KEY_BASE_POSITION: &[u8] = b"m/base_position";
pub(crate) const KEY_ACKED: &[u8] = b"m/acked";
pub(crate) const KEY_WAL_ID: &[u8] = b"m/wal_id";
pub(crate) const KEY_FORMAT: &[u8] = b"m/format";

/// A metadata value framed with the current WAL format version.
pub(crate) fn meta(payload: &[u8]) -> Vec<u8> {
    encode_meta(FORMAT_VERSION, payload)
}

pub(crate) fn meta_payload(raw: &[u8]) -> Result<&[u8], FrameError> {
    decode_meta(FORMAT_VERSION, raw)
}

pub(crate) fn format_value() -> Vec<u8> {
    meta(&FORMAT_VERSION.to_le_bytes())
}

/// The format stored under `m/format`: its header's version, confirmed by an intact frame whose
/// payload says the same (so a damaged header is told apart from another release's format).
pub(crate) fn stored_format(raw: &[u8]) -> Result<u16, String> {
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
pub(crate) fn key_name(key: &[u8]) -> String {
    if key.len() == 9 && key[0] == GROUP_PREFIX {
        format!("g/{}", seq_from_key(key))
    } else {
        String::from_utf8_lossy(key).into_owned()
    }
}

pub(crate) fn record_key(seq: u64) -> [u8; 9] {
    let mut key = [RECORD_PREFIX; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(crate) fn group_key(last_seq: u64) -> [u8; 9] {
    let mut key = [GROUP_PREFIX; 9];
    key[1..].copy_from_slice(&last_seq.to_be_bytes());
    key
}

pub(crate) fn seq_from_key(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&key[1..9]);
    u64::from_be_bytes(bytes)
}
