//! Path templates: attributes a secret gets from where it lives.
//!
//! `"secret": {"type": "kv-v2", "templates": ["ci/{repository=*/*}/**"]}`
//! gives `Secret::"secret/ci/acme/api/db"` the attribute
//! `repository = "acme/api"`, so one Cedar rule can compare it with a CI
//! token's claim instead of one permit per repository.
//!
//! The syntax is the HTTP path-template convention (`{name=pattern}` as in
//! gRPC transcoding): `{name}` captures one segment, `{name=*/*}` as many as
//! its pattern, `*` matches one segment, `**` any remaining ones (zero or
//! more, last only), a literal matches itself. Templates match the path
//! relative to the mount as the classifier resolved it (decoded, dot
//! segments applied, KV v2's `data/`/`metadata/` removed), so every spelling
//! OpenBao treats as one secret gets the same attributes.
//!
//! A capture also goes on every `Path` folder that contains all of it:
//! `Path::"secret/ci/acme/api"` has `repository = "acme/api"`,
//! `Path::"secret/ci/acme"` does not, since it holds other repositories too.

use std::collections::BTreeMap;
use std::fmt;

use crate::classify::{ResourceKind, ResourceRef};
use crate::path::clean_path_segments;

/// One segment of a template or of a capture's pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: every remaining segment, zero or more.
    Rest,
}

/// A segment of a template: a plain one, or a named capture.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Plain(Segment),
    Capture { name: String, pattern: Vec<Segment> },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    parts: Vec<Part>,
}

/// A value a template captured from a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub name: String,
    pub value: String,
    /// How many segments of the mount-relative path hold the whole capture:
    /// a folder at least this deep contains it.
    pub depth: usize,
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_attribute_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_segment(text: &str) -> Result<Segment, String> {
    match text {
        "*" => Ok(Segment::One),
        "**" => Ok(Segment::Rest),
        "" => Err("an empty segment".into()),
        "." | ".." => Err(format!("a {text:?} segment (paths are matched resolved)")),
        _ if text.contains(['*', '{', '}', '=']) => Err(format!(
            "segment {text:?}: `*`, `{{`, `}}` and `=` are only allowed as template syntax"
        )),
        _ => Ok(Segment::Literal(text.to_owned())),
    }
}

/// Splits a template at the `/`s outside braces.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut pieces = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' if depth == 0 => depth = 1,
            '{' => return Err("nested `{`".into()),
            '}' if depth == 1 => depth = 0,
            '}' => return Err("`}` without `{`".into()),
            '/' if depth == 0 => {
                pieces.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("`{` without `}`".into());
    }
    pieces.push(&text[start..]);
    Ok(pieces)
}

impl PathTemplate {
    pub fn parse(text: &str) -> Result<PathTemplate, TemplateError> {
        Self::parse_parts(text)
            .map(|parts| PathTemplate {
                text: text.to_owned(),
                parts,
            })
            .map_err(|problem| TemplateError(format!("template {text:?}: {problem}")))
    }

    fn parse_parts(text: &str) -> Result<Vec<Part>, String> {
        if text.is_empty() {
            return Err("empty".into());
        }
        let mut parts = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for piece in split_top_level(text)? {
            let part = match piece.strip_prefix('{') {
                Some(inner) => {
                    let inner = inner.strip_suffix('}').ok_or_else(|| {
                        format!("segment {piece:?}: a capture is a whole segment")
                    })?;
                    let (name, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                    if !is_attribute_name(name) {
                        return Err(format!(
                            "capture name {name:?} is not a Cedar attribute name"
                        ));
                    }
                    if names.contains(&name) {
                        return Err(format!("capture {name:?} appears twice"));
                    }
                    names.push(name);
                    let pattern = pattern
                        .split('/')
                        .map(parse_segment)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("capture {name:?}: {e}"))?;
                    Part::Capture {
                        name: name.to_owned(),
                        pattern,
                    }
                }
                None if piece.contains(['{', '}']) => {
                    return Err(format!("segment {piece:?}: a capture is a whole segment"))
                }
                None => Part::Plain(parse_segment(piece)?),
            };
            parts.push(part);
        }
        // `**` swallows the rest of the path, so nothing can follow it.
        let segments: Vec<&Segment> = parts
            .iter()
            .flat_map(|part| match part {
                Part::Plain(segment) => std::slice::from_ref(segment).iter(),
                Part::Capture { pattern, .. } => pattern.iter(),
            })
            .collect();
        if let Some(position) = segments.iter().position(|s| **s == Segment::Rest) {
            if position + 1 != segments.len() {
                return Err("`**` must be the last segment".into());
            }
        }
        Ok(parts)
    }

