//! Validating one policy per shape must never accept a set that Cedar's
//! strict validation of every policy rejects.
//!
//! `PolicyEngine::load` validates the representatives of each shape
//! (`policy_shape::representatives`) and, only when they fail, every policy.
//! So the one unsafe outcome is: representatives pass, the whole set fails.
//! The differential test builds thousands of policies from fragments that
//! are each valid or invalid depending on the values in them, groups them
//! into sets in varying order, and requires that outcome never to happen.
//! Each unsound shortcut a shape key could take (renaming action ids or
//! extension arguments, or losing which literals are equal) is shown to be
//! caught by a pair of policies.

use std::str::FromStr;

use cedar_policy::{PolicySet, Schema, ValidationMode, Validator};
use secretgate::policy_shape::{representatives, representatives_with, Renaming};

const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");

fn validator() -> Validator {
    let (schema, _) = Schema::from_cedarschema_str(SCHEMA).expect("schema");
    Validator::new(schema)
}

fn set(policies: &[String]) -> PolicySet {
    let text: String = policies
        .iter()
        .enumerate()
        .map(|(i, policy)| format!("@id(\"p{i}\")\n{policy}\n"))
        .collect();
    PolicySet::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn passes(validator: &Validator, policies: &PolicySet) -> bool {
    validator
        .validate(policies, ValidationMode::Strict)
        .validation_passed()
}

/// A tiny deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    /// A valid value, or rarely an invalid one, so that sets of a dozen
    /// policies are accepted about as often as rejected.
    fn value<'a>(&mut self, valid: &[&'a str], invalid: &'a str) -> &'a str {
        if self.next().is_multiple_of(40) {
            invalid
        } else {
            self.pick(valid)
        }
    }
}

const VALUES: [&str; 4] = ["a", "b", "team-1", "org/repo"];
const ACTIONS: [&str; 3] = ["read", "list", "write"];
const NETWORKS: [&str; 2] = ["10.0.0.0/8", "192.168.1.1"];
const DECIMALS: [&str; 2] = ["1.5", "0.25"];
const ENTITY_TYPES: [&str; 3] = ["Group", "Path", "Secret"];

/// One policy from fragments whose validity depends on the values chosen:
/// `form` chooses the fragments, `rng` the values, so policies drawn with
/// the same form are candidates for one shape.
fn generated_policy(form: &mut Rng, rng: &mut Rng) -> String {
    let effect = form.pick(&["permit", "forbid"]);
    let principal = match form.next() % 4 {
        0 => "principal".to_string(),
        1 => format!("principal in Group::\"{}\"", rng.pick(&VALUES)),
        2 => format!("principal == User::\"{}\"", rng.pick(&VALUES)),
        _ => format!(
            "principal in {}::\"{}\"",
            rng.value(&ENTITY_TYPES, "NoSuchType"),
            rng.pick(&VALUES)
        ),
    };
    let action = match form.next() % 3 {
        0 => "action".to_string(),
        1 => format!(
            "action == Action::\"{}\"",
            rng.value(&ACTIONS, "no_such_action")
        ),
        _ => format!(
            "action in [Action::\"{}\", Action::\"{}\"]",
            rng.value(&ACTIONS, "no_such_action"),
            rng.value(&ACTIONS, "no_such_action")
        ),
    };
    let resource = match form.next() % 3 {
        0 => "resource".to_string(),
        1 => format!("resource in Path::\"{}\"", rng.pick(&VALUES)),
        _ => format!(
            "resource is Secret in {}::\"{}\"",
            rng.value(&ENTITY_TYPES, "NoSuchType"),
            rng.pick(&VALUES)
        ),
    };
    let condition = match form.next() % 7 {
        0 => format!(
            "context.claims has repository && context.claims.repository == \"{}\"",
            rng.pick(&VALUES)
        ),
        1 => {
            // Ill-typed unless the two literals are equal.
            let first = rng.pick(&VALUES);
            let second = rng.value(&[first], "other");
            format!("if \"{first}\" == \"{second}\" then true else 1 + \"x\" == 2")
        }
        2 => format!(
            "context.source_ip.isInRange(ip(\"{}\"))",
            rng.value(&NETWORKS, "10.0.0.0/99")
        ),
        3 => format!(
            "decimal(\"{}\").lessThan(decimal(\"{}\"))",
            rng.value(&DECIMALS, "one"),
            rng.value(&DECIMALS, "one")
        ),
        4 => format!(
            "principal is User && principal has {0} && principal.{0} == \"{1}\"",
            rng.value(&["email"], "no_such_attribute"),
            rng.pick(&VALUES)
        ),
        5 => format!(
            "User::\"{}\" == User::\"{}\" || context.method == \"{}\"",
            rng.pick(&VALUES),
            rng.pick(&VALUES),
            rng.pick(&VALUES)
        ),
        _ => format!(
            "resource has repository && resource.repository like \"{}*\"",
            rng.pick(&VALUES)
        ),
    };
    format!("{effect} ({principal}, {action}, {resource}) when {{ {condition} }};")
}

