//! What the snapshot tests (tests/it/snapshot/) check documents with: tables keyed by any key
//! (one column, a composite key, a NOT NULL UNIQUE key), read from the source and rebuilt from
//! MongoDB two ways (every snapshot image first, or each image at its place in the stream), the
//! `_id` and `meta` a snapshot document must have (docs/change-document.md, DESIGN of issue 16),
//! `/status`'s `snapshot` section, waits that show sdl's log when they fail, and `sdl snapshot`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mongodb::bson::{doc, Document};
use mysql_async::prelude::Queryable;

use super::{bson_text, mysql_value_text, wait_until, Mongo, Relay, Row, Sdl};

/// One value of a key, ordered as the source orders it: numbers as numbers, text as text (the
/// tests' text keys are lowercase ASCII of fixed width, whose collation order is byte order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyPart {
    Int(i64),
    Text(String),
}

/// A row's key values, in key order.
pub type Key = Vec<KeyPart>;

/// A table as compared between the source and MongoDB: key → row (column → text, see
/// [`super::bson_text`]).
pub type Table = BTreeMap<Key, Row>;

fn key_part(text: &str) -> KeyPart {
    text.parse()
        .map(KeyPart::Int)
        .unwrap_or_else(|_| KeyPart::Text(text.to_string()))
}

/// The key of `row`: its columns `key`, in key order.
pub fn row_key(row: &Row, key: &[&str]) -> Key {
    key.iter()
        .map(|column| {
            key_part(
                row.get(*column)
                    .unwrap_or_else(|| panic!("key column {column} missing from {row:?}")),
            )
        })
        .collect()
}

/// `SELECT *` of `table` (`db.table`), keyed by its columns `key`.
pub async fn select_keyed(conn: &mut mysql_async::Conn, table: &str, key: &[&str]) -> Table {
    let rows: Vec<mysql_async::Row> = conn
        .query(format!("SELECT * FROM {table}"))
        .await
        .unwrap_or_else(|e| panic!("SELECT * FROM {table}: {e}"));
    let mut out = Table::new();
    for row in rows {
        let mut r = Row::new();
        for (i, column) in row.columns_ref().iter().enumerate() {
            r.insert(column.name_str().into_owned(), mysql_value_text(&row[i]));
        }
        let previous = out.insert(row_key(&r, key), r);
        assert!(previous.is_none(), "{table}: key {key:?} is not unique");
    }
    out
}

/// Asserts that `rebuilt` equals `source` row by row and value by value.
pub fn assert_tables_equal(source: &Table, rebuilt: &Table, what: &str) {
    for (key, row) in source {
        assert_eq!(
            rebuilt.get(key),
            Some(row),
            "{what}: the row with key {key:?} (left: rebuilt from MongoDB, right: SELECT *)"
        );
    }
    for key in rebuilt.keys() {
        assert!(
            source.contains_key(key),
            "{what}: the row with key {key:?} is not in the source: {:?}",
            rebuilt[key]
        );
    }
}

/// How many documents of the test's `row_changes` match `filter`.
pub async fn count_documents(mongo: &Mongo, filter: Document) -> u64 {
    mongo
        .db()
        .await
        .collection::<Document>("row_changes")
        .count_documents(filter)
        .await
        .unwrap()
}

pub fn is_snapshot(d: &Document) -> bool {
    d.get_str("op") == Ok("snapshot")
}

fn is_of_table(d: &Document, db: &str, tbl: &str) -> bool {
    let meta = d.get_document("meta").unwrap();
    meta.get_str("db") == Ok(db) && meta.get_str("tbl") == Ok(tbl)
}

/// The snapshot documents of `db.tbl`.
pub fn snapshot_documents<'a>(docs: &'a [Document], db: &str, tbl: &str) -> Vec<&'a Document> {
    docs.iter()
        .filter(|d| is_snapshot(d) && is_of_table(d, db, tbl))
        .collect()
}

/// The rows of `db.tbl` that snapshot `id` holds, keyed by `key`.
pub fn snapshot_table(docs: &[Document], db: &str, tbl: &str, key: &[&str], id: &str) -> Table {
    snapshot_documents(docs, db, tbl)
        .into_iter()
        .filter(|d| d.get_document("meta").unwrap().get_str("snapshot") == Ok(id))
        .map(|d| {
            let after = image(d, "after");
            (row_key(&after, key), after)
        })
        .collect()
}

