//! Classification: a Vault HTTP request (method, raw path, namespace
//! header) to the Cedar action and resource, including path resolution
//! exactly as OpenBao does it. Runs once per request, before Cedar.

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, Criterion};
use secretgate::classify::{HttpRequest, MountTable};
use secretgate::templates::TemplateTable;

fn mounts() -> MountTable {
    let config: BTreeMap<String, String> = [
        ("secret", "kv-v2"),
        ("kv", "kv-v1"),
        ("database", "database"),
        ("aws", "aws"),
        ("pki", "pki"),
        ("transit", "transit"),
        ("teams/shared/kv", "kv-v2"),
        ("acme/platform/secret", "kv-v2"),
    ]
    .into_iter()
    .map(|(path, kind)| (path.to_owned(), kind.to_owned()))
    .collect();
    // The namespace the encoded case sends: an undeclared one is refused.
    MountTable::from_config(&config, &["acme/platform".to_owned()])
        .unwrap_or_else(|e| panic!("{e}"))
}

fn classify(c: &mut Criterion) {
    let table = mounts();
    let cases: [(&str, &str, &str, Option<&[u8]>); 6] = [
        (
            "kv2_read",
            "GET",
            "/v1/secret/data/teams/team-00050/app-0/db",
            None,
        ),
        (
            "kv2_list_query",
            "GET",
            "/v1/secret/metadata/teams/team-00050?list=true",
            None,
        ),
        ("kv1_write", "POST", "/v1/kv/teams/team-00050/legacy", None),
        (
            "database_creds",
            "GET",
            "/v1/database/creds/team-00050-ro",
            None,
        ),
        (
            "encoded_dots_and_namespace",
            "GET",
            "/v1/secret/data/teams/./team-00050/app-1/../app-0/%64b",
            Some(b"acme/platform"),
        ),
        (
            "sys_mounts_lookup",
            "GET",
            "/v1/sys/internal/ui/mounts/secret/teams/team-00050",
            None,
        ),
    ];
    let mut group = c.benchmark_group("classify");
    for (label, method, target, namespace) in cases {
        let request = HttpRequest {
            method,
            target,
            namespace,
        };
        table
            .classify(&request)
            .unwrap_or_else(|e| panic!("{label}: {e:?}"));
        group.bench_function(label, |b| b.iter(|| table.classify(&request)));
    }
    group.finish();
}

/// Path templates: the captures of a classified resource. Runs when a
/// request's scope is built (memoised per principal, action and resource).
fn templates(c: &mut Criterion) {
    let table = mounts();
    let templates = BTreeMap::from([(
        "secret".to_owned(),
        vec![
            "ci/{repository=*/*}/**".to_owned(),
            "prod/{repository=*/*}/**".to_owned(),
            "teams/{team}/{app}/**".to_owned(),
        ],
    )]);
    let templated = TemplateTable::new(table.paths(), &templates).unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("templates");
    for (label, target) in [
        (
            "third_template_matches",
            "/v1/secret/data/teams/team-00050/app-0/db",
        ),
        ("first_template_matches", "/v1/secret/data/ci/acme/api/db"),
        ("no_template_matches", "/v1/secret/data/shared/x/y"),
    ] {
        let resource = table
            .classify(&HttpRequest {
                method: "GET",
                target,
                namespace: None,
            })
            .unwrap_or_else(|e| panic!("{label}: {e:?}"))
            .resource;
        group.bench_function(label, |b| b.iter(|| templated.captures(&resource)));
    }
    group.finish();
}

criterion_group!(benches, classify, templates);
criterion_main!(benches);
