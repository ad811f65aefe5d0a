//! `sdl snapshot` request files: `<wal.dir>/snapshot-requests/<id>.json`, holding
//! `{"id": "<snapshot id>", "tables": ["db.t", "db.*"], "requested_at": "<RFC 3339 UTC>"}`.
//!
//! Guarantees:
//! - A request appears whole or not at all: it is written to a temporary file (fsynced), linked
//!   to its final name (which fails rather than replaces an existing request), and the directory
//!   is fsynced before [`queue`] returns. A crash leaves at most a temporary file, which
//!   [`pending`] ignores (and the next [`queue`] removes when it is older than a minute).
//! - Ids are unique: two requests queued in the same millisecond, by one process or two, get
//!   different ids (the later one takes the next free millisecond), so neither replaces the other.
//! - [`pending`] lists every request in id (= request time) order, and never skips a damaged one
//!   silently: a file that is not a valid request is an error naming it and the fix, which the
//!   caller logs. Refused requests (`<id>.json.refused`, their reason in
//!   `<id>.json.refused.reason`) and temporary files are not requests.
//! - Run as root (`sudo sdl snapshot`), the directory and files are given to the owner of the
//!   WAL directory, so that the service (user sdl) can read and remove them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::select::new_snapshot_id;
use crate::config::TablePattern;

/// The directory of request files inside `wal.dir`.
pub const REQUESTS_DIR: &str = "snapshot-requests";

/// One queued `sdl snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// The snapshot id (`YYYYMMDDTHHMMSS.mmmZ`), also the file's name.
    pub id: String,
    /// `db.table` patterns (`crate::config::TablePattern`).
    pub tables: Vec<String>,
    /// When it was queued, RFC 3339 UTC.
    pub requested_at: String,
}

/// `<wal_dir>/snapshot-requests`.
pub fn requests_dir(wal_dir: &Path) -> PathBuf {
    wal_dir.join(REQUESTS_DIR)
}

fn request_path(wal_dir: &Path, id: &str) -> PathBuf {
    requests_dir(wal_dir).join(format!("{id}.json"))
}

/// Queues a snapshot of `tables` (patterns, checked here too); returns the request written.
pub fn queue(wal_dir: &Path, tables: &[String]) -> std::io::Result<SnapshotRequest> {
    queue_at(wal_dir, tables, SystemTime::now())
}

