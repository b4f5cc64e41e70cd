//! Request classification: method, `:path` and `X-Vault-Namespace` as the
//! filter sees them. Input: `method \0 target [\0 namespace [\0 mounts]]`,
//! where `mounts` is `path=type` lines (and `@namespace` lines) for a
//! second, fuzzed mount table.
//!
//! Properties: no panic; a classified request's canonical form classifies
//! to the same action and resource (OpenBao is sent what was authorised).
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use secretgate::classify::{HttpRequest, MountTable};
use secretgate::path::ApiPath;

/// The mounts of plugin/tests/classification_cases.json.
fn fixed_table() -> &'static MountTable {
    static TABLE: OnceLock<MountTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mounts: BTreeMap<String, String> = [
            ("secret", "kv-v2"),
            ("kv", "kv-v1"),
            ("team/kv", "kv-v1"),
            ("team/secret", "kv-v2"),
            ("nsx/secret", "kv-v2"),
            ("database", "database"),
            ("aws", "aws"),
            ("pki", "pki"),
            ("transit", "transit"),
        ]
        .into_iter()
        .map(|(p, t)| (p.to_owned(), t.to_owned()))
        .collect();
        MountTable::from_config(&mounts, &["nsx".to_owned()])
            .expect("the fixed mount table is valid")
    })
}

fn check(table: &MountTable, request: &HttpRequest<'_>) {
    let Ok(first) = table.classify(request) else {
        return;
    };
    let namespace = (!first.namespace.is_empty()).then_some(first.namespace.as_bytes());
    let again = HttpRequest {
        method: request.method,
        target: &first.canonical_target,
        namespace,
    };
    match table.classify(&again) {
        Ok(second) => {
            assert_eq!(first.action, second.action, "{request:?} vs {again:?}");
            assert_eq!(first.resource, second.resource, "{request:?} vs {again:?}");
            assert_eq!(first.canonical_target, second.canonical_target);
            assert_eq!(first.namespace, second.namespace);
            assert_eq!(first.mount_type, second.mount_type);
        }
        Err(e) => panic!("canonical form {again:?} of {request:?} is refused: {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |&b| b == 0);
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let namespace = parts.next();
    let mounts = parts.next();

    let Ok(method) = std::str::from_utf8(method) else {
        return;
    };
    // `:path` reaches the filter as bytes; the adapter refuses non-UTF-8.
    let Ok(target) = std::str::from_utf8(target) else {
        return;
    };
    let _ = ApiPath::parse(target);
    let request = HttpRequest {
        method,
        target,
        namespace,
    };
    check(fixed_table(), &request);

    if let Some(mounts) = mounts {
        let text = String::from_utf8_lossy(mounts);
        let config: BTreeMap<String, String> = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(p, t)| (p.to_owned(), t.to_owned()))
            .collect();
        let namespaces: Vec<String> = text
            .lines()
            .filter_map(|line| line.strip_prefix('@'))
            .map(str::to_owned)
            .collect();
        if let Ok(table) = MountTable::from_config(&config, &namespaces) {
            check(&table, &request);
        }
    }
});
