//! Policies that Cedar's strict validator cannot tell apart, found so a
//! large policy set is typechecked once per distinct shape instead of once
//! per policy.
//!
//! Generated policy sets (a folder permit per team, a CI permit per
//! repository) are thousands of copies of a few policies that differ only in
//! entity ids and string values. Cedar's typechecker decides from types, not
//! from those values, with four exceptions this module keeps verbatim:
//! action ids (the schema's `appliesTo` and the action hierarchy), ids of
//! enumerated entity types (callers validate every policy when the schema
//! has one), the arguments of extension functions (`ip("10.0.0.0/8")` is
//! parsed at validation), and `like` patterns. It also compares literals for
//! equality (`"a" == "a"` is always true, `"a" == "b"` always false), so
//! values are renamed injectively per policy: the n-th distinct value
//! becomes `#n` everywhere it occurs. Two policies with the same shape key
//! therefore typecheck alike, and validating the first of each shape
//! validates them all.
//!
//! The key is built from Cedar's own JSON form of the policy (never its
//! text). Anything this module does not recognise is kept verbatim, which
//! only ever makes two policies look different.

use std::collections::{HashMap, HashSet};

use cedar_policy::{Policy, PolicySet};
use serde_json::{Map, Value};

/// Which values a shape key renames. The default is the only sound
/// setting; the others exist so tests can show the differential test
/// catches each unsound shortcut.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Renaming {
    pub extension_arguments: bool,
    pub action_ids: bool,
    /// Rename every value to the same placeholder (losing equalities).
    pub collapse_values: bool,
}

impl Renaming {
    pub const SOUND: Renaming = Renaming {
        extension_arguments: false,
        action_ids: false,
        collapse_values: false,
    };
}

/// The first policy of each shape, in source order; `None` when a policy
/// has no JSON form, so the caller validates every policy.
pub fn representatives(policies: &PolicySet) -> Option<PolicySet> {
    representatives_with(policies, Renaming::SOUND)
}

#[doc(hidden)]
pub fn representatives_with(policies: &PolicySet, renaming: Renaming) -> Option<PolicySet> {
    let mut seen = HashSet::new();
    let mut chosen = PolicySet::new();
    for policy in policies.policies() {
        if seen.insert(shape_key(policy, renaming)?) {
            chosen.add(policy.clone()).ok()?;
        }
    }
    Some(chosen)
}

/// Cedar's JSON form of a policy, converted from the policy's parsed form.
/// `Policy::to_json` on a policy parsed from text parses that text again,
/// which costs as much as the first parse; a copy built from the parsed
/// form (Cedar's hidden `AsRef`/`From` pair) converts the tree instead. The
/// conversion normalises some syntax, never the meaning Cedar validates.
pub fn parsed_json(policy: &Policy) -> Option<Value> {
    without_text(policy).to_json().ok()
}

/// A copy of `policy` holding only its parsed form, not its source text.
pub fn without_text(policy: &Policy) -> Policy {
    let parsed = AsRef::as_ref(policy);
    Policy::from(Clone::clone(parsed))
}

/// Cedar's JSON form of `policy` without annotations, its values renamed
/// as described above.
fn shape_key(policy: &Policy, renaming: Renaming) -> Option<String> {
    let mut json = parsed_json(policy)?;
    let fields = json.as_object_mut()?;
    fields.remove("annotations");
    let mut renamer = Renamer {
        renaming,
        names: HashMap::new(),
    };
    renamer.expression(&mut json);
    serde_json::to_string(&json).ok()
}

struct Renamer {
    renaming: Renaming,
    names: HashMap<(Kind, String), usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    String,
    EntityId,
}

/// Keys whose array value is part of Cedar's JSON grammar; any other
/// array-valued key is an extension function call.
const ARRAY_KEYS: [&str; 4] = ["Set", "conditions", "entities", "pattern"];

fn is_action_type(type_name: &str) -> bool {
    type_name == "Action" || type_name.ends_with("::Action")
}

impl Renamer {
    fn rename(&mut self, kind: Kind, value: &mut String) {
        if self.renaming.collapse_values {
            *value = "#".into();
            return;
        }
        let next = self.names.len();
        let index = *self
            .names
            .entry((kind, std::mem::take(value)))
            .or_insert(next);
        *value = format!("#{index}");
    }

    fn expression(&mut self, node: &mut Value) {
        match node {
            Value::Object(fields) => {
                if self.entity_reference(fields) {
                    return;
                }
                for (key, child) in fields.iter_mut() {
                    if key == "Value" {
                        self.literal(child);
                    } else if child.is_array() && !ARRAY_KEYS.contains(&key.as_str()) {
                        if self.renaming.extension_arguments {
                            self.expression(child);
                        }
                    } else {
                        self.expression(child);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.expression(item)),
            _ => {}
        }
    }

    fn literal(&mut self, value: &mut Value) {
        match value {
            Value::String(text) => self.rename(Kind::String, text),
            Value::Array(items) => items.iter_mut().for_each(|item| self.literal(item)),
            Value::Object(fields) => {
                if fields.contains_key("__extn") {
                    return;
                }
                if let Some(Value::Object(entity)) = fields.get_mut("__entity") {
                    self.entity_reference(entity);
                    return;
                }
                fields.values_mut().for_each(|field| self.literal(field));
            }
            _ => {}
        }
    }

    /// Renames the id of `{"type": T, "id": I}`; whether `fields` was one.
    fn entity_reference(&mut self, fields: &mut Map<String, Value>) -> bool {
        if fields.len() != 2 {
            return false;
        }
        let is_action = match fields.get("type") {
            Some(Value::String(type_name)) => is_action_type(type_name),
            _ => return false,
        };
        let Some(Value::String(id)) = fields.get_mut("id") else {
            return false;
        };
        if !is_action || self.renaming.action_ids {
            self.rename(Kind::EntityId, id);
        }
        true
    }
}
