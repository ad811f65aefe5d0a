//! A snapshot reads every value exactly as the stream decodes it: for a table with one column of
//! each type (ordinary, extreme, NULL and zero values, non-ASCII text in several charsets, binary
//! with trailing 0x00, JSON), each value `sdl::source::snapshot::read` returns becomes the same
//! BSON as the insert document sdl relayed for that row. And keyset paging reads every row once,
//! in key order, whatever the key's types and the chunk size.

use std::collections::HashMap;
use std::time::Duration;

use mongodb::bson::{Bson, Document};
use mysql_async::prelude::Queryable;
use sdl::event::Value;
use sdl::flavor::Flavor;
use sdl::sink::document::value_to_bson;
use sdl::source::snapshot::read::{
    chunk_statement, describe, key_of, prepare_session, read_chunk, SnapshotTable,
};

use crate::support::{change_documents, wait_for_offset, MariaDb, Mongo, Sdl};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Equality that tells -0.0 from 0.0 (and NaN bits), inside documents and arrays too.
fn same(a: &Bson, b: &Bson) -> bool {
    match (a, b) {
        (Bson::Double(x), Bson::Double(y)) => x.to_bits() == y.to_bits(),
        (Bson::Array(x), Bson::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Bson::Document(x), Bson::Document(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, a), (kb, b))| ka == kb && same(a, b))
        }
        _ => a == b,
    }
}

/// A connection as sdl's own user (SELECT on everything), prepared for chunk reads.
async fn snapshot_conn(mariadb: &MariaDb) -> mysql_async::Conn {
    let mut conn = mysql_async::Conn::from_url(mariadb.sdl_url().as_str())
        .await
        .expect("connect as sdl");
    prepare_session(&mut conn).await.expect("prepare_session");
    conn
}

/// Every row of `table`, read `limit` rows at a time from the start.
async fn read_all(
    conn: &mut mysql_async::Conn,
    table: &SnapshotTable,
    limit: usize,
) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    let mut after: Option<Vec<Value>> = None;
    loop {
        let chunk = read_chunk(conn, table, after.as_deref(), limit)
            .await
            .unwrap_or_else(|e| panic!("read_chunk after {after:?}: {e}"));
        assert!(
            chunk.len() <= limit,
            "{} rows for limit {limit}",
            chunk.len()
        );
        let Some(last) = chunk.last() else { break };
        after = Some(key_of(table, last));
        let done = chunk.len() < limit;
        rows.extend(chunk);
        if done {
            break;
        }
    }
    rows
}

const COLUMNS: &str = "id INT PRIMARY KEY, \
    ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED, mi MEDIUMINT, \
    mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED, \
    b1 BIT(1), b13 BIT(13), b64 BIT(64), y YEAR, f FLOAT, d DOUBLE, \
    d65 DECIMAL(65,30), d34 DECIMAL(34,0), d10 DECIMAL(10,2), d5 DECIMAL(5,5), \
    dd DATE, dt0 DATETIME, dt3 DATETIME(3), dt6 DATETIME(6), \
    ts0 TIMESTAMP NULL, ts3 TIMESTAMP(3) NULL, ts6 TIMESTAMP(6) NULL, t0 TIME, t6 TIME(6), \
    c4 CHAR(10) CHARSET utf8mb4, u4 VARCHAR(40) CHARSET utf8mb4, u3 VARCHAR(20) CHARSET utf8mb3, \
    l1 VARCHAR(40) CHARSET latin1, cl CHAR(10) CHARSET latin1, a VARCHAR(20) CHARSET ascii, \
    u2 VARCHAR(20) CHARSET ucs2, u16 VARCHAR(20) CHARSET utf16, u32 VARCHAR(20) CHARSET utf32, \
    tx TEXT CHARSET utf8mb4, lt TEXT CHARSET latin1, \
    bn BINARY(6), vb VARBINARY(20), bl BLOB, \
    e ENUM('a','b','ç'), s SET('x','y','z'), j JSON, g GEOMETRY, \
    i4 INET4, i6 INET6, u UUID, gs INT AS (id * 3) STORED, gv INT AS (id * 2) VIRTUAL, \
    inv INT INVISIBLE DEFAULT 7";

