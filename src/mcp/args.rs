//! Tool argument types. Their JSON Schemas (schemars) are the tools' `inputSchema`s, part of
//! the public contract (snapshotted in tests). Doc comments become field descriptions the model
//! reads, so they say what to put there.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A query parameter value: a string, number or boolean, or a list of them (repeats the name).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum QueryValue {
    One(Scalar),
    Many(Vec<Scalar>),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl Scalar {
    pub fn to_text(&self) -> String {
        match self {
            Scalar::Text(s) => s.clone(),
            Scalar::Number(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

// A context value: a string. Any other JSON is accepted here so the vault can refuse it with a
// message naming the key (and audit the refusal) instead of a bare parse error.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(inline)]
pub struct ContextValue(#[schemars(with = "String")] pub Value);

/// Arguments of `vault_request`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VaultRequestArgs {
    /// HTTP method: GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS.
    pub method: String,
    /// Absolute https URL of the provider's API, e.g. `https://api.github.com/repos/{owner}/{repo}/issues`.
    /// `{name}` placeholders in the path are filled from `path_params` and percent-encoded.
    pub url: String,
    /// Values for the `{name}` placeholders in `url`.
    #[serde(default)]
    pub path_params: BTreeMap<String, String>,
    /// Query parameters. A list value repeats the parameter (`?a=1&a=2`).
    #[serde(default)]
    pub query_params: BTreeMap<String, QueryValue>,
    /// Extra request headers, e.g. `Accept`. Never credential headers (Authorization, Cookie, API-key
    /// headers): the vault injects the credential itself.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON request body, sent as `application/json`. Do not combine with `body`.
    #[serde(default)]
    pub json: Option<Value>,
    /// Raw text request body (set `Content-Type` in `headers` if it is not plain text). Do not combine with `json`.
    #[serde(default)]
    pub body: Option<String>,
    /// The grant to use, from `list_grants`. Give either `grant_id` or `provider`.
    #[serde(default)]
    pub grant_id: Option<String>,
    /// Provider id from `list_providers`, e.g. `github`; the user's grant for it is used.
    #[serde(default)]
    pub provider: Option<String>,
    /// Which account to use when the user connected several accounts of `provider` (login or email).
    #[serde(default)]
    pub account: Option<String>,
    /// One sentence on why this call is made; recorded in the audit log and shown when a person must approve.
    #[serde(default)]
    pub reason: Option<String>,
    /// OAuth scopes this call needs, when known. If the grant lacks one, the result is
    /// `scope_reauth_required` with a Connect link instead of a failed call.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Why and for what this call is made, as string pairs recorded in the audit log and matched
    /// by policy, e.g. `{"ticket": "OPS-1432"}`. At most 20 keys (letters, digits, `_ . : -`, up
    /// to 64 characters), values up to 512 characters, 4 KB in all.
    #[serde(default)]
    pub context: BTreeMap<String, ContextValue>,
}

/// Arguments of `list_grants`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListGrantsArgs {
    /// Only grants for this provider id.
    #[serde(default)]
    pub provider: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` from the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Arguments of `list_providers`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListProvidersArgs {
    /// Only providers that can be used right now (OAuth app configured, or API-key based).
    #[serde(default)]
    pub configured_only: Option<bool>,
}

/// Scopes for `start_connect`: a list (when one provider is named) or a map of provider id to list.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ScopesArg {
    List(Vec<String>),
    PerProvider(BTreeMap<String, Vec<String>>),
}

/// Arguments of `start_connect`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartConnectArgs {
    /// Provider ids to connect, e.g. `["github"]`.
    pub providers: Vec<String>,
    /// Extra OAuth scopes to request beyond each provider's defaults.
    #[serde(default)]
    pub scopes: Option<ScopesArg>,
    /// Where the result page links back to when the user is done (optional).
    #[serde(default)]
    pub return_url: Option<String>,
    /// A named agent (see the operator's `vault-mcp agents list`) the user may let use the new
    /// grant without them: the Connect page offers a checkbox for it.
    #[serde(default)]
    pub agent: Option<String>,
    /// How long the new grant may be used, in seconds (e.g. 86400 for a day); it then answers
    /// `grant_expired`. Default: the provider's configured lifetime, else no expiry.
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
}

/// Arguments of `undelegate_grant`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UndelegateArgs {
    /// One of your grants (see `list_grants`, field `delegated_to`).
    pub grant_id: String,
    /// The agent to take it back from (its name).
    pub agent: String,
}

/// Arguments of `release_delegation`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseDelegationArgs {
    /// A grant delegated to you (see `list_grants`, `access: delegated`).
    pub grant_id: String,
}
