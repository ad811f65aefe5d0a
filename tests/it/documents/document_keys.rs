//! No legal row can poison the relay (issue 12, item 6): JSON keys with NUL, `$`-prefixed, dotted
//! or empty keys, column names MongoDB cannot take as they are (`$x`, `a.b`), and JSON nested past
//! MongoDB's limit all arrive, in the documented lossless form (docs/change-document.md, "Field
//! names and deep JSON"): names percent-escaped, deep subtrees as `{"%json": "<JSON text>"}`. Each
//! round-trips to the source value by that rule, and the relay keeps going.

use std::time::Duration;

use crate::support::{wait_for_offset, Relay};
use mongodb::bson::{doc, Bson, Document};
use mysql_async::prelude::Queryable;
use sdl::event::{Change, Json, SourceTransaction, Value};

const TIMEOUT: Duration = Duration::from_secs(120);

/// The documented decoding of a stored field name: standard percent-decoding (written here
/// independently of sdl's own `unescape_key`, as a reader would).
fn percent_decode(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = std::str::from_utf8(&bytes[at + 1..at + 3]).unwrap();
            out.push(
                u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad escape in {key:?}")),
            );
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A stored JSON value decoded by the documented rule: keys percent-decoded, and a
/// `{"%json": text}` document read as the JSON text it holds.
fn decode_stored(value: &Bson) -> serde_json::Value {
    match value {
        Bson::Document(d) if d.len() == 1 && d.contains_key("%json") => {
            serde_json::from_str(d.get_str("%json").unwrap()).unwrap()
        }
        Bson::Document(d) => serde_json::Value::Object(
            d.iter()
                .map(|(k, v)| (percent_decode(k), decode_stored(v)))
                .collect(),
        ),
        Bson::Array(items) => serde_json::Value::Array(items.iter().map(decode_stored).collect()),
        Bson::Int64(i) => (*i).into(),
        Bson::String(s) => s.clone().into(),
        Bson::Boolean(b) => (*b).into(),
        Bson::Null => serde_json::Value::Null,
        other => panic!("unexpected BSON in a test value: {other:?}"),
    }
}

/// Equality that also compares document key order.
fn same(a: &Bson, b: &Bson) -> bool {
    match (a, b) {
        (Bson::Document(x), Bson::Document(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((kx, vx), (ky, vy))| kx == ky && same(vx, vy))
        }
        (Bson::Array(x), Bson::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_keys_and_column_names_mongodb_cannot_take_arrive_escaped_and_round_trip() {
    // MariaDB allows `$` and `.` in column names (never NUL, never the empty name).
    let mut relay = Relay::builder()
        .sql(&[
            "CREATE TABLE app.odd (`$x` INT, `a.b` VARCHAR(10), `50%` INT, `ключ` INT, doc JSON, \
               PRIMARY KEY (`$x`, `a.b`))",
        ])
        .following()
        .await;
    let mut conn = relay.conn().await;

    // (id, JSON text as MariaDB stores it, the document sdl must write)
    let rows: Vec<(i64, &str, Bson)> = vec![
        (
            1,
            r#"{"a\u0000b": 1}"#,
            Bson::Document(doc! { "a%00b": 1i64 }),
        ),
        (2, r#"{"$set": 1}"#, Bson::Document(doc! { "%24set": 1i64 })),
        (3, r#"{"a.b": 1}"#, Bson::Document(doc! { "a%2Eb": 1i64 })),
        (4, r#"{"": 1}"#, Bson::Document(doc! { "": 1i64 })),
        (
            5,
            r#"{"%": 1, "%25": 2, "%json": "x", "a$": 3}"#,
            Bson::Document(doc! { "%25": 1i64, "%2525": 2i64, "%25json": "x", "a$": 3i64 }),
        ),
        (
            6,
            r#"{"$outer": {"x.y": [{"\u0000": null, "$mysqlType": 15}]}}"#,
            Bson::Document(doc! {
                "%24outer": { "x%2Ey": [{ "%00": Bson::Null, "%24mysqlType": 15i64 }] }
            }),
        ),
        (
            7,
            r#"["$notakey", "a.b", "\u0000"]"#,
            Bson::Array(vec!["$notakey".into(), "a.b".into(), "\0".into()]),
        ),
    ];
    for (id, text, _) in &rows {
        conn.exec_drop(
            "INSERT INTO app.odd VALUES (?, 'k.1', 7, 8, ?)",
            (*id, *text),
        )
        .await
        .unwrap_or_else(|e| panic!("row {id}: {e}"));
    }
    conn.query_drop("UPDATE app.odd SET `50%` = 9 WHERE `$x` = 2")
        .await
        .unwrap();
    relay.wait_caught_up(TIMEOUT).await;
    assert!(relay.sdl.is_running(), "sdl stopped: {}", relay.sdl.logs());

    let docs = relay.documents().await;
    let inserts: Vec<&Document> = docs
        .iter()
        .filter(|d| d.get_str("op").unwrap() == "insert")
        .collect();
    assert_eq!(inserts.len(), rows.len());
    // What MariaDB holds, to check the round trip against.
    let stored: Vec<(i64, String)> = conn
        .query("SELECT `$x`, doc FROM app.odd ORDER BY `$x`")
        .await
        .unwrap();
    for ((id, text, expected), insert) in rows.iter().zip(&inserts) {
        let after = insert.get_document("after").unwrap();
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            ["%24x", "a%2Eb", "50%25", "ключ", "doc"],
            "column names, escaped, in table order"
        );
        assert_eq!(after.get_i64("%24x").unwrap(), *id);
        assert_eq!(after.get_str("a%2Eb").unwrap(), "k.1");
        let pk = insert
            .get_document("meta")
            .unwrap()
            .get_document("pk")
            .unwrap();
        assert!(
            same(
                &Bson::Document(pk.clone()),
                &Bson::Document(doc! { "%24x": *id, "a%2Eb": "k.1" })
            ),
            "meta.pk of {id}: {pk}"
        );
        let got = after.get("doc").unwrap();
        assert!(
            same(got, expected),
            "row {id} ({text}): got {got:?}, expected {expected:?}"
        );
        // The documented rule gives back exactly what MariaDB holds.
        let source = &stored.iter().find(|(i, _)| i == id).unwrap().1;
        assert_eq!(
            decode_stored(got),
            serde_json::from_str::<serde_json::Value>(source).unwrap(),
            "row {id} does not round-trip"
        );
        let names: Vec<String> = after.keys().map(|k| percent_decode(k)).collect();
        assert_eq!(names, ["$x", "a.b", "50%", "ключ", "doc"]);
    }
    let update = docs
        .iter()
        .find(|d| d.get_str("op").unwrap() == "update")
        .expect("no update document");
    assert_eq!(
        update
            .get_document("before")
            .unwrap()
            .get_i64("50%25")
            .unwrap(),
        7
    );
    assert_eq!(
        update
            .get_document("after")
            .unwrap()
            .get_i64("50%25")
            .unwrap(),
        9
    );
    assert!(
        !relay.sdl.logs().contains("not JSON sdl can represent"),
        "a value fell back to text: {}",
        relay.sdl.logs()
    );
}

/// A MySQL binary JSON value (JSON type 0x00 small object, 0x02 small array): an object with the
/// one key `key` holding `depth` nested arrays, the innermost empty.
fn binary_json(key: &[u8], depth: usize) -> Vec<u8> {
    let mut array = vec![0, 0, 4, 0]; // []: 0 elements, 4 bytes
    for _ in 1..depth {
        let size = (7 + array.len()) as u16;
        let mut outer = vec![1, 0];
        outer.extend_from_slice(&size.to_le_bytes());
        outer.extend_from_slice(&[0x02, 7, 0]); // a small array at offset 7
        outer.extend_from_slice(&array);
        array = outer;
    }
    let size = (11 + key.len() + array.len()) as u16;
    let mut object = vec![0x00, 1, 0];
    object.extend_from_slice(&size.to_le_bytes());
    object.extend_from_slice(&[11, 0, key.len() as u8, 0]); // the key at offset 11
    let value_at = (11 + key.len()) as u16;
    object.push(0x02); // the value, a small array, after the key
    object.extend_from_slice(&value_at.to_le_bytes());
    object.extend_from_slice(key);
    object.extend_from_slice(&array);
    object
}

/// `depth` nested JSON arrays, the innermost empty (built, not parsed: serde_json parses at most
/// 128 levels).
fn nested_arrays(depth: usize) -> serde_json::Value {
    (1..depth).fold(serde_json::json!([]), |inner, _| serde_json::json!([inner]))
}

/// The transaction a MySQL 8 binlog holds for one INSERT of `json` into a JSON column `c0` of
/// `db.tbl`, decoded by sdl's binlog decoder (the fuzzing input builder writes the binlog).
fn decoded_mysql_json_insert(json: &[u8]) -> SourceTransaction {
    // 1 column; type JSON (index 17 of the builder's type list); 4 length bytes; collation
    // utf8mb4; WRITE_ROWS; then the row: null bitmap, length, binary JSON.
    let mut input = vec![0, 17, 4, 0, 0, 0];
    input.extend_from_slice(&(json.len() as u32).to_le_bytes());
    input.extend_from_slice(json);
    let binlog = sdl::source::fuzzing::binlog_from_bytes(&input);
    let mut transactions = sdl::source::binlog_file::decode_file("mysql-bin.000001", &binlog)
        .expect("the crafted binlog decodes");
    assert_eq!(transactions.len(), 1);
    transactions.remove(0)
}

/// MySQL's binary JSON can hold a key with NUL and nesting past what MongoDB stores (SecantusDB,
/// like MongoDB, refuses documents nested more than 180 levels; MongoDB documents 100). MariaDB
/// cannot store deep nesting (`json_valid` refuses more than 31 levels) and no MySQL server is
/// available to the tests, so the change comes from a MySQL 8 binlog decoded by sdl's own decoder
/// and is put into the WAL of a stopped sdl, as its ingester would have; the real relay then
/// forwards it into SecantusDB and must keep going with MariaDB's next rows. Returns the stored
/// value of the JSON column.
async fn relay_a_mysql_json_change(json: &Json) -> Bson {
    let key_and_depth = |json: &Json| -> (Vec<u8>, usize) {
        let Json::Object(members) = json else {
            panic!("an object with one key")
        };
        let mut depth = 0;
        let mut at = &members[0].1;
        while let Json::Array(items) = at {
            depth += 1;
            match items.first() {
                Some(inner) => at = inner,
                None => break,
            }
        }
        (members[0].0.as_bytes().to_vec(), depth)
    };
    let (key, depth) = key_and_depth(json);
    let mut transaction = decoded_mysql_json_insert(&binary_json(&key, depth));
    let Change::Row(row) = &transaction.changes[0] else {
        panic!("not a row change")
    };
    assert_eq!(
        row.after.as_deref(),
        Some(&[Value::Json(json.clone())][..]),
        "the decoder reads the value exactly"
    );

    let mut relay = Relay::builder()
        .sql(&["CREATE TABLE app.t (id INT PRIMARY KEY)"])
        .following()
        .await;
    let mut conn = relay.conn().await;
    conn.query_drop("INSERT INTO app.t VALUES (1)")
        .await
        .unwrap();
    let position = relay.mariadb.gtid_binlog_pos().await;
    wait_for_offset(&relay.mongo, &position, TIMEOUT, &relay.sdl).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());

    // Into the WAL as the ingester writes records: after everything read so far.
    transaction.position_after = position.clone();
    {
        let wal =
            sdl_wal::Wal::<SourceTransaction>::open(relay.sdl.wal_dir()).expect("open sdl's WAL");
        wal.append(&[transaction], position.as_bytes()).unwrap();
    }
    relay.sdl.start();
    conn.query_drop("INSERT INTO app.t VALUES (2)")
        .await
        .unwrap();
    relay.wait_caught_up(TIMEOUT).await;
    assert!(relay.sdl.is_running(), "sdl stopped: {}", relay.sdl.logs());

    let docs = relay.documents().await;
    let table = |d: &Document| {
        let meta = d.get_document("meta").unwrap();
        format!(
            "{}.{}",
            meta.get_str("db").unwrap(),
            meta.get_str("tbl").unwrap()
        )
    };
    // MariaDB's rows on both sides of it arrived too.
    let ids: Vec<i64> = docs
        .iter()
        .filter(|d| table(d) == "app.t")
        .map(|d| d.get_document("after").unwrap().get_i64("id").unwrap())
        .collect();
    assert_eq!(ids, [1, 2]);
    let mysql_change = docs
        .iter()
        .find(|d| table(d) == "db.tbl")
        .unwrap_or_else(|| panic!("the MySQL change did not arrive: {docs:?}"));
    mysql_change
        .get_document("after")
        .unwrap()
        .get("c0")
        .unwrap()
        .clone()
}

/// `{"<key>": [[…]]}` with `depth` nested arrays.
fn object_of_arrays(key: &str, depth: usize) -> Json {
    let arrays = (1..depth).fold(Json::Array(vec![]), |inner, _| Json::Array(vec![inner]));
    Json::Object(vec![(key.into(), arrays)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_json_key_with_nul_arrives_escaped_and_the_relay_keeps_going() {
    let value = relay_a_mysql_json_change(&object_of_arrays("a\0b", 2)).await;
    assert!(
        same(&value, &Bson::Document(doc! { "a%00b": [[]] })),
        "{value:?}"
    );
    assert_eq!(
        decode_stored(&value),
        serde_json::json!({ "a\u{0}b": [[]] })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_json_nested_200_levels_arrives_as_documents_then_json_text_and_the_relay_keeps_going(
) {
    let depth = 200;
    let value = relay_a_mysql_json_change(&object_of_arrays("k", depth)).await;
    let Bson::Document(object) = &value else {
        panic!("not a document: {value:?}")
    };
    assert_eq!(object.keys().collect::<Vec<_>>(), ["k"]);
    // Documents and arrays down to the limit, then the rest as its JSON text.
    let mut at = object.get("k").unwrap();
    let mut levels = 1;
    while let Bson::Array(items) = at {
        levels += 1;
        at = &items[0];
    }
    assert_eq!(
        levels, 90,
        "levels kept as BSON (the object and 89 arrays), then the marker"
    );
    let Bson::Document(marker) = at else {
        panic!("no marker at the limit: {at:?}")
    };
    let remaining = depth + 1 - 90;
    assert_eq!(
        marker.get_str("%json").unwrap(),
        "[".repeat(remaining) + &"]".repeat(remaining)
    );
    // The documented rule gives back the whole value.
    assert_eq!(
        decode_stored(&value),
        serde_json::json!({ "k": nested_arrays(depth) })
    );
}
