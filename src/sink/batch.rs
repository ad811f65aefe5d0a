//! WAL records → a [`Batch`] ready to commit: change documents encoded once as raw BSON.
//!
//! # Guarantees
//! - A batch is a run of consecutive WAL records taken whole, bounded by
//!   `sink.batch_max_documents` and `sink.batch_max_bytes` measured on the encoded BSON; a single
//!   record larger than the bounds travels alone. A source transaction within one batch's bounds is
//!   one WAL record, so it is committed in one MongoDB transaction; a larger one was split into
//!   fragments by the ingester and is committed in several.
//! - Every document is checked against MongoDB's 16 MiB document limit here, before anything is
//!   sent: a change over the limit is a definite [`SinkError::DocumentTooLarge`] naming its table,
//!   primary key, GTID and WAL sequence. The batch stops before that record, so everything in
//!   front of it is still committed and acknowledged, and nothing after it.
//! - Encoding happens once, off the commit path (the forwarder prepares the next batch while the
//!   previous one commits); the driver sends the raw bytes as they are.

use bson::{Bson, Document, RawDocumentBuf};
use sdl_wal::Stored;

use super::{document, SinkError};
use crate::event::SourceTransaction;

/// MongoDB's `maxBsonObjectSize`: the largest document a server accepts.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// Consecutive WAL records, converted and ready to commit.
#[derive(Debug, Clone)]
pub struct Batch {
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_gtid: String,
    pub last_gtid: String,
    /// The source GTID position after the batch's last transaction.
    pub position_after: String,
    pub documents: Vec<RawDocumentBuf>,
    /// Encoded BSON bytes of `documents`.
    pub bytes: usize,
    /// Source commit time of the batch's last transaction (Unix seconds), for the lag metric.
    pub last_timestamp: u32,
    /// Where each WAL record's documents end, in order: what [`Batch::split`] cuts at.
    pub records: Vec<RecordSpan>,
}

/// One WAL record inside a [`Batch`].
#[derive(Debug, Clone)]
pub struct RecordSpan {
    pub seq: u64,
    pub gtid: String,
    pub position_after: String,
    pub timestamp: u32,
    /// The index in `documents` after this record's last document.
    pub documents_end: usize,
}

impl Batch {
    /// Halves the batch at a WAL record boundary (the offset names whole records), for a batch
    /// MongoDB cannot commit in one transaction. `None` for a batch of one record.
    pub fn split(&self) -> Option<(Batch, Batch)> {
        if self.records.len() < 2 {
            return None;
        }
        // The record boundary nearest half of the documents, leaving at least one record a side.
        let half = self.documents.len() / 2;
        let cut = self.records[..self.records.len() - 1]
            .iter()
            .enumerate()
            .min_by_key(|(_, r)| r.documents_end.abs_diff(half))
            .map(|(i, _)| i + 1)?;
        let part = |records: &[RecordSpan], from_document: usize| {
            let first = &records[0];
            let last = records.last().expect("a part has a record");
            let documents: Vec<RawDocumentBuf> =
                self.documents[from_document..last.documents_end].to_vec();
            let records = records
                .iter()
                .map(|r| RecordSpan {
                    documents_end: r.documents_end - from_document,
                    ..r.clone()
                })
                .collect();
            Batch {
                first_seq: first.seq,
                last_seq: last.seq,
                first_gtid: first.gtid.clone(),
                last_gtid: last.gtid.clone(),
                position_after: last.position_after.clone(),
                bytes: documents.iter().map(|d| d.as_bytes().len()).sum(),
                documents,
                last_timestamp: last.timestamp,
                records,
            }
        };
        let boundary = self.records[cut - 1].documents_end;
        Some((
            part(&self.records[..cut], 0),
            part(&self.records[cut..], boundary),
        ))
    }
}

/// What [`prepare`] made of the records it was given.
pub type Prepared = crate::forward::Prepared<Batch, SinkError>;

