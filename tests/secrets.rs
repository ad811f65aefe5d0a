//! Secrets kept out of the config file: the source password from SDL_SOURCE_PASSWORD or from
//! source.password_file; a world-readable config is warned about; no password reaches the logs.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{wait_for_offset, MariaDb, Mongo, Sdl, SDL_PASSWORD, SDL_USER};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_from_the_environment_or_a_file_and_never_in_logs() {
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

    // From a file, with the config made private: no warning.
    sdl.remove_env("SDL_SOURCE_PASSWORD");
    let secret = sdl.dir().join("source.password");
    std::fs::write(&secret, format!("{SDL_PASSWORD}\n")).unwrap();
    let config = std::fs::read_to_string(&sdl.config_path).unwrap().replace(
        "[source]\n",
        &format!("[source]\npassword_file = \"{}\"\n", secret.display()),
    );
    std::fs::write(&sdl.config_path, config).unwrap();
    std::fs::set_permissions(&sdl.config_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let logs_before = sdl.logs().len();
    relays_one_insert(&mut sdl, &mariadb, &mongo, 2).await;
    let second_run = &sdl.logs()[logs_before..];
    assert!(
        !second_run.contains("is readable by every user"),
        "{second_run}"
    );

    // Without any password the login is refused, with the usual one-paragraph error.
    std::fs::write(&secret, "wrong\n").unwrap();
    let (code, stderr) =
        common::run_sdl(&["run", "--config", &sdl.config_path.display().to_string()]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("refused the login"), "{stderr}");

    for text in [sdl.logs(), stderr] {
        assert!(
            !text.contains(SDL_PASSWORD),
            "a password reached the logs:\n{text}"
        );
    }
}
