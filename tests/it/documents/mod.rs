//! What arrives in MongoDB: every type's value as docs/change-document.md promises, JSON columns,
//! keys MongoDB cannot take as they are, and a change's identity (its source in its `_id` and
//! `meta.src`).

mod document_keys;
mod identity;
mod mariadb_json;
mod source_field;
mod types;
