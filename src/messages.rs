//! Error text as an operator reads it: one message per failure, no Rust debug forms, no driver
//! dumps.
//!
//! Guarantees: [`tidy`] only shortens or rewrites how a message is *printed* (it keeps every
//! server address and every underlying error text); [`error_chain`] prints each cause of an error
//! once, even when a message already embeds its cause's text. Both are applied where errors leave
//! the process: the final error line, `sdl check`'s table and `/status`'s `last_error`.

use std::fmt::Write;

/// An error and its causes, joined with `: `, leaving out a cause whose text the message before
/// it already contains (many errors embed their source's text *and* expose it as a source, which
/// `{:#}` then prints twice).
pub fn error_chain(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    tidy(&out)
}

/// Rewrites the debug forms that drivers put into their messages:
/// - `Os { code: 11, kind: WouldBlock, message: "Resource temporarily unavailable" }` becomes
///   `Resource temporarily unavailable (os error 11)`;
/// - the MongoDB driver's `Topology: { ... }` dump becomes the list of servers with the error
///   each gave (`127.0.0.1:27017: I/O error: Connection refused (os error 111)`), and its
///   `labels: {}, source: None, server response: None` trailers and `Kind: ` prefixes go;
/// - a phrase repeated back to back (`Input/output error: Input/output error: ...`) is kept once.
pub fn tidy(message: &str) -> String {
    let text = rewrite_os_errors(message);
    let text = rewrite_topology(&text);
    let text = drop_driver_trailers(&text);
    collapse_repeats(&text)
}

