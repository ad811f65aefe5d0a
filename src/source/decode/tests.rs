use super::assembler::TransactionAssembler;
use super::statement::{is_savepoint, statement_row_change};
use super::value::base64_decode;
use super::{AssemblerMode, TableSchema, MAX_CACHED_SCHEMAS};
use crate::gtid::{MysqlGtidSet, Position};

#[test]
fn base64_round_trips_opaque_json_bytes() {
    assert_eq!(base64_decode("").unwrap(), b"");
    assert_eq!(base64_decode("YQ==").unwrap(), b"a");
    assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
    assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
    assert_eq!(base64_decode("AP8B").unwrap(), [0, 255, 1]);
    assert!(base64_decode("YW?j").is_none());
}

#[test]
fn opaque_json_data_decodes_whatever_mysql_common_encodes() {
    use base64::prelude::{Engine as _, BASE64_STANDARD};
    let bytes: Vec<u8> = (0..=255u8).rev().chain(0..=255).collect();
    for len in [0, 1, 2, 3, 4, 5, 63, 64, 65, 512] {
        let data = &bytes[..len];
        assert_eq!(
            base64_decode(&BASE64_STANDARD.encode(data)).as_deref(),
            Some(data)
        );
    }
}

#[test]
fn row_changes_logged_as_statements_are_told_from_ddl() {
    for dml in [
        "INSERT INTO t VALUES (1)",
        "  insert into t values (1)",
        "/* app */ UPDATE t SET a = 1",
        "-- note\nDELETE FROM t",
        "# note\nREPLACE INTO t VALUES (1)",
        "/*!40000 INSERT INTO t VALUES (1) */",
        "/*M!100100 DELETE FROM t */",
        "LOAD DATA INFILE '/tmp/x' INTO TABLE t",
        "load xml infile 'x' into table t",
        "INSERT INTO t SELECT * FROM u",
        "WITH c AS (SELECT 1) UPDATE t, c SET t.a = 1",
        "CREATE TABLE t2 SELECT * FROM t",
        "CREATE OR REPLACE TABLE t2 (a INT) AS SELECT a FROM t",
        "create temporary table t2 select 1",
    ] {
        assert!(
            statement_row_change(dml).is_some(),
            "{dml} not seen as a row change"
        );
    }
    for other in [
        "BEGIN",
        "COMMIT",
        "XA START 'x'",
        "SAVEPOINT s",
        "CREATE TABLE t (a INT)",
        "CREATE TABLE `insert` (`update` INT)",
        "CREATE TABLE t (a INT DEFAULT 1) COMMENT 'SELECT x'",
        "CREATE VIEW v AS SELECT * FROM t",
        "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1",
        "CREATE PROCEDURE p() INSERT INTO t VALUES (1)",
        "ALTER TABLE t ADD COLUMN `delete` INT",
        "DROP TABLE t",
        "TRUNCATE TABLE t",
        "RENAME TABLE t TO u",
        "GRANT SELECT ON *.* TO 'u'@'%'",
        "/* INSERT */ DROP TABLE t",
        "-- INSERT\nDROP TABLE t",
        "WITH c AS (SELECT 1) SELECT * FROM c",
        "LOAD INDEX INTO CACHE t",
        "",
    ] {
        assert_eq!(statement_row_change(other), None, "{other}");
    }
}

#[test]
fn table_maps_are_evicted_at_commit_whatever_the_number_of_tables() {
    use crate::source::binlog_file::BinlogFileReader;
    const TABLES: usize = 10_000;
    let binlog = crate::source::fuzzing::binlog_with_tables(TABLES);
    let mut reader = BinlogFileReader::new(&binlog[..]);
    let mut assembler = TransactionAssembler::with_mode(
        Position::Mysql(MysqlGtidSet::default()),
        AssemblerMode::File,
    );
    let (mut transactions, mut most_cached) = (0, 0);
    while let Some(event) = reader.next_event().unwrap() {
        if assembler.feed(&event).unwrap().is_some() {
            transactions += 1;
            assert_eq!(assembler.cached_tables().0, 0, "after a commit");
        }
        most_cached = most_cached.max(assembler.cached_tables().0);
    }
    assert_eq!(transactions, TABLES);
    assert_eq!(
        most_cached, 1,
        "one table per transaction is mapped at a time"
    );
}

#[test]
fn provided_schemas_are_bounded() {
    let mut assembler = TransactionAssembler::new(Position::Mariadb(Default::default()));
    for i in 0..MAX_CACHED_SCHEMAS * 2 + 5 {
        assembler.provide_schema("db".into(), format!("t{i}"), TableSchema::default());
        assert!(assembler.cached_tables().1 <= MAX_CACHED_SCHEMAS);
    }
    assert!(assembler.has_schema("db", &format!("t{}", MAX_CACHED_SCHEMAS * 2 + 4)));
}

#[test]
fn savepoint_statements_are_recognised() {
    for s in [
        "SAVEPOINT `a`",
        "ROLLBACK TO `a`",
        "ROLLBACK TO SAVEPOINT a",
        "RELEASE SAVEPOINT a",
    ] {
        assert!(is_savepoint(&s.to_ascii_uppercase()), "{s}");
    }
    assert!(!is_savepoint("ROLLBACK"));
    assert!(!is_savepoint("ALTER TABLE SAVEPOINTS ADD X INT"));
}
