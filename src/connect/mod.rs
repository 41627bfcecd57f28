//! Connect: obtaining grants through real OAuth flows.
//!
//! A Connect *session* is the link handed to a user (through the agent) to authorize one or
//! more providers. Its URL carries a random token; only the token's hash is stored, so a
//! database dump yields no usable links. Each trip to a provider is an *attempt* with its own
//! `state` (CSRF, single use) and PKCE verifier (sealed at rest). The session is bound to the
//! principal that created it; the grant it produces belongs to that principal, whoever clicks.
//! The web pages that drive this live in `web/`; this module holds the logic.

pub mod oauth;
mod session;

pub use session::{
    CallbackOutcome, CallbackParams, ConnectStarted, ConnectView, ProviderItem, StartConnect,
};