const ROWS: &[&str] = &[
    // Ordinary values.
    "INSERT INTO app.every (id, ti, tu, si, su, mi, mu, i, iu, bi, bu, b1, b13, b64, y, f, d, \
     d65, d34, d10, d5, dd, dt0, dt3, dt6, ts0, ts3, ts6, t0, t6, c4, u4, u3, l1, cl, a, u2, u16, \
     u32, tx, lt, bn, vb, bl, e, s, j, g) VALUES (1, 5, 6, -300, 300, -70000, 70000, 123456, \
     3000000000, -5000000000, 5000000000, b'1', b'101', 0x0102030405060708, 2024, 1.5, \
     -2.25, 3.141592653589793238462643383279502884197, 42, 1234.5, 0.12345, '2024-02-29', \
     '2024-02-29 12:34:56', '2024-02-29 12:34:56.789', '2024-02-29 12:34:56.123456', \
     '2024-02-29 12:34:56', '2024-02-29 12:34:56.5', '2024-02-29 12:34:56.000001', \
     '12:34:56', '100:00:00.5', 'abc', 'plain', 'text', 'caf\u{e9}', 'x', 'ascii', 'ucs', \
     'utf16', 'utf32', 'some text', 'latin text', 'bin', 0x61, 0x62, 'b', 'y', \
     '{\"k\": 1}', ST_GeomFromText('POINT(1 2)'))",
    // Minimums, empty strings, binary of zeros (TIMESTAMPs in the session's +05:30: the
    // smallest one, 1970-01-01 00:00:01 UTC).
    "INSERT INTO app.every (id, ti, tu, si, su, mi, mu, i, iu, bi, bu, b1, b13, b64, y, f, d, \
     d65, d34, d10, d5, dd, dt0, dt3, dt6, ts0, ts3, ts6, t0, t6, c4, u4, u3, l1, cl, a, u2, u16, \
     u32, tx, lt, bn, vb, bl, e, s, j, g, inv) VALUES (2, -128, 0, -32768, 0, -8388608, 0, \
     -2147483648, 0, -9223372036854775808, 0, b'0', 0, 0, 1901, -1.1754943508222875e-38, \
     -2.2250738585072014e-308, -0.000000000000000000000000000001, \
     -9999999999999999999999999999999999, -12345678.90, 0.00001, '1000-01-01', \
     '1000-01-01 00:00:00', '1000-01-01 00:00:00.001', '1000-01-01 00:00:00.000001', \
     '1970-01-01 05:30:01', '1970-01-01 05:30:01.001', '1970-01-01 05:30:01.000001', \
     '-838:59:59', '-00:00:00.000001', '', '', '', '', '', '', '', '', '', '', '', 0x00, 0x00, \
     '', 'a', '', '[]', ST_GeomFromText('POINT(0 0)'), -1)",
    // Maximums (the largest TIMESTAMP, 2038-01-19 03:14:07 UTC), non-ASCII text in every
    // charset, binary with trailing 0x00, nested JSON.
    "INSERT INTO app.every (id, ti, tu, si, su, mi, mu, i, iu, bi, bu, b1, b13, b64, y, f, d, \
     d65, d34, d10, d5, dd, dt0, dt3, dt6, ts0, ts3, ts6, t0, t6, c4, u4, u3, l1, cl, a, u2, u16, \
     u32, tx, lt, bn, vb, bl, e, s, j, g) VALUES (3, 127, 255, 32767, 65535, 8388607, 16777215, \
     2147483647, 4294967295, 9223372036854775807, 18446744073709551615, b'1', b'1111111111111', \
     0xFFFFFFFFFFFFFFFF, 2155, 3.4028234663852886e38, 1.7976931348623157e308, \
     99999999999999999999999999999999999.999999999999999999999999999999, \
     9999999999999999999999999999999999, 99999999.99, 0.99999, '9999-12-31', \
     '9999-12-31 23:59:59', '9999-12-31 23:59:59.999', '9999-12-31 23:59:59.999999', \
     '2038-01-19 08:44:07', '2038-01-19 08:44:07.999', '2038-01-19 08:44:07.999999', \
     '838:59:59', '838:59:59.000000', '😀 é', '😀 日本 é ü', 'é ü ß', 'é€ü Ãñ', 'çà', \
     'plain ascii', 'é日本', '😀日本', '😀é', 'ünïcödé 😀 \u{fffd}', 'Ãé €', \
     0x0102000000, 0xFF0000, 0xDEADBEEF00, 'ç', 'z,x', \
     '{\"a\": {\"b\": [1.50, 2e3, -0, 12345678901234567890123, 18446744073709551615], \
     \"c\": {\"d\": {\"e\": \"é\"}}}, \"n\": null, \"t\": true, \"x\": -7}', \
     ST_GeomFromText('LINESTRING(0 0, 1 1, 2 3)'))",
    // NULL in every nullable column.
    "INSERT INTO app.every (id) VALUES (4)",
    // MariaDB's own types, stored as bytes: extremes of INET4/INET6, UUIDs of several versions.
    "INSERT INTO app.every (id, i4, i6, u) VALUES (8, '0.0.0.0', '::', \
     '00000000-0000-0000-0000-000000000000')",
    "INSERT INTO app.every (id, i4, i6, u) VALUES (9, '255.255.255.255', \
     'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', '123e4567-e89b-12d3-a456-426655440000')",
    "INSERT INTO app.every (id, i4, i6, u) VALUES (10, '10.1.2.3', '::ffff:1.2.3.4', \
     'f47ac10b-58cc-4372-a567-0e02b2c3d479')",
    // Zero and partly-zero dates, YEAR 0000, an invalid ENUM value (''), 2^63 unsigned.
    "INSERT INTO app.every (id, bu, y, dd, dt0, dt6, ts0, ts6, t0, t6, e, s, j) VALUES (5, \
     9223372036854775808, '0000', '0000-00-00', '0000-00-00 00:00:00', \
     '2020-00-00 00:00:00.000001', '0000-00-00 00:00:00', '0000-00-00 00:00:00.000000', \
     '-12:34:56', '-00:00:01.5', 'not a member', 'x,y,z', '\"just a string\"')",
    // JSON MariaDB accepts but sdl cannot hold exactly as a document (a key twice): text, on
    // both sides.
    "INSERT INTO app.every (id, j) VALUES (7, '{\"a\": 1, \"a\": 2}')",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_values_equal_the_stream_s_insert_documents() {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let mut conn = mariadb.root_conn().await;
    // A session zone other than UTC: TIMESTAMPs are stored in UTC whatever the writer's zone.
    for statement in ["SET time_zone = '+05:30'", "SET sql_mode = ''"] {
        conn.query_drop(statement).await.unwrap();
    }
    conn.query_drop(format!("CREATE TABLE app.every ({COLUMNS})"))
        .await
        .unwrap();

    let mut sdl = Sdl::new(&mariadb, &mongo, "current");
    sdl.start();
    sdl.wait_following().await;
    for statement in ROWS {
        conn.query_drop(*statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    // -0.0 through the binary protocol (a literal `-0e0` is folded to 0 by the parser).
    conn.exec_drop(
        "INSERT INTO app.every (id, f, d) VALUES (6, ?, ?)",
        (-0.0f32, -0.0f64),
    )
    .await
    .unwrap();
    wait_for_offset(&mongo, &mariadb.gtid_binlog_pos().await, TIMEOUT, &sdl).await;
    let mut inserts: HashMap<i64, Document> = HashMap::new();
    for d in change_documents(&mongo).await {
        if d.get_str("op").unwrap() == "insert" {
            let after = d.get_document("after").unwrap().clone();
            inserts.insert(after.get_i64("id").unwrap(), after);
        }
    }
    assert_eq!(inserts.len(), 10, "insert documents: {inserts:?}");

    let mut reader = snapshot_conn(&mariadb).await;
    let table = describe(
        &mut reader,
        Flavor::Mariadb,
        "app",
        "every",
        &["id".to_string()],
    )
    .await
    .unwrap();
    assert_eq!(table.table.primary_key, vec![0]);
    assert_eq!(table.table.columns.len(), 54, "{:?}", table.table.columns);
    // Two rows a chunk: the values of every chunk, not only the first, are checked.
    let rows = read_all(&mut reader, &table, 2).await;
    assert_eq!(rows.len(), 10);
    assert!(table.rows_estimate.is_some(), "no TABLE_ROWS estimate");
    let mut mismatches = Vec::new();
    for row in &rows {
        let id = match row[0] {
            Value::Int(id) => id,
            ref other => panic!("id read as {other:?}"),
        };
        let after = &inserts[&id];
        let names: Vec<&str> = after.keys().map(String::as_str).collect();
        assert_eq!(
            names, table.table.columns,
            "row {id}: the snapshot's columns differ from the insert document's"
        );
        for (name, value) in table.table.columns.iter().zip(row) {
            let snapshot = value_to_bson(value);
            let stream = after.get(name).unwrap();
            if !same(&snapshot, stream) {
                mismatches.push(format!(
                    "id {id} column `{name}`: snapshot {snapshot:?} ({value:?}), stream {stream:?}"
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // Both sides hold the stored values, not merely the same wrong ones (types.rs checks the
    // stream's in full): a few spot checks of the snapshot's own.
    let column = |name: &str| table.table.columns.iter().position(|c| c == name).unwrap();
    let value = |id: usize, name: &str| value_to_bson(&rows[id - 1][column(name)]);
    assert_eq!(
        value(2, "ts0"),
        Bson::String("1970-01-01T00:00:01.000000Z".into())
    );
    assert_eq!(
        value(3, "ts6"),
        Bson::String("2038-01-19T03:14:07.999999Z".into())
    );
    assert_eq!(
        value(5, "ts0"),
        Bson::String("0000-00-00T00:00:00.000000Z".into())
    );
    assert_eq!(value(5, "t6"), Bson::String("-00:00:01.500000".into()));
    assert_eq!(value(3, "l1"), Bson::String("é€ü Ãñ".into()));
    assert!(
        matches!(value(3, "j"), Bson::Document(_)),
        "{:?}",
        value(3, "j")
    );
    assert!(
        matches!(value(7, "j"), Bson::String(_)),
        "{:?}",
        value(7, "j")
    );
    match value(10, "i6") {
        Bson::Binary(b) => assert_eq!(
            b.bytes,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 1, 2, 3, 4]
        ),
        other => panic!("i6 read as {other:?}"),
    }
    match value(3, "bn") {
        Bson::Binary(b) => assert_eq!(b.bytes, [1, 2, 0, 0, 0, 0]),
        other => panic!("bn read as {other:?}"),
    }
    assert!(sdl.is_running(), "sdl exited:\n{}", sdl.logs());
}

/// Each key table: its key columns, and the rows (`v` unique per row) in no particular order.
struct KeyedTable {
    name: &'static str,
    columns: &'static str,
    key: &'static [&'static str],
    values: Vec<String>,
}

fn keyed_tables() -> Vec<KeyedTable> {
    let mut composite = Vec::new();
    let strings = ["'a'", "'B'", "'é'", "'ab'"];
    let binaries = ["0x00", "0xFF", "0x80", "0x0100", "X''"];
    let times = [
        "'2024-01-01 00:00:00'",
        "'2024-01-01 00:00:00.000001'",
        "'1999-12-31 23:59:59.999999'",
    ];
    for k1 in [-1, 0, 7] {
        for k2 in strings {
            for k3 in binaries {
                for k4 in times {
                    composite.push(format!("{k1}, {k2}, {k3}, {k4}"));
                }
            }
        }
    }
    let single = |values: &[&str]| values.iter().map(|v| v.to_string()).collect::<Vec<_>>();
    vec![
        KeyedTable {
            name: "composite",
            columns: "k1 INT, k2 VARCHAR(20) CHARSET utf8mb4, k3 VARBINARY(8), k4 DATETIME(6), \
                      v INT UNIQUE NOT NULL AUTO_INCREMENT, PRIMARY KEY (k1, k2, k3, k4)",
            key: &["k1", "k2", "k3", "k4"],
            values: composite,
        },
        KeyedTable {
            // Keys a double cannot tell apart: paging must compare them as DECIMAL.
            name: "decimal_key",
            columns: "k DECIMAL(30,20) PRIMARY KEY, v INT UNIQUE NOT NULL AUTO_INCREMENT",
            key: &["k"],
            values: single(&[
                "1.00000000000000000001",
                "1.00000000000000000002",
                "1.00000000000000000003",
                "-1",
                "0",
                "1.00000000000000000000",
            ]),
        },
        KeyedTable {
            // ENUM orders by member number, not by name.
            name: "enum_key",
            columns: "k ENUM('z','b','a') PRIMARY KEY, v INT UNIQUE NOT NULL AUTO_INCREMENT",
            key: &["k"],
            values: single(&["'a'", "'z'", "'b'"]),
        },
        KeyedTable {
            name: "latin1_key",
            columns: "k VARCHAR(10) CHARSET latin1 PRIMARY KEY, \
                      v INT UNIQUE NOT NULL AUTO_INCREMENT",
            key: &["k"],
            values: single(&["'é'", "'e€'", "'z'", "'b'", "'ü'", "'Ã'"]),
        },
        KeyedTable {
            name: "bit_key",
            columns: "k BIT(16) PRIMARY KEY, v INT UNIQUE NOT NULL AUTO_INCREMENT",
            key: &["k"],
            values: single(&["b'1'", "b'1000000000000000'", "b'11111111'", "b'100000000'"]),
        },
        KeyedTable {
            name: "timestamp_key",
            columns: "k TIMESTAMP(6) PRIMARY KEY, v INT UNIQUE NOT NULL AUTO_INCREMENT",
            key: &["k"],
            values: single(&[
                "'2038-01-19 03:14:07.999999'",
                "'1970-01-01 00:00:01'",
                "'2024-03-31 01:30:00.5'",
                "'2024-03-31 01:30:00.499999'",
            ]),
        },
        KeyedTable {
            // Bytes that are not UTF-8, each with a successor.
            name: "binary_key",
            columns: "k VARBINARY(8) PRIMARY KEY, v INT UNIQUE NOT NULL AUTO_INCREMENT",
            key: &["k"],
            values: single(&[
                "0x80", "0xFF", "0x7F", "0x00", "0xFE", "0xFF00", "0x81", "0xC3",
            ]),
        },
        KeyedTable {
            name: "fixed_binary_key",
            columns: "k BINARY(3) PRIMARY KEY, v INT UNIQUE NOT NULL AUTO_INCREMENT",
            key: &["k"],
            values: single(&["0x80", "0xFF", "0x00", "0xFE0000", "0x0001", "0xC3A9"]),
        },
        KeyedTable {
            // UUID orders by its own rule (not its text), bound back as its stored bytes.
            name: "uuid_key",
            columns: "k UUID PRIMARY KEY, v INT UNIQUE NOT NULL AUTO_INCREMENT",
            key: &["k"],
            values: single(&[
                "'f47ac10b-58cc-4372-a567-0e02b2c3d479'",
                "'123e4567-e89b-12d3-a456-426655440000'",
                "'00000000-0000-0000-0000-000000000001'",
                "'123e4567-e89b-12d3-a456-426655440001'",
                "'223e4567-e89b-12d3-a456-426655440000'",
                "'ffffffff-ffff-1fff-bfff-ffffffffffff'",
            ]),
        },
        KeyedTable {
            name: "inet6_key",
            columns: "k INET6 PRIMARY KEY, v INT UNIQUE NOT NULL AUTO_INCREMENT",
            key: &["k"],
            values: single(&[
                "'::1'",
                "'::ffff:1.2.3.4'",
                "'fe80::1'",
                "'::'",
                "'2001:db8::ff'",
            ]),
        },
        KeyedTable {
            // A NOT NULL UNIQUE key rather than the primary key, with negative and >24 h TIMEs.
            name: "unique_time_key",
            columns: "id INT PRIMARY KEY AUTO_INCREMENT, k TIME(6) NOT NULL UNIQUE, \
                      v INT UNIQUE NOT NULL",
            key: &["k"],
            values: Vec::new(),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_reads_every_row_once_in_key_order() {
    let mariadb = MariaDb::start().await;
    let mut conn = mariadb.root_conn().await;
    // TIMESTAMP keys written in UTC: no local daylight-saving gap or overlap.
    conn.query_drop("SET time_zone = '+00:00'").await.unwrap();
    for table in keyed_tables() {
        conn.query_drop(format!(
            "CREATE TABLE app.{} ({})",
            table.name, table.columns
        ))
        .await
        .unwrap();
        let key_list = table.key.join(", ");
        for values in &table.values {
            conn.query_drop(format!(
                "INSERT INTO app.{} ({key_list}) VALUES ({values})",
                table.name
            ))
            .await
            .unwrap_or_else(|e| panic!("{}: {values}: {e}", table.name));
        }
    }
    for (v, time) in [
        "-838:59:59",
        "-00:00:00.000001",
        "00:00:00",
        "24:00:00",
        "838:59:59",
        "-01:00:00",
    ]
    .iter()
    .enumerate()
    {
        conn.query_drop(format!(
            "INSERT INTO app.unique_time_key (k, v) VALUES ('{time}', {v})"
        ))
        .await
        .unwrap();
    }

    let mut reader = snapshot_conn(&mariadb).await;
    for table in keyed_tables() {
        let key: Vec<String> = table.key.iter().map(|k| k.to_string()).collect();
        // The key order as the server itself sorts by the key.
        let expected: Vec<i64> = conn
            .query(format!(
                "SELECT v FROM app.{} ORDER BY {}",
                table.name,
                key.join(", ")
            ))
            .await
            .unwrap();
        assert!(
            expected.len() >= 3,
            "{}: {} rows",
            table.name,
            expected.len()
        );
        let described = describe(&mut reader, Flavor::Mariadb, "app", table.name, &key)
            .await
            .unwrap();
        let v_index = described
            .table
            .columns
            .iter()
            .position(|c| c == "v")
            .unwrap();
        for limit in [1, 2, 5, 7, 1000] {
            let rows = read_all(&mut reader, &described, limit).await;
            let read: Vec<i64> = rows
                .iter()
                .map(|row| match row[v_index] {
                    Value::Int(v) => v,
                    ref other => panic!("v read as {other:?}"),
                })
                .collect();
            assert_eq!(
                read, expected,
                "app.{} with chunks of {limit}: rows read (by v) differ from the key order",
                table.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tables_views_key_columns_and_lost_access_are_refused_naming_the_table() {
    let mariadb = MariaDb::start().await;
    let mut conn = mariadb.root_conn().await;
    for statement in [
        "CREATE TABLE app.t (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE app.dropped (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE app.private (id INT PRIMARY KEY, v INT)",
        "CREATE VIEW app.w AS SELECT * FROM app.t",
        "CREATE USER 'narrow'@'%'",
        "GRANT SELECT ON app.private TO 'narrow'@'%'",
        "GRANT SELECT ON app.dropped TO 'narrow'@'%'",
    ] {
        conn.query_drop(statement).await.unwrap();
    }
    let mut reader = snapshot_conn(&mariadb).await;
    let id = ["id".to_string()];
    for (table, key, expected) in [
        ("missing", &id[..], "no such table"),
        ("w", &id[..], "not a base table"),
        (
            "t",
            &["nope".to_string()][..],
            "key column `nope` does not exist",
        ),
        ("t", &[][..], "add a primary key"),
    ] {
        let error = describe(&mut reader, Flavor::Mariadb, "app", table, key)
            .await
            .err()
            .unwrap_or_else(|| panic!("app.{table} with key {key:?} was accepted"));
        let text = error.to_string();
        assert!(!error.is_transient(), "{text}");
        assert!(
            text.contains(&format!("app.{table}")) && text.contains(expected),
            "app.{table}: {text}"
        );
    }

    // Described, then dropped, or the sdl user's SELECT revoked, before a chunk is read: refused
    // naming the table and the fix, not retried for ever.
    let mut narrow = mysql_async::Conn::from_url(
        format!(
            "mysql://narrow@127.0.0.1:{}/?prefer_socket=false",
            mariadb.port
        )
        .as_str(),
    )
    .await
    .unwrap();
    prepare_session(&mut narrow).await.unwrap();
    for (table, change, expected) in [
        (
            "dropped",
            "DROP TABLE app.dropped",
            "dropped or its columns changed",
        ),
        (
            "private",
            "REVOKE SELECT ON app.private FROM 'narrow'@'%'",
            "Grant it SELECT on app.private",
        ),
    ] {
        let described = describe(&mut narrow, Flavor::Mariadb, "app", table, &id)
            .await
            .unwrap();
        assert_eq!(
            read_chunk(&mut narrow, &described, None, 10)
                .await
                .unwrap()
                .len(),
            0
        );
        conn.query_drop(change).await.unwrap();
        let error = read_chunk(&mut narrow, &described, Some(&[Value::Int(0)]), 10)
            .await
            .err()
            .unwrap_or_else(|| panic!("app.{table}: read after `{change}`"));
        let text = error.to_string();
        assert!(!error.is_transient(), "{text}");
        assert!(
            text.contains(&format!("app.{table}")) && text.contains(expected),
            "app.{table}: {text}"
        );
    }
}

/// Gentle on the source: a chunk past the last key read is a range read of the key's index,
/// never a scan of the table from its start and never a sort, for a single, a composite, a
/// unique (not primary) and a UUID key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chunk_reads_a_range_of_the_key_index() {
    let mariadb = MariaDb::start().await;
    let mut conn = mariadb.root_conn().await;
    for statement in [
        "CREATE TABLE app.single (k INT PRIMARY KEY, v INT)",
        "CREATE TABLE app.composite (k1 INT, k2 VARCHAR(20), k3 VARBINARY(8), \
         k4 DATETIME(6), v INT, PRIMARY KEY (k1, k2, k3, k4))",
        "CREATE TABLE app.unique_key (id INT PRIMARY KEY, k INT NOT NULL, v INT, \
         UNIQUE KEY uk (k))",
        // 20,000 rows each, from MariaDB's sequence engine.
        "INSERT INTO app.single SELECT seq, seq FROM seq_1_to_20000",
        "INSERT INTO app.composite SELECT seq % 10, CONCAT('x', seq % 7), CAST(seq AS BINARY), \
         '2024-01-01 00:00:00.000001' + INTERVAL seq SECOND, seq FROM seq_1_to_20000",
        "INSERT INTO app.unique_key SELECT seq, 20000 - seq, seq FROM seq_1_to_20000",
        "CREATE TABLE app.uuid_key (k UUID PRIMARY KEY, v INT)",
        "INSERT INTO app.uuid_key SELECT UUID(), seq FROM seq_1_to_20000",
        "ANALYZE TABLE app.single, app.composite, app.unique_key, app.uuid_key",
    ] {
        conn.query_drop(format!("USE app; {statement}"))
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let mut reader = snapshot_conn(&mariadb).await;
    for (table, key, index) in [
        ("single", &["k"][..], "PRIMARY"),
        ("composite", &["k1", "k2", "k3", "k4"][..], "PRIMARY"),
        ("unique_key", &["k"][..], "uk"),
        ("uuid_key", &["k"][..], "PRIMARY"),
    ] {
        let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        let described = describe(&mut reader, Flavor::Mariadb, "app", table, &key)
            .await
            .unwrap();
        let first = read_chunk(&mut reader, &described, None, 1000)
            .await
            .unwrap();
        let after = key_of(&described, first.last().unwrap());
        let (query, params) = chunk_statement(&described, Some(&after), 1000).unwrap();
        let plan: Vec<mysql_async::Row> = reader
            .exec(format!("EXPLAIN {query}"), params)
            .await
            .unwrap();
        assert_eq!(plan.len(), 1, "app.{table}: {plan:?}");
        let field = |name: &str| -> String {
            let value: Option<Vec<u8>> = plan[0].get(name).unwrap();
            String::from_utf8_lossy(&value.unwrap_or_default()).into_owned()
        };
        assert_eq!(field("type"), "range", "app.{table}: {plan:?}");
        assert_eq!(field("key"), index, "app.{table}: {plan:?}");
        assert!(
            !field("Extra").contains("filesort"),
            "app.{table}: {plan:?}"
        );
    }
}
