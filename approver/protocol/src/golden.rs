//! The golden examples (`golden/cases.json` and the bodies it names), for
//! the tests of both sides. Test support: it panics on a broken example set,
//! which is a failed test.

use serde_json::{Map, Value};
use std::path::PathBuf;

/// One example body and what a reader must make of it.
#[derive(Debug, Clone)]
pub struct Case {
    /// Path under `golden/`, e.g. `reply/denied.json`.
    pub name: String,
    pub body: Vec<u8>,
    pub accept: bool,
    /// For a refused reply: the field the filter names.
    pub malformed: Option<String>,
    pub sent_by_filter: bool,
    reads_as: Option<Value>,
    ignored: Vec<String>,
}

impl Case {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", self.name))
    }

    /// What an accepted example means: the body without its ignored fields,
    /// with `reads_as` merged over it (the defaults a reader fills in).
    pub fn meaning(&self) -> Value {
        assert!(self.accept, "{} is refused, it has no meaning", self.name);
        let mut value = self.json();
        for path in &self.ignored {
            let mut parts: Vec<&str> = path.split('.').collect();
            let last = parts.pop().unwrap_or_default();
            let mut at = &mut value;
            for part in parts {
                at = &mut at[part];
            }
            let removed = at.as_object_mut().and_then(|o| o.remove(last));
            assert!(
                removed.is_some(),
                "{}: no field {path} to ignore",
                self.name
            );
        }
        if let Some(Value::Object(over)) = &self.reads_as {
            let Value::Object(target) = &mut value else {
                panic!("{} is not an object", self.name)
            };
            for (k, v) in over {
                target.insert(k.clone(), v.clone());
            }
        }
        value
    }
}

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn manifest() -> Map<String, Value> {
    let text = std::fs::read(dir().join("cases.json")).expect("golden/cases.json");
    let Ok(Value::Object(m)) = serde_json::from_slice(&text) else {
        panic!("golden/cases.json is not a JSON object")
    };
    m
}

/// The examples of one kind (`request` or `reply`), checked against the
/// directory both ways so that no example goes untested and no expectation
/// names a missing file.
pub fn cases(kind: &str) -> Vec<Case> {
    let manifest = manifest();
    let mut on_disk: Vec<String> = std::fs::read_dir(dir().join(kind))
        .expect("golden directory")
        .map(|e| format!("{kind}/{}", e.expect("entry").file_name().to_string_lossy()))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = manifest
        .keys()
        .filter(|k| k.starts_with(&format!("{kind}/")))
        .cloned()
        .collect();
    listed.sort();
    assert_eq!(on_disk, listed, "golden/{kind}/ and cases.json disagree");
    listed
        .into_iter()
        .map(|name| {
            let spec = &manifest[&name];
            let text = |k: &str| spec.get(k).and_then(Value::as_str).map(str::to_owned);
            let accept = spec["accept"]
                .as_bool()
                .unwrap_or_else(|| panic!("{name}: accept is true or false"));
            let malformed = text("malformed");
            assert!(text("about").is_some(), "{name}: say what it shows");
            assert!(
                kind != "reply" || accept == malformed.is_none(),
                "{name}: a refused reply names its malformed field, an accepted one none"
            );
            Case {
                body: std::fs::read(dir().join(&name)).expect("golden body"),
                accept,
                malformed,
                sent_by_filter: spec.get("sent_by_filter") == Some(&Value::Bool(true)),
                reads_as: spec.get("reads_as").cloned(),
                ignored: spec
                    .get("ignored")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                name,
            }
        })
        .collect()
}

/// One example by name, e.g. `reply/pending.json`.
pub fn case(name: &str) -> Case {
    let kind = name.split('/').next().unwrap_or_default();
    cases(kind)
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no golden example {name}"))
}
