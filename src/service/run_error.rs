//! How `sdl run` and `sdl check` fail: an error and the process exit code it ends with
//! ([`crate::ExitCode`], documented in docs/operations.md).
//!
//! Each kind of error converts to the exit code that says what an operator (or systemd) should
//! do about it, so the start-up phases use `?` and the code is decided in one place: a
//! configuration error exits 2, a source that no longer has sdl's binlog 3, a source whose history
//! no longer contains what was relayed 4, a duplicate server id 5, a lost lease 6 (`super::lease`),
//! anything else 1. The error text is the error's own, with its context chain: the code never
//! changes the message.

use crate::config::ConfigError;
use crate::service::identity::{CheckError, HistoryError};
use crate::service::wal_dir::WalDirError;
use crate::sink::SinkError;
use crate::source::SourceError;
use crate::ExitCode;

/// A failed run: what went wrong, and the exit code it ends the process with.
#[derive(Debug)]
pub struct RunError {
    pub code: ExitCode,
    pub error: anyhow::Error,
}

impl RunError {
    pub fn new(code: ExitCode, error: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }

    /// A runtime failure (exit 1): restarting may help once the cause is gone.
    pub fn failure(error: impl Into<anyhow::Error>) -> Self {
        Self::new(ExitCode::Failure, error)
    }

    /// A wrong configuration (exit 2).
    pub fn config(error: impl Into<anyhow::Error>) -> Self {
        Self::new(ExitCode::Config, error)
    }

    /// The source's history no longer contains what was relayed (exit 4).
    pub fn source_diverged(error: impl Into<anyhow::Error>) -> Self {
        Self::new(ExitCode::SourceDiverged, error)
    }
}

/// Anything without a code of its own is a runtime failure.
impl From<anyhow::Error> for RunError {
    fn from(error: anyhow::Error) -> Self {
        Self::failure(error)
    }
}

impl From<ConfigError> for RunError {
    fn from(error: ConfigError) -> Self {
        Self::config(error)
    }
}

/// The WAL directory is open to other users and sdl may not change that: a setup error.
impl From<WalDirError> for RunError {
    fn from(error: WalDirError) -> Self {
        Self::config(error)
    }
}

impl From<sdl_wal::WalError> for RunError {
    fn from(error: sdl_wal::WalError) -> Self {
        Self::failure(error)
    }
}

impl From<SinkError> for RunError {
    fn from(error: SinkError) -> Self {
        Self::failure(error)
    }
}

/// The source's own verdicts keep their codes: a purged binlog, a diverged source, a duplicate
/// server id, a snapshot refused (a config error); every other source error is a runtime failure.
impl From<SourceError> for RunError {
    fn from(error: SourceError) -> Self {
        let code = match error {
            SourceError::BinlogUnavailable { .. } => ExitCode::BinlogUnavailable,
            SourceError::SourceDiverged { .. } | SourceError::HistoryWentBack { .. } => {
                ExitCode::SourceDiverged
            }
            SourceError::DuplicateServerId { .. } => ExitCode::DuplicateServerId,
            // A table the configured snapshot cannot read soundly: the config must change.
            SourceError::SnapshotRefused { .. } => ExitCode::Config,
            _ => ExitCode::Failure,
        };
        Self::new(code, error)
    }
}

impl From<Box<HistoryError>> for RunError {
    fn from(error: Box<HistoryError>) -> Self {
        Self::source_diverged(error)
    }
}

/// Another history refuses the start (exit 4); a query that could not run is a failure.
impl From<CheckError> for RunError {
    fn from(error: CheckError) -> Self {
        match error {
            CheckError::History(e) => Self::source_diverged(e),
            e @ CheckError::Query(_) => Self::failure(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(e: RunError) -> (ExitCode, String) {
        let RunError { code, error } = e;
        (code, crate::messages::error_chain(&error))
    }

    #[test]
    fn each_kind_of_error_carries_its_exit_code_and_keeps_its_message() {
        let detail = || "gone".to_string();
        let position = || "0-1-7".to_string();
        for (error, code) in [
            (
                SourceError::BinlogUnavailable {
                    position: position(),
                    detail: detail(),
                },
                ExitCode::BinlogUnavailable,
            ),
            (
                SourceError::SourceDiverged {
                    position: position(),
                    detail: detail(),
                },
                ExitCode::SourceDiverged,
            ),
            (
                SourceError::DuplicateServerId {
                    server_id: 7,
                    detail: detail(),
                },
                ExitCode::DuplicateServerId,
            ),
            (SourceError::Transient(detail()), ExitCode::Failure),
        ] {
            let message = error.to_string();
            assert_eq!(parts(RunError::from(error)), (code, message));
        }

        let query = CheckError::Query("SHOW BINARY LOGS: gone".into());
        let message = query.to_string();
        assert_eq!(parts(query.into()), (ExitCode::Failure, message));

        let history = Box::new(HistoryError::NotContained {
            source_name: "orders".into(),
            relayed_what: "the WAL",
            relayed: "0-1-7".into(),
            variable: "gtid_binlog_pos",
            current: "0-1-2".into(),
            detail: detail(),
        });
        let message = history.to_string();
        assert_eq!(
            parts(CheckError::History(history).into()),
            (ExitCode::SourceDiverged, message)
        );
    }

    #[test]
    fn anything_else_is_a_failure_with_its_context_chain() {
        let error = anyhow::anyhow!("disk gone").context("saving the starting position in the WAL");
        let message = crate::messages::error_chain(&error);
        assert_eq!(parts(error.into()), (ExitCode::Failure, message));
        let (code, _) = parts(RunError::config(anyhow::anyhow!("bad key")));
        assert_eq!(code, ExitCode::Config);
    }
}
