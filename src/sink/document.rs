//! WAL transactions → MongoDB change documents (the contract in docs/change-document.md).
//!
//! Guarantees: the `_id` of a change is `"<source.name>/<gtid>:<ordinal>"`, derived only from the
//! source's name, the transaction's GTID and the change's ordinal inside it, so decoding the same
//! binlog again yields the same ids, and two sources (two `source.name`s) never share one, whatever
//! their GTIDs. Every document carries `hash`, a digest of everything else in it (see
//! [`content_hash`]), so a document met again under the same `_id` can be told to be the same
//! change or another one.
//! Conversion never fails silently: a value that has no exact BSON form is given a documented
//! lossless form instead.
//!
//! Field names from the source (column names, JSON object keys) are written through
//! [`escape_key`]: a reversible percent escape of the characters MongoDB cannot store or query as
//! a literal field name (NUL, `.`, a leading `$`, and `%` itself), so any legal row converts. JSON
//! nested deeper than [`MAX_JSON_DEPTH`] keeps its outer levels as documents and arrays, and each
//! subtree at that depth becomes `{"%json": "<its JSON text>"}`, within MongoDB's nesting limit.
//! Both are specified in docs/change-document.md ("Field names and deep JSON").
//! A DDL document's statement text passes through `redact::redact_statement` (already done
//! before the WAL; repeated here for records an earlier version wrote).

use std::borrow::Cow;

use bson::raw::RawBinaryRef;
use bson::{doc, Binary, Bson, Document, RawBson, RawBsonRef, RawDocumentBuf};

use crate::event::{Change, Json, RowChange, SourceTransaction, StatementChange, Table, Value};
use crate::redact::redact_statement;

/// The documents for one WAL record (a transaction or a fragment of one), in change order.
pub fn transaction_documents(source: &str, transaction: &SourceTransaction) -> Vec<Document> {
    let ts = bson::DateTime::from_millis(i64::from(transaction.timestamp) * 1000);
    transaction
        .changes
        .iter()
        .enumerate()
        .map(|(index, change)| (transaction.first_change as usize + index, change))
        .map(|(ordinal, change)| {
            let mut document = match change {
                Change::Row(row) => row_document(source, transaction, ts, ordinal, row),
                Change::Statement(statement) => {
                    statement_document(source, transaction, ts, ordinal, statement)
                }
            };
            // A document BSON cannot encode (a value over 16 MiB) is refused by the caller, which
            // names it; it has no hash.
            if let Ok(raw) = RawDocumentBuf::from_document(&document) {
                document.insert(HASH_FIELD, content_hash(raw.as_bytes()));
            }
            document
        })
        .collect()
}

/// The field holding a document's [`content_hash`].
pub const HASH_FIELD: &str = "hash";

/// The digest of a change document, over its BSON bytes without the `hash` field: the first 128
/// bits of SHA-256, as 32 lowercase hex digits. It covers the source, GTID, ordinal, table, op,
/// commit time, binlog coordinates and both row images, so two documents with the same `_id` and
/// the same hash are the same change.
pub fn content_hash(bson: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bson);
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends the `hash` field to a document written without it.
fn with_hash(mut document: RawDocumentBuf) -> RawDocumentBuf {
    let hash = content_hash(document.as_bytes());
    document.append_ref(HASH_FIELD, hash.as_str());
    document
}

/// The same documents as [`transaction_documents`], written straight to BSON bytes (no
/// intermediate [`Document`], no copies of names and strings): the forwarder's path. `None` when
/// a change needs the general path (a value the fast writer cannot encode; none is known since
/// field names are escaped); a test checks that both paths give identical bytes.
pub fn transaction_raw_documents(
    source: &str,
    transaction: &SourceTransaction,
) -> Option<Vec<RawDocumentBuf>> {
    let ts = bson::DateTime::from_millis(i64::from(transaction.timestamp) * 1000);
    transaction
        .changes
        .iter()
        .enumerate()
        .map(|(index, change)| {
            let ordinal = transaction.first_change as usize + index;
            match change {
                Change::Row(row) => row_raw_document(source, transaction, ts, ordinal, row),
                Change::Statement(statement) => Some(statement_raw_document(
                    source,
                    transaction,
                    ts,
                    ordinal,
                    statement,
                )),
            }
        })
        .collect()
}

