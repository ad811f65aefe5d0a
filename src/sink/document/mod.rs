//! WAL transactions → MongoDB change documents (the contract in docs/change-document.md).
//!
//! Guarantees: the `_id` of a change is `"<source.name>/<gtid>:<ordinal>"`, derived only from the
//! source's name, the transaction's GTID and the change's ordinal inside it, so decoding the same
//! binlog again yields the same ids, and two sources (two `source.name`s) never share one, whatever
//! their GTIDs. Every document names its source twice: `meta.source` (the original contract) and
//! `meta.src` ([`SOURCE_FIELD`], the shard key's and per-source queries' field). Every document
//! carries `hash`, a digest of everything else in it (see [`content_hash`]), so a document met
//! again under the same `_id` can be told to be the same change or another one, also when the
//! stored one was written by a release before `meta.src` ([`is_same_change`]).
//! Conversion never fails silently: a value that has no exact BSON form is given a documented
//! lossless form instead.
//!
//! Field names from the source (column names, JSON object keys) are written through
//! [`escape_key`]: a reversible percent escape of the characters MongoDB cannot store or query as
//! a literal field name (NUL, `.`, a leading `$`, and `%` itself), so any legal row converts. JSON
//! nested deeper than [`MAX_JSON_DEPTH`] keeps its outer levels as documents and arrays, and each
//! subtree at that depth becomes `{"%json": "<its JSON text>"}`, within MongoDB's nesting limit.
//! Both are specified in docs/change-document.md ("Field names and deep JSON").
//! A DDL document's statement text passes through `redact::redact_statement` (already done
//! before the WAL; repeated here for records an earlier version wrote).

mod value;

use bson::raw::RawBinaryRef;
use bson::{Document, RawBson, RawBsonRef, RawDocumentBuf};

use crate::event::{Change, RowChange, SnapshotRow, SourceTransaction, StatementChange, Value};
use crate::gtid::split_snapshot_plan;
use crate::redact::redact_statement;

pub use value::{escape_key, unescape_key, value_to_bson, JSON_TEXT_KEY, MAX_JSON_DEPTH};

/// The documents for one WAL record (a transaction or a fragment of one), in change order.
pub fn transaction_documents(source: &str, transaction: &SourceTransaction) -> Vec<Document> {
    changes(source, transaction)
        .map(|change| {
            let mut document: Document = change.expect("a Document holds every value");
            // A document BSON cannot encode (a value over 16 MiB) is refused by the caller, which
            // names it; it has no hash.
            if let Ok(raw) = RawDocumentBuf::from_document(&document) {
                document.insert(HASH_FIELD, content_hash(raw.as_bytes()));
            }
            document
        })
        .collect()
}

/// The same documents as [`transaction_documents`], written straight to BSON bytes (no
/// intermediate [`Document`], no copies of names and strings): the forwarder's path. `None` when
/// a change needs the general path (a value the fast writer cannot encode; none is known since
/// field names are escaped). Both forms are written by one builder (`row_change`,
/// `statement_change`), so they hold the same fields in the same order; a test checks that they
/// give identical bytes.
pub fn transaction_raw_documents(
    source: &str,
    transaction: &SourceTransaction,
) -> Option<Vec<RawDocumentBuf>> {
    changes(source, transaction)
        .map(|change| change.map(with_hash))
        .collect()
}

/// The field holding a document's [`content_hash`].
pub const HASH_FIELD: &str = "hash";

/// The digest of a change document, over its BSON bytes without the `hash` field: the first 128
/// bits of SHA-256, as 32 lowercase hex digits. It covers the source, GTID, ordinal, table, op,
/// commit time, binlog coordinates and both row images, so two documents with the same `_id` and
/// the same hash are the same change.
pub fn content_hash(bson: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bson);
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The field of `meta` naming the document's source (`source.name`), beside `meta.source` (the
/// same value, kept for readers of the earlier contract): the shard key of `row_changes` and the
/// field per-source queries use. Documents written by earlier releases lack it.
pub const SOURCE_FIELD: &str = "src";

/// `meta.src` as a dotted path, for filters, projections and shard keys.
pub const SOURCE_PATH: &str = "meta.src";

/// Whether `stored` (a change document read back from MongoDB, with at least `hash` and `meta`)
/// is the very change `ours` (a document this release wrote): the same `hash`, or, when `stored`
/// lacks `meta.src` (written by a release before it), the hash `ours` has in that release's form
/// ([`previous_release_hash`]). A replay after an upgrade (a batch the previous release left
/// half-written without transactions) thus counts as applied, never as a conflict.
pub fn is_same_change(stored: &Document, ours: &RawDocumentBuf) -> bool {
    let Ok(stored_hash) = stored.get_str(HASH_FIELD) else {
        return false;
    };
    if ours.get_str(HASH_FIELD).ok() == Some(stored_hash) {
        return true;
    }
    let stored_has_src = stored
        .get_document("meta")
        .is_ok_and(|m| m.contains_key(SOURCE_FIELD));
    !stored_has_src && previous_release_hash(ours).as_deref() == Some(stored_hash)
}

