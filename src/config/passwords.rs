//! Where the source's and MongoDB's passwords come from: the environment variable
//! (`SDL_SOURCE_PASSWORD` / `SDL_SINK_PASSWORD`) first, else the password file
//! (`source.password_file` / `sink.password_file`, trailing newline removed), else the URL.

use std::path::Path;

use super::{ConfigError, SinkConfig, SourceConfig};

impl SourceConfig {
    /// The password to log in with, if it does not come from `url`.
    pub fn password(&self) -> Result<Option<String>, ConfigError> {
        secret(
            "SDL_SOURCE_PASSWORD",
            self.password_file.as_deref(),
            "source.password_file",
        )
    }
}

impl SinkConfig {
    /// The password to log in with, if it does not come from `url`.
    pub fn password(&self) -> Result<Option<String>, ConfigError> {
        secret(
            "SDL_SINK_PASSWORD",
            self.password_file.as_deref(),
            "sink.password_file",
        )
    }
}

/// A secret from the environment (first) or a file (trailing newline removed).
fn secret(
    env: &str,
    file: Option<&Path>,
    key: &'static str,
) -> Result<Option<String>, ConfigError> {
    if let Ok(value) = std::env::var(env) {
        return Ok(Some(value));
    }
    let Some(file) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Invalid {
        path: file.to_path_buf(),
        key,
        message: format!("cannot read the password file: {e}"),
    })?;
    Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
}
