//! Connect on `/sdk/*`: a session the SDK hands to the person (`connect_url`, the same Connect
//! pages MCP uses) and the poll that reports the grants it produced.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{SdkCtx, SdkError, SdkResult, SdkState, gid, grant_by_sdk_id, ok};
use crate::{
    model::{SessionStatus, sdk_uuid},
    vault::StartConnect,
};

#[derive(Deserialize, Default)]
struct GrantPolicy {
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    max_ttl_seconds: Option<i64>,
    #[serde(default)]
    default_ttl_seconds: Option<i64>,
}

#[derive(Deserialize)]
struct CreateBody {
    #[serde(default)]
    allowed_providers: Option<Vec<String>>,
    #[serde(default)]
    return_url: Option<String>,
    #[serde(default)]
    required_scopes: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    repair_grant_id: Option<String>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    grant_policy: Option<GrantPolicy>,
    #[serde(default)]
    requested_grant: Option<Value>,
    #[serde(default)]
    switch_account: Option<bool>,
    #[serde(default)]
    user_token: Option<String>,
}

/// `POST /sdk/oauth/connect/session`.
pub async fn create(State(st): State<SdkState>, ctx: SdkCtx) -> SdkResult {
    ctx.require("connect:initiate")?;
    let b: CreateBody = ctx.json()?;
    if b.requested_grant.is_some() || b.switch_account == Some(true) {
        return Err(SdkError::not_implemented(
            "requested_grant / switch_account on Connect sessions",
        ));
    }
    let caller = ctx.caller(&st, b.user_token.as_deref()).await?;
    let providers = b.allowed_providers.unwrap_or_default();
    if providers.is_empty() {
        return Err(SdkError::bad_request(
            "allowed_providers",
            "name the provider(s) to connect",
        ));
    }
    let repair = match b.repair_grant_id.as_deref() {
        Some(u) => Some(grant_by_sdk_id(&st, u).await?.id.to_string()),
        None => None,
    };
    let agent = match b.agent.as_deref() {
        None => None,
        Some(a) if uuid::Uuid::parse_str(a).is_ok() => Some(
            st.vault
                .agent_by_sdk_id(a)
                .await?
                .ok_or_else(|| {
                    SdkError::new(
                        axum::http::StatusCode::NOT_FOUND,
                        "agent_not_found",
                        format!("no agent {a}"),
                    )
                })?
                .id
                .to_string(),
        ),
        Some(name) => Some(
            st.vault
                .agent_id(name)
                .await
                .map_err(|_| {
                    SdkError::new(
                        axum::http::StatusCode::NOT_FOUND,
                        "agent_not_found",
                        format!("no agent `{name}`"),
                    )
                })?
                .to_string(),
        ),
    };
    let ttl = match b.grant_policy.unwrap_or_default() {
        GrantPolicy {
            expires_at: Some(t),
            ..
        } => {
            let at: jiff::Timestamp = t.parse().map_err(|_| {
                SdkError::bad_request("grant_policy.expires_at", "an RFC 3339 time")
            })?;
            Some(at.as_second() - crate::vault::now())
        }
        GrantPolicy {
            default_ttl_seconds: d,
            max_ttl_seconds: m,
            ..
        } => d.or(m),
    };
    let mut scopes = b.required_scopes.unwrap_or_default();
    scopes.retain(|p, _| providers.contains(p));
    let started = st
        .vault
        .start_connect(
            &caller,
            StartConnect {
                providers: providers.iter().map(|p| p.to_ascii_lowercase()).collect(),
                scopes,
                repair_grant_id: repair,
                return_url: b.return_url,
                agent,
                ttl_secs: ttl,
                account_label: None,
            },
        )
        .await?;
    let expires_in = started
        .expires_at
        .parse::<jiff::Timestamp>()
        .map(|t| (t.as_second() - crate::vault::now()).max(0))
        .unwrap_or(0);
    ok(json!({
        // The session's public id: polling is bound to the principal that created it.
        "session_token": started.session_id,
        "connect_url": started.connect_url,
        "expires_in": expires_in,
        "expires_at": super::grants::sdk_time(&started.expires_at),
        "scope_constraint_warnings": [],
        "single_provider": started.providers.len() == 1,
        "direct": false,
    }))
}

#[derive(Deserialize)]
struct PollBody {
    session_token: String,
    #[serde(default)]
    user_token: Option<String>,
}