fn row_raw_document(
    source: &str,
    transaction: &SourceTransaction,
    ts: bson::DateTime,
    ordinal: usize,
    row: &RowChange,
) -> Option<RawDocumentBuf> {
    let table = &*row.table;
    let mut pk = RawDocumentBuf::new();
    for (name, value) in row.key() {
        append_value(&mut pk, name, value)?;
    }
    let mut meta = RawDocumentBuf::new();
    meta.append_ref("source", source);
    meta.append_ref("db", table.database.as_str());
    meta.append_ref("tbl", table.name.as_str());
    meta.append_ref("pk", &pk);
    meta.append_ref("gtid", transaction.gtid.as_str());
    meta.append_ref("file", &*row.file);
    meta.append_ref("pos", row.pos as i64);
    meta.append_ref("row", ordinal as i64);
    let mut document = RawDocumentBuf::new();
    document.append_ref(
        "_id",
        change_id(source, &transaction.gtid, ordinal).as_str(),
    );
    document.append_ref("op", row.op.as_str());
    document.append_ref("ts", ts);
    document.append_ref("meta", &meta);
    for (name, image) in [("before", &row.before), ("after", &row.after)] {
        if let Some(values) = image {
            let mut raw = RawDocumentBuf::new();
            for (column, value) in table.columns.iter().zip(values) {
                append_value(&mut raw, column, value)?;
            }
            document.append_ref(name, &raw);
        }
    }
    Some(with_hash(document))
}

fn statement_raw_document(
    source: &str,
    transaction: &SourceTransaction,
    ts: bson::DateTime,
    ordinal: usize,
    statement: &StatementChange,
) -> RawDocumentBuf {
    let mut meta = RawDocumentBuf::new();
    meta.append_ref("source", source);
    meta.append_ref("db", statement.database.as_str());
    meta.append_ref("gtid", transaction.gtid.as_str());
    meta.append_ref("file", statement.file.as_str());
    meta.append_ref("pos", statement.pos as i64);
    meta.append_ref("row", ordinal as i64);
    let mut document = RawDocumentBuf::new();
    document.append_ref(
        "_id",
        change_id(source, &transaction.gtid, ordinal).as_str(),
    );
    document.append_ref("op", "ddl");
    document.append_ref("ts", ts);
    document.append_ref("meta", &meta);
    document.append_ref("statement", &*redact_statement(&statement.statement));
    with_hash(document)
}

/// Appends `value` as [`value_to_bson`] maps it, under the column name `name` (escaped with
/// [`escape_key`]): the common kinds by reference, the rest through [`value_to_bson`] itself, so
/// the mapping has one definition.
fn append_value(raw: &mut RawDocumentBuf, name: &str, value: &Value) -> Option<()> {
    let name = &*escape_key(name);
    match value {
        Value::Absent => {}
        Value::Null => raw.append_ref(name, RawBsonRef::Null),
        Value::Int(i) => raw.append_ref(name, *i),
        Value::Double(d) => raw.append_ref(name, *d),
        Value::Float(f) => raw.append_ref(name, f64::from(*f)),
        Value::Text(s) => raw.append_ref(name, s.as_str()),
        Value::Bytes(bytes) => raw.append_ref(
            name,
            RawBinaryRef {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes,
            },
        ),
        other => raw.append(name, RawBson::try_from(value_to_bson(other)).ok()?),
    }
    Some(())
}

/// `"<source>/<gtid>:<ordinal>"`. A GTID never contains `/`, so the id splits back at its last
/// `/` whatever the source's name.
pub fn change_id(source: &str, gtid: &str, ordinal: usize) -> String {
    format!("{source}/{gtid}:{ordinal}")
}

/// The `_id` sdl gave a change before ids named their source (`"<gtid>:<ordinal>"`): documents
/// written then keep it (see docs/change-document.md, "Upgrading from `<gtid>:<ordinal>` ids").
pub fn legacy_change_id(gtid: &str, ordinal: usize) -> String {
    format!("{gtid}:{ordinal}")
}

