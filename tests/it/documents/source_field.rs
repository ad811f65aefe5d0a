//! Every change document names its source in `meta.src` (beside `meta.source`), and a change the
//! release before `meta.src` already stored is met again after an upgrade as the same change
//! (docs/change-document.md, "Upgrading to `meta.src`"), against real MariaDB and SecantusDB.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{change_documents, wait_for_offset, MariaDb, Mongo};
use mongodb::bson::{doc, Document, RawDocumentBuf};

const TIMEOUT: Duration = Duration::from_secs(120);

/// A batch the release before `meta.src` left half-written (transactions off: two of its four
/// inserts done, then the process died before the offset) is written again by this release: the
/// two stored documents, which lack `meta.src` and carry that release's hash, count as the same
/// changes (not as a conflict), the two missing ones arrive with `meta.src`, each change once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_half_written_before_meta_src_is_completed_once_after_the_upgrade() {
    use sdl::event::SourceTransaction;
    use sdl::sink::document::{content_hash, transaction_raw_documents, HASH_FIELD};
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let mut sdl = super::batch_staged_by_a_run_that_died(&mariadb, &mongo).await;

    // What the previous release inserted before dying: the first two changes of the batch in its
    // form, this release's document without `meta.src`, hashed as that release hashed it.
    let db = mongo.db().await;
    let entry = db
        .collection::<Document>("row_changes_staging")
        .find_one(doc! { "status": "pending" })
        .await
        .unwrap()
        .expect("a pending staging entry");
    let (first, last) = (
        entry.get_i64("first_seq").unwrap() as u64,
        entry.get_i64("last_seq").unwrap() as u64,
    );
    let previous_release: Vec<Document> = {
        let wal: sdl_wal::Wal<SourceTransaction> = sdl_wal::Wal::open(sdl.wal_dir()).unwrap();
        let records = wal.read_from(first, 100, usize::MAX).unwrap();
        records
            .iter()
            .filter(|s| s.seq <= last)
            .flat_map(|s| transaction_raw_documents("default", &s.record).unwrap())
            .map(|raw| {
                let mut d = raw.to_document().unwrap();
                d.remove(HASH_FIELD);
                d.get_document_mut("meta").unwrap().remove("src");
                let hash = content_hash(RawDocumentBuf::from_document(&d).unwrap().as_bytes());
                d.insert(HASH_FIELD, hash);
                d
            })
            .collect()
    };
    assert_eq!(previous_release.len(), 4);
    let changes = db.collection::<Document>("row_changes");
    changes.insert_many(&previous_release[..2]).await.unwrap();

    sdl.start();
    let position = mariadb.gtid_binlog_pos().await;
    wait_for_offset(&mongo, &position, TIMEOUT, &sdl).await;
    let logs = sdl.logs();
    assert!(sdl.is_running(), "{logs}");
    assert!(!logs.contains("as a different change"), "{logs}");
    let docs = change_documents(&mongo).await;
    let mut per_id: BTreeMap<String, Vec<&Document>> = BTreeMap::new();
    for d in &docs {
        per_id
            .entry(d.get_str("_id").unwrap().to_string())
            .or_default()
            .push(d);
    }
    let ids: Vec<String> = previous_release
        .iter()
        .map(|d| d.get_str("_id").unwrap().to_string())
        .collect();
    assert_eq!(per_id.keys().cloned().collect::<Vec<_>>(), ids, "{docs:?}");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(per_id[id].len(), 1, "{id} stored twice: {docs:?}");
        let stored = per_id[id][0];
        let meta = stored.get_document("meta").unwrap();
        assert_eq!(meta.get_str("source").unwrap(), "default");
        if i < 2 {
            // Kept as the previous release wrote it.
            assert_eq!(stored, &previous_release[i], "{id}");
        } else {
            assert_eq!(meta.get_str("src").unwrap(), "default", "{stored}");
        }
    }
    assert!(sdl.terminate(Duration::from_secs(30)).success());
}
