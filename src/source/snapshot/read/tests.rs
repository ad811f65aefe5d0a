//! Unit tests of the chunk queries, the key parameters and the TIMESTAMP conversion.

use super::*;
use mysql_async::Value as My;

fn snapshot_table(kinds: Vec<ColumnKind>, key: Vec<u32>) -> SnapshotTable {
    let columns: Vec<String> = (0..kinds.len()).map(|i| format!("c{i}")).collect();
    let (first_query, after_query) = chunk_queries("d`b", "t", &columns, &key, &kinds);
    SnapshotTable {
        table: Arc::new(Table {
            database: "d`b".into(),
            name: "t".into(),
            columns,
            primary_key: key,
        }),
        rows_estimate: None,
        columns: kinds,
        first_query,
        after_query,
    }
}

#[test]
fn chunk_queries_page_by_the_key_in_order() {
    let table = snapshot_table(
        vec![
            ColumnKind::Plain,
            ColumnKind::Decimal("DECIMAL(10,2)".into()),
            ColumnKind::Plain,
        ],
        vec![2, 1],
    );
    assert_eq!(
        table.first_query,
        "SELECT `c0`, `c1`, `c2` FROM `d``b`.`t` ORDER BY `c2`, `c1` LIMIT ?"
    );
    assert_eq!(
        table.after_query,
        "SELECT `c0`, `c1`, `c2` FROM `d``b`.`t` WHERE `c2` > ? OR (`c2` = ? AND `c1` > \
         CAST(? AS DECIMAL(10,2))) ORDER BY `c2`, `c1` LIMIT ?"
    );
    let params = after_params(
        &table,
        &[Value::Text("a".into()), Value::Decimal("1.50".into())],
    )
    .unwrap();
    assert_eq!(
        params,
        vec![
            My::Bytes(b"a".to_vec()),
            My::Bytes(b"a".to_vec()),
            My::Bytes(b"1.50".to_vec()),
        ]
    );
    assert!(after_params(&table, &[Value::Int(1)]).is_err());
}

#[test]
fn uuid_columns_are_read_and_bound_as_their_stored_bytes() {
    let table = snapshot_table(
        vec![ColumnKind::StoredBinary(16), ColumnKind::Plain],
        vec![0],
    );
    assert_eq!(
        table.after_query,
        "SELECT CAST(`c0` AS BINARY(16)), `c1` FROM `d``b`.`t` WHERE `c0` > UNHEX(?) \
         ORDER BY `c0` LIMIT ?"
    );
    let params = after_params(&table, &[Value::Bytes(vec![0x12, 0xfe])]).unwrap();
    assert_eq!(params, vec![My::Bytes(b"12FE".to_vec())]);
}

