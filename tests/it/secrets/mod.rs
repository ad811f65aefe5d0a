//! Secrets stay secret: passwords outside the config file and out of the logs, and passwords in
//! replicated statements out of MongoDB, `/status`, `sdl wal dump`, the logs and the WAL.

mod config;
mod statements;
