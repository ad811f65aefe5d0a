//! The key side of keyset pagination: the chunk queries (`WHERE` past the last key read, `ORDER
//! BY` the key) and the last key read bound back as parameters that compare the way the key's
//! index orders (ENUM/SET by their numbers, DECIMAL as DECIMAL, BIT as a number, TIMESTAMP in
//! UTC, MariaDB's INET4/INET6/UUID as their stored bytes), so paging visits every row once, in key
//! order.

use super::{ColumnKind, SnapshotTable};
use crate::event::Value;

/// `name` as an identifier: in backticks, each backtick doubled.
fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `DECIMAL(p,s)` of a COLUMN_TYPE such as `decimal(10,2) unsigned`.
pub(super) fn decimal_type(column_type: &str) -> String {
    let lower = column_type.to_ascii_lowercase();
    let precision = lower
        .strip_prefix("decimal")
        .and_then(|rest| rest.split(')').next())
        .map(|args| args.trim_start_matches('('))
        .filter(|args| !args.is_empty() && args.chars().all(|c| c.is_ascii_digit() || c == ','));
    match precision {
        Some(args) => format!("DECIMAL({args})"),
        None => "DECIMAL(65,30)".to_string(),
    }
}

/// The first chunk's query and every later one's (keyset pagination past the `after` key).
pub(super) fn chunk_queries(
    database: &str,
    table: &str,
    columns: &[String],
    key: &[u32],
    kinds: &[ColumnKind],
) -> (String, String) {
    let select = columns
        .iter()
        .zip(kinds)
        .map(|(c, kind)| match kind {
            ColumnKind::StoredBinary(length) => format!("CAST({} AS BINARY({length}))", quote(c)),
            _ => quote(c),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let from = format!("{}.{}", quote(database), quote(table));
    let key_names: Vec<String> = key.iter().map(|&k| quote(&columns[k as usize])).collect();
    let placeholders: Vec<String> = key
        .iter()
        .map(|&k| match &kinds[k as usize] {
            ColumnKind::Decimal(decimal) => format!("CAST(? AS {decimal})"),
            // Stored bytes, not text to parse: sent as hex, since a string parameter is text in
            // the connection's character set, and bytes that are not valid in it do not survive.
            ColumnKind::StoredBinary(_) => "UNHEX(?)".to_string(),
            _ => "?".to_string(),
        })
        .collect();
    let order = key_names.join(", ");
    // k1 > ? OR (k1 = ? AND k2 > ?) OR (k1 = ? AND k2 = ? AND k3 > ?) ...
    let past = (0..key.len())
        .map(|i| {
            let mut terms: Vec<String> = (0..i)
                .map(|j| format!("{} = {}", key_names[j], placeholders[j]))
                .collect();
            terms.push(format!("{} > {}", key_names[i], placeholders[i]));
            if i == 0 {
                terms.remove(0)
            } else {
                format!("({})", terms.join(" AND "))
            }
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    (
        format!("SELECT {select} FROM {from} ORDER BY {order} LIMIT ?"),
        format!("SELECT {select} FROM {from} WHERE {past} ORDER BY {order} LIMIT ?"),
    )
}

/// The parameters of the `after` query for the key `after`: for each key column i, the equality
/// terms of the columns before it and then its own `>` term.
pub(super) fn after_params(
    table: &SnapshotTable,
    after: &[Value],
) -> Result<Vec<mysql_async::Value>, String> {
    let key = &table.table.primary_key;
    if after.len() != key.len() {
        return Err(format!(
            "the resume key has {} values, the table's key {} columns",
            after.len(),
            key.len()
        ));
    }
    let bound: Vec<mysql_async::Value> = key
        .iter()
        .zip(after)
        .map(|(&k, value)| key_param(&table.columns[k as usize], value))
        .collect::<Result<_, _>>()?;
    let mut params = Vec::with_capacity(key.len() * (key.len() + 1) / 2 + 1);
    for i in 0..key.len() {
        params.extend(bound[..=i].iter().cloned());
    }
    Ok(params)
}

/// A key value as a parameter that compares the way the key's index orders.
pub(super) fn key_param(kind: &ColumnKind, value: &Value) -> Result<mysql_async::Value, String> {
    use mysql_async::Value as My;
    let member = |members: &[String], name: &str| {
        let index = members.iter().position(|m| m == name);
        index.ok_or_else(|| format!("key value {name:?} is not one of its members {members:?}"))
    };
    match (kind, value) {
        // ENUM and SET order by their numbers; a string would compare as text.
        (ColumnKind::Enum(_), Value::Text(name)) if name.is_empty() => return Ok(My::UInt(0)),
        (ColumnKind::Enum(members), Value::Text(name)) => {
            return Ok(My::UInt(member(members, name)? as u64 + 1));
        }
        (ColumnKind::Set(members), Value::Set(chosen)) => {
            let mut bits = 0u64;
            for name in chosen {
                bits |= 1 << member(members, name)?;
            }
            return Ok(My::UInt(bits));
        }
        (ColumnKind::Text, Value::Bytes(_)) => {
            return Err(
                "a key value is not valid text in its column's character set (or one sdl \
                        does not know), and cannot be bound back as the text it compares as"
                    .into(),
            );
        }
        (ColumnKind::StoredBinary(_), Value::Bytes(bytes)) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
            return Ok(My::Bytes(hex.into_bytes()));
        }
        // BIT compares as a number, its bytes big-endian.
        (ColumnKind::Bit, Value::Bytes(bytes)) if bytes.len() <= 8 => {
            return Ok(My::UInt(
                bytes.iter().fold(0, |n, b| (n << 8) | u64::from(*b)),
            ));
        }
        _ => {}
    }
    Ok(match value {
        Value::Absent | Value::Null => return Err("a key value is NULL".into()),
        Value::Int(i) => My::Int(*i),
        Value::UInt(u) => My::UInt(*u),
        Value::Float(f) => My::Float(*f),
        Value::Double(d) => My::Double(*d),
        Value::Decimal(text) | Value::Text(text) => My::Bytes(text.as_bytes().to_vec()),
        Value::Bytes(bytes) => My::Bytes(bytes.clone()),
        Value::Date { year, month, day } => My::Date(*year, *month, *day, 0, 0, 0, 0),
        Value::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        } => My::Date(*year, *month, *day, *hour, *minute, *second, *micros),
        // The session's time zone is UTC (prepare_session).
        Value::Timestamp { seconds, micros } => {
            let (year, month, day, hour, minute, second) = utc_civil(*seconds)?;
            My::Date(year, month, day, hour, minute, second, *micros)
        }
        Value::Time {
            negative,
            hours,
            minute,
            second,
            micros,
        } => {
            let hour = u8::try_from(hours % 24).expect("below 24");
            My::Time(*negative, hours / 24, hour, *minute, *second, *micros)
        }
        Value::Set(_) | Value::Json(_) => {
            return Err(format!("{value:?} cannot be a key value of this column"));
        }
    })
}

/// The UTC date and time of `seconds` since the epoch (the inverse of
/// [`timestamp_value`](super::timestamp_value); 0 is the zero TIMESTAMP).
pub(super) fn utc_civil(seconds: i64) -> Result<(u16, u8, u8, u8, u8, u8), String> {
    if seconds == 0 {
        return Ok((0, 0, 0, 0, 0, 0));
    }
    let t = time::OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|e| format!("TIMESTAMP {seconds}: {e}"))?;
    let year = u16::try_from(t.year()).map_err(|e| format!("TIMESTAMP {seconds}: {e}"))?;
    Ok((
        year,
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    ))
}