/// A MariaDB GTID `domain-server-seq` as (domain, seq).
fn gtid_place(gtid: &str) -> (u64, u64) {
    let fields: Vec<u64> = gtid
        .split('-')
        .map(|f| {
            f.parse()
                .unwrap_or_else(|_| panic!("not a MariaDB GTID: {gtid}"))
        })
        .collect();
    assert_eq!(fields.len(), 3, "not a MariaDB GTID: {gtid}");
    (fields[0], fields[2])
}

/// Where a document goes in the source's commit order on one MariaDB server with one GTID
/// domain: a change document at (its GTID's sequence number, 0, its row); a snapshot document
/// right after the last transaction its `meta.position` contains: (that sequence number, 1, 0).
fn stream_place(d: &Document) -> (u64, u8, i64) {
    let meta = d.get_document("meta").unwrap();
    if is_snapshot(d) {
        let position = meta
            .get_str("position")
            .unwrap_or_else(|_| panic!("snapshot document without meta.position: {d}"));
        let domains: Vec<&str> = position.split(',').map(str::trim).collect();
        assert_eq!(
            domains.len(),
            1,
            "meta.position {position:?} of {d}: one GTID domain expected (the test's server has one)"
        );
        (gtid_place(domains[0]).1, 1, 0)
    } else {
        let gtid = meta.get_str("gtid").unwrap();
        (gtid_place(gtid).1, 0, meta.get_i64("row").unwrap())
    }
}

/// The row change documents (insert, update, delete) of every table, in commit order: by GTID
/// sequence number, then `meta.row`.
pub fn changes_in_commit_order(docs: &[Document]) -> Vec<Document> {
    let mut changes: Vec<Document> = docs.iter().filter(|d| !is_snapshot(d)).cloned().collect();
    changes.sort_by_key(stream_place);
    changes
}

fn image(d: &Document, which: &str) -> Row {
    d.get_document(which)
        .unwrap_or_else(|_| panic!("no {which} image in {d}"))
        .iter()
        .map(|(k, v)| (k.clone(), bson_text(v)))
        .collect()
}

/// `db.tbl` rebuilt from `docs`: every snapshot image (an upsert by key), then every change in
/// commit order (insert and update set the after image, update and delete remove the before
/// image's key). Change documents carry whole rows, so the order of the images does not matter.
pub fn rebuild_snapshot_first(docs: &[Document], db: &str, tbl: &str, key: &[&str]) -> Table {
    let mut table = Table::new();
    for d in snapshot_documents(docs, db, tbl) {
        let after = image(d, "after");
        table.insert(row_key(&after, key), after);
    }
    for d in changes_in_commit_order(docs) {
        if !is_of_table(&d, db, tbl) {
            continue;
        }
        match d.get_str("op").unwrap() {
            "insert" => {
                let after = image(&d, "after");
                table.insert(row_key(&after, key), after);
            }
            "update" => {
                table.remove(&row_key(&image(&d, "before"), key));
                let after = image(&d, "after");
                table.insert(row_key(&after, key), after);
            }
            "delete" => {
                table.remove(&row_key(&image(&d, "before"), key));
            }
            other => panic!("unexpected op {other} in {d}"),
        }
    }
    table
}

