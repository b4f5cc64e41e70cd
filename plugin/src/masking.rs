//! Masks a JSON body while tokenising it: from the captured bytes straight
//! to the text the audit record embeds, in one pass, with no tree of values
//! in between (building that tree cost more than all the hashing).
//!
//! It accepts what `serde_json` accepts (RFC 8259, UTF-8, no lone
//! surrogates, nesting below 128), so a body is either masked whole or
//! reported as not JSON, and what it writes is always valid JSON. Numbers
//! are kept, or masked, exactly as spelled in the body.

use std::fmt::Write as _;

/// `serde_json`'s recursion limit: a body nested this deep is not JSON to it.
const MAX_DEPTH: usize = 128;

/// What masking needs to know about the audit configuration and the request.
pub(crate) trait MaskRules {
    /// Whether scalars under `key` stay readable.
    fn readable(&self, key: &str) -> bool;
    /// Writes the masked form of a scalar's text, as a JSON string literal.
    fn write_masked(&self, text: &[u8], out: &mut String);
    /// Whether the response is a LIST, whose top-level `data.keys` are names.
    fn list_response(&self) -> bool;
    /// Whether LIST names are logged; otherwise only how many there are.
    fn list_names_shown(&self) -> bool;
}

/// The body was not JSON (or not JSON `serde_json` would accept).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NotJson;

/// Masks `body` by `rules`, returning the masked JSON text.
pub(crate) fn mask_json(body: &[u8], rules: &impl MaskRules) -> Result<String, NotJson> {
    let input = std::str::from_utf8(body).map_err(|_| NotJson)?;
    let mut transcoder = Transcoder {
        input,
        bytes: body,
        pos: 0,
        out: String::with_capacity(body.len() + body.len() / 2),
        rules,
        scratch: String::new(),
    };
    transcoder.value(Place::Root, 0)?;
    transcoder.skip_whitespace();
    if transcoder.pos != body.len() {
        return Err(NotJson);
    }
    Ok(transcoder.out)
}

/// Where a value sits, which decides how it is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The body itself.
    Root,
    /// The top-level `data` object, where a LIST response keeps `keys`.
    TopData,
    /// Under a readable key: scalars are written as they are.
    Readable,
    /// Anywhere else: strings and numbers are masked.
    Masked,
    /// LIST names the configuration shows.
    Verbatim,
    /// LIST names the configuration hides: checked and counted, not written.
    Counted,
}

impl Place {
    fn of_array_item(self) -> Place {
        match self {
            Place::Readable | Place::Verbatim | Place::Counted => self,
            Place::Root | Place::TopData | Place::Masked => Place::Masked,
        }
    }
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
    /// Strings with escapes are decoded here.
    scratch: String,
}

impl<'a, R: MaskRules> Transcoder<'a, R> {
    fn value(&mut self, place: Place, depth: usize) -> Result<(), NotJson> {
        self.skip_whitespace();
        match self.peek()? {
            b'{' => self.object(place, depth + 1).map(|_| ()),
            b'[' => self.array(place, depth + 1).map(|_| ()),
            b'"' => {
                let text = self.string()?;
                let scratch = std::mem::take(&mut self.scratch);
                let decoded = self.text(&text, &scratch)?;
                match place {
                    Place::Counted => {}
                    Place::Readable | Place::Verbatim => write_json_string(decoded, &mut self.out),
                    Place::Root | Place::TopData | Place::Masked => {
                        self.rules.write_masked(decoded.as_bytes(), &mut self.out)
                    }
                }
                self.scratch = scratch;
                Ok(())
            }
            b't' => self.literal("true", place),
            b'f' => self.literal("false", place),
            b'n' => self.literal("null", place),
            b'-' | b'0'..=b'9' => self.number(place),
            _ => Err(NotJson),
        }
    }

