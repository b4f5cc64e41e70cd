//! JSON with a fixed byte form: object keys sorted, no whitespace. The
//! OCI types keep annotations in a `HashMap`, whose order changes from run
//! to run; a manifest's digest is the digest of its bytes, so its bytes
//! must not.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::PackageError;

/// `value` as compact JSON with every object's keys in byte order.
pub fn to_vec(value: &impl Serialize) -> Result<Vec<u8>, PackageError> {
    let tree = serde_json::to_value(value).map_err(|e| PackageError::at("encoding JSON", e))?;
    serde_json::to_vec(&sorted(tree)).map_err(|e| PackageError::at("encoding JSON", e))
}

/// The same tree with every object rebuilt in sorted key order. Rebuilding
/// (not only relying on `Map`'s order) keeps the form fixed even when some
/// crate in the build turns on serde_json's `preserve_order`.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = Map::new();
            for (key, inner) in entries {
                out.insert(key, sorted(inner));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn keys_come_out_sorted_at_every_depth() {
        let value = serde_json::json!({"b": {"z": 1, "a": [{"y": 2, "x": 3}]}, "a": "v"});
        let bytes = to_vec(&value).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"a":"v","b":{"a":[{"x":3,"y":2}],"z":1}}"#
        );
    }

    #[test]
    fn a_hash_map_encodes_to_the_same_bytes_whatever_its_insertion_order() {
        let forward: HashMap<String, String> = (0..50)
            .map(|i| (format!("key{i}"), i.to_string()))
            .collect();
        let backward: HashMap<String, String> = (0..50)
            .rev()
            .map(|i| (format!("key{i}"), i.to_string()))
            .collect();
        assert_eq!(to_vec(&forward).unwrap(), to_vec(&backward).unwrap());
    }
}