/// Converts the leading records of `records` (consecutive, in sequence order, non-empty) into one
/// batch within the limits.
pub fn prepare(
    source: &str,
    records: &[Stored<SourceTransaction>],
    max_documents: usize,
    max_bytes: usize,
) -> Prepared {
    let mut documents = Vec::new();
    let mut bytes = 0usize;
    let mut taken: Option<(&Stored<SourceTransaction>, &Stored<SourceTransaction>)> = None;
    let mut spans = Vec::new();
    for stored in records {
        let encoded = match encode_transaction(source, stored) {
            Ok(encoded) => encoded,
            Err(e) => {
                return match taken {
                    Some((first, last)) => {
                        Prepared::BatchThenStop(batch(first, last, documents, bytes, spans), e)
                    }
                    None => Prepared::Stop(e),
                }
            }
        };
        let size: usize = encoded.iter().map(|d| d.as_bytes().len()).sum();
        if taken.is_some()
            && (documents.len() + encoded.len() > max_documents || bytes + size > max_bytes)
        {
            break;
        }
        documents.extend(encoded);
        bytes += size;
        spans.push(RecordSpan {
            seq: stored.seq,
            gtid: stored.record.gtid.clone(),
            position_after: stored.record.position_after.clone(),
            timestamp: stored.record.timestamp,
            documents_end: documents.len(),
        });
        taken = Some((taken.map_or(stored, |(first, _)| first), stored));
    }
    let (first, last) = taken.expect("prepare() needs at least one record");
    Prepared::Batch(batch(first, last, documents, bytes, spans))
}

fn batch(
    first: &Stored<SourceTransaction>,
    last: &Stored<SourceTransaction>,
    documents: Vec<RawDocumentBuf>,
    bytes: usize,
    records: Vec<RecordSpan>,
) -> Batch {
    Batch {
        first_seq: first.seq,
        last_seq: last.seq,
        first_gtid: first.record.gtid.clone(),
        last_gtid: last.record.gtid.clone(),
        position_after: last.record.position_after.clone(),
        documents,
        bytes,
        last_timestamp: last.record.timestamp,
        records,
    }
}

fn encode_transaction(
    source: &str,
    stored: &Stored<SourceTransaction>,
) -> Result<Vec<RawDocumentBuf>, SinkError> {
    if let Some(raw) = document::transaction_raw_documents(source, &stored.record) {
        if raw.iter().all(|d| d.as_bytes().len() <= MAX_DOCUMENT_BYTES) {
            return Ok(raw);
        }
    }
    // The general path names the change that cannot be sent.
    document::transaction_documents(source, &stored.record)
        .into_iter()
        .map(|d| encode(&d, stored))
        .collect()
}

fn encode(d: &Document, stored: &Stored<SourceTransaction>) -> Result<RawDocumentBuf, SinkError> {
    let size = match RawDocumentBuf::from_document(d) {
        Ok(raw) if raw.as_bytes().len() <= MAX_DOCUMENT_BYTES => return Ok(raw),
        Ok(raw) => raw.as_bytes().len(),
        Err(e) => {
            // The encoder refuses a single value over the limit (a binary over 16 MiB) by itself.
            let size = approximate_document_size(d);
            if size <= MAX_DOCUMENT_BYTES {
                return Err(SinkError::Encode {
                    gtid: stored.record.gtid.clone(),
                    wal_seq: stored.seq,
                    detail: e.to_string(),
                });
            }
            size
        }
    };
    let meta = d.get_document("meta").ok();
    let field = |k: &str| {
        meta.and_then(|m| m.get_str(k).ok())
            .unwrap_or("?")
            .to_string()
    };
    Err(SinkError::DocumentTooLarge {
        table: format!("{}.{}", field("db"), field("tbl")),
        primary_key: meta
            .and_then(|m| m.get_document("pk").ok())
            .map(|pk| pk.to_string())
            .unwrap_or_else(|| "{}".into()),
        gtid: stored.record.gtid.clone(),
        wal_seq: stored.seq,
        position_after: stored.record.position_after.clone(),
        size,
    })
}

fn approximate_document_size(d: &Document) -> usize {
    5 + d
        .iter()
        .map(|(k, v)| 2 + k.len() + approximate_size(v))
        .sum::<usize>()
}