    /// The template as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The attribute names the template captures.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Capture { name, .. } => Some(name.as_str()),
            Part::Plain(_) => None,
        })
    }

    /// The captures, if the template matches the whole of `path` (segments
    /// relative to the mount).
    pub fn matches(&self, path: &[&str]) -> Option<Vec<Capture>> {
        let mut position = 0;
        let mut captures = Vec::new();
        for part in &self.parts {
            match part {
                Part::Plain(segment) => position = match_segment(segment, path, position)?,
                Part::Capture { name, pattern } => {
                    let start = position;
                    for segment in pattern {
                        position = match_segment(segment, path, position)?;
                    }
                    captures.push(Capture {
                        name: name.clone(),
                        value: path[start..position].join("/"),
                        depth: position,
                    });
                }
            }
        }
        (position == path.len()).then_some(captures)
    }

    /// The captures a folder `path` (relative to the mount) gets from some
    /// path below it or equal to it: those the template completes within the
    /// folder. Used to find attributes `entities` would also set.
    fn captures_within(&self, path: &[&str]) -> Vec<String> {
        let mut position = 0;
        let mut within = Vec::new();
        for part in &self.parts {
            let pattern: &[Segment] = match part {
                Part::Plain(segment) => std::slice::from_ref(segment),
                Part::Capture { pattern, .. } => pattern,
            };
            for segment in pattern {
                if *segment == Segment::Rest || position >= path.len() {
                    return within;
                }
                match match_segment(segment, path, position) {
                    Some(next) => position = next,
                    None => return Vec::new(),
                }
            }
            if let Part::Capture { name, .. } = part {
                within.push(name.clone());
            }
        }
        within
    }
}

/// Where `segment` leaves a match that had consumed `position` segments.
fn match_segment(segment: &Segment, path: &[&str], position: usize) -> Option<usize> {
    match segment {
        Segment::Rest => Some(path.len()),
        Segment::One => (position < path.len()).then_some(position + 1),
        Segment::Literal(literal) => {
            (path.get(position) == Some(&literal.as_str())).then_some(position + 1)
        }
    }
}

/// The templates of every configured mount.
#[derive(Debug, Clone, Default)]
pub struct TemplateTable {
    /// Every configured mount (as its resource id prefix, namespace
    /// included) with its templates, longest mount first, so a resource is
    /// matched against the mount the classifier put it in.
    mounts: Vec<(String, Vec<PathTemplate>)>,
}

