//! The decoder without a network: every binlog file in ../shared/fixtures/binlogs decodes to
//! transactions or stops with an error naming the file, position and event type; truncated and
//! damaged files are errors, never panics and never silent ends.

use std::path::PathBuf;

use sdl::event::{Change, SourceTransaction};
use sdl::gtid::{MysqlGtidSet, Position};
use sdl::source::binlog_file::{decode_file, BinlogFileReader};
use sdl::source::decode::{AssemblerMode, TransactionAssembler};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/binlogs")
}

fn fixture_files() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(fixtures())
        .expect("../shared/fixtures/binlogs is readable")
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "README.md")
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "fixture directory has {} files",
        files.len()
    );
    files
}

/// Files that must fail, with the text their error must contain (file, position, event type).
const EXPECTED_ERRORS: &[(&str, &[&str])] = &[
    (
        "binlog_truncated_event.000001",
        &[
            "binlog_truncated_event.000001",
            "at byte 4",
            "truncated event header",
        ],
    ),
    (
        "binlog_truncated_prev_gtid_event.000001",
        &["at byte 120", "truncated event header"],
    ),
    // INCIDENT (LOST_EVENTS): the source says its binlog misses changes.
    (
        "bug40482-bin.000001",
        &[
            "INCIDENT_EVENT at bug40482-bin.000001:106",
            "changes may be missing",
        ],
    ),
    // A relay log that starts in the middle of a transaction.
    (
        "corrupt-relay-bin.000624",
        &[
            "XID_EVENT at mysql-bin.010260:234213",
            "commit without a transaction",
        ],
    ),
    // binlog_row_value_options=PARTIAL_JSON: refused, as on a live source.
    (
        "json.binlog.000001",
        &[
            "PARTIAL_UPDATE_ROWS at json.binlog.000001:3750",
            "binlog_row_value_options",
        ],
    ),
    // MySQL 5.1 pre-release formats and statement-based LOAD DATA carry no row images.
    (
        "ver_5_1-wl2325_r.001",
        &["XID_EVENT at ver_5_1-wl2325_r.001:428", "malformed event"],
    ),
    (
        "ver_5_1-wl2325_s.001",
        &["PRE_GA_WRITE_ROWS_EVENT at ver_5_1-wl2325_s.001:411"],
    ),
    (
        "ver_5_1_23.001",
        &["BEGIN_LOAD_QUERY_EVENT at ver_5_1_23.001:1480"],
    ),
    (
        "ver_trunk_row_v2.001",
        &["BEGIN_LOAD_QUERY_EVENT at ver_trunk_row_v2.001:2651"],
    ),
];

fn row_count(transactions: &[SourceTransaction]) -> usize {
    transactions
        .iter()
        .flat_map(|t| &t.changes)
        .filter(|c| matches!(c, Change::Row(_)))
        .count()
}

#[test]
fn every_fixture_file_decodes_or_fails_by_name() {
    let mut decoded_rows = 0;
    for (name, bytes) in fixture_files() {
        let outcome = decode_file(&name, &bytes);
        match EXPECTED_ERRORS.iter().find(|(file, _)| *file == name) {
            Some((_, needles)) => {
                let error = outcome.expect_err(&name);
                for needle in *needles {
                    assert!(
                        error.contains(needle),
                        "{name}: error `{error}` lacks `{needle}`"
                    );
                }
            }
            None => {
                let transactions = outcome.unwrap_or_else(|e| panic!("{name}: {e}"));
                decoded_rows += row_count(&transactions);
            }
        }
    }
    assert!(
        decoded_rows >= 30,
        "only {decoded_rows} row changes decoded"
    );
}

