//! The vault's error taxonomy. Each variant maps to one stable code (see `docs/errors.md`);
//! messages say what happened and what to do, and never contain secrets.

use serde::Serialize;

use crate::{crypto::CryptoError, model::AuditOutcome, store::StoreError};

/// A Connect link offered to repair a missing, short or dead grant.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConnectOffer {
    pub connect_url: String,
    pub expires_at: String,
    pub session_id: String,
}

/// One of the grants an ambiguous call could mean.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct GrantCandidate {
    pub grant_id: String,
    pub account: String,
    /// Whose grant it is: `user`, `group`, `app` or `agent`.
    pub principal_type: crate::model::PrincipalKind,
    /// The owner's label: the group's name, `app`, an agent's name; empty for the caller's own.
    pub principal: String,
    /// How the caller reaches it: `own`, `group`, `access_set` or `delegated`.
    pub access: crate::model::Access,
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Bad arguments: the caller must change the request.
    #[error("{field}: {message}")]
    InvalidRequest { field: String, message: String },

    #[error("unknown provider `{provider}`{}; known providers: {known}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownProvider {
        provider: String,
        suggestion: Option<String>,
        known: String,
    },

    #[error("{message}")]
    AuthorizationRequired {
        provider: String,
        message: String,
        connect: Option<Box<ConnectOffer>>,
    },

    #[error("{message}")]
    ScopeReauthRequired {
        provider: String,
        grant_id: String,
        missing_scopes: Vec<String>,
        message: String,
        connect: Option<Box<ConnectOffer>>,
    },

    #[error("no grant `{grant_id}` is visible to you; call list_grants to see your grants")]
    GrantNotFound { grant_id: String },

    #[error("several {provider} grants fit ({}); pass `grant_id` with one of them (or `account` when the accounts differ)", candidates.iter().map(|c| format!("{} = {} ({})", c.grant_id, c.account, c.principal_type)).collect::<Vec<_>>().join(", "))]
    AmbiguousGrant {
        provider: String,
        candidates: Vec<GrantCandidate>,
    },

    #[error("{message}")]
    ScopeNotAllowed {
        provider: String,
        /// The scopes asked for that the agent may not use.
        scopes: Vec<String>,
        /// What the agent's access set allows on this provider.
        allowed: Vec<String>,
        message: String,
    },

    /// The SDK's raw-token mode refused: this call must go through the vault.
    #[error("{message}")]
    RequiresProxy {
        reason: super::release::ProxyReason,
        message: String,
    },

    /// The caller's identity stopped being valid after it authenticated (an agent disabled or
    /// deleted mid-session).
    #[error("{message}")]
    Unauthenticated { message: String },

    #[error("grant {grant_id} for {provider} expired; the user must connect again")]
    GrantExpired {
        grant_id: String,
        provider: String,
        connect: Option<Box<ConnectOffer>>,
    },

    #[error(
        "grant {grant_id} for {provider} was revoked; the user must connect again to use {provider}"
    )]
    GrantRevoked {
        grant_id: String,
        provider: String,
        connect: Option<Box<ConnectOffer>>,
    },

    #[error(
        "{provider} no longer accepts the stored credential of grant {grant_id} (revoked or expired at the provider); the user must reconnect"
    )]
    CredentialRevoked {
        grant_id: String,
        provider: String,
        connect: Option<Box<ConnectOffer>>,
    },

    #[error("provider `{provider}` is not configured: {hint}")]
    ProviderNotConfigured { provider: String, hint: String },

    #[error("blocked destination: {message}")]
    BlockedDestination { host: String, message: String },

    #[error("policy violation ({rule}): {message}")]
    PolicyViolation { rule: String, message: String },

    #[error("{message}")]
    ApprovalRequired {
        rule: String,
        message: String,
        approval_id: Option<String>,
        approval_url: Option<String>,
    },

    #[error("{message}")]
    ApprovalDenied { rule: String, message: String },

    #[error("rate limit reached ({rule}); retry in {retry_after_secs}s")]
    RateLimited { rule: String, retry_after_secs: u64 },

    #[error(
        "refreshing the {provider} token failed ({message}); this is usually temporary, retry shortly"
    )]
    TokenRefreshFailed {
        grant_id: String,
        provider: String,
        message: String,
    },

    #[error("{provider} rejected the credential of grant {grant_id} (HTTP 401){}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    ProviderUnauthorized {
        grant_id: String,
        provider: String,
        detail: Option<String>,
    },

    #[error("network error calling {host}: {message}")]
    Network { host: String, message: String },

    #[error("{host} did not answer within {secs}s")]
    Timeout { host: String, secs: u64 },

    #[error(
        "the call was not made because the audit log cannot be written ({0}); check disk space and the database"
    )]
    AuditUnavailable(String),

    #[error("storage: {0}")]
    Store(#[from] StoreError),

    #[error("encryption: {0}")]
    Crypto(#[from] CryptoError),

    #[error("internal error: {0}")]
    Internal(String),
}

impl VaultError {
    /// The stable, documented error code.
    pub fn code(&self) -> &'static str {
        match self {
            VaultError::InvalidRequest { .. } => "invalid_request",
            VaultError::UnknownProvider { .. } => "unknown_provider",
            VaultError::AuthorizationRequired { .. } => "authorization_required",
            VaultError::ScopeReauthRequired { .. } => "scope_reauth_required",
            VaultError::GrantNotFound { .. } => "grant_not_found",
            VaultError::AmbiguousGrant { .. } => "ambiguous_grant",
            VaultError::ScopeNotAllowed { .. } => "scope_not_allowed",
            VaultError::Unauthenticated { .. } => "unauthenticated",
            VaultError::RequiresProxy { .. } => "requires_proxy",
            VaultError::GrantExpired { .. } => "grant_expired",
            VaultError::GrantRevoked { .. } => "grant_revoked",
            VaultError::CredentialRevoked { .. } => "credential_revoked",
            VaultError::ProviderNotConfigured { .. } => "provider_not_configured",
            VaultError::BlockedDestination { .. } => "blocked_destination",
            VaultError::PolicyViolation { .. } => "policy_violation",
            VaultError::ApprovalRequired { .. } => "approval_required",
            VaultError::ApprovalDenied { .. } => "approval_denied",
            VaultError::RateLimited { .. } => "rate_limited",
            VaultError::TokenRefreshFailed { .. } => "token_refresh_failed",
            VaultError::ProviderUnauthorized { .. } => "provider_unauthorized",
            VaultError::Network { .. } => "network_error",
            VaultError::Timeout { .. } => "timeout",
            VaultError::AuditUnavailable(_) => "audit_unavailable",
            VaultError::Store(_) => "storage_error",
            VaultError::Crypto(_) => "encryption_error",
            VaultError::Internal(_) => "internal_error",
        }
    }

    /// The code as the audit trail records it.
    pub fn outcome(&self) -> AuditOutcome {
        AuditOutcome::parse(self.code()).expect("every error code is an audit outcome")
    }

    /// Whether retrying the same call later can succeed without user action.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            VaultError::RateLimited { .. }
                | VaultError::TokenRefreshFailed { .. }
                | VaultError::Network { .. }
                | VaultError::Timeout { .. }
                | VaultError::AuditUnavailable(_)
                | VaultError::Store(StoreError::Unavailable(_))
        )
    }

    pub fn connect_offer(&self) -> Option<&ConnectOffer> {
        match self {
            VaultError::AuthorizationRequired { connect, .. }
            | VaultError::ScopeReauthRequired { connect, .. }
            | VaultError::GrantExpired { connect, .. }
            | VaultError::GrantRevoked { connect, .. }
            | VaultError::CredentialRevoked { connect, .. } => connect.as_deref(),
            _ => None,
        }
    }

    pub fn provider(&self) -> Option<&str> {
        match self {
            VaultError::AuthorizationRequired { provider, .. }
            | VaultError::ScopeReauthRequired { provider, .. }
            | VaultError::AmbiguousGrant { provider, .. }
            | VaultError::ScopeNotAllowed { provider, .. }
            | VaultError::GrantExpired { provider, .. }
            | VaultError::GrantRevoked { provider, .. }
            | VaultError::CredentialRevoked { provider, .. }
            | VaultError::ProviderNotConfigured { provider, .. }
            | VaultError::TokenRefreshFailed { provider, .. }
            | VaultError::ProviderUnauthorized { provider, .. }
            | VaultError::UnknownProvider { provider, .. } => Some(provider),
            _ => None,
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        VaultError::InvalidRequest {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Every code with its meaning and what to do: the source of `docs/errors.md` and
/// `vault-mcp errors`. A test keeps this list and [`VaultError::code`] in step.
pub const ERROR_CODES: &[(&str, &str, &str)] = &[
    (
        "invalid_request",
        "The arguments are malformed (sent as JSON-RPC invalid params, -32602).",
        "Fix the named field and call again.",
    ),
    (
        "unknown_provider",
        "No provider with that id exists.",
        "Use an id from list_providers.",
    ),
    (
        "authorization_required",
        "The user has no grant for this provider (a normal result, not an error).",
        "Show the user connect_url; retry after they finish.",
    ),
    (
        "scope_reauth_required",
        "The grant lacks scopes the call needs (a normal result).",
        "Show the user connect_url to approve the missing scopes; retry after.",
    ),
    (
        "grant_not_found",
        "The grant id does not exist or belongs to someone else.",
        "Call list_grants, or use provider instead of grant_id.",
    ),
    (
        "ambiguous_grant",
        "Several grants fit the call: several accounts, or your own and a group's (listed in candidates).",
        "Retry with grant_id (one of candidates), or account when the accounts differ.",
    ),
    (
        "scope_not_allowed",
        "The calling agent's access set does not allow a scope the call needs, or the grant carries scopes beyond it and the call declared none.",
        "Declare required_scopes within `allowed`, or ask the operator to widen the agent's scopes.",
    ),
    (
        "requires_proxy",
        "SDK raw-token mode only: the credential of a delegated, approval-gated or metered grant is not handed out.",
        "Make the call through the vault (the SDK's proxy_request, or MCP's vault_request).",
    ),
    (
        "unauthenticated",
        "The caller's identity is no longer valid: the agent was disabled or deleted, or its key was rotated out.",
        "The operator checks `vault-mcp agents show NAME`; reconnect with a current key.",
    ),
    (
        "grant_expired",
        "The grant passed its expiry time.",
        "Ask the user to reconnect (connect_url when offered).",
    ),
    (
        "grant_revoked",
        "The grant was revoked in the vault.",
        "Ask the user to reconnect.",
    ),
    (
        "credential_revoked",
        "The provider no longer accepts the refresh token (invalid_grant).",
        "Ask the user to open connect_url to repair the grant.",
    ),
    (
        "provider_not_configured",
        "The OAuth app for the provider has no client id/secret.",
        "The operator sets VAULT_MCP_PROVIDER_<ID>_CLIENT_ID/_SECRET or config.",
    ),
    (
        "blocked_destination",
        "The URL is not one of the provider's API hosts, is not https, or has userinfo.",
        "Call the provider's documented API host over https.",
    ),
    (
        "policy_violation",
        "A policy rule denied the call.",
        "Relay the message; do not retry the same call.",
    ),
    (
        "approval_required",
        "A policy rule requires a person's approval and the client cannot ask for it.",
        "Give the user approval_url (or `vault-mcp approvals approve <approval_id>`), then retry the same call once.",
    ),
    (
        "approval_denied",
        "The person asked to approve the call declined, or did not answer in time.",
        "Do not retry unless the user asks you to.",
    ),
    (
        "rate_limited",
        "A vault rate limit was reached.",
        "Wait retry_after_secs, then retry.",
    ),
    (
        "token_refresh_failed",
        "Refreshing the access token failed for a temporary reason.",
        "Retry shortly.",
    ),
    (
        "provider_unauthorized",
        "The provider answered 401 to the stored credential.",
        "Check the request; if it persists, reconnect with start_connect.",
    ),
    (
        "provider_error",
        "The provider answered with an HTTP error status; its response is included.",
        "Read status and body; fix the request or retry on 429/5xx.",
    ),
    (
        "network_error",
        "The provider could not be reached.",
        "Retry later.",
    ),
    (
        "timeout",
        "The provider did not answer in time.",
        "Retry later, or raise request.timeout_secs.",
    ),
    (
        "audit_unavailable",
        "The audit record could not be written, so no result is returned.",
        "The operator checks disk space and the database.",
    ),
    (
        "storage_error",
        "The vault database failed.",
        "The operator checks `vault-mcp doctor`.",
    ),
    (
        "encryption_error",
        "A stored record could not be decrypted (wrong master key or tampering).",
        "The operator checks the master key with `vault-mcp doctor`.",
    ),
    ("internal_error", "A bug.", "Report it with the call id."),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_documented_once() {
        let docs = include_str!("../../docs/errors.md");
        let mut seen = std::collections::BTreeSet::new();
        for (code, _, _) in ERROR_CODES {
            assert!(seen.insert(*code), "{code} listed twice");
            assert!(
                docs.contains(&format!("`{code}`")),
                "{code} missing from docs/errors.md"
            );
        }
        let samples = [
            VaultError::invalid("f", "m"),
            VaultError::GrantNotFound {
                grant_id: "g".into(),
            },
            VaultError::AuditUnavailable("x".into()),
            VaultError::Internal("x".into()),
            VaultError::Timeout {
                host: "h".into(),
                secs: 1,
            },
            VaultError::BlockedDestination {
                host: "h".into(),
                message: "m".into(),
            },
        ];
        for e in samples {
            assert!(seen.contains(e.code()), "{} not in ERROR_CODES", e.code());
            assert_eq!(e.outcome().as_str(), e.code());
        }
        for (code, _, _) in ERROR_CODES {
            assert!(
                AuditOutcome::parse(code).is_some(),
                "{code} is not an audit outcome"
            );
        }
    }
}
