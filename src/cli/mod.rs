//! The `sdl` command line, defined once: every subcommand and option is declared here with clap,
//! and everything that describes the command line is generated from this one definition at run
//! time: the man pages (`sdl man`), the shell completions (`sdl completions SHELL`) and the
//! version line (`sdl --version`: the release, the git commit it was built from and the WAL
//! record format it reads and writes). A subcommand added here appears in all of them without
//! editing anything else.
//!
//! The commands that need no server are run here too: `sdl init` / `sdl config example` print
//! the commented example configuration (deploy/sdl.toml, embedded at build time so it cannot
//! drift), and `sdl config check FILE` validates a configuration without connecting to anything
//! (exit 0, or exit 2 with the problem and its fix).
//!
//! `sdl snapshot` is [`snapshot`] (it queues a request file the service takes).
//! `sdl wal` is [`wal`] (`sdl wal recover`: `recover.rs`), which reads a stopped service's WAL
//! directly and asks a running one through `admin_client.rs`; both show the WAL through
//! `crate::wal_view`, and `print.rs` writes what it prints. `sdl run` and `sdl check` are the
//! service's (src/main.rs starts them).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::build_info::{GIT_COMMIT, WAL_FORMAT};
use crate::config::Config;
use crate::service::RunError;

mod admin_client;
mod print;
mod recover;
pub mod snapshot;
pub mod wal;

/// The commented example configuration: every key with its default (deploy/sdl.toml).
pub const EXAMPLE_CONFIG: &str = include_str!("../../deploy/sdl.toml");

/// What `sdl --version` prints after the program name, e.g.
/// `0.1.0 (commit 1a2b3c4d5e6f, WAL format 4)`.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (commit {GIT_COMMIT}, WAL format {WAL_FORMAT})",
            env!("CARGO_PKG_VERSION")
        )
    })
}

#[derive(Parser, Debug)]
#[command(
    name = "sdl",
    about = "Durable MySQL/MariaDB to MongoDB change relay",
    long_about = "Durable MySQL/MariaDB to MongoDB change relay: follows the binlog by GTID into a local write-ahead log and writes every committed row change into MongoDB exactly once.\n\nStart with `sdl init > sdl.toml`, edit it, then `sdl config check sdl.toml`, `sdl check --config sdl.toml` and `sdl run --config sdl.toml`. Operations guide: /usr/share/doc/sdl/operations.md (docs/operations.md in the source)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the relay: follow the binlog into the WAL and forward the WAL to MongoDB.
    Run {
        /// Path to the TOML configuration (`sdl init` prints a commented example).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check both ends (settings, privileges, server id, binlog retention, MongoDB) and print a
    /// pass/fail table with the fix for each failure. Exit 1 on any failure.
    Check {
        /// Path to the TOML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Queue a snapshot of the existing rows of TABLE... (`db.table`, or a pattern like `db.*`):
    /// relayed as documents with op "snapshot", for a running service (taken within seconds) or
    /// a stopped one (at the next `sdl run`). The tables are checked on the source first when it
    /// answers: exit 2 naming a table that does not exist or has no primary key.
    Snapshot {
        /// Path to the TOML configuration (its source.url and wal.dir).
        #[arg(long, short, default_value = "/etc/sdl/sdl.toml")]
        config: PathBuf,
        /// The tables: `db.table`, `*` matching any run of characters in either part
        /// (`'app.*'`, `'shop_*.invoices'`: quote them, or the shell may expand the `*`); a name
        /// holding a dot goes in backticks.
        #[arg(value_name = "TABLE", required = true)]
        tables: Vec<String>,
    },
    /// Inspect the WAL (works on a stopped service's directory, or through a running service's
    /// admin endpoint).
    Wal {
        #[command(flatten)]
        target: wal::WalTarget,
        #[command(subcommand)]
        command: wal::WalCommand,
    },
    /// Print the commented example configuration (every key with its default) to edit:
    /// `sdl init > /etc/sdl/sdl.toml`. The same as `sdl config example`.
    Init,
    /// Configuration files, without touching any server: print the example, validate a file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the completion script for SHELL on stdout, e.g.
    /// `sdl completions bash > /etc/bash_completion.d/sdl`.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the sdl(1) man page (roff) on stdout, or with --dir write a page for every command
    /// (sdl.1, sdl-run.1, sdl-wal-stats.1, ...) into DIR.
    Man {
        /// Write every page into this directory (created if missing) instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the commented example configuration (the same as `sdl init`).
    Example,
    /// Validate a configuration file without connecting to any server: syntax, unknown and
    /// missing keys, values, TLS files, password files. Exit 0 when it is valid (warnings are
    /// printed), 2 with the problem and its fix when it is not.
    Check {
        /// The configuration file to validate.
        #[arg(value_name = "FILE", required_unless_present = "config")]
        file: Option<PathBuf>,
        /// The same, given as an option (as for the other commands).
        #[arg(long, short, value_name = "FILE", conflicts_with = "file")]
        config: Option<PathBuf>,
    },
}

/// The whole command line as a clap command, with the version line.
pub fn command() -> clap::Command {
    Cli::command().version(version())
}

/// Parses the process's arguments (exits with clap's message and code 2 on a usage error).
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Writes the man page of every command (the top one and each subcommand, recursively) into
/// `dir`; returns the files written.
pub fn write_man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let before: std::collections::BTreeSet<PathBuf> = man_files(dir)?;
    clap_mangen::generate_to(command(), dir)?;
    Ok(man_files(dir)?.difference(&before).cloned().collect())
}

fn man_files(dir: &Path) -> std::io::Result<std::collections::BTreeSet<PathBuf>> {
    let mut files = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "1") {
            files.insert(path);
        }
    }
    Ok(files)
}

