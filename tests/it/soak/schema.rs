//! The soak workload's tables, the values written into them, and the ALTER program run while
//! they are written.
//!
//! Every table is keyed by `id BIGINT`. Each column has a [`Kind`] that says which literals the
//! writer generates for it and how its value is compared at the end: the value MariaDB returns
//! (binary protocol) and the value rebuilt from the change documents are both rendered to one
//! canonical text per kind, following docs/change-document.md.

use mongodb::bson::Bson;
use mysql_async::Value;

use crate::support::Rng;

/// Which alphabet a string column gets, so every generated value fits its charset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alphabet {
    Unicode,
    Bmp,
    Latin1,
    Ascii,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int { bits: u32, unsigned: bool },
    Decimal { precision: u32, scale: u32 },
    Float,
    Double,
    Date,
    DateTime { fsp: u32 },
    Timestamp { fsp: u32 },
    Time { fsp: u32 },
    Year,
    Text { alphabet: Alphabet, max: usize },
    Binary { max: usize },
    Bit { bits: u32 },
    Enum,
    Set,
    Json,
}

#[derive(Clone, Debug)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
}

pub struct Table {
    pub name: &'static str,
    /// `CREATE TABLE` (one line: the DDL check compares statement texts with the binlog's).
    pub create: &'static str,
    pub columns: Vec<Column>,
}

const fn int(bits: u32, unsigned: bool) -> Kind {
    Kind::Int { bits, unsigned }
}

const fn text(alphabet: Alphabet, max: usize) -> Kind {
    Kind::Text { alphabet, max }
}

fn col(name: &'static str, kind: Kind) -> Column {
    Column { name, kind }
}

