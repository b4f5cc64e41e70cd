//! The approval service's reply. Input: one byte choosing the HTTP status
//! (none, 200, or another), then the body.
//!
//! Properties: no panic; only a 200 is ever accepted; accepted fields are
//! non-empty and bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secretgate::approval::{parse_reply, CalloutReply};

const MAX_FIELD_LEN: usize = 1024;

fn bounded(field: &str) {
    assert!(
        !field.is_empty() && field.len() <= MAX_FIELD_LEN,
        "{field:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let status = match selector % 4 {
        0 => None,
        1 => Some(u32::from(selector)),
        _ => Some(200),
    };
    let Ok(reply) = parse_reply(status, body) else {
        return;
    };
    assert_eq!(status, Some(200), "a non-200 reply was accepted");
    match &reply {
        CalloutReply::Approved {
            grant_id,
            approver,
            expires_at,
        } => {
            bounded(grant_id);
            bounded(approver);
            bounded(expires_at);
        }
        CalloutReply::Denied { approver, reason } => {
            bounded(approver);
            assert!(reason.chars().count() <= MAX_FIELD_LEN);
        }
        CalloutReply::Pending {
            approval_id,
            approval_url,
        } => {
            bounded(approval_id);
            bounded(approval_url);
        }
    }
});
