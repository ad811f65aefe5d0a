//! The command line as a user meets it, through the built binary: `sdl --version`, `sdl init` /
//! `sdl config example`, `sdl config check FILE` (valid, invalid, and that it touches no server),
//! `sdl completions SHELL` and `sdl man` (a page for every subcommand of the clap definition).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn sdl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sdl"))
        .args(args)
        .env_remove("SDL_SOURCE_PASSWORD")
        .env_remove("SDL_SINK_PASSWORD")
        .output()
        .expect("run sdl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const EXAMPLE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/sdl.toml");

/// A valid config from the example, with its WAL in `dir` and both servers at `source` / `sink`
/// (host:port).
fn config_in(dir: &Path, source: &str, sink: &str) -> PathBuf {
    let example = std::fs::read_to_string(EXAMPLE_PATH).unwrap();
    let config = example
        .replace("/var/lib/sdl/wal", &dir.join("wal").display().to_string())
        .replace("@127.0.0.1:3306", &format!("@{source}"))
        .replace("mongodb://127.0.0.1:27017", &format!("mongodb://{sink}"));
    assert_ne!(config, example);
    let path = dir.join("sdl.toml");
    std::fs::write(&path, config).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Every subcommand path of the clap definition, e.g. `["wal", "stats"]`.
fn subcommand_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_string());
            out.push(path.clone());
            walk(sub, &path, out);
        }
    }
    let mut paths = Vec::new();
    walk(&sdl::cli::command(), &[], &mut paths);
    paths
}

#[test]
fn version_names_release_commit_and_wal_format() {
    let out = sdl(&["--version"]);
    assert!(out.status.success());
    let line = text(&out.stdout);
    let format = <sdl::event::SourceTransaction as sdl_wal::Record>::FORMAT_VERSION;
    assert!(
        line.starts_with(&format!("sdl {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    assert!(line.contains(&format!("WAL format {format})")), "{line}");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| text(&o.stdout).trim().to_string());
    let expected = std::env::var("SDL_GIT_COMMIT")
        .ok()
        .or(head)
        .unwrap_or_else(|| "unknown".into());
    assert!(line.contains(&format!("commit {expected},")), "{line}");
    // -V says the same.
    assert_eq!(text(&sdl(&["-V"]).stdout), line);
}

#[test]
fn init_and_config_example_print_the_commented_example() {
    let example = std::fs::read_to_string(EXAMPLE_PATH).unwrap();
    for args in [&["init"][..], &["config", "example"]] {
        let out = sdl(args);
        assert!(out.status.success(), "sdl {args:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), example, "sdl {args:?}");
    }
    assert!(example.contains("# "), "the example is commented");
}

#[test]
fn config_check_accepts_a_valid_config_without_touching_any_server() {
    // Both "servers" are listeners of this test: a connection attempt would show up here.
    let source = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = config_in(
        dir.path(),
        &source.local_addr().unwrap().to_string(),
        &sink.local_addr().unwrap().to_string(),
    );
    let path = path.display().to_string();
    for args in [
        &["config", "check", path.as_str()][..],
        &["config", "check", "--config", path.as_str()],
    ] {
        let started = Instant::now();
        let out = sdl(args);
        assert!(
            out.status.success(),
            "sdl {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(text(&out.stdout).contains("valid"), "{}", text(&out.stdout));
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    for listener in [source, sink] {
        listener.set_nonblocking(true).unwrap();
        assert!(
            matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "sdl config check connected to a server"
        );
    }
    // Nothing was created either: the WAL directory is left alone.
    assert!(!dir.path().join("wal").exists());
}

#[test]
fn config_check_rejects_a_bad_config_with_exit_2_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(config_in(dir.path(), "127.0.0.1:3306", "127.0.0.1:27017"))
        .unwrap();
    let cases: [(&str, String, &str); 6] = [
        (
            "unknown key",
            good.replace("[wal]", "[wal]\nretain = 3"),
            "unknown field `retain`",
        ),
        (
            "bad value",
            good.replace("server_id = 4242", "server_id = 0"),
            "source.server_id",
        ),
        (
            "missing required key",
            good.replace("server_id = 4242", ""),
            "server_id",
        ),
        ("not TOML", good.replace("[sink]", "[sink"), "[sink"),
        (
            "bad sink url",
            good.replace("mongodb://127.0.0.1:27017", "http://127.0.0.1:27017"),
            "sink.url",
        ),
        (
            "unreadable password file",
            good.replace(
                "# password_file = \"/etc/sdl/source.password\"",
                &format!(
                    "password_file = \"{}\"",
                    dir.path().join("no-such-password").display()
                ),
            ),
            "source.password_file",
        ),
    ];
    for (case, config, expected) in cases {
        assert_ne!(config, good, "{case}: the edit did not apply");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, config).unwrap();
        let out = sdl(&["config", "check", &path.display().to_string()]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{case}: {stderr}");
        assert!(stderr.contains(expected), "{case}: {stderr}");
    }
    let missing = dir.path().join("missing.toml").display().to_string();
    let out = sdl(&["config", "check", &missing]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&missing),
        "{}",
        text(&out.stderr)
    );
    // A FILE is required.
    assert_eq!(sdl(&["config", "check"]).status.code(), Some(2));
}

#[test]
fn completions_are_printed_for_every_shell() {
    let paths = subcommand_paths();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = sdl(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for path in &paths {
            assert!(
                script.contains(path.last().unwrap().as_str()),
                "{shell} completions lack `sdl {}`",
                path.join(" ")
            );
        }
    }
    let out = sdl(&["completions", "no-such-shell"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_pages_are_written_for_every_subcommand() {
    let out = sdl(&["man"]);
    assert!(out.status.success());
    let page = text(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH sdl 1"),
        "{page}"
    );
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("man1");
    let out = sdl(&["man", "--dir", &target.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let top = std::fs::read_to_string(target.join("sdl.1")).unwrap();
    assert!(top.contains(".TH sdl 1"), "{top}");
    let paths = subcommand_paths();
    assert!(paths.len() > 5);
    for path in paths {
        let file = target.join(format!("sdl-{}.1", path.join("-")));
        let page = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("no page for `sdl {}`: {e}", path.join(" ")));
        // The page names the command, and the parent's page lists it.
        assert!(
            page.contains(&format!("sdl-{}", path.join("-")).replace('-', "\\-")),
            "{page}"
        );
        let parent = if path.len() == 1 {
            "sdl.1".to_string()
        } else {
            format!("sdl-{}.1", path[..path.len() - 1].join("-"))
        };
        let parent_page = std::fs::read_to_string(target.join(parent)).unwrap();
        assert!(
            parent_page.contains(path.last().unwrap().as_str()),
            "the parent page does not list {path:?}"
        );
    }
    // stdout lists the files written.
    assert!(text(&out.stdout).contains("sdl.1"));
}
