//! Source values → BSON (the table in docs/change-document.md): exact where BSON has a form, a
//! documented lossless form where it has none; source field names escaped reversibly; JSON
//! nested too deep kept as text below [`MAX_JSON_DEPTH`].

use std::borrow::Cow;

use bson::{doc, Binary, Bson};

use crate::event::{Json, Value};

/// Maps a source value to BSON. See docs/change-document.md for the table.
pub fn value_to_bson(value: &Value) -> Bson {
    match value {
        // Callers leave a column that is absent from the row image out of the document.
        Value::Absent | Value::Null => Bson::Null,
        Value::Int(i) => Bson::Int64(*i),
        Value::UInt(u) => unsigned(*u),
        Value::Float(f) => Bson::Double(f64::from(*f)),
        Value::Double(d) => Bson::Double(*d),
        Value::Decimal(text) => decimal(text),
        Value::Text(s) => Bson::String(s.clone()),
        Value::Bytes(b) => Bson::Binary(Binary {
            subtype: bson::spec::BinarySubtype::Generic,
            bytes: b.clone(),
        }),
        Value::Date { year, month, day } => Bson::String(format!("{year:04}-{month:02}-{day:02}")),
        Value::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        } => Bson::String(format!(
            "{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{micros:06}"
        )),
        Value::Timestamp { seconds, micros } => Bson::String(timestamp_text(*seconds, *micros)),
        Value::Time {
            negative,
            hours,
            minute,
            second,
            micros,
        } => Bson::String(format!(
            "{}{hours:02}:{minute:02}:{second:02}.{micros:06}",
            if *negative { "-" } else { "" }
        )),
        Value::Set(members) => Bson::Array(members.iter().cloned().map(Bson::String).collect()),
        Value::Json(json) => json_to_bson(json, 0),
    }
}

/// The escape character of [`escape_key`].
const ESCAPE: char = '%';

/// The one key of the document that stands for a JSON subtree nested too deep (see
/// [`MAX_JSON_DEPTH`]); a key from the source can never be `%json`, since [`escape_key`] writes
/// every `%` of a source key as `%25`.
pub const JSON_TEXT_KEY: &str = "%json";

/// JSON arrays and objects nested inside this many others (the column's value itself is at depth
/// 0) are written as `{"%json": "<JSON text>"}`. The change document puts a column's value at
/// level 3 (`after.<column>`, `meta.pk.<column>` at 4), so the deepest document stays within
/// MongoDB's documented limit of 100 levels.
pub const MAX_JSON_DEPTH: usize = 90;

