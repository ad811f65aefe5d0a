//! TRANSACTION_PAYLOAD events (MySQL binlog compression, `binlog_transaction_compression=ON`).
//!
//! Guarantee: a TRANSACTION_PAYLOAD event is decompressed here too (at most [`MAX_EVENT_SIZE`]),
//! and the events inside it must follow it one by one: a client that failed to decompress it
//! (mysql_async passes over such a failure) is caught by the next event not being the expected
//! inner one.

use std::io::Read;

use mysql_async::binlog::events::TransactionPayloadEvent;

/// One event expected inside a TRANSACTION_PAYLOAD: its type and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct InnerEvent {
    pub(super) event_type: u8,
    pub(super) size: u32,
}

/// Frame header: timestamp u32, type u8, server_id u32, event_size u32, log_pos u32, flags u16.
const EVENT_HEADER_LEN: usize = 19;
/// The largest event sdl accepts (MySQL's max_allowed_packet ceiling is 1 GiB).
pub const MAX_EVENT_SIZE: u32 = 1 << 30;

/// Decompresses a TRANSACTION_PAYLOAD and lists the events inside it.
pub(super) fn inner_events(
    payload: &TransactionPayloadEvent<'_>,
) -> Result<Vec<InnerEvent>, String> {
    let mut bytes = Vec::new();
    payload
        .decompressed()
        .and_then(|mut reader| {
            reader
                .by_ref()
                .take(u64::from(MAX_EVENT_SIZE))
                .read_to_end(&mut bytes)
        })
        .map_err(|e| format!("the payload does not decompress: {e}"))?;
    if payload.uncompressed_size() != 0 && bytes.len() as u64 != payload.uncompressed_size() {
        return Err(format!(
            "the payload decompresses to {} bytes, its header says {}",
            bytes.len(),
            payload.uncompressed_size()
        ));
    }
    let mut events = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        if rest.len() < EVENT_HEADER_LEN {
            return Err(format!(
                "the payload ends with a {}-byte fragment of an event header",
                rest.len()
            ));
        }
        let size = u32::from_le_bytes(rest[9..13].try_into().expect("4 bytes"));
        if (size as usize) < EVENT_HEADER_LEN || size as usize > rest.len() {
            return Err(format!(
                "an inner event declares {size} bytes, {} remain in the payload",
                rest.len()
            ));
        }
        events.push(InnerEvent {
            event_type: rest[4],
            size,
        });
        rest = &rest[size as usize..];
    }
    if events.is_empty() {
        return Err("the payload holds no events".into());
    }
    Ok(events)
}
