//! What this binary is: its version, the git commit it was built from (when the build was given
//! one) and the WAL record format it reads and writes. Shown where an operator looks: `/status`
//! (`build`), the `sdl_build_info` metric, the start-up log and `sdl wal stats`.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct BuildInfo {
    pub version: &'static str,
    /// The git commit (build.rs: `git rev-parse`, or `SDL_GIT_COMMIT` when the builder sets it);
    /// `None` when built outside a git checkout.
    pub commit: Option<&'static str>,
    /// `SourceTransaction::FORMAT_VERSION`: records of another format are refused, not guessed.
    pub wal_format: u16,
}

pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        commit: Some(crate::cli::GIT_COMMIT).filter(|c| *c != "unknown"),
        wal_format: crate::cli::WAL_FORMAT,
    }
}
