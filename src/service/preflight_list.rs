//! Preflight for a `source.url` that lists several servers (`crate::source::failover`): each
//! server's checks, named by its place and URL, and which one sdl would follow.
//!
//! Guarantees: every listed server is checked (none skipped at the first failure); the server
//! to follow is the first that passes every check; a failure of another server is then a
//! warning, since sdl runs without it; with none passing, the failures stand and `sdl run`
//! refuses to start, as with one server.

use std::future::Future;

use super::preflight_check::{Check, Verdict};
use crate::config::SourceConfig;

/// The source's checks for a list (`source.url` with
/// several servers, see `crate::source::failover`) each server's, named by its place and URL,
/// and which one sdl would follow: the first that passes every check. A failure of another
/// server is then a warning (sdl runs without it, and fails over to it only if it is usable by
/// then); with none passing, the failures stand.
pub(super) async fn list_checks<F, Fut>(cfg: &SourceConfig, server_checks: F) -> Vec<Check>
where
    F: Fn(SourceConfig) -> Fut,
    Fut: Future<Output = Vec<Check>>,
{
    let count = cfg.server_count();
    let mut per_server = Vec::new();
    for index in 0..count {
        let server = cfg.for_server(index);
        let label = format!(
            "source {}/{count} ({})",
            index + 1,
            crate::redact::redact_url(&server.url)
        );
        let checks: Vec<Check> = server_checks(server)
            .await
            .into_iter()
            .map(|mut check| {
                check.name = check.name.replacen("source", &label, 1);
                check
            })
            .collect();
        per_server.push((index, label, checks));
    }
    let usable = per_server
        .iter()
        .find(|(_, _, checks)| checks.iter().all(|c| c.verdict != Verdict::Fail))
        .map(|(index, label, _)| (*index, label.clone()));
    let mut all = Vec::new();
    for (_, _, checks) in per_server {
        for mut check in checks {
            if usable.is_some() && check.verdict == Verdict::Fail {
                check.verdict = Verdict::Warn;
                check.detail = format!(
                    "{} (sdl does not follow this server while it fails this check)",
                    check.detail
                );
            }
            all.push(check);
        }
    }
    all.push(match usable {
        Some((index, label)) => Check::pass(
            "source: server to follow",
            format!(
                "{label}, the first of source.url to pass every check{}; at start and after each connection loss sdl also checks that it holds every transaction already relayed",
                if index > 0 { " (the servers before it do not)" } else { "" }
            ),
        ),
        None => Check::new(
            "source: server to follow",
            Verdict::Fail,
            "no server of source.url passes every check",
            "fix the failures above for at least one server (the primary first)",
        ),
    });
    all
}