/// `POST /sdk/oauth/connect/session/poll`.
pub async fn poll(State(st): State<SdkState>, ctx: SdkCtx) -> SdkResult {
    ctx.require("connect:initiate")?;
    let b: PollBody = ctx.json()?;
    let caller = ctx.caller(&st, b.user_token.as_deref()).await?;
    // The SDK polls without the user's token: an app key may poll the sessions it started for
    // its users; anyone else only their own.
    let found = if caller.principal.kind() == crate::model::PrincipalKind::App {
        st.vault.connect_status_for_app(&b.session_token).await?
    } else {
        st.vault.connect_status(&caller, &b.session_token).await?
    };
    let Some(s) = found else {
        return Err(SdkError::new(
            axum::http::StatusCode::NOT_FOUND,
            "session_not_found",
            "no such Connect session for this caller",
        ));
    };
    let expired = s.status == SessionStatus::Pending && s.expires_at <= crate::vault::now();
    let body = match s.status {
        _ if expired => json!({"status": "expired"}),
        SessionStatus::Pending => json!({"status": "pending"}),
        SessionStatus::Expired => json!({"status": "expired"}),
        SessionStatus::Denied => json!({"status": "error", "error": {
            "error_code": "connect_denied",
            "error_message": s.error.unwrap_or_else(|| "the person declined".into()),
        }}),
        SessionStatus::Error => json!({"status": "error", "error": {
            "error_code": "connect_failed",
            "error_message": s.error.unwrap_or_else(|| "connecting failed".into()),
        }}),
        SessionStatus::Completed => {
            // The grants belong to whoever the session was for.
            let owner = crate::vault::Caller::new(
                crate::vault::Principal::new(s.principal.clone(), s.principal.clone()),
                "sdk:connect/session/poll",
            );
            let owner = if s.principal == caller.principal.id() {
                caller.clone()
            } else {
                owner
            };
            let mine = st.vault.list_grants(&owner, None).await?;
            let mut grants = Vec::new();
            for r in &s.result_grants {
                let Some((provider, account)) = r.split_once('=') else {
                    continue;
                };
                let Some(g) = mine
                    .iter()
                    .find(|g| g.provider == provider && g.account == account)
                else {
                    continue;
                };
                let delegation = match (&s.delegate_agent, g.delegated_to.is_empty()) {
                    (Some(a), false) => json!({"agent_id": sdk_uuid(a), "delegable": false}),
                    _ => Value::Null,
                };
                grants.push(json!({
                    "grant_id": gid(&g.id),
                    "provider_id": g.provider,
                    "account_identifier": g.account,
                    "scopes": g.scopes,
                    "operation": if s.repair_grant_id.is_some() { "reauth" } else { "creation" },
                    "delegation": delegation,
                }));
            }
            json!({"status": "completed", "grants": grants})
        }
    };
    ok(body)
}

#[derive(Deserialize)]
struct SecretSessionBody {
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    template_slug: Option<String>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    delegated_agent_id: Option<String>,
    #[serde(default)]
    user_token: Option<String>,
    #[serde(default)]
    requested_ttl_seconds: Option<i64>,
    #[serde(default)]
    return_url: Option<String>,
    #[serde(default)]
    delegable: Option<bool>,
    #[serde(default)]
    requested_grant: Option<RequestedGrant>,
    #[serde(default)]
    repair_grant_id: Option<String>,
}

#[derive(Deserialize)]
struct RequestedGrant {
    label: String,
}

/// `POST /sdk/managed-secrets/connect/session`: a Connect link where the person types their
/// own API key for an API-key provider (the key never passes through the caller).
pub async fn secret_session(State(st): State<SdkState>, ctx: SdkCtx) -> SdkResult {
    ctx.require("connect:initiate")?;
    ctx.require("secrets:write")?;
    let b: SecretSessionBody = ctx.json()?;
    if b.repair_grant_id.is_some() {
        return Err(SdkError::not_implemented(
            "repair_grant_id on managed-secret Connect sessions (open a new session: the key replaces the old one)",
        ));
    }
    let token = b
        .user_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            SdkError::bad_request(
                "user_token",
                "the person entering the key must be named by their user token",
            )
        })?;
    let caller = ctx.caller(&st, Some(token)).await?;
    let provider = b
        .provider
        .or(b.template_slug)
        .ok_or_else(|| SdkError::bad_request("provider", "name the API-key provider (its slug)"))?
        .to_ascii_lowercase();
    if st
        .vault
        .catalog()
        .get(&provider)
        .is_some_and(|p| p.kind != crate::providers::ProviderKind::ApiKey)
    {
        return Err(SdkError::new(
            axum::http::StatusCode::NOT_FOUND,
            "secret_not_found",
            format!("`{provider}` is an OAuth provider: use an OAuth Connect session"),
        ));
    }
    let agent = match b.agent.or(b.delegated_agent_id) {
        None => None,
        Some(a) => {
            let found = if uuid::Uuid::parse_str(&a).is_ok() {
                st.vault.agent_by_sdk_id(&a).await?.map(|r| r.id)
            } else {
                st.vault.agent_id(&a).await.ok()
            };
            Some(found.ok_or_else(|| {
                SdkError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    "agent_not_found",
                    format!("no agent {a}"),
                )
            })?)
        }
    };
    let label = b.requested_grant.map(|g| g.label);
    if label
        .as_deref()
        .is_some_and(|l| l.trim().is_empty() || l.len() > 255)
    {
        return Err(SdkError::bad_request(
            "requested_grant.label",
            "1 to 255 characters",
        ));
    }
    let started = st
        .vault
        .start_connect(
            &caller,
            StartConnect {
                providers: vec![provider.clone()],
                scopes: BTreeMap::new(),
                repair_grant_id: None,
                return_url: b.return_url,
                agent: agent.as_ref().map(|a| a.to_string()),
                ttl_secs: b.requested_ttl_seconds,
                account_label: label,
            },
        )
        .await
        .map_err(|e| match e {
            crate::vault::VaultError::UnknownProvider { provider, .. } => SdkError::new(
                axum::http::StatusCode::NOT_FOUND,
                "secret_not_found",
                format!(
                    "no managed secret `{provider}`: define it by storing the app's key (`vault-mcp secret add {provider} --for app --host …`)"
                ),
            ),
            other => other.into(),
        })?;
    let expires_in = started
        .expires_at
        .parse::<jiff::Timestamp>()
        .map(|t| (t.as_second() - crate::vault::now()).max(0))
        .unwrap_or(0);
    ok(json!({
        "session_token": started.session_id,
        "connect_url": started.connect_url,
        "expires_in": expires_in,
        "expires_at": super::grants::sdk_time(&started.expires_at),
        "delegable_requested": b.delegable == Some(true),
        "path": "key_entry",
        "existing_grant_id": null,
        "direct": false,
        "secret_slug": provider,
        "template_slug": null,
        "agent_id": agent.map(|a| sdk_uuid(&a)),
    }))
}