/// Sets whose representatives (chosen with `renaming`) pass strict
/// validation while the whole set fails it, out of generated sets.
fn unsafe_outcomes(renaming: Renaming) -> (usize, String) {
    let validator = validator();
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let (mut unsafe_sets, mut rejected, mut accepted, mut fewer) = (0, 0, 0, 0);
    let mut policies_seen = 0;
    let mut example = String::new();
    for _ in 0..400 {
        let size = 2 + (rng.next() % 24) as usize;
        let forms: Vec<u64> = (0..1 + rng.next() % 5).map(|_| rng.next() | 1).collect();
        let policies: Vec<String> = (0..size)
            .map(|_| {
                let form = forms[(rng.next() % forms.len() as u64) as usize];
                generated_policy(&mut Rng(form), &mut rng)
            })
            .collect();
        policies_seen += policies.len();
        let whole = set(&policies);
        let chosen = representatives_with(&whole, renaming).expect("every policy has a JSON form");
        if chosen.policies().count() < whole.policies().count() {
            fewer += 1;
        }
        if passes(&validator, &whole) {
            accepted += 1;
        } else {
            rejected += 1;
            if passes(&validator, &chosen) {
                unsafe_sets += 1;
                example = policies.join("\n");
            }
        }
    }
    assert!(policies_seen >= 5_000, "{policies_seen} policies");
    // The generator must exercise both outcomes and actual deduplication,
    // or the comparison proves nothing.
    assert!(
        accepted >= 50 && rejected >= 50,
        "{accepted} accepted, {rejected} rejected"
    );
    assert!(fewer >= 200, "only {fewer} sets had shape-mates");
    (unsafe_sets, example)
}

#[test]
fn representatives_never_pass_a_set_that_strict_validation_rejects() {
    let (unsafe_sets, example) = unsafe_outcomes(Renaming::SOUND);
    assert_eq!(unsafe_sets, 0, "for example:\n{example}");
}

#[test]
fn the_comparison_catches_every_unsound_shape_key() {
    for unsound in [
        Renaming {
            action_ids: true,
            ..Renaming::SOUND
        },
        Renaming {
            extension_arguments: true,
            ..Renaming::SOUND
        },
        Renaming {
            collapse_values: true,
            ..Renaming::SOUND
        },
    ] {
        let (unsafe_sets, _) = unsafe_outcomes(unsound);
        assert!(unsafe_sets > 0, "{unsound:?} went unnoticed");
    }
}

/// A valid policy followed by an invalid one that an unsound key would
/// give the same shape.
fn catches(renaming: Renaming, valid: &str, invalid: &str) {
    let validator = validator();
    let both = set(&[valid.to_string(), invalid.to_string()]);
    assert!(passes(&validator, &set(&[valid.to_string()])), "{valid}");
    assert!(!passes(&validator, &both), "{invalid}");
    let sound = representatives(&both).expect("JSON form");
    assert_eq!(
        sound.policies().count(),
        2,
        "the sound key tells them apart"
    );
    let unsound = representatives_with(&both, renaming).expect("JSON form");
    assert_eq!(
        unsound.policies().count(),
        1,
        "the unsound key must merge them"
    );
    assert!(
        passes(&validator, &unsound),
        "with the unsound key the invalid policy would have been accepted"
    );
}

#[test]
fn renaming_action_ids_would_accept_an_undeclared_action() {
    catches(
        Renaming {
            action_ids: true,
            ..Renaming::SOUND
        },
        r#"permit (principal, action == Action::"read", resource);"#,
        r#"permit (principal, action == Action::"no_such_action", resource);"#,
    );
}

#[test]
fn renaming_extension_arguments_would_accept_an_invalid_address() {
    catches(
        Renaming {
            extension_arguments: true,
            ..Renaming::SOUND
        },
        r#"permit (principal, action, resource) when { context.source_ip.isInRange(ip("10.0.0.0/8")) };"#,
        r#"permit (principal, action, resource) when { context.source_ip.isInRange(ip("10.0.0.0/99")) };"#,
    );
}

#[test]
fn losing_which_literals_are_equal_would_accept_an_ill_typed_branch() {
    catches(
        Renaming {
            collapse_values: true,
            ..Renaming::SOUND
        },
        r#"permit (principal, action, resource) when { if "a" == "a" then true else 1 + "x" == 2 };"#,
        r#"permit (principal, action, resource) when { if "a" == "b" then true else 1 + "x" == 2 };"#,
    );
}

#[test]
fn policies_differing_only_in_ids_and_strings_share_a_shape() {
    let policies: Vec<String> = (0..50)
        .map(|i| {
            format!(
                r#"permit (principal in Group::"team-{i}", action in [Action::"read", Action::"list"], resource in Path::"secret/teams/team-{i}") when {{ context.claims has repository && context.claims.repository == "org/repo-{i}" }};"#
            )
        })
        .collect();
    let chosen = representatives(&set(&policies)).expect("JSON form");
    assert_eq!(chosen.policies().count(), 1);
}
