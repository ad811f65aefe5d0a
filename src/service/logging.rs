//! The log: text or JSON lines on stderr (`[log] format`), filtered by `SDL_LOG`.
//!
//! Guarantee: a filter sdl cannot read never silences the log: it logs at info and says why.
//! Once JSON logging is on, the final error goes out as a JSON line too ([`logs_are_json`]).

use tracing::warn;

use crate::config::LogFormat;

/// Set once JSON logging is on: the final error then goes out as a JSON line too.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether log lines are JSON (`[log] format = "json"`, once the config is loaded).
pub fn logs_are_json() -> bool {
    JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The log filter from `SDL_LOG` (default `info`), and a warning when `SDL_LOG` is set to
/// something that is not a filter: a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or
/// `target=level` directives (`info,sdl=debug`). A bare word such as `verbose` would otherwise
/// be read as a module name and quietly turn the log off.
fn log_filter() -> (tracing_subscriber::EnvFilter, Option<String>) {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let Ok(text) = std::env::var("SDL_LOG") else {
        return (tracing_subscriber::EnvFilter::new("info"), None);
    };
    let level_ok = |level: &str| LEVELS.contains(&level.trim().to_ascii_lowercase().as_str());
    let understood = !text.trim().is_empty()
        && text
            .split(',')
            .all(|directive| match directive.split_once('=') {
                Some((target, level)) => !target.trim().is_empty() && level_ok(level),
                None => level_ok(directive),
            });
    match tracing_subscriber::EnvFilter::try_new(&text) {
        Ok(filter) if understood => (filter, None),
        _ => (
            tracing_subscriber::EnvFilter::new("info"),
            Some(format!(
                "SDL_LOG={text:?} is not a log filter: logging at info. Use a level (error, warn, info, debug, trace, off) or directives like \"info,sdl=debug\""
            )),
        ),
    }
}

pub fn init_logging(format: LogFormat) {
    let (filter, filter_warning) = log_filter();
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => {
            JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
            builder.json().try_init()
        }
        LogFormat::Text => builder.try_init(),
    };
    if let Some(warning) = filter_warning {
        warn!(target: "sdl::service", "{warning}");
    }
}
