//! Grants on `/sdk/*`: the list (OAuth and managed-secret items, as the SDK's models expect
//! them), revocation and taking back delegations. Access is the vault's (`reach`): the same
//! grants an MCP caller of that principal sees.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{SdkCtx, SdkError, SdkResult, SdkState, gid, grant_by_sdk_id, ok};
use crate::{
    model::{Access, GrantKind, PrincipalKind, sdk_uuid},
    vault::GrantView,
};

#[derive(Deserialize)]
struct ListBody {
    #[serde(default = "hundred")]
    limit: i64,
    #[serde(default)]
    offset: i64,
    #[serde(default)]
    provider_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    user_token: Option<String>,
}

fn hundred() -> i64 {
    100
}

/// RFC 3339 as the SDK's strict checks want it (seconds, `Z`).
pub(crate) fn sdk_time(rfc: &str) -> String {
    rfc.parse::<jiff::Timestamp>()
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| rfc.to_owned())
}

fn item(v: &GrantView, delegated_agents: Vec<String>) -> Value {
    let principal_type = match (v.kind, v.principal_type) {
        (_, PrincipalKind::App) => "system",
        (_, PrincipalKind::Agent) => "agent",
        (GrantKind::Secret, PrincipalKind::Group) => "group",
        _ => "user",
    };
    let t = |o: &Option<String>| o.as_deref().map(sdk_time);
    match v.kind {
        GrantKind::OAuth => json!({
            "grant_kind": "oauth",
            "grant_id": gid(&v.id),
            "provider_id": v.provider,
            "scopes": v.scopes,
            "account_identifier": v.account,
            "account_display_name": v.account_display,
            "status": v.status,
            "scope_mismatch": v.scope_mismatch,
            "needs_reconnect": v.status == "credential_revoked",
            "expires_at": t(&v.token_expires_at),
            "grant_expires_at": t(&v.expires_at),
            "created_at": sdk_time(&v.created_at),
            "last_used_at": t(&v.last_used_at),
            "principal_type": principal_type,
            "access_via": if v.access == Access::Delegated { "oauth_delegation" } else { "ownership" },
            "delegated_agent_ids": delegated_agents,
            "label": null,
        }),
        GrantKind::Secret => json!({
            "grant_kind": "managed_secret",
            "grant_id": gid(&v.id),
            "managed_secret_id": sdk_uuid(&format!("secret:{}", v.provider)),
            "managed_secret_slug": v.provider,
            "managed_secret_name": v.provider_name,
            "label": v.account,
            "account_identifier": v.account,
            "status": v.status,
            "expires_at": t(&v.expires_at),
            "grant_expires_at": t(&v.expires_at),
            "created_at": sdk_time(&v.created_at),
            "last_used_at": t(&v.last_used_at),
            "principal_type": principal_type,
            "access_via": if v.access == Access::Delegated { "ms_delegation" } else { "ownership" },
            "credential_kind": "developer",
        }),
    }
}

/// `POST /sdk/grants/list`.
pub async fn list(State(st): State<SdkState>, ctx: SdkCtx) -> SdkResult {
    ctx.require("grants:read")?;
    let b: ListBody = ctx.json()?;
    if !(1..=1000).contains(&b.limit) || b.offset < 0 {
        return Err(SdkError::bad_request("limit", "limit 1..1000, offset ≥ 0"));
    }
    let caller = ctx.caller(&st, b.user_token.as_deref()).await?;
    let mut all = st
        .vault
        .list_grants(&caller, b.provider_id.as_deref())
        .await?;
    all.retain(|g| {
        b.status.as_deref().is_none_or(|s| g.status == s)
            && b.account
                .as_deref()
                .or(b.label.as_deref())
                .is_none_or(|a| g.account.eq_ignore_ascii_case(a))
    });
    let total = all.len() as i64;
    let mut grants = Vec::new();
    for g in all.iter().skip(b.offset as usize).take(b.limit as usize) {
        let mut agents = Vec::new();
        for name in &g.delegated_to {
            if let Ok(id) = st.vault.agent_id(name).await {
                agents.push(sdk_uuid(&id));
            }
        }
        grants.push(item(g, agents));
    }
    ctx.audit(&st, &caller, "ok", format!("grants.list total={total}"))
        .await;
    ok(json!({
        "grants": grants,
        "total": total,
        "limit": b.limit,
        "offset": b.offset,
        "has_more": b.offset + (grants.len() as i64) < total,
    }))
}

#[derive(Deserialize)]
struct RevokeBody {
    #[serde(default)]
    user_token: Option<String>,
}

/// `POST /sdk/oauth/grants/{id}/revoke`: the owner revokes (at the provider too, when it can).
pub async fn revoke(
    State(st): State<SdkState>,
    Path(grant_id): Path<String>,
    ctx: SdkCtx,
) -> SdkResult {
    ctx.require("grants:write")?;
    let b: RevokeBody = ctx.json()?;
    let caller = ctx.caller(&st, b.user_token.as_deref()).await?;
    let g = grant_by_sdk_id(&st, &grant_id).await?;
    let r = st.vault.revoke_grant(&caller, &g.id, true).await?;
    ok(json!({
        "success": true,
        "message": format!("grant revoked (provider revocation: {})", r.provider_revocation),
        "grant_id": gid(&r.grant_id),
        "revoked_at": sdk_time(&jiff::Timestamp::now().to_string()),
    }))
}

/// `DELETE /sdk/grants/{gid}/delegations/{agent_id|me}`: an agent gives a delegation up
/// (`me`), or the app key (the operator) takes one back. Idempotent: 204 either way.
pub async fn undelegate(
    State(st): State<SdkState>,
    Path((grant_id, agent)): Path<(String, String)>,
    ctx: SdkCtx,
) -> SdkResult {
    let caller = ctx.caller(&st, None).await?;
    let g = grant_by_sdk_id(&st, &grant_id).await?;
    if agent == "me" {
        if !caller.is_agent() {
            return Err(SdkError::new(
                StatusCode::FORBIDDEN,
                "agent_key_required",
                "`me` is the calling agent: use an agent key (or name the agent)",
            ));
        }
        st.vault.release_delegation(&caller, &g.id).await?;
    } else {
        ctx.require("grants:write")?;
        if caller.is_agent() {
            return Err(SdkError::new(
                StatusCode::FORBIDDEN,
                "use_self_revoke_path",
                "an agent gives up its own delegation with /delegations/me",
            ));
        }
        let a = st.vault.agent_by_sdk_id(&agent).await?.ok_or_else(|| {
            SdkError::new(
                StatusCode::NOT_FOUND,
                "agent_not_found",
                format!("no agent {agent}"),
            )
        })?;
        st.vault
            .undelegate_grant(&caller, &g.id, &a.id, true)
            .await?;
    }
    Ok((StatusCode::NO_CONTENT, ()).into_response())
}