    /// Returns how many members the object held.
    fn object(&mut self, place: Place, depth: usize) -> Result<usize, NotJson> {
        if depth >= MAX_DEPTH {
            return Err(NotJson);
        }
        self.pos += 1;
        let write = place != Place::Counted;
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
                return Err(NotJson);
            }
            let key = self.string()?;
            let scratch = std::mem::take(&mut self.scratch);
            let key = self.text(&key, &scratch)?;
            if write {
                if members > 0 {
                    self.out.push(',');
                }
                write_json_string(key, &mut self.out);
                self.out.push(':');
            }
            members += 1;
            self.skip_whitespace();
            self.expect_byte(b':')?;
            self.skip_whitespace();
            let listing = place == Place::TopData && self.rules.list_response();
            let names = listing && key == "keys" && self.peek()? == b'[';
            // `detailed-metadata` LIST: one member per child, named after it.
            let names_by_key = listing && key == "key_info" && self.peek()? == b'{';
            let child = match place {
                Place::Verbatim | Place::Counted => place,
                _ if names => Place::Counted,
                Place::Root if key == "data" => Place::TopData,
                _ if self.rules.readable(key) => Place::Readable,
                _ => Place::Masked,
            };
            self.scratch = scratch;
            if names && self.rules.list_names_shown() {
                self.array(Place::Verbatim, depth + 1)?;
            } else if names {
                let count = self.array(Place::Counted, depth + 1)?;
                let _ = write!(self.out, "{{\"count\":{count}}}");
            } else if names_by_key && !self.rules.list_names_shown() {
                let count = self.object(Place::Counted, depth + 1)?;
                let _ = write!(self.out, "{{\"count\":{count}}}");
            } else {
                self.value(child, depth)?;
            }
            self.skip_whitespace();
            match self.next()? {
                b',' => {}
                b'}' => break,
                _ => return Err(NotJson),
            }
        }
        if write {
            self.out.push('}');
        }
        Ok(members)
    }

    /// Returns how many items the array held.
    fn array(&mut self, place: Place, depth: usize) -> Result<usize, NotJson> {
        if depth >= MAX_DEPTH {
            return Err(NotJson);
        }
        self.pos += 1;
        let write = place != Place::Counted;
        if write {
            self.out.push('[');
        }
        self.skip_whitespace();
        let mut count = 0;
        if self.peek()? == b']' {
            self.pos += 1;
        } else {
            let item = place.of_array_item();
            loop {
                if write && count > 0 {
                    self.out.push(',');
                }
                self.value(item, depth)?;
                count += 1;
                self.skip_whitespace();
                match self.next()? {
                    b',' => {}
                    b']' => break,
                    _ => return Err(NotJson),
                }
            }
        }
        if write {
            self.out.push(']');
        }
        Ok(count)
    }

    fn literal(&mut self, word: &str, place: Place) -> Result<(), NotJson> {
        let end = self.pos + word.len();
        if self.bytes.get(self.pos..end) != Some(word.as_bytes()) {
            return Err(NotJson);
        }
        self.pos = end;
        if place != Place::Counted {
            self.out.push_str(word);
        }
        Ok(())
    }

    fn number(&mut self, place: Place) -> Result<(), NotJson> {
        let start = self.pos;
        if self.peek()? == b'-' {
            self.pos += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return Err(NotJson),
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
        let token = self.input.get(start..self.pos).ok_or(NotJson)?;
        // serde_json refuses numbers beyond f64's range; so does the audit.
        let in_range = integer_end == self.pos && token.len() <= 18
            || token.parse::<f64>().is_ok_and(f64::is_finite);
        if !in_range {
            return Err(NotJson);
        }
        // Numbers are masked as spelled, so an auditor hashes what the
        // store sent rather than a float formatting of it.
        match place {
            Place::Counted => {}
            Place::Readable | Place::Verbatim => self.out.push_str(token),
            Place::Root | Place::TopData | Place::Masked => {
                self.rules.write_masked(token.as_bytes(), &mut self.out)
            }
        }
        Ok(())
    }

    fn digits(&mut self) {
        while matches!(self.bytes.get(self.pos), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn digits_at_least_one(&mut self) -> Result<(), NotJson> {
        let start = self.pos;
        self.digits();
        if self.pos == start {
            return Err(NotJson);
        }
        Ok(())
    }

    /// Scans a string literal; decodes it into `scratch` only if it has escapes.
    fn string(&mut self) -> Result<Text, NotJson> {
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
            self.scratch
                .push_str(self.input.get(run_start..self.pos).ok_or(NotJson)?);
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
                _ => return Err(NotJson),
            };
            self.scratch.push(decoded);
            run_start = self.pos;
        }
    }

    /// Skips the bytes of a string that stand for themselves and returns the
    /// one that ends the run (a quote or a backslash, not consumed). This is
    /// the loop most of a body's bytes go through.
    fn plain_run(&mut self) -> Result<u8, NotJson> {
        let rest = self.bytes.get(self.pos..).ok_or(NotJson)?;
        let length = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .ok_or(NotJson)?;
        self.pos += length;
        match self.peek()? {
            stop @ (b'"' | b'\\') => Ok(stop),
            _ => Err(NotJson),
        }
    }

    /// The character of a `\u` escape, joining a surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, NotJson> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if self.next()? != b'\\' || self.next()? != b'u' {
                    return Err(NotJson);
                }
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(NotJson);
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(NotJson),
            _ => first,
        };
        char::from_u32(code).ok_or(NotJson)
    }

    fn hex4(&mut self) -> Result<u32, NotJson> {
        let digits = self.input.get(self.pos..self.pos + 4).ok_or(NotJson)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NotJson);
        }
        self.pos += 4;
        u32::from_str_radix(digits, 16).map_err(|_| NotJson)
    }

    fn text<'s>(&self, text: &Text, scratch: &'s str) -> Result<&'s str, NotJson>
    where
        'a: 's,
    {
        match *text {
            Text::Input(start, end) => self.input.get(start..end).ok_or(NotJson),
            Text::Scratch => Ok(scratch),
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.bytes.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Result<u8, NotJson> {
        self.bytes.get(self.pos).copied().ok_or(NotJson)
    }

    fn next(&mut self) -> Result<u8, NotJson> {
        let byte = self.peek()?;
        self.pos += 1;
        Ok(byte)
    }

    fn expect_byte(&mut self, byte: u8) -> Result<(), NotJson> {
        if self.next()? == byte {
            Ok(())
        } else {
            Err(NotJson)
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
    use serde_json::{json, Value};

    /// Masks visibly, so a test can see exactly which text was masked.
    struct Visible {
        list: bool,
        names: bool,
    }

    impl MaskRules for Visible {
        fn readable(&self, key: &str) -> bool {
            key.starts_with("open")
        }
        fn write_masked(&self, text: &[u8], out: &mut String) {
            write_json_string(&format!("M({})", String::from_utf8_lossy(text)), out);
        }
        fn list_response(&self) -> bool {
            self.list
        }
        fn list_names_shown(&self) -> bool {
            self.names
        }
    }

    const READ: Visible = Visible {
        list: false,
        names: false,
    };

    /// The same rules over a parsed tree: what the transcoder must agree with.
    fn reference(value: &Value, rules: &Visible, place: Place) -> Value {
        let masked = |text: String| Value::String(format!("M({text})"));
        let shown = matches!(place, Place::Readable | Place::Verbatim);
        match value {
            Value::String(s) if !shown => masked(s.clone()),
            Value::Number(n) if !shown => masked(n.to_string()),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| reference(item, rules, place.of_array_item()))
                    .collect(),
            ),
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(key, field)| {
                        let names = place == Place::TopData && key == "keys" && rules.list;
                        let out = match field {
                            Value::Array(items) if names && !rules.names => {
                                json!({"count": items.len()})
                            }
                            Value::Array(_) if names => reference(field, rules, Place::Verbatim),
                            _ => {
                                let child = match place {
                                    Place::Verbatim => place,
                                    Place::Root if key == "data" => Place::TopData,
                                    _ if rules.readable(key) => Place::Readable,
                                    _ => Place::Masked,
                                };
                                reference(field, rules, child)
                            }
                        };
                        (key.clone(), out)
                    })
                    .collect(),
            ),
            other => other.clone(),
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

    fn agrees(input: &[u8], rules: &Visible) {
        let parsed = serde_json::from_slice::<Value>(input);
        let masked = mask_json(input, rules);
        match (&parsed, &masked) {
            (Ok(tree), Ok(text)) => {
                let ours: Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("invalid output {text:?}: {e}"));
                assert_eq!(
                    normalise(ours),
                    normalise(reference(tree, rules, Place::Root)),
                    "{}",
                    String::from_utf8_lossy(input)
                );
            }
            (Err(_), Err(NotJson)) => {}
            _ => panic!(
                "serde_json {:?} but transcoder {:?} on {:?}",
                parsed.map(|_| ()),
                masked.map(|_| ()),
                String::from_utf8_lossy(input)
            ),
        }
    }

    const SAMPLES: &[&str] = &[
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
            for rules in [
                READ,
                Visible {
                    list: true,
                    names: false,
                },
                Visible {
                    list: true,
                    names: true,
                },
            ] {
                agrees(sample.as_bytes(), &rules);
            }
        }
    }

    #[test]
    fn invalid_utf8_and_deep_nesting_are_not_json() {
        assert_eq!(mask_json(b"{\"a\":\"\xff\"}", &READ), Err(NotJson));
        assert_eq!(mask_json(b"\"\xc3\x28\"", &READ), Err(NotJson));
        for depth in [126, 127, 128, 129, 5000] {
            let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            agrees(deep.as_bytes(), &READ);
            let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            agrees(objects.as_bytes(), &READ);
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
        for sample in SAMPLES {
            for _ in 0..300 {
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
                agrees(&bytes, &READ);
            }
        }
    }

    #[test]
    fn masked_text_is_the_decoded_string_or_the_number_as_spelled() {
        let out = mask_json(
            br#"{"a":"caf\u00e9 \"q\"","n":1e3,"i":-7,"z":-0,"open":1.50}"#,
            &READ,
        )
        .unwrap();
        let out: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out["a"], "M(café \"q\")");
        assert_eq!(out["n"], "M(1e3)");
        assert_eq!(out["i"], "M(-7)");
        assert_eq!(out["z"], "M(-0)");
        assert_eq!(out["open"], 1.5);
    }

    #[test]
    fn list_names_are_counted_unless_shown() {
        let body = br#"{"data":{"keys":["app/","db", "x\"y"]},"keys":["top"]}"#;
        let counted = Visible {
            list: true,
            names: false,
        };
        let shown = Visible {
            list: true,
            names: true,
        };
        let out: Value = serde_json::from_str(&mask_json(body, &counted).unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"data": {"keys": {"count": 3}}, "keys": ["M(top)"]})
        );
        let out: Value = serde_json::from_str(&mask_json(body, &shown).unwrap()).unwrap();
        assert_eq!(out["data"]["keys"], json!(["app/", "db", "x\"y"]));
        // Only a LIST response's names are names.
        let out: Value = serde_json::from_str(&mask_json(body, &READ).unwrap()).unwrap();
        assert_eq!(out["data"]["keys"], json!(["M(app/)", "M(db)", "M(x\"y)"]));
    }
}
