//! Byte sizes: a plain integer of bytes, or a number (fractions allowed) with a unit, read by the
//! `bytesize` crate: `B`; `kB` `MB` `GB` `TB` (or `k` `M` `G` `T`: powers of 1000); `KiB` `MiB`
//! `GiB` `TiB` (or `Ki` `Mi` `Gi` `Ti`: powers of 1024); case-insensitive, a space allowed before
//! the unit. `"8GB"` is 8000000000 bytes, `"8GiB"` 8589934592, `"64k"` 64000.

use serde::de::{self, Deserializer, Visitor};

pub const GRAMMAR: &str = "an integer of bytes, or a number with a unit: kB MB GB TB (powers of 1000) or KiB MiB GiB TiB (powers of 1024), e.g. \"8GiB\", \"512 MiB\", \"64kB\"";

/// Parses a size written with or without a unit.
pub fn parse(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| format!("`{text}` is not a byte size: use {GRAMMAR}"))
}

/// `n` bytes, and in binary units when that is shorter to read.
pub fn describe(n: u64) -> String {
    if n >= 1024 {
        format!("{n} bytes ({})", bytesize::ByteSize(n).display().iec())
    } else {
        format!("{n} bytes")
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(GRAMMAR)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative: use {GRAMMAR}")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse(v).map_err(E::custom)
    }
}

pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let bytes = d.deserialize_any(SizeVisitor)?;
    T::try_from(bytes)
        .map_err(|_| de::Error::custom(format!("{bytes} bytes is too large for this machine")))
}

pub fn deserialize_option<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    deserialize(d).map(Some)
}
