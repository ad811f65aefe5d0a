use super::*;

const MINIMAL: &str = r#"
[source]
url = "mysql://repl:pw@127.0.0.1:3306"
server_id = 4242
[wal]
dir = "/tmp/x"
[sink]
url = "mongodb://127.0.0.1:27017/?replicaSet=rs0"
"#;

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
    assert_eq!(c.source.start, StartFrom::Current);
    assert_eq!(c.sink.database, "audit");
    assert_eq!(c.source.name, "default");
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.sink.transactions, TransactionMode::Auto);
    assert_eq!(c.sink.staging_ttl, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(c.sink.breaker_failures, 3);
    assert_eq!(c.sink.retry_max_delay, Duration::from_secs(30));
}

#[test]
fn the_documented_example_parses_with_the_defaults() {
    let c = Config::parse(
        Path::new("deploy/sdl.toml"),
        include_str!("../../deploy/sdl.toml"),
    )
    .unwrap();
    let d = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
    assert_eq!(c.sink.staging_ttl, d.sink.staging_ttl);
    assert_eq!(c.sink.transactions, d.sink.transactions);
    assert_eq!(c.sink.breaker_failures, d.sink.breaker_failures);
    assert_eq!(c.sink.retry_max_delay, d.sink.retry_max_delay);
    assert_eq!(c.sink.batch_max_bytes, d.sink.batch_max_bytes);
    assert_eq!(c.service.stuck_after, d.service.stuck_after);
}

#[test]
fn transactions_mode_is_parsed_and_checked() {
    let with = |v: &str| {
        Config::parse(
            Path::new("t.toml"),
            &MINIMAL.replace("[sink]", &format!("[sink]\ntransactions = {v}")),
        )
    };
    assert_eq!(
        with("\"off\"").unwrap().sink.transactions,
        TransactionMode::Off
    );
    assert_eq!(
        with("\"on\"").unwrap().sink.transactions,
        TransactionMode::On
    );
    let err = with("\"maybe\"").unwrap_err().to_string();
    assert!(err.contains("unknown variant `maybe`"), "{err}");
}

#[test]
fn start_accepts_keywords_and_gtid_sets() {
    let c = Config::parse(
        Path::new("t.toml"),
        &MINIMAL.replace("server_id = 4242", "server_id = 4242\nstart = \"0-1-5\""),
    )
    .unwrap();
    assert_eq!(c.source.start, StartFrom::Gtid("0-1-5".into()));
}

fn with_line(section: &str, line: &str) -> Result<Config, ConfigError> {
    let text = if section.is_empty() {
        format!("{line}\n{MINIMAL}")
    } else if MINIMAL.contains(&format!("[{section}]")) {
        MINIMAL.replace(&format!("[{section}]"), &format!("[{section}]\n{line}"))
    } else {
        format!("{MINIMAL}\n[{section}]\n{line}\n")
    };
    Config::parse(Path::new("t.toml"), &text)
}

#[test]
fn byte_sizes_take_units_and_plain_integers() {
    for (written, bytes) in [
        ("8589934592", 8u64 << 30),
        ("\"8GiB\"", 8 << 30),
        ("\"8GB\"", 8_000_000_000),
        ("\"8 gb\"", 8_000_000_000),
        ("\"512 MiB\"", 512 << 20),
        ("\"1.5GiB\"", 3 << 29),
    ] {
        let c = with_line("wal", &format!("max_bytes = {written}")).unwrap();
        assert_eq!(c.wal.max_bytes, bytes, "{written}");
    }
    let c = with_line("wal", "group_commit_bytes = \"64k\"").unwrap();
    assert_eq!(c.wal.group_commit_bytes, 64_000);
    let c = with_line("sink", "batch_max_bytes = \"4MiB\"").unwrap();
    assert_eq!(c.sink.batch_max_bytes, 4 << 20);
    let c = with_line("wal", "retain_acked_bytes = \"1GiB\"").unwrap();
    assert_eq!(c.wal.retain_acked_bytes, Some(1 << 30));
    for bad in ["\"8 gigs\"", "\"GB\"", "-5", "\"\"", "1.5"] {
        let err = with_line("wal", &format!("max_bytes = {bad}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_bytes"), "{bad}: {err}");
    }
}

