//! The shipped Prometheus alert rules (deploy/prometheus/sdl-alerts.yml) are a loadable rule file:
//! valid YAML in Prometheus's rule-file shape, every rule complete, and every `sdl_*` series an
//! expression reads is one that sdl's `/metrics` actually exports (promtool is not available here,
//! so the shape is checked against Prometheus's documented format).

use std::collections::BTreeSet;

use serde_yaml_ng::Value;

const RULES: &str = include_str!("../../../deploy/prometheus/sdl-alerts.yml");

/// Every series name in sdl's `/metrics` answer, as the admin endpoint renders it.
fn exported_series() -> BTreeSet<String> {
    let text = sdl::telemetry::metrics().render(
        None,
        &sdl::telemetry::IngestState::Starting,
        &sdl::telemetry::BreakerStatus::default(),
        &sdl::telemetry::StuckReport::default(),
    );
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            line.split(['{', ' '])
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The `sdl_...` identifiers in a PromQL expression.
fn sdl_series_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !ident(bytes[i - 1]);
        if starts_word && expr[i..].starts_with("sdl_") {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(expr.len(), |n| i + n);
            names.push(expr[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

fn rules() -> Vec<Value> {
    let file: Value = serde_yaml_ng::from_str(RULES).expect("sdl-alerts.yml is not valid YAML");
    let groups = file["groups"]
        .as_sequence()
        .expect("a rule file has a top-level `groups:` list");
    assert!(!groups.is_empty());
    let mut rules = Vec::new();
    for group in groups {
        assert!(
            group["name"].as_str().is_some_and(|n| !n.is_empty()),
            "every group needs a name: {group:?}"
        );
        rules.extend(
            group["rules"]
                .as_sequence()
                .expect("every group has a `rules:` list")
                .iter()
                .cloned(),
        );
    }
    rules
}

#[test]
fn alert_rules_are_a_loadable_rule_file() {
    let rules = rules();
    assert!(rules.len() >= 5, "only {} rules", rules.len());
    let mut names = BTreeSet::new();
    for rule in &rules {
        let mapping = rule.as_mapping().expect("a rule is a mapping");
        for key in mapping.keys() {
            let key = key.as_str().unwrap_or_default();
            assert!(
                [
                    "alert",
                    "expr",
                    "for",
                    "keep_firing_for",
                    "labels",
                    "annotations"
                ]
                .contains(&key),
                "unknown key `{key}` in {rule:?} (Prometheus refuses the file)"
            );
        }
        let name = rule["alert"].as_str().expect("every rule is an alert");
        assert!(names.insert(name.to_string()), "alert {name} appears twice");
        assert!(
            rule["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
            "{name} has no expr"
        );
        if let Some(duration) = rule.get("for") {
            let duration = duration.as_str().expect("`for` is a duration string");
            assert!(
                duration
                    .trim_end_matches(['s', 'm', 'h', 'd'])
                    .parse::<u32>()
                    .is_ok(),
                "{name}: `for: {duration}` is not a Prometheus duration"
            );
        }
        assert!(
            ["critical", "warning"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{name} needs labels.severity critical or warning"
        );
        for annotation in ["summary", "description"] {
            assert!(
                rule["annotations"][annotation].as_str().is_some(),
                "{name} needs annotations.{annotation}"
            );
        }
    }
}

#[test]
fn alert_rules_read_only_metrics_sdl_exports() {
    let exported = exported_series();
    assert!(
        exported.contains("sdl_wal_unacked_bytes"),
        "the /metrics answer is unexpected: {exported:?}"
    );
    let mut read = 0;
    for rule in rules() {
        let name = rule["alert"].as_str().unwrap().to_string();
        for series in sdl_series_in(rule["expr"].as_str().unwrap()) {
            read += 1;
            assert!(
                exported.contains(&series),
                "alert {name} reads {series}, which sdl's /metrics does not export; it exports {exported:?}"
            );
        }
    }
    assert!(read >= 5, "the rules read only {read} sdl series");
}

#[test]
fn series_names_are_found_in_expressions() {
    assert_eq!(
        sdl_series_in(
            "histogram_quantile(0.99, rate(sdl_batch_commit_seconds_bucket[10m])) > 1 and my_sdl_x == 0 or sdl_breaker_state==2"
        ),
        ["sdl_batch_commit_seconds_bucket", "sdl_breaker_state"]
    );
}
