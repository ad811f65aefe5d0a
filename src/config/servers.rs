//! `source.url`: one server, or a list of servers sdl may follow (the primary first, then its
//! replicas; see docs/operations.md, "Source failover").
//!
//! Guarantees: the list is never empty, every entry is a valid `mysql://` URL, and no server is
//! listed twice (same host and port, or same socket); an error names the entry (its position
//! and redacted URL). Every listed server shares the rest of `[source]` (credentials, TLS,
//! `server_id`): [`SourceConfig::for_server`] gives the settings for one of them.

use std::path::Path;

use serde::Deserialize;

use super::{Config, ConfigError, SourceConfig};

/// `source.url` as written: one URL or a list, kept as a list (one entry for a single URL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerList(pub Vec<String>);

impl<'de> Deserialize<'de> for ServerList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        match OneOrMany::deserialize(d) {
            Ok(OneOrMany::One(url)) => Ok(Self(vec![url])),
            Ok(OneOrMany::Many(urls)) => Ok(Self(urls)),
            Err(_) => Err(serde::de::Error::custom(
                "source.url must be a mysql:// URL, or a list of them (the primary first, then replicas): url = \"mysql://...\" or url = [\"mysql://primary...\", \"mysql://replica...\"]",
            )),
        }
    }
}

impl SourceConfig {
    /// The same settings for the server at `index` in `source.url` (credentials, TLS and
    /// server_id are shared by every listed server).
    pub fn for_server(&self, index: usize) -> SourceConfig {
        let mut cfg = self.clone();
        if let Some(url) = self.servers.0.get(index) {
            cfg.url = url.clone();
        }
        cfg
    }

    /// The number of servers `source.url` lists.
    pub fn server_count(&self) -> usize {
        self.servers.0.len()
    }
}

impl Config {
    /// `source.url`: at least one URL, each a valid mysql:// URL, none listed twice.
    pub(super) fn validate_source_servers(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: "source.url",
            message,
        };
        let servers = &self.source.servers.0;
        if servers.is_empty() {
            return Err(invalid(
                "the list is empty: give the primary's mysql:// URL, then any replicas to fail over to".into(),
            ));
        }
        let single = servers.len() == 1;
        let mut endpoints: Vec<(String, u16, Option<String>)> = Vec::new();
        for (i, url) in servers.iter().enumerate() {
            let entry = if single {
                String::new()
            } else {
                format!("entry {} ({}): ", i + 1, crate::redact::redact_url(url))
            };
            let opts = mysql_async::Opts::from_url(url).map_err(|e| {
                invalid(format!(
                    "{entry}{} (expected a mysql:// URL with user, password, host and port)",
                    crate::redact::redact_error(&e.to_string())
                ))
            })?;
            let endpoint = (
                opts.ip_or_hostname().to_ascii_lowercase(),
                opts.tcp_port(),
                opts.socket().map(str::to_string),
            );
            if let Some(first) = endpoints.iter().position(|e| *e == endpoint) {
                return Err(invalid(format!(
                    "{entry}the same server as entry {}: list each server once (the primary first, then its replicas)",
                    first + 1
                )));
            }
            endpoints.push(endpoint);
        }
        Ok(())
    }
}