/// The tables: every type family of tests/types.rs, and `bulk` for the very large transaction.
pub fn tables() -> Vec<Table> {
    use Alphabet::*;
    vec![
        Table {
            name: "ints",
            create: "CREATE TABLE app.ints (id BIGINT PRIMARY KEY, ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED, mi MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED) ENGINE=InnoDB",
            columns: vec![
                col("ti", int(8, false)),
                col("tu", int(8, true)),
                col("si", int(16, false)),
                col("su", int(16, true)),
                col("mi", int(24, false)),
                col("mu", int(24, true)),
                col("i", int(32, false)),
                col("iu", int(32, true)),
                col("bi", int(64, false)),
                col("bu", int(64, true)),
            ],
        },
        Table {
            name: "nums",
            create: "CREATE TABLE app.nums (id BIGINT PRIMARY KEY, d65 DECIMAL(65,30), d34 DECIMAL(34,4), d10 DECIMAL(10,2), d5 DECIMAL(5,5), f FLOAT, d DOUBLE) ENGINE=InnoDB",
            columns: vec![
                col("d65", Kind::Decimal { precision: 65, scale: 30 }),
                col("d34", Kind::Decimal { precision: 34, scale: 4 }),
                col("d10", Kind::Decimal { precision: 10, scale: 2 }),
                col("d5", Kind::Decimal { precision: 5, scale: 5 }),
                col("f", Kind::Float),
                col("d", Kind::Double),
            ],
        },
        Table {
            name: "times",
            create: "CREATE TABLE app.times (id BIGINT PRIMARY KEY, d DATE, dt0 DATETIME, dt6 DATETIME(6), ts0 TIMESTAMP NULL, ts3 TIMESTAMP(3) NULL, ts6 TIMESTAMP(6) NULL, t0 TIME, t6 TIME(6), y YEAR) ENGINE=InnoDB",
            columns: vec![
                col("d", Kind::Date),
                col("dt0", Kind::DateTime { fsp: 0 }),
                col("dt6", Kind::DateTime { fsp: 6 }),
                col("ts0", Kind::Timestamp { fsp: 0 }),
                col("ts3", Kind::Timestamp { fsp: 3 }),
                col("ts6", Kind::Timestamp { fsp: 6 }),
                col("t0", Kind::Time { fsp: 0 }),
                col("t6", Kind::Time { fsp: 6 }),
                col("y", Kind::Year),
            ],
        },
        Table {
            name: "texts",
            create: "CREATE TABLE app.texts (id BIGINT PRIMARY KEY, u4 VARCHAR(40) CHARACTER SET utf8mb4, u3 VARCHAR(40) CHARACTER SET utf8mb3, l1 VARCHAR(40) CHARACTER SET latin1, a VARCHAR(40) CHARACTER SET ascii, u2 VARCHAR(20) CHARACTER SET ucs2, c CHAR(12) CHARACTER SET latin1, t TEXT CHARACTER SET utf8mb4, lt TEXT CHARACTER SET latin1) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            columns: vec![
                col("u4", text(Unicode, 40)),
                col("u3", text(Bmp, 40)),
                col("l1", text(Latin1, 40)),
                col("a", text(Ascii, 40)),
                col("u2", text(Bmp, 20)),
                col("c", text(Latin1, 12)),
                col("t", text(Unicode, 300)),
                col("lt", text(Latin1, 300)),
            ],
        },
        Table {
            name: "bins",
            create: "CREATE TABLE app.bins (id BIGINT PRIMARY KEY, vb VARBINARY(40), bl BLOB, bn BINARY(4), b1 BIT(1), b12 BIT(12), b64 BIT(64)) ENGINE=InnoDB",
            columns: vec![
                col("vb", Kind::Binary { max: 40 }),
                col("bl", Kind::Binary { max: 600 }),
                col("bn", Kind::Binary { max: 4 }),
                col("b1", Kind::Bit { bits: 1 }),
                col("b12", Kind::Bit { bits: 12 }),
                col("b64", Kind::Bit { bits: 64 }),
            ],
        },
        Table {
            name: "misc",
            create: "CREATE TABLE app.misc (id BIGINT PRIMARY KEY, e ENUM('a','b','ç'), s SET('x','y','z'), j JSON, note VARCHAR(64)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            columns: vec![
                col("e", Kind::Enum),
                col("s", Kind::Set),
                col("j", Kind::Json),
                col("note", text(Unicode, 64)),
            ],
        },
        Table {
            name: "bulk",
            create: "CREATE TABLE app.bulk (id BIGINT PRIMARY KEY, grp INT, v VARCHAR(32), amount DECIMAL(12,2), at DATETIME(6)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            columns: vec![
                col("grp", int(32, false)),
                col("v", text(Ascii, 32)),
                col("amount", Kind::Decimal { precision: 12, scale: 2 }),
                col("at", Kind::DateTime { fsp: 6 }),
            ],
        },
    ]
}

/// What an ALTER does to the rows already in its table (what the rebuild from the change
/// documents must do when it meets the DDL document: an ALTER writes no row events).
#[derive(Clone, Debug)]
pub enum Effect {
    /// A new column; existing rows get `default`.
    Add {
        column: Column,
        default: Bson,
    },
    Drop {
        column: &'static str,
    },
    /// A wider type (or back to the original one, which every written value fits): values stay.
    Retype {
        column: &'static str,
        column_type: &'static str,
    },
}

#[derive(Clone, Debug)]
pub struct Alter {
    pub table: &'static str,
    pub statement: &'static str,
    pub effect: Effect,
}

