//! Tool results: one output type per tool (their JSON Schemas are the `outputSchema`s), and the
//! rendering of vault errors into results the model can act on. `authorization_required` and
//! `scope_reauth_required` are normal results; other failures set `isError`; malformed
//! arguments are JSON-RPC invalid-params errors.

use std::collections::BTreeMap;

use rmcp::model::{CallToolResult, ContentBlock, ErrorData};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::vault::{ApiResponse, GrantCandidate, GrantView, ProviderView, VaultError};

/// Result of `vault_request`: the provider's response, or an `error` code with what to do.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct VaultRequestOutput {
    /// HTTP status the provider answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// True for 2xx/3xx statuses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// A safe subset of response headers (content type, pagination, rate limits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Response body: parsed JSON, text, or base64 (see `body_encoding`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// `json`, `text`, `base64`, `empty`, or `withheld` (body not returned; `body` says why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// True when the body was cut at the size limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Id of this call in the audit log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(flatten)]
    pub problem: Problem,
}

/// The error part shared by all tool results.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Problem {
    /// Stable error code (see the error table in the docs), e.g. `authorization_required`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What happened and what to do, in words to relay to the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Link the user opens to connect or re-authorize the provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_url: Option<String>,
    /// When `connect_url` stops working.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Connect session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Scopes the grant lacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_scopes: Option<Vec<String>>,
    /// Accounts to choose from (`ambiguous_grant`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<String>>,
    /// The grants an ambiguous call could mean; retry with one `grant_id` (`ambiguous_grant`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Vec<GrantCandidate>>,
    /// Scopes the call asked for that the agent may not use (`scope_not_allowed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_allowed_scopes: Option<Vec<String>>,
    /// Scopes the agent may use on this provider (`scope_not_allowed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_scopes: Option<Vec<String>>,
    /// Field of the arguments that is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Policy rule that decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// True when the same call may succeed later without user action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// Approval to ask the user for (`approval_required`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// Page where the user approves (`approval_required`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_url: Option<String>,
}

/// Result of `list_grants`.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct ListGrantsOutput {
    pub grants: Vec<GrantView>,
    /// Pass as `cursor` to get the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    pub total: usize,
    #[serde(flatten)]
    pub problem: Problem,
}

/// Result of `list_providers`.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct ListProvidersOutput {
    pub providers: Vec<ProviderView>,
}

/// Result of `start_connect`.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct StartConnectOutput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub providers: Option<Vec<String>>,
    /// Scopes that will be requested, per provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<BTreeMap<String, Vec<String>>>,
    /// The agent the user will be offered to delegate the grant to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// How long the new grant will live, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    #[serde(flatten)]
    pub problem: Problem,
}

/// Result of `undelegate_grant` and `release_delegation`.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct DelegationOutput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// False when there was no such delegation (nothing to do; the call is idempotent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    #[serde(flatten)]
    pub problem: Problem,
}

/// Codes that are normal results (the model relays a link), not failures.
fn is_normal_result(code: &str) -> bool {
    matches!(code, "authorization_required" | "scope_reauth_required")
}