/// `db.tbl` rebuilt from `docs` in stream order (a snapshot image right after the last
/// transaction its `meta.position` contains), checking at every step that the documents agree
/// with each other: a snapshot image of a row the stream already showed must equal the row's
/// state there (a row changed in the chunk's window must not be in the chunk), an update or
/// delete names the row as it was, an insert finds no row, and a row the stream changes below
/// the snapshot's progress (a key at most the highest key snapshotted so far) must have been
/// snapshotted or inserted before (otherwise the snapshot missed it).
pub fn rebuild_interleaved(docs: &[Document], db: &str, tbl: &str, key: &[&str]) -> Table {
    let mut ordered: Vec<&Document> = docs.iter().filter(|d| is_of_table(d, db, tbl)).collect();
    ordered.sort_by_key(|d| stream_place(d));
    // Rows whose state the documents so far tell: Some(row), or None (known absent).
    let mut known: BTreeMap<Key, Option<Row>> = BTreeMap::new();
    let mut highest_snapshotted: Option<Key> = None;
    for d in ordered {
        match d.get_str("op").unwrap() {
            "snapshot" => {
                let after = image(d, "after");
                let k = row_key(&after, key);
                if let Some(state) = known.get(&k) {
                    assert_eq!(
                        state.as_ref(),
                        Some(&after),
                        "{db}.{tbl}: the snapshot image of key {k:?} differs from the row's state at its place in the stream (left: from the changes before it): {d}"
                    );
                }
                highest_snapshotted = highest_snapshotted.max(Some(k.clone()));
                known.insert(k, Some(after));
            }
            "insert" => {
                let after = image(d, "after");
                let k = row_key(&after, key);
                assert!(
                    !matches!(known.get(&k), Some(Some(_))),
                    "{db}.{tbl}: insert of key {k:?} over a row the snapshot or the stream already holds: {d}"
                );
                known.insert(k, Some(after));
            }
            op @ ("update" | "delete") => {
                let before = image(d, "before");
                let k = row_key(&before, key);
                match known.get(&k) {
                    Some(Some(row)) => assert_eq!(
                        row, &before,
                        "{db}.{tbl}: {op} of key {k:?}: the before image differs from the row's state (left) at this place: {d}"
                    ),
                    Some(None) => panic!("{db}.{tbl}: {op} of key {k:?}, a row absent at this place: {d}"),
                    None => assert!(
                        highest_snapshotted.as_ref().is_none_or(|h| &k > h),
                        "{db}.{tbl}: {op} of key {k:?}, a row below the snapshot's progress ({highest_snapshotted:?}) that no snapshot document and no insert holds: the snapshot missed it: {d}"
                    ),
                }
                known.insert(k.clone(), None);
                if op == "update" {
                    let after = image(d, "after");
                    let new_key = row_key(&after, key);
                    assert!(
                        new_key == k || !matches!(known.get(&new_key), Some(Some(_))),
                        "{db}.{tbl}: update onto key {new_key:?}, which a row holds at this place: {d}"
                    );
                    known.insert(new_key, Some(after));
                }
            }
            "ddl" => {}
            other => panic!("unexpected op {other} in {d}"),
        }
    }
    known
        .into_iter()
        .filter_map(|(k, row)| Some((k, row?)))
        .collect()
}

/// Asserts that `db.tbl` rebuilt from `docs` both ways, [`rebuild_snapshot_first`] and
/// [`rebuild_interleaved`], equals `source` (its `SELECT *`, keyed by `key`).
pub fn assert_rebuilds_equal(source: &Table, docs: &[Document], db: &str, tbl: &str, key: &[&str]) {
    assert_tables_equal(
        source,
        &rebuild_snapshot_first(docs, db, tbl, key),
        &format!("{db}.{tbl} rebuilt from every snapshot image, then the changes"),
    );
    assert_tables_equal(
        source,
        &rebuild_interleaved(docs, db, tbl, key),
        &format!("{db}.{tbl} rebuilt with each snapshot image at its meta.position"),
    );
}

/// The milliseconds since the epoch of snapshot id `id` (`YYYYMMDDTHHMMSS.mmmZ`, UTC), or a
/// panic naming what is wrong with its form.
pub fn snapshot_id_millis(id: &str) -> i128 {
    let form = "YYYYMMDDTHHMMSS.mmmZ";
    let bytes = id.as_bytes();
    let shape_ok = bytes.len() == form.len()
        && form.bytes().zip(bytes).all(|(f, b)| match f {
            b'T' | b'.' | b'Z' => f == *b,
            _ => b.is_ascii_digit(),
        });
    assert!(shape_ok, "snapshot id {id:?} is not of the form {form}");
    let number = |range: std::ops::Range<usize>| -> u32 { id[range].parse().unwrap() };
    let month = time::Month::try_from(number(4..6) as u8)
        .unwrap_or_else(|_| panic!("snapshot id {id:?}: no such month"));
    let date = time::Date::from_calendar_date(number(0..4) as i32, month, number(6..8) as u8)
        .unwrap_or_else(|e| panic!("snapshot id {id:?}: {e}"));
    let clock = time::Time::from_hms_milli(
        number(9..11) as u8,
        number(11..13) as u8,
        number(13..15) as u8,
        number(16..19) as u16,
    )
    .unwrap_or_else(|e| panic!("snapshot id {id:?}: {e}"));
    time::PrimitiveDateTime::new(date, clock)
        .assume_utc()
        .unix_timestamp_nanos()
        / 1_000_000
}

pub fn millis_since_epoch(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i128
}

