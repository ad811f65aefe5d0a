//! Character data → Rust strings, by the column's collation id from the TABLE_MAP metadata.
//!
//! Guarantees: a string is produced only when the bytes decode *exactly* in the column's charset
//! (no replacement characters). Bytes that do not decode, and columns whose collation this module
//! does not know, are returned as `None` so the caller keeps the raw bytes (lossless binary).
//!
//! Mappings (MySQL charset → WHATWG/`encoding_rs` encoding): `utf8mb4`/`utf8mb3` → UTF-8;
//! `latin1` → windows-1252 (MySQL's latin1 *is* cp1252, with 0x81, 0x8D, 0x8F, 0x90, 0x9D as the
//! C1 controls, exactly as encoding_rs decodes them); `ascii` → 7-bit only; `ucs2`, `utf16` →
//! UTF-16BE; `utf16le` → UTF-16LE; `utf32` → UTF-32BE (decoded here); plus the single- and
//! multi-byte charsets that have an exact WHATWG counterpart.

use encoding_rs::Encoding;
use mysql_common::collations::{Collation, CollationId};

/// The binary pseudo-charset (BINARY, VARBINARY, BLOB).
pub const BINARY: u16 = 63;

/// How a column's bytes are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    Binary,
    Utf8,
    Ascii,
    Utf32Be,
    Encoding(&'static Encoding),
    /// A collation id this sdl does not know: the bytes are kept as binary.
    Unknown,
}

/// The charset of a collation id, including MariaDB's own id ranges.
pub fn charset_of(collation: u16) -> Charset {
    if collation == BINARY {
        return Charset::Binary;
    }
    let name: &str = match mariadb_charset(collation) {
        Some(name) => name,
        None => {
            let id = CollationId::from(collation);
            if id == CollationId::UNKNOWN_COLLATION_ID {
                return Charset::Unknown;
            }
            return by_name(Collation::from(id).charset());
        }
    };
    by_name(name)
}

/// MariaDB collation ids that MySQL does not have (strings/ctype-uca.c, ctype-uca1400.h).
fn mariadb_charset(id: u16) -> Option<&'static str> {
    match id {
        576..=607 => Some("utf8mb3"),
        608..=639 => Some("utf8mb4"),
        640..=671 => Some("ucs2"),
        672..=703 => Some("utf16"),
        736..=767 => Some("utf32"),
        // UCA-14.0.0 collations (MariaDB 10.10+): id = 2048 + (charset << 8) + tailoring/flags.
        2048..=4095 => match (id - 2048) >> 8 {
            0 => Some("utf8mb3"),
            1 => Some("utf8mb4"),
            2 => Some("ucs2"),
            3 => Some("utf16"),
            4 => Some("utf32"),
            _ => None,
        },
        _ => None,
    }
}

fn by_name(name: &str) -> Charset {
    use encoding_rs::*;
    let encoding: &'static Encoding = match name {
        "binary" => return Charset::Binary,
        "utf8mb4" | "utf8mb3" | "utf8" => return Charset::Utf8,
        "ascii" => return Charset::Ascii,
        "utf32" => return Charset::Utf32Be,
        "latin1" => WINDOWS_1252,
        "ucs2" | "utf16" => UTF_16BE,
        "utf16le" => UTF_16LE,
        "latin2" => ISO_8859_2,
        "greek" => ISO_8859_7,
        "hebrew" => ISO_8859_8,
        "latin7" => ISO_8859_13,
        "cp1250" => WINDOWS_1250,
        "cp1251" => WINDOWS_1251,
        "cp1256" => WINDOWS_1256,
        "cp1257" => WINDOWS_1257,
        "cp866" => IBM866,
        "koi8r" => KOI8_R,
        "koi8u" => KOI8_U,
        "macroman" => MACINTOSH,
        "sjis" => SHIFT_JIS,
        "ujis" => EUC_JP,
        "euckr" => EUC_KR,
        "gbk" => GBK,
        "gb18030" => GB18030,
        "big5" => BIG5,
        _ => return Charset::Unknown,
    };
    Charset::Encoding(encoding)
}

/// Decodes `bytes` exactly, or returns `None` (keep them as binary).
pub fn decode(charset: Charset, bytes: &[u8]) -> Option<String> {
    match charset {
        Charset::Binary | Charset::Unknown => None,
        Charset::Utf8 => std::str::from_utf8(bytes).ok().map(str::to_owned),
        Charset::Ascii => bytes
            .is_ascii()
            .then(|| String::from_utf8(bytes.to_vec()).expect("ASCII is UTF-8")),
        Charset::Utf32Be => {
            if !bytes.len().is_multiple_of(4) {
                return None;
            }
            bytes
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        Charset::Encoding(encoding) => encoding
            .decode_without_bom_handling_and_without_replacement(bytes)
            .map(|s| s.into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_collations_map_to_their_charsets() {
        assert_eq!(charset_of(45), Charset::Utf8); // utf8mb4_general_ci
        assert_eq!(charset_of(255), Charset::Utf8); // utf8mb4_0900_ai_ci
        assert_eq!(charset_of(33), Charset::Utf8); // utf8mb3_general_ci
        assert_eq!(charset_of(2048 + 256), Charset::Utf8); // MariaDB utf8mb4_uca1400_ai_ci
        assert_eq!(charset_of(8), Charset::Encoding(encoding_rs::WINDOWS_1252));
        assert_eq!(charset_of(11), Charset::Ascii);
        assert_eq!(charset_of(35), Charset::Encoding(encoding_rs::UTF_16BE)); // ucs2
        assert_eq!(charset_of(54), Charset::Encoding(encoding_rs::UTF_16BE)); // utf16
        assert_eq!(charset_of(56), Charset::Encoding(encoding_rs::UTF_16LE)); // utf16le
        assert_eq!(charset_of(60), Charset::Utf32Be);
        assert_eq!(charset_of(63), Charset::Binary);
        assert_eq!(charset_of(9999), Charset::Unknown);
    }

    #[test]
    fn decoding_is_exact_or_refused() {
        let latin1 = charset_of(8);
        assert_eq!(decode(latin1, b"caf\xe9 \x80").as_deref(), Some("café €"));
        assert_eq!(decode(charset_of(45), b"\xff"), None);
        assert_eq!(decode(charset_of(11), b"a\xe9"), None);
        assert_eq!(
            decode(charset_of(60), &[0, 1, 0xF6, 0x00]).as_deref(),
            Some("😀")
        );
        assert_eq!(decode(charset_of(60), &[0, 0x11, 0, 0]), None);
        assert_eq!(decode(charset_of(54), &[0xD8, 0x3D]), None); // lone surrogate
    }
}
