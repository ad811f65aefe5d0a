//! Secrets kept out of the config file: the source password from SDL_SOURCE_PASSWORD or from
//! source.password_file; a world-readable config is warned about; no password reaches the logs,
//! text or JSON (`[log] format = "json"`: every line, the final error included, is a JSON object
//! with timestamp, level, target and message).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support;
use crate::support::{wait_for_offset, MariaDb, Mongo, Sdl, SDL_PASSWORD, SDL_USER};
use mysql_async::prelude::Queryable;

const TIMEOUT: Duration = Duration::from_secs(120);

async fn relays_one_insert(sdl: &mut Sdl, mariadb: &MariaDb, mongo: &Mongo, id: u32) {
    sdl.start();
    sdl.wait_following().await;
    let mut conn = mariadb.root_conn().await;
    conn.query_drop(format!("INSERT INTO app.s VALUES ({id})"))
        .await
        .unwrap();
    wait_for_offset(mongo, &mariadb.gtid_binlog_pos().await, TIMEOUT, sdl).await;
    assert!(sdl.terminate(Duration::from_secs(30)).success());
}

/// Every non-empty line of `text` as a JSON log record with the fields sdl's JSON logs promise.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    assert!(!lines.is_empty(), "no log lines");
    for l in &lines {
        assert!(
            l["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{l}"
        );
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .contains(&l["level"].as_str().unwrap_or("")),
            "{l}"
        );
        assert!(
            l["target"].as_str().is_some_and(|t| t.starts_with("sdl")),
            "{l}"
        );
        assert!(l["fields"]["message"].is_string(), "{l}");
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_from_the_environment_or_a_file_and_never_in_text_or_json_logs() {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    mariadb
        .root_conn()
        .await
        .query_drop("CREATE TABLE app.s (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let url = format!("url = \"mysql://{SDL_USER}@127.0.0.1:{}\"", mariadb.port);

    // From the environment; the config (written 0644 by the harness) is world-readable.
    let mut sdl = Sdl::with_settings(&mariadb, &mongo, "current", &[("source", &url)]);
    sdl.set_env("SDL_SOURCE_PASSWORD", SDL_PASSWORD);
    relays_one_insert(&mut sdl, &mariadb, &mongo, 1).await;
    assert!(
        sdl.logs().contains("is readable by every user"),
        "{}",
        sdl.logs()
    );

    // From a file, with the config made private: no warning. Logs in JSON from now on.
    sdl.remove_env("SDL_SOURCE_PASSWORD");
    let secret = sdl.dir().join("source.password");
    std::fs::write(&secret, format!("{SDL_PASSWORD}\n")).unwrap();
    // Private like the config (a world-readable password file is warned about).
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = std::fs::read_to_string(&sdl.config_path).unwrap().replace(
        "[source]\n",
        &format!("[source]\npassword_file = \"{}\"\n", secret.display()),
    ) + "[log]\nformat = \"json\"\n";
    std::fs::write(&sdl.config_path, config).unwrap();
    std::fs::set_permissions(&sdl.config_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let logs_before = sdl.logs().len();
    relays_one_insert(&mut sdl, &mariadb, &mongo, 2).await;
    let second_run = sdl.logs()[logs_before..].to_string();
    assert!(
        !second_run.contains("is readable by every user"),
        "{second_run}"
    );
    let lines = json_lines(&second_run);
    assert!(
        lines.iter().any(|l| l["level"] == "INFO"
            && l["target"] == "sdl::source"
            && l["fields"]["message"] == "following the binlog"
            && l["fields"]["position"].is_string()),
        "{second_run}"
    );

    // With a wrong password the login is refused, with the usual one-paragraph error: in JSON too.
    std::fs::write(&secret, "wrong\n").unwrap();
    let (code, stderr) =
        support::run_sdl(&["run", "--config", &sdl.config_path.display().to_string()]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("refused the login"), "{stderr}");
    let error = json_lines(&stderr).pop().unwrap();
    assert_eq!(error["level"], "ERROR", "{stderr}");
    assert_eq!(error["fields"]["exit_code"], 1, "{stderr}");
    assert!(
        error["fields"]["message"]
            .as_str()
            .unwrap()
            .starts_with("sdl: error: preflight check `source: reachable, login` failed"),
        "{stderr}"
    );

    for text in [sdl.logs(), stderr] {
        assert!(
            !text.contains(SDL_PASSWORD),
            "a password reached the logs:\n{text}"
        );
    }
}
