//! The local write-ahead log: the operator's view (`sdl wal`, retention, backpressure, a full
//! disk, the lock), its directory's permissions, and repair of damaged metadata.

mod operator;
mod permissions;
mod repair;