fn row_document(
    source: &str,
    transaction: &SourceTransaction,
    ts: bson::DateTime,
    ordinal: usize,
    row: &RowChange,
) -> Document {
    let table = &*row.table;
    let pk: Document = row
        .key()
        .map(|(name, value)| (escape_key(name).into_owned(), value_to_bson(value)))
        .collect();
    let mut document = doc! {
        "_id": change_id(source, &transaction.gtid, ordinal),
        "op": row.op.as_str(),
        "ts": ts,
        "meta": {
            "source": source,
            "db": &table.database,
            "tbl": &table.name,
            "pk": pk,
            "gtid": &transaction.gtid,
            "file": &*row.file,
            "pos": row.pos as i64,
            "row": ordinal as i64,
        },
    };
    if let Some(before) = &row.before {
        document.insert("before", image(table, before));
    }
    if let Some(after) = &row.after {
        document.insert("after", image(table, after));
    }
    document
}

fn statement_document(
    source: &str,
    transaction: &SourceTransaction,
    ts: bson::DateTime,
    ordinal: usize,
    statement: &StatementChange,
) -> Document {
    doc! {
        "_id": change_id(source, &transaction.gtid, ordinal),
        "op": "ddl",
        "ts": ts,
        "meta": {
            "source": source,
            "db": &statement.database,
            "gtid": &transaction.gtid,
            "file": &statement.file,
            "pos": statement.pos as i64,
            "row": ordinal as i64,
        },
        // Redacted when it was read from the binlog; again here for records an earlier version
        // wrote into the WAL.
        "statement": redact_statement(&statement.statement).as_ref(),
    }
}

fn image(table: &Table, values: &[Value]) -> Document {
    table
        .present(values)
        .map(|(name, value)| (escape_key(name).into_owned(), value_to_bson(value)))
        .collect()
}

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

