//! The check of JSON payloads at append time: one linear pass over the bytes, without
//! allocation and without recursion, that accepts exactly the JSON texts of RFC 8259 (UTF-8,
//! any value at the top, surrounding whitespace allowed) that are
//!
//! - nested at most `max_depth` arrays/objects deep ([`MAX_JSON_DEPTH`] by default), and
//! - free of lone UTF-16 surrogates: every `\uD800`–`\uDBFF` escape is immediately followed by
//!   a `\uDC00`–`\uDFFF` escape, and no `\uDC00`–`\uDFFF` escape stands alone (in keys too).
//!
//! Payloads outside these rules are valid enough for some parsers and fatal for others (a
//! 100,000-deep array overflows recursive parsers; a lone surrogate cannot become a Rust
//! string), so a projection reading them would fault at that event on every replay. The store
//! refuses them in [`crate::Store::append`] instead, as [`crate::Error::InvalidInput`].

use std::fmt;

/// The deepest nesting of arrays and objects accepted by default (see
/// [`crate::Limits::max_json_depth`]): `[[1]]` is 2 levels deep, a scalar 0.
pub const MAX_JSON_DEPTH: usize = 64;

/// The highest depth limit the scan supports; larger limits act as this one. It is also the
/// recursion limit of the `serde_json` parser the store and the server read JSON with.
pub const JSON_DEPTH_CEILING: usize = 128;

/// Why bytes are not an acceptable JSON payload. Offsets are 0-based byte offsets into the
/// payload. The `Display` form is the reason the store reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonProblem {
    /// Arrays/objects nest deeper than `limit`; `offset` is the bracket that went over.
    TooDeep {
        /// The depth limit.
        limit: usize,
        /// Offset of the first `[` or `{` beyond the limit.
        offset: usize,
    },
    /// A `\u` escape of a UTF-16 surrogate that is not half of a high–low pair.
    LoneSurrogate {
        /// The escaped code unit (`0xD800..=0xDFFF`).
        code: u16,
        /// Offset of the escape's backslash.
        offset: usize,
    },
    /// Not JSON text (or not UTF-8).
    Syntax {
        /// What is wrong, e.g. `expected ',' or ']'`.
        problem: &'static str,
        /// Where.
        offset: usize,
    },
}

impl fmt::Display for JsonProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            JsonProblem::TooDeep { limit, offset } => {
                write!(
                    f,
                    "JSON nested deeper than {limit} levels (at byte {offset})"
                )
            }
            JsonProblem::LoneSurrogate { code, offset } => {
                write!(f, "lone surrogate \\u{code:04x} at byte {offset}")
            }
            JsonProblem::Syntax { problem, offset } => {
                write!(f, "not valid JSON: {problem} at byte {offset}")
            }
        }
    }
}

/// Checks that `text` is one JSON value nested at most `max_depth` deep (capped at
/// [`JSON_DEPTH_CEILING`]) with no lone surrogate escapes. Linear in `text.len()`, constant
/// memory, never recursive: any input, however deep, is answered without stack growth.
pub fn check_json(text: &[u8], max_depth: usize) -> Result<(), JsonProblem> {
    let max_depth = max_depth.min(JSON_DEPTH_CEILING);
    let mut s = Scanner { b: text, i: 0 };
    // Bit `d` is set when level `d + 1` is an object (else an array).
    let mut objects: u128 = 0;
    let mut depth = 0usize;
    'value: loop {
        s.skip_ws();
        match s.peek() {
            Some(open @ (b'[' | b'{')) => {
                if depth >= max_depth {
                    return Err(JsonProblem::TooDeep {
                        limit: max_depth,
                        offset: s.i,
                    });
                }
                let object = open == b'{';
                if object {
                    objects |= 1u128 << depth;
                } else {
                    objects &= !(1u128 << depth);
                }
                depth += 1;
                s.i += 1;
                s.skip_ws();
                let close = if object { b'}' } else { b']' };
                if s.peek() == Some(close) {
                    s.i += 1;
                    depth -= 1;
                } else {
                    if object {
                        s.key()?;
                    }
                    continue 'value;
                }
            }
            Some(b'"') => s.string()?,
            Some(b'-' | b'0'..=b'9') => s.number()?,
            Some(b't') => s.literal(b"true")?,
            Some(b'f') => s.literal(b"false")?,
            Some(b'n') => s.literal(b"null")?,
            Some(_) => return Err(s.syntax("expected a value")),
            None => return Err(s.syntax("unexpected end of input")),
        }
        // After a value: close containers until the next element starts, or the end.
        loop {
            s.skip_ws();
            if depth == 0 {
                return match s.peek() {
                    None => Ok(()),
                    Some(_) => Err(s.syntax("trailing characters after the value")),
                };
            }
            let object = objects & (1u128 << (depth - 1)) != 0;
            match s.peek() {
                Some(b',') => {
                    s.i += 1;
                    if object {
                        s.skip_ws();
                        s.key()?;
                    }
                    continue 'value;
                }
                Some(b']') if !object => {
                    s.i += 1;
                    depth -= 1;
                }
                Some(b'}') if object => {
                    s.i += 1;
                    depth -= 1;
                }
                Some(_) if object => return Err(s.syntax("expected ',' or '}'")),
                Some(_) => return Err(s.syntax("expected ',' or ']'")),
                None => return Err(s.syntax("unexpected end of input")),
            }
        }
    }
}

