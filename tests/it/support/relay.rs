//! [`Relay`]: the fixture most tests start from: a throwaway MariaDB and MongoDB, the tables the
//! test writes to, an sdl configured between them (and running, following the binlog, unless the
//! test asks for it stopped), with the waits tests repeat and the one exactly-once assertion
//! ([`assert_exactly_once`]): every row change the source committed is in MongoDB exactly once,
//! and nothing else is.
//!
//! Each test builds its own relay: nothing is shared between tests but the machine.

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::bson::{doc, Document};
use mysql_async::prelude::Queryable;

use super::proxy::Proxy;
use super::workload::{create_tables, TABLES};
use super::{
    change_documents, rebuild_table, select_table, wait_for_offset, wait_until, MariaDb, Mongo, Sdl,
};

/// Servers, tables and a configured sdl; build with [`Relay::builder`].
pub struct Relay {
    pub mariadb: MariaDb,
    pub mongo: Mongo,
    pub sdl: Sdl,
    /// The fault-injecting proxy sdl reaches the source through, when the test asked for one.
    pub source_proxy: Option<Proxy>,
    /// The tables [`Relay::assert_exactly_once`] compares: `app.<table>` keyed by its column.
    tables: Vec<(String, String)>,
}

/// What a [`Relay`] starts with; every part has the common default (a standard MariaDB, no tables,
/// `source.start = "current"`, the harness's config).
#[derive(Default)]
pub struct RelayBuilder {
    mariadb_args: Vec<String>,
    mongo_args: Vec<String>,
    start: Option<String>,
    settings: Vec<(String, String)>,
    statements: Vec<String>,
    tables: Vec<(String, String)>,
    workload_tables: bool,
    source_proxy: bool,
}

