//! Arbitrary bytes as a row event (and the TABLE_MAP that describes it) through the binlog file
//! reader, the TransactionAssembler and the BSON conversion: an error is fine; a panic that
//! escapes sdl, an abort, a hang or a runaway allocation is a bug. See sdl::source::fuzzing for
//! how the input is shaped (sdl::fuzzing runs it).
//!
//! sdl catches a panic inside mysql_common's decoders and reports it as a decode error (its last
//! line of defence; the checks before it are what the fuzzer hardens). libfuzzer-sys installs a
//! panic hook that aborts on *every* panic, caught or not; this target restores a silent hook, so
//! a caught panic counts as the error sdl turns it into, while a panic escaping
//! `decode_row_event_input` still aborts (libfuzzer-sys checks with catch_unwind). Set
//! SDL_FUZZ_STRICT=1 to keep the aborting hook and find every internal panic.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;

static HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    HOOK.call_once(|| {
        if std::env::var_os("SDL_FUZZ_STRICT").is_none() {
            std::panic::set_hook(Box::new(|_| {}));
        }
    });
    let _ = sdl::fuzzing::decode_row_event_input(data);
});
