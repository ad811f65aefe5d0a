//! What this binary is: its version, the git commit it was built from (when the build was given
//! one) and the WAL record format it reads and writes. Shown where an operator looks: `/status`
//! (`build`), the `sdl_build_info` metric, the start-up log and `sdl wal stats`.

use sdl_wal::Record;
use serde::Serialize;

use crate::event::SourceTransaction;

#[derive(Debug, Clone, Serialize)]
pub struct BuildInfo {
    pub version: &'static str,
    /// `SDL_GIT_COMMIT` at build time (the packaging scripts set it); `None` for a plain
    /// `cargo build` outside them.
    pub commit: Option<&'static str>,
    /// `SourceTransaction::FORMAT_VERSION`: records of another format are refused, not guessed.
    pub wal_format: u16,
}

pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        commit: option_env!("SDL_GIT_COMMIT").filter(|c| !c.is_empty()),
        wal_format: SourceTransaction::FORMAT_VERSION,
    }
}
