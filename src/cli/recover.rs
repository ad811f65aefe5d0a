//! `sdl wal recover --config FILE`: the way out when the WAL cannot be used (sled refuses its
//! files, or metadata that cannot be rebuilt is damaged).
//!
//! Guarantees:
//! - Nothing is deleted: the WAL directory is renamed aside with a timestamp, never removed.
//! - Nothing is skipped: the new WAL starts at MongoDB's offset for `source.name`, i.e. right after
//!   the last transaction MongoDB holds, and only after the source has shown it can still serve
//!   the binlog from there. Otherwise the command refuses (exit 3 for purged binlogs) and leaves
//!   the WAL directory as it was.
//! - A running sdl (which holds the WAL's lock) is never pulled from under: the command refuses.
//!
//! Records that were in the old WAL and not yet in MongoDB are read again from the binlog by the
//! next `sdl run`; records MongoDB already holds are recognised and not written twice.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sdl_wal::Wal;

use crate::config::Config;
use crate::event::SourceTransaction;
use crate::gtid::ResumePoint;
use crate::sink::MongoSink;
use crate::source;
use crate::ExitCode;

/// Runs the command; returns the process exit code (errors print as `sdl: error: ...`, exit 1).
pub fn run(config_path: &Path) -> anyhow::Result<u8> {
    let config = Config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(recover(&config))
}

async fn recover(config: &Config) -> anyhow::Result<u8> {
    let dir = config.wal.dir.clone();
    if dir.exists() {
        let probe = dir.clone();
        match tokio::task::spawn_blocking(move || Wal::<SourceTransaction>::open(probe)).await? {
            Err(e) if e.is_locked() => bail!(
                "the WAL at {} is in use by a running sdl: stop it first (systemctl stop sdl)",
                dir.display()
            ),
            // Damaged or not, the operator asked for a new WAL; the old one is kept aside.
            _ => {}
        }
    }

    let sink = MongoSink::connect(&config.sink, &config.source.name)
        .await
        .context("reading MongoDB's offset (the new WAL starts there)")?;
    let Some(offset) = sink
        .offset()
        .await
        .context("reading MongoDB's offset")?
        .filter(|o| !o.gtid_position.is_empty())
    else {
        bail!(
            "MongoDB holds no offset for source {:?}, so there is no position known to be complete to resume from; the WAL at {} was left as it is. If nothing was ever relayed (a first start), move the directory aside and start sdl: it begins at source.start. Otherwise set source.start to the GTID position relaying should resume from, move the directory aside and start sdl",
            config.source.name,
            dir.display()
        );
    };

    let (_conn, flavor) = source::connect(&config.source).await.context(
        "connecting to the source to check it still has the binlog from MongoDB's offset",
    )?;
    let resume = ResumePoint::parse(flavor, &offset.gtid_position)
        .with_context(|| format!("MongoDB's offset position {:?}", offset.gtid_position))?;
    if !source::binlog_available(&config.source, &resume.position).await? {
        eprintln!(
            "sdl: error: the source no longer has the binlog from MongoDB's offset (GTID position {}): a new WAL starting there would miss the purged transactions. The WAL at {} was left as it is. Restore the source's binlog files covering that position and run `sdl wal recover` again; or accept the loss and re-seed deliberately: set source.start to a GTID position, move the WAL directory aside and start sdl",
            offset.gtid_position,
            dir.display()
        );
        return Ok(ExitCode::BinlogUnavailable as u8);
    }

    let aside = if dir.exists() {
        let aside = aside_path(&dir);
        std::fs::rename(&dir, &aside).with_context(|| {
            format!(
                "moving the WAL directory {} aside to {}",
                dir.display(),
                aside.display()
            )
        })?;
        Some(aside)
    } else {
        None
    };
    let position = resume.to_string();
    let new_dir = dir.clone();
    let wal = tokio::task::spawn_blocking(move || -> anyhow::Result<Wal<SourceTransaction>> {
        let wal = Wal::open(new_dir)?;
        wal.append(&[], position.as_bytes())?;
        Ok(wal)
    })
    .await?
    .context("creating the new WAL")?;
    if let Some(aside) = &aside {
        println!(
            "moved the WAL directory {} aside to {} (kept; delete it once sdl runs again)",
            dir.display(),
            aside.display()
        );
    }
    println!(
        "new WAL {} in {} starts at MongoDB's offset for source {:?}: GTID position {} (the source still has the binlog from there). Start sdl: it resumes from there, exactly once.",
        wal.id(),
        dir.display(),
        config.source.name,
        resume
    );
    Ok(0)
}

/// `DIR.damaged-YYYYMMDDTHHMMSSZ`, with a counter when that name is taken.
fn aside_path(dir: &Path) -> PathBuf {
    let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "wal".into());
    let mut candidate = dir.with_file_name(format!("{name}.damaged-{stamp}"));
    let mut n = 1;
    while candidate.exists() {
        n += 1;
        candidate = dir.with_file_name(format!("{name}.damaged-{stamp}-{n}"));
    }
    candidate
}
