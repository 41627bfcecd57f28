//! Policies: what agents may do with a user's grants, checked on every call before any
//! credential is decrypted, failing closed.
//!
//! Configured under `[policy]` (global settings) and `[[policy.rules]]` (each rule matches by
//! provider, grant, user, caller kind, group, agent, request context, method, host and
//! path, and then allows, denies, requires approval,
//! and/or applies constraints: a stated reason, scopes, a time window, a rate limit, a grant
//! age). A policy that cannot be compiled denies every call and names the error.

mod eval;
mod rules;

pub use eval::{CallerFacts, Decision, PolicyInput, Slot};
pub use rules::{PolicySet, RuleView};