/// The [`content_hash`] a release before `meta.src` gave this change: the hash of `ours` without
/// `meta.src` (every other field in the same order). `None` when `ours` cannot be read.
pub fn previous_release_hash(ours: &RawDocumentBuf) -> Option<String> {
    let mut document = ours.to_document().ok()?;
    document.remove(HASH_FIELD);
    document.get_document_mut("meta").ok()?.remove(SOURCE_FIELD);
    let raw = RawDocumentBuf::from_document(&document).ok()?;
    Some(content_hash(raw.as_bytes()))
}

/// Appends the `hash` field to a document written without it.
fn with_hash(mut document: RawDocumentBuf) -> RawDocumentBuf {
    let hash = content_hash(document.as_bytes());
    document.append_ref(HASH_FIELD, hash.as_str());
    document
}

/// The change documents of a WAL record, in change order, each written by [`change`] into `W`.
fn changes<'a, W: DocumentWriter + 'a>(
    source: &'a str,
    transaction: &'a SourceTransaction,
) -> impl Iterator<Item = Option<W>> + 'a {
    let ts = bson::DateTime::from_millis(i64::from(transaction.timestamp) * 1000);
    transaction
        .changes
        .iter()
        .enumerate()
        .map(move |(index, change)| {
            let ordinal = transaction.first_change as usize + index;
            match change {
                Change::Row(row) => row_change(source, transaction, ts, ordinal, row),
                Change::Statement(statement) => Some(statement_change(
                    source,
                    transaction,
                    ts,
                    ordinal,
                    statement,
                )),
                Change::Snapshot(row) => snapshot_row(source, transaction, ts, row),
            }
        })
}

/// Where a change document is written: raw BSON bytes ([`RawDocumentBuf`], the forwarder's path)
/// or a [`Document`] (the general path, which names a change too large to send). The shape of a
/// change document is written once, by [`row_change`] and [`statement_change`], for both.
trait DocumentWriter: Sized {
    fn empty() -> Self;
    fn text(&mut self, key: &str, value: &str);
    fn int64(&mut self, key: &str, value: i64);
    fn datetime(&mut self, key: &str, value: bson::DateTime);
    fn document(&mut self, key: &str, value: Self);
    /// A source value under the source's column name `name` (escaped with [`escape_key`]), as
    /// [`value_to_bson`] maps it; an absent column is left out. `None` when this writer cannot
    /// encode the value.
    fn value(&mut self, name: &str, value: &Value) -> Option<()>;
}

impl DocumentWriter for RawDocumentBuf {
    fn empty() -> Self {
        RawDocumentBuf::new()
    }
    fn text(&mut self, key: &str, value: &str) {
        self.append_ref(key, value);
    }
    fn int64(&mut self, key: &str, value: i64) {
        self.append_ref(key, value);
    }
    fn datetime(&mut self, key: &str, value: bson::DateTime) {
        self.append_ref(key, value);
    }
    fn document(&mut self, key: &str, value: Self) {
        self.append_ref(key, &value);
    }
    /// The common kinds by reference, the rest through [`value_to_bson`] itself, so the mapping
    /// has one definition.
    fn value(&mut self, name: &str, value: &Value) -> Option<()> {
        let name = &*escape_key(name);
        match value {
            Value::Absent => {}
            Value::Null => self.append_ref(name, RawBsonRef::Null),
            Value::Int(i) => self.append_ref(name, *i),
            Value::Double(d) => self.append_ref(name, *d),
            Value::Float(f) => self.append_ref(name, f64::from(*f)),
            Value::Text(s) => self.append_ref(name, s.as_str()),
            Value::Bytes(bytes) => self.append_ref(
                name,
                RawBinaryRef {
                    subtype: bson::spec::BinarySubtype::Generic,
                    bytes,
                },
            ),
            other => self.append(name, RawBson::try_from(value_to_bson(other)).ok()?),
        }
        Some(())
    }
}

impl DocumentWriter for Document {
    fn empty() -> Self {
        Document::new()
    }
    fn text(&mut self, key: &str, value: &str) {
        self.insert(key, value);
    }
    fn int64(&mut self, key: &str, value: i64) {
        self.insert(key, value);
    }
    fn datetime(&mut self, key: &str, value: bson::DateTime) {
        self.insert(key, value);
    }
    fn document(&mut self, key: &str, value: Self) {
        self.insert(key, value);
    }
    fn value(&mut self, name: &str, value: &Value) -> Option<()> {
        if *value != Value::Absent {
            self.insert(escape_key(name).into_owned(), value_to_bson(value));
        }
        Some(())
    }
}

