//! What this binary is: its version, the git commit it was built from (when the build was given
//! one) and the WAL record format it reads and writes. Shown where an operator looks: `/status`
//! (`build`), the `sdl_build_info` metric, the start-up log and `sdl wal stats`.

use serde::Serialize;

use crate::event::SourceTransaction;

/// The git commit the binary was built from (build.rs), or `unknown` outside a git checkout.
pub const GIT_COMMIT: &str = env!("SDL_GIT_COMMIT");

/// The WAL record format this build reads and writes (written into every WAL frame).
pub const WAL_FORMAT: u16 = <SourceTransaction as sdl_wal::Record>::FORMAT_VERSION;

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
        commit: Some(GIT_COMMIT).filter(|c| *c != "unknown"),
        wal_format: WAL_FORMAT,
    }
}
