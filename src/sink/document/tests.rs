//! The change-document builder and the value mapping: both writers give the same bytes, values
//! keep their exact form, names escape reversibly, timestamps match the reference calendar.

use std::borrow::Cow;

use bson::{Bson, RawDocumentBuf};

use super::value::{standard_base64, timestamp_text, unsigned, write_json_text};
use super::*;
use crate::event::{Json, SnapshotRow, StatementChange, Table};

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

/// The hand-written calendar sdl used before `time` (H. Hinnant's days → civil date), kept as
/// the reference the text must still match: days since 1970-01-01 → (year, month, day).
fn reference_civil_from_days(days: i64) -> (i64, u32, u32) {
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

fn reference_timestamp_text(seconds: i64, micros: u32) -> String {
    if seconds == 0 && micros == 0 {
        return "0000-00-00T00:00:00.000000Z".into();
    }
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (year, month, day) = reference_civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[test]
fn timestamps_match_the_reference_calendar_at_the_extremes() {
    let days = 86_400i64;
    for seconds in [
        i64::MIN,
        i64::MIN + 1,
        i64::MAX,
        i64::MAX - 1,
        -1,
        1,
        u32::MAX as i64,
        u32::MAX as i64 + 1,
        i32::MAX as i64,
        // 0000-03-01, 0001-01-01, 9999-12-31T23:59:59, 10000-01-01 and their neighbours.
        -62_162_035_200,
        -62_135_596_800,
        253_402_300_799,
        253_402_300_800,
        -377_705_116_800,
        -377_705_116_801,
        951_782_400 - days,
        4_107_542_400,
    ] {
        for micros in [0, 999_999] {
            assert_eq!(
                timestamp_text(seconds, micros),
                reference_timestamp_text(seconds, micros),
                "{seconds}"
            );
        }
    }
}

proptest::proptest! {
    #[test]
    fn timestamps_match_the_reference_calendar(seconds: i64, micros in 0u32..1_000_000) {
        proptest::prop_assert_eq!(timestamp_text(seconds, micros), reference_timestamp_text(seconds, micros));
    }

    #[test]
    fn mysql_timestamps_match_the_reference_calendar(seconds in 0i64..=u32::MAX as i64, micros in 0u32..1_000_000) {
        proptest::prop_assert_eq!(timestamp_text(seconds, micros), reference_timestamp_text(seconds, micros));
    }
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
    assert_eq!(standard_base64(b""), "");
    assert_eq!(standard_base64(b"f"), "Zg==");
    assert_eq!(standard_base64(b"fo"), "Zm8=");
    assert_eq!(standard_base64(b"foo"), "Zm9v");
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

/// The hand-written base64 sdl used before the `base64` crate, kept as the reference.
fn reference_base64(bytes: &[u8]) -> String {
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

proptest::proptest! {
    #[test]
    fn base64_matches_the_reference(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
        proptest::prop_assert_eq!(standard_base64(&bytes), reference_base64(&bytes));
    }
}

/// A transaction of a typical row change and a DDL statement, for the upgrade tests below.
fn typical_transaction() -> SourceTransaction {
    use crate::event::RowOp;
    let table = std::sync::Arc::new(Table {
        database: "shop".into(),
        name: "customers".into(),
        columns: vec!["id".into(), "name".into(), "balance".into()],
        primary_key: vec![0],
    });
    SourceTransaction {
        gtid: "0-1-42".into(),
        timestamp: 1_700_000_000,
        position_after: "0-1-42".into(),
        first_change: 0,
        ends_transaction: true,
        changes: vec![
            Change::Row(RowChange {
                op: RowOp::Update,
                table,
                file: "mariadb-bin.000003".into(),
                pos: 12345,
                before: Some(vec![
                    Value::Int(7),
                    Value::Text("Ada".into()),
                    Value::Decimal("10.00".into()),
                ]),
                after: Some(vec![
                    Value::Int(7),
                    Value::Text("Ada".into()),
                    Value::Decimal("12.50".into()),
                ]),
            }),
            Change::Statement(StatementChange {
                database: "shop".into(),
                statement: "ALTER TABLE customers ADD note TEXT".into(),
                file: "mariadb-bin.000003".into(),
                pos: 12999,
            }),
        ],
    }
}

/// The `hash` the release before `meta.src` (commit 16de0f4) wrote for the two changes of
/// [`typical_transaction`] under source `orders-db`, recorded from that release's builder.
const PREVIOUS_RELEASE_HASHES: [&str; 2] = [
    "2d6f909af940fbbabce2d0c8029033f2",
    "2ebc8b75da121af7c7b9a3a786f9b424",
];

#[test]
fn documents_name_their_source_in_meta_src_beside_meta_source() {
    for d in transaction_documents("orders-db", &typical_transaction()) {
        let meta = d.get_document("meta").unwrap();
        assert_eq!(meta.get_str("source").unwrap(), "orders-db");
        assert_eq!(meta.get_str(SOURCE_FIELD).unwrap(), "orders-db");
        let keys: Vec<&String> = meta.keys().take(3).collect();
        assert_eq!(keys, ["source", "src", "db"], "{meta}");
    }
}

#[test]
fn a_change_stored_by_the_release_before_meta_src_is_the_same_change() {
    let ours = transaction_raw_documents("orders-db", &typical_transaction()).unwrap();
    for (ours, previous_hash) in ours.iter().zip(PREVIOUS_RELEASE_HASHES) {
        assert_eq!(
            previous_release_hash(ours).as_deref(),
            Some(previous_hash),
            "the previous release's form of {ours:?}"
        );
        assert_ne!(ours.get_str(HASH_FIELD).unwrap(), previous_hash);
        // What that release stored: the same document without `meta.src`, with its hash.
        let mut stored = ours.to_document().unwrap();
        stored
            .get_document_mut("meta")
            .unwrap()
            .remove(SOURCE_FIELD);
        stored.insert(HASH_FIELD, previous_hash);
        assert!(is_same_change(&stored, ours));
        // This release's own form is the same change too.
        assert!(is_same_change(&ours.to_document().unwrap(), ours));
        // A document with `meta.src` is compared by its full hash only.
        let mut with_src = ours.to_document().unwrap();
        with_src.insert(HASH_FIELD, previous_hash);
        assert!(!is_same_change(&with_src, ours));
        // Another change under the same id, in either form, is not.
        stored.insert(HASH_FIELD, "00000000000000000000000000000000");
        assert!(!is_same_change(&stored, ours));
        stored.remove(HASH_FIELD);
        assert!(!is_same_change(&stored, ours));
    }
    // Another source's change with the same GTID has another previous-release hash as well.
    let other = transaction_raw_documents("billing-db", &typical_transaction()).unwrap();
    assert_ne!(
        previous_release_hash(&other[0]).as_deref(),
        Some(PREVIOUS_RELEASE_HASHES[0])
    );
}

fn snapshot_record(db: &str, table: &str, key: Vec<Value>) -> SourceTransaction {
    let columns = vec!["id".to_string(), "name".to_string(), "note".to_string()];
    let mut values = key.clone();
    values.resize(2, Value::Null);
    values.push(Value::Text("n".into()));
    SourceTransaction {
        gtid: "snapshot 20261127T190102.123Z".into(),
        timestamp: 1_700_000_000,
        position_after: "0-1-42; snapshot {\"tables\":[]}".into(),
        first_change: 0,
        ends_transaction: true,
        changes: vec![Change::Snapshot(SnapshotRow {
            snapshot: "20261127T190102.123Z".into(),
            table: std::sync::Arc::new(Table {
                database: db.into(),
                name: table.into(),
                columns,
                primary_key: (0..key.len() as u32).collect(),
            }),
            values,
        })],
    }
}

#[test]
fn a_snapshot_row_is_an_op_snapshot_document_with_a_deterministic_id() {
    let record = snapshot_record("app", "orders", vec![Value::Int(5)]);
    let documents = transaction_documents("main", &record);
    let document = &documents[0];
    assert_eq!(
        document.get_str("_id").unwrap(),
        "main/snapshot/20261127T190102.123Z/app/orders/[5]"
    );
    assert_eq!(document.get_str("op").unwrap(), "snapshot");
    assert!(!document.contains_key("before"));
    let meta = document.get_document("meta").unwrap();
    assert_eq!(meta.get_str("snapshot").unwrap(), "20261127T190102.123Z");
    assert_eq!(meta.get_str("position").unwrap(), "0-1-42");
    assert_eq!(meta.get_str(SOURCE_FIELD).unwrap(), "main");
    assert_eq!(meta.get_document("pk").unwrap().get_i64("id").unwrap(), 5);
    let after = document.get_document("after").unwrap();
    assert_eq!(after.get_str("note").unwrap(), "n");
    assert_eq!(after.get("name"), Some(&Bson::Null));
    // Both writers give the same bytes, hash included; the same row gives the same id again.
    let raw = transaction_raw_documents("main", &record).unwrap();
    assert_eq!(
        raw[0].as_bytes(),
        RawDocumentBuf::from_document(document).unwrap().as_bytes()
    );
    assert_eq!(transaction_documents("main", &record)[0], *document);
}

#[test]
fn snapshot_ids_never_collide_across_names_that_contain_separators() {
    let id = |db: &str, table: &str, key: Vec<Value>| {
        transaction_documents("s", &snapshot_record(db, table, key))[0]
            .get_str("_id")
            .unwrap()
            .to_string()
    };
    let a = id("a/b", "c", vec![Value::Int(1)]);
    let b = id("a", "b/c", vec![Value::Int(1)]);
    assert_ne!(a, b);
    assert_eq!(a, "s/snapshot/20261127T190102.123Z/a%2Fb/c/[1]");
    let text_key = id("a", "t", vec![Value::Text("x\",1".into()), Value::Int(2)]);
    let other = id("a", "t", vec![Value::Text("x".into()), Value::Int(1)]);
    assert_ne!(text_key, other);
    assert!(text_key.ends_with(r#"["x\",1",2]"#), "{text_key}");
}
