//! sdl: a durable MySQL/MariaDB → MongoDB change relay (the command line, defined in
//! src/cli/; the stages live in the library, src/lib.rs).

use sdl::cli::{self, Command};
use sdl::{messages, redact, service, ExitCode};

// sdl allocates and frees many small values per row change on two threads at once; jemalloc
// does that with less CPU and returns freed memory to the system (docs/decisions.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // Fault hooks for tests (`FAILPOINTS`, src/sink/mod.rs): only a test build evaluates them.
    let _failpoints = std::env::var_os("FAILPOINTS").map(|_| fail::FailScenario::setup());
    let command = match cli::run_offline(cli::parse().command) {
        Ok(result) => return exit(result),
        Err(command) => *command,
    };
    if let Command::Wal { target, command } = command {
        return std::process::ExitCode::from(cli::wal::run(target, command));
    }
    if let Command::Snapshot { config, tables } = command {
        return std::process::ExitCode::from(cli::snapshot::run(&config, &tables));
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
    let result = match command {
        Command::Run { config } => runtime.block_on(service::run(&config)),
        Command::Check { config } => runtime.block_on(service::check(&config)),
        _ => unreachable!("the other commands are run by cli::run_offline or above"),
    };
    // Don't wait for blocking tasks (e.g. a stuck fsync) after the decision to exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    exit(result)
}

fn exit(result: Result<(), service::RunError>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(service::RunError { code, error }) => {
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
