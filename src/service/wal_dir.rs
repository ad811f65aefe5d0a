//! The WAL directory's permissions, checked at `sdl run`'s start before the WAL is opened.
//!
//! Guarantee: sdl never runs on a WAL directory that other users can read, write or enter (the
//! WAL holds row images, and the admin token lives there). A new directory is created 0700 by the
//! WAL itself. An existing one with any group or other permission bit is set to 0700 with a
//! warning when sdl's user may change it (it owns it, or is root); otherwise (another user owns
//! it) start-up is refused with exit code 2, naming the directory, its mode and owner, and the fix.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum WalDirError {
    #[error("wal.dir = {dir} is open to other users (mode {mode:o}, owner uid {owner}) and sdl's user cannot change that ({source}). The WAL holds row images: chown it to the user sdl runs as (`chown -R sdl:sdl {dir}`) or `chmod 700 {dir}` as its owner")]
    Refused {
        dir: String,
        mode: u32,
        owner: u32,
        source: std::io::Error,
    },
    #[error("cannot read the permissions of wal.dir = {dir}: {source}")]
    Unreadable { dir: String, source: std::io::Error },
}

/// Makes an existing WAL directory private (0700). Returns the warning to log when it had to, and
/// nothing for a missing directory (the WAL creates it 0700) or one that is already private.
pub fn make_private(dir: &Path) -> Result<Option<String>, WalDirError> {
    let shown = dir.display().to_string();
    let meta = match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => meta,
        // Missing, or not a directory: the WAL's own open creates it or says what is wrong.
        Ok(_) => return Ok(None),
        // (A parent that is a file: the same, the WAL's open names it.)
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None)
        }
        Err(source) => return Err(WalDirError::Unreadable { dir: shown, source }),
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        Ok(()) => Ok(Some(format!(
            "wal.dir = {shown} was open to other users (mode {mode:o}): set to 0700. The WAL holds row images; whoever could read it may have copied them"
        ))),
        Err(source) => Err(WalDirError::Refused {
            dir: shown,
            mode,
            owner: meta.uid(),
            source,
        }),
    }
}
