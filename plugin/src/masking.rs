//! Masks a JSON body while tokenising it: from the captured bytes straight
//! to the text the audit record embeds, in one pass, with no tree of values
//! in between (building that tree cost more than all the hashing).
//!
//! It accepts what `serde_json` accepts (RFC 8259, UTF-8, no lone
//! surrogates, nesting below 128), so a body is either masked whole or
//! reported as not JSON, and what it writes is always valid JSON. Numbers
//! are kept, or masked, exactly as spelled in the body.

use std::fmt::Write as _;

use crate::shapes::Shape;

/// `serde_json`'s recursion limit: a body nested this deep is not JSON to it.
const MAX_DEPTH: usize = 128;

/// What masking needs to know about the audit configuration and the request.
pub(crate) trait MaskRules {
    /// Whether `readable_keys` makes this member of an engine's own fields
    /// readable (asked only where the shape allows it).
    fn configured_readable(&self, key: &str) -> bool;
    /// Writes the masked form of a scalar's text, as a JSON string literal.
    fn write_masked(&self, text: &[u8], out: &mut String);
    /// Whether LIST names are logged; otherwise only how many there are.
    fn list_names_shown(&self) -> bool;
    /// How much masking one body may cost.
    fn limits(&self) -> MaskLimits;
}

/// Bounds on one body's masking, so that no body, however it is built,
/// makes the record large or its hashing slow: masking `[1,1,1,...]` turns
/// two bytes into a 78-byte HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskLimits {
    /// Strings and numbers masked (HMACs computed) at most.
    pub max_masked_values: usize,
    /// Bytes of masked JSON written at most.
    pub max_masked_body_bytes: usize,
}

/// Why a body was not masked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unmasked {
    /// Not JSON (or not JSON `serde_json` would accept).
    NotJson,
    /// It holds more values than `max_masked_values`.
    TooManyValues,
    /// Its masked form outgrew `max_masked_body_bytes`.
    TooLarge,
}

/// Masks `body`, a body of `shape`, by `rules`, returning the masked JSON text.
pub(crate) fn mask_json(
    body: &[u8],
    shape: &'static Shape,
    rules: &impl MaskRules,
) -> Result<String, Unmasked> {
    let input = std::str::from_utf8(body).map_err(|_| Unmasked::NotJson)?;
    let limits = rules.limits();
    let mut transcoder = Transcoder {
        input,
        bytes: body,
        pos: 0,
        out: String::with_capacity((body.len() + body.len() / 2).min(limits.max_masked_body_bytes)),
        rules,
        limits,
        masked: 0,
        scratch: String::new(),
    };
    transcoder.value(Place::Write(shape), 0)?;
    transcoder.skip_whitespace();
    if transcoder.pos != body.len() {
        return Err(Unmasked::NotJson);
    }
    Ok(transcoder.out)
}

/// Where a value sits, which decides how it is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Written by its shape.
    Write(&'static Shape),
    /// LIST names the configuration hides: checked and counted, not written.
    Count,
}

/// Whether a scalar's text is a decoded string or a number as spelled.
#[derive(Clone, Copy)]
enum Scalar {
    String,
    Number,
}

/// A decoded string: a slice of the input when it has no escapes.
enum Text {
    Input(usize, usize),
    Scratch,
}

struct Transcoder<'a, R> {
    input: &'a str,
    bytes: &'a [u8],
    pos: usize,
    out: String,
    rules: &'a R,
    limits: MaskLimits,
    /// Values masked so far.
    masked: usize,
    /// Strings with escapes are decoded here.
    scratch: String,
}