#[test]
fn every_bounded_setting_refuses_values_outside_its_range() {
    let defaults = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
    defaults.check_bounds(Path::new("t.toml")).unwrap();
    for bound in BOUNDS {
        let (section, key) = bound.key.split_once('.').unwrap_or(("", bound.key));
        let (below, above) = match bound.range {
            Range::Duration { min, max } => (
                min.checked_sub(Duration::from_millis(1))
                    .map(|d| format!("\"{}\"", humantime::format_duration(d))),
                format!(
                    "\"{}\"",
                    humantime::format_duration(max + Duration::from_millis(1))
                ),
            ),
            Range::Bytes { min, max } | Range::Count { min, max } => (
                min.checked_sub(1).map(|v| v.to_string()),
                (max + 1).to_string(),
            ),
        };
        for value in below.into_iter().chain([above]) {
            let err = with_line(section, &format!("{key} = {value}"))
                .err()
                .unwrap_or_else(|| panic!("{} = {value} accepted", bound.key))
                .to_string();
            assert!(
                err.contains(&format!("`{}`", bound.key)) && err.contains("out of range"),
                "{}: {err}",
                bound.key
            );
        }
    }
    // The two absurd values the issue names.
    let err = with_line("wal", "prune_interval = \"0s\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("between 100ms and 1h"), "{err}");
    let err = with_line("wal", "group_commit_delay = \"1000000years\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("wal.group_commit_delay"), "{err}");
}

#[test]
fn the_documented_example_lists_every_key() {
    let example = include_str!("../../deploy/sdl.toml");
    let sections = [
        "", "source", "wal", "sink", "admin", "log", "service", "lease",
    ];
    for section in sections {
        // deny_unknown_fields names every key a section accepts.
        let err = with_line(section, "no_such_key = 1")
            .unwrap_err()
            .to_string();
        let expected = err
            .split("expected one of ")
            .nth(1)
            .or_else(|| err.split("expected ").nth(1))
            .and_then(|list| list.split(" (the line reads").next())
            .and_then(|list| list.split(". ").next())
            .unwrap_or_else(|| panic!("{err}"));
        for key in expected
            .split(", ")
            .map(|k| k.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_'))
        {
            if sections.contains(&key) {
                continue;
            }
            let listed = example.lines().any(|line| {
                let line = line.trim_start_matches(['#', ' ']);
                line.starts_with(&format!("{key} ")) || line.starts_with(&format!("{key}="))
            });
            assert!(listed, "deploy/sdl.toml does not list `{section}.{key}`");
        }
    }
}

#[test]
fn start_refuses_an_unknown_keyword_listing_the_valid_values() {
    let with = |v: &str| {
        Config::parse(
            Path::new("t.toml"),
            &MINIMAL.replace(
                "server_id = 4242",
                &format!("server_id = 4242\nstart = \"{v}\""),
            ),
        )
    };
    for bad in ["latest", "0-1", "now", "3e11fa47:1-5"] {
        let err = with(bad).unwrap_err().to_string();
        assert!(
            err.contains(&format!("source.start = `{bad}` is not a valid start"))
                && err.contains("\"current\"")
                && err.contains("\"earliest\"")
                && err.contains("GTID position"),
            "{err}"
        );
    }
    for good in [
        "0-1-5",
        "0-1-5,1-2-7",
        "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-42",
        "0-1-5; partial 0-1-6:10",
    ] {
        assert!(with(good).is_ok(), "{good}: {:?}", with(good).err());
    }
}

#[test]
fn toml_errors_name_line_and_column_on_one_readable_line() {
    let err = Config::parse(Path::new("t.toml"), "[source\nurl = 1\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "line 1, column 8: invalid table header; expected `.`, `]` (the line reads `[source`). Fix that line"
        ),
        "{err}"
    );
    assert!(!err.contains('\n') && !err.contains(" | "), "{err}");
}

#[test]
fn unknown_key_is_named() {
    let err = Config::parse(
        Path::new("t.toml"),
        &MINIMAL.replace("[wal]", "[wal]\nretain = 3"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown field `retain`"), "{err}");
}

#[test]
fn stuck_after_defaults_to_5m_and_is_bounded() {
    let d = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
    assert_eq!(d.service.stuck_after, Duration::from_secs(300));
    let with = |v: &str| {
        Config::parse(
            Path::new("t.toml"),
            &format!("{MINIMAL}\n[service]\nstuck_after = \"{v}\"\n"),
        )
    };
    assert_eq!(
        with("3s").unwrap().service.stuck_after,
        Duration::from_secs(3)
    );
    for bad in ["500ms", "25h"] {
        let err = with(bad).unwrap_err().to_string();
        assert!(
            err.contains("service.stuck_after") && err.contains("between 1s and 24h"),
            "{err}"
        );
    }
}

#[test]
fn source_url_may_list_several_servers_primary_first() {
    let c = Config::parse(
        Path::new("t.toml"),
        &MINIMAL.replace(
            "url = \"mysql://repl:pw@127.0.0.1:3306\"",
            "url = [\"mysql://repl:pw@db1:3306\", \"mysql://repl:pw@db2:3306\"]",
        ),
    )
    .unwrap();
    assert_eq!(c.source.server_count(), 2);
    assert_eq!(c.source.url, "mysql://repl:pw@db1:3306");
    assert_eq!(c.source.for_server(1).url, "mysql://repl:pw@db2:3306");
    assert_eq!(c.source.for_server(1).server_id, c.source.server_id);
    let single = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
    assert_eq!(single.source.server_count(), 1);
    assert_eq!(single.source.url, "mysql://repl:pw@127.0.0.1:3306");
}

#[test]
fn a_bad_server_list_is_refused_naming_the_entry() {
    let with = |urls: &str| {
        Config::parse(
            Path::new("t.toml"),
            &MINIMAL.replace("url = \"mysql://repl:pw@127.0.0.1:3306\"", urls),
        )
        .unwrap_err()
        .to_string()
    };
    let empty = with("url = []");
    assert!(
        empty.contains("source.url") && empty.contains("empty"),
        "{empty}"
    );
    let twice = with("url = [\"mysql://repl:pw@db1:3306\", \"mysql://other:pw2@DB1:3306\"]");
    assert!(
        twice.contains("entry 2") && twice.contains("same server as entry 1"),
        "{twice}"
    );
    assert!(!twice.contains("pw2"), "password printed: {twice}");
    let bad = with("url = [\"mysql://repl:pw@db1:3306\", \"postgres://x@db2\"]");
    assert!(
        bad.contains("entry 2") && bad.contains("postgres://x"),
        "{bad}"
    );
    let not_a_url = with("url = 5");
    assert!(not_a_url.contains("a list of them"), "{not_a_url}");
}

#[test]
fn a_lease_is_off_by_default_and_refused_without_transactions() {
    let c = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
    assert!(!c.lease.enabled);
    assert_eq!(c.lease.duration, Duration::from_secs(15));
    assert_eq!(c.lease.renew_interval(), Duration::from_secs(5));
    assert!(!c.lease.instance.is_empty(), "the host name by default");
    let c = with_line(
        "lease",
        "enabled = true\nduration = \"3s\"\ninstance = \"relay-1\"",
    )
    .unwrap();
    assert!(c.lease.enabled);
    assert_eq!(c.lease.renew_interval(), Duration::from_secs(1));
    assert_eq!(c.lease.instance, "relay-1");
    let off = MINIMAL.replace("[sink]", "[sink]\ntransactions = \"off\"");
    let err = Config::parse(
        Path::new("t.toml"),
        &format!("{off}\n[lease]\nenabled = true\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`lease.enabled`") && err.contains("sink.transactions = \"off\""),
        "{err}"
    );
    // Off, a lease's keys are still checked, but transactions "off" is fine.
    assert!(Config::parse(
        Path::new("t.toml"),
        &format!("{off}\n[lease]\nduration = \"5s\"\n")
    )
    .is_ok());
    let err = with_line("lease", "enabled = true\ninstance = \" \"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`lease.instance`"), "{err}");
}

#[test]
fn snapshot_keys_default_to_never_and_every_table() {
    let c = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
    assert_eq!(c.source.snapshot, SnapshotMode::Never);
    assert!(c.source.snapshot_tables.is_empty());
    assert_eq!(c.source.snapshot_chunk_rows, 10_000);
    assert_eq!(c.source.snapshot_rows_per_second, 0);
    assert_eq!(c.source.snapshot_bytes_per_second, 0);
    let example = Config::parse(
        Path::new("deploy/sdl.toml"),
        include_str!("../../deploy/sdl.toml"),
    )
    .unwrap();
    assert_eq!(example.source.snapshot, c.source.snapshot);
    assert_eq!(example.source.snapshot_tables, c.source.snapshot_tables);
    assert_eq!(example.source.snapshot_chunk_rows, 10_000);
    assert_eq!(example.source.snapshot_bytes_per_second, 0);
}

#[test]
fn snapshot_keys_are_parsed_and_checked() {
    let c = with_line(
        "source",
        "snapshot = \"initial\"\nsnapshot_tables = [\"app.*\", \"billing.invoices\"]\nsnapshot_chunk_rows = 500\nsnapshot_rows_per_second = 2000\nsnapshot_bytes_per_second = \"4MiB\"",
    )
    .unwrap();
    assert_eq!(c.source.snapshot, SnapshotMode::Initial);
    assert_eq!(c.source.snapshot_tables, ["app.*", "billing.invoices"]);
    let patterns = c.source.snapshot_patterns().unwrap();
    assert!(patterns[0].matches("app", "orders") && !patterns[1].matches("billing", "x"));
    assert_eq!(c.source.snapshot_chunk_rows, 500);
    assert_eq!(c.source.snapshot_rows_per_second, 2000);
    assert_eq!(c.source.snapshot_bytes_per_second, 4 << 20);

    let err = with_line("source", "snapshot = \"always\"")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown variant `always`") && err.contains("initial"),
        "{err}"
    );
    let err = with_line("source", "snapshot = \"Initial\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `Initial`"), "{err}");

    let err = with_line("source", "snapshot_tables = [\"app.*\", \"orders\"]")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("source.snapshot_tables") && err.contains("`orders` is not a table pattern"),
        "{err}"
    );
    for bad in ["snapshot_chunk_rows = 0", "snapshot_chunk_rows = 1000001"] {
        let err = with_line("source", bad).unwrap_err().to_string();
        assert!(
            err.contains("source.snapshot_chunk_rows") && err.contains("between 1 and 1000000"),
            "{err}"
        );
    }
    let err = with_line("source", "snapshot_bytes_per_second = \"lots\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("snapshot_bytes_per_second"), "{err}");
}
