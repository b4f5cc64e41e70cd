//! Secretgate: a Cedar policy decision in front of Vault/OpenBao, as a
//! proxy-wasm filter.
//!
//! Everything but `adapter` is a pure core with no proxy-wasm calls, tested
//! and benchmarked natively; `adapter` binds it to the host.

pub mod approval;
pub mod audit;
pub mod bundle;
pub mod claims;
pub mod classify;
pub mod config;
pub mod explain;
pub mod gate;
pub mod identity;
mod masking;
mod memo;
pub mod mount_check;
pub mod pairs;
pub mod path;
pub mod policy;
pub mod policy_shape;
pub mod policy_text;
pub mod reads;
pub mod record;
pub mod replay;
pub mod report;
pub mod shapes;
pub mod templates;
pub mod usage;
pub mod verdict;
pub mod version;

#[cfg(target_arch = "wasm32")]
mod adapter;
