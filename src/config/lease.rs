//! `[lease]`: a hot standby. Two sdl with the same `source.name` on two hosts, one leading, the
//! other waiting; leadership is a lease document in MongoDB (`crate::sink::lease`).
//!
//! Guarantees: off by default (no lease, today's behaviour); `duration` within its bound
//! (`bounds.rs`); a lease with `sink.transactions = "off"` is refused at load (exit 2), because
//! the fence is a write inside every batch's MongoDB transaction. `instance` defaults to the host
//! name; it is only a display name: the holder's identity is a random token per process.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, TransactionMode};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    /// Lead only while holding the lease of `source.name` in MongoDB; otherwise wait as a standby.
    #[serde(default)]
    pub enabled: bool,
    /// How long a lease lasts without renewal. The leader renews every third of it; a standby
    /// takes over once the lease has not moved for this long (measured on its own clock).
    #[serde(default = "default_duration", with = "humantime_serde")]
    pub duration: Duration,
    /// This instance's name in `/status`, the logs and the lease document (default: the host
    /// name).
    #[serde(default = "default_instance")]
    pub instance: String,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            duration: default_duration(),
            instance: default_instance(),
        }
    }
}

impl LeaseConfig {
    /// How often the leader renews the lease and a standby looks at it.
    pub fn renew_interval(&self) -> Duration {
        self.duration / 3
    }

    pub(super) fn validate(
        &self,
        path: &Path,
        transactions: TransactionMode,
    ) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        if !self.enabled {
            return Ok(());
        }
        if transactions == TransactionMode::Off {
            return Err(invalid(
                "lease.enabled",
                "a lease needs MongoDB transactions (every batch's transaction checks the lease's epoch, so a paused or cut-off old leader can never commit), but sink.transactions = \"off\": set sink.transactions = \"on\" (or \"auto\") with a replica set or sharded cluster, or turn [lease] off".into(),
            ));
        }
        if self.instance.trim().is_empty() {
            return Err(invalid(
                "lease.instance",
                "must not be empty (it names this instance in /status and the logs; leave it out to use the host name)".into(),
            ));
        }
        Ok(())
    }
}

fn default_duration() -> Duration {
    Duration::from_secs(15)
}

/// The host name, or "sdl" when it cannot be read.
fn default_instance() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "sdl".to_string())
}
