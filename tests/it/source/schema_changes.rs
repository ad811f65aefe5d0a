//! ALTER TABLE under a running relay: while a writer keeps inserting, columns are added, dropped,
//! renamed, reordered and retyped. Every document must carry the column names and values of the
//! schema in force when its row was written, and every ALTER must be recorded as a DDL document
//! at its place in the stream.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{wait_until, Relay};
use mongodb::bson::Bson;
use mysql_async::prelude::Queryable;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Each phase: the ALTER that starts it (None for the first) and the columns in force, with the
/// value an insert of `(id, k)` gets in each.
struct Phase {
    alter: Option<&'static str>,
    columns: &'static [&'static str],
}

const PHASES: &[Phase] = &[
    Phase {
        alter: None,
        columns: &["id", "k", "a", "b"],
    },
    Phase {
        alter: Some("ALTER TABLE app.evolving ADD COLUMN c INT DEFAULT 5"),
        columns: &["id", "k", "a", "b", "c"],
    },
    Phase {
        alter: Some("ALTER TABLE app.evolving DROP COLUMN b"),
        columns: &["id", "k", "a", "c"],
    },
    Phase {
        alter: Some("ALTER TABLE app.evolving RENAME COLUMN a TO a2"),
        columns: &["id", "k", "a2", "c"],
    },
    Phase {
        alter: Some("ALTER TABLE app.evolving MODIFY COLUMN c INT DEFAULT 5 FIRST"),
        columns: &["c", "id", "k", "a2"],
    },
    Phase {
        alter: Some("ALTER TABLE app.evolving MODIFY COLUMN c VARCHAR(10) DEFAULT 'five'"),
        columns: &["c", "id", "k", "a2"],
    },
];

fn expected_value(phase: usize, column: &str, id: i64) -> Bson {
    match column {
        "id" => Bson::Int64(id),
        "k" => Bson::Int64(id * 10),
        "a" | "a2" => Bson::String("a".into()),
        "b" => Bson::Int64(2),
        "c" if phase == 5 => Bson::String("five".into()),
        "c" => Bson::Int64(5),
        other => panic!("unexpected column {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alters_amid_writes_are_reflected_from_the_next_row_on() {
    let mut relay = Relay::builder()
        .sql(&[
            "CREATE TABLE app.evolving (id INT PRIMARY KEY, k INT NOT NULL, \
               a VARCHAR(10) DEFAULT 'a', b INT DEFAULT 2)",
        ])
        .following()
        .await;
    let mut conn = relay.conn().await;

    // The writer inserts (id, k = 10 * id) until told to stop; the ALTERs run between its rows.
    let written = Arc::new(AtomicU64::new(0));
    let keep_going = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn({
        let written = written.clone();
        let keep_going = keep_going.clone();
        let mut conn = relay.mariadb.root_conn().await;
        async move {
            let mut id = 0i64;
            while keep_going.load(Ordering::SeqCst) {
                id += 1;
                conn.exec_drop(
                    "INSERT INTO app.evolving (id, k) VALUES (?, ?)",
                    (id, id * 10),
                )
                .await
                .unwrap();
                written.store(id as u64, Ordering::SeqCst);
            }
            id
        }
    });
    let progress = |after: u64| {
        let written = written.clone();
        async move {
            wait_until("the writer to make progress", TIMEOUT, || async {
                (written.load(Ordering::SeqCst) >= after + 10).then_some(())
            })
            .await;
        }
    };
    for phase in PHASES {
        if let Some(alter) = phase.alter {
            progress(written.load(Ordering::SeqCst)).await;
            conn.query_drop(alter).await.unwrap();
        }
    }
    progress(written.load(Ordering::SeqCst)).await;
    keep_going.store(false, Ordering::SeqCst);
    let rows = writer.await.unwrap();

    relay.wait_caught_up(TIMEOUT).await;
    let docs = relay.documents().await;
    let mut phase = 0;
    let mut rows_per_phase = vec![0; PHASES.len()];
    let mut seen = 0;
    for d in &docs {
        match d.get_str("op").unwrap() {
            "ddl" => {
                let statement = d.get_str("statement").unwrap();
                let next = PHASES
                    .iter()
                    .position(|p| p.alter == Some(statement))
                    .unwrap_or_else(|| panic!("unexpected DDL document {d}"));
                assert_eq!(next, phase + 1, "ALTERs out of order: {statement}");
                // meta.db is the session's default database, and the ALTERs ran without one.
                assert_eq!(d.get_document("meta").unwrap().get_str("db").unwrap(), "");
                phase = next;
            }
            "insert" => {
                let after = d.get_document("after").unwrap();
                let names: Vec<&str> = after.keys().map(String::as_str).collect();
                assert_eq!(
                    names, PHASES[phase].columns,
                    "column names in phase {phase}: {d}"
                );
                let id = after.get_i64("id").unwrap();
                for (name, value) in after {
                    assert_eq!(
                        value,
                        &expected_value(phase, name, id),
                        "phase {phase}, id {id}, column {name}: {d}"
                    );
                }
                rows_per_phase[phase] += 1;
                seen += 1;
            }
            other => panic!("unexpected {other} document {d}"),
        }
    }
    assert_eq!(phase, PHASES.len() - 1, "not every ALTER was recorded");
    assert_eq!(seen, rows, "every insert arrives once");
    assert!(
        rows_per_phase.iter().all(|&n| n >= 10),
        "rows per phase: {rows_per_phase:?}"
    );
    assert!(relay.sdl.is_running(), "sdl exited:\n{}", relay.sdl.logs());
}
