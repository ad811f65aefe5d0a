//! Every column type family travels MariaDB → sdl → MongoDB exactly: each document field is
//! compared with the value docs/change-document.md promises, at the type's minimum, maximum, NULL,
//! empty value and non-ASCII text in each charset.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{change_documents, wait_for_offset, MariaDb, Mongo, Sdl};
use mongodb::bson::{spec::BinarySubtype, Binary, Bson, Document};
use mysql_async::prelude::Queryable;

const TIMEOUT: Duration = Duration::from_secs(120);

fn dec(text: &str) -> Bson {
    Bson::Decimal128(text.parse().unwrap())
}

fn s(text: &str) -> Bson {
    Bson::String(text.into())
}

fn bin(bytes: &[u8]) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes: bytes.to_vec(),
    })
}

fn strs(items: &[&str]) -> Bson {
    Bson::Array(items.iter().map(|i| s(i)).collect())
}

/// Equality that tells -0.0 from 0.0.
fn same(a: &Bson, b: &Bson) -> bool {
    match (a, b) {
        (Bson::Double(x), Bson::Double(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

/// Checks `expected` (id, column, value) against the insert documents of `app.<table>`.
fn check(
    family: &str,
    table: &str,
    inserts: &HashMap<(String, i64), Document>,
    columns: &[&str],
    expected: &[(i64, &[Bson])],
) {
    for (id, values) in expected {
        let after = inserts
            .get(&(table.to_string(), *id))
            .unwrap_or_else(|| panic!("{family}: no insert document for app.{table} id {id}"));
        assert_eq!(
            after.get("id"),
            Some(&Bson::Int64(*id)),
            "{family}: id of {after}"
        );
        assert_eq!(values.len(), columns.len(), "{family}: test table is wrong");
        for (column, value) in columns.iter().zip(values.iter()) {
            let got = after.get(*column).unwrap_or_else(|| {
                panic!("{family}: app.{table} id {id} lacks `{column}`: {after}")
            });
            assert!(
                same(got, value),
                "{family}: app.{table} id {id} column `{column}`: got {got:?}, expected {value:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_family_arrives_exact() {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let mut conn = mariadb.root_conn().await;
    for statement in [
        "SET time_zone = '+00:00'",
        "SET sql_mode = ''",
        "CREATE TABLE app.ints (id INT PRIMARY KEY, ti TINYINT, tu TINYINT UNSIGNED, \
         si SMALLINT, su SMALLINT UNSIGNED, mi MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, \
         iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED)",
        "CREATE TABLE app.decs (id INT PRIMARY KEY, d65 DECIMAL(65,30), d34 DECIMAL(34,0), \
         d10 DECIMAL(10,2), d5 DECIMAL(5,5))",
        "CREATE TABLE app.floats (id INT PRIMARY KEY, f FLOAT, d DOUBLE)",
        "CREATE TABLE app.strs (id INT PRIMARY KEY, u4 VARCHAR(20) CHARSET utf8mb4, \
         u3 VARCHAR(20) CHARSET utf8mb3, l1 VARCHAR(20) CHARSET latin1, \
         a VARCHAR(20) CHARSET ascii, u2 VARCHAR(20) CHARSET ucs2, u16 VARCHAR(20) CHARSET utf16, \
         u16le VARCHAR(20) CHARSET utf16le, u32 VARCHAR(20) CHARSET utf32, \
         c CHAR(10) CHARSET latin1, t TEXT CHARSET utf8mb4, lt TEXT CHARSET latin1, \
         vb VARBINARY(20), bl BLOB, bn BINARY(4))",
        "CREATE TABLE app.temporal (id INT PRIMARY KEY, d DATE, dt0 DATETIME, dt6 DATETIME(6), \
         ts0 TIMESTAMP NULL, ts6 TIMESTAMP(6) NULL, t0 TIME, t6 TIME(6), y YEAR)",
        "CREATE TABLE app.misc (id INT PRIMARY KEY, e ENUM('a','b','ç'), s SET('x','y','z'), \
         b1 BIT(1), b64 BIT(64), j JSON, g GEOMETRY, gs INT AS (id * 3) STORED, \
         inv INT INVISIBLE DEFAULT 7)",
    ] {
        conn.query_drop(statement).await.unwrap();
    }

    let mut sdl = Sdl::new(&mariadb, &mongo, "current");
    sdl.start();
    sdl.wait_following().await;

    for statement in [
        // Integers: minimum, maximum, NULL; 2^63 for BIGINT UNSIGNED.
        "INSERT INTO app.ints VALUES (1, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, \
         -9223372036854775808, 0)",
        "INSERT INTO app.ints VALUES (2, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, \
         4294967295, 9223372036854775807, 18446744073709551615)",
        "INSERT INTO app.ints VALUES (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
         9223372036854775808)",
        // Decimals: 65 digits (text), 34 digits (Decimal128), scale kept, negative, zero.
        "INSERT INTO app.decs VALUES (1, \
         99999999999999999999999999999999999.999999999999999999999999999999, \
         9999999999999999999999999999999999, -12345678.90, 0.00001)",
        "INSERT INTO app.decs VALUES (2, -0.000000000000000000000000000001, \
         -9999999999999999999999999999999999, 0.00, 0.99999)",
        "INSERT INTO app.decs VALUES (3, NULL, NULL, NULL, NULL)",
        // Floats: -0.0, extremes.
        "INSERT INTO app.floats VALUES (2, 3.4028234663852886e38, 1.7976931348623157e308)",
        "INSERT INTO app.floats VALUES (3, -1.1754943508222875e-38, -2.2250738585072014e-308)",
        "INSERT INTO app.floats VALUES (4, NULL, NULL)",
        // Strings: non-ASCII in every charset, empty, NULL.
        "INSERT INTO app.strs VALUES (1, '😀 é', 'é ü ß', 'é€ü', 'plain ascii', 'é日本', \
         '😀日本', '😀é', '😀é', 'çà', 'ünïcödé 😀', 'Ãé', 0x00FF01, 0xDEADBEEF, 0x01020000)",
        "INSERT INTO app.strs VALUES (2, '', '', '', '', '', '', '', '', '', '', '', '', '', '')",
        "INSERT INTO app.strs VALUES (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
         NULL, NULL, NULL, NULL, NULL)",
        // Temporal: minimum and maximum, microseconds, zero and partial-zero dates, negative and
        // over-24 h TIME, YEAR 0000 and its range.
        "INSERT INTO app.temporal VALUES (1, '1000-01-01', '1000-01-01 00:00:00', \
         '9999-12-31 23:59:59.999999', '1970-01-01 00:00:01', '2038-01-19 03:14:07.999999', \
         '-838:59:59', '-12:34:56.000001', 1901)",
        "INSERT INTO app.temporal VALUES (2, '0000-00-00', '0000-00-00 00:00:00', \
         '2020-00-00 00:00:00.000001', '0000-00-00 00:00:00', NULL, '838:59:59', \
         '-00:00:00.000001', '0000')",
        "INSERT INTO app.temporal VALUES (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 2155)",
        // ENUM, SET, BIT, JSON, GEOMETRY, generated and invisible columns.
        "INSERT INTO app.misc (id, e, s, b1, b64, j, g, inv) VALUES (1, 'ç', 'z,x', b'1', \
         0xFFFFFFFFFFFFFFFF, '{\"a\": 1, \"b\": [1.50, \"x\", null, true]}', \
         ST_GeomFromText('POINT(1 2)'), 8)",
        "INSERT INTO app.misc (id, e, s, b1, b64, j, g) VALUES (2, 'a', '', b'0', 0, '[]', \
         ST_GeomFromText('LINESTRING(0 0, 1 1)'))",
        "INSERT INTO app.misc (id, e, s, b1, b64, j, g, inv) VALUES (3, NULL, NULL, NULL, NULL, \
         NULL, NULL, NULL)",
    ] {
        conn.query_drop(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    // -0.0 through the binary protocol: a literal `-0e0` is folded to 0 by the parser.
    conn.exec_drop(
        "INSERT INTO app.floats VALUES (1, ?, ?)",
        (-0.0f32, -0.0f64),
    )
    .await
    .unwrap();
    // MariaDB stores -0.0 as 0.0; the document must carry exactly the stored bits, read back
    // through the binary protocol.
    let (stored_f, stored_d): (f32, f64) = conn
        .exec_first("SELECT f, d FROM app.floats WHERE id = 1", ())
        .await
        .unwrap()
        .unwrap();
    let geometry: Vec<(i64, Vec<u8>)> = conn
        .query("SELECT id, g FROM app.misc WHERE g IS NOT NULL ORDER BY id")
        .await
        .unwrap();

    wait_for_offset(&mongo, &mariadb.gtid_binlog_pos().await, TIMEOUT, &sdl).await;
    let docs = change_documents(&mongo).await;
    let mut inserts = HashMap::new();
    for d in &docs {
        if d.get_str("op").unwrap() != "insert" {
            continue;
        }
        let meta = d.get_document("meta").unwrap();
        let after = d.get_document("after").unwrap().clone();
        let id = after.get_i64("id").unwrap();
        inserts.insert((meta.get_str("tbl").unwrap().to_string(), id), after);
    }

    check(
        "integers",
        "ints",
        &inserts,
        &["ti", "tu", "si", "su", "mi", "mu", "i", "iu", "bi", "bu"],
        &[
            (
                1,
                &[
                    Bson::Int64(-128),
                    Bson::Int64(0),
                    Bson::Int64(-32768),
                    Bson::Int64(0),
                    Bson::Int64(-8388608),
                    Bson::Int64(0),
                    Bson::Int64(-2147483648),
                    Bson::Int64(0),
                    Bson::Int64(i64::MIN),
                    Bson::Int64(0),
                ],
            ),
            (
                2,
                &[
                    Bson::Int64(127),
                    Bson::Int64(255),
                    Bson::Int64(32767),
                    Bson::Int64(65535),
                    Bson::Int64(8388607),
                    Bson::Int64(16777215),
                    Bson::Int64(2147483647),
                    Bson::Int64(4294967295),
                    Bson::Int64(i64::MAX),
                    dec("18446744073709551615"),
                ],
            ),
            (
                3,
                &[
                    Bson::Null,
                    Bson::Null,
                    Bson::Null,
                    Bson::Null,
                    Bson::Null,
                    Bson::Null,
                    Bson::Null,
                    Bson::Null,
                    Bson::Null,
                    dec("9223372036854775808"),
                ],
            ),
        ],
    );

    check(
        "decimals",
        "decs",
        &inserts,
        &["d65", "d34", "d10", "d5"],
        &[
            (
                1,
                &[
                    s("99999999999999999999999999999999999.999999999999999999999999999999"),
                    dec("9999999999999999999999999999999999"),
                    dec("-12345678.90"),
                    dec("0.00001"),
                ],
            ),
            (
                2,
                &[
                    dec("-0.000000000000000000000000000001"),
                    dec("-9999999999999999999999999999999999"),
                    dec("0.00"),
                    dec("0.99999"),
                ],
            ),
            (3, &[Bson::Null, Bson::Null, Bson::Null, Bson::Null]),
        ],
    );

    check(
        "floating point",
        "floats",
        &inserts,
        &["f", "d"],
        &[
            (
                1,
                &[Bson::Double(f64::from(stored_f)), Bson::Double(stored_d)],
            ),
            (
                2,
                &[Bson::Double(f64::from(f32::MAX)), Bson::Double(f64::MAX)],
            ),
            (
                3,
                &[
                    Bson::Double(-f64::from(f32::MIN_POSITIVE)),
                    Bson::Double(-f64::MIN_POSITIVE),
                ],
            ),
            (4, &[Bson::Null, Bson::Null]),
        ],
    );

    check(
        "strings and binary",
        "strs",
        &inserts,
        &[
            "u4", "u3", "l1", "a", "u2", "u16", "u16le", "u32", "c", "t", "lt", "vb", "bl", "bn",
        ],
        &[
            (
                1,
                &[
                    s("😀 é"),
                    s("é ü ß"),
                    s("é€ü"),
                    s("plain ascii"),
                    s("é日本"),
                    s("😀日本"),
                    s("😀é"),
                    s("😀é"),
                    s("çà"),
                    s("ünïcödé 😀"),
                    s("Ãé"),
                    bin(&[0x00, 0xFF, 0x01]),
                    bin(&[0xDE, 0xAD, 0xBE, 0xEF]),
                    bin(&[0x01, 0x02, 0x00, 0x00]),
                ],
            ),
            (
                2,
                &[
                    s(""),
                    s(""),
                    s(""),
                    s(""),
                    s(""),
                    s(""),
                    s(""),
                    s(""),
                    s(""),
                    s(""),
                    s(""),
                    bin(&[]),
                    bin(&[]),
                    bin(&[0, 0, 0, 0]),
                ],
            ),
            (3, &[const { Bson::Null }; 14]),
        ],
    );

    check(
        "date and time",
        "temporal",
        &inserts,
        &["d", "dt0", "dt6", "ts0", "ts6", "t0", "t6", "y"],
        &[
            (
                1,
                &[
                    s("1000-01-01"),
                    s("1000-01-01 00:00:00.000000"),
                    s("9999-12-31 23:59:59.999999"),
                    s("1970-01-01T00:00:01.000000Z"),
                    s("2038-01-19T03:14:07.999999Z"),
                    s("-838:59:59.000000"),
                    s("-12:34:56.000001"),
                    Bson::Int64(1901),
                ],
            ),
            (
                2,
                &[
                    s("0000-00-00"),
                    s("0000-00-00 00:00:00.000000"),
                    s("2020-00-00 00:00:00.000001"),
                    s("0000-00-00T00:00:00.000000Z"),
                    Bson::Null,
                    s("838:59:59.000000"),
                    s("-00:00:00.000001"),
                    Bson::Int64(0),
                ],
            ),
            (
                3,
                &[
                    Bson::Null,
                    Bson::Null,
                    Bson::Null,
                    Bson::Null,
                    Bson::Null,
                    Bson::Null,
                    Bson::Null,
                    Bson::Int64(2155),
                ],
            ),
        ],
    );

    let geometry: HashMap<i64, Vec<u8>> = geometry.into_iter().collect();
    check(
        "ENUM, SET, BIT, JSON, GEOMETRY, generated and invisible columns",
        "misc",
        &inserts,
        &["e", "s", "b1", "b64", "j", "g", "gs", "inv"],
        &[
            (
                1,
                &[
                    s("ç"),
                    strs(&["x", "z"]),
                    bin(&[1]),
                    bin(&[0xFF; 8]),
                    // MariaDB's JSON (LONGTEXT + json_valid check) as a document, numbers exact.
                    Bson::Document(mongodb::bson::doc! {
                        "a": 1i64,
                        "b": [dec("1.50"), "x", Bson::Null, true],
                    }),
                    bin(&geometry[&1]),
                    Bson::Int64(3),
                    Bson::Int64(8),
                ],
            ),
            (
                2,
                &[
                    s("a"),
                    strs(&[]),
                    bin(&[0]),
                    bin(&[0; 8]),
                    Bson::Array(vec![]),
                    bin(&geometry[&2]),
                    Bson::Int64(6),
                    Bson::Int64(7),
                ],
            ),
            (
                3,
                &[
                    Bson::Null,
                    Bson::Null,
                    Bson::Null,
                    Bson::Null,
                    Bson::Null,
                    Bson::Null,
                    Bson::Int64(9),
                    Bson::Null,
                ],
            ),
        ],
    );
    assert!(sdl.is_running(), "sdl exited:\n{}", sdl.logs());
}
