//! The Debian package (`scripts/package`) installs a working relay: the test installs the .deb on
//! this machine with `dpkg -i` (it must run as root; CI is), checks the file list against the CLI
//! (a man page per subcommand) and the package's promises (conffile, modes, the system user), runs
//! the installed `sdl --version`, `sdl config check` and `sdl check` as the service user against
//! throwaway servers, verifies both units with `systemd-analyze verify`, then removes the package
//! (the WAL in /var/lib/sdl stays) and purges it (the WAL goes). It leaves the machine as it
//! found it, even when an assertion fails.
//!
//! Run by `scripts/package --test`, which builds the .deb and passes it as `SDL_TEST_DEB`; ignored
//! in a plain `cargo test` because it installs software on the machine.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use crate::support;
use crate::support::{MariaDb, Mongo};

const INSTANCE: &str = "pkgtest";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        // The installed binary must be found on the ordinary PATH, not on the developer's.
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env_remove("SDL_SOURCE_PASSWORD")
        .env_remove("SDL_SINK_PASSWORD")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn installed() -> bool {
    run("dpkg-query", &["-W", "-f", "${Status}", "sdl"])
        .stdout
        .ends_with(b"installed")
}

/// Purges the package and what the test added, whatever happened; the system user too when the
/// package created it (a purge keeps it, as Debian does).
struct Uninstall {
    user_existed: bool,
}

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/etc/sdl/{INSTANCE}.toml"));
        let _ = run("dpkg", &["--purge", "sdl"]);
        let _ = std::fs::remove_dir("/etc/sdl");
        if !self.user_existed {
            let _ = run("userdel", &["sdl"]);
            let _ = run("groupdel", &["sdl"]);
        }
    }
}

/// Every subcommand path of the CLI, e.g. `["wal", "stats"]`.
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

fn check_file_list(deb: &str) {
    let listing = ok("dpkg-deb", &["--contents", deb]);
    let entry = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" ./{path}")))
            .unwrap_or_else(|| panic!("the package lacks /{path}:\n{listing}"))
            .to_string()
    };
    // mode and owner of an entry (dpkg-deb prints the owner as root/root or 0/0).
    let mode_owner = |path: &str| {
        let line = entry(path);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let owner = fields[1].replace("root", "0");
        (fields[0].to_string(), owner)
    };
    assert_eq!(
        mode_owner("usr/bin/sdl"),
        ("-rwxr-xr-x".into(), "0/0".into())
    );
    for path in [
        "usr/lib/systemd/system/sdl.service",
        "usr/lib/systemd/system/sdl@.service",
        "usr/lib/sysusers.d/sdl.conf",
        "usr/share/bash-completion/completions/sdl",
        "usr/share/zsh/vendor-completions/_sdl",
        "usr/share/fish/vendor_completions.d/sdl.fish",
        "usr/share/doc/sdl/README.md",
        "usr/share/doc/sdl/operations.md",
        "usr/share/doc/sdl/copyright",
        "usr/share/doc/sdl/examples/prometheus/sdl-alerts.yml",
        "usr/share/man/man1/sdl.1.gz",
    ] {
        entry(path);
    }
    for path in subcommand_paths() {
        entry(&format!("usr/share/man/man1/sdl-{}.1.gz", path.join("-")));
    }
    // The example config is a conffile, not readable by every user.
    assert_eq!(
        mode_owner("etc/sdl/sdl.toml"),
        ("-rw-r-----".into(), "0/0".into())
    );
    let conffiles = ok("dpkg-deb", &["--info", deb, "conffiles"]);
    assert!(
        conffiles.lines().any(|l| l.trim() == "/etc/sdl/sdl.toml"),
        "{conffiles}"
    );
}

/// A config for the throwaway servers, as an operator writes it for `sdl@pkgtest`.
fn instance_config(mariadb: &MariaDb, mongo: &Mongo) -> String {
    let example = std::fs::read_to_string("/etc/sdl/sdl.toml").unwrap();
    example
        .replace(
            "url = \"mysql://sdl:CHANGE-ME@127.0.0.1:3306\"",
            &format!("url = \"{}\"", mariadb.sdl_url()),
        )
        .replace(
            "url = \"mongodb://127.0.0.1:27017/?replicaSet=rs0\"",
            &format!("url = \"{}\"", mongo.uri()),
        )
        .replace(
            "database = \"audit\"",
            &format!("database = \"{}\"", mongo.database),
        )
        .replace("name = \"default\"", &format!("name = \"{INSTANCE}\""))
        .replace("/var/lib/sdl/wal", &format!("/var/lib/sdl/{INSTANCE}/wal"))
        .replace(
            "listen = \"127.0.0.1:9187\"",
            &format!("listen = \"127.0.0.1:{}\"", support::free_port()),
        )
}

