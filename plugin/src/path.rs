//! Resolves a raw HTTP request target the way OpenBao's Go HTTP stack does.
//!
//! OpenBao sees `r.URL.Path`: the percent-decoded path, which Go's `ServeMux`
//! then cleans (`//`, `.` and `..` removed, redirecting to the clean form).
//! The filter must authorise exactly the path OpenBao will finally serve, so
//! it decodes and cleans the same way and refuses the cases where the two
//! could disagree (an encoded `/`, a `..` that climbs out of a mount).

use std::fmt;

/// Why a request target cannot be resolved to one unambiguous API path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/v1/` once cleaned.
    NotApiPath,
    /// `/v1/` with nothing after it.
    EmptyApiPath,
    /// A `%` not followed by two hex digits.
    BadPercentEncoding,
    /// `%2F`: OpenBao would see a `/` the router never split on.
    EncodedSlash,
    /// A control character (raw or decoded), which no secret path contains.
    ControlCharacter,
    /// The decoded path is not UTF-8.
    NotUtf8,
    /// A `#` in the request target: proxies and Go disagree about fragments.
    Fragment,
    /// A `..` segment that climbs out of `/v1/` or out of the mount.
    EscapesMount,
    /// A `list=` or `scan=` value OpenBao answers with 400 (not a Go
    /// `strconv.ParseBool` value, or both flags set).
    BadListFlag,
    /// An `X-Vault-Namespace` header that is repeated, empty-segmented or not clean.
    BadNamespace,
    /// A namespace header naming a namespace the configuration does not declare.
    UndeclaredNamespace,
    /// A path under no configured mount and no built-in of its namespace:
    /// an unknown engine, or a namespace the configuration does not declare.
    NoMount,
}

impl PathError {
    /// A fixed, caller-safe description (never echoes request bytes).
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotApiPath => "not a Vault API path",
            PathError::EmptyApiPath => "empty API path",
            PathError::BadPercentEncoding => "malformed percent-encoding",
            PathError::EncodedSlash => "encoded slash in path",
            PathError::ControlCharacter => "control character in path",
            PathError::NotUtf8 => "path is not valid UTF-8",
            PathError::Fragment => "fragment in request target",
            PathError::EscapesMount => "dot-dot segment escapes the mount",
            PathError::BadListFlag => "invalid list or scan query parameter",
            PathError::BadNamespace => "invalid namespace header",
            PathError::UndeclaredNamespace => "undeclared namespace",
            PathError::NoMount => "path is under no configured mount",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// A request target resolved to OpenBao's view of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPath {
    /// Clean segments after `/v1/`, never empty, none `.`/`..`/empty.
    pub segments: Vec<String>,
    /// The decoded path ended in `/` (OpenBao keeps that for LIST).
    pub trailing_slash: bool,
    /// The smallest number of segments after `/v1/` that remained after a
    /// `..` popped one; `None` if no `..` appeared. Used to refuse `..` that
    /// climbs out of the mount the clean path lands in.
    pub lowest_pop_depth: Option<usize>,
    /// The raw query string (without `?`), forwarded unchanged.
    pub raw_query: Option<String>,
    /// The query makes a GET a LIST (`list=true` or `scan=true`, read as
    /// OpenBao reads them).
    pub lists: bool,
}

impl ApiPath {
    /// Parses a raw `:path` pseudo-header value.
    pub fn parse(raw_target: &str) -> Result<ApiPath, PathError> {
        if raw_target.contains('#') {
            return Err(PathError::Fragment);
        }
        let (raw_path, raw_query) = match raw_target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (raw_target, None),
        };
        let decoded = percent_decode_path(raw_path)?;
        if !decoded.starts_with('/') {
            return Err(PathError::NotApiPath);
        }
        let trailing_slash = decoded.len() > 1 && decoded.ends_with('/');
        let (segments, lowest_pop_depth) = clean_segments(&decoded);
        match segments.split_first() {
            Some((first, rest)) if first == "v1" => {
                if rest.is_empty() {
                    return Err(PathError::EmptyApiPath);
                }
                // A pop to depth 0 means `..` consumed `v1` itself.
                let lowest_pop_depth = match lowest_pop_depth {
                    Some(0) => return Err(PathError::EscapesMount),
                    Some(depth) => Some(depth - 1),
                    None => None,
                };
                let lists = match raw_query {
                    Some(query) => lists(query)?,
                    None => false,
                };
                Ok(ApiPath {
                    segments: rest.to_vec(),
                    trailing_slash,
                    lowest_pop_depth,
                    raw_query: raw_query.map(str::to_owned),
                    lists,
                })
            }
            _ => Err(PathError::NotApiPath),
        }
    }
}

