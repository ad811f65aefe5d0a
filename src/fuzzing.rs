//! Fuzzing entry points (used by `fuzz/` and tests/fuzz_smoke.rs; not part of the relay).
//!
//! They drive the binlog decoder (`source`) and the change-document writer (`sink`) together, so
//! they sit above both stages; the inputs they decode are built by `source::fuzzing`.
//!
//! [`decode_row_event_input`] decodes the binlog `source::fuzzing::binlog_from_bytes` builds from
//! arbitrary bytes exactly as a file is decoded and converts the result to change documents. The
//! property under test: this never panics, never aborts, never hangs; it returns documents or an
//! error.

use crate::sink::document::transaction_documents;
use crate::source::binlog_file::decode_file;
use crate::source::fuzzing::binlog_from_bytes;

/// Decodes the binlog built from `data` and converts it to documents; returns how many.
pub fn decode_row_event_input(data: &[u8]) -> Result<usize, String> {
    let binlog = binlog_from_bytes(data);
    let transactions = decode_file("fuzz.000001", &binlog)?;
    Ok(transactions
        .iter()
        .map(|t| transaction_documents("fuzz", t).len())
        .sum())
}
