//! What arrives in MongoDB: every type's value as docs/change-document.md promises, JSON columns,
//! keys MongoDB cannot take as they are, and a change's identity (its source in its `_id` and
//! `meta.src`).

mod document_keys;
mod identity;
mod mariadb_json;
mod source_field;
mod types;

use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::support::{MariaDb, Mongo, Sdl};

/// A batch an sdl with `sink.transactions = "off"` staged and died before inserting (the
/// `sdl-exit-after-staging` fail point): a 4-row transaction into a new `app.t`. Returns the
/// stopped sdl, its WAL holding the batch and MongoDB its `pending` staging entry.
async fn batch_staged_by_a_run_that_died(mariadb: &MariaDb, mongo: &Mongo) -> Sdl {
    let mut conn = mariadb.root_conn().await;
    conn.query_drop("CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(40))")
        .await
        .unwrap();
    let mut sdl = Sdl::new_with(mariadb, mongo, "current", "transactions = \"off\"");
    sdl.start();
    sdl.wait_following().await;
    assert!(sdl.terminate(Duration::from_secs(30)).success());
    conn.query_drop(
        "BEGIN; INSERT INTO app.t VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'); COMMIT",
    )
    .await
    .unwrap();
    // The batch is staged, then the process dies before its inserts.
    sdl.set_env("FAILPOINTS", "sdl-exit-after-staging=return");
    sdl.start();
    assert_eq!(
        sdl.wait_exit(Duration::from_secs(120)).code(),
        Some(97),
        "{}",
        sdl.logs()
    );
    sdl.remove_env("FAILPOINTS");
    sdl
}
