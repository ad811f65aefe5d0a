//! The fuzz target's property on stable Rust, for CI: the row-event fuzz input builder produces a
//! decodable binlog for a well-formed input, and a few thousand pseudo-random inputs neither
//! panic nor abort (the long runs are `cargo fuzz run row_events`, see fuzz/README.md).

use sdl::fuzzing::decode_row_event_input;

#[test]
fn a_well_formed_row_event_decodes_to_one_document() {
    // 1 column of type LONG, signedness byte 0 (signed), collation utf8mb4, WRITE_ROWS; row: null
    // bitmap 0, value 42.
    let input = [0, 2, 0, 0, 0, 0x00, 42, 0, 0, 0];
    assert_eq!(decode_row_event_input(&input), Ok(1));
}

#[test]
fn random_row_events_never_panic() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..5_000 {
        let len = (next() % 64) as usize;
        let input: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        match decode_row_event_input(&input) {
            Ok(_) => ok += 1,
            Err(_) => refused += 1,
        }
    }
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
}
