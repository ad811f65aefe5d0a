//! The local write-ahead log: the operator's view (`sdl wal`, retention, backpressure, a full
//! disk, the lock), its directory's permissions, repair of damaged metadata, and the WAL bytes a
//! change costs (the capacity model).

mod capacity;
mod operator;
mod permissions;
mod repair;
