//! Column values: a decoded binlog value into sdl's lossless [`Value`].
//!
//! Guarantee: column values are exact ([`convert_value`]): strings in the column's charset from
//! the TABLE_MAP metadata, ENUM and SET by their names, JSON structured with exact numbers,
//! BINARY(n) padded back to its length, a signed MEDIUMINT sign-extended, YEAR 0000 kept as 0.

use base64::prelude::{Engine as _, BASE64_STANDARD};
use mysql_async::binlog::jsonb::{JsonContainer, JsonDom, JsonNumber, JsonScalar};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;

use super::charset;
use crate::event::{Json, Value};

/// What the value conversion needs to know about a column.
pub struct ColumnInfo<'a> {
    pub column_type: ColumnType,
    /// Collation id (character columns, ENUM, SET).
    pub charset: u16,
    pub enum_members: Option<&'a [Vec<u8>]>,
    pub set_members: Option<&'a [Vec<u8>]>,
    /// CHAR/BINARY declared byte length: BINARY values are padded back to it with 0x00, as the
    /// server returns them (the binlog strips trailing 0x00 from BINARY(n)).
    pub fixed_length: Option<usize>,
    pub unsigned: bool,
    /// ENUM/SET members are UTF-8 text (from information_schema), not in the column's charset.
    pub members_utf8: bool,
}

/// Converts one decoded binlog value into sdl's lossless [`Value`].
pub fn convert_value(column: &ColumnInfo<'_>, value: BinlogValue<'_>) -> Result<Value, String> {
    use mysql_async::Value as My;
    let value = match value {
        BinlogValue::Value(v) => v,
        BinlogValue::Jsonb(j) => {
            let dom = j
                .parse()
                .map_err(|e| format!("binary JSON does not decode: {e}"))?;
            return Ok(Value::Json(json_from_dom(dom)));
        }
        BinlogValue::JsonDiff(_) => {
            return Err("partial JSON update in a full row image".into());
        }
    };
    Ok(match (column.column_type, value) {
        (_, My::NULL) => Value::Null,
        (ColumnType::MYSQL_TYPE_ENUM, My::Int(index)) => match column.enum_members {
            // Index 0 is the '' MySQL stores for an invalid value in non-strict mode.
            Some(_) if index == 0 => Value::Text(String::new()),
            Some(members) => {
                let member = usize::try_from(index - 1)
                    .ok()
                    .and_then(|i| members.get(i))
                    .ok_or_else(|| {
                        format!("ENUM index {index} beyond its {} members", members.len())
                    })?;
                Value::Text(member_text(column, member))
            }
            None => Value::Int(index),
        },
        (ColumnType::MYSQL_TYPE_SET, My::Bytes(bits)) => match column.set_members {
            Some(members) => {
                // Little-endian bitmap, bit k = member k.
                let mut chosen = Vec::new();
                for (k, member) in members.iter().enumerate() {
                    if bits.get(k / 8).is_some_and(|b| b & (1 << (k % 8)) != 0) {
                        chosen.push(member_text(column, member));
                    }
                }
                let known = members.len();
                let stray = bits.iter().enumerate().any(|(byte, b)| {
                    (0..8).any(|bit| b & (1 << bit) != 0 && byte * 8 + bit >= known)
                });
                if stray {
                    return Err(format!("SET bitmap has bits beyond its {known} members"));
                }
                Value::Set(chosen)
            }
            None => Value::Bytes(bits),
        },
        (
            ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE,
            My::Date(year, month, day, ..),
        ) => Value::Date { year, month, day },
        // mysql_common reads a signed MEDIUMINT without sign extension (-8388608 arrives as
        // 8388608): extend bit 23 here. A correctly extended value is unchanged by this.
        (ColumnType::MYSQL_TYPE_INT24, My::Int(i)) if !column.unsigned => {
            Value::Int((i << 40) >> 40)
        }
        (ColumnType::MYSQL_TYPE_TIMESTAMP, My::Int(seconds)) => {
            Value::Timestamp { seconds, micros: 0 }
        }
        (_, My::Int(i)) => Value::Int(i),
        (_, My::UInt(u)) => Value::UInt(u),
        (_, My::Float(f)) => Value::Float(f),
        (_, My::Double(d)) => Value::Double(d),
        (_, My::Date(year, month, day, hour, minute, second, micros)) => Value::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        },
        (_, My::Time(negative, days, hours, minute, second, micros)) => Value::Time {
            negative,
            hours: days * 24 + u32::from(hours),
            minute,
            second,
            micros,
        },
        (ColumnType::MYSQL_TYPE_STRING, My::Bytes(mut bytes))
            if column.charset == charset::BINARY =>
        {
            if let Some(length) = column.fixed_length {
                if bytes.len() < length {
                    bytes.resize(length, 0);
                }
            }
            Value::Bytes(bytes)
        }
        (column_type, My::Bytes(bytes)) => convert_bytes(column_type, column.charset, bytes)?,
    })
}