/// The problem description of a vault error.
pub fn problem(e: &VaultError) -> Problem {
    let mut p = Problem {
        error: Some(e.code().to_owned()),
        message: Some(e.to_string()),
        retryable: Some(e.retryable()),
        ..Default::default()
    };
    if let Some(offer) = e.connect_offer() {
        p.connect_url = Some(offer.connect_url.clone());
        p.expires_at = Some(offer.expires_at.clone());
        p.session_id = Some(offer.session_id.clone());
    }
    match e {
        VaultError::ScopeReauthRequired { missing_scopes, .. } => {
            p.missing_scopes = Some(missing_scopes.clone())
        }
        VaultError::AmbiguousGrant { candidates, .. } => {
            let mut accounts: Vec<String> = candidates.iter().map(|c| c.account.clone()).collect();
            accounts.dedup();
            p.accounts = Some(accounts);
            p.candidates = Some(candidates.clone());
        }
        VaultError::ScopeNotAllowed {
            scopes, allowed, ..
        } => {
            p.not_allowed_scopes = Some(scopes.clone());
            p.allowed_scopes = Some(allowed.clone());
        }
        VaultError::InvalidRequest { field, .. } => p.field = Some(field.clone()),
        VaultError::PolicyViolation { rule, .. } | VaultError::ApprovalDenied { rule, .. } => {
            p.rule = Some(rule.clone())
        }
        VaultError::ApprovalRequired {
            rule,
            approval_id,
            approval_url,
            ..
        } => {
            p.rule = Some(rule.clone());
            p.approval_id = approval_id.clone();
            p.approval_url = approval_url.clone();
        }
        VaultError::RateLimited {
            rule,
            retry_after_secs,
        } => {
            p.rule = Some(rule.clone());
            p.retry_after_secs = Some(*retry_after_secs);
        }
        _ => {}
    }
    p
}

/// Turn a vault error into the tool's answer: invalid arguments become JSON-RPC errors; the rest
/// become results carrying `structuredContent` in the tool's output shape.
pub fn error_result<T: Serialize>(
    e: &VaultError,
    wrap: impl FnOnce(Problem) -> T,
) -> Result<CallToolResult, ErrorData> {
    if let VaultError::InvalidRequest { field, message } = e {
        return Err(ErrorData::invalid_params(
            format!("{field}: {message}"),
            Some(serde_json::json!({ "error": "invalid_request", "field": field })),
        ));
    }
    let code = e.code();
    let value = serde_json::to_value(wrap(problem(e))).expect("output serializes");
    let text = format!("{code}: {e}");
    let mut r = if is_normal_result(code) {
        CallToolResult::structured(value)
    } else {
        CallToolResult::structured_error(value)
    };
    r.content = vec![ContentBlock::text(text)];
    Ok(r)
}

/// A successful result: structured content plus a JSON text copy for clients that ignore it.
pub fn ok_result<T: Serialize>(out: &T) -> CallToolResult {
    let value = serde_json::to_value(out).expect("output serializes");
    CallToolResult::structured(value)
}

/// The result of a call through the vault (`vault_request` and pack tools alike): the provider's
/// answer (`isError` for HTTP error statuses), or the vault error in the same output shape.
pub fn request_result(r: Result<ApiResponse, VaultError>) -> Result<CallToolResult, ErrorData> {
    match r {
        Ok(resp) => {
            let ok = resp.ok;
            let mut result = ok_result(&VaultRequestOutput::from(resp));
            if !ok {
                result.is_error = Some(true);
            }
            Ok(result)
        }
        Err(e) => error_result(&e, |problem| VaultRequestOutput {
            provider: e.provider().map(str::to_owned),
            problem,
            ..Default::default()
        }),
    }
}

impl From<ApiResponse> for VaultRequestOutput {
    fn from(r: ApiResponse) -> Self {
        let (status, ok) = (r.status, r.ok);
        let mut out = VaultRequestOutput {
            status: Some(r.status),
            ok: Some(r.ok),
            headers: Some(r.headers),
            body: Some(r.body),
            body_encoding: Some(r.body_encoding),
            content_type: r.content_type,
            truncated: Some(r.truncated),
            size_bytes: Some(r.size_bytes),
            grant_id: Some(r.grant_id),
            provider: Some(r.provider),
            account: Some(r.account),
            call_id: Some(r.call_id),
            latency_ms: Some(r.latency_ms),
            problem: Problem::default(),
        };
        if !ok {
            out.problem.error = Some("provider_error".into());
            out.problem.message = Some(format!(
                "the provider answered HTTP {status}; the response body is included"
            ));
            out.problem.retryable = Some(status == 429 || status >= 500);
        }
        out
    }
}
