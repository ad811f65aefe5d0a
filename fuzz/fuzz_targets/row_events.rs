//! Arbitrary bytes as a row event (and the TABLE_MAP that describes it) through the binlog file
//! reader, the TransactionAssembler and the BSON conversion: an error is fine, a panic, abort,
//! hang or runaway allocation is a bug. See sdl::source::fuzzing for how the input is shaped.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sdl::source::fuzzing::decode_row_event_input(data);
});
