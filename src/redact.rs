//! Keeps credentials out of logs, errors and the audit store.
//!
//! - Every URL sdl prints passes through [`redact_url`] (the password becomes `***`).
//! - Every statement text from the binlog passes through [`redact_statement`] where the decoder
//!   reads it, before the WAL: the secret literals of `CREATE USER`, `ALTER USER`, `GRANT`,
//!   `SET PASSWORD`, `CHANGE MASTER`/`CHANGE REPLICATION SOURCE`, `START SLAVE`/`START REPLICA`
//!   and `CREATE`/`ALTER SERVER` become `'<redacted>'`, and everything else stays verbatim. So
//!   neither the WAL on disk, MongoDB, `/status`, `sdl wal show`/`dump` nor the logs ever hold
//!   them. The exact rules are in docs/operations.md ("Secrets in statements").

use std::borrow::Cow;

/// Replaces the password in `scheme://user:password@host...` with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{}:***@{}", &url[..scheme_end], user, &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

/// Redacts any URL-looking word in an error message.
pub fn redact_error(message: &str) -> String {
    message
        .split(' ')
        .map(|word| {
            if word.contains("://") {
                redact_url(word)
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a secret literal in a statement is replaced with.
pub const REDACTED: &str = "'<redacted>'";

/// `statement` with every secret literal replaced by [`REDACTED`] (see the module documentation
/// and docs/operations.md for the rules); borrowed when there is nothing to redact. Idempotent.
pub fn redact_statement(statement: &str) -> Cow<'_, str> {
    // Every rule involves one of these words; most statements (BEGIN, ALTER TABLE, …) have neither.
    let mentions = |word: &str| {
        statement
            .as_bytes()
            .windows(word.len())
            .any(|window| window.eq_ignore_ascii_case(word.as_bytes()))
    };
    if !mentions("identified") && !mentions("password") {
        return Cow::Borrowed(statement);
    }
    let secrets = secret_spans(statement);
    if secrets.is_empty() {
        return Cow::Borrowed(statement);
    }
    let mut redacted = String::with_capacity(statement.len());
    let mut copied = 0;
    for (start, end) in secrets {
        redacted.push_str(&statement[copied..start]);
        redacted.push_str(REDACTED);
        copied = end;
    }
    redacted.push_str(&statement[copied..]);
    Cow::Owned(redacted)
}

/// A significant token of a statement (comments and whitespace are skipped).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Token<'a> {
    /// A keyword or unquoted identifier, upper-cased for comparison by the caller.
    Word(&'a str),
    /// A string literal (`'…'`, `"…"`, with an optional `_charset`/`N`/`X`/`B` introducer) or a
    /// hexadecimal/binary number (`0x…`, `0b…`): the literals a secret can be written as.
    Literal,
    /// Any other single character: `(`, `=`, `;`, `@`, …, and quoted identifiers and numbers.
    Other(u8),
}

/// Splits `text` into significant tokens with their byte spans. Comments (`/* */`, `-- `, `#`) are
/// skipped; the content of a versioned comment (`/*!50000 … */`, `/*M!100100 … */`) is code.
fn tokens(text: &str) -> Vec<(Token<'_>, usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    let mut in_versioned_comment = false;
    let is_word_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
    // The end of a quoted run opened at `at` by `quote` (backslash escapes, doubled quotes).
    let quoted_end = |mut at: usize, quote: u8| {
        at += 1;
        while at < bytes.len() {
            match bytes[at] {
                b'\\' if quote != b'`' => at += 2,
                b if b == quote && bytes.get(at + 1) == Some(&quote) => at += 2,
                b if b == quote => return at + 1,
                _ => at += 1,
            }
        }
        bytes.len()
    };
    while at < bytes.len() {
        let b = bytes[at];
        let rest = &bytes[at..];
        if b.is_ascii_whitespace() {
            at += 1;
        } else if rest.starts_with(b"/*!") || rest.starts_with(b"/*M!") {
            at += if rest[2] == b'M' { 4 } else { 3 };
            while at < bytes.len() && bytes[at].is_ascii_digit() {
                at += 1;
            }
            in_versioned_comment = true;
        } else if rest.starts_with(b"*/") && in_versioned_comment {
            at += 2;
            in_versioned_comment = false;
        } else if rest.starts_with(b"/*") {
            at = text[at + 2..]
                .find("*/")
                .map_or(bytes.len(), |end| at + 2 + end + 2);
        } else if b == b'#'
            || (rest.starts_with(b"--") && rest.get(2).is_none_or(|c| c.is_ascii_whitespace()))
        {
            at = text[at..]
                .find('\n')
                .map_or(bytes.len(), |end| at + end + 1);
        } else if b == b'\'' || b == b'"' {
            let end = quoted_end(at, b);
            out.push((Token::Literal, at, end));
            at = end;
        } else if b == b'`' {
            let end = quoted_end(at, b);
            out.push((Token::Other(b'`'), at, end));
            at = end;
        } else if b == b'0' && matches!(rest.get(1), Some(b'x' | b'X' | b'b' | b'B')) {
            let mut end = at + 2;
            while end < bytes.len() && bytes[end].is_ascii_alphanumeric() {
                end += 1;
            }
            out.push((Token::Literal, at, end));
            at = end;
        } else if is_word_byte(b) {
            let mut end = at;
            while end < bytes.len() && is_word_byte(bytes[end]) {
                end += 1;
            }
            let word = &text[at..end];
            // An introducer glued to a string: _utf8mb4'x', N'x', X'ab', B'01'.
            let introducer =
                word.starts_with('_') || matches!(word, "N" | "n" | "X" | "x" | "B" | "b");
            if introducer && matches!(bytes.get(end), Some(b'\'' | b'"')) {
                let literal_end = quoted_end(end, bytes[end]);
                out.push((Token::Literal, at, literal_end));
                at = literal_end;
            } else if b.is_ascii_digit() {
                out.push((Token::Other(b'0'), at, end));
                at = end;
            } else {
                out.push((Token::Word(word), at, end));
                at = end;
            }
        } else {
            out.push((Token::Other(b), at, at + 1));
            at += 1;
        }
    }
    out
}

/// The byte spans of the secret literals in `text`, in order, adjacent literals (which MySQL
/// concatenates into one string) merged into one span.
fn secret_spans(text: &str) -> Vec<(usize, usize)> {
    let tokens = tokens(text);
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let word = |index: usize| match tokens.get(index) {
        Some((Token::Word(w), ..)) => Some(w.to_ascii_uppercase()),
        _ => None,
    };
    let is = |index: Option<usize>, wanted: &[&str]| {
        index
            .and_then(word)
            .is_some_and(|w| wanted.contains(&w.as_str()))
    };
    // Per statement (a text may hold several, in a stored program's body).
    let mut statement_start = true;
    let mut first_word = String::new();
    let mut identified = false;
    let mut set_password = false;
    let mut previous_was_secret = false;
    for (index, &(token, start, end)) in tokens.iter().enumerate() {
        let prev = index.checked_sub(1);
        let before_prev = index.checked_sub(2);
        let prev_is = |c: u8| prev.is_some_and(|p| tokens[p].0 == Token::Other(c));
        let mut secret = false;
        match token {
            Token::Literal => {
                secret = previous_was_secret
                    // IDENTIFIED BY 'x', … AS 'hash', … USING 'x', ALTER USER … REPLACE 'old'
                    || (identified && is(prev, &["BY", "AS", "USING", "REPLACE"]))
                    // PASSWORD('x'), OLD_PASSWORD('x')
                    || (prev_is(b'(') && is(before_prev, &["PASSWORD", "OLD_PASSWORD"]))
                    // BY PASSWORD '*hash', CREATE SERVER … OPTIONS (PASSWORD 'x'),
                    // MASTER_PASSWORD 'x'
                    || is(prev, &["PASSWORD", "MASTER_PASSWORD", "SOURCE_PASSWORD"])
                    // MASTER_PASSWORD = 'x', SOURCE_PASSWORD = 'x'
                    || (prev_is(b'=') && is(before_prev, &["MASTER_PASSWORD", "SOURCE_PASSWORD"]))
                    // START SLAVE … PASSWORD = 'x'
                    || (prev_is(b'=')
                        && is(before_prev, &["PASSWORD"])
                        && matches!(first_word.as_str(), "START" | "CHANGE"))
                    // SET PASSWORD [FOR user] = 'x' … REPLACE 'old'
                    || (set_password && (prev_is(b'=') || is(prev, &["REPLACE"])));
            }
            Token::Word(w) => {
                let upper = w.to_ascii_uppercase();
                if statement_start {
                    first_word = upper.clone();
                } else if first_word == "SET" && upper == "PASSWORD" && is(prev, &["SET"]) {
                    set_password = true;
                }
                if upper == "IDENTIFIED" {
                    identified = true;
                }
                statement_start = matches!(
                    upper.as_str(),
                    "BEGIN" | "THEN" | "ELSE" | "DO" | "LOOP" | "REPEAT"
                );
            }
            Token::Other(b';') => {
                statement_start = true;
                first_word.clear();
                identified = false;
                set_password = false;
            }
            Token::Other(_) => statement_start = false,
        }
        if secret {
            match spans.last_mut() {
                Some(last) if previous_was_secret => last.1 = end,
                _ => spans.push((start, end)),
            }
        }
        previous_was_secret = secret;
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_hidden() {
        assert_eq!(
            redact_url("mysql://repl:s3cret@db:3306/x"),
            "mysql://repl:***@db:3306/x"
        );
        assert_eq!(redact_url("mongodb://h:1/?rs=a"), "mongodb://h:1/?rs=a");
        assert!(!redact_error("bad url mysql://a:pw@h").contains("pw"));
    }
}

#[cfg(test)]
mod statement_tests {
    use super::*;

    /// Each statement form: (statement, the same with its secrets redacted).
    const FORMS: &[(&str, &str)] = &[
        // CREATE USER / ALTER USER, each way of giving a password.
        (
            "CREATE USER 'u1'@'%' IDENTIFIED BY 'S3cret!'",
            "CREATE USER 'u1'@'%' IDENTIFIED BY '<redacted>'",
        ),
        (
            r#"ALTER USER 'u1'@'%' IDENTIFIED BY "Another'Pw""#,
            "ALTER USER 'u1'@'%' IDENTIFIED BY '<redacted>'",
        ),
        (
            "create user u2 identified by password '*94BDCEBE19083CE2A1F959FD02F964C7AF4CFC29'",
            "create user u2 identified by password '<redacted>'",
        ),
        (
            "CREATE USER u5 IDENTIFIED WITH mysql_native_password AS '*94BDCEBE19083CE2A1F959FD02F964C7AF4CFC29'",
            "CREATE USER u5 IDENTIFIED WITH mysql_native_password AS '<redacted>'",
        ),
        (
            "CREATE USER 'u'@'%' IDENTIFIED WITH 'caching_sha2_password' AS 0x244124303035",
            "CREATE USER 'u'@'%' IDENTIFIED WITH 'caching_sha2_password' AS '<redacted>'",
        ),
        (
            "CREATE USER u IDENTIFIED WITH caching_sha2_password BY 'x1'",
            "CREATE USER u IDENTIFIED WITH caching_sha2_password BY '<redacted>'",
        ),
        (
            "CREATE USER u3 IDENTIFIED VIA mysql_native_password USING PASSWORD('viaPw'), u4 IDENTIFIED BY 'pw4'",
            "CREATE USER u3 IDENTIFIED VIA mysql_native_password USING PASSWORD('<redacted>'), u4 IDENTIFIED BY '<redacted>'",
        ),
        (
            "ALTER USER u1 IDENTIFIED VIA mysql_native_password USING PASSWORD('a') OR unix_socket",
            "ALTER USER u1 IDENTIFIED VIA mysql_native_password USING PASSWORD('<redacted>') OR unix_socket",
        ),
        (
            "CREATE USER u IDENTIFIED VIA ed25519 USING 'hash1' OR mysql_native_password USING '*AB'",
            "CREATE USER u IDENTIFIED VIA ed25519 USING '<redacted>' OR mysql_native_password USING '<redacted>'",
        ),
        (
            "ALTER USER u IDENTIFIED BY 'new' REPLACE 'old' RETAIN CURRENT PASSWORD",
            "ALTER USER u IDENTIFIED BY '<redacted>' REPLACE '<redacted>' RETAIN CURRENT PASSWORD",
        ),
        // Escaped quotes, introducers, concatenated literals, comments, mixed case.
        (
            r"CREATE USER /* c */ u7 IDENTIFIED /* x */ BY 'cmt\'pw''q' -- done",
            "CREATE USER /* c */ u7 IDENTIFIED /* x */ BY '<redacted>' -- done",
        ),
        (
            "CrEaTe UsEr u IdEnTiFiEd By _utf8mb4'p' 'w'",
            "CrEaTe UsEr u IdEnTiFiEd By '<redacted>'",
        ),
        (
            "CREATE USER u /*!80000 IDENTIFIED BY 'versioned' */",
            "CREATE USER u /*!80000 IDENTIFIED BY '<redacted>' */",
        ),
        (
            "CREATE USER u IDENTIFIED BY 'x' COMMENT 'kept' ATTRIBUTE '{\"a\": 1}'",
            "CREATE USER u IDENTIFIED BY '<redacted>' COMMENT 'kept' ATTRIBUTE '{\"a\": 1}'",
        ),
        // SET PASSWORD.
        (
            "SET PASSWORD FOR u1 = PASSWORD('setpw1')",
            "SET PASSWORD FOR u1 = PASSWORD('<redacted>')",
        ),
        (
            "SET PASSWORD FOR 'u1'@'%'='*A3F61834D9AE45C2DFC9C4F8D07EC7675086AFB7'",
            "SET PASSWORD FOR 'u1'@'%'='<redacted>'",
        ),
        (
            "set password = 'mine' replace 'old'",
            "set password = '<redacted>' replace '<redacted>'",
        ),
        (
            "SET PASSWORD = OLD_PASSWORD(\"x\")",
            "SET PASSWORD = OLD_PASSWORD('<redacted>')",
        ),
        // GRANT … IDENTIFIED BY.
        (
            "GRANT SELECT ON *.* TO u6 IDENTIFIED BY 'grantpw', u7@'%' IDENTIFIED BY PASSWORD '*AB' WITH GRANT OPTION",
            "GRANT SELECT ON *.* TO u6 IDENTIFIED BY '<redacted>', u7@'%' IDENTIFIED BY PASSWORD '<redacted>' WITH GRANT OPTION",
        ),
        // Replication.
        (
            "CHANGE MASTER TO MASTER_HOST='h', MASTER_USER='r', MASTER_PASSWORD='masterpw', MASTER_PORT=3306",
            "CHANGE MASTER TO MASTER_HOST='h', MASTER_USER='r', MASTER_PASSWORD='<redacted>', MASTER_PORT=3306",
        ),
        (
            "CHANGE REPLICATION SOURCE TO SOURCE_USER = 'r', SOURCE_PASSWORD = \"s\\\"pw\"",
            "CHANGE REPLICATION SOURCE TO SOURCE_USER = 'r', SOURCE_PASSWORD = '<redacted>'",
        ),
        (
            "START REPLICA USER='r' PASSWORD='startpw'",
            "START REPLICA USER='r' PASSWORD='<redacted>'",
        ),
        // Servers (FEDERATED, CONNECT, Spider).
        (
            "CREATE SERVER s1 FOREIGN DATA WRAPPER mysql OPTIONS (HOST 'h', USER 'x', PASSWORD 'serverpw')",
            "CREATE SERVER s1 FOREIGN DATA WRAPPER mysql OPTIONS (HOST 'h', USER 'x', PASSWORD '<redacted>')",
        ),
        (
            "ALTER SERVER s1 OPTIONS (password 'serverpw2')",
            "ALTER SERVER s1 OPTIONS (password '<redacted>')",
        ),
        // Inside a stored program's body.
        (
            "CREATE PROCEDURE p() BEGIN CREATE USER x IDENTIFIED BY 'inproc'; SET PASSWORD FOR x = 'h'; SELECT 1 AS 'kept'; END",
            "CREATE PROCEDURE p() BEGIN CREATE USER x IDENTIFIED BY '<redacted>'; SET PASSWORD FOR x = '<redacted>'; SELECT 1 AS 'kept'; END",
        ),
        // Unterminated (a truncated statement): redacted to the end.
        ("CREATE USER u IDENTIFIED BY 'unterminated", "CREATE USER u IDENTIFIED BY '<redacted>'"),
    ];

    #[test]
    fn each_statement_form_loses_its_secret_and_keeps_the_rest() {
        for (statement, expected) in FORMS {
            let redacted = redact_statement(statement);
            assert_eq!(redacted, *expected, "{statement}");
            assert_eq!(
                redact_statement(&redacted),
                redacted,
                "idempotent: {statement}"
            );
        }
    }

    #[test]
    fn statements_without_secrets_are_left_alone() {
        for statement in [
            "ALTER TABLE t ADD COLUMN password VARCHAR(64) DEFAULT 'x' COMMENT 'password'",
            "CREATE TABLE users (id INT, password_hash CHAR(60))",
            "UPDATE users SET password = 'statement-format DML is not a secret form'",
            "CREATE USER u IDENTIFIED VIA unix_socket",
            "ALTER USER u PASSWORD EXPIRE INTERVAL 90 DAY",
            "CREATE USER u IDENTIFIED BY RANDOM PASSWORD",
            "GRANT SELECT ON db.* TO 'u'@'%'",
            "DROP USER 'identified'@'%'",
            "CREATE VIEW v AS SELECT 'by' AS x",
        ] {
            assert!(
                matches!(redact_statement(statement), Cow::Borrowed(s) if s == statement),
                "{statement} changed to {}",
                redact_statement(statement)
            );
        }
    }
}