/// [`queue`] at the time `now`.
fn queue_at(
    wal_dir: &Path,
    tables: &[String],
    mut now: SystemTime,
) -> std::io::Result<SnapshotRequest> {
    if tables.is_empty() {
        return Err(invalid("a snapshot request needs at least one table"));
    }
    for table in tables {
        TablePattern::parse(table).map_err(invalid)?;
    }
    let dir = requests_dir(wal_dir);
    create_dir_owned(&dir)?;
    remove_stale_temporary_files(&dir);
    loop {
        let request = SnapshotRequest {
            id: new_snapshot_id(now),
            tables: tables.to_vec(),
            requested_at: rfc3339(now),
        };
        let path = request_path(wal_dir, &request.id);
        // A refused request keeps its id.
        if path.exists() || refused_path(&path).exists() {
            now += Duration::from_millis(1);
            continue;
        }
        // Unique to this process and call: two threads may try the same id at once.
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temporary = dir.join(format!(
            ".{}.json.tmp-{}-{call}",
            request.id,
            std::process::id()
        ));
        let written = write_synced(&temporary, &serde_json::to_vec_pretty(&request)?)
            .and_then(|()| give_to_owner_of(&temporary, wal_dir))
            .and_then(|()| std::fs::hard_link(&temporary, &path));
        let _ = std::fs::remove_file(&temporary);
        match written {
            Ok(()) => {
                sync_dir(&dir)?;
                return Ok(request);
            }
            // Another `sdl snapshot` took this millisecond first.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                now += Duration::from_millis(1);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Every queued request, in id order. A file that is not a valid request is an error naming it.
pub fn pending(wal_dir: &Path) -> Result<Vec<SnapshotRequest>, String> {
    let dir = requests_dir(wal_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(format!(
            "cannot list the snapshot requests in {}: {e}. Give the user sdl runs as access to it",
            dir.display()
        ))
        }
    };
    let mut requests = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .filter(|n| !n.starts_with('.'))
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let path = entry.path();
        let damaged = |why: String| {
            format!(
                "the snapshot request {} cannot be used: {why}. Delete it and queue the snapshot again with `sdl snapshot TABLE...`",
                path.display()
            )
        };
        let text = std::fs::read(&path).map_err(|e| damaged(format!("cannot read it: {e}")))?;
        let request: SnapshotRequest = serde_json::from_slice(&text)
            .map_err(|e| damaged(format!("it is not a request's JSON ({e})")))?;
        if request.id != id {
            return Err(damaged(format!(
                "it holds the id {:?}, not its file name's",
                request.id
            )));
        }
        if request.tables.is_empty() {
            return Err(damaged("it names no table".into()));
        }
        for table in &request.tables {
            TablePattern::parse(table).map_err(damaged)?;
        }
        requests.push(request);
    }
    requests.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(requests)
}

/// The request `id` was taken into the snapshot plan (saved in the WAL): its file is removed.
/// Removing one already gone is no error.
pub fn taken(wal_dir: &Path, id: &str) -> std::io::Result<()> {
    match std::fs::remove_file(request_path(wal_dir, id)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(()) => sync_dir(&requests_dir(wal_dir)),
    }
}

/// The request `id` was refused: its file becomes `<id>.json.refused`, with `reason` written
/// beside it in `<id>.json.refused.reason`.
pub fn refused(wal_dir: &Path, id: &str, reason: &str) -> std::io::Result<()> {
    let path = request_path(wal_dir, id);
    let refused = refused_path(&path);
    let mut reason_path = refused.clone().into_os_string();
    reason_path.push(".reason");
    write_synced(Path::new(&reason_path), format!("{reason}\n").as_bytes())?;
    std::fs::rename(&path, &refused)?;
    sync_dir(&requests_dir(wal_dir))
}

fn refused_path(path: &Path) -> PathBuf {
    let mut refused = path.to_path_buf().into_os_string();
    refused.push(".refused");
    PathBuf::from(refused)
}

fn invalid(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message.into())
}

/// RFC 3339 in UTC to the millisecond (`2026-11-27T19:01:02.123Z`).
fn rfc3339(now: SystemTime) -> String {
    super::select::utc_millis_text(now, "-", ":")
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Temporary files a crashed `queue` left (older than a minute: a live one is younger).
fn remove_stale_temporary_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let is_temporary = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with('.') && n.contains(".json.tmp-"));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(60));
        if is_temporary && old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Creates `dir` (and missing parents) private (0700), each given to the owner of the nearest
/// directory that existed before.
fn create_dir_owned(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    if let Some(existing) = dir.ancestors().find(|a| a.exists() && !missing.contains(a)) {
        for created in missing.iter().rev() {
            give_to_owner_of(created, existing)?;
        }
    }
    Ok(())
}