#[test]
fn three_column_keys_bind_each_prefix() {
    let table = snapshot_table(vec![ColumnKind::Plain; 3], vec![0, 1, 2]);
    assert!(table.after_query.contains(
        "WHERE `c0` > ? OR (`c0` = ? AND `c1` > ?) OR (`c0` = ? AND `c1` = ? AND `c2` > ?) "
    ));
    let params = after_params(&table, &[Value::Int(1), Value::Int(2), Value::Int(3)]).unwrap();
    let ints: Vec<i64> = params
        .iter()
        .map(|p| match p {
            My::Int(i) => *i,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ints, [1, 1, 2, 1, 2, 3]);
}

#[test]
fn key_values_bind_as_they_compare_in_the_index() {
    let members = vec!["a".to_string(), "b".into(), "ç".into()];
    let enum_kind = ColumnKind::Enum(members.clone());
    assert_eq!(
        key_param(&enum_kind, &Value::Text("ç".into())).unwrap(),
        My::UInt(3)
    );
    assert_eq!(
        key_param(&enum_kind, &Value::Text(String::new())).unwrap(),
        My::UInt(0)
    );
    assert!(key_param(&enum_kind, &Value::Text("z".into())).is_err());
    assert_eq!(
        key_param(
            &ColumnKind::Set(members),
            &Value::Set(vec!["a".into(), "ç".into()])
        )
        .unwrap(),
        My::UInt(0b101)
    );
    assert_eq!(
        key_param(&ColumnKind::Bit, &Value::Bytes(vec![1, 2])).unwrap(),
        My::UInt(258)
    );
    assert_eq!(
        key_param(&ColumnKind::Plain, &Value::Bytes(vec![0, 0xff])).unwrap(),
        My::Bytes(vec![0, 0xff])
    );
    assert_eq!(
        key_param(&ColumnKind::Plain, &Value::UInt(u64::MAX)).unwrap(),
        My::UInt(u64::MAX)
    );
    assert_eq!(
        key_param(
            &ColumnKind::Plain,
            &Value::Time {
                negative: true,
                hours: 838,
                minute: 59,
                second: 58,
                micros: 7
            }
        )
        .unwrap(),
        My::Time(true, 34, 22, 59, 58, 7)
    );
    assert_eq!(
        key_param(
            &ColumnKind::Timestamp,
            &Value::Timestamp {
                seconds: 2_147_483_647,
                micros: 999_999
            }
        )
        .unwrap(),
        My::Date(2038, 1, 19, 3, 14, 7, 999_999)
    );
    assert!(key_param(&ColumnKind::Plain, &Value::Null).is_err());
    assert_eq!(
        key_param(
            &ColumnKind::StoredBinary(16),
            &Value::Bytes(vec![0xf4, 0x0a])
        )
        .unwrap(),
        My::Bytes(b"F40A".to_vec())
    );
    // Text that did not decode cannot be bound back as the text it compares as.
    assert!(key_param(&ColumnKind::Text, &Value::Bytes(vec![0xff])).is_err());
    assert_eq!(
        key_param(&ColumnKind::Text, &Value::Text("é".into())).unwrap(),
        My::Bytes("é".as_bytes().to_vec())
    );
}

#[test]
fn timestamps_convert_both_ways_in_utc() {
    for seconds in [1, 86_399, 86_400, 951_782_400, 2_147_483_647, 4_102_444_800] {
        let (y, mo, d, h, mi, s) = utc_civil(seconds).unwrap();
        assert_eq!(
            timestamp_value((y, mo, d), (h, mi, s), 5).unwrap(),
            Value::Timestamp { seconds, micros: 5 },
            "{seconds}"
        );
    }
    assert_eq!(utc_civil(951_782_400).unwrap(), (2000, 2, 29, 0, 0, 0));
    // The zero TIMESTAMP is 0 both ways, as the binlog stores it.
    assert_eq!(
        timestamp_value((0, 0, 0), (0, 0, 0), 0).unwrap(),
        Value::Timestamp {
            seconds: 0,
            micros: 0
        }
    );
    assert_eq!(utc_civil(0).unwrap(), (0, 0, 0, 0, 0, 0));
    assert!(timestamp_value((2024, 2, 30), (0, 0, 0), 0).is_err());
}

#[test]
fn decimal_types_keep_precision_and_scale() {
    assert_eq!(decimal_type("decimal(10,2)"), "DECIMAL(10,2)");
    assert_eq!(decimal_type("decimal(65,30) unsigned"), "DECIMAL(65,30)");
    assert_eq!(decimal_type("decimal(5)"), "DECIMAL(5)");
    assert_eq!(decimal_type("weird"), "DECIMAL(65,30)");
}

#[test]
fn mysql_json_fractions_are_doubles() {
    let parsed = json_text::parse(r#"{"a": 1.5, "b": [2, 1e3]}"#).unwrap();
    assert_eq!(
        mysql_json(parsed),
        Json::Object(vec![
            ("a".into(), Json::Double(1.5)),
            (
                "b".into(),
                Json::Array(vec![Json::Int(2), Json::Double(1000.0)])
            ),
        ])
    );
}