/// The `meta` fields every row's document starts with: its source (twice), database, table and
/// key. `None` when the writer cannot encode a key value.
fn row_meta<'a, W: DocumentWriter>(
    source: &str,
    table: &crate::event::Table,
    key: impl Iterator<Item = (&'a str, &'a Value)>,
) -> Option<W> {
    let mut pk = W::empty();
    for (name, value) in key {
        pk.value(name, value)?;
    }
    let mut meta = W::empty();
    meta.text("source", source);
    meta.text(SOURCE_FIELD, source);
    meta.text("db", &table.database);
    meta.text("tbl", &table.name);
    meta.document("pk", pk);
    Some(meta)
}

/// The change document of a row change (docs/change-document.md), without its hash.
fn row_change<W: DocumentWriter>(
    source: &str,
    transaction: &SourceTransaction,
    ts: bson::DateTime,
    ordinal: usize,
    row: &RowChange,
) -> Option<W> {
    let table = &*row.table;
    let mut meta: W = row_meta(source, table, row.key())?;
    meta.text("gtid", &transaction.gtid);
    meta.text("file", &row.file);
    meta.int64("pos", row.pos as i64);
    meta.int64("row", ordinal as i64);
    let mut document = W::empty();
    document.text("_id", &change_id(source, &transaction.gtid, ordinal));
    document.text("op", row.op.as_str());
    document.datetime("ts", ts);
    document.document("meta", meta);
    for (name, image) in [("before", &row.before), ("after", &row.after)] {
        if let Some(values) = image {
            let mut columns = W::empty();
            for (column, value) in table.columns.iter().zip(values) {
                columns.value(column, value)?;
            }
            document.document(name, columns);
        }
    }
    Some(document)
}

/// The change document of a statement (DDL), without its hash.
fn statement_change<W: DocumentWriter>(
    source: &str,
    transaction: &SourceTransaction,
    ts: bson::DateTime,
    ordinal: usize,
    statement: &StatementChange,
) -> W {
    let mut meta = W::empty();
    meta.text("source", source);
    meta.text(SOURCE_FIELD, source);
    meta.text("db", &statement.database);
    meta.text("gtid", &transaction.gtid);
    meta.text("file", &statement.file);
    meta.int64("pos", statement.pos as i64);
    meta.int64("row", ordinal as i64);
    let mut document = W::empty();
    document.text("_id", &change_id(source, &transaction.gtid, ordinal));
    document.text("op", "ddl");
    document.datetime("ts", ts);
    document.document("meta", meta);
    // Redacted when it was read from the binlog; again here for records an earlier version
    // wrote into the WAL.
    document.text("statement", &redact_statement(&statement.statement));
    document
}

/// The snapshot document of a row a snapshot read (docs/change-document.md, "Snapshot
/// documents"), without its hash: `op: "snapshot"`, the row as `after`, and in `meta` the
/// snapshot's id and the GTID position the image holds at (the stream position before it in the
/// WAL, without the snapshot plan).
fn snapshot_row<W: DocumentWriter>(
    source: &str,
    transaction: &SourceTransaction,
    ts: bson::DateTime,
    row: &SnapshotRow,
) -> Option<W> {
    let table = &*row.table;
    let (position, _) = split_snapshot_plan(&transaction.position_after);
    let mut meta: W = row_meta(source, table, row.key())?;
    meta.text("snapshot", &row.snapshot);
    meta.text("position", position);
    let mut document = W::empty();
    document.text("_id", &snapshot_id(source, row));
    document.text("op", "snapshot");
    document.datetime("ts", ts);
    document.document("meta", meta);
    let mut columns = W::empty();
    for (column, value) in table.columns.iter().zip(&row.values) {
        columns.value(column, value)?;
    }
    document.document("after", columns);
    Some(document)
}

/// `"<source>/snapshot/<snapshot id>/<db>/<table>/<key>"`: `<db>` and `<table>` with `%` and
/// `/` percent-escaped, `<key>` the key's values in key order as a relaxed extended JSON array
/// (`[5]`, `["a",7]`). The same snapshot, table and key always give the same id, and two
/// different rows never share one (everything before the key is escaped, and the key is last).
pub fn snapshot_id(source: &str, row: &SnapshotRow) -> String {
    let escape = |name: &str| name.replace('%', "%25").replace('/', "%2F");
    let key: bson::Array = row.key().map(|(_, value)| value_to_bson(value)).collect();
    format!(
        "{source}/snapshot/{}/{}/{}/{}",
        row.snapshot,
        escape(&row.table.database),
        escape(&row.table.name),
        bson::Bson::Array(key).into_relaxed_extjson()
    )
}

/// `"<source>/<gtid>:<ordinal>"`. A GTID never contains `/`, so the id splits back at its last
/// `/` whatever the source's name.
pub fn change_id(source: &str, gtid: &str, ordinal: usize) -> String {
    format!("{source}/{gtid}:{ordinal}")
}

/// The `_id` sdl gave a change before ids named their source (`"<gtid>:<ordinal>"`): documents
/// written then keep it (see docs/change-document.md, "Upgrading from `<gtid>:<ordinal>` ids").
pub fn legacy_change_id(gtid: &str, ordinal: usize) -> String {
    format!("{gtid}:{ordinal}")
}

#[cfg(test)]
mod tests;