/// A field name from the source (a column name or a JSON object key) as written into a change
/// document. MongoDB cannot store a NUL in a field name, treats a leading `$` as an operator and a
/// `.` as a path separator, so these are percent-escaped, and so is the escape character:
///
/// | in the source | in MongoDB |
/// | --- | --- |
/// | `%` (anywhere) | `%25` |
/// | NUL (anywhere) | `%00` |
/// | `.` (anywhere) | `%2E` |
/// | `$` (first character only) | `%24` |
///
/// Every other character, the empty name included, is kept. Names without these characters (the
/// usual case) are unchanged; any standard percent-decoder (`decodeURIComponent`,
/// `urllib.parse.unquote`) gives back the source name, see [`unescape_key`].
pub fn escape_key(key: &str) -> Cow<'_, str> {
    let needs_escape = key.starts_with('$') || key.bytes().any(|b| matches!(b, b'%' | b'.' | 0));
    if !needs_escape {
        return Cow::Borrowed(key);
    }
    let mut escaped = String::with_capacity(key.len() + 8);
    for (at, c) in key.char_indices() {
        match c {
            ESCAPE => escaped.push_str("%25"),
            '\0' => escaped.push_str("%00"),
            '.' => escaped.push_str("%2E"),
            '$' if at == 0 => escaped.push_str("%24"),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// The source name of a field name [`escape_key`] wrote (percent-decoding); `None` for a name it
/// cannot have written.
pub fn unescape_key(key: &str) -> Option<String> {
    let bytes = key.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = key.get(at + 1..at + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            decoded.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

pub(super) fn unsigned(u: u64) -> Bson {
    match i64::try_from(u) {
        Ok(i) => Bson::Int64(i),
        Err(_) => decimal(&u.to_string()),
    }
}

/// `json`, nested inside `depth` JSON arrays or objects of the same column value.
fn json_to_bson(json: &Json, depth: usize) -> Bson {
    match json {
        Json::Array(_) | Json::Object(_) if depth >= MAX_JSON_DEPTH => {
            let mut text = String::new();
            write_json_text(json, &mut text);
            Bson::Document(doc! { JSON_TEXT_KEY: text })
        }
        Json::Null => Bson::Null,
        Json::Bool(b) => Bson::Boolean(*b),
        Json::Int(i) => Bson::Int64(*i),
        Json::UInt(u) => unsigned(*u),
        Json::Double(d) => Bson::Double(*d),
        Json::Decimal(text) => decimal(text),
        Json::String(s) | Json::Temporal(s) => Bson::String(s.clone()),
        Json::Opaque { type_code, bytes } => Bson::Document(doc! {
            "$mysqlType": i32::from(*type_code),
            "bytes": Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: bytes.clone() },
        }),
        Json::Array(items) => Bson::Array(
            items
                .iter()
                .map(|item| json_to_bson(item, depth + 1))
                .collect(),
        ),
        Json::Object(members) => Bson::Document(
            members
                .iter()
                .map(|(k, v)| (escape_key(k).into_owned(), json_to_bson(v, depth + 1)))
                .collect(),
        ),
    }
}

/// `json` as compact JSON text: keys and strings exact, numbers with their exact digits (a double
/// in its shortest form that reads back to the same value), temporal values as the strings MySQL
/// prints, opaque values as MySQL prints them (`"base64:type<code>:<base64>"`).
pub(super) fn write_json_text(json: &Json, out: &mut String) {
    let quoted = |s: &str, out: &mut String| {
        out.push_str(&serde_json::to_string(s).expect("a string always serializes"))
    };
    match json {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Int(i) => out.push_str(&i.to_string()),
        Json::UInt(u) => out.push_str(&u.to_string()),
        Json::Double(d) => out.push_str(&format!("{d:?}")),
        Json::Decimal(text) => out.push_str(text),
        Json::String(s) | Json::Temporal(s) => quoted(s, out),
        Json::Opaque { type_code, bytes } => quoted(
            &format!("base64:type{type_code}:{}", standard_base64(bytes)),
            out,
        ),
        Json::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_json_text(item, out);
            }
            out.push(']');
        }
        Json::Object(members) => {
            out.push('{');
            for (index, (key, value)) in members.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                quoted(key, out);
                out.push(':');
                write_json_text(value, out);
            }
            out.push('}');
        }
    }
}

/// Standard base64 with padding (the `base64` crate, already in the build under `bson`).
pub(super) fn standard_base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Days in 400 Gregorian years: the calendar repeats exactly after them.
const DAYS_PER_400_YEARS: i64 = 146_097;

/// A TIMESTAMP as UTC text, `YYYY-MM-DDThh:mm:ss.ffffffZ`; the stored 0 is MySQL's zero
/// timestamp and stays `0000-00-00T00:00:00.000000Z`. The calendar is `time`'s (proleptic
/// Gregorian); a value beyond its years (±9999: only a damaged one) is shifted into them by whole
/// 400-year cycles, which the calendar repeats exactly, and the cycles added back to the year.
pub(super) fn timestamp_text(seconds: i64, micros: u32) -> String {
    if seconds == 0 && micros == 0 {
        return "0000-00-00T00:00:00.000000Z".into();
    }
    let days = seconds.div_euclid(86_400);
    let cycles = days.div_euclid(DAYS_PER_400_YEARS);
    let in_cycle = time::Duration::days(days.rem_euclid(DAYS_PER_400_YEARS))
        + time::Duration::seconds(seconds.rem_euclid(86_400));
    let t = time::OffsetDateTime::UNIX_EPOCH + in_cycle;
    let year = i64::from(t.year()) + 400 * cycles;
    format!(
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Exact decimal: Decimal128 when it holds the value exactly (34 significant digits), else text.
fn decimal(text: &str) -> Bson {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    if digits <= 34 {
        if let Ok(d) = text.parse::<bson::Decimal128>() {
            return Bson::Decimal128(d);
        }
    }
    Bson::String(text.to_string())
}
