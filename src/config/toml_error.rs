//! TOML parse errors as one readable line.

/// A TOML error as one readable line: `line 4, column 9: <what is wrong>`. toml's own text draws
/// the line with a caret under the problem over several lines, which reads as noise once a log
/// puts it on one line; the final error stays one line (the `sdl: error:` line operators grep).
pub(super) fn toml_error_message(text: &str, e: &toml::de::Error) -> String {
    let what = e
        .message()
        .trim()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before.len() - line_start + 1;
            // The line itself names the key, which a value's own error (e.g. a bad byte size)
            // does not.
            let line_text = text[line_start..].lines().next().unwrap_or_default().trim();
            if line_text.is_empty() || line_text.chars().count() > 120 {
                format!("line {line}, column {column}: {what}")
            } else {
                format!("line {line}, column {column}: {what} (the line reads `{line_text}`)")
            }
        }
        None => what,
    }
}
