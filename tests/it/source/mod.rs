//! The ingester's side: the binlog stream's hard cases, schema changes under a running relay,
//! purged binlogs, minimal row metadata, and the decoder on recorded binlog files and fuzz input.

mod binlog_fixtures;
mod failover;
mod fuzz_smoke;
mod minimal_metadata;
mod purged_binlog;
mod schema_changes;
mod stream;
