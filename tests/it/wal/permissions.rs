//! The WAL directory's permissions at `sdl run`'s start: an existing directory open to other
//! users is made private (0700) with a warning when sdl's user may change it, and refused with
//! exit code 2 when another user owns it.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::Relay;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_wal_directory_is_made_private_with_a_warning() {
    let mut relay = Relay::builder().stopped().await;
    std::fs::create_dir(relay.sdl.wal_dir()).unwrap();
    std::fs::set_permissions(relay.sdl.wal_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    relay.sdl.start();
    relay.sdl.wait_following().await;
    assert_eq!(mode(&relay.sdl.wal_dir()), 0o700);
    let logs = relay.sdl.logs();
    assert!(
        logs.contains("WARN") && logs.contains("was open to other users (mode 755): set to 0700"),
        "{logs}"
    );
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

/// sdl runs as `nobody` on a WAL directory root owns and others can read: it cannot make it
/// private, so it refuses to start (before connecting anywhere).
#[test]
fn an_open_wal_directory_of_another_user_is_refused() {
    if !running_as_root() {
        eprintln!("skipped: needs root to run sdl as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.path().join("sdl");
    std::fs::copy(env!("CARGO_BIN_EXE_sdl"), &binary).unwrap();
    let wal = dir.path().join("wal");
    std::fs::create_dir(&wal).unwrap();
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("sdl.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"mysql://u:p@127.0.0.1:1\"\nserver_id = 4242\n[wal]\ndir = \"{}\"\n[sink]\nurl = \"mongodb://127.0.0.1:1\"\n[admin]\nlisten = \"\"\n",
            wal.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(&binary)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "wal.dir = {} is open to other users (mode 755",
            wal.display()
        )) && stderr.contains("chown"),
        "{stderr}"
    );
    assert_eq!(mode(&wal), 0o755, "left as it was");
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