/// Splits a slash path from configuration or a header into clean segments,
/// ignoring surrounding slashes; `""`, `.` and `..` segments are refused
/// rather than resolved.
pub fn clean_path_segments(text: &str) -> Option<Vec<String>> {
    if text.chars().any(char::is_control) {
        return None;
    }
    let trimmed = text.trim().trim_matches('/');
    if trimmed.is_empty() {
        return Some(Vec::new());
    }
    // `/ team` would become ` team`, which HTTP strips to `team` when the
    // canonical namespace is forwarded: OpenBao would serve another
    // namespace than the one decided on. Refused, like other unclear paths.
    if trimmed.trim() != trimmed {
        return None;
    }
    trimmed
        .split('/')
        .map(|segment| match segment {
            "" | "." | ".." => None,
            s => Some(s.to_owned()),
        })
        .collect()
}

/// Validates and splits an `X-Vault-Namespace` value into clean segments.
/// OpenBao trims surrounding slashes and reads `root` as the root namespace;
/// anything that needs more than that (`..`, `//`, control characters) is
/// refused rather than guessed at.
pub fn namespace_segments(value: &[u8]) -> Result<Vec<String>, PathError> {
    let text = std::str::from_utf8(value).map_err(|_| PathError::BadNamespace)?;
    let segments = clean_path_segments(text).ok_or(PathError::BadNamespace)?;
    match segments.first().map(String::as_str) {
        Some("root") if segments.len() == 1 => Ok(Vec::new()),
        // OpenBao answers "namespace not found"; never let it name a folder.
        Some("root") => Err(PathError::BadNamespace),
        _ => Ok(segments),
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn percent_decode_path(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadPercentEncoding);
            };
            let decoded = hi << 4 | lo;
            if decoded == b'/' {
                return Err(PathError::EncodedSlash);
            }
            out.push(decoded);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    let text = String::from_utf8(out).map_err(|_| PathError::NotUtf8)?;
    if text.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    Ok(text)
}

/// Go's `path.Clean` on segments, also reporting how low `..` popped.
fn clean_segments(decoded: &str) -> (Vec<String>, Option<usize>) {
    let mut stack: Vec<String> = Vec::new();
    let mut lowest_pop_depth: Option<usize> = None;
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                stack.pop();
                let depth = stack.len();
                lowest_pop_depth = Some(lowest_pop_depth.map_or(depth, |low| low.min(depth)));
            }
            other => stack.push(other.to_owned()),
        }
    }
    (stack, lowest_pop_depth)
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Decodes one query component as Go's `url.QueryUnescape` does; `None`
/// where Go reports an error (a `%` without two hex digits).
pub fn query_unescape(component: &str) -> Option<Vec<u8>> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value)?;
                let lo = bytes.get(i + 2).copied().and_then(hex_value)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Go's `url.Values.Get(name)` over `url.ParseQuery`: the first value kept
/// for `name`, where pairs holding a `;` or a bad escape are dropped.
fn first_query_value(query: &str, name: &[u8]) -> Option<Vec<u8>> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .find_map(|pair| {
            let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = query_unescape(raw_key)?;
            let value = query_unescape(raw_value)?;
            (key == name).then_some(value)
        })
}

/// OpenBao's reading of a GET's `list` or `scan` flag: the first value, ""
/// meaning unset, anything `strconv.ParseBool` rejects answered with 400.
fn query_flag(query: &str, name: &[u8]) -> Result<bool, PathError> {
    match first_query_value(query, name) {
        None => Ok(false),
        Some(value) if value.is_empty() => Ok(false),
        Some(value) => std::str::from_utf8(&value)
            .ok()
            .and_then(parse_go_bool)
            .ok_or(PathError::BadListFlag),
    }
}

/// Whether the query turns a GET into a LIST: `list=true`, or `scan=true`
/// (a recursive LIST). OpenBao refuses both at once, and so does the filter.
fn lists(query: &str) -> Result<bool, PathError> {
    match (query_flag(query, b"list")?, query_flag(query, b"scan")?) {
        (true, true) => Err(PathError::BadListFlag),
        (list, scan) => Ok(list || scan),
    }
}

