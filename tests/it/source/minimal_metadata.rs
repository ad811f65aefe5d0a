//! `binlog_row_metadata=MINIMAL` with the opt-in `source.column_names = "information_schema"`:
//! names, ENUM/SET members and the primary key come from information_schema, values stay exact,
//! and after an ALTER the new names are looked up again. (Without the opt-in sdl refuses to
//! start: tests/bad_input.rs `row_metadata_minimal`.)

use std::time::Duration;

use crate::support::Relay;
use mongodb::bson::{doc, Bson};
use mysql_async::prelude::Queryable;

const TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn information_schema_names_rows_under_minimal_metadata() {
    let mut relay = Relay::builder()
        .mariadb_args(&["--binlog-row-metadata=MINIMAL"])
        .sql(&[
            "CREATE TABLE app.m (id INT PRIMARY KEY, name VARCHAR(20) CHARSET latin1, \
                e ENUM('x','it''s'), s SET('a','b','c'))",
        ])
        .setting("source", "column_names = \"information_schema\"")
        .following()
        .await;
    let mut conn = relay.conn().await;

    conn.query_drop("INSERT INTO app.m VALUES (1, 'café', 'it''s', 'a,c')")
        .await
        .unwrap();
    // The fallback is racy by design: the first row must be named before the ALTER runs.
    relay.wait_caught_up(TIMEOUT).await;
    conn.query_drop("ALTER TABLE app.m RENAME COLUMN name TO title, ADD COLUMN n INT DEFAULT 4")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO app.m (id, title, e, s) VALUES (2, 'é', 'x', '')")
        .await
        .unwrap();

    relay.wait_caught_up(TIMEOUT).await;
    let inserts: Vec<_> = relay
        .documents()
        .await
        .into_iter()
        .filter(|d| d.get_str("op").unwrap() == "insert")
        .collect();
    assert_eq!(inserts.len(), 2, "{inserts:?}");
    assert_eq!(
        inserts[0].get_document("after").unwrap(),
        &doc! {
            "id": 1i64, "name": "café", "e": "it's",
            "s": Bson::Array(vec!["a".into(), "c".into()]),
        }
    );
    assert_eq!(
        inserts[0]
            .get_document("meta")
            .unwrap()
            .get_document("pk")
            .unwrap(),
        &doc! { "id": 1i64 }
    );
    assert_eq!(
        inserts[1].get_document("after").unwrap(),
        &doc! { "id": 2i64, "title": "é", "e": "x", "s": Bson::Array(vec![]), "n": 4i64 }
    );
    assert!(relay.sdl.is_running(), "sdl exited:\n{}", relay.sdl.logs());
}
