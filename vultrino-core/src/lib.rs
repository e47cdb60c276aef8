//! # vultrino-core
//!
//! All of Vultrino Edge's logic — crypto, credentials, policy, SSRF guard, auth, the execute
//! pipeline, scrubbing, audit and the HTTP API — with no I/O of its own. The outside world is reached
//! only through the [`ports`] traits, so the same code runs natively (the `vultrino` binary) and on
//! `wasm32-unknown-unknown` (Cloudflare Workers).
//!
//! The single entry point used by every backend is [`app::App::handle`].

pub mod error;
pub mod ports;

pub mod crypto;
pub mod policy;
pub mod scrub;
pub mod ssrf;

pub mod admin;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod credential;
pub mod execute;
pub mod mcp;
pub mod sync;
pub mod ui;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{Error, ErrorKind, Result};