/// Percent-encodes a clean path so that Go decodes it back to exactly these
/// segments: everything but RFC 3986 unreserved characters is escaped.
pub fn encode_segments(segments: &[String], trailing_slash: bool) -> String {
    let mut out = String::from("/v1");
    for segment in segments {
        out.push('/');
        for byte in segment.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(byte));
            } else {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(byte >> 4)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(byte & 0xF)]));
            }
        }
    }
    if trailing_slash {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &ApiPath) -> String {
        path.segments.join("/")
    }

    #[test]
    fn decodes_and_cleans_like_go() {
        let p = ApiPath::parse("/v1/secret//data/./ci/%61pp").unwrap();
        assert_eq!(segs(&p), "secret/data/ci/app");
        assert!(!p.trailing_slash);
        assert_eq!(p.lowest_pop_depth, None);
    }

    #[test]
    fn records_how_low_dot_dot_popped() {
        let p = ApiPath::parse("/v1/secret/data/x/../../data/y").unwrap();
        assert_eq!(segs(&p), "secret/data/y");
        assert_eq!(p.lowest_pop_depth, Some(1));
        assert_eq!(
            ApiPath::parse("/v1/../v1/secret/data/x"),
            Err(PathError::EscapesMount)
        );
    }

    #[test]
    fn refuses_ambiguous_targets() {
        assert_eq!(
            ApiPath::parse("/v1/secret%2Fdata/x"),
            Err(PathError::EncodedSlash)
        );
        assert_eq!(
            ApiPath::parse("/v1/secret/data/%zz"),
            Err(PathError::BadPercentEncoding)
        );
        assert_eq!(
            ApiPath::parse("/v1/secret/data/a%00b"),
            Err(PathError::ControlCharacter)
        );
        assert_eq!(
            ApiPath::parse("/v1/secret/data/%ff"),
            Err(PathError::NotUtf8)
        );
        assert_eq!(ApiPath::parse("/v1/a#b"), Err(PathError::Fragment));
        assert_eq!(ApiPath::parse("/V1/secret"), Err(PathError::NotApiPath));
        assert_eq!(ApiPath::parse("/v1/"), Err(PathError::EmptyApiPath));
        assert_eq!(ApiPath::parse("*"), Err(PathError::NotApiPath));
    }

    #[test]
    fn list_and_scan_flags_follow_go() {
        for (query, expected) in [
            ("list=true", Ok(true)),
            ("list=1", Ok(true)),
            ("list=T", Ok(true)),
            ("list=false", Ok(false)),
            ("list=", Ok(false)),
            ("version=2", Ok(false)),
            ("li%73t=true", Ok(true)),
            ("list=true&list=1", Ok(true)),
            // Go's Values.Get reads the first value only.
            ("list=true&list=false", Ok(true)),
            ("list=false&list=true", Ok(false)),
            ("list=true&list=yes", Ok(true)),
            ("list=&list=true", Ok(false)),
            // OpenBao answers an unparseable first value with 400.
            ("list=yes", Err(PathError::BadListFlag)),
            ("list=%ff", Err(PathError::BadListFlag)),
            // Pairs Go drops: a semicolon, a bad escape.
            ("a=b;list=true", Ok(false)),
            ("list=%zz&list=true", Ok(true)),
            ("list=t%zz", Ok(false)),
            ("list+=true", Ok(false)),
            ("scan=true", Ok(true)),
            ("scan=1&list=0", Ok(true)),
            ("scan=maybe", Err(PathError::BadListFlag)),
            ("scan=true&list=true", Err(PathError::BadListFlag)),
        ] {
            let target = format!("/v1/secret/metadata/ci?{query}");
            assert_eq!(
                ApiPath::parse(&target).map(|p| p.lists),
                expected,
                "{query}"
            );
        }
    }

    #[test]
    fn namespace_header_is_trimmed_or_refused() {
        assert_eq!(
            namespace_segments(b"/team-a/dev/").unwrap(),
            ["team-a", "dev"]
        );
        assert!(namespace_segments(b"").unwrap().is_empty());
        assert_eq!(namespace_segments(b"a//b"), Err(PathError::BadNamespace));
        assert_eq!(namespace_segments(b"a/../b"), Err(PathError::BadNamespace));
        assert_eq!(namespace_segments(b"a\nb"), Err(PathError::BadNamespace));
        assert!(namespace_segments(b"root").unwrap().is_empty());
        assert!(namespace_segments(b"/root/").unwrap().is_empty());
        // Found by the `classify` fuzz target: the canonical form of these
        // starts or ends with a space, which does not survive forwarding.
        assert_eq!(namespace_segments(b"/ team"), Err(PathError::BadNamespace));
        assert_eq!(namespace_segments(b"team /"), Err(PathError::BadNamespace));
        assert_eq!(
            namespace_segments(b"/ s 1v/     T"),
            Err(PathError::BadNamespace)
        );
        assert_eq!(namespace_segments(b" a b/c d ").unwrap(), ["a b", "c d"]);
        assert_eq!(
            namespace_segments(b"root/team"),
            Err(PathError::BadNamespace)
        );
    }

    #[test]
    fn encoding_round_trips_through_decoding() {
        let segments: Vec<String> = ["secret", "data", "my app", "é", "a+b", "%"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let encoded = encode_segments(&segments, true);
        assert_eq!(encoded, "/v1/secret/data/my%20app/%C3%A9/a%2Bb/%25/");
        let back = ApiPath::parse(&encoded).unwrap();
        assert_eq!(back.segments, segments);
        assert!(back.trailing_slash);
    }
}
