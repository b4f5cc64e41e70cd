//! Secretgate approval service: holds high-risk secret requests until a human
//! approves. See README.md for the callout protocol and configuration.

pub mod app;
pub mod config;
pub mod protocol;
pub mod rules;
pub mod server;
pub mod session;
pub mod store;
pub mod util;
pub mod web;
pub mod webhook;