impl<'a, R: MaskRules> Transcoder<'a, R> {
    fn value(&mut self, place: Place, depth: usize) -> Result<(), Unmasked> {
        self.skip_whitespace();
        match (self.peek()?, place) {
            (b'{', Place::Write(Shape::NamedMembers(shown))) => {
                self.named_members(shown, depth + 1)
            }
            (b'{', _) => self.object(place, depth + 1).map(|_| ()),
            (b'[', Place::Write(Shape::Names)) => self.names(depth + 1),
            (b'[', _) => self.array(place, depth + 1).map(|_| ()),
            (b'"', _) => {
                let text = self.string()?;
                let scratch = std::mem::take(&mut self.scratch);
                let decoded = self.text(&text, &scratch)?;
                let written = self.scalar(decoded, Scalar::String, place);
                self.scratch = scratch;
                written
            }
            (b't', _) => self.literal("true", place),
            (b'f', _) => self.literal("false", place),
            (b'n', _) => self.literal("null", place),
            (b'-' | b'0'..=b'9', _) => self.number(place),
            _ => Err(Unmasked::NotJson),
        }
    }

    /// Writes a string's decoded text or a number's spelling.
    fn scalar(&mut self, text: &str, kind: Scalar, place: Place) -> Result<(), Unmasked> {
        match (place, kind) {
            (Place::Count, _) => return Ok(()),
            (Place::Write(Shape::Kept), Scalar::String) => write_json_string(text, &mut self.out),
            (Place::Write(Shape::Kept), Scalar::Number) => self.out.push_str(text),
            (Place::Write(_), _) => {
                if self.masked == self.limits.max_masked_values {
                    return Err(Unmasked::TooManyValues);
                }
                self.masked += 1;
                self.rules.write_masked(text.as_bytes(), &mut self.out);
            }
        }
        self.within_size()
    }

    fn within_size(&self) -> Result<(), Unmasked> {
        if self.out.len() > self.limits.max_masked_body_bytes {
            return Err(Unmasked::TooLarge);
        }
        Ok(())
    }

    /// A LIST's names: written when shown, else only counted.
    fn names(&mut self, depth: usize) -> Result<(), Unmasked> {
        if self.rules.list_names_shown() {
            self.array(Place::Write(&Shape::Kept), depth).map(|_| ())
        } else {
            let count = self.array(Place::Count, depth)?;
            let _ = write!(self.out, "{{\"count\":{count}}}");
            Ok(())
        }
    }

    /// An object whose member names are LIST names: written as `shown`
    /// when names are shown, else only counted.
    fn named_members(&mut self, shown: &'static Shape, depth: usize) -> Result<(), Unmasked> {
        if self.rules.list_names_shown() {
            self.object(Place::Write(shown), depth).map(|_| ())
        } else {
            let count = self.object(Place::Count, depth)?;
            let _ = write!(self.out, "{{\"count\":{count}}}");
            Ok(())
        }
    }

    /// Returns how many members the object held.
    fn object(&mut self, place: Place, depth: usize) -> Result<usize, Unmasked> {
        if depth >= MAX_DEPTH {
            return Err(Unmasked::NotJson);
        }
        self.pos += 1;
        let write = place != Place::Count;
        if write {
            self.out.push('{');
        }
        self.skip_whitespace();
        if self.peek()? == b'}' {
            self.pos += 1;
            if write {
                self.out.push('}');
            }
            return Ok(0);
        }
        let mut members = 0;
        loop {
            self.skip_whitespace();
            if self.peek()? != b'"' {
                return Err(Unmasked::NotJson);
            }
            let key = self.string()?;
            let scratch = std::mem::take(&mut self.scratch);
            let key = self.text(&key, &scratch)?;
            let child = match place {
                Place::Count => Place::Count,
                Place::Write(shape) => {
                    if members > 0 {
                        self.out.push(',');
                    }
                    write_json_string(key, &mut self.out);
                    self.out.push(':');
                    match shape.member(key) {
                        (_, true) if self.rules.configured_readable(key) => {
                            Place::Write(&Shape::Kept)
                        }
                        (member, _) => Place::Write(member),
                    }
                }
            };
            self.scratch = scratch;
            members += 1;
            self.within_size()?;
            self.skip_whitespace();
            self.expect_byte(b':')?;
            self.value(child, depth)?;
            self.skip_whitespace();
            match self.next()? {
                b',' => {}
                b'}' => break,
                _ => return Err(Unmasked::NotJson),
            }
        }
        if write {
            self.out.push('}');
        }
        Ok(members)
    }