impl RelayBuilder {
    /// Extra `mariadbd` arguments (see [`MariaDb::start_with`]).
    pub fn mariadb_args(mut self, args: &[&str]) -> Self {
        self.mariadb_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// `secantusd-rs` arguments, e.g. `--standalone` (see [`Mongo::start_with`]).
    pub fn mongo_args(mut self, args: &[&str]) -> Self {
        self.mongo_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// `source.start` (default `"current"`).
    pub fn start_from(mut self, start: &str) -> Self {
        self.start = Some(start.to_string());
        self
    }

    /// A config line for `section`, replacing the harness's line for the same key (see
    /// [`Sdl::with_settings`]).
    pub fn setting(mut self, section: &str, line: &str) -> Self {
        self.settings.push((section.to_string(), line.to_string()));
        self
    }

    /// [`RelayBuilder::setting`] for each non-empty line of `toml`, in the `[sink]` section (see
    /// [`Sdl::new_with`]).
    pub fn sink_toml(self, toml: &str) -> Self {
        toml.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .fold(self, |builder, line| builder.setting("sink", line))
    }

    /// [`RelayBuilder::setting`] for each `(section, line)`.
    pub fn settings(self, settings: &[(&str, &str)]) -> Self {
        settings.iter().fold(self, |builder, (section, line)| {
            builder.setting(section, line)
        })
    }

    /// The workload's tables ([`super::workload::TABLES`]), created before sdl starts and
    /// compared by [`Relay::assert_exactly_once`].
    pub fn workload_tables(mut self) -> Self {
        self.workload_tables = true;
        self.tables.extend(
            TABLES
                .iter()
                .map(|(table, key)| (table.to_string(), key.to_string())),
        );
        self
    }

    /// SQL run as root, in order, before sdl starts (tables, seed rows, session settings).
    pub fn sql(mut self, statements: &[&str]) -> Self {
        self.statements
            .extend(statements.iter().map(|s| s.to_string()));
        self
    }

    /// A table `app.<table>` keyed by `key` that [`Relay::assert_exactly_once`] compares.
    pub fn compare(mut self, table: &str, key: &str) -> Self {
        self.tables.push((table.to_string(), key.to_string()));
        self
    }

    /// sdl reaches the source through a [`Proxy`] (`source.url` points at it), for a test that
    /// cuts the network: [`Relay::source_proxy`].
    pub fn source_via_proxy(mut self) -> Self {
        self.source_proxy = true;
        self
    }

    /// Servers up, tables created, sdl configured but not started (for a test that sets up the
    /// WAL directory, an environment variable or data first).
    pub async fn stopped(self) -> Relay {
        let mariadb_args: Vec<&str> = self.mariadb_args.iter().map(String::as_str).collect();
        let mongo_args: Vec<&str> = self.mongo_args.iter().map(String::as_str).collect();
        let (mariadb, mongo) = tokio::join!(
            MariaDb::start_with(&mariadb_args),
            Mongo::start_with(&mongo_args)
        );
        let mut conn = mariadb.root_conn().await;
        if self.workload_tables {
            create_tables(&mut conn).await;
        }
        for statement in &self.statements {
            conn.query_drop(statement)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        conn.disconnect().await.unwrap();
        let source_proxy = match self.source_proxy {
            true => Some(Proxy::start(mariadb.port).await),
            false => None,
        };
        let proxy_url = source_proxy
            .as_ref()
            .map(|proxy| format!("url = \"{}\"", mariadb.sdl_url_via(proxy.port)));
        let settings: Vec<(&str, &str)> = proxy_url
            .iter()
            .map(|url| ("source", url.as_str()))
            .chain(
                self.settings
                    .iter()
                    .map(|(section, line)| (section.as_str(), line.as_str())),
            )
            .collect();
        let start = self.start.as_deref().unwrap_or("current");
        let sdl = Sdl::with_settings(&mariadb, &mongo, start, &settings);
        Relay {
            mariadb,
            mongo,
            sdl,
            source_proxy,
            tables: self.tables,
        }
    }

    /// [`RelayBuilder::stopped`], then sdl started; returns once it follows the binlog (with
    /// `start = "current"`, changes committed from then on are relayed).
    pub async fn following(self) -> Relay {
        let mut relay = self.stopped().await;
        relay.sdl.start();
        relay.sdl.wait_following().await;
        relay
    }
}

impl Relay {
    pub fn builder() -> RelayBuilder {
        RelayBuilder::default()
    }

    /// False, with a note, when MongoDB is the shared server of `SDL_TEST_MONGODB_URI`, which a
    /// test must not kill: the test then returns early (see
    /// [`super::start_servers_with_killable_mongo`]).
    pub fn can_kill_mongo(&self) -> bool {
        if self.mongo.is_external() {
            eprintln!("skipped: this test kills the MongoDB server, which it cannot do to SDL_TEST_MONGODB_URI");
            return false;
        }
        true
    }

    /// The proxy of [`RelayBuilder::source_via_proxy`].
    pub fn source_proxy(&self) -> &Proxy {
        self.source_proxy
            .as_ref()
            .expect("the relay was built without source_via_proxy()")
    }

    /// A new root connection to the source.
    pub async fn conn(&self) -> mysql_async::Conn {
        self.mariadb.root_conn().await
    }

    /// Waits until MongoDB's offset names the source's current position: everything committed so
    /// far is in MongoDB.
    pub async fn wait_caught_up(&self, timeout: Duration) {
        let position = self.mariadb.gtid_binlog_pos().await;
        wait_for_offset(&self.mongo, &position, timeout, &self.sdl).await;
    }

    /// The number of change documents in MongoDB (row changes and DDL).
    pub async fn document_count(&self) -> u64 {
        self.mongo
            .db()
            .await
            .collection::<Document>("row_changes")
            .count_documents(doc! {})
            .await
            .unwrap()
    }

    /// Waits until MongoDB holds more than `count` change documents.
    pub async fn wait_documents_over(&self, count: u64, timeout: Duration) {
        wait_until(
            &format!("more than {count} change documents"),
            timeout,
            || async { (self.document_count().await > count).then_some(()) },
        )
        .await;
    }

    /// Every change document, in source commit order.
    pub async fn documents(&self) -> Vec<Document> {
        change_documents(&self.mongo).await
    }

    /// [`assert_exactly_once`] for this relay's tables.
    pub async fn assert_exactly_once(&self, expected_row_changes: u64) {
        let tables: Vec<(&str, &str)> = self
            .tables
            .iter()
            .map(|(table, key)| (table.as_str(), key.as_str()))
            .collect();
        assert_exactly_once(&self.mariadb, &self.mongo, expected_row_changes, &tables).await;
    }
}

/// The exactly-once assertion, document by document against the source: the number of row change
/// documents equals the row changes committed; every `_id` is `<source>/<gtid>:<row>` with the
/// rows of each transaction numbered 0, 1, 2, ... without a gap; and every table `app.<table>`
/// (keyed by `<key>`) rebuilt by replaying the documents equals `SELECT *` on the source, row for
/// row and value for value (a change twice, or an update or delete of a row never inserted,
/// fails the replay).
pub async fn assert_exactly_once(
    mariadb: &MariaDb,
    mongo: &Mongo,
    expected_row_changes: u64,
    tables: &[(&str, &str)],
) {
    let docs = change_documents(mongo).await;
    assert_documents_exactly_once(&docs, mariadb, expected_row_changes, tables).await;
}

/// [`assert_exactly_once`] for `docs`, every change document in source commit order (after a
/// source failover, binlog file:position orders only one server's documents: see
/// `super::replication::documents_in_gtid_order`).
pub async fn assert_documents_exactly_once(
    docs: &[Document],
    mariadb: &MariaDb,
    expected_row_changes: u64,
    tables: &[(&str, &str)],
) {
    let row_docs: Vec<_> = docs
        .iter()
        .filter(|d| matches!(d.get_str("op"), Ok("insert" | "update" | "delete")))
        .cloned()
        .collect();
    assert_eq!(
        row_docs.len() as u64,
        expected_row_changes,
        "row change documents in MongoDB vs row changes committed in MariaDB"
    );
    let mut per_gtid: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for d in docs {
        let meta = d.get_document("meta").unwrap();
        let gtid = meta.get_str("gtid").unwrap();
        let row = meta.get_i64("row").unwrap();
        let source = meta.get_str("source").unwrap();
        assert_eq!(d.get_str("_id").unwrap(), format!("{source}/{gtid}:{row}"));
        per_gtid.entry(gtid.to_string()).or_default().push(row);
    }
    for (gtid, mut rows) in per_gtid {
        rows.sort_unstable();
        let expected: Vec<i64> = (0..rows.len() as i64).collect();
        assert_eq!(rows, expected, "ordinals of transaction {gtid} have a gap");
    }
    let mut conn = mariadb.root_conn().await;
    for &(table, key) in tables {
        let source = select_table(&mut conn, &format!("app.{table}"), key).await;
        let rebuilt = rebuild_table(&row_docs, "app", table, key);
        assert_eq!(source.len(), rebuilt.len(), "row count of app.{table}");
        for (k, row) in &source {
            assert_eq!(Some(row), rebuilt.get(k), "app.{table} row {key}={k}");
        }
    }
}