/// The BSON size of `v` give or take a few bytes per element (names and headers).
fn approximate_size(v: &Bson) -> usize {
    match v {
        Bson::Document(d) => approximate_document_size(d),
        Bson::Array(a) => 5 + a.iter().map(|v| 4 + approximate_size(v)).sum::<usize>(),
        Bson::String(s) => 5 + s.len(),
        Bson::Binary(b) => 5 + b.bytes.len(),
        _ => 16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Change, RowChange, RowOp, Table, Value};

    fn record(seq: u64, rows: usize, blob: usize) -> Stored<SourceTransaction> {
        let row = RowChange {
            op: RowOp::Insert,
            table: std::sync::Arc::new(Table {
                database: "app".into(),
                name: "t".into(),
                columns: vec!["id".into(), "b".into()],
                primary_key: vec![0],
            }),
            file: "bin.000001".into(),
            pos: 4,
            before: None,
            after: Some(vec![Value::Int(seq as i64), Value::Bytes(vec![7; blob])]),
        };
        Stored {
            seq,
            record: SourceTransaction {
                gtid: format!("0-1-{seq}"),
                timestamp: 1,
                position_after: format!("0-1-{seq}"),
                first_change: 0,
                ends_transaction: true,
                changes: vec![Change::Row(row); rows],
            },
            frame_len: 0,
        }
    }

    fn batch_of(p: Prepared) -> Batch {
        match p {
            Prepared::Batch(b) => b,
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn batches_stop_at_the_document_limit_but_never_split_a_transaction() {
        let records: Vec<_> = (1..=5).map(|s| record(s, 3, 10)).collect();
        let b = batch_of(prepare("default", &records, 7, usize::MAX));
        assert_eq!((b.first_seq, b.last_seq, b.documents.len()), (1, 2, 6));
        let b = batch_of(prepare("default", &records, 2, usize::MAX));
        assert_eq!((b.first_seq, b.last_seq, b.documents.len()), (1, 1, 3));
        assert_eq!(b.position_after, "0-1-1");
    }

    #[test]
    fn a_batch_splits_in_halves_at_record_boundaries_down_to_one_record() {
        let records: Vec<_> = (1..=5).map(|s| record(s, 2, 10)).collect();
        let b = batch_of(prepare("default", &records, 1000, usize::MAX));
        let (a, c) = b.split().unwrap();
        assert_eq!((a.first_seq, a.last_seq, a.documents.len()), (1, 2, 4));
        assert_eq!((c.first_seq, c.last_seq, c.documents.len()), (3, 5, 6));
        assert_eq!(
            (a.position_after.as_str(), c.position_after.as_str()),
            ("0-1-2", "0-1-5")
        );
        assert_eq!(
            (a.first_gtid.as_str(), c.first_gtid.as_str()),
            ("0-1-1", "0-1-3")
        );
        assert_eq!(a.bytes + c.bytes, b.bytes);
        let ids = |x: &Batch| -> Vec<String> {
            x.documents
                .iter()
                .map(|d| d.get_str("_id").unwrap().to_string())
                .collect()
        };
        assert_eq!([ids(&a), ids(&c)].concat(), ids(&b));
        let (c1, c2) = c.split().unwrap();
        assert_eq!((c1.last_seq, c2.first_seq, c2.last_seq), (3, 4, 5));
        assert!(
            c2.split().unwrap().1.split().is_none(),
            "one record is not split"
        );
    }

    #[test]
    fn batches_stop_at_the_byte_limit() {
        let records: Vec<_> = (1..=5).map(|s| record(s, 1, 1000)).collect();
        let b = batch_of(prepare("default", &records, 1000, 2800));
        assert_eq!((b.first_seq, b.last_seq), (1, 2));
        assert!(b.bytes <= 2800 && b.bytes > 2000, "{}", b.bytes);
    }

    #[test]
    fn an_oversized_change_stops_after_the_records_before_it() {
        let records = vec![
            record(1, 1, 10),
            record(2, 1, MAX_DOCUMENT_BYTES),
            record(3, 1, 10),
        ];
        match prepare("default", &records, 1000, usize::MAX) {
            Prepared::BatchThenStop(b, e) => {
                assert_eq!((b.first_seq, b.last_seq), (1, 1));
                let text = e.to_string();
                for needle in ["app.t", "\"id\": 2", "0-1-2", "WAL sequence 2", "16 MiB"] {
                    assert!(text.contains(needle), "`{needle}` missing from: {text}");
                }
                assert!(!e.is_transient());
            }
            other => panic!("expected BatchThenStop, got {other:?}"),
        }
        assert!(matches!(
            prepare("default", &records[1..], 1000, usize::MAX),
            Prepared::Stop(SinkError::DocumentTooLarge { .. })
        ));
    }
}
