//! sdl's integration tests, one binary (`cargo test --test it`): a module per guarantee area, each
//! against the built `sdl` binary and, where the guarantee needs them, throwaway real servers
//! (MariaDB and SecantusDB) that the harness in [`support`] starts per test. One binary compiles
//! the harness once and links once; tests still run in parallel (`--test-threads`), each with its
//! own servers, WAL directory and MongoDB database, sharing nothing but the machine.
//!
//! Filters select an area: `cargo test --test it exactly_once::`, `cargo test --test it wal::`.
//! Two areas are gated as before: `deploy::package` is ignored unless run by
//! `scripts/package --test` (it installs the .deb as root), and `soak` runs for `SDL_SOAK_SECONDS`
//! (default 150; `scripts/soak` runs it longer, in a release build).

mod support;

mod admin;
mod cli;
mod deploy;
mod documents;
mod exactly_once;
mod health;
mod proxy;
mod secrets;
mod snapshot;
mod soak;
mod source;
mod standby;
mod structure;
mod tls;
mod wal;
