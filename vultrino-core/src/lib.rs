//! # vultrino-core
//!
//! All of Vultrino Edge's logic — crypto, credentials, policy, SSRF guard, auth, the execute
//! pipeline, scrubbing, audit and the HTTP API — with no I/O of its own. The outside world is reached
//! only through the [`ports`] traits, so the same code runs natively (the `vultrino` binary) and on
//! `wasm32-unknown-unknown` (Cloudflare Workers).
//!
//! The single entry point used by every backend is [`app::App::handle`]; [`app::App`] is where a
//! deployment is opened and where each concern below is reached.
//!
//! | concern | module |
//! |---|---|
//! | configuration, ports, the composition root | [`app`] |
//! | HTTP routing and replies; CORS | [`api`], [`cors`] |
//! | request and response bodies, whole or streamed | [`body`] |
//! | `Send`/`Sync` bounds that vanish on wasm32 (re-exported by [`ports`]) | [`maybe_send`] |
//! | who is calling: keys, sessions, CSRF, client address, roles | [`auth`] |
//! | credential records, their storage and injection | [`credential`] |
//! | the execute pipeline | [`execute`] |
//! | the pass-through proxy (`/proxy/{alias}/…`, streamed) | [`proxy`] |
//! | the outgoing request and what a reply may not carry | [`upstream`] |
//! | OAuth2 token fetching and caching | [`oauth`] |
//! | the change lock and version claims | [`change`] |
//! | policy checks, SSRF guard, scrubbing | [`policy`], [`ssrf`], [`scrub`] |
//! | audit events and the audit log | [`audit`] |
//! | keys, envelopes, password hashes; the stored keyring | [`crypto`], [`keyring`] |
//! | hybrid sync | [`sync`] |
//! | MCP (dispatcher, tools, Streamable HTTP) | [`mcp`] |
//! | the admin web UI | [`ui`] |
//! | errors and their wire codes; reading client input | [`error`], [`input`] |
//! | secret values | [`secret`] |

pub mod body;
pub mod error;
pub mod maybe_send;
pub mod ports;

pub mod crypto;
pub mod input;
pub mod kv;
pub mod policy;
mod public_suffix;
pub mod scrub;
pub mod secret;
pub mod ssrf;

pub mod agent_key;
pub mod api;
pub mod app;
pub mod approval_webhook;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod change;
pub mod cors;
pub mod credential;
pub mod execute;
pub mod keyring;
pub mod mcp;
pub mod metrics;
pub mod oauth;
pub mod proxy;
pub mod proxy_caps;
pub mod sync;
pub mod time;
pub mod ui;
pub mod upstream;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{Code, Error, ErrorKind, Result};