/// ENUM/SET member names are stored in the column's charset; one that does not decode (never seen
/// in practice) is written as `0x` and its bytes in hex, so the value is still exact.
fn member_text(column: &ColumnInfo<'_>, member: &[u8]) -> String {
    let charset = if column.members_utf8 {
        charset::Charset::Utf8
    } else {
        charset::charset_of(column.charset)
    };
    match charset::decode(charset, member)
        .or_else(|| std::str::from_utf8(member).ok().map(str::to_owned))
    {
        Some(text) => text,
        None => format!(
            "0x{}",
            member
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
    }
}

fn json_from_dom(dom: JsonDom) -> Json {
    match dom {
        JsonDom::Container(JsonContainer::Array(items)) => {
            Json::Array(items.into_iter().map(json_from_dom).collect())
        }
        JsonDom::Container(JsonContainer::Object(members)) => Json::Object(
            members
                .into_iter()
                .map(|(k, v)| (k, json_from_dom(v)))
                .collect(),
        ),
        JsonDom::Scalar(scalar) => match scalar {
            JsonScalar::Null => Json::Null,
            JsonScalar::Boolean(b) => Json::Bool(b),
            JsonScalar::String(s) => Json::String(s),
            JsonScalar::Number(JsonNumber::Int(i)) => Json::Int(i),
            JsonScalar::Number(JsonNumber::Uint(u)) => Json::UInt(u),
            JsonScalar::Number(JsonNumber::Double(d)) => Json::Double(d),
            JsonScalar::Number(JsonNumber::Decimal(d)) => Json::Decimal(d.to_string()),
            JsonScalar::DateTime(t) => Json::Temporal(format!("{t:.6}")),
            JsonScalar::Opaque(opaque) => {
                // JsonOpaque keeps its fields private; its Display is `base64:type<id>:<data>`.
                let text = opaque.to_string();
                text.strip_prefix("base64:type")
                    .and_then(|rest| rest.split_once(':'))
                    .and_then(|(id, data)| Some((id.parse().ok()?, base64_decode(data)?)))
                    .map(|(type_code, bytes)| Json::Opaque { type_code, bytes })
                    .unwrap_or(Json::String(text))
            }
        },
    }
}

/// The bytes of an opaque JSON value's data. `mysql_common` prints them with the `base64` crate's
/// standard engine (padded), so the same engine decodes them exactly; anything else is `None`.
pub(super) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    BASE64_STANDARD.decode(text).ok()
}

fn convert_bytes(column_type: ColumnType, collation: u16, bytes: Vec<u8>) -> Result<Value, String> {
    use ColumnType::*;
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).map_err(|e| e.to_string());
    Ok(match column_type {
        MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => Value::Decimal(text(bytes)?),
        MYSQL_TYPE_YEAR => {
            // mysql_common adds 1900 to the stored byte; the stored 0 is YEAR 0000, not 1900
            // (which YEAR cannot hold).
            let year: i64 = text(bytes)?
                .parse()
                .map_err(|e| format!("YEAR value: {e}"))?;
            Value::Int(if year == 1900 { 0 } else { year })
        }
        MYSQL_TYPE_TIMESTAMP2 | MYSQL_TYPE_TIMESTAMP => {
            let text = text(bytes)?;
            let (secs, micros) = text.split_once('.').unwrap_or((&text, "0"));
            Value::Timestamp {
                seconds: secs.parse().map_err(|e| format!("TIMESTAMP value: {e}"))?,
                micros: micros
                    .parse()
                    .map_err(|e| format!("TIMESTAMP value: {e}"))?,
            }
        }
        MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING
        | MYSQL_TYPE_STRING
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB => match charset::decode(charset::charset_of(collation), &bytes) {
            Some(text) => Value::Text(text),
            None => Value::Bytes(bytes),
        },
        _ => Value::Bytes(bytes),
    })
}
