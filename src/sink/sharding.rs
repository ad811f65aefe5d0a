//! Sharded clusters (`sink.url` names `mongos`): the shard keys sdl's operations need, checked at
//! start when the cluster lets sdl read them.
//!
//! # Guarantees
//! - Every operation the sink sends is valid on a sharded collection with the recommended keys
//!   (docs/operations.md, "Sharded clusters"): `row_changes` `{"meta.src": 1, "_id": 1}`,
//!   `binlog_offsets` `{_id: 1}`, `row_changes_staging` `{_id: 1}`, `relay_leases` `{_id: 1}`; each write that must be
//!   targeted (the offset's upsert, staging upserts and updates) names the whole shard key in its
//!   filter (`_id`), and change documents always carry `meta.src` and `_id`.
//! - A change document always routes to one place: its shard key is made of `meta.src` and `_id`,
//!   and a change's `_id` (`<source.name>/<gtid>:<ordinal>`) fixes its `meta.src`. So a replay
//!   meets the stored copy on the same shard, whose `_id` index reports the duplicate, and a
//!   reused id meets the other change there too (`hash` tells them apart). A shard key with any
//!   other field would let two documents with one `_id` sit on two shards (MongoDB enforces `_id`
//!   uniqueness per shard only), so sdl refuses to start on one: [`judge`].
//! - The check reads `config.collections` through `mongos`. When that is not readable (no
//!   privilege, not a sharded cluster) it is skipped with a log line, never guessed.

use bson::{doc, Document};
use futures_util::TryStreamExt;

use super::document::SOURCE_PATH;
use super::{
    MongoSink, SinkError, CHANGES_COLLECTION, LEASES_COLLECTION, OFFSETS_COLLECTION,
    STAGING_COLLECTION,
};
use crate::redact::redact_error;

/// What a collection's shard key means for sdl.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The key keeps every guarantee and a source's batch on one shard (given zones).
    Fine,
    /// Valid, but with a cost the operator should know (the text says which).
    Costly(String),
    /// sdl's operations or guarantees break under this key (the text says how, and the fix).
    Refused(String),
}

/// Judges the shard key `key` of sdl's collection `collection`.
pub fn judge(collection: &str, key: &Document) -> Verdict {
    let fields: Vec<&str> = key.keys().map(String::as_str).collect();
    let hashed = key.values().any(|v| v.as_str() == Some("hashed"));
    match collection {
        CHANGES_COLLECTION => {
            if fields.is_empty() || fields.iter().any(|f| *f != SOURCE_PATH && *f != "_id") {
                return Verdict::Refused(format!(
                    "its shard key {key} has fields other than `{SOURCE_PATH}` and `_id`: two \
                     documents with the same `_id` could then sit on two shards, where neither a \
                     replayed change nor a reused id is detected (exactly-once is lost). Reshard \
                     it (reshardCollection) on {{\"{SOURCE_PATH}\": 1, \"_id\": 1}}"
                ));
            }
            if hashed {
                return Verdict::Costly(format!(
                    "its shard key {key} is hashed: one source's batch spreads over several \
                     shards, so every batch commit is a cross-shard transaction (two-phase \
                     commit). {{\"{SOURCE_PATH}\": 1, \"_id\": 1}} with a zone per source keeps \
                     it on one"
                ));
            }
            if fields.first() != Some(&SOURCE_PATH) {
                return Verdict::Costly(format!(
                    "its shard key {key} does not start with `{SOURCE_PATH}`: zones per source \
                     must then be `_id` ranges (\"<source.name>/\" up to \"<source.name>0\")"
                ));
            }
            Verdict::Fine
        }
        OFFSETS_COLLECTION | STAGING_COLLECTION | LEASES_COLLECTION => {
            if fields != ["_id"] {
                return Verdict::Refused(format!(
                    "its shard key {key} is not {{_id: 1}}: sdl upserts its documents by `_id` \
                     inside the batch transaction, which a sharded collection accepts only when \
                     the filter holds the whole shard key. Reshard it on {{_id: 1}} (or leave it \
                     unsharded: it is small)"
                ));
            }
            Verdict::Fine
        }
        _ => Verdict::Fine,
    }
}