/// The ALTER program, run in a cycle: after one pass every table is back to its first shape, so
/// the cycle can repeat for as long as the soak runs.
pub fn alters() -> Vec<Alter> {
    let add = |table, statement, column, default| Alter {
        table,
        statement,
        effect: Effect::Add { column, default },
    };
    let drop = |table, statement, column| Alter {
        table,
        statement,
        effect: Effect::Drop { column },
    };
    let retype = |table, statement, column, column_type| Alter {
        table,
        statement,
        effect: Effect::Retype {
            column,
            column_type,
        },
    };
    vec![
        add(
            "texts",
            "ALTER TABLE app.texts ADD COLUMN extra VARCHAR(20) DEFAULT 'dflt'",
            col("extra", text(Alphabet::Unicode, 20)),
            Bson::String("dflt".into()),
        ),
        retype(
            "ints",
            "ALTER TABLE app.ints MODIFY COLUMN i BIGINT",
            "i",
            "bigint(20)",
        ),
        drop("misc", "ALTER TABLE app.misc DROP COLUMN note", "note"),
        retype(
            "nums",
            "ALTER TABLE app.nums MODIFY COLUMN d10 DECIMAL(16,2)",
            "d10",
            "decimal(16,2)",
        ),
        add(
            "times",
            "ALTER TABLE app.times ADD COLUMN added DATETIME(6) NULL",
            col("added", Kind::DateTime { fsp: 6 }),
            Bson::Null,
        ),
        retype(
            "texts",
            "ALTER TABLE app.texts MODIFY COLUMN u4 VARCHAR(80) CHARACTER SET utf8mb4",
            "u4",
            "varchar(80)",
        ),
        add(
            "bins",
            "ALTER TABLE app.bins ADD COLUMN n SMALLINT UNSIGNED DEFAULT 7",
            col("n", int(16, true)),
            Bson::Int64(7),
        ),
        drop("texts", "ALTER TABLE app.texts DROP COLUMN extra", "extra"),
        retype(
            "ints",
            "ALTER TABLE app.ints MODIFY COLUMN i INT",
            "i",
            "int(11)",
        ),
        add(
            "misc",
            "ALTER TABLE app.misc ADD COLUMN note VARCHAR(64) DEFAULT 'n/a'",
            col("note", text(Alphabet::Unicode, 64)),
            Bson::String("n/a".into()),
        ),
        retype(
            "nums",
            "ALTER TABLE app.nums MODIFY COLUMN d10 DECIMAL(10,2)",
            "d10",
            "decimal(10,2)",
        ),
        drop("times", "ALTER TABLE app.times DROP COLUMN added", "added"),
        retype(
            "texts",
            "ALTER TABLE app.texts MODIFY COLUMN u4 VARCHAR(40) CHARACTER SET utf8mb4",
            "u4",
            "varchar(40)",
        ),
        drop("bins", "ALTER TABLE app.bins DROP COLUMN n", "n"),
    ]
}