impl TemplateTable {
    /// `mounts` are every configured mount path; `templates` the template
    /// texts by mount path, each naming one of them.
    pub fn new(
        mounts: impl IntoIterator<Item = String>,
        templates: &BTreeMap<String, Vec<String>>,
    ) -> Result<TemplateTable, TemplateError> {
        let mut table: Vec<(String, Vec<PathTemplate>)> =
            mounts.into_iter().map(|m| (m, Vec::new())).collect();
        for (mount, texts) in templates {
            let key = clean_path_segments(mount).map(|segments| segments.join("/"));
            let entry = table
                .iter_mut()
                .find(|(path, _)| Some(path) == key.as_ref())
                .ok_or_else(|| {
                    TemplateError(format!("templates for {mount:?}: not a configured mount"))
                })?;
            for text in texts {
                entry.1.push(PathTemplate::parse(text)?);
            }
        }
        // Every mount stays, templates or not: `secret/special/x` under a
        // mount `secret/special` must not match the templates of `secret`.
        table.sort_by_key(|(mount, _)| std::cmp::Reverse(mount.len()));
        // Without any template, a request has no mount to look up.
        if table.iter().all(|(_, templates)| templates.is_empty()) {
            table.clear();
        }
        Ok(TemplateTable { mounts: table })
    }

    /// Every template with the mount it belongs to.
    pub fn templates(&self) -> impl Iterator<Item = (&str, &PathTemplate)> {
        self.mounts
            .iter()
            .flat_map(|(mount, templates)| templates.iter().map(move |t| (mount.as_str(), t)))
    }