    /// Returns how many items the array held.
    fn array(&mut self, place: Place, depth: usize) -> Result<usize, Unmasked> {
        if depth >= MAX_DEPTH {
            return Err(Unmasked::NotJson);
        }
        self.pos += 1;
        let item = match place {
            Place::Count => Place::Count,
            Place::Write(shape) => {
                self.out.push('[');
                Place::Write(shape.item())
            }
        };
        self.skip_whitespace();
        let mut count = 0;
        if self.peek()? == b']' {
            self.pos += 1;
        } else {
            loop {
                if item != Place::Count && count > 0 {
                    self.out.push(',');
                }
                self.value(item, depth)?;
                count += 1;
                self.skip_whitespace();
                match self.next()? {
                    b',' => {}
                    b']' => break,
                    _ => return Err(Unmasked::NotJson),
                }
            }
        }
        if item != Place::Count {
            self.out.push(']');
        }
        Ok(count)
    }

    fn literal(&mut self, word: &str, place: Place) -> Result<(), Unmasked> {
        let end = self.pos + word.len();
        if self.bytes.get(self.pos..end) != Some(word.as_bytes()) {
            return Err(Unmasked::NotJson);
        }
        self.pos = end;
        if place != Place::Count {
            self.out.push_str(word);
        }
        Ok(())
    }