#[tokio::test]
#[ignore = "installs the .deb on this machine (root): run by `scripts/package --test`, as CI does"]
async fn deb_installs_a_working_relay_and_purges_cleanly() {
    let deb = std::env::var("SDL_TEST_DEB")
        .expect("SDL_TEST_DEB names the .deb to test (scripts/package --test sets it)");
    assert_eq!(
        ok("id", &["-u"]).trim(),
        "0",
        "dpkg -i needs root: run as root"
    );
    assert!(
        !installed(),
        "a package sdl is already installed on this machine: this test would replace and purge it; remove it first (dpkg --purge sdl)"
    );
    check_file_list(&deb);

    let _uninstall = Uninstall {
        user_existed: run("getent", &["passwd", "sdl"]).status.success(),
    };
    ok("dpkg", &["-i", &deb]);
    assert!(installed());

    // A working sdl on PATH, naming the same build as this test's library.
    assert_eq!(ok("sh", &["-c", "command -v sdl"]).trim(), "/usr/bin/sdl");
    assert_eq!(
        ok("sdl", &["--version"]),
        format!("sdl {}\n", sdl::cli::version())
    );

    // The system user, and /etc/sdl readable by it only.
    let passwd = ok("getent", &["passwd", "sdl"]);
    assert!(passwd.contains(":/var/lib/sdl:"), "{passwd}");
    let sdl_gid: u32 = ok("id", &["-g", "sdl"]).trim().parse().unwrap();
    for (path, mode) in [("/etc/sdl", 0o750), ("/etc/sdl/sdl.toml", 0o640)] {
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{path}");
        assert_eq!((meta.uid(), meta.gid()), (0, sdl_gid), "{path}: root:sdl");
    }
    // The installed man page and completions are the ones the binary generates.
    let completion = std::fs::read("/usr/share/bash-completion/completions/sdl").unwrap();
    assert_eq!(completion, run("sdl", &["completions", "bash"]).stdout);

    // Both units verify: the plain one and the template (instantiated as sdl@pkgtest).
    for unit in [
        "/usr/lib/systemd/system/sdl.service",
        "/usr/lib/systemd/system/sdl@.service",
    ] {
        let out = run("systemd-analyze", &["verify", unit]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{unit}:\n{stderr}");
        assert!(!stderr.contains("sdl"), "warnings about {unit}:\n{stderr}");
    }
    let template = std::fs::read_to_string("/usr/lib/systemd/system/sdl@.service").unwrap();
    assert!(template.contains("ExecStart=/usr/bin/sdl run --config /etc/sdl/%i.toml"));
    assert!(template.contains("StateDirectory=sdl/%i"));

    // The packaged example is valid, and readable by the service user.
    ok(
        "runuser",
        &[
            "-u",
            "sdl",
            "--",
            "sdl",
            "config",
            "check",
            "/etc/sdl/sdl.toml",
        ],
    );

    // An instance config against throwaway servers: `sdl check` as the service user passes.
    let mariadb = MariaDb::start().await;
    let mongo = Mongo::start().await;
    let config_path = format!("/etc/sdl/{INSTANCE}.toml");
    std::fs::write(&config_path, instance_config(&mariadb, &mongo)).unwrap();
    ok("chgrp", &["sdl", &config_path]);
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    // What StateDirectory=sdl/%i creates when the unit starts.
    let state = format!("/var/lib/sdl/{INSTANCE}");
    std::fs::create_dir_all(format!("{state}/wal")).unwrap();
    ok("chown", &["-R", "sdl:sdl", &state]);
    ok(
        "runuser",
        &["-u", "sdl", "--", "sdl", "config", "check", &config_path],
    );
    let check = ok(
        "runuser",
        &["-u", "sdl", "--", "sdl", "check", "--config", &config_path],
    );
    assert!(check.contains("PASS") && !check.contains("FAIL"), "{check}");
    std::fs::write(format!("{state}/wal/marker"), "the relay's memory").unwrap();

    // Remove: the binary goes, the WAL and the edited config stay.
    ok("dpkg", &["--remove", "sdl"]);
    assert!(!Path::new("/usr/bin/sdl").exists());
    assert!(
        Path::new(&format!("{state}/wal/marker")).exists(),
        "remove deleted the WAL"
    );
    assert!(
        Path::new("/etc/sdl/sdl.toml").exists(),
        "remove deleted the conffile"
    );

    // Purge: the WAL and the packaged config go; the config the operator added stays.
    ok("dpkg", &["--purge", "sdl"]);
    assert!(
        !Path::new("/var/lib/sdl").exists(),
        "purge kept /var/lib/sdl"
    );
    assert!(!Path::new("/etc/sdl/sdl.toml").exists());
    assert!(Path::new(&config_path).exists());
    assert!(!installed());
}

/// The template unit verifies without installing anything (the test's binary stands in for
/// /usr/bin/sdl), and names the per-source config and state directory.
#[test]
fn template_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/sdl@.service"))
        .unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/sdl run --config /etc/sdl/%i.toml"));
    assert!(unit.contains("StateDirectory=sdl/%i"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sdl@.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/sdl", env!("CARGO_BIN_EXE_sdl")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/setup installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        !stderr.contains("sdl@"),
        "warnings about the unit:\n{stderr}"
    );
}