pub fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn pick<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len() as u64) as usize]
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A literal for a column of `kind`; NULL now and then for every kind.
pub fn literal(kind: Kind, rng: &mut Rng) -> String {
    if rng.below(12) == 0 {
        return "NULL".into();
    }
    match kind {
        Kind::Int { bits, unsigned } => {
            let (min, max): (i128, i128) = if unsigned {
                (0, (1i128 << bits) - 1)
            } else {
                (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
            };
            let v = match rng.below(6) {
                0 => min,
                1 => max,
                2 => 0,
                _ => min + (rng.next() as i128).rem_euclid(max - min + 1),
            };
            v.to_string()
        }
        Kind::Decimal { precision, scale } => {
            let int_digits = precision - scale;
            let digits = |rng: &mut Rng, n: u32| -> String {
                (0..n)
                    .map(|_| char::from(b'0' + rng.below(10) as u8))
                    .collect()
            };
            let (whole, fraction) = match rng.below(5) {
                0 => ("9".repeat(int_digits as usize), "9".repeat(scale as usize)),
                1 => (
                    "0".into(),
                    "0".repeat((scale as usize).saturating_sub(1)) + "1",
                ),
                _ => {
                    let n = rng.below(u64::from(int_digits) + 1) as u32;
                    (digits(rng, n), digits(rng, scale))
                }
            };
            let whole = if whole.is_empty() { "0".into() } else { whole };
            let sign = if rng.below(3) == 0 { "-" } else { "" };
            if scale == 0 {
                format!("{sign}{whole}")
            } else {
                format!("{sign}{whole}.{fraction}")
            }
        }
        Kind::Float => loop {
            let v = match rng.below(4) {
                0 => f32::from_bits(rng.next() as u32),
                1 => pick(rng, &["0", "-1.5", "3.4028235e38", "-1.1754944e-38", "0.1"])
                    .parse()
                    .unwrap(),
                _ => (rng.below(2_000_000) as f32 - 1_000_000.0) / 64.0,
            };
            if v.is_finite() {
                break format!("{v:e}");
            }
        },
        Kind::Double => loop {
            let v = match rng.below(4) {
                0 => f64::from_bits(rng.next()),
                1 => pick(
                    rng,
                    &[
                        "0",
                        "1.7976931348623157e308",
                        "-2.2250738585072014e-308",
                        "0.1",
                        "5e-324",
                    ],
                )
                .parse()
                .unwrap(),
                _ => (rng.below(2_000_000_000) as f64 - 1e9) / 1024.0,
            };
            if v.is_finite() {
                break format!("{v:e}");
            }
        },
        Kind::Date => {
            if rng.below(15) == 0 {
                return "'0000-00-00'".into();
            }
            format!("'{}'", date(rng))
        }
        Kind::DateTime { fsp } => {
            if rng.below(15) == 0 {
                return "'0000-00-00 00:00:00'".into();
            }
            format!("'{} {}{}'", date(rng), clock(rng, 24), fraction(rng, fsp))
        }
        Kind::Timestamp { fsp } => {
            if rng.below(15) == 0 {
                return "'0000-00-00 00:00:00'".into();
            }
            // The writer's session is in UTC: any second of the TIMESTAMP range is valid.
            let epoch = 1 + rng.below((1u64 << 31) - 2);
            format!("'{}{}'", utc_datetime(epoch), fraction(rng, fsp))
        }
        Kind::Time { fsp } => {
            let sign = if rng.below(3) == 0 { "-" } else { "" };
            let hours = match rng.below(4) {
                0 => 838,
                _ => rng.below(839),
            };
            let rest = format!("{:02}:{:02}", rng.below(60), rng.below(60));
            let fraction = if hours == 838 {
                String::new()
            } else {
                fraction(rng, fsp)
            };
            format!("'{sign}{hours}:{rest}{fraction}'")
        }
        Kind::Year => match rng.below(5) {
            0 => "0".into(),
            _ => (1901 + rng.below(255)).to_string(),
        },
        Kind::Text { alphabet, max } => {
            let base = match alphabet {
                Alphabet::Unicode => pick(
                    rng,
                    &[
                        "",
                        "plain",
                        "é ü ß",
                        "😀 emoji 🚀",
                        "日本語のテキスト",
                        "quote ' and \\ backslash",
                        "tab\there, newline\nthere",
                        "mixed 😀é日",
                    ],
                ),
                Alphabet::Bmp => pick(rng, &["", "plain", "é ü ß", "日本語", "Ωμέγα ' \\"]),
                Alphabet::Latin1 => pick(rng, &["", "plain", "é ü ß ç", "€ cp1252 ‰", "Ã© ' \\"]),
                Alphabet::Ascii => pick(rng, &["", "plain ascii", "x", "a ' quote"]),
            };
            let value = if base.is_empty() {
                String::new()
            } else {
                format!("{base} {}", rng.below(100_000))
            };
            let long = if max > 100 && rng.below(3) == 0 {
                value.repeat(1 + rng.below(8) as usize)
            } else {
                value
            };
            // No trailing space: CHAR columns drop it.
            sql_string(truncate(&long, max).trim_end())
        }
        Kind::Binary { max } => {
            let n = rng.below(max as u64 + 1) as usize;
            if n == 0 {
                return "''".into();
            }
            let bytes: String = (0..n).map(|_| format!("{:02X}", rng.below(256))).collect();
            format!("X'{bytes}'")
        }
        Kind::Bit { bits } => {
            let v = if bits == 64 {
                rng.next()
            } else {
                rng.below(1 << bits)
            };
            v.to_string()
        }
        Kind::Enum => sql_string(pick(rng, &["a", "b", "ç"])),
        Kind::Set => sql_string(pick(rng, &["", "x", "y", "z,x", "x,y,z", "y,z"])),
        Kind::Json => {
            let n = rng.next() as i64;
            let big = u64::MAX - rng.below(1000);
            let cents = rng.below(100_000);
            sql_string(match rng.below(5) {
                0 => format!("{{\"n\": {n}, \"d\": {}.{:02}, \"s\": \"é x\", \"a\": [1, \"x\", null, true, {{\"k\": -3}}], \"e\": {{}}}}", cents / 100, cents % 100),
                1 => format!("[{n}, {big}, -0.5, \"日本\", [], {{\"deep\": {{\"er\": [false]}}}}]"),
                2 => format!("{{\"big\": 123456789012345678901234567890, \"id\": {}}}", rng.below(1000)),
                3 => "{}".into(),
                _ => format!("\"just a string {n}\""),
            }
            .as_str())
        }
    }
}

fn date(rng: &mut Rng) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        1000 + rng.below(9000),
        1 + rng.below(12),
        1 + rng.below(28)
    )
}

