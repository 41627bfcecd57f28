//! vault-mcp: an MCP server that gives AI agents authenticated access to third-party APIs
//! without ever showing them a credential.
//!
//! Layers, top to bottom (each depends only on the ones below it):
//! - `transport` — stdio, Streamable HTTP, legacy SSE; `web` — Connect pages and OAuth callback
//! - `auth` — who is calling (local user, JWT, our own OAuth authorization server)
//! - `mcp` — tool schemas and result rendering over the `Vault` API; `sdk` — the Alter SDK's
//!   signed `/sdk/*` protocol over the same `Vault` API
//! - `vault` — the core: grants, policy, credentials, Connect, the outbound door, audit
//! - `store`, `crypto`, `providers` — persistence, encryption at rest, the provider catalog
//!
//! `config`, `secret`, `html` and `csrf` are shared helpers; `cli` wires everything for the binary.

pub mod auth;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod csrf;
/// Fuzz targets for the code that parses untrusted input (run by `fuzz/` and `tests/fuzz_corpus.rs`).
pub mod fuzzing;
pub mod html;
pub mod mcp;
pub mod model;
pub mod providers;
pub mod sdk;
pub mod secret;
pub mod store;
pub mod transport;
pub mod vault;
pub mod web;
