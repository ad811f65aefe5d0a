//! An exact parser for JSON text (MariaDB's JSON columns, which are LONGTEXT in the binlog) into
//! the same [`Json`] tree MySQL's binary JSON decodes to.
//!
//! Guarantees: numbers are never rounded (an integer that fits i64 is `Int`, one that fits only
//! u64 is `UInt`, any other number, with a fraction, an exponent, more digits or `-0`, is
//! `Decimal` holding its exact source text); object members keep their source order. Whatever it
//! cannot represent exactly is refused with a reason, never approximated: invalid JSON, duplicate
//! keys in one object (a BSON document cannot hold both), nesting deeper than [`MAX_DEPTH`] (a
//! bound on the parser's recursion; MariaDB's own JSON functions accept 32 levels at most). The
//! caller then keeps the value as its text (docs/decisions.md). Keys are kept exactly, NUL, `$`
//! and `.` included: the change-document writer escapes them, and writes nesting past MongoDB's
//! limit as JSON text (`sink::document::escape_key`, `sink::document::MAX_JSON_DEPTH`).

use std::collections::HashSet;

use crate::event::Json;

/// Deepest nesting parsed (the parser recurses once per level). Deeper text stays text; MariaDB
/// cannot store it in a JSON column (`json_valid` refuses more than 31 levels), so only a column
/// that became JSON after the row was written can hold it.
pub const MAX_DEPTH: usize = 512;

/// Parses `text` as one JSON value (surrounding whitespace allowed).
pub fn parse(text: &str) -> Result<Json, String> {
    let mut parser = Parser {
        bytes: text.as_bytes(),
        text,
        at: 0,
    };
    parser.skip_ws();
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.at != parser.bytes.len() {
        return Err(format!(
            "unexpected text after the value at byte {}",
            parser.at
        ));
    }
    Ok(value)
}

struct Parser<'a> {
    bytes: &'a [u8],
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn error<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.at))
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            self.error("invalid literal")
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        match self.peek() {
            None => self.error("unexpected end of text"),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b'[') => {
                if depth >= MAX_DEPTH {
                    return self.error("nested deeper than 512 levels");
                }
                self.at += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    self.skip_ws();
                    items.push(self.value(depth + 1)?);
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return self.error("expected ',' or ']'"),
                    }
                }
            }
            Some(b'{') => {
                if depth >= MAX_DEPTH {
                    return self.error("nested deeper than 512 levels");
                }
                self.at += 1;
                let mut members = Vec::new();
                let mut seen = HashSet::new();
                self.skip_ws();
                if self.peek() == Some(b'}') {
                    self.at += 1;
                    return Ok(Json::Object(members));
                }
                loop {
                    self.skip_ws();
                    if self.peek() != Some(b'"') {
                        return self.error("expected a string key");
                    }
                    let key = self.string()?;
                    if !seen.insert(key.clone()) {
                        return Err(format!(
                            "duplicate key {key:?} (a BSON document cannot hold both values)"
                        ));
                    }
                    self.skip_ws();
                    if self.peek() != Some(b':') {
                        return self.error("expected ':'");
                    }
                    self.at += 1;
                    self.skip_ws();
                    let value = self.value(depth + 1)?;
                    members.push((key, value));
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Json::Object(members));
                        }
                        _ => return self.error("expected ',' or '}'"),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => self.error("unexpected character"),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let int_start = self.at;
        let int_digits = self.digits();
        if int_digits == 0 || (int_digits > 1 && self.bytes[int_start] == b'0') {
            return self.error("invalid number");
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            integer = false;
            if self.digits() == 0 {
                return self.error("invalid number: no digits after '.'");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return self.error("invalid number: no exponent digits");
            }
        }
        let text = &self.text[start..self.at];
        if integer && text != "-0" {
            if let Ok(i) = text.parse::<i64>() {
                return Ok(Json::Int(i));
            }
            if let Ok(u) = text.parse::<u64>() {
                return Ok(Json::UInt(u));
            }
        }
        Ok(Json::Decimal(text.to_string()))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let Some(hex) = self.text.get(self.at..self.at + 4) else {
            return self.error("truncated \\u escape");
        };
        let code = u32::from_str_radix(hex, 16).or_else(|_| self.error("invalid \\u escape"))?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return self.error("invalid \\u escape");
        }
        self.at += 4;
        Ok(code)
    }

    fn string(&mut self) -> Result<String, String> {
        self.at += 1; // the opening quote
        let mut out = String::new();
        loop {
            let run_start = self.at;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.at += 1;
            }
            out.push_str(&self.text[run_start..self.at]);
            match self.peek() {
                None => return self.error("unterminated string"),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    let Some(escape) = self.peek() else {
                        return self.error("unterminated escape");
                    };
                    self.at += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let first = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&first) {
                                if !self.bytes[self.at..].starts_with(b"\\u") {
                                    return self.error("unpaired surrogate");
                                }
                                self.at += 2;
                                let second = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&second) {
                                    return self.error("unpaired surrogate");
                                }
                                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                            } else {
                                first
                            };
                            match char::from_u32(code) {
                                Some(c) => out.push(c),
                                None => return self.error("unpaired surrogate"),
                            }
                        }
                        _ => return self.error("invalid escape"),
                    }
                }
                Some(_) => return self.error("control character in a string"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_exact() {
        assert_eq!(parse("0").unwrap(), Json::Int(0));
        assert_eq!(parse("-9223372036854775808").unwrap(), Json::Int(i64::MIN));
        assert_eq!(parse("18446744073709551615").unwrap(), Json::UInt(u64::MAX));
        assert_eq!(
            parse("18446744073709551616").unwrap(),
            Json::Decimal("18446744073709551616".into())
        );
        assert_eq!(parse("-0").unwrap(), Json::Decimal("-0".into()));
        assert_eq!(parse("1.50").unwrap(), Json::Decimal("1.50".into()));
        assert_eq!(parse("-1E+400").unwrap(), Json::Decimal("-1E+400".into()));
    }

    #[test]
    fn objects_keep_order_and_refuse_duplicates() {
        assert_eq!(
            parse(r#" {"b": [1, true, null], "a": {"\u00e9\ud83d\ude00": "x\ny"}} "#).unwrap(),
            Json::Object(vec![
                (
                    "b".into(),
                    Json::Array(vec![Json::Int(1), Json::Bool(true), Json::Null])
                ),
                (
                    "a".into(),
                    Json::Object(vec![("é😀".into(), Json::String("x\ny".into()))])
                ),
            ])
        );
        assert!(parse(r#"{"a": 1, "a": 2}"#).is_err());
        // Keys MongoDB cannot take as they are are kept exactly (the document writer escapes them).
        assert_eq!(
            parse(r#"{"a\u0000b": 1, "$set": 2, "a.b": 3, "": 4}"#).unwrap(),
            Json::Object(vec![
                ("a\0b".into(), Json::Int(1)),
                ("$set".into(), Json::Int(2)),
                ("a.b".into(), Json::Int(3)),
                ("".into(), Json::Int(4)),
            ])
        );
    }

    #[test]
    fn invalid_text_is_refused() {
        for bad in [
            "",
            "01",
            "1.",
            "-",
            "[1,]",
            "{\"a\" 1}",
            "\"\\ud800\"",
            "nul",
            "[1] x",
            "\"a\tb\"",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).is_err());
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
    }
}
