//! MariaDB JSON columns (LONGTEXT with `CHECK (json_valid(col))`, unmarked in the binlog) arrive
//! in MongoDB as documents, arrays and scalars with exact numbers and their key order, including a
//! JSON column added by an ALTER in the middle of the stream; text sdl cannot represent exactly
//! (duplicate keys) and non-JSON columns stay strings.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::Relay;
use mongodb::bson::{doc, Bson, Document};
use mysql_async::prelude::Queryable;

const TIMEOUT: Duration = Duration::from_secs(120);

fn dec(text: &str) -> Bson {
    Bson::Decimal128(text.parse().unwrap())
}

fn s(text: &str) -> Bson {
    Bson::String(text.into())
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
async fn mariadb_json_columns_become_exact_documents() {
    let relay = Relay::builder()
        .sql(&["CREATE TABLE app.docs (id INT PRIMARY KEY, doc JSON, note TEXT)"])
        .following()
        .await;
    let mut conn = relay.conn().await;
    // What sdl relies on: `doc JSON` is a check constraint `json_valid(`doc`)`.
    let clauses: Vec<String> = conn
        .query(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = 'app' AND TABLE_NAME = 'docs'",
        )
        .await
        .unwrap();
    assert_eq!(clauses, vec!["json_valid(`doc`)".to_string()]);

    let rows: &[(i64, Option<&str>, Option<&str>)] = &[
        (
            1,
            Some(r#"{"b": 1, "a": {"nested": [1, [2, {"deep": true}]]}, "c": false, "d": null}"#),
            Some(r#"{"not": "json column"}"#),
        ),
        (
            2,
            Some(
                "[9007199254740993, 9223372036854775807, -9223372036854775808, \
                 9223372036854775808, 18446744073709551615, 18446744073709551616, \
                 -9223372036854775809]",
            ),
            None,
        ),
        (
            3,
            Some(
                "[3.14159265358979323846264338327950288, 0.1, 1.50, -0.0, -0, 1e400, 2.5E-3, \
                 1234567890123456789012345678901234]",
            ),
            None,
        ),
        (
            4,
            Some(r#""ünïcödé 😀 \u00e9 \ud83d\ude00 \"q\" \n""#),
            None,
        ),
        (5, Some("true"), None),
        (6, Some("false"), None),
        (7, Some("null"), None),
        (8, None, None),
        (9, Some(r#"{"a": 1, "a": 2}"#), None),
        (10, Some("  {}  "), None),
        (11, Some("[]"), None),
    ];
    for (id, doc, note) in rows {
        conn.exec_drop(
            "INSERT INTO app.docs (id, doc, note) VALUES (?, ?, ?)",
            (*id, *doc, *note),
        )
        .await
        .unwrap_or_else(|e| panic!("row {id}: {e}"));
    }
    conn.exec_drop(
        "UPDATE app.docs SET doc = ? WHERE id = 5",
        (r#"{"now": [true]}"#,),
    )
    .await
    .unwrap();
    // A JSON column added mid-stream: the next rows' values must be documents too.
    conn.query_drop("ALTER TABLE app.docs ADD COLUMN extra JSON")
        .await
        .unwrap();
    conn.exec_drop(
        "INSERT INTO app.docs (id, doc, note, extra) VALUES (20, ?, ?, ?)",
        (r#"[1]"#, r#"[2]"#, r#"{"x": [1, 1.0]}"#),
    )
    .await
    .unwrap();

    relay.wait_caught_up(TIMEOUT).await;
    let docs = relay.documents().await;
    let mut inserts: HashMap<i64, Document> = HashMap::new();
    let mut update = None;
    for d in &docs {
        match d.get_str("op").unwrap() {
            "insert" => {
                let after = d.get_document("after").unwrap().clone();
                inserts.insert(after.get_i64("id").unwrap(), after);
            }
            "update" => update = Some(d.clone()),
            _ => {}
        }
    }

    let expected: Vec<(i64, &str, Bson)> = vec![
        (
            1,
            "doc",
            Bson::Document(doc! {
                "b": 1i64,
                "a": { "nested": [1i64, [2i64, { "deep": true }]] },
                "c": false,
                "d": Bson::Null,
            }),
        ),
        (1, "note", s(r#"{"not": "json column"}"#)),
        (
            2,
            "doc",
            Bson::Array(vec![
                Bson::Int64(9_007_199_254_740_993),
                Bson::Int64(i64::MAX),
                Bson::Int64(i64::MIN),
                dec("9223372036854775808"),
                dec("18446744073709551615"),
                dec("18446744073709551616"),
                dec("-9223372036854775809"),
            ]),
        ),
        (2, "note", Bson::Null),
        (
            3,
            "doc",
            Bson::Array(vec![
                // 36 significant digits: more than Decimal128 holds, so the exact text.
                s("3.14159265358979323846264338327950288"),
                dec("0.1"),
                dec("1.50"),
                dec("-0.0"),
                dec("-0"),
                dec("1e400"),
                dec("2.5E-3"),
                dec("1234567890123456789012345678901234"),
            ]),
        ),
        (4, "doc", s("ünïcödé 😀 é 😀 \"q\" \n")),
        (5, "doc", Bson::Boolean(true)),
        (6, "doc", Bson::Boolean(false)),
        (7, "doc", Bson::Null),
        (8, "doc", Bson::Null),
        // Duplicate keys: valid for MariaDB, not representable as one BSON document: kept as text.
        (9, "doc", s(r#"{"a": 1, "a": 2}"#)),
        (10, "doc", Bson::Document(doc! {})),
        (11, "doc", Bson::Array(vec![])),
        (20, "doc", Bson::Array(vec![Bson::Int64(1)])),
        (20, "note", s("[2]")),
        (
            20,
            "extra",
            Bson::Document(doc! { "x": [Bson::Int64(1), dec("1.0")] }),
        ),
    ];
    for (id, column, value) in &expected {
        let after = inserts
            .get(id)
            .unwrap_or_else(|| panic!("no insert document for id {id}"));
        let got = after
            .get(*column)
            .unwrap_or_else(|| panic!("id {id} lacks `{column}`: {after}"));
        assert!(
            same(got, value),
            "id {id} column `{column}`: got {got:?}, expected {value:?}"
        );
    }
    // Row 9's value does not fit a document: sdl says so instead of changing it silently.
    assert!(
        relay.sdl.logs().contains("duplicate key"),
        "no warning for the duplicate-key value"
    );

    let update = update.expect("no update document");
    let before = update.get_document("before").unwrap();
    let after = update.get_document("after").unwrap();
    assert!(same(before.get("doc").unwrap(), &Bson::Boolean(true)));
    assert!(same(
        after.get("doc").unwrap(),
        &Bson::Document(doc! { "now": [true] })
    ));
}

/// The race: JSON-ness is looked up when sdl reads the rows, which may be after the schema
/// changed. A value written while the column was TEXT, read once the column is JSON, becomes a
/// document when it is valid JSON and otherwise stays its exact text, with a warning: never
/// dropped, never altered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_that_became_json_since_keeps_non_json_values_as_text() {
    let mut relay = Relay::builder()
        .sql(&[
            "CREATE TABLE app.late (id INT PRIMARY KEY, doc LONGTEXT)",
            "INSERT INTO app.late VALUES (1, '{\"a\": 1.50}'), (2, 'not json')",
            "DELETE FROM app.late WHERE id = 2",
            "ALTER TABLE app.late MODIFY doc JSON",
        ])
        .start_from("earliest")
        .stopped()
        .await;
    // Only now does sdl read these rows: information_schema already says `doc` is JSON.
    relay.sdl.start();
    relay.wait_caught_up(TIMEOUT).await;
    let docs = relay.documents().await;
    let mut inserts: HashMap<i64, Document> = HashMap::new();
    for d in &docs {
        if d.get_str("op").unwrap() == "insert" {
            let after = d.get_document("after").unwrap().clone();
            inserts.insert(after.get_i64("id").unwrap(), after);
        }
    }
    assert!(same(
        inserts[&1].get("doc").unwrap(),
        &Bson::Document(doc! { "a": dec("1.50") })
    ));
    assert!(same(inserts[&2].get("doc").unwrap(), &s("not json")));
    assert!(
        relay
            .sdl
            .logs()
            .contains("app.late column `doc` is a JSON column but this value is not JSON"),
        "no warning for the non-JSON value: {}",
        relay.sdl.logs()
    );
}
