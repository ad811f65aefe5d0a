//! The config as an operator writes it, through the real binary: every class of duration, size and
//! count outside its documented range stops `sdl run` and `sdl check` with exit code 2 and a
//! message naming the key, the value and the range; byte sizes take units; a password file other
//! users can read is warned about.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::{run_sdl, MariaDb, Mongo, Sdl, SDL_PASSWORD};

/// A config whose servers are never reached: every case here must fail while loading.
fn config_with(dir: &std::path::Path, section: &str, line: &str) -> String {
    let mut sections = [
        ("", String::new()),
        (
            "source",
            "url = \"mysql://u:p@127.0.0.1:1\"\nserver_id = 4242\n".to_string(),
        ),
        ("wal", format!("dir = \"{}\"\n", dir.join("wal").display())),
        ("sink", "url = \"mongodb://127.0.0.1:1\"\n".to_string()),
        ("admin", "listen = \"\"\n".to_string()),
    ];
    let (_, body) = sections.iter_mut().find(|(s, _)| *s == section).unwrap();
    body.push_str(line);
    body.push('\n');
    let text: String = sections
        .iter()
        .map(|(s, body)| {
            if s.is_empty() {
                body.clone()
            } else {
                format!("[{s}]\n{body}\n")
            }
        })
        .collect();
    let path = dir.join("sdl.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn settings_out_of_range_stop_run_and_check_with_exit_2() {
    // (section, line, words the error must contain)
    let cases: &[(&str, &str, &[&str])] = &[
        // The two the issue names: a busy loop and an overflowing deadline.
        (
            "wal",
            "prune_interval = \"0s\"",
            &["`wal.prune_interval`", "0s", "between 100ms and 1h"],
        ),
        (
            "wal",
            "group_commit_delay = \"1000000years\"",
            &[
                "`wal.group_commit_delay`",
                "1000000years",
                "between 0s and 10s",
            ],
        ),
        (
            "wal",
            "group_commit_delay = \"300000000000years\"",
            &[
                "`wal.group_commit_delay`",
                "300000000000years",
                "between 0s and 10s",
            ],
        ),
        // Durations too small, too large, in every section.
        (
            "",
            "shutdown_timeout = \"0s\"",
            &["`shutdown_timeout`", "0s", "between 1s and 1h"],
        ),
        (
            "source",
            "connect_timeout = \"0s\"",
            &["`source.connect_timeout`", "between 100ms and 10m"],
        ),
        (
            "source",
            "heartbeat_interval = \"2h\"",
            &["`source.heartbeat_interval`", "2h", "between 100ms and 1h"],
        ),
        (
            "sink",
            "retry_max_delay = \"100years\"",
            &["`sink.retry_max_delay`", "100years", "between 100ms and 1h"],
        ),
        (
            "sink",
            "staging_ttl = \"0s\"",
            &["`sink.staging_ttl`", "between 1s and 3650days"],
        ),
        (
            "admin",
            "header_read_timeout = \"0s\"",
            &["`admin.header_read_timeout`", "between 100ms and 5m"],
        ),
        // Sizes, with and without units.
        (
            "wal",
            "max_bytes = \"512KiB\"",
            &["`wal.max_bytes`", "524288 bytes", "between 1048576 bytes"],
        ),
        (
            "sink",
            "batch_max_bytes = \"1GB\"",
            &[
                "`sink.batch_max_bytes`",
                "1000000000 bytes",
                "67108864 bytes (64.0 MiB)",
            ],
        ),
        (
            "wal",
            "group_commit_bytes = \"1TiB\"",
            &[
                "`wal.group_commit_bytes`",
                "between 0 bytes and 268435456 bytes",
            ],
        ),
        // Counts.
        (
            "sink",
            "batch_max_documents = 0",
            &["`sink.batch_max_documents`", "between 1 and 100000"],
        ),
        (
            "sink",
            "breaker_failures = 0",
            &["`sink.breaker_failures`", "between 1 and 1000"],
        ),
        (
            "admin",
            "max_connections = 0",
            &["`admin.max_connections`", "between 1 and 1024"],
        ),
        // A size that is not one.
        (
            "wal",
            "max_bytes = \"8 gigs\"",
            &["max_bytes", "not a byte size", "8GiB"],
        ),
    ];
    for (section, line, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = config_with(dir.path(), section, line);
        for command in ["run", "check"] {
            let (code, stderr) = run_sdl(&[command, "--config", &path]);
            assert_eq!(
                code,
                Some(2),
                "sdl {command} with [{section}] {line}: exit code; stderr:\n{stderr}"
            );
            for word in *expected {
                assert!(
                    stderr.contains(word),
                    "sdl {command} with [{section}] {line}: `{word}` missing from:\n{stderr}"
                );
            }
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}

/// Sizes with units run a real service, and a password file every user can read is warned about
/// in `sdl check` and at `sdl run`'s start, as a world-readable config file already was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_with_units_run_and_a_readable_password_file_is_warned_about() {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let mut sdl = Sdl::with_settings(
        &mariadb,
        &mongo,
        "current",
        &[
            ("wal", "max_bytes = \"8GB\""),
            ("wal", "group_commit_bytes = \"512 KiB\""),
            ("sink", "batch_max_bytes = \"4MiB\""),
        ],
    );
    // The password moves from the URL to a file every user can read.
    let password_file = sdl.dir().join("source.password");
    std::fs::write(&password_file, format!("{SDL_PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = std::fs::read_to_string(&sdl.config_path).unwrap();
    let config = config.replace(&format!(":{SDL_PASSWORD}@"), "@").replace(
        "[source]\n",
        &format!(
            "[source]\npassword_file = \"{}\"\n",
            password_file.display()
        ),
    );
    std::fs::write(&sdl.config_path, config).unwrap();
    std::fs::set_permissions(&sdl.config_path, std::fs::Permissions::from_mode(0o600)).unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sdl"))
        .args(["check", "--config", &sdl.config_path.display().to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("WARN  config: source.password_file")
            && stdout.contains("holds a password and is readable by every user"),
        "{stdout}"
    );

    sdl.start();
    sdl.wait_following().await;
    assert!(
        sdl.logs().contains("source.password_file = ")
            && sdl.logs().contains("readable by every user"),
        "{}",
        sdl.logs()
    );
    assert!(sdl.terminate(Duration::from_secs(30)).success());

    // chmod 600: no warning.
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sdl"))
        .args(["check", "--config", &sdl.config_path.display().to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("password_file"), "{stdout}");
}
