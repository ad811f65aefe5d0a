//! Properties of the frame format: round trips, and every bit flip and truncation detected.

use super::*;
use proptest::prelude::*;

proptest! {
    #[test]
    fn round_trip(n in any::<u64>(), text in ".*") {
        let r = TestRecord { n, text };
        let frame = encode_frame(7, &r).unwrap();
        prop_assert_eq!(decode_frame::<TestRecord>(7, &frame).unwrap(), r);
    }

    #[test]
    fn any_single_bit_flip_is_detected(n in any::<u64>(), text in ".{0,64}", bit in any::<prop::sample::Index>()) {
        let r = TestRecord { n, text };
        let mut frame = encode_frame(7, &r).unwrap();
        let i = bit.index(frame.len() * 8);
        frame[i / 8] ^= 1 << (i % 8);
        prop_assert!(decode_frame::<TestRecord>(7, &frame).is_err());
    }

    #[test]
    fn any_single_bit_flip_in_metadata_is_detected(value in proptest::collection::vec(any::<u8>(), 0..64), bit in any::<prop::sample::Index>()) {
        let mut frame = encode_meta(FORMAT_VERSION, &value);
        prop_assert_eq!(decode_meta(FORMAT_VERSION, &frame).unwrap(), &value[..]);
        let i = bit.index(frame.len() * 8);
        frame[i / 8] ^= 1 << (i % 8);
        prop_assert!(decode_meta(FORMAT_VERSION, &frame).is_err());
    }

    #[test]
    fn any_truncation_is_detected(n in any::<u64>(), text in ".{0,64}", cut in any::<prop::sample::Index>()) {
        let r = TestRecord { n, text };
        let frame = encode_frame(7, &r).unwrap();
        let keep = cut.index(frame.len());
        prop_assert!(decode_frame::<TestRecord>(7, &frame[..keep]).is_err());
    }
}