#[test]
fn known_fixture_contents_decode_exactly() {
    let read =
        |name: &str| decode_file(name, &std::fs::read(fixtures().join(name)).unwrap()).unwrap();
    // Savepoints inside a transaction are not DDL documents.
    let savepoint = read("binlog_savepoint.000001");
    for change in savepoint.iter().flat_map(|t| &t.changes) {
        if let Change::Statement(s) = change {
            let upper = s.statement.trim().to_ascii_uppercase();
            assert!(
                !upper.starts_with("SAVEPOINT") && !upper.starts_with("ROLLBACK TO"),
                "savepoint recorded as a statement: {}",
                s.statement
            );
        }
    }
    // The compressed transaction's rows arrive.
    assert!(row_count(&read("transaction_compression.000001")) > 0);
    // MySQL 8 names every column; MINIMAL metadata names them by position.
    let minimal = read("minimal_row_metadata.000001");
    let names: Vec<_> = minimal
        .iter()
        .flat_map(|t| &t.changes)
        .filter_map(|c| match c {
            Change::Row(r) => Some(r.table.columns.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n.starts_with('@')),
        "{names:?}"
    );
}

#[test]
fn truncated_files_are_errors_or_clean_prefixes() {
    for (name, bytes) in fixture_files() {
        let Ok(full) = decode_file(&name, &bytes) else {
            continue;
        };
        if bytes.len() > 20_000 {
            continue;
        }
        for cut in 0..bytes.len() {
            // A cut between two transactions is indistinguishable from a file still being
            // written; anything else must be an error.
            if let Ok(prefix) = decode_file(&name, &bytes[..cut]) {
                assert!(
                    prefix.len() <= full.len() && full[..prefix.len()] == prefix[..],
                    "{name} cut at {cut} decoded to something that is not a prefix"
                );
            }
        }
    }
}

#[test]
fn damaged_files_never_panic() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut errors = 0;
    for (name, bytes) in fixture_files() {
        if bytes.len() > 20_000 {
            continue;
        }
        for _ in 0..200 {
            let mut damaged = bytes.clone();
            for _ in 0..1 + next() % 4 {
                let at = 4 + (next() as usize) % (damaged.len() - 4);
                damaged[at] = next() as u8;
            }
            if decode_file(&name, &damaged).is_err() {
                errors += 1;
            }
        }
    }
    assert!(errors > 0, "no damaged file was refused");
}

/// mysql_async's stream passes over a TRANSACTION_PAYLOAD it cannot decompress and goes on with
/// the next event; the assembler must notice that the payload's events did not follow.
#[test]
fn a_compressed_transaction_whose_events_are_missing_is_an_error() {
    let name = "transaction_compression.000001";
    let bytes = std::fs::read(fixtures().join(name)).unwrap();
    let mut reader = BinlogFileReader::new(&bytes[..]);
    let mut assembler = TransactionAssembler::with_mode(
        Position::Mysql(MysqlGtidSet::default()),
        AssemblerMode::File,
    );
    assembler.set_file(name);
    let mut skipped = 0;
    let mut error = None;
    while let Some(event) = reader.next_event().unwrap() {
        if reader.last_was_inner() {
            skipped += 1;
            continue;
        }
        if let Err(e) = assembler.feed(&event) {
            error = Some(e.to_string());
            break;
        }
    }
    let error = match error {
        Some(e) => e,
        None => assembler
            .finish()
            .expect_err("the missing events went unnoticed")
            .to_string(),
    };
    assert!(skipped > 0, "the fixture has no compressed events");
    assert!(
        error.contains("TRANSACTION_PAYLOAD") && error.contains(name),
        "{error}"
    );
}

/// MySQL binary JSON (json.binlog.000001, before its PARTIAL_UPDATE_ROWS event) becomes structured
/// JSON values, which map to BSON documents/arrays.
#[test]
fn mysql_binary_json_becomes_structured_values() {
    use sdl::event::{Json, Value};
    let name = "json.binlog.000001";
    let bytes = std::fs::read(fixtures().join(name)).unwrap();
    let mut reader = BinlogFileReader::new(&bytes[..]);
    let mut assembler = TransactionAssembler::with_mode(
        Position::Mysql(MysqlGtidSet::default()),
        AssemblerMode::File,
    );
    assembler.set_file(name);
    let mut values = Vec::new();
    while let Some(event) = reader.next_event().unwrap() {
        match assembler.feed(&event) {
            Ok(Some(transaction)) => {
                for change in transaction.changes {
                    if let Change::Row(row) = change {
                        for value in row.after.into_iter().flatten() {
                            if let Value::Json(json) = value {
                                values.push(json);
                            }
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                assert!(e.to_string().contains("PARTIAL_UPDATE_ROWS"), "{e}");
                break;
            }
        }
    }
    assert!(
        values.iter().any(|j| matches!(j, Json::Object(_))),
        "no JSON object among {values:?}"
    );
    for json in &values {
        let bson = sdl::sink::document::value_to_bson(&Value::Json(json.clone()));
        match json {
            Json::Object(_) => assert!(bson.as_document().is_some(), "{bson}"),
            Json::Array(_) => assert!(bson.as_array().is_some(), "{bson}"),
            _ => {}
        }
    }
}