fn unsigned(u: u64) -> Bson {
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
fn write_json_text(json: &Json, out: &mut String) {
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
        Json::Opaque { type_code, bytes } => {
            quoted(&format!("base64:type{type_code}:{}", base64(bytes)), out)
        }
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

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A TIMESTAMP as UTC text, `YYYY-MM-DDThh:mm:ss.ffffffZ`; the stored 0 is MySQL's zero
/// timestamp and stays `0000-00-00T00:00:00.000000Z`.
fn timestamp_text(seconds: i64, micros: u32) -> String {
    if seconds == 0 && micros == 0 {
        return "0000-00-00T00:00:00.000000Z".into();
    }
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_text_with_microseconds() {
        assert_eq!(timestamp_text(1, 0), "1970-01-01T00:00:01.000000Z");
        assert_eq!(
            timestamp_text(2_147_483_647, 999_999),
            "2038-01-19T03:14:07.999999Z"
        );
        assert_eq!(
            timestamp_text(951_782_400, 5),
            "2000-02-29T00:00:00.000005Z"
        );
        assert_eq!(timestamp_text(0, 0), "0000-00-00T00:00:00.000000Z");
    }

    #[test]
    fn negative_zero_keeps_its_sign() {
        let Bson::Double(d) = value_to_bson(&Value::Double(-0.0)) else {
            panic!("not a double")
        };
        assert_eq!(d.to_bits(), (-0.0f64).to_bits());
        let Bson::Double(f) = value_to_bson(&Value::Float(-0.0)) else {
            panic!("not a double")
        };
        assert_eq!(f.to_bits(), (-0.0f64).to_bits());
    }

    #[test]
    fn unsigned_above_i64_is_an_exact_decimal() {
        assert_eq!(unsigned(5), Bson::Int64(5));
        assert_eq!(
            unsigned(u64::MAX).to_string(),
            Bson::Decimal128("18446744073709551615".parse().unwrap()).to_string()
        );
    }

    #[test]
    fn field_names_are_escaped_reversibly() {
        for (source, stored) in [
            ("id", "id"),
            ("", ""),
            ("grüße 😀", "grüße 😀"),
            ("a\0b", "a%00b"),
            ("$set", "%24set"),
            ("a$", "a$"),
            ("$$", "%24$"),
            ("a.b", "a%2Eb"),
            ("..", "%2E%2E"),
            ("50%", "50%25"),
            ("%2E", "%252E"),
            ("%json", "%25json"),
            ("$a.b%\0", "%24a%2Eb%25%00"),
        ] {
            assert_eq!(escape_key(source), stored, "{source:?}");
            assert_eq!(unescape_key(stored).as_deref(), Some(source), "{stored:?}");
        }
        assert!(matches!(escape_key("plain"), Cow::Borrowed(_)));
        // The marker key is not a name escape_key writes.
        assert_eq!(unescape_key(JSON_TEXT_KEY), None);
    }

    /// The nesting depth of a BSON value: 1 for a document or array holding only scalars.
    fn bson_depth(value: &Bson) -> usize {
        match value {
            Bson::Document(d) => 1 + d.values().map(bson_depth).max().unwrap_or(0),
            Bson::Array(a) => 1 + a.iter().map(bson_depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    #[test]
    fn json_nested_past_the_limit_keeps_its_outer_levels_and_the_rest_as_text() {
        let mut deep = Json::Object(vec![("$leaf.".into(), Json::Decimal("1.50".into()))]);
        for level in 0..150 {
            deep = if level % 2 == 0 {
                Json::Array(vec![Json::Int(level), deep])
            } else {
                Json::Object(vec![("k".into(), deep)])
            };
        }
        let bson = value_to_bson(&Value::Json(deep.clone()));
        assert_eq!(bson_depth(&bson), MAX_JSON_DEPTH + 1);
        // Walk down to the marker: MAX_JSON_DEPTH levels of the original shape.
        let mut at = &bson;
        let mut original = &deep;
        for _ in 0..MAX_JSON_DEPTH {
            (at, original) = match (at, original) {
                (Bson::Array(items), Json::Array(json)) => (&items[1], &json[1]),
                (Bson::Document(d), Json::Object(json)) => (d.get("k").unwrap(), &json[0].1),
                other => panic!("shape differs: {other:?}"),
            };
        }
        let Bson::Document(marker) = at else {
            panic!("no marker document: {at:?}")
        };
        assert_eq!(marker.keys().collect::<Vec<_>>(), [JSON_TEXT_KEY]);
        let text = marker.get_str(JSON_TEXT_KEY).unwrap();
        assert!(text.contains(r#"{"k":[0,{"$leaf.":1.50}]}"#), "{text}");
        // The text is the subtree, exactly: parsed again it is the same value.
        assert_eq!(&crate::source::json_text::parse(text).unwrap(), original);
    }

    #[test]
    fn json_text_of_every_kind_reads_back() {
        let json = Json::Array(vec![
            Json::Null,
            Json::Bool(false),
            Json::Int(i64::MIN),
            Json::UInt(u64::MAX),
            Json::Double(0.1),
            Json::Double(-1.5e300),
            Json::Decimal("-0.000".into()),
            Json::String("q\"\\\n\u{1}é".into()),
            Json::Temporal("2015-01-15 23:24:25.000000".into()),
            Json::Opaque {
                type_code: 15,
                bytes: vec![1, 2, 3, 4],
            },
            Json::Object(vec![("a\0".into(), Json::Array(vec![]))]),
        ]);
        let mut text = String::new();
        write_json_text(&json, &mut text);
        assert_eq!(
            text,
            r#"[null,false,-9223372036854775808,18446744073709551615,0.1,-1.5e300,-0.000,"q\"\\\n\u0001é","2015-01-15 23:24:25.000000","base64:type15:AQIDBA==",{"a\u0000":[]}]"#
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn the_fast_writer_gives_the_same_bytes_as_the_general_mapping() {
        use crate::event::{Json, RowOp};
        let values = vec![
            Value::Null,
            Value::Int(-7),
            Value::Absent,
            Value::UInt(u64::MAX),
            Value::UInt(3),
            Value::Float(-0.0),
            Value::Double(1.5e300),
            Value::Decimal("-12345678.90".into()),
            Value::Decimal("9".repeat(40)),
            Value::Text("grüße".into()),
            Value::Bytes(vec![0, 255, 7]),
            Value::Date {
                year: 0,
                month: 0,
                day: 0,
            },
            Value::DateTime {
                year: 2024,
                month: 2,
                day: 29,
                hour: 23,
                minute: 59,
                second: 59,
                micros: 1,
            },
            Value::Timestamp {
                seconds: 951_782_400,
                micros: 5,
            },
            Value::Time {
                negative: true,
                hours: 838,
                minute: 59,
                second: 59,
                micros: 0,
            },
            Value::Set(vec!["a".into(), "b".into()]),
            Value::Json(Json::Object(vec![
                (
                    "k".into(),
                    Json::Array(vec![Json::Int(1), Json::Decimal("1.10".into())]),
                ),
                (
                    "o".into(),
                    Json::Opaque {
                        type_code: 15,
                        bytes: vec![1, 2],
                    },
                ),
                // Keys MongoDB cannot take as they are, and nesting past the limit.
                ("a\0b".into(), Json::Int(1)),
                ("$set".into(), Json::Int(2)),
                ("a.b".into(), Json::Int(3)),
                ("".into(), Json::Int(4)),
                (
                    "deep".into(),
                    (0..200).fold(Json::Null, |inner, _| Json::Array(vec![inner])),
                ),
            ])),
        ];
        let table = std::sync::Arc::new(Table {
            database: "app".into(),
            name: "t".into(),
            // Column names MongoDB cannot take as they are (MariaDB allows `$x` and `a.b`).
            columns: (0..values.len())
                .map(|i| match i {
                    3 => "$x".to_string(),
                    4 => "a.b".to_string(),
                    5 => "a\0b".to_string(),
                    i => format!("c{i}"),
                })
                .collect(),
            // Key order differs from column order.
            primary_key: vec![9, 1],
        });
        let columns = values;
        let row = |op, before: Option<Vec<Value>>, after: Option<Vec<Value>>| {
            Change::Row(RowChange {
                op,
                table: table.clone(),
                file: "mariadb-bin.000001".into(),
                pos: 42,
                before,
                after,
            })
        };
        let transaction = SourceTransaction {
            gtid: "0-1-9".into(),
            timestamp: 1_700_000_000,
            position_after: "0-1-8; partial 0-1-9:1000".into(),
            first_change: 1000,
            ends_transaction: false,
            changes: vec![
                row(RowOp::Insert, None, Some(columns.clone())),
                row(RowOp::Update, Some(columns.clone()), Some(columns.clone())),
                row(RowOp::Delete, Some(columns), None),
                Change::Statement(StatementChange {
                    database: "app".into(),
                    statement: "ALTER TABLE t ADD c INT".into(),
                    file: "mariadb-bin.000001".into(),
                    pos: 99,
                }),
            ],
        };
        let general: Vec<RawDocumentBuf> = transaction_documents("eu-1", &transaction)
            .iter()
            .map(|d| RawDocumentBuf::from_document(d).unwrap())
            .collect();
        let fast = transaction_raw_documents("eu-1", &transaction).unwrap();
        assert_eq!(general.len(), fast.len());
        for (g, f) in general.iter().zip(&fast) {
            assert_eq!(
                g.as_bytes(),
                f.as_bytes(),
                "{:?}\nvs\n{:?}",
                g.to_document(),
                f.to_document()
            );
        }
        assert_eq!(fast[0].get_str("_id").unwrap(), "eu-1/0-1-9:1000");
        // The hash covers the whole document but itself, and tells apart the same change of
        // another source.
        for f in &fast {
            let mut without = f.to_document().unwrap();
            let hash = without.remove(HASH_FIELD).unwrap();
            let bytes = RawDocumentBuf::from_document(&without).unwrap();
            assert_eq!(hash.as_str().unwrap(), content_hash(bytes.as_bytes()));
        }
        let other = transaction_raw_documents("eu-2", &transaction).unwrap();
        assert_eq!(other[0].get_str("_id").unwrap(), "eu-2/0-1-9:1000");
        assert_ne!(
            other[0].get_str(HASH_FIELD).unwrap(),
            fast[0].get_str(HASH_FIELD).unwrap()
        );
        let insert = fast[0].to_document().unwrap();
        let pk = insert
            .get_document("meta")
            .unwrap()
            .get_document("pk")
            .unwrap();
        assert_eq!(pk.keys().collect::<Vec<_>>(), ["c9", "c1"], "key order");
        assert_eq!(pk.get_str("c9").unwrap(), "grüße");
        let after = insert.get_document("after").unwrap();
        assert!(
            after.contains_key("c0") && !after.contains_key("c2"),
            "{after}"
        );
        assert_eq!(after.len(), 16, "every column (17) but the absent one");
        for escaped in ["%24x", "a%2Eb", "a%00b"] {
            assert!(after.contains_key(escaped), "{escaped} missing: {after}");
        }
        let json = after.get_document("c16").unwrap();
        assert_eq!(
            json.keys().collect::<Vec<_>>(),
            ["k", "o", "a%00b", "%24set", "a%2Eb", "", "deep"]
        );
    }
}
