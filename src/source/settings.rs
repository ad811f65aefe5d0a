//! The server settings sdl depends on (`log_bin`, `binlog_format=ROW`, `binlog_row_image=FULL`,
//! `binlog_row_metadata=FULL`, MySQL's `gtid_mode=ON`, an empty `binlog_row_value_options`) and
//! the source's flavor.
//!
//! Guarantees: every setting is read and reported, none skipped at the first failure (`sdl check`
//! shows them all); a connection for the ingester is refused at the first wrong one with an error
//! naming the setting, its value, what sdl needs and how to fix it.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tracing::warn;

use super::error::query_error;
use super::SourceError;
use crate::config::ColumnNames;
use crate::flavor::Flavor;

async fn global_variables(conn: &mut Conn) -> Result<Vec<(String, String)>, SourceError> {
    let query =
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('version', 'log_bin', 'binlog_format', \
                 'binlog_row_image', 'binlog_row_metadata', 'gtid_mode', 'binlog_row_value_options')";
    conn.query::<(String, String), _>(query)
        .await
        .map_err(|e| query_error(query, e))
}

/// One server setting sdl depends on, as found.
#[derive(Debug, Clone)]
pub struct SettingFinding {
    pub setting: &'static str,
    pub actual: String,
    pub required: &'static str,
    pub fix: &'static str,
    pub ok: bool,
}

impl SettingFinding {
    fn into_error(self) -> SourceError {
        SourceError::Setting {
            setting: self.setting,
            actual: self.actual,
            required: self.required,
            fix: self.fix,
        }
    }
}

/// Reads the server's flavor and every setting sdl depends on (none is skipped at the first
/// failure: `sdl check` shows them all).
pub async fn settings_findings(
    conn: &mut Conn,
    names: ColumnNames,
) -> Result<(Flavor, Vec<SettingFinding>), SourceError> {
    let vars = global_variables(conn).await?;
    let get = |name: &str| {
        vars.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let flavor = if get("version").unwrap_or_default().contains("MariaDB") {
        Flavor::Mariadb
    } else {
        Flavor::Mysql
    };
    let mut findings = Vec::new();
    let mut require = |setting: &'static str, required: &'static str, fix: &'static str| {
        let actual = get(setting).unwrap_or_else(|| "not set (unsupported server version)".into());
        findings.push(SettingFinding {
            ok: actual.eq_ignore_ascii_case(required),
            setting,
            actual,
            required,
            fix,
        });
    };
    require(
        "log_bin",
        "ON",
        "Enable the binary log: start the server with --log-bin (and a --server-id).",
    );
    require(
        "binlog_format",
        "ROW",
        "Set binlog_format=ROW in the server config (SET GLOBAL binlog_format='ROW' applies to new sessions only).",
    );
    require(
        "binlog_row_image",
        "FULL",
        "Set binlog_row_image=FULL so every change carries whole rows.",
    );
    if names == ColumnNames::InformationSchema
        && get("binlog_row_metadata").is_some_and(|v| !v.eq_ignore_ascii_case("FULL"))
    {
        warn!(target: "sdl::source",
            "binlog_row_metadata is not FULL: column names come from information_schema \
             (source.column_names), which is racy if the schema changes while sdl is behind"
        );
    } else {
        require(
            "binlog_row_metadata",
            "FULL",
            "Set binlog_row_metadata=FULL so row events carry column names (MariaDB 10.5+, MySQL 8.0.1+), or accept the racy fallback with source.column_names = \"information_schema\".",
        );
    }
    if flavor == Flavor::Mysql {
        require(
            "gtid_mode",
            "ON",
            "Enable GTIDs: set gtid_mode=ON and enforce_gtid_consistency=ON.",
        );
    }
    // MySQL 8.0.3+: PARTIAL_JSON writes PARTIAL_UPDATE_ROWS events, which carry JSON diffs instead
    // of whole values. The variable does not exist on MariaDB.
    if let Some(options) = get("binlog_row_value_options") {
        findings.push(SettingFinding {
            ok: options.is_empty(),
            setting: "binlog_row_value_options",
            actual: options,
            required: "'' (empty)",
            fix: "Set binlog_row_value_options='' so JSON updates are logged as whole values (PARTIAL_JSON logs diffs sdl cannot turn into whole rows).",
        });
    }
    Ok((flavor, findings))
}

pub(super) async fn check_settings(
    conn: &mut Conn,
    names: ColumnNames,
) -> Result<Flavor, SourceError> {
    let (flavor, findings) = settings_findings(conn, names).await?;
    match findings.into_iter().find(|f| !f.ok) {
        Some(failed) => Err(failed.into_error()),
        None => Ok(flavor),
    }
}