/// The sdl(1) page, in roff.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command()).render(&mut page)?;
    Ok(page)
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(), "sdl", &mut script);
    script
}

/// `sdl config check`: loads and validates `path` as `sdl run` would before connecting (the
/// password files included); prints the verdict and any warnings.
pub fn config_check(path: &Path) -> Result<(), RunError> {
    let config = Config::load(path)?;
    config.source.password()?;
    config.sink.password()?;
    for warning in &config.warnings {
        println!("WARN  {warning}");
    }
    println!(
        "{}: valid (nothing was connected to; `sdl check --config {}` checks both servers)",
        path.display(),
        path.display()
    );
    Ok(())
}

/// Runs the commands that need no server and no async runtime; hands the others back.
pub fn run_offline(command: Command) -> Result<Result<(), RunError>, Box<Command>> {
    let print = |bytes: &[u8]| -> Result<(), RunError> {
        let mut out = std::io::stdout().lock();
        match out.write_all(bytes).and_then(|()| out.flush()) {
            // `sdl init | head` is not an error.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(RunError::failure(
                anyhow::Error::from(e).context("writing to stdout"),
            )),
            _ => Ok(()),
        }
    };
    Ok(match command {
        Command::Init
        | Command::Config {
            command: ConfigCommand::Example,
        } => print(EXAMPLE_CONFIG.as_bytes()),
        Command::Config {
            command: ConfigCommand::Check { file, config },
        } => {
            let path = file.or(config).expect("clap requires FILE or --config");
            config_check(&path)
        }
        Command::Completions { shell } => print(&completions(shell)),
        Command::Man { dir: None } => match man_page() {
            Ok(page) => print(&page),
            Err(e) => Err(RunError::failure(e)),
        },
        Command::Man { dir: Some(dir) } => match write_man_pages(&dir) {
            Ok(files) => {
                for file in files {
                    println!("{}", file.display());
                }
                Ok(())
            }
            Err(e) => Err(RunError::failure(
                anyhow::Error::from(e)
                    .context(format!("writing the man pages into {}", dir.display())),
            )),
        },
        other => return Err(Box::new(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand path in the tree, e.g. `["wal", "stats"]` (clap's `help` left out).
    fn subcommand_paths(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_string());
            out.push(path.clone());
            subcommand_paths(sub, &path, out);
        }
    }

    fn all_paths(cmd: &clap::Command) -> Vec<Vec<String>> {
        let mut paths = Vec::new();
        subcommand_paths(cmd, &[], &mut paths);
        paths
    }

    /// Man pages for `cmd` in a temp dir: file name → text.
    fn man_pages_of(cmd: clap::Command) -> std::collections::BTreeMap<String, String> {
        let dir = tempfile::tempdir().unwrap();
        clap_mangen::generate_to(cmd, dir.path()).unwrap();
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                (
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&path).unwrap(),
                )
            })
            .collect()
    }

    fn completion_of(cmd: &clap::Command, shell: clap_complete::Shell) -> String {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "sdl", &mut script);
        String::from_utf8(script).unwrap()
    }

    /// Asserts that every subcommand of `cmd` has a man page that names it and appears in the
    /// completion script of every shell.
    fn assert_documented(cmd: &clap::Command) {
        let paths = all_paths(cmd);
        assert!(paths.len() > 5, "the tree has only {paths:?}");
        let pages = man_pages_of(cmd.clone());
        assert!(pages.contains_key("sdl.1"), "{:?}", pages.keys());
        for path in &paths {
            let file = format!("sdl-{}.1", path.join("-"));
            let page = pages
                .get(&file)
                .unwrap_or_else(|| panic!("no man page {file} for `sdl {}`", path.join(" ")));
            assert!(
                page.contains(&format!("sdl-{}", path.join("-")).replace('-', "\\-")),
                "{page}"
            );
        }
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
            clap_complete::Shell::Elvish,
            clap_complete::Shell::PowerShell,
        ] {
            let script = completion_of(cmd, shell);
            for path in &paths {
                let leaf = path.last().unwrap();
                let word = |c: char| c.is_alphanumeric() || c == '-' || c == '_';
                let found = script.match_indices(leaf.as_str()).any(|(i, _)| {
                    let before = script[..i].chars().next_back();
                    let after = script[i + leaf.len()..].chars().next();
                    !before.is_some_and(word) && !after.is_some_and(word)
                });
                assert!(found, "{shell:?} completions lack `sdl {}`", path.join(" "));
            }
        }
    }

    #[test]
    fn every_subcommand_has_a_man_page_and_completions() {
        assert_documented(&command());
    }

    #[test]
    fn a_subcommand_added_to_the_cli_is_documented_without_editing_anything() {
        let probe = "zz-probe-command";
        let nested = "zz-probe-nested";
        let extended = command().subcommand(
            clap::Command::new(probe)
                .about("A probe")
                .subcommand(clap::Command::new(nested).about("A nested probe")),
        );
        assert_documented(&extended);
        let pages = man_pages_of(extended);
        assert!(pages.contains_key(&format!("sdl-{probe}-{nested}.1")));
    }

    #[test]
    fn the_version_names_release_commit_and_wal_format() {
        let version = version();
        assert!(version.starts_with(env!("CARGO_PKG_VERSION")), "{version}");
        assert!(
            version.contains(&format!("commit {GIT_COMMIT}")),
            "{version}"
        );
        assert!(
            version.contains(&format!("WAL format {WAL_FORMAT}")),
            "{version}"
        );
        assert!(!GIT_COMMIT.is_empty());
    }

    #[test]
    fn the_embedded_example_is_a_valid_config() {
        Config::parse(Path::new("deploy/sdl.toml"), EXAMPLE_CONFIG).unwrap();
    }
}