    fn number(&mut self, place: Place) -> Result<(), Unmasked> {
        let start = self.pos;
        if self.peek()? == b'-' {
            self.pos += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return Err(Unmasked::NotJson),
        }
        let integer_end = self.pos;
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            self.digits_at_least_one()?;
        }
        if matches!(self.bytes.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.bytes.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.digits_at_least_one()?;
        }
        let token = self.input.get(start..self.pos).ok_or(Unmasked::NotJson)?;
        // serde_json refuses numbers beyond f64's range; so does the audit.
        let in_range = integer_end == self.pos && token.len() <= 18
            || token.parse::<f64>().is_ok_and(f64::is_finite);
        if !in_range {
            return Err(Unmasked::NotJson);
        }
        // Numbers are masked as spelled, so an auditor hashes what the
        // store sent rather than a float formatting of it.
        self.scalar(token, Scalar::Number, place)
    }

    fn digits(&mut self) {
        while matches!(self.bytes.get(self.pos), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn digits_at_least_one(&mut self) -> Result<(), Unmasked> {
        let start = self.pos;
        self.digits();
        if self.pos == start {
            return Err(Unmasked::NotJson);
        }
        Ok(())
    }

    /// Scans a string literal; decodes it into `scratch` only if it has escapes.
    fn string(&mut self) -> Result<Text, Unmasked> {
        self.pos += 1;
        let start = self.pos;
        if self.plain_run()? == b'"' {
            self.pos += 1;
            return Ok(Text::Input(start, self.pos - 1));
        }
        self.scratch.clear();
        let mut run_start = start;
        loop {
            let stop = self.plain_run()?;
            self.scratch.push_str(
                self.input
                    .get(run_start..self.pos)
                    .ok_or(Unmasked::NotJson)?,
            );
            self.pos += 1;
            if stop == b'"' {
                return Ok(Text::Scratch);
            }
            let decoded = match self.next()? {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => self.unicode_escape()?,
                _ => return Err(Unmasked::NotJson),
            };
            self.scratch.push(decoded);
            run_start = self.pos;
        }
    }

    /// Skips the bytes of a string that stand for themselves and returns the
    /// one that ends the run (a quote or a backslash, not consumed). This is
    /// the loop most of a body's bytes go through.
    fn plain_run(&mut self) -> Result<u8, Unmasked> {
        let rest = self.bytes.get(self.pos..).ok_or(Unmasked::NotJson)?;
        let length = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .ok_or(Unmasked::NotJson)?;
        self.pos += length;
        match self.peek()? {
            stop @ (b'"' | b'\\') => Ok(stop),
            _ => Err(Unmasked::NotJson),
        }
    }

    /// The character of a `\u` escape, joining a surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, Unmasked> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if self.next()? != b'\\' || self.next()? != b'u' {
                    return Err(Unmasked::NotJson);
                }
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(Unmasked::NotJson);
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(Unmasked::NotJson),
            _ => first,
        };
        char::from_u32(code).ok_or(Unmasked::NotJson)
    }

    fn hex4(&mut self) -> Result<u32, Unmasked> {
        let digits = self
            .input
            .get(self.pos..self.pos + 4)
            .ok_or(Unmasked::NotJson)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Unmasked::NotJson);
        }
        self.pos += 4;
        u32::from_str_radix(digits, 16).map_err(|_| Unmasked::NotJson)
    }

    fn text<'s>(&self, text: &Text, scratch: &'s str) -> Result<&'s str, Unmasked>
    where
        'a: 's,
    {
        match *text {
            Text::Input(start, end) => self.input.get(start..end).ok_or(Unmasked::NotJson),
            Text::Scratch => Ok(scratch),
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.bytes.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Result<u8, Unmasked> {
        self.bytes.get(self.pos).copied().ok_or(Unmasked::NotJson)
    }

    fn next(&mut self) -> Result<u8, Unmasked> {
        let byte = self.peek()?;
        self.pos += 1;
        Ok(byte)
    }

    fn expect_byte(&mut self, byte: u8) -> Result<(), Unmasked> {
        if self.next()? == byte {
            Ok(())
        } else {
            Err(Unmasked::NotJson)
        }
    }
}

/// Writes a string as a JSON string literal.
pub(crate) fn write_json_string(text: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (index, byte) in text.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(text.get(start..index).unwrap_or_default());
        if escaped.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escaped);
        }
        start = index + 1;
    }
    out.push_str(text.get(start..).unwrap_or_default());
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::MountType;
    use crate::shapes::BodyKind;
    use serde_json::{json, Value};

    /// Masks visibly, so a test can see exactly which text was masked.
    struct Visible {
        names: bool,
        limits: MaskLimits,
    }

    const UNBOUNDED: MaskLimits = MaskLimits {
        max_masked_values: usize::MAX,
        max_masked_body_bytes: usize::MAX,
    };

    impl MaskRules for Visible {
        fn configured_readable(&self, key: &str) -> bool {
            key.starts_with("open")
        }
        fn write_masked(&self, text: &[u8], out: &mut String) {
            write_json_string(&format!("M({})", String::from_utf8_lossy(text)), out);
        }
        fn list_names_shown(&self) -> bool {
            self.names
        }
        fn limits(&self) -> MaskLimits {
            self.limits
        }
    }

    const READ: Visible = Visible {
        names: false,
        limits: UNBOUNDED,
    };
    const SHOWN: Visible = Visible {
        names: true,
        limits: UNBOUNDED,
    };

    fn kv2_read() -> &'static Shape {
        BodyKind::response(Some(MountType::KvV2), false).shape()
    }

    /// The shapes the samples are masked by: answers and requests, a LIST,
    /// and a body that is all secret.
    fn shapes() -> [&'static Shape; 5] {
        [
            kv2_read(),
            BodyKind::response(Some(MountType::KvV2), true).shape(),
            BodyKind::response(Some(MountType::Database), false).shape(),
            BodyKind::request(Some(MountType::KvV2)).shape(),
            BodyKind::request(Some(MountType::KvV1)).shape(),
        ]
    }

    /// The same rules over a parsed tree: what the transcoder must agree with.
    fn reference(value: &Value, rules: &Visible, shape: &'static Shape) -> Value {
        let masked = |text: String| Value::String(format!("M({text})"));
        let kept = *shape == Shape::Kept;
        match (value, shape) {
            (Value::String(s), _) if !kept => masked(s.clone()),
            (Value::Number(n), _) if !kept => masked(n.to_string()),
            (Value::Array(items), Shape::Names) if !rules.names => json!({"count": items.len()}),
            (Value::Array(items), Shape::Names) => Value::Array(
                items
                    .iter()
                    .map(|item| reference(item, rules, &Shape::Kept))
                    .collect(),
            ),
            (Value::Object(fields), Shape::NamedMembers(_)) if !rules.names => {
                json!({"count": fields.len()})
            }
            (Value::Object(_), Shape::NamedMembers(shown)) => reference(value, rules, shown),
            (Value::Array(items), _) => Value::Array(
                items
                    .iter()
                    .map(|item| reference(item, rules, shape.item()))
                    .collect(),
            ),
            (Value::Object(fields), _) => Value::Object(
                fields
                    .iter()
                    .map(|(key, field)| {
                        let child = match shape.member(key) {
                            (_, true) if rules.configured_readable(key) => &Shape::Kept,
                            (member, _) => member,
                        };
                        (key.clone(), reference(field, rules, child))
                    })
                    .collect(),
            ),
            (other, _) => other.clone(),
        }
    }

    /// Masked numbers carry their spelling (`M(1e3)`), the reference its
    /// float formatting (`M(1000.0)`): compare them by value, to twelve
    /// digits, as serde_json's own float parsing is not exact.
    fn normalise(value: Value) -> Value {
        match value {
            Value::String(s) => match s
                .strip_prefix("M(")
                .and_then(|rest| rest.strip_suffix(')'))
                .and_then(|inner| inner.parse::<f64>().ok())
            {
                Some(number) => Value::String(format!("M(number {number:.12e})")),
                None => Value::String(s),
            },
            Value::Array(items) => Value::Array(items.into_iter().map(normalise).collect()),
            Value::Object(fields) => Value::Object(
                fields
                    .into_iter()
                    .map(|(key, field)| (key, normalise(field)))
                    .collect(),
            ),
            other => other,
        }
    }

    fn agrees(input: &[u8], shape: &'static Shape, rules: &Visible) {
        let parsed = serde_json::from_slice::<Value>(input);
        let masked = mask_json(input, shape, rules);
        match (&parsed, &masked) {
            (Ok(tree), Ok(text)) => {
                let ours: Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("invalid output {text:?}: {e}"));
                assert_eq!(
                    normalise(ours),
                    normalise(reference(tree, rules, shape)),
                    "{}",
                    String::from_utf8_lossy(input)
                );
            }
            (Err(_), Err(Unmasked::NotJson)) => {}
            _ => panic!(
                "serde_json {:?} but transcoder {:?} on {:?}",
                parsed.map(|_| ()),
                masked.map(|_| ()),
                String::from_utf8_lossy(input)
            ),
        }
    }

    const SAMPLES: &[&str] = &[
        r#"{"request_id":"r","data":{"data":{"version":"s","type":{"ttl":1}},"metadata":{"version":3,"open":"o"},"custom_metadata":{"open":"c"},"open":"x"}}"#,
        r#"{"data":{"keys":["a/","b"],"key_info":{"a/":{"current_version":2,"custom_metadata":{"k":"v"}},"b":null}}}"#,
        r#"{"data":{"versions":{"1":{"created_time":"t","version":{"x":1}}}},"options":{"cas":2},"auth":{"policies":["p"],"client_token":"s"}}"#,
        r#"{"data":{"data":{"password":"hunter2","port":5432},"metadata":{"open_v":3}},"open":"x"}"#,
        r#"{"data":{"keys":["a/","b"]},"open_id":"r"}"#,
        r#"{"data":{"keys":"not-a-list"}}"#,
        r#"{"open":{"inner":"s","open2":[1,"t",{"x":"y"}]}}"#,
        r#"{"a":"\u00e9\ud83d\ude00\n\t\"\\\/\b\f\r","open":"\u0000 \u001f"}"#,
        r#"{"we\"ird\nkey":{"x\\":"y"},"open\u0041":"z"}"#,
        r#"[1,-0,0.5,1e3,1E+3,-1.5e-3,12345678901234567890123,-9223372036854775808,18446744073709551615,123456789012345678]"#,
        r#"{"open":[1,-0,1e3,2.50,123456789012345678901]}"#,
        r#"  {"dup":"a","dup":"b"} "#,
        r#""top-level string""#,
        r#"42"#,
        r#"true"#,
        r#"null"#,
        r#"[]"#,
        r#"{}"#,
        r#"{"data":[{"keys":["x"]}]}"#,
        r#"{"data":{"keys":[]}}"#,
        r#"{"data":{"keys":[{"k":"v"},["n"],1]}}"#,
        r#"{"a":1,}"#,
        r#"[1,]"#,
        r#"{"a" 1}"#,
        r#"{"a":01}"#,
        r#"{"a":1.}"#,
        r#"{"a":.5}"#,
        r#"{"a":1e}"#,
        r#"{"a":-}"#,
        r#"{"a":+1}"#,
        r#"{"a":1e400}"#,
        r#"{"a":"\ud800"}"#,
        r#"{"a":"\udc00\ud800"}"#,
        r#"{"a":"\ud800\u0041"}"#,
        r#"{"a":"\x"}"#,
        r#"{"a":"\u12"}"#,
        r#"{"a":"\u12G4"}"#,
        r#"{"a":tru}"#,
        r#"{"a":nul}"#,
        r#"{"a":"unterminated"#,
        r#"{"a":"x"} trailing"#,
        r#"{"a":"x"}}"#,
        r#"{'a':1}"#,
        r#"{a:1}"#,
        r#""#,
        r#"   "#,
        "{\"a\":\"raw\ncontrol\"}",
        "{\"a\":\"\u{7f}del\"}",
        "\u{feff}{}",
    ];

    #[test]
    fn agrees_with_serde_json_and_the_tree_masking_on_samples() {
        for sample in SAMPLES {
            for shape in shapes() {
                for rules in [READ, SHOWN] {
                    agrees(sample.as_bytes(), shape, &rules);
                }
            }
        }
    }

    #[test]
    fn invalid_utf8_and_deep_nesting_are_not_json() {
        let shape = kv2_read();
        assert_eq!(
            mask_json(b"{\"a\":\"\xff\"}", shape, &READ),
            Err(Unmasked::NotJson)
        );
        assert_eq!(
            mask_json(b"\"\xc3\x28\"", shape, &READ),
            Err(Unmasked::NotJson)
        );
        for depth in [126, 127, 128, 129, 5000] {
            let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            agrees(deep.as_bytes(), shape, &READ);
            let objects = format!("{}1{}", "{\"data\":".repeat(depth), "}".repeat(depth));
            agrees(objects.as_bytes(), shape, &READ);
        }
    }

    /// Small deterministic mutations of the samples: every byte flipped,
    /// dropped or doubled must still give serde_json's verdict.
    #[test]
    fn agrees_with_serde_json_on_mutations() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"{}[]\",:\\/ u0123456789abcdefnrtlsE+-.\xc3\xa9\x00\n";
        let shapes = shapes();
        for sample in SAMPLES {
            for round in 0..300 {
                let mut bytes = sample.as_bytes().to_vec();
                for _ in 0..(random() % 3 + 1) {
                    if bytes.is_empty() {
                        break;
                    }
                    let at = (random() as usize) % bytes.len();
                    let byte = alphabet[(random() as usize) % alphabet.len()];
                    match random() % 3 {
                        0 => bytes[at] = byte,
                        1 => {
                            bytes.remove(at);
                        }
                        _ => bytes.insert(at, byte),
                    }
                }
                agrees(&bytes, shapes[round % shapes.len()], &READ);
            }
        }
    }

    #[test]
    fn masked_text_is_the_decoded_string_or_the_number_as_spelled() {
        let body = br#"{"data":{"data":{"a":"caf\u00e9 \"q\"","n":1e3,"i":-7,"z":-0},"metadata":{"version":1.50}}}"#;
        let out: Value =
            serde_json::from_str(&mask_json(body, kv2_read(), &READ).unwrap()).unwrap();
        let secret = &out["data"]["data"];
        assert_eq!(secret["a"], "M(café \"q\")");
        assert_eq!(secret["n"], "M(1e3)");
        assert_eq!(secret["i"], "M(-7)");
        assert_eq!(secret["z"], "M(-0)");
        assert_eq!(out["data"]["metadata"]["version"], 1.5);
    }

    #[test]
    fn a_metadata_key_name_inside_a_secret_is_masked() {
        let body = br#"{"lease_duration":0,"data":{"data":{"version":"v-secret","type":"t-secret",
            "ttl":7,"lease_duration":"l-secret","metadata":{"version":"deep-secret"},
            "open":"o-secret"},"metadata":{"version":3,"type":"not-a-metadata-field"}}}"#;
        let out = mask_json(body, kv2_read(), &READ).unwrap();
        for secret in [
            "v-secret",
            "t-secret",
            "l-secret",
            "deep-secret",
            "o-secret",
            "not-a-metadata-field",
        ] {
            // Visible masking writes `M(<text>)`: the text in quotes is clear.
            assert!(!out.contains(&format!("\"{secret}\"")), "{secret} in {out}");
            assert!(
                out.contains(&format!("M({secret})")),
                "{secret} lost from {out}"
            );
        }
        let out: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out["data"]["data"]["ttl"], "M(7)");
        assert_eq!(out["data"]["metadata"]["version"], 3);
        assert_eq!(out["lease_duration"], 0);
    }

    #[test]
    fn list_names_are_counted_unless_shown() {
        let body = br#"{"data":{"keys":["app/","db", "x\"y"]},"keys":["top"]}"#;
        let list = BodyKind::response(Some(MountType::KvV2), true).shape();
        let out: Value = serde_json::from_str(&mask_json(body, list, &READ).unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"data": {"keys": {"count": 3}}, "keys": ["M(top)"]})
        );
        let out: Value = serde_json::from_str(&mask_json(body, list, &SHOWN).unwrap()).unwrap();
        assert_eq!(out["data"]["keys"], json!(["app/", "db", "x\"y"]));
        // Only a LIST response's names are names.
        let out: Value =
            serde_json::from_str(&mask_json(body, kv2_read(), &SHOWN).unwrap()).unwrap();
        assert_eq!(out["data"]["keys"], json!(["M(app/)", "M(db)", "M(x\"y)"]));
    }

    #[test]
    fn masking_stops_at_its_bounds() {
        let ones = format!("{{\"data\":{{\"data\":[{}1]}}}}", "1,".repeat(99));
        let bounded = |max_masked_values, max_masked_body_bytes| Visible {
            names: false,
            limits: MaskLimits {
                max_masked_values,
                max_masked_body_bytes,
            },
        };
        let shape = kv2_read();
        assert!(mask_json(ones.as_bytes(), shape, &bounded(100, 10_000)).is_ok());
        assert_eq!(
            mask_json(ones.as_bytes(), shape, &bounded(99, 10_000)),
            Err(Unmasked::TooManyValues)
        );
        // Each masked `1` is written as `"M(1)"`: 100 of them need 600 bytes.
        assert_eq!(
            mask_json(ones.as_bytes(), shape, &bounded(1000, 500)),
            Err(Unmasked::TooLarge)
        );
        // Keys count towards the size too, however few values there are.
        let long_key = format!("{{\"{}\":null}}", "k".repeat(600));
        assert_eq!(
            mask_json(long_key.as_bytes(), shape, &bounded(1000, 500)),
            Err(Unmasked::TooLarge)
        );
    }
}