fn clock(rng: &mut Rng, hours: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        rng.below(hours),
        rng.below(60),
        rng.below(60)
    )
}

fn fraction(rng: &mut Rng, fsp: u32) -> String {
    if fsp == 0 {
        return String::new();
    }
    let digits: String = (0..fsp)
        .map(|_| char::from(b'0' + rng.below(10) as u8))
        .collect();
    format!(".{digits}")
}

/// `YYYY-MM-DD hh:mm:ss` of a Unix time, in UTC (the calendar arithmetic is the `time` crate's).
fn utc_datetime(epoch: u64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(epoch as i64)
        .unwrap_or_else(|e| panic!("{epoch} is not a Unix time: {e}"));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The canonical text of a value MariaDB returned (binary protocol; JSON columns are selected as
/// `JSON_COMPACT(col)`; the session time zone is UTC).
pub fn source_text(kind: Kind, value: &Value) -> String {
    let bytes_text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match (kind, value) {
        (_, Value::NULL) => "NULL".into(),
        (Kind::Int { .. } | Kind::Year, Value::Int(i)) => i.to_string(),
        (Kind::Int { .. } | Kind::Year, Value::UInt(u)) => u.to_string(),
        (Kind::Float, Value::Float(f)) => format!("{:016x}", f64::from(*f).to_bits()),
        (Kind::Float | Kind::Double, Value::Double(d)) => format!("{:016x}", d.to_bits()),
        (Kind::Date, Value::Date(y, m, d, ..)) => format!("{y:04}-{m:02}-{d:02}"),
        (Kind::DateTime { .. }, Value::Date(y, mo, d, h, mi, s, us)) => {
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
        }
        (Kind::Timestamp { .. }, Value::Date(y, mo, d, h, mi, s, us)) => {
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
        }
        (Kind::Time { .. }, Value::Time(negative, days, h, m, s, us)) => {
            let sign = if *negative { "-" } else { "" };
            let hours = u64::from(*days) * 24 + u64::from(*h);
            format!("{sign}{hours:02}:{m:02}:{s:02}.{us:06}")
        }
        (Kind::Binary { .. } | Kind::Bit { .. }, Value::Bytes(b)) => format!("0x{}", hex(b)),
        (
            Kind::Decimal { .. } | Kind::Text { .. } | Kind::Enum | Kind::Set | Kind::Json,
            Value::Bytes(b),
        ) => bytes_text(b),
        (kind, other) => format!("unexpected MariaDB value {other:?} for {kind:?}"),
    }
}

/// The canonical text of a change document's value, per docs/change-document.md.
pub fn document_text(kind: Kind, value: &Bson) -> String {
    match (kind, value) {
        (_, Bson::Null) => "NULL".into(),
        (Kind::Int { .. } | Kind::Year, Bson::Int64(i)) => i.to_string(),
        // BIGINT UNSIGNED above 2^63-1.
        (Kind::Int { unsigned: true, .. }, Bson::Decimal128(d)) => plain_decimal(&d.to_string()),
        (Kind::Decimal { .. }, Bson::Decimal128(d)) => plain_decimal(&d.to_string()),
        // Over 34 digits: the exact text.
        (Kind::Decimal { .. }, Bson::String(s)) => s.clone(),
        (Kind::Float | Kind::Double, Bson::Double(d)) => format!("{:016x}", d.to_bits()),
        (
            Kind::Date
            | Kind::DateTime { .. }
            | Kind::Timestamp { .. }
            | Kind::Time { .. }
            | Kind::Text { .. }
            | Kind::Enum,
            Bson::String(s),
        ) => s.clone(),
        (Kind::Binary { .. } | Kind::Bit { .. }, Bson::Binary(b)) => format!("0x{}", hex(&b.bytes)),
        (Kind::Set, Bson::Array(members)) => members
            .iter()
            .map(|m| {
                m.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{m:?}"))
            })
            .collect::<Vec<_>>()
            .join(","),
        (Kind::Json, value) => compact_json(value),
        (kind, other) => format!("unexpected BSON {other:?} for {kind:?}"),
    }
}

/// Renders a JSON column's document the way MariaDB's `JSON_COMPACT` prints the stored text (the
/// workload's JSON has no escapes and no exponents, so the two agree exactly when the values do).
fn compact_json(value: &Bson) -> String {
    match value {
        Bson::Null => "null".into(),
        Bson::Boolean(b) => b.to_string(),
        Bson::Int64(i) => i.to_string(),
        Bson::Int32(i) => i.to_string(),
        Bson::Decimal128(d) => plain_decimal(&d.to_string()),
        Bson::String(s) => format!("\"{s}\""),
        Bson::Array(items) => format!(
            "[{}]",
            items.iter().map(compact_json).collect::<Vec<_>>().join(",")
        ),
        Bson::Document(d) => format!(
            "{{{}}}",
            d.iter()
                .map(|(k, v)| format!("\"{k}\":{}", compact_json(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => format!("unexpected BSON in JSON {other:?}"),
    }
}

/// A Decimal128's text (`1.50`, `-1E-30`, `1.2E+3`) as plain decimal notation with the same
/// digits and scale (`-0.000…001`), as MariaDB prints a DECIMAL.
pub fn plain_decimal(text: &str) -> String {
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    let (mantissa, exponent) = match rest.split_once(['E', 'e']) {
        Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
        None => (rest, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let scale = fraction.len() as i64 - exponent;
    let body = if scale <= 0 {
        format!("{digits}{}", "0".repeat((-scale) as usize))
    } else {
        let scale = scale as usize;
        let padded = if digits.len() <= scale {
            format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
        } else {
            digits
        };
        let (w, f) = padded.split_at(padded.len() - scale);
        let w = w.trim_start_matches('0');
        format!("{}.{f}", if w.is_empty() { "0" } else { w })
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decimals() {
        assert_eq!(plain_decimal("1.50"), "1.50");
        assert_eq!(plain_decimal("-1E-30"), format!("-0.{}1", "0".repeat(29)));
        assert_eq!(plain_decimal("0E-5"), "0.00000");
        assert_eq!(plain_decimal("1.2E+3"), "1200");
        assert_eq!(
            plain_decimal("18446744073709551615"),
            "18446744073709551615"
        );
        assert_eq!(plain_decimal("-12345678.90"), "-12345678.90");
    }

    #[test]
    fn utc_datetimes() {
        assert_eq!(utc_datetime(1), "1970-01-01 00:00:01");
        assert_eq!(utc_datetime((1 << 31) - 1), "2038-01-19 03:14:07");
        assert_eq!(utc_datetime(951_782_400), "2000-02-29 00:00:00");
    }
}
