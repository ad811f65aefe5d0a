//! WAL transactions → MongoDB change documents (the contract in docs/change-document.md).
//!
//! Guarantees: the `_id` of a change is `"<gtid>:<ordinal>"`, derived only from the transaction's
//! GTID and the change's ordinal inside it, so decoding the same binlog again yields the same ids.
//! Conversion never fails silently: a value that has no exact BSON form is given a documented
//! lossless form instead.

use bson::{doc, Binary, Bson, Document};

use crate::event::{Change, Column, RowChange, RowOp, SourceTransaction, StatementChange, Value};

/// The documents for one transaction, in change order.
pub fn transaction_documents(transaction: &SourceTransaction) -> Vec<Document> {
    let ts = bson::DateTime::from_millis(i64::from(transaction.timestamp) * 1000);
    transaction
        .changes
        .iter()
        .enumerate()
        .map(|(ordinal, change)| match change {
            Change::Row(row) => row_document(transaction, ts, ordinal, row),
            Change::Statement(statement) => statement_document(transaction, ts, ordinal, statement),
        })
        .collect()
}

pub fn change_id(gtid: &str, ordinal: usize) -> String {
    format!("{gtid}:{ordinal}")
}

fn row_document(
    transaction: &SourceTransaction,
    ts: bson::DateTime,
    ordinal: usize,
    row: &RowChange,
) -> Document {
    // The row's identity: its key after the change, or before it for a delete.
    let identity = match row.op {
        RowOp::Delete => row.before.as_ref(),
        RowOp::Insert | RowOp::Update => row.after.as_ref(),
    };
    let mut pk = Document::new();
    if let Some(columns) = identity {
        for name in &row.primary_key {
            if let Some(column) = columns.iter().find(|c| &c.name == name) {
                pk.insert(name.clone(), value_to_bson(&column.value));
            }
        }
    }
    let mut document = doc! {
        "_id": change_id(&transaction.gtid, ordinal),
        "op": row.op.as_str(),
        "ts": ts,
        "meta": {
            "db": &row.database,
            "tbl": &row.table,
            "pk": pk,
            "gtid": &transaction.gtid,
            "file": &row.file,
            "pos": row.pos as i64,
            "row": ordinal as i64,
        },
    };
    if let Some(before) = &row.before {
        document.insert("before", image(before));
    }
    if let Some(after) = &row.after {
        document.insert("after", image(after));
    }
    document
}

fn statement_document(
    transaction: &SourceTransaction,
    ts: bson::DateTime,
    ordinal: usize,
    statement: &StatementChange,
) -> Document {
    doc! {
        "_id": change_id(&transaction.gtid, ordinal),
        "op": "ddl",
        "ts": ts,
        "meta": {
            "db": &statement.database,
            "gtid": &transaction.gtid,
            "file": &statement.file,
            "pos": statement.pos as i64,
            "row": ordinal as i64,
        },
        "statement": &statement.statement,
    }
}

fn image(columns: &[Column]) -> Document {
    columns
        .iter()
        .map(|c| (c.name.clone(), value_to_bson(&c.value)))
        .collect()
}

/// Maps a source value to BSON. See docs/change-document.md for the table.
pub fn value_to_bson(value: &Value) -> Bson {
    match value {
        Value::Null => Bson::Null,
        Value::Int(i) => Bson::Int64(*i),
        Value::UInt(u) => match i64::try_from(*u) {
            Ok(i) => Bson::Int64(i),
            Err(_) => decimal(&u.to_string()),
        },
        Value::Float(f) => Bson::Double(f64::from(*f)),
        Value::Double(d) => Bson::Double(*d),
        Value::Decimal(text) => decimal(text),
        Value::Text(s) => Bson::String(s.clone()),
        Value::Bytes(b) => Bson::Binary(Binary {
            subtype: bson::spec::BinarySubtype::Generic,
            bytes: b.clone(),
        }),
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
        Value::Timestamp { seconds, micros } => Bson::DateTime(bson::DateTime::from_millis(
            seconds * 1000 + i64::from(*micros) / 1000,
        )),
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
        Value::Json(text) => match serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|json| bson::to_bson(&json).ok())
        {
            Some(bson) => bson,
            None => Bson::String(text.clone()),
        },
    }
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