fn rewrite_os_errors(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(start) = rest.find("Os { code: ") {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let parsed = (|| {
            let code_end = tail.find(',')?;
            let code = tail["Os { code: ".len()..code_end].trim();
            let message_start = tail.find("message: \"")? + "message: \"".len();
            let message_len = tail[message_start..].find('"')?;
            let text = &tail[message_start..message_start + message_len];
            let close = tail[message_start + message_len..].find('}')?;
            Some((
                format!("{text} (os error {code})"),
                message_start + message_len + close + 1,
            ))
        })();
        match parsed {
            Some((text, used)) => {
                out.push_str(&text);
                rest = &tail[used..];
            }
            None => {
                out.push_str(tail);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// `... No available servers. Topology: { Type: X, Servers: [ { Address: A, Type: T, Error: E,
/// labels: ..., source: None, server response: None }, ... ] }` → `... No available servers
/// (A: E; ...)`.
fn rewrite_topology(message: &str) -> String {
    const MARK: &str = "Topology: {";
    let Some(start) = message.find(MARK) else {
        return message.to_string();
    };
    let open = start + MARK.len() - 1;
    let Some(close) = matching_brace(message, open) else {
        return message.to_string();
    };
    let dump = &message[open..=close];
    let mut servers = Vec::new();
    let mut rest = dump;
    while let Some(at) = rest.find("Address: ") {
        rest = &rest[at + "Address: ".len()..];
        let address = rest
            .split([',', ' '])
            .next()
            .unwrap_or_default()
            .to_string();
        let next = rest.find("Address: ").unwrap_or(rest.len());
        let entry = &rest[..next];
        let state = match entry.find("Error: ") {
            Some(e) => {
                let error = &entry[e + "Error: ".len()..];
                let end = error
                    .find(", labels:")
                    .or_else(|| error.find(" }"))
                    .unwrap_or(error.len());
                error[..end]
                    .trim_start_matches("Kind: ")
                    .trim_end_matches(',')
                    .to_string()
            }
            None => {
                let kind = entry
                    .find("Type: ")
                    .map(|t| {
                        entry[t + "Type: ".len()..]
                            .split([',', ' '])
                            .next()
                            .unwrap_or_default()
                    })
                    .unwrap_or("Unknown");
                format!("type {kind}")
            }
        };
        servers.push(format!("{address}: {state}"));
    }
    let before = message[..start].trim_end().trim_end_matches('.');
    let after = &message[close + 1..];
    let mut out = String::new();
    let _ = write!(out, "{before}");
    if !servers.is_empty() {
        let _ = write!(out, " ({})", servers.join("; "));
    }
    out.push_str(after);
    out
}

fn matching_brace(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

fn drop_driver_trailers(message: &str) -> String {
    let mut text = message.to_string();
    // `labels: {...}` with any content, then `source: None` / `server response: None`.
    while let Some(at) = text.find(", labels: {") {
        let open = at + ", labels: ".len();
        match matching_brace(&text, open) {
            Some(close) => text.replace_range(at..=close, ""),
            None => break,
        }
    }
    for noise in [", source: None", ", server response: None"] {
        text = text.replace(noise, "");
    }
    // The driver's `Kind: ` prefix before its message.
    text = text.replace(": Kind: ", ": ");
    text
}

/// `A: A: rest` → `A: rest`, for any phrase A ending at a `: `.
fn collapse_repeats(message: &str) -> String {
    let parts: Vec<&str> = message.split(": ").collect();
    let mut out: Vec<&str> = Vec::with_capacity(parts.len());
    for part in parts {
        if out.last() != Some(&part) {
            out.push(part);
        }
    }
    out.join(": ")
}

/// Why the WAL could not be opened, told apart: another process holds its lock (an sdl running
/// with this `wal.dir`), or the directory cannot be created or written (with the system's reason).
pub fn wal_open_error(error: &sdl_wal::WalError) -> String {
    let sdl_wal::WalError::Open { dir, source } = error else {
        return tidy(&error.to_string());
    };
    let reason = tidy(&source.to_string());
    let reason = reason.trim_start_matches("IO error: ");
    if reason.contains("could not acquire lock") {
        format!(
            "cannot open the WAL directory {}: it is in use by another sdl process running with this wal.dir (it holds the directory's lock): stop that sdl, or give this one its own wal.dir",
            dir.display()
        )
    } else {
        format!(
            "cannot open the WAL directory {}: {reason}. sdl creates it if missing and writes to it: wal.dir must be a directory (or a path that can be created) writable by the user sdl runs as",
            dir.display()
        )
    }
}

/// `source.start` as written in the config (`current`, `earliest` or the GTID position).
pub fn start_text(start: &crate::config::StartFrom) -> &str {
    match start {
        crate::config::StartFrom::Current => "current",
        crate::config::StartFrom::Earliest => "earliest",
        crate::config::StartFrom::Gtid(position) => position,
    }
}

/// `sink.transactions` as written in the config.
pub fn transactions_text(mode: crate::config::TransactionMode) -> &'static str {
    match mode {
        crate::config::TransactionMode::Auto => "auto",
        crate::config::TransactionMode::On => "on",
        crate::config::TransactionMode::Off => "off",
    }
}

/// `first..=last` of the WAL's records as a sentence part: `records 1 to 306`, or `no records
/// (the next will be 307)`.
pub fn wal_range(first: Option<u64>, last: u64) -> String {
    match first {
        Some(first) if first <= last => format!("records {first} to {last}"),
        _ => format!("no records (the next one will be {})", last + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_error_debug_form_is_rewritten() {
        let text = r#"IO error: could not acquire lock on "/w/db": Os { code: 11, kind: WouldBlock, message: "Resource temporarily unavailable" }. If"#;
        assert_eq!(
            tidy(text),
            r#"IO error: could not acquire lock on "/w/db": Resource temporarily unavailable (os error 11). If"#
        );
    }

    #[test]
    fn mongodb_topology_dump_becomes_the_server_list() {
        let text = r#"cannot reach MongoDB at mongodb://127.0.0.1:2/: Kind: Server selection timeout: No available servers. Topology: { Type: Unknown, Servers: [ { Address: 127.0.0.1:2, Type: Unknown, Error: Kind: I/O error: Connection refused (os error 111), labels: {"RetryableError", "SystemOverloadedError"}, source: None, server response: None } ] }, labels: {}, source: None, server response: None. Check that"#;
        assert_eq!(
            tidy(text),
            "cannot reach MongoDB at mongodb://127.0.0.1:2/: Server selection timeout: No available servers (127.0.0.1:2: I/O error: Connection refused (os error 111)). Check that"
        );
    }

    #[test]
    fn repeated_phrases_are_kept_once() {
        assert_eq!(
            tidy("at x: Input/output error: Input/output error: Connection refused"),
            "at x: Input/output error: Connection refused"
        );
    }

    #[test]
    fn a_cause_embedded_in_its_message_is_printed_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot open: {source}")]
        struct Outer {
            source: std::io::Error,
        }
        let e = anyhow::Error::from(Outer {
            source: std::io::Error::other("disk on fire"),
        })
        .context("starting");
        assert_eq!(error_chain(&e), "starting: cannot open: disk on fire");
    }

    #[test]
    fn wal_ranges_read_as_words() {
        assert_eq!(wal_range(Some(1), 306), "records 1 to 306");
        assert_eq!(wal_range(None, 0), "no records (the next one will be 1)");
    }
}
