//! Framing: `version: u16 LE | payload_len: u32 LE | crc32(payload): u32 LE | payload`.
//!
//! Records carry a bincode payload ([`encode_frame`]); metadata values carry their raw bytes
//! ([`encode_meta`]) under the same header, so a damaged cursor or position is caught by the same
//! CRC as a damaged record, whichever layer below would or would not notice.
//!
//! Decoding checks, in order: the header is complete, the version is the one this binary writes,
//! the stated length matches the bytes present, the CRC matches, and (records) bincode consumes the
//! payload exactly. Any failure is a [`FrameError`]; decoding never panics on any input.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub const FRAME_HEADER_LEN: usize = 2 + 4 + 4;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<{ 1 << 30 }>()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("record is missing (a gap in the sequence)")]
    Missing,
    #[error("frame is truncated: {len} bytes, the header alone needs {FRAME_HEADER_LEN}")]
    TruncatedHeader { len: usize },
    #[error("record format version {found} is not supported by this sdl (it reads version {supported}); run the sdl release that wrote this WAL, or a newer one")]
    UnknownVersion { found: u16, supported: u16 },
    #[error("frame length mismatch: header says {stated} payload bytes, {present} are present")]
    LengthMismatch { stated: usize, present: usize },
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("payload does not decode: {0}")]
    Payload(String),
}

/// Frames `record` with `version`.
pub fn encode_frame<T: Serialize>(
    version: u16,
    record: &T,
) -> Result<Vec<u8>, bincode::error::EncodeError> {
    let mut frame = vec![0u8; FRAME_HEADER_LEN];
    bincode::serde::encode_into_std_write(record, &mut frame, bincode_config())?;
    let payload_len = frame.len() - FRAME_HEADER_LEN;
    let crc = crc32fast::hash(&frame[FRAME_HEADER_LEN..]);
    frame[0..2].copy_from_slice(&version.to_le_bytes());
    frame[2..6].copy_from_slice(&(payload_len as u32).to_le_bytes());
    frame[6..10].copy_from_slice(&crc.to_le_bytes());
    Ok(frame)
}

/// Frames raw metadata bytes with `version` (the WAL format version).
pub fn encode_meta(version: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    frame.extend_from_slice(&version.to_le_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Checks a frame written by [`encode_meta`] with `expected_version` and returns its payload.
pub fn decode_meta(expected_version: u16, frame: &[u8]) -> Result<&[u8], FrameError> {
    checked_payload(expected_version, frame)
}

/// Checks and decodes a frame written by [`encode_frame`] with `expected_version`.
pub fn decode_frame<T: DeserializeOwned>(
    expected_version: u16,
    frame: &[u8],
) -> Result<T, FrameError> {
    let payload = checked_payload(expected_version, frame)?;
    let (value, used) = bincode::serde::decode_from_slice(payload, bincode_config())
        .map_err(|e| FrameError::Payload(e.to_string()))?;
    if used != payload.len() {
        return Err(FrameError::Payload(format!(
            "{} trailing bytes after the record",
            payload.len() - used
        )));
    }
    Ok(value)
}

/// Checks and decodes a frame of any format version in `versions` (the newest last): a record
/// type whose newer format reads its older ones unchanged lists them all.
pub fn decode_frame_of<T: DeserializeOwned>(
    versions: &[u16],
    frame: &[u8],
) -> Result<T, FrameError> {
    let found = (frame.len() >= 2).then(|| u16::from_le_bytes([frame[0], frame[1]]));
    let version = match found {
        Some(found) if versions.contains(&found) => found,
        _ => versions.last().copied().unwrap_or_default(),
    };
    decode_frame(version, frame)
}

/// The header checks shared by records and metadata: version, length, CRC.
fn checked_payload(expected_version: u16, frame: &[u8]) -> Result<&[u8], FrameError> {
    if frame.len() < FRAME_HEADER_LEN {
        return Err(FrameError::TruncatedHeader { len: frame.len() });
    }
    let version = u16::from_le_bytes([frame[0], frame[1]]);
    if version != expected_version {
        return Err(FrameError::UnknownVersion {
            found: version,
            supported: expected_version,
        });
    }
    let stated = u32::from_le_bytes([frame[2], frame[3], frame[4], frame[5]]) as usize;
    let payload = &frame[FRAME_HEADER_LEN..];
    if stated != payload.len() {
        return Err(FrameError::LengthMismatch {
            stated,
            present: payload.len(),
        });
    }
    let stored = u32::from_le_bytes([frame[6], frame[7], frame[8], frame[9]]);
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(FrameError::Checksum { stored, computed });
    }
    Ok(payload)
}
