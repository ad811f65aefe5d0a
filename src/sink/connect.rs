//! Connecting to MongoDB: the `hello` probe (also `sdl check`'s), TLS as configured, the choice
//! of transactions, the indexes, and closing the client's background tasks before exit.

use bson::doc;
use mongodb::options::{ClientOptions, IndexOptions, Tls, TlsOptions, WriteConcern};
use mongodb::{Client, IndexModel};

use super::error::{classify_connect_error, error_code, is_dns_failure, operation_error};
use super::{MongoSink, SinkError, CHANGES_COLLECTION, OFFSETS_COLLECTION, STAGING_COLLECTION};
use crate::config::{SinkConfig, TlsMode, TransactionMode};
use crate::redact::{redact_error, redact_url};

/// A connected client and what the server can do, before anything is written.
pub struct Probe {
    pub client: Client,
    /// The URL with its password hidden.
    pub url: String,
    /// A replica set or a sharded cluster (multi-document transactions available).
    pub supports_transactions: bool,
    /// A sharded cluster (`sink.url` names `mongos`).
    pub sharded: bool,
    /// How the connection is protected (see [`Encryption`]).
    pub encryption: Encryption,
    /// The host names in sink.url (a `mongodb+srv://` name as given).
    pub hosts: Vec<String>,
}

/// Whether the connection to MongoDB is encrypted, as configured (the driver refuses to talk to a
/// server that does not complete the TLS handshake it asks for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    None,
    /// TLS with the server's certificate verified; `detail` says against what.
    Verified {
        detail: String,
    },
    /// TLS without certificate verification (`tlsInsecure` / `tlsAllowInvalidCertificates` in
    /// sink.url).
    Unverified,
}

fn encryption(tls: Option<&Tls>) -> Encryption {
    match tls {
        Some(Tls::Enabled(o)) if o.allow_invalid_certificates == Some(true) => {
            Encryption::Unverified
        }
        Some(Tls::Enabled(o)) => Encryption::Verified {
            detail: format!(
                "TLS, server certificate verified against {}{}",
                o.ca_file_path
                    .as_ref()
                    .map_or("the built-in roots".to_string(), |p| p
                        .display()
                        .to_string()),
                if o.cert_key_file_path.is_some() {
                    ", client certificate presented"
                } else {
                    ""
                }
            ),
        },
        _ => Encryption::None,
    }
}

/// Connects and asks the server's `hello`; writes nothing (also used by `sdl check`).
pub async fn probe(cfg: &SinkConfig) -> Result<Probe, SinkError> {
    let url = redact_url(&cfg.url);
    let mut options = match ClientOptions::parse(&cfg.url).await {
        Ok(options) => options,
        // A `mongodb+srv://` name is resolved (SRV and TXT records) while the URL is parsed: a
        // DNS failure there is the network's, and passes like any other unreachable server.
        Err(e) if is_dns_failure(&e) => {
            return Err(SinkError::Unreachable {
                url,
                detail: format!(
                    "DNS lookup failed (retried): {}",
                    redact_error(&e.to_string())
                ),
            })
        }
        Err(e) => return Err(SinkError::BadUrl(redact_error(&e.to_string()))),
    };
    if let Some(password) = cfg
        .password()
        .map_err(|e| SinkError::BadUrl(e.to_string()))?
    {
        let credential = options.credential.get_or_insert_with(Default::default);
        credential.password = Some(password);
    }
    if cfg.tls == TlsMode::On {
        options.tls = Some(Tls::Enabled(
            TlsOptions::builder()
                .ca_file_path(cfg.tls_ca_file.clone())
                .cert_key_file_path(cfg.tls_cert_key_file.clone())
                .build(),
        ));
    }
    let encryption = encryption(options.tls.as_ref());
    let hosts = options
        .hosts
        .iter()
        .map(|h| match h {
            mongodb::options::ServerAddress::Tcp { host, .. } => host.clone(),
            other => other.to_string(),
        })
        .collect();
    options.server_selection_timeout = Some(cfg.connect_timeout);
    options.connect_timeout = Some(cfg.connect_timeout);
    options.write_concern = Some(
        WriteConcern::builder()
            .w(mongodb::options::Acknowledgment::Majority)
            .journal(true)
            .build(),
    );
    options.app_name = Some("sdl".into());
    let client = Client::with_options(options)
        .map_err(|e| SinkError::BadUrl(redact_error(&e.to_string())))?;
    let hello = client
        .database("admin")
        .run_command(doc! { "hello": 1 })
        .await
        .map_err(|e| classify_connect_error(&url, &e))?;
    let replica_set = hello.get_str("setName").is_ok();
    let sharded = hello.get_str("msg").ok() == Some("isdbgrid");
    Ok(Probe {
        client,
        url,
        supports_transactions: replica_set || sharded,
        sharded,
        encryption,
        hosts,
    })
}

