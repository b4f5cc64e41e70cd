//! Live policy bundles: the bundle format, the digest check and the fetch
//! cycle's state machine. Input: one flags byte, then `\0`-separated parts:
//! the bundle body, then replies (`status selector, etag selector, body`)
//! fed to a fetch cycle.
//!
//! Properties: no panic; a body always matches its own SHA-256 (in the
//! `sha256sum` format too); the cycle only offers a candidate that passed
//! its digest, only answers "unchanged" when a bundle is in use, and is idle
//! after every conclusion.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secretgate::bundle::{self, BundleConfig, FetchCycle, FetchReply, FetchStep, MAX_BUNDLE_BYTES};
use secretgate::config::Config;
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bundle_config(digest: bool) -> BundleConfig {
    let mut json = serde_json::json!({"cluster": "bundles", "authority": "bundles.local"});
    if digest {
        json["digest_path"] = "/bundle.json.sha256".into();
    }
    serde_json::from_value(json).expect("fixed bundle config parses")
}

thread_local! {
    /// The repository's policies as the inline configuration a bundle overrides.
    static BASE: Config = {
        let json = serde_json::json!({
            "schema": include_str!("../../policies/schema.cedarschema"),
            "policies": include_str!("../../policies/policies.cedar"),
            "entities": serde_json::from_str::<serde_json::Value>(
                include_str!("../../policies/entities.json")).expect("entities.json"),
            "mounts": {"secret": "kv-v2", "kv": "kv-v1"},
            "identity": {"source": "header", "header": "x-secretgate-principal"},
        });
        match Config::from_json(json.to_string().as_bytes()) {
            Ok(config) => config,
            Err(e) => panic!("the repository's configuration is refused: {e}"),
        }
    };
}

const STATUSES: [Option<u32>; 6] = [None, Some(200), Some(304), Some(404), Some(500), Some(200)];
const ETAGS: [Option<&str>; 3] = [None, Some("\"e1\""), Some("\"e2\"")];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.split(|&b| b == 0);
    let body = parts.next().unwrap_or_default();

    if let Ok(parsed) = bundle::parse(body) {
        if flags & 2 != 0 {
            BASE.with(|base| {
                let _ = base.with_bundle(parsed);
            });
        }
    }

    let digest = hex(&Sha256::digest(body));
    assert_eq!(bundle::verify_digest(body, digest.as_bytes()), Ok(()));
    let sha256sum = format!("{}  bundle.json\n", digest.to_ascii_uppercase());
    assert_eq!(bundle::verify_digest(body, sha256sum.as_bytes()), Ok(()));

    let config = bundle_config(flags & 1 != 0);
    let mut cycle = FetchCycle::default();
    let mut in_use: Option<String> = None;
    let mut bundle_body: Option<Vec<u8>> = None;
    for reply in parts {
        let (status, etag, reply_body) = match reply {
            [s, e, body @ ..] => (
                STATUSES[usize::from(*s) % 6],
                ETAGS[usize::from(*e) % 3],
                body,
            ),
            _ => (None, None, &[][..]),
        };
        if !cycle.busy() {
            let request = cycle.start(&config);
            assert_eq!(request.if_none_match, in_use);
            bundle_body = None;
        }
        let awaiting_digest = bundle_body.is_some();
        let step = cycle.on_reply(
            &config,
            FetchReply {
                status,
                etag,
                body: reply_body,
            },
        );
        match step {
            FetchStep::Send(request) => {
                assert_eq!(Some(&request.path), config.digest_path.as_ref());
                assert!(!awaiting_digest);
                bundle_body = Some(reply_body.to_vec());
            }
            FetchStep::Unchanged => {
                assert!(in_use.is_some() && !awaiting_digest && status == Some(304));
            }
            FetchStep::Candidate { body, etag } => {
                assert!(body.len() <= MAX_BUNDLE_BYTES);
                assert_eq!(status, Some(200));
                if config.digest_path.is_some() {
                    assert!(awaiting_digest);
                    assert_eq!(Some(&body), bundle_body.as_ref());
                    assert_eq!(bundle::verify_digest(&body, reply_body), Ok(()));
                } else {
                    assert_eq!(body, reply_body);
                }
                cycle.accepted(etag.clone());
                in_use = etag;
            }
            FetchStep::Failed(_) => {}
        }
        if !cycle.busy() {
            bundle_body = None;
        }
    }
});
