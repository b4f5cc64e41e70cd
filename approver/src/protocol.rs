//! The callout contract between the Secretgate filter and this service, from
//! the `approval-protocol` crate that the filter builds on too. Documented in
//! `approver/README.md`; changes there are changes to a public API.

pub use approval_protocol::{CalloutReply, CalloutRequest, Mode, Principal, DEFAULT_GRANT_TTL_S};
