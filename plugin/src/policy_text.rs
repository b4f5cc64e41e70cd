//! A lexical pass over Cedar policy text, before Cedar parses it.
//!
//! Cedar's parser and evaluator recurse on expression depth. Inside a Wasm
//! VM the stack is fixed, and overflowing it traps the VM and takes every
//! request down, so policies nested deeper than the limits below are
//! refused up front with an error naming the policy. The same pass maps a
//! byte offset back to its policy's `@id` for error messages, which
//! [`PolicyError`] carries.

use std::fmt;

/// A configuration problem, located where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The `@id` (or Cedar's positional id) of the offending policy.
    pub policy_id: Option<String>,
    /// 1-based line in the policy text.
    pub line: Option<usize>,
    pub message: String,
}

impl PolicyError {
    pub(crate) fn general(message: impl Into<String>) -> Self {
        PolicyError {
            policy_id: None,
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.policy_id, self.line) {
            (Some(id), Some(line)) => write!(f, "policy {id:?} (line {line}): {}", self.message),
            (Some(id), None) => write!(f, "policy {id:?}: {}", self.message),
            (None, Some(line)) => write!(f, "line {line}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

/// Deepest `(`/`[`/`{` nesting accepted in one policy.
pub const MAX_BRACKET_DEPTH: usize = 32;
/// Most operators (binary, unary, `if`) accepted in one policy; each can add
/// a level of recursion. Long `||` chains should be a set and `.contains`.
pub const MAX_OPERATORS: usize = 256;

/// Where each top-level statement (policy) starts and ends.
#[derive(Debug, Clone, Default)]
pub struct StatementSpans {
    spans: Vec<(usize, usize)>,
}

#[derive(Default)]
struct StatementStats {
    max_depth: usize,
    operators: usize,
}

/// Walks the text outside strings and comments, calling `visit` for each
/// significant byte with its offset.
fn walk(src: &str, mut visit: impl FnMut(usize, u8)) {
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            byte => {
                visit(i, byte);
                i += 1;
            }
        }
    }
}

impl StatementSpans {
    pub fn scan(src: &str) -> StatementSpans {
        let mut spans = Vec::new();
        let mut start = 0;
        let mut depth = 0usize;
        walk(src, |i, byte| match byte {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b';' if depth == 0 => {
                spans.push((start, i + 1));
                start = i + 1;
            }
            _ => {}
        });
        if !src[start..].trim().is_empty() {
            spans.push((start, src.len()));
        }
        StatementSpans { spans }
    }

    fn index_at(&self, offset: usize) -> Option<usize> {
        self.spans
            .iter()
            .position(|&(start, end)| offset >= start && offset < end)
    }

    /// How many statements the text holds.
    pub fn count(&self) -> usize {
        self.spans.len()
    }

    /// The text in runs of up to `statements` consecutive statements, with
    /// how many each holds; together they cover the text up to the end of
    /// its last statement.
    pub fn chunks<'a>(
        &'a self,
        src: &'a str,
        statements: usize,
    ) -> impl Iterator<Item = (&'a str, usize)> + 'a {
        self.spans.chunks(statements.max(1)).filter_map(move |run| {
            let (start, _) = run.first()?;
            let (_, end) = run.last()?;
            Some((src.get(*start..*end)?, run.len()))
        })
    }

    /// The `@id("...")` of the policy containing `offset`, else Cedar's
    /// positional id (`policyN`).
    pub fn policy_id_at(&self, src: &str, offset: usize) -> Option<String> {
        let index = self.index_at(offset)?;
        let (start, end) = self.spans[index];
        Some(declared_id(&src[start..end]).unwrap_or_else(|| format!("policy{index}")))
    }
}

fn declared_id(statement: &str) -> Option<String> {
    let at = statement.find("@id(")?;
    let rest = statement[at + 4..].trim_start().strip_prefix('"')?;
    let close = rest.find('"')?;
    Some(rest[..close].to_owned())
}

/// 1-based line number of a byte offset.
pub fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn is_ident_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

fn statement_stats(statement: &str) -> StatementStats {
    let bytes = statement.as_bytes();
    let mut stats = StatementStats::default();
    let mut depth = 0usize;
    walk(statement, |i, byte| match byte {
        b'(' | b'[' | b'{' => {
            depth += 1;
            stats.max_depth = stats.max_depth.max(depth);
        }
        b')' | b']' | b'}' => depth = depth.saturating_sub(1),
        b'&' | b'|' | b'=' if bytes.get(i + 1) == Some(&byte) => stats.operators += 1,
        b'!' | b'<' | b'>' | b'+' | b'-' | b'*' => stats.operators += 1,
        b'i' | b'h' | b'l' => {
            let word_start = i == 0 || !is_ident_byte(bytes[i - 1]);
            let rest = &statement[i..];
            let keyword = ["if ", "in ", "has ", "like "]
                .iter()
                .any(|k| rest.starts_with(k));
            if word_start && keyword {
                stats.operators += 1;
            }
        }
        _ => {}
    });
    stats
}

/// Refuses policies nested or chained beyond what a Wasm stack can evaluate.
pub fn check_limits(src: &str, spans: &StatementSpans) -> Result<(), PolicyError> {
    for (index, &(start, end)) in spans.spans.iter().enumerate() {
        let statement = &src[start..end];
        let stats = statement_stats(statement);
        let problem = if stats.max_depth > MAX_BRACKET_DEPTH {
            Some(format!(
                "nesting depth {} exceeds the limit of {MAX_BRACKET_DEPTH}",
                stats.max_depth
            ))
        } else if stats.operators > MAX_OPERATORS {
            Some(format!(
                "{} operators exceed the limit of {MAX_OPERATORS}; use a set literal with .contains()",
                stats.operators
            ))
        } else {
            None
        };
        if let Some(message) = problem {
            return Err(PolicyError {
                policy_id: Some(declared_id(statement).unwrap_or_else(|| format!("policy{index}"))),
                line: Some(line_of(
                    src,
                    start + (statement.len() - statement.trim_start().len()),
                )),
                message,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "@id(\"first\")\npermit(principal, action, resource) when { \"a;b\" == \"c\" };\n// note; here\n@id(\"second\") forbid(principal, action, resource);\n";

    #[test]
    fn statements_split_on_top_level_semicolons_only() {
        let spans = StatementSpans::scan(TWO);
        assert_eq!(spans.spans.len(), 2);
        let second = TWO.find("forbid").unwrap();
        assert_eq!(spans.policy_id_at(TWO, second).as_deref(), Some("second"));
        assert_eq!(spans.policy_id_at(TWO, 3).as_deref(), Some("first"));
        assert_eq!(line_of(TWO, second), 4);
    }

    #[test]
    fn deep_nesting_and_long_chains_are_refused_with_the_policy_id() {
        let deep = format!(
            "@id(\"deep\") permit(principal, action, resource) when {{ {}true{} }};",
            "(".repeat(40),
            ")".repeat(40)
        );
        let err = check_limits(&deep, &StatementSpans::scan(&deep)).unwrap_err();
        assert_eq!(err.policy_id.as_deref(), Some("deep"));
        assert!(err.message.contains("nesting depth 41"), "{}", err.message);

        let chain = format!(
            "permit(principal, action, resource) when {{ {} }};",
            vec!["context.now == 1"; 300].join(" || ")
        );
        let err = check_limits(&chain, &StatementSpans::scan(&chain)).unwrap_err();
        assert_eq!(err.policy_id.as_deref(), Some("policy0"));
        assert!(err.message.contains("operators"), "{}", err.message);

        assert!(check_limits(TWO, &StatementSpans::scan(TWO)).is_ok());
    }
}
