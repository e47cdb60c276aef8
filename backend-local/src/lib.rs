//! # vultrino-local
//!
//! The local backend of Vultrino Edge: port implementations (memory and file KV, memory session
//! store, outbound HTTP client, system clock), the hyper server and the `vultrino` CLI.

pub mod audit_cli;
pub mod audit_sinks;
pub mod busy_poll;
pub mod cli;
pub mod clock;
pub mod edge_sync;
pub mod fetcher;
pub mod file_kv;
pub mod keychain;
pub mod master_key;
pub mod mcp_stdio;
pub mod memory_kv;
pub mod memory_sessions;
pub mod metrics_listener;
pub mod remote;
pub mod rs256;
pub mod server;
pub mod setup;
mod store_io;
