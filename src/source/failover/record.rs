//! Which server the WAL's latest records were read from: `followed-server.json` in `wal.dir`.
//!
//! Guarantees: written only when the ingester starts following a server other than the one
//! recorded, before anything read from it is appended to the WAL; written atomically (a temporary
//! file, fsynced, renamed over the old one, the directory fsynced), so a crash leaves the old
//! record or the new one. `since` is the WAL's ingest position when the switch happened: records
//! after it were read from this server, records up to it from earlier ones. The start-up check
//! (`crate::service::identity`) looks binlog file:position landmarks up only on the server they
//! were read from, because file names and offsets are coordinates on one server.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The server the ingester follows, as recorded in `wal.dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowedServer {
    /// Its URL in `source.url`, password redacted (for people; the identity decides).
    pub url: String,
    /// `server_id N` (MariaDB) or `server_uuid U` (MySQL), as the server reports it.
    pub identity: String,
    /// The WAL's ingest position when sdl started following it.
    pub since: String,
}

const FILE: &str = "followed-server.json";

fn path(wal_dir: &Path) -> PathBuf {
    wal_dir.join(FILE)
}

/// The recorded server, `None` when none is recorded (a WAL written with one server in
/// `source.url`, or before this record existed) or the record cannot be read.
pub fn load(wal_dir: &Path) -> Option<FollowedServer> {
    let text = std::fs::read_to_string(path(wal_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Records `server` atomically.
pub fn save(wal_dir: &Path, server: &FollowedServer) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(server).map_err(std::io::Error::other)?;
    let tmp = wal_dir.join(format!("{FILE}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path(wal_dir))?;
    std::fs::File::open(wal_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), None);
        let first = FollowedServer {
            url: "mysql://sdl:***@db1:3306".into(),
            identity: "server_id 1".into(),
            since: "0-1-5".into(),
        };
        save(dir.path(), &first).unwrap();
        assert_eq!(load(dir.path()), Some(first));
        let second = FollowedServer {
            url: "mysql://sdl:***@db2:3306".into(),
            identity: "server_id 2".into(),
            since: "0-1-99".into(),
        };
        save(dir.path(), &second).unwrap();
        assert_eq!(load(dir.path()), Some(second));
        assert!(!dir.path().join(format!("{FILE}.tmp")).exists());
    }
}
