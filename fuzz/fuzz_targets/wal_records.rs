//! Arbitrary bytes as a stored WAL frame: decoding must return a record or an error, never panic,
//! hang or allocate without bound. The first input byte picks the shape: odd → the rest is taken
//! as a whole frame (header, length, CRC and payload all arbitrary); even → the rest is a payload
//! wrapped in a valid header and CRC, so the fuzzer reaches bincode decoding of a
//! `SourceTransaction` instead of stopping at the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdl::event::SourceTransaction;
use sdl_wal::{decode_frame, Record, FRAME_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let version = SourceTransaction::FORMAT_VERSION;
    if shape % 2 == 1 {
        let _ = decode_frame::<SourceTransaction>(version, rest);
    } else {
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + rest.len());
        frame.extend_from_slice(&version.to_le_bytes());
        frame.extend_from_slice(&(rest.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(rest).to_le_bytes());
        frame.extend_from_slice(rest);
        let _ = decode_frame::<SourceTransaction>(version, &frame);
    }
});