/// `db` or `table` as a part of a snapshot `_id`: `%` and `/` percent-escaped.
fn id_part(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

/// Checks every snapshot document of `db.tbl` (keyed by `key`): its `_id` is
/// `<source>/snapshot/<id>/<db>/<table>/<key values as a relaxed extended JSON array>`, `meta`
/// names the source, table, key (`pk`, in key order), snapshot id and a position, `after` holds
/// the row and there is no `before`; no key appears twice within one snapshot id. Returns the
/// snapshot ids seen, with how many documents each has.
pub fn assert_snapshot_documents_well_formed(
    docs: &[Document],
    db: &str,
    tbl: &str,
    key: &[&str],
) -> BTreeMap<String, usize> {
    let mut per_snapshot: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen: HashSet<(String, Key)> = HashSet::new();
    for d in snapshot_documents(docs, db, tbl) {
        let meta = d.get_document("meta").unwrap();
        let source = meta.get_str("source").unwrap();
        assert_eq!(meta.get_str("src"), Ok(source), "meta.src of {d}");
        let snapshot = meta
            .get_str("snapshot")
            .unwrap_or_else(|_| panic!("no meta.snapshot in {d}"));
        snapshot_id_millis(snapshot);
        assert!(
            !meta.get_str("position").unwrap_or_default().is_empty(),
            "no meta.position in {d}"
        );
        assert!(
            d.get("before").is_none(),
            "a snapshot document has no before image: {d}"
        );
        let after = d.get_document("after").unwrap();
        let values: Vec<serde_json::Value> = key
            .iter()
            .map(|column| {
                after
                    .get(*column)
                    .unwrap_or_else(|| panic!("key column {column} missing from after: {d}"))
                    .clone()
                    .into_relaxed_extjson()
            })
            .collect();
        let expected_id = format!(
            "{source}/snapshot/{snapshot}/{}/{}/{}",
            id_part(db),
            id_part(tbl),
            serde_json::to_string(&values).unwrap()
        );
        assert_eq!(d.get_str("_id").unwrap(), expected_id, "_id of {d}");
        let pk = meta
            .get_document("pk")
            .unwrap_or_else(|_| panic!("no meta.pk in {d}"));
        let pk_columns: Vec<&str> = pk.keys().map(String::as_str).collect();
        assert_eq!(
            pk_columns, key,
            "meta.pk of {d} names the key's columns in key order"
        );
        for column in key {
            assert_eq!(
                pk.get(*column),
                after.get(*column),
                "meta.pk.{column} of {d}"
            );
        }
        assert!(d.get_str("hash").is_ok(), "no hash in {d}");
        let k = row_key(&image(d, "after"), key);
        assert!(
            seen.insert((snapshot.to_string(), k.clone())),
            "{db}.{tbl}: key {k:?} is in snapshot {snapshot} twice"
        );
        *per_snapshot.entry(snapshot.to_string()).or_default() += 1;
    }
    per_snapshot
}

/// Asserts that no `_id` is in `docs` twice.
pub fn assert_ids_unique(docs: &[Document]) {
    let mut ids = HashSet::new();
    for d in docs {
        let id = d.get_str("_id").unwrap();
        assert!(ids.insert(id), "_id {id} is in MongoDB twice");
    }
}

/// sdl's `/status`, or None while its admin endpoint does not answer (starting, stopped).
pub fn try_status(sdl: &Sdl) -> Option<serde_json::Value> {
    let mut response = ureq::get(&format!("http://{}/status", sdl.admin_addr()))
        .call()
        .ok()?;
    serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()
}

/// Whether sdl's process has exited (a zombie not yet waited for counts as exited).
fn has_exited(sdl: &Sdl) -> bool {
    let Some(pid) = sdl.pid() else {
        return true;
    };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: `pid (comm) S ...`.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

/// [`wait_until`] `check` returns `Some`, failing at once if sdl exits meanwhile, and with sdl's
/// log when `timeout` passes.
pub async fn wait_with_sdl<T, F, Fut>(sdl: &Sdl, what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    wait_until(what, timeout + Duration::from_secs(5), || {
        let checked = check();
        async move {
            if let Some(value) = checked.await {
                return Some(value);
            }
            assert!(
                !has_exited(sdl),
                "sdl exited while waiting for {what}; its log:\n{}",
                sdl.logs()
            );
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; sdl's log:\n{}",
                sdl.logs()
            );
            None
        }
    })
    .await
}

/// `/status`'s `snapshot` section once `accept` takes it.
pub async fn wait_snapshot_status(
    sdl: &Sdl,
    what: &str,
    timeout: Duration,
    accept: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_with_sdl(sdl, what, timeout, || {
        let snapshot = try_status(sdl)
            .map(|s| s["snapshot"].clone())
            .filter(|s| accept(s));
        async move { snapshot }
    })
    .await
}

/// Waits until no snapshot is left to read: `/status` `snapshot.state` idle with no table left,
/// and the WAL's ingest position without a snapshot plan (a service just started shows idle
/// before its ingester has taken up the plan its WAL holds).
pub async fn wait_snapshot_idle(sdl: &Sdl, timeout: Duration) -> serde_json::Value {
    wait_with_sdl(
        sdl,
        "snapshot state idle, no table left, no plan in the WAL's position",
        timeout,
        || {
            let idle = try_status(sdl).filter(|status| {
                let snapshot = &status["snapshot"];
                snapshot["state"] == "idle"
                    && snapshot["tables_left"] == 0
                    && status["wal"]["ingest_position"]
                        .as_str()
                        .is_some_and(|p| !p.contains("snapshot"))
            });
            async move { idle.map(|status| status["snapshot"].clone()) }
        },
    )
    .await
}

/// Waits until sdl's WAL holds the source's position `position` exactly (the stream caught up,
/// no snapshot plan left) and MongoDB has every WAL record (acknowledged up to the last one).
pub async fn wait_everything_forwarded(sdl: &Sdl, position: &str, timeout: Duration) {
    wait_with_sdl(
        sdl,
        &format!("the WAL at {position} with every record in MongoDB"),
        timeout,
        || {
            let done = try_status(sdl).is_some_and(|status| {
                let wal = &status["wal"];
                wal["ingest_position"] == position
                    && wal["last_seq"].as_u64().is_some()
                    && wal["acked_seq"] == wal["last_seq"]
            });
            async move { done.then_some(()) }
        },
    )
    .await
}

/// Waits until no snapshot is left ([`wait_snapshot_idle`]), then until everything the source
/// has committed by then is in MongoDB ([`wait_everything_forwarded`]). Returns that source
/// position.
pub async fn wait_snapshot_done_and_forwarded(relay: &Relay, timeout: Duration) -> String {
    wait_snapshot_idle(&relay.sdl, timeout).await;
    let position = relay.mariadb.gtid_binlog_pos().await;
    wait_everything_forwarded(&relay.sdl, &position, timeout).await;
    position
}

/// Asserts that MongoDB's offset document comes to name exactly the source's position
/// `position` within `timeout`: once a snapshot is done and everything is forwarded, the offset
/// must not still carry a snapshot plan.
pub async fn assert_offset_reaches(mongo: &Mongo, position: &str, timeout: Duration) {
    let offsets = mongo.db().await.collection::<Document>("binlog_offsets");
    let deadline = Instant::now() + timeout;
    let offset = wait_until(
        "MongoDB's offset",
        timeout + Duration::from_secs(5),
        || async {
            let gtid = offsets
                .find_one(doc! { "_id": "default" })
                .await
                .unwrap()
                .and_then(|d| d.get_str("gtid").ok().map(str::to_string))
                .unwrap_or_default();
            (gtid == position || Instant::now() > deadline).then_some(gtid)
        },
    )
    .await;
    assert_eq!(
        offset, position,
        "MongoDB's offset (left) names the source's position once the snapshot is done and every record is forwarded, without a finished snapshot's plan"
    );
}

/// A number of `/status`'s `snapshot` section (0 when absent or null).
pub fn status_number(snapshot: &serde_json::Value, field: &str) -> u64 {
    snapshot[field].as_u64().unwrap_or(0)
}

/// The request files `sdl snapshot` queued in sdl's WAL directory and no service took yet.
pub fn request_files(sdl: &Sdl) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(sdl.wal_dir().join("snapshot-requests")) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// Runs `sdl snapshot --config <sdl's config> TABLE...` to completion: (exit code, stdout and
/// stderr).
pub async fn run_sdl_snapshot(sdl: &Sdl, tables: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sdl"))
        .arg("snapshot")
        .arg("--config")
        .arg(&sdl.config_path)
        .args(tables)
        .output()
        .await
        .expect("run sdl snapshot");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