/// Ends a client's background tasks (monitors, connection pools) while the runtime still runs:
/// left to the runtime's own shutdown, a pool worker dropped before a task that uses it makes
/// that task panic as the process exits.
pub async fn shut_down(client: Client) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), client.shutdown()).await;
}

/// Connects the forwarder's [`MongoSink`] when it has none (MongoDB unreachable at start).
pub struct MongoConnect {
    pub cfg: SinkConfig,
    pub source_name: String,
    /// The lease every batch transaction checks (`[lease]`), `None` without one.
    pub fence: Option<super::Fence>,
}

impl crate::forward::Connect<MongoSink> for MongoConnect {
    async fn connect(&mut self) -> Result<MongoSink, SinkError> {
        let mut sink = MongoSink::connect(&self.cfg, &self.source_name).await?;
        sink.set_fence(self.fence.clone());
        Ok(sink)
    }
}

impl MongoSink {
    /// Closes the connections before exit (see [`shut_down`]).
    pub async fn close(self) {
        let client = self.client.clone();
        drop(self);
        shut_down(client).await;
    }

    /// Connects, decides whether to use transactions, and ensures the indexes.
    pub async fn connect(cfg: &SinkConfig, source_name: &str) -> Result<Self, SinkError> {
        let Probe {
            client,
            url,
            supports_transactions: supported,
            sharded,
            ..
        } = probe(cfg).await?;
        let transactions = match cfg.transactions {
            TransactionMode::On if !supported => return Err(SinkError::NoTransactions { url }),
            TransactionMode::On => true,
            TransactionMode::Auto => supported,
            TransactionMode::Off => false,
        };
        let db = client.database(&cfg.database);
        let sink = Self {
            changes: db.collection(CHANGES_COLLECTION),
            offsets: db.collection(OFFSETS_COLLECTION),
            staging: db.collection(STAGING_COLLECTION),
            leases: db.collection(super::LEASES_COLLECTION),
            fence: None,
            client,
            url,
            source_name: source_name.to_string(),
            transactions,
            staging_ttl: cfg.staging_ttl,
        };
        sink.ensure_collections().await?;
        sink.ensure_indexes().await?;
        if sharded {
            sink.check_shard_keys().await?;
        }
        Ok(sink)
    }

    /// Creates the offset collection when it is missing (the others are created by their
    /// indexes): on a sharded cluster a collection cannot be created implicitly inside a
    /// transaction that writes on several shards, which the first batch's commit may be.
    async fn ensure_collections(&self) -> Result<(), SinkError> {
        let db = self.client.database(&self.offsets.namespace().db);
        match db.create_collection(OFFSETS_COLLECTION).await {
            Ok(()) => Ok(()),
            // NamespaceExists: created earlier (or by the operator, sharded).
            Err(e) if error_code(&e) == Some(48) => Ok(()),
            Err(e) => Err(operation_error("create binlog_offsets", &e)),
        }
    }

    async fn ensure_indexes(&self) -> Result<(), SinkError> {
        let named = |name: &str| IndexOptions::builder().name(name.to_string());
        let indexes = [
            IndexModel::builder()
                .keys(doc! { "ts": 1 })
                .options(named("ts").build())
                .build(),
            IndexModel::builder()
                .keys(doc! { "meta.db": 1, "meta.tbl": 1, "meta.pk": 1 })
                .options(named("db_tbl_pk").build())
                .build(),
        ];
        self.changes
            .create_indexes(indexes)
            .await
            .map_err(|e| operation_error("createIndexes row_changes", &e))?;
        let staging_indexes = [
            IndexModel::builder()
                .keys(doc! { "status": 1 })
                .options(named("status").build())
                .build(),
            IndexModel::builder()
                .keys(doc! { "createdAt": 1 })
                .options(
                    named("createdAt_ttl")
                        .expire_after(self.staging_ttl)
                        .build(),
                )
                .build(),
        ];
        self.staging
            .create_indexes(staging_indexes)
            .await
            .map_err(|e| match error_code(&e) {
                // IndexOptionsConflict / IndexKeySpecsConflict: the TTL changed in the config.
                Some(85 | 86) => SinkError::Operation {
                    operation: "createIndexes row_changes_staging",
                    detail: format!(
                        "{}. The TTL index on createdAt exists with another expireAfterSeconds: \
                         change it with collMod (db.runCommand({{collMod: \"{STAGING_COLLECTION}\", \
                         index: {{name: \"createdAt_ttl\", expireAfterSeconds: {}}}}})) or drop \
                         the index, then start sdl again",
                        redact_error(&e.to_string()),
                        self.staging_ttl.as_secs()
                    ),
                    transient: false,
                },
                _ => operation_error("createIndexes row_changes_staging", &e),
            })?;
        Ok(())
    }
}