impl MongoSink {
    /// Reads the shard keys of sdl's collections from `config.collections` (through `mongos`) and
    /// judges each ([`judge`]): a refused key is a definite error, a costly one a warning.
    pub(super) async fn check_shard_keys(&self) -> Result<(), SinkError> {
        let database = self.changes.namespace().db;
        let names: Vec<String> = [
            CHANGES_COLLECTION,
            OFFSETS_COLLECTION,
            STAGING_COLLECTION,
            LEASES_COLLECTION,
        ]
        .iter()
        .map(|c| format!("{database}.{c}"))
        .collect();
        let found: Result<Vec<Document>, _> = async {
            self.client
                .database("config")
                .collection::<Document>("collections")
                // `unsplittable`: an unsharded collection MongoDB 8 tracks there too.
                .find(doc! {
                    "_id": { "$in": &names },
                    "dropped": { "$ne": true },
                    "unsplittable": { "$ne": true },
                })
                .projection(doc! { "key": 1 })
                .await?
                .try_collect()
                .await
        }
        .await;
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                tracing::info!(target: "sdl::sink",
                    error = %redact_error(&e.to_string()),
                    "cannot read config.collections: the shard keys of sdl's collections are not checked (docs/operations.md, \"Sharded clusters\")"
                );
                return Ok(());
            }
        };
        for entry in &found {
            let (Ok(namespace), Ok(key)) = (entry.get_str("_id"), entry.get_document("key")) else {
                continue;
            };
            let collection = namespace.rsplit_once('.').map_or(namespace, |(_, c)| c);
            match judge(collection, key) {
                Verdict::Fine => tracing::info!(target: "sdl::sink",
                    collection = %namespace, key = %key, "sharded collection: shard key keeps sdl's guarantees"
                ),
                Verdict::Costly(why) => tracing::warn!(target: "sdl::sink",
                    collection = %namespace, key = %key, "sharded collection {namespace}: {why}"
                ),
                Verdict::Refused(why) => {
                    return Err(SinkError::Operation {
                        operation: "check shard keys",
                        detail: format!(
                            "sharded collection {namespace}: {why} (docs/operations.md, \"Sharded clusters\")"
                        ),
                        transient: false,
                    })
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::Bson;

    /// A shard key as `config.collections` holds it, from `(field, 1 | "hashed")` pairs.
    fn key(fields: &[(&str, Bson)]) -> Document {
        fields
            .iter()
            .map(|(f, v)| (f.to_string(), v.clone()))
            .collect()
    }

    fn one() -> Bson {
        Bson::Int32(1)
    }
    fn hashed() -> Bson {
        Bson::String("hashed".into())
    }

    #[test]
    fn row_changes_keys_of_meta_src_and_id_keep_the_guarantees() {
        let recommended = key(&[("meta.src", one()), ("_id", one())]);
        assert_eq!(judge(CHANGES_COLLECTION, &recommended), Verdict::Fine);
        assert_eq!(
            judge(CHANGES_COLLECTION, &key(&[("meta.src", one())])),
            Verdict::Fine
        );
        for costly in [
            key(&[("_id", one())]),
            key(&[("_id", hashed())]),
            key(&[("meta.src", hashed()), ("_id", one())]),
        ] {
            assert!(
                matches!(judge(CHANGES_COLLECTION, &costly), Verdict::Costly(_)),
                "{costly}"
            );
        }
    }

    #[test]
    fn row_changes_keys_with_other_fields_are_refused_naming_the_fix() {
        for refused in [
            key(&[("ts", one())]),
            key(&[("meta.src", one()), ("ts", one())]),
            key(&[("meta.source", one()), ("_id", one())]),
            key(&[("meta.db", hashed())]),
        ] {
            match judge(CHANGES_COLLECTION, &refused) {
                Verdict::Refused(why) => {
                    assert!(why.contains("reshardCollection"), "{why}");
                    assert!(why.contains("\"meta.src\": 1, \"_id\": 1"), "{why}");
                }
                other => panic!("{refused}: {other:?}"),
            }
        }
    }

    #[test]
    fn offsets_and_staging_must_be_keyed_on_id_alone() {
        for collection in [OFFSETS_COLLECTION, STAGING_COLLECTION, LEASES_COLLECTION] {
            assert_eq!(judge(collection, &key(&[("_id", one())])), Verdict::Fine);
            assert_eq!(judge(collection, &key(&[("_id", hashed())])), Verdict::Fine);
            for refused in [
                key(&[("source", one()), ("_id", one())]),
                key(&[("gtid", one())]),
            ] {
                assert!(
                    matches!(judge(collection, &refused), Verdict::Refused(_)),
                    "{collection} {refused}"
                );
            }
        }
    }
}