/// Gives `path` to the owner of `owner_of` when they differ (only root may; anyone else creating
/// the file is its owner already, or could not have created it in a private WAL directory).
fn give_to_owner_of(path: &Path, owner_of: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(target), Ok(current)) = (std::fs::metadata(owner_of), std::fs::metadata(path)) else {
        return Ok(());
    };
    if (target.uid(), target.gid()) == (current.uid(), current.gid()) {
        return Ok(());
    }
    match std::os::unix::fs::chown(path, Some(target.uid()), Some(target.gid())) {
        // Not root: the service runs as this user too, or reads the file through its group.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_queued_request_is_pending_until_taken() {
        let wal = tempfile::tempdir().unwrap();
        assert!(pending(wal.path()).unwrap().is_empty());
        let request = queue(wal.path(), &tables(&["app.orders", "billing.*"])).unwrap();
        assert_eq!(request.tables, ["app.orders", "billing.*"]);
        assert!(request.requested_at.ends_with('Z') && request.requested_at.contains('T'));
        let file = requests_dir(wal.path()).join(format!("{}.json", request.id));
        let on_disk: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(on_disk["id"], request.id.as_str());
        assert_eq!(on_disk["tables"][1], "billing.*");
        assert_eq!(pending(wal.path()).unwrap(), std::slice::from_ref(&request));
        taken(wal.path(), &request.id).unwrap();
        assert!(!file.exists());
        assert!(pending(wal.path()).unwrap().is_empty());
        taken(wal.path(), &request.id).unwrap();
    }

    #[test]
    fn requests_queued_in_one_millisecond_get_distinct_ids_in_order() {
        let wal = tempfile::tempdir().unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_806_062_123);
        let first = queue_at(wal.path(), &tables(&["app.a"]), at).unwrap();
        let second = queue_at(wal.path(), &tables(&["app.b"]), at).unwrap();
        assert_eq!(first.id, "20261127T190102.123Z");
        assert_eq!(second.id, "20261127T190102.124Z");
        assert_eq!(pending(wal.path()).unwrap(), [first, second]);
    }

    #[test]
    fn many_requests_queued_at_once_keep_their_order() {
        let wal = tempfile::tempdir().unwrap();
        let queued: Vec<SnapshotRequest> = (0..20)
            .map(|i| queue(wal.path(), &tables(&[&format!("app.t{i}")])).unwrap())
            .collect();
        let listed = pending(wal.path()).unwrap();
        assert_eq!(listed, queued, "every request kept, in queue order");
        let mut ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 20);
    }

    #[test]
    fn requests_queued_by_two_threads_at_once_all_survive() {
        let wal = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let dir = wal.path().to_path_buf();
                std::thread::spawn(move || {
                    (0..10)
                        .map(|i| queue(&dir, &[format!("app.t{t}_{i}")]).unwrap().id)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut ids: Vec<String> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 40);
        assert_eq!(pending(wal.path()).unwrap().len(), 40);
    }

    #[test]
    fn a_damaged_request_is_an_error_naming_the_file() {
        let wal = tempfile::tempdir().unwrap();
        queue(wal.path(), &tables(&["app.orders"])).unwrap();
        let dir = requests_dir(wal.path());
        let bad = dir.join("20260101T000000.000Z.json");
        std::fs::write(&bad, b"{\"id\": \"20260101T000000.000Z\", \"tables\": [").unwrap();
        let err = pending(wal.path()).unwrap_err();
        assert!(err.contains(&bad.display().to_string()), "{err}");
        assert!(err.contains("sdl snapshot TABLE"), "{err}");
        std::fs::write(
            &bad,
            br#"{"id": "20250101T000000.000Z", "tables": ["a.b"], "requested_at": "x"}"#,
        )
        .unwrap();
        let err = pending(wal.path()).unwrap_err();
        assert!(err.contains("not its file name's"), "{err}");
        std::fs::write(
            &bad,
            br#"{"id": "20260101T000000.000Z", "tables": ["nodot"], "requested_at": "x"}"#,
        )
        .unwrap();
        let err = pending(wal.path()).unwrap_err();
        assert!(err.contains("`nodot` is not a table pattern"), "{err}");
        std::fs::remove_file(&bad).unwrap();
        assert_eq!(pending(wal.path()).unwrap().len(), 1);
    }

    #[test]
    fn refused_and_temporary_files_are_not_requests() {
        let wal = tempfile::tempdir().unwrap();
        let first = queue(wal.path(), &tables(&["app.a"])).unwrap();
        let second = queue(wal.path(), &tables(&["app.b"])).unwrap();
        refused(wal.path(), &first.id, "app.a has no primary key").unwrap();
        let dir = requests_dir(wal.path());
        let kept = dir.join(format!("{}.json.refused", first.id));
        assert!(kept.exists());
        let reason =
            std::fs::read_to_string(dir.join(format!("{}.json.refused.reason", first.id))).unwrap();
        assert!(reason.contains("app.a has no primary key"), "{reason}");
        std::fs::write(dir.join(".20260101T000000.000Z.json.tmp-1"), b"{").unwrap();
        assert_eq!(pending(wal.path()).unwrap(), [second]);
    }

    #[test]
    fn a_request_without_tables_or_with_a_bad_pattern_is_not_queued() {
        let wal = tempfile::tempdir().unwrap();
        assert!(queue(wal.path(), &[]).is_err());
        let err = queue(wal.path(), &tables(&["orders"])).unwrap_err();
        assert!(err.to_string().contains("`orders` is not a table pattern"));
        assert!(pending(wal.path()).unwrap().is_empty());
    }

    #[test]
    fn the_directory_is_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let wal = root.path().join("wal");
        queue(&wal, &tables(&["app.a"])).unwrap();
        for dir in [wal.clone(), requests_dir(&wal)] {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
    }
}
