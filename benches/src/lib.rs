//! Shared by the criterion benches and the load benchmark (`load.py`):
//! generated policy sets of a given size, so micro and load measure the
//! same sets, and the small HTTP servers the load benchmark runs.

pub mod access_log;
pub mod policyset;
pub mod serve;

/// The static upstream's reply to every request: an OpenBao KV v2 read, so
/// an allowed request also pays for the response's audit and masking.
pub const KV2_READ_REPLY: &str = concat!(
    r#"{"request_id":"8c4de05e-7d95-c7d4-5d9d-64877af12acf","lease_id":"","renewable":false,"#,
    r#""lease_duration":0,"data":{"data":{"password":"FAKE-bench-db-password-3b1f","username":"app"},"#,
    r#""metadata":{"created_time":"2026-11-28T12:41:48.082100271Z","custom_metadata":null,"#,
    r#""deletion_time":"","destroyed":false,"version":1}},"wrap_info":null,"warnings":null,"auth":null}"#,
    "\n"
);
