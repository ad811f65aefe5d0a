//! sdl: a durable MySQL/MariaDB → MongoDB change relay (the command line; the stages live in the
//! library, src/lib.rs).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sdl::{messages, redact, service, walcli, ExitCode};

// sdl allocates and frees many small values per row change on two threads at once; jemalloc
// does that with less CPU and returns freed memory to the system (docs/decisions.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "sdl",
    version,
    about = "Durable MySQL/MariaDB to MongoDB change relay"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay: follow the binlog into the WAL and forward the WAL to MongoDB.
    Run {
        /// Path to the TOML configuration (see deploy/sdl.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check both ends (settings, privileges, server id, binlog retention, MongoDB) and print a
    /// pass/fail table with the fix for each failure. Exit 1 on any failure.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Inspect the WAL (works on a stopped service's directory, or through a running service's
    /// admin endpoint).
    Wal {
        #[command(flatten)]
        target: walcli::WalTarget,
        #[command(subcommand)]
        command: walcli::WalCommand,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::Wal { target, command } = cli.command {
        return match walcli::run(target, command) {
            Ok(code) => std::process::ExitCode::from(code),
            Err(error) => {
                eprintln!(
                    "sdl: error: {}",
                    redact::redact_error(&messages::error_chain(&error))
                );
                let usage = error.downcast_ref::<walcli::UsageError>().is_some()
                    || error.downcast_ref::<sdl::config::ConfigError>().is_some();
                std::process::ExitCode::from(if usage {
                    ExitCode::Config
                } else {
                    ExitCode::Failure
                } as u8)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Named so that `top -H` and profilers tell sdl's threads from other tokio programs.
        .thread_name("sdl-worker")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sdl: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(ExitCode::Failure as u8);
        }
    };
    let result = match cli.command {
        Command::Run { config } => runtime.block_on(service::run(&config)),
        Command::Check { config } => runtime.block_on(service::check(&config)),
        Command::Wal { .. } => unreachable!("handled above"),
    };
    // Don't wait for blocking tasks (e.g. a stuck fsync) after the decision to exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err((code, error)) => {
            let message = redact::redact_error(&messages::error_chain(&error));
            if service::logs_are_json() {
                // Every line a log shipper reads stays JSON.
                tracing::error!(exit_code = code as u8, "sdl: error: {message}");
            } else {
                eprintln!("sdl: error: {message}");
            }
            std::process::ExitCode::from(code as u8)
        }
    }
}