    /// The mount-relative segments of a `Secret`/`Path` id under one of the
    /// templated mounts, with that mount's templates.
    fn locate<'i>(&self, id: &'i str) -> Option<(Vec<&'i str>, &[PathTemplate])> {
        let (mount, templates) = self.mounts.iter().find(|(mount, _)| {
            id == mount
                || id
                    .strip_prefix(mount.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })?;
        let relative = id[mount.len()..].trim_start_matches('/');
        let segments = if relative.is_empty() {
            Vec::new()
        } else {
            relative.split('/').collect()
        };
        Some((segments, templates))
    }

    /// The captures of the first template that matches the resource.
    pub fn captures(&self, resource: &ResourceRef) -> Vec<Capture> {
        if resource.kind == ResourceKind::Endpoint {
            return Vec::new();
        }
        let Some((segments, templates)) = self.locate(&resource.id) else {
            return Vec::new();
        };
        templates
            .iter()
            .find_map(|template| template.matches(&segments))
            .unwrap_or_default()
    }

    /// The captures of `captures` that an entity (the resource, or one of
    /// its `Path` folders, by id) contains.
    pub fn attributes_of<'c>(
        &self,
        captures: &'c [Capture],
        entity_id: &str,
    ) -> impl Iterator<Item = &'c Capture> {
        let depth = self
            .locate(entity_id)
            .map_or(0, |(segments, _)| segments.len());
        captures
            .iter()
            .filter(move |capture| capture.depth <= depth)
    }

    /// The attributes some request could give the `Secret` or `Path`
    /// entity `id`, with the template that gives each: what an entity listed
    /// in `entities` may not also set.
    pub fn possible_attributes(&self, kind: ResourceKind, id: &str) -> Vec<(String, &str)> {
        let Some((segments, templates)) = self.locate(id) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for template in templates {
            let names = match kind {
                ResourceKind::Path => template.captures_within(&segments),
                ResourceKind::Secret => template
                    .matches(&segments)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|capture| capture.name)
                    .collect(),
                ResourceKind::Endpoint => Vec::new(),
            };
            found.extend(names.into_iter().map(|name| (name, template.text())));
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: &str) -> PathTemplate {
        PathTemplate::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn segments(path: &str) -> Vec<&str> {
        path.split('/').filter(|s| !s.is_empty()).collect()
    }

    fn captured(text: &str, path: &str) -> Option<Vec<(String, String, usize)>> {
        template(text).matches(&segments(path)).map(|captures| {
            captures
                .into_iter()
                .map(|c| (c.name, c.value, c.depth))
                .collect()
        })
    }

    fn one(name: &str, value: &str, depth: usize) -> Vec<(String, String, usize)> {
        vec![(name.to_owned(), value.to_owned(), depth)]
    }

    #[test]
    fn a_bare_capture_takes_exactly_one_segment() {
        assert_eq!(
            captured("teams/{team}/**", "teams/red/db"),
            Some(one("team", "red", 2))
        );
        assert_eq!(
            captured("teams/{team}", "teams/red"),
            Some(one("team", "red", 2))
        );
        assert_eq!(captured("teams/{team}", "teams/red/db"), None);
        assert_eq!(captured("teams/{team}", "teams"), None);
    }

    #[test]
    fn a_pattern_capture_takes_as_many_segments_as_its_pattern() {
        assert_eq!(
            captured("ci/{repository=*/*}/**", "ci/acme/api/db"),
            Some(one("repository", "acme/api", 3))
        );
        assert_eq!(captured("ci/{repository=*/*}/**", "ci/acme"), None);
        assert_eq!(
            captured("ci/{repo=acme/*}", "ci/acme/api"),
            Some(one("repo", "acme/api", 3))
        );
        assert_eq!(captured("ci/{repo=acme/*}", "ci/other/api"), None);
    }

    #[test]
    fn double_star_takes_zero_or_more_remaining_segments() {
        let t = "ci/{repository=*/*}/**";
        assert_eq!(
            captured(t, "ci/acme/api"),
            Some(one("repository", "acme/api", 3))
        );
        assert_eq!(
            captured(t, "ci/acme/api/a/b/c/d"),
            Some(one("repository", "acme/api", 3))
        );
        assert_eq!(
            captured("{rest=**}", "a/b/c"),
            Some(one("rest", "a/b/c", 3))
        );
        assert_eq!(captured("x/*", "x/y"), Some(Vec::new()));
        assert_eq!(captured("x/*", "x"), None);
    }

    #[test]
    fn a_template_that_does_not_match_captures_nothing() {
        assert_eq!(captured("ci/{repository=*/*}/**", "prod/acme/api/db"), None);
        assert_eq!(captured("ci/{repository=*/*}/**", ""), None);
        assert_eq!(
            captured("ci/{team}", "CI/red"),
            None,
            "literals are case-sensitive, as KV is"
        );
    }

    #[test]
    fn a_capture_may_sit_on_the_mount_root() {
        assert_eq!(captured("{team}/**", "red/db"), Some(one("team", "red", 1)));
        assert_eq!(captured("{team}/**", "red"), Some(one("team", "red", 1)));
        assert_eq!(captured("{team}/**", ""), None);
    }

    #[test]
    fn several_captures_each_know_their_depth() {
        assert_eq!(
            captured("teams/{team}/apps/{app}/**", "teams/red/apps/web/db"),
            Some(vec![
                ("team".to_owned(), "red".to_owned(), 2),
                ("app".to_owned(), "web".to_owned(), 4)
            ])
        );
    }

    #[test]
    fn malformed_templates_are_refused_and_named() {
        for (text, problem) in [
            ("", "empty"),
            ("ci//x", "empty segment"),
            ("ci/{repository", "without `}`"),
            ("ci/repository}", "without `{`"),
            ("ci/{a{b}}", "nested"),
            ("ci/x{team}", "whole segment"),
            ("ci/{team}x", "whole segment"),
            ("ci/{9team}", "attribute name"),
            ("ci/{team-name}", "attribute name"),
            ("ci/{team}/{team}", "twice"),
            ("ci/**/x", "last segment"),
            ("{rest=**}/x", "last segment"),
            ("ci/../x", "segment"),
            ("ci/a*b", "template syntax"),
            ("ci/{team=}", "empty segment"),
        ] {
            let error = PathTemplate::parse(text).expect_err(text).to_string();
            assert!(error.contains(&format!("{text:?}")), "{error}");
            assert!(error.contains(problem), "{text}: {error}");
        }
    }

    fn table(templates: &[(&str, &[&str])], mounts: &[&str]) -> TemplateTable {
        let templates = templates
            .iter()
            .map(|(mount, texts)| {
                (
                    (*mount).to_owned(),
                    texts.iter().map(|t| (*t).to_owned()).collect(),
                )
            })
            .collect();
        TemplateTable::new(mounts.iter().map(|m| (*m).to_owned()), &templates)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn secret(id: &str) -> ResourceRef {
        ResourceRef {
            kind: ResourceKind::Secret,
            id: id.to_owned(),
        }
    }

    #[test]
    fn the_first_matching_template_wins() {
        let table = table(
            &[("secret", &["ci/{repository=*/*}/**", "ci/{team}/**"])],
            &["secret"],
        );
        let names = |id: &str| -> Vec<String> {
            table
                .captures(&secret(id))
                .into_iter()
                .map(|c| c.name)
                .collect()
        };
        assert_eq!(names("secret/ci/acme/api/db"), ["repository"]);
        assert_eq!(names("secret/ci/acme"), ["team"]);
    }

    #[test]
    fn folders_get_only_the_captures_they_contain() {
        let table = table(&[("secret", &["ci/{repository=*/*}/**"])], &["secret"]);
        let captures = table.captures(&secret("secret/ci/acme/api/db"));
        let on = |id: &str| -> Vec<String> {
            table
                .attributes_of(&captures, id)
                .map(|c| format!("{}={}", c.name, c.value))
                .collect()
        };
        assert_eq!(on("secret/ci/acme/api/db"), ["repository=acme/api"]);
        assert_eq!(on("secret/ci/acme/api"), ["repository=acme/api"]);
        assert!(on("secret/ci/acme").is_empty());
        assert!(on("secret/ci").is_empty());
        assert!(on("secret").is_empty());
    }

    #[test]
    fn a_resource_is_matched_against_its_own_mount_only() {
        let table = table(
            &[("secret", &["{team}/**"])],
            &["secret", "secret/special", "nsx/secret"],
        );
        assert_eq!(table.captures(&secret("secret/red/db")).len(), 1);
        assert!(table.captures(&secret("secret/special/red/db")).is_empty());
        assert!(table.captures(&secret("nsx/secret/red/db")).is_empty());
        assert!(table.captures(&secret("secretary/red/db")).is_empty());
        let endpoint = ResourceRef {
            kind: ResourceKind::Endpoint,
            id: "secret/red/db".into(),
        };
        assert!(table.captures(&endpoint).is_empty());
    }

    #[test]
    fn templates_must_name_a_configured_mount() {
        let templates = BTreeMap::from([("kv".to_owned(), vec!["{team}".to_owned()])]);
        let error = TemplateTable::new(["secret".to_owned()], &templates).unwrap_err();
        assert!(
            error.to_string().contains("\"kv\": not a configured mount"),
            "{error}"
        );
        let spelled = BTreeMap::from([("/secret/".to_owned(), vec!["{team}".to_owned()])]);
        let table = TemplateTable::new(["secret".to_owned()], &spelled).unwrap();
        assert_eq!(table.templates().count(), 1);
    }

    #[test]
    fn possible_attributes_cover_every_folder_a_capture_can_reach() {
        let table = table(&[("secret", &["ci/{repository=*/*}/**"])], &["secret"]);
        let names = |kind, id| -> Vec<String> {
            table
                .possible_attributes(kind, id)
                .into_iter()
                .map(|(name, _)| name)
                .collect()
        };
        assert_eq!(
            names(ResourceKind::Path, "secret/ci/acme/api"),
            ["repository"]
        );
        assert_eq!(
            names(ResourceKind::Path, "secret/ci/acme/api/x"),
            ["repository"]
        );
        assert!(names(ResourceKind::Path, "secret/ci/acme").is_empty());
        assert!(names(ResourceKind::Path, "secret/prod/acme/api").is_empty());
        assert_eq!(
            names(ResourceKind::Secret, "secret/ci/acme/api"),
            ["repository"]
        );
        assert!(names(ResourceKind::Secret, "secret/ci/acme").is_empty());
    }
}
