//! Opening a WAL: the lock, damaged sled files, a first open cut short, the private directory.

use super::*;

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = temp_dir();
    let _first: Wal<TestRecord> = Wal::open(dir.path()).unwrap();
    let err = match Wal::<TestRecord>::open(dir.path()) {
        Ok(_) => panic!("second open succeeded"),
        Err(e) => e,
    };
    assert!(matches!(err, WalError::Open { .. }), "{err}");
}

#[test]
fn sled_refusing_the_files_or_opening_them_empty_is_a_damaged_wal_naming_the_recover_command() {
    for damage in ["conf", "db"] {
        let dir = temp_dir();
        three_groups(dir.path());
        let file = dir.path().join(damage);
        let mut bytes = std::fs::read(&file).unwrap();
        if damage == "conf" {
            // sled checks its config file's CRC and refuses the database.
            bytes[10] ^= 1;
        } else {
            // sled opens a database whose log is garbled from its start as an empty one.
            for b in bytes.iter_mut().take(4096) {
                *b ^= 0xff;
            }
        }
        std::fs::write(&file, bytes).unwrap();
        let err = open_err(dir.path());
        assert!(matches!(err, WalError::Damaged { .. }), "{damage}: {err}");
        assert!(err.to_string().contains("sdl wal recover"), "{err}");
    }
    // A second sdl on a healthy WAL is a lock, not damage.
    let dir = temp_dir();
    let _first: Wal<TestRecord> = Wal::open(dir.path()).unwrap();
    match Wal::<TestRecord>::open(dir.path()) {
        Err(e) => assert!(e.is_locked(), "{e}"),
        Ok(_) => panic!("a second open succeeded"),
    }
}

/// A process killed during its very first open leaves sled's files but no WAL metadata and no
/// `initialized` marker: the next open starts the WAL anew instead of calling it damaged (which
/// would refuse every start until an operator stepped in).
#[test]
fn a_wal_whose_first_open_was_cut_short_starts_anew() {
    let dir = temp_dir();
    {
        // sled's own files, as sled creates them, without anything sdl writes.
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        db.flush().unwrap();
    }
    assert!(dir.path().join("conf").exists());
    assert!(!dir.path().join(INITIALIZED_MARKER).exists());
    let wal: Wal<TestRecord> = reopen(dir.path()).unwrap();
    assert_eq!(wal.last_seq().unwrap(), 0);
    assert!(wal.ingest_position().unwrap().is_none());
    assert!(dir.path().join(INITIALIZED_MARKER).exists());
    drop(wal);
    // Once initialized, an empty tree is damage again.
    let dir = temp_dir();
    three_groups(dir.path());
    assert!(dir.path().join(INITIALIZED_MARKER).exists());
}

#[test]
fn directory_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    let path = dir.path().join("nested/wal");
    let _wal: Wal<TestRecord> = Wal::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

/// The id names the WAL in MongoDB's offset: two WALs must never share one.
#[test]
fn every_new_wal_gets_its_own_random_id() {
    let dir = temp_dir();
    let ids: std::collections::BTreeSet<String> = (0..8)
        .map(|i| {
            let wal: Wal<TestRecord> = Wal::open(dir.path().join(i.to_string())).unwrap();
            let id = wal.id();
            assert_eq!(id.len(), 32, "{id}");
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            id
        })
        .collect();
    assert_eq!(ids.len(), 8);
}
