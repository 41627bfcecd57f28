//! Errors on `/sdk/*`, in the shape the Alter SDK maps to its typed exceptions:
//! `{"error": code, "message": text, …details}` with the status its table expects (for example
//! 403 `grant_expired` → GrantExpiredError, 404 → GrantNotFoundError, 409 `ambiguous_grant`).
//! Messages are the vault's own, which never contain secrets.

use axum::{
    Json,
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

use crate::{
    model::sdk_uuid,
    vault::{VaultError, release::ProxyReason},
};

#[derive(Debug)]
pub struct SdkError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub extra: Map<String, Value>,
    pub retry_after: Option<u64>,
}

impl SdkError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        SdkError {
            status,
            code: code.to_owned(),
            message: message.into(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    pub fn bad_request(field: &str, message: impl Into<String>) -> Self {
        SdkError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("{field}: {}", message.into()),
        )
        .with("field", json!(field))
    }

    pub fn not_implemented(what: &str) -> Self {
        SdkError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            format!(
                "{what} is not implemented by this vault-mcp server; see docs/sdk.md for the endpoints it serves"
            ),
        )
        .with("endpoint", json!(what))
    }

    pub fn unauthorized(code: &str, message: impl Into<String>) -> Self {
        SdkError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// The audit outcome for this refusal.
    pub fn outcome(&self) -> String {
        self.code.clone()
    }
}

impl From<VaultError> for SdkError {
    fn from(e: VaultError) -> Self {
        let message = e.to_string();
        let s = |status: StatusCode, code: &str| SdkError::new(status, code, message.clone());
        let mut err = match &e {
            VaultError::InvalidRequest { field, .. } => {
                s(StatusCode::BAD_REQUEST, "invalid_request").with("field", json!(field))
            }
            VaultError::UnknownProvider { provider, .. } => {
                s(StatusCode::NOT_FOUND, "provider_not_found").with("provider_id", json!(provider))
            }
            VaultError::AuthorizationRequired { provider, .. } => {
                s(StatusCode::NOT_FOUND, "grant_not_found").with("provider_id", json!(provider))
            }
            VaultError::ScopeReauthRequired {
                provider,
                grant_id,
                missing_scopes,
                ..
            } => s(StatusCode::FORBIDDEN, "scope_mismatch").with(
                "details",
                json!({
                    "grant_id": sdk_uuid(grant_id),
                    "provider_id": provider,
                    "missing_scopes": missing_scopes,
                }),
            ),
            VaultError::GrantNotFound { .. } => s(StatusCode::NOT_FOUND, "grant_not_found"),
            VaultError::AmbiguousGrant {
                provider,
                candidates,
            } => {
                let accounts: Vec<&str> = candidates.iter().map(|c| c.account.as_str()).collect();
                s(StatusCode::CONFLICT, "ambiguous_grant")
                    .with("provider_id", json!(provider))
                    .with("account_identifiers", json!(accounts))
                    .with("account_was_provided", json!(false))
                    .with(
                        "grant_ids",
                        json!(
                            candidates
                                .iter()
                                .map(|c| sdk_uuid(&c.grant_id))
                                .collect::<Vec<_>>()
                        ),
                    )
                    .with(
                        "candidates",
                        json!(
                            candidates
                                .iter()
                                .map(|c| json!({
                                    "grant_id": sdk_uuid(&c.grant_id),
                                    "label": null,
                                    "account_identifier": c.account,
                                    "account_display_name": null,
                                    "principal_type": c.principal_type,
                                }))
                                .collect::<Vec<_>>()
                        ),
                    )
            }
            VaultError::GrantExpired {
                grant_id, provider, ..
            } => s(StatusCode::FORBIDDEN, "grant_expired")
                .with("grant_id", json!(sdk_uuid(grant_id)))
                .with("provider_id", json!(provider)),
            VaultError::GrantRevoked { grant_id, .. } => s(StatusCode::FORBIDDEN, "grant_revoked")
                .with("grant_id", json!(sdk_uuid(grant_id))),
            VaultError::CredentialRevoked {
                grant_id, provider, ..
            } => s(StatusCode::FORBIDDEN, "credential_revoked")
                .with("grant_id", json!(sdk_uuid(grant_id)))
                .with("provider_id", json!(provider)),
            VaultError::ProviderNotConfigured { provider, .. } => {
                s(StatusCode::CONFLICT, "provider_configuration_unavailable")
                    .with("provider_id", json!(provider))
            }
            VaultError::BlockedDestination { host, .. } => {
                s(StatusCode::UNPROCESSABLE_ENTITY, "blocked_destination").with("host", json!(host))
            }
            VaultError::PolicyViolation { rule, .. } => {
                s(StatusCode::FORBIDDEN, "policy_violation").with("rule", json!(rule))
            }
            VaultError::ScopeNotAllowed {
                provider,
                scopes,
                allowed,
                ..
            } => s(StatusCode::FORBIDDEN, "agent_scope_not_allowed")
                .with("provider_id", json!(provider))
                .with("scopes", json!(scopes))
                .with("allowed", json!(allowed)),
            VaultError::ApprovalRequired { rule, .. } => {
                s(StatusCode::FORBIDDEN, "approval_required").with("rule", json!(rule))
            }
            VaultError::ApprovalDenied { rule, .. } => {
                s(StatusCode::FORBIDDEN, "approval_denied").with("rule", json!(rule))
            }
            VaultError::RateLimited {
                rule,
                retry_after_secs,
            } => {
                let mut e = s(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded")
                    .with("rule", json!(rule))
                    .with("retry_after", json!(retry_after_secs))
                    .with("scope", json!("api_key"));
                e.retry_after = Some(*retry_after_secs);
                e
            }
            VaultError::TokenRefreshFailed { grant_id, .. } => {
                s(StatusCode::SERVICE_UNAVAILABLE, "token_refresh_failed")
                    .with("grant_id", json!(sdk_uuid(grant_id)))
            }
            VaultError::ProviderUnauthorized { grant_id, .. } => {
                s(StatusCode::BAD_GATEWAY, "provider_unauthorized")
                    .with("grant_id", json!(sdk_uuid(grant_id)))
            }
            VaultError::Network { .. } => s(StatusCode::BAD_GATEWAY, "network_error"),
            VaultError::Timeout { .. } => s(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
                .with("timeout_reason", json!("upstream_timeout")),
            VaultError::RequiresProxy { reason, .. } => s(
                StatusCode::BAD_REQUEST,
                match reason {
                    ProxyReason::Delegated => "delegated_grant_requires_proxy",
                    ProxyReason::Approval => "hitl_grant_requires_proxy",
                    ProxyReason::Restricted => "restricted_grant_requires_proxy",
                },
            ),
            VaultError::Unauthenticated { .. } => s(StatusCode::UNAUTHORIZED, "agent_inactive"),
            VaultError::AuditUnavailable(_) | VaultError::Store(_) => {
                let mut e = s(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable");
                e.retry_after = Some(5);
                e
            }
            VaultError::Crypto(_) | VaultError::Internal(_) => {
                s(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
        };
        err.extra.insert("retryable".into(), json!(e.retryable()));
        if let Some(offer) = e.connect_offer() {
            err.extra
                .insert("connect_url".into(), json!(offer.connect_url));
        }
        err
    }
}

impl IntoResponse for SdkError {
    fn into_response(self) -> Response {
        let mut body = self.extra;
        body.insert("error".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        let mut r = (self.status, Json(Value::Object(body))).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        r
    }
}
