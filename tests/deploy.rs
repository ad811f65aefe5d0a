//! The shipped deployment files are valid: the systemd unit passes `systemd-analyze verify`, and
//! the example config parses with every documented key.

mod common;

use std::process::Command;

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/sdl.service"))
        .unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("RestartPreventExitStatus=2 3"));
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sdl.service");
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
        !stderr.contains("sdl.service:"),
        "warnings about the unit:\n{stderr}"
    );
}

#[test]
fn example_config_is_accepted() {
    // `sdl wal stats --config` parses the whole config before it looks at the WAL.
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/sdl.toml")).unwrap();
    let wal = dir.path().join("wal");
    std::fs::create_dir(&wal).unwrap();
    let config = example.replace("/var/lib/sdl/wal", &wal.display().to_string());
    let path = dir.path().join("sdl.toml");
    std::fs::write(&path, config).unwrap();
    let (code, stderr) =
        common::run_sdl(&["wal", "stats", "--config", &path.display().to_string()]);
    assert_eq!(code, Some(0), "{stderr}");
}