/// Bytes that end a run of plain string content: `"`, `\` and the control characters.
static STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `word` is a [`STRING_STOP`] byte. The classic "has a zero byte" bit
/// trick: it never misses one, and reports none when there is none (its false positives only
/// occur above a true one), so a `true` merely sends the caller to the byte-wise loop.
fn has_string_stop(word: u64) -> bool {
    let zero_byte = |v: u64| v.wrapping_sub(LOW_BITS) & !v & HIGH_BITS;
    let below_space = word.wrapping_sub(LOW_BITS * 0x20) & !word & HIGH_BITS;
    (zero_byte(word ^ (LOW_BITS * u64::from(b'"')))
        | zero_byte(word ^ (LOW_BITS * u64::from(b'\\')))
        | below_space)
        != 0
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn syntax(&self, problem: &'static str) -> JsonProblem {
        self.syntax_at(problem, self.i)
    }

    fn syntax_at(&self, problem: &'static str, offset: usize) -> JsonProblem {
        JsonProblem::Syntax { problem, offset }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// An object key and its `:` (whitespace before the key already skipped).
    fn key(&mut self) -> Result<(), JsonProblem> {
        if self.peek() != Some(b'"') {
            return Err(self.syntax("expected a string key"));
        }
        self.string()?;
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(self.syntax("expected ':'"));
        }
        self.i += 1;
        Ok(())
    }

    /// A string, from its opening quote.
    fn string(&mut self) -> Result<(), JsonProblem> {
        self.i += 1;
        loop {
            let start = self.i;
            // The bytes of the run OR-ed together: any high bit means non-ASCII to validate.
            let mut high_bits = 0u64;
            // Eight bytes at a time while none of them ends the run.
            while let Some(chunk) = self.b.get(self.i..self.i + 8) {
                let Ok(word) = <[u8; 8]>::try_from(chunk) else {
                    break;
                };
                let word = u64::from_le_bytes(word);
                if has_string_stop(word) {
                    break;
                }
                high_bits |= word;
                self.i += 8;
            }
            while let Some(&c) = self.b.get(self.i) {
                if STRING_STOP[usize::from(c)] {
                    break;
                }
                high_bits |= u64::from(c);
                self.i += 1;
            }
            // Runs end at ASCII bytes, which never occur inside a multi-byte sequence, so
            // validating run by run validates the whole string.
            if high_bits & HIGH_BITS != 0 {
                if let Err(e) = std::str::from_utf8(&self.b[start..self.i]) {
                    return Err(self.syntax_at("invalid UTF-8", start + e.valid_up_to()));
                }
            }
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => self.escape()?,
                Some(_) => return Err(self.syntax("control character in a string")),
                None => return Err(self.syntax("unterminated string")),
            }
        }
    }

    /// An escape, from its backslash.
    fn escape(&mut self) -> Result<(), JsonProblem> {
        let at = self.i;
        match self.b.get(at + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.i += 2;
                Ok(())
            }
            Some(b'u') => {
                let code = self.hex4(at)?;
                self.i = at + 6;
                match code {
                    0xD800..=0xDBFF => {
                        let low = if self.b.get(self.i..self.i + 2) == Some(b"\\u") {
                            Some(self.hex4(self.i)?)
                        } else {
                            None
                        };
                        match low {
                            Some(0xDC00..=0xDFFF) => {
                                self.i += 6;
                                Ok(())
                            }
                            _ => Err(JsonProblem::LoneSurrogate { code, offset: at }),
                        }
                    }
                    0xDC00..=0xDFFF => Err(JsonProblem::LoneSurrogate { code, offset: at }),
                    _ => Ok(()),
                }
            }
            Some(_) => Err(self.syntax_at("invalid escape", at)),
            None => Err(self.syntax_at("unterminated string", at + 1)),
        }
    }

    /// The code unit of the `\uXXXX` escape whose backslash is at `at`.
    fn hex4(&self, at: usize) -> Result<u16, JsonProblem> {
        let digits = self
            .b
            .get(at + 2..at + 6)
            .ok_or_else(|| self.syntax_at("invalid \\u escape", at))?;
        let mut code = 0u16;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(self.syntax_at("invalid \\u escape", at)),
            };
            code = code << 4 | u16::from(v);
        }
        Ok(code)
    }

    /// A number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Result<(), JsonProblem> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.syntax_at("invalid number", start)),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax_at("invalid number", start));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax_at("invalid number", start));
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), JsonProblem> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.syntax("expected a value"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;
    use serde_json::Value;

    fn check(text: &str) -> Result<(), JsonProblem> {
        check_json(text.as_bytes(), MAX_JSON_DEPTH)
    }

    fn arrays(depth: usize) -> String {
        "[".repeat(depth) + &"]".repeat(depth)
    }

    /// `{"a":{"a":...{"a":1}...}}`, `depth` objects.
    fn objects(depth: usize) -> String {
        r#"{"a":"#.repeat(depth) + "1" + &"}".repeat(depth)
    }

    #[test]
    fn the_word_test_finds_every_stop_byte() {
        for stop in (0u8..0x20).chain([b'"', b'\\']) {
            for at in 0..8 {
                for fill in [b'a', 0x7f, 0x80, 0xff, b' ', b'!', b'#', b'[', b']'] {
                    let mut word = [fill; 8];
                    word[at] = stop;
                    assert!(has_string_stop(u64::from_le_bytes(word)), "{word:?}");
                }
            }
        }
        for fill in (0x20u8..=0xff).filter(|&c| c != b'"' && c != b'\\') {
            assert!(!has_string_stop(u64::from_le_bytes([fill; 8])), "{fill}");
            let mixed = [fill, b'a', 0xff, b' ', 0x80, b'~', fill, 0x7f];
            assert!(!has_string_stop(u64::from_le_bytes(mixed)), "{mixed:?}");
        }
    }

    #[test]
    fn long_strings_are_checked_at_every_offset() {
        for at in 1..30 {
            let text = |b: u8| {
                let mut t = vec![b'"'];
                t.extend(b"abcdefghijklmnopqrstuvwxyz012345");
                t[at] = b;
                t.push(b'"');
                t
            };
            let problem = |problem, offset| Err(JsonProblem::Syntax { problem, offset });
            assert_eq!(
                check_json(&text(0x1f), 64),
                problem("control character in a string", at)
            );
            assert_eq!(check_json(&text(0xff), 64), problem("invalid UTF-8", at));
            assert_eq!(
                check_json(&text(b'"'), 64),
                problem("trailing characters after the value", at + 1)
            );
        }
    }

    #[test]
    fn depth_at_the_limit_passes_one_more_fails() {
        assert_eq!(check(&arrays(64)), Ok(()));
        assert_eq!(check(&objects(64)), Ok(()));
        assert_eq!(
            check(&arrays(65)),
            Err(JsonProblem::TooDeep {
                limit: 64,
                offset: 64
            })
        );
        assert_eq!(
            check(&objects(65)),
            Err(JsonProblem::TooDeep {
                limit: 64,
                offset: 64 * 5
            })
        );
        // Mixed, with whitespace and siblings: depth is nesting, not the count of brackets.
        let mixed = format!("[ {{\"k\": {} }}, [], {{}}, 1 ]", arrays(62));
        assert_eq!(check(&mixed), Ok(()));
        let siblings = format!("[{}]", vec![arrays(63); 100].join(","));
        assert_eq!(check(&siblings), Ok(()));
        // Another limit, and the ceiling.
        assert_eq!(check_json(arrays(3).as_bytes(), 3), Ok(()));
        assert!(check_json(arrays(4).as_bytes(), 3).is_err());
        assert_eq!(check_json(b"7", 0), Ok(()));
        assert!(check_json(b"[]", 0).is_err());
        assert_eq!(
            check_json(arrays(129).as_bytes(), usize::MAX),
            Err(JsonProblem::TooDeep {
                limit: JSON_DEPTH_CEILING,
                offset: 128
            })
        );
        assert_eq!(check_json(arrays(128).as_bytes(), usize::MAX), Ok(()));
    }

    #[test]
    fn very_deep_nesting_fails_at_the_limit_without_recursion() {
        // Runs on a small stack: the scan must not grow it with the depth.
        let deep = arrays(100_000);
        let half_open = "[".repeat(1_000_000);
        let handle = std::thread::Builder::new()
            .stack_size(32 << 10)
            .spawn(move || (check(&deep), check(&half_open)))
            .unwrap();
        let (deep, half_open) = handle.join().unwrap();
        let too_deep = Err(JsonProblem::TooDeep {
            limit: 64,
            offset: 64,
        });
        assert_eq!(deep, too_deep);
        assert_eq!(half_open, too_deep);
        assert_eq!(
            check(&objects(100_000)).unwrap_err().to_string(),
            "JSON nested deeper than 64 levels (at byte 320)"
        );
    }

    #[test]
    fn surrogate_pairs_pass_lone_surrogates_fail() {
        assert_eq!(check(r#""\ud83d\ude00""#), Ok(()));
        assert_eq!(check(r#""\uD83D\uDE00 and \uDBFF\uDFFF""#), Ok(()));
        assert_eq!(check(r#"{"\ud800\udc00": "\ud7ff\ue000"}"#), Ok(()));
        let lone = |code, offset| Err(JsonProblem::LoneSurrogate { code, offset });
        assert_eq!(check(r#""\ud800""#), lone(0xd800, 1));
        assert_eq!(check(r#""ab\udbff""#), lone(0xdbff, 3));
        assert_eq!(check(r#""\udc00""#), lone(0xdc00, 1));
        assert_eq!(check(r#""\uDFFF\uD800""#), lone(0xdfff, 1));
        // High then not-low: the high one is alone (a second high, an ordinary escape, text).
        assert_eq!(check(r#""\ud800\ud800\udc00""#), lone(0xd800, 1));
        assert_eq!(check(r#""\ud800\u0041""#), lone(0xd800, 1));
        assert_eq!(check(r#""\ud800\n""#), lone(0xd800, 1));
        assert_eq!(check(r#""\ud800x\udc00""#), lone(0xd800, 1));
        // In keys too.
        assert_eq!(check(r#"{"ok": 1, "k\udc01": 2}"#), lone(0xdc01, 12));
        assert_eq!(check(r#"[{"\ud800": 1}]"#), lone(0xd800, 3));
        // The message.
        assert_eq!(
            check(r#"{"name": "abc", "\ud800": 1}"#)
                .unwrap_err()
                .to_string(),
            r"lone surrogate \ud800 at byte 17"
        );
    }

    #[test]
    fn escaped_backslashes_are_not_escapes() {
        // `\\ud800` is a backslash followed by the text `ud800`.
        assert_eq!(check(r#""\\ud800""#), Ok(()));
        assert_eq!(check(r#"{"\\udc00": "\\\\\ud83d\ude00"}"#), Ok(()));
        assert_eq!(check(r#"["\\", "\"", "\/\b\f\n\r\t"]"#), Ok(()));
        assert!(check(r#""\\\ud800""#).is_err());
    }

    #[test]
    fn invalid_json_fails_with_a_position() {
        let bad: &[(&[u8], &str, usize)] = &[
            (b"", "unexpected end of input", 0),
            (b"   ", "unexpected end of input", 3),
            (b"nope", "expected a value", 0),
            (b"tru", "expected a value", 0),
            (b"[1,]", "expected a value", 3),
            (b"[1 2]", "expected ',' or ']'", 3),
            (b"[1}", "expected ',' or ']'", 2),
            (b"{\"a\":1]", "expected ',' or '}'", 6),
            (b"{\"a\" 1}", "expected ':'", 5),
            (b"{\"a\":1,}", "expected a string key", 7),
            (b"{1:2}", "expected a string key", 1),
            (b"[1", "unexpected end of input", 2),
            (b"{\"a\":", "unexpected end of input", 5),
            (b"1 2", "trailing characters after the value", 2),
            (b"{}}", "trailing characters after the value", 2),
            (b"01", "trailing characters after the value", 1),
            (b"-", "invalid number", 0),
            (b"1.", "invalid number", 0),
            (b"[.5]", "expected a value", 1),
            (b"1e+", "invalid number", 0),
            (b"+1", "expected a value", 0),
            (b"\"abc", "unterminated string", 4),
            (b"\"ab\\", "unterminated string", 4),
            (b"\"a\nb\"", "control character in a string", 2),
            (b"\"\\x\"", "invalid escape", 1),
            (b"\"\\u12\"", "invalid \\u escape", 1),
            (b"\"\\u12", "invalid \\u escape", 1),
            (b"\"\xff\"", "invalid UTF-8", 1),
            (b"\"ok \xc3\"", "invalid UTF-8", 4),
            (b"\"\xed\xa0\x80\"", "invalid UTF-8", 1), // a raw (CESU-8) surrogate
            (b"\xef\xbb\xbf{}", "expected a value", 0), // a byte-order mark
            (b"NaN", "expected a value", 0),
            (b"[1,\x00]", "expected a value", 3),
        ];
        for &(text, problem, offset) in bad {
            assert_eq!(
                check_json(text, MAX_JSON_DEPTH),
                Err(JsonProblem::Syntax { problem, offset }),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(
            check("[1 2]").unwrap_err().to_string(),
            "not valid JSON: expected ',' or ']' at byte 3"
        );
    }

    #[test]
    fn valid_json_passes() {
        for text in [
            "0",
            "-0",
            "-0.0e-0",
            "12345678901234567890123",
            "1E400",
            "3.25E+10",
            "true",
            "false",
            "null",
            r#""""#,
            "\"caf\u{e9} \u{1f600} \u{7f}\"",
            " \t\r\n[ ] \n",
            "{}",
            r#"{"a": [1, {"b": null}], "": "", "a": 2}"#,
            r#"[true,false,null,"x",-1.5,{"k":[[]]}]"#,
        ] {
            assert_eq!(check(text), Ok(()), "{text}");
        }
    }

    /// Not a check: prints the scan's cost in ns/byte, with serde_json's for comparison. Run
    /// with `cargo test --release -p strata-store --lib json_check::tests::cost -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore = "a measurement; run in release"]
    fn cost() {
        fn item(i: usize) -> String {
            format!(
                r#"{{"sku":"SKU-{i:05}","name":"Widget \u00e9 {i}","qty":{},"price":{}.99,"tags":["a","b"],"ok":true}}"#,
                i % 7 + 1,
                i % 100
            )
        }
        let small = {
            let mut s = format!(
                r#"{{"order":"order-42","customer":{{"id":1234,"name":"Ada"}},"items":[{}],"note":""#,
                item(1)
            );
            while s.len() < 254 {
                s.push('x');
            }
            s + "\"}"
        };
        let large = {
            let mut items = Vec::new();
            let mut len = 0;
            while len < (64 << 10) - 200 {
                let it = item(items.len());
                len += it.len() + 1;
                items.push(it);
            }
            let mut s = format!(r#"{{"items":[{}],"pad":""#, items.join(","));
            while s.len() < (64 << 10) - 2 {
                s.push('y');
            }
            s + "\"}"
        };
        let text = format!("\"{}\"", "caf\u{e9} \u{1f600} text ".repeat(3000));
        for (name, payload) in [("256 B", &small), ("64 KiB", &large), ("text", &text)] {
            let bytes = payload.as_bytes();
            assert_eq!(check_json(bytes, MAX_JSON_DEPTH), Ok(()), "{name}");
            let time = |f: &dyn Fn()| {
                let start = std::time::Instant::now();
                let mut n = 0u64;
                while start.elapsed() < std::time::Duration::from_millis(300) {
                    for _ in 0..64 {
                        f();
                    }
                    n += 64;
                }
                start.elapsed().as_nanos() as f64 / (n as f64 * bytes.len() as f64)
            };
            let scan = time(&|| {
                let _ = std::hint::black_box(check_json(std::hint::black_box(bytes), 64));
            });
            let ignored = time(&|| {
                let _ = std::hint::black_box(serde_json::from_slice::<serde::de::IgnoredAny>(
                    std::hint::black_box(bytes),
                ));
            });
            let value = time(&|| {
                let _ = std::hint::black_box(serde_json::from_slice::<Value>(
                    std::hint::black_box(bytes),
                ));
            });
            eprintln!(
                "{name} ({} bytes): check_json {scan:.3} ns/byte; serde_json IgnoredAny \
                 {ignored:.3}, Value {value:.3}",
                bytes.len()
            );
        }
    }

    /// The depth of a parsed value (a scalar is 0).
    fn depth(v: &Value) -> usize {
        match v {
            Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from), // non-finite becomes null
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(8, 128, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// JSON's structural bytes, escapes (paired and lone surrogates) and odd bytes.
    fn piece() -> impl Strategy<Value = &'static [u8]> {
        let pieces: Vec<&'static [u8]> = vec![
            b"[",
            b"]",
            b"{",
            b"}",
            b",",
            b":",
            b"\"",
            b"\"",
            b"\"k\"",
            b" ",
            b"\n",
            b"0",
            b"1",
            b"-",
            b".",
            b"e",
            b"+",
            b"true",
            b"null",
            b"\\",
            b"\\u",
            b"\\ud800",
            b"\\udc00",
            b"\\ud83d\\ude00",
            b"\\n",
            b"\\\\",
            b"d",
            b"8",
            b"\xc3\xa9",
            b"\xff",
            b"\x01",
            b"a",
        ];
        prop::sample::select(pieces)
    }

    /// Texts that are JSON, nearly JSON or not at all: random pieces, or a serialised value with
    /// up to three pieces inserted or bytes removed.
    fn jsonish() -> impl Strategy<Value = Vec<u8>> {
        let random = prop::collection::vec(piece(), 0..40).prop_map(|p| p.concat());
        let edit = (any::<usize>(), piece(), any::<bool>());
        let mutated = (value(), prop::collection::vec(edit, 0..4)).prop_map(|(v, edits)| {
            let mut text = serde_json::to_vec(&v).unwrap();
            for (at, piece, insert) in edits {
                let at = at % (text.len() + 1);
                if insert {
                    text.splice(at..at, piece.iter().copied());
                } else if at < text.len() {
                    text.remove(at);
                }
            }
            text
        });
        prop_oneof![random, mutated]
    }

    proptest! {
        #[test]
        fn serialised_values_pass(v in value()) {
            prop_assume!(depth(&v) <= MAX_JSON_DEPTH);
            let compact = serde_json::to_vec(&v).unwrap();
            prop_assert_eq!(check_json(&compact, MAX_JSON_DEPTH), Ok(()));
            let pretty = serde_json::to_vec_pretty(&v).unwrap();
            prop_assert_eq!(check_json(&pretty, MAX_JSON_DEPTH), Ok(()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256),
                                       max_depth in 0usize..200) {
            let _ = check_json(&bytes, max_depth);
        }

        /// Agrees with serde_json, which refuses lone surrogates when it builds strings: what
        /// the scan accepts parses, and what parses within the depth limit is accepted.
        #[test]
        fn agrees_with_serde_json(text in jsonish(), max_depth in 0usize..10) {
            let ours = check_json(&text, max_depth);
            match serde_json::from_slice::<Value>(&text) {
                Ok(v) => prop_assert_eq!(ours.is_ok(), depth(&v) <= max_depth, "{:?}", ours),
                // A well-formed number too large for an f64: JSON, but not for serde_json's Value.
                Err(e) if e.to_string().starts_with("number out of range") => {}
                Err(e) => prop_assert!(ours.is_err(), "accepted, serde_json: {}", e),
            }
        }
    }
}
