//! The rest of `/sdk/*`: approvals, identity, user-token checks, agents, keys and the catalogs.

use std::collections::BTreeMap;

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{SdkCtx, SdkError, SdkResult, SdkState, grants::sdk_time, ok};
use crate::{
    model::HeldStatus,
    model::{AgentStatus, PrincipalKind, sdk_uuid},
    providers::ProviderKind,
    store::AgentAccess,
    store::HeldCallRow,
    vault::{AgentUpdate, AgentView, NewAgent, approval::ApprovalView, rfc3339},
};

// ---------------------------------------------------------------------------------------------
// Approvals

fn approval_json(a: &ApprovalView, held: Option<&HeldCallRow>) -> Value {
    let status = match (a.status.as_str(), held.map(|h| h.status)) {
        (_, Some(HeldStatus::Executed)) => "executed",
        (_, Some(HeldStatus::Failed)) => "failed",
        (_, Some(HeldStatus::Executing)) => "executing",
        ("used", _) => "executed",
        (s, _) => s,
    };
    let id = sdk_uuid(&a.id);
    json!({
        "approval_id": id,
        "status": status,
        "approval_group_id": sdk_uuid(&format!("group:{}", a.id)),
        "gates": [{"approval_id": id, "status": status, "expires_at": sdk_time(&a.expires_at)}],
        "expires_at": sdk_time(&a.expires_at),
        "decided_at": null,
        "decision_reason": null,
        "executed_at": held.filter(|h| h.status == HeldStatus::Executed).map(|h| sdk_time(&rfc3339(h.updated_at))),
        "execution_error": held.and_then(|h| h.error.clone()),
        "has_result": held.is_some_and(|h| h.status == HeldStatus::Executed),
    })
}

/// Run a held call once its approval is given (the first poll that sees it does).
async fn run_held(st: &SdkState, a: &ApprovalView) -> Result<Option<HeldCallRow>, SdkError> {
    let Some(h) = st.vault.held_call(&a.id).await? else {
        return Ok(None);
    };
    if a.status != "approved" || h.status != HeldStatus::Held {
        return Ok(Some(h));
    }
    let Some(caller) = st.vault.claim_held_call(&h, "sdk:proxy (approved)").await? else {
        return Ok(st.vault.held_call(&a.id).await?);
    };
    let stored: Value = serde_json::from_str(&h.request).unwrap_or_default();
    let outcome = match (
        serde_json::from_value::<super::credentials::ProxyBody>(stored["request"].clone()),
        serde_json::from_value::<super::Context>(stored["context"].clone()),
    ) {
        (Ok(body), Ok(context)) => {
            match super::credentials::execute(st, &caller, body, context).await {
                Ok(v) => Ok(v.to_string()),
                Err(super::credentials::HeldOrError::Error(e)) => Err(e.message),
                Err(super::credentials::HeldOrError::Held { .. }) => {
                    Err("the call was held again instead of running".into())
                }
            }
        }
        _ => Err("the held call could not be read back".into()),
    };
    st.vault.finish_held_call(&a.id, outcome).await?;
    Ok(st.vault.held_call(&a.id).await?)
}

/// `202` for a proxied call a policy holds for a person.
pub(crate) async fn pending_approval(
    st: &SdkState,
    approval_id: &str,
    url: Option<String>,
) -> SdkResult {
    let all = st.vault.list_approvals(None, false).await?;
    let a = all.iter().find(|a| a.id == approval_id).ok_or_else(|| {
        SdkError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "approval vanished",
        )
    })?;
    let expires_in = a
        .expires_at
        .parse::<jiff::Timestamp>()
        .map(|t| (t.as_second() - crate::vault::now()).max(0))
        .unwrap_or(0);
    let id = sdk_uuid(&a.id);
    let url = url.unwrap_or_else(|| {
        "(the approval link reaches the person on a channel the caller does not read)".into()
    });
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "approval_id": id,
            "approval_group_id": sdk_uuid(&format!("group:{}", a.id)),
            "status": "pending",
            "expires_at": sdk_time(&a.expires_at),
            "expires_in": expires_in,
            "approval_url": url,
            "gates": [{"approval_id": id, "expires_at": sdk_time(&a.expires_at), "expires_in": expires_in, "approval_url": url}],
        })),
    )
        .into_response())
}

async fn find_approval(st: &SdkState, ctx: &SdkCtx, id: &str) -> Result<ApprovalView, SdkError> {
    let caller = ctx.caller(st, None).await?;
    // The SDK asks without the user's token: an app key sees the approvals of its users' calls.
    let whose = (caller.principal.kind() != PrincipalKind::App).then_some(&caller);
    st.vault
        .list_approvals(whose, false)
        .await?
        .into_iter()
        .find(|a| sdk_uuid(&a.id) == id.to_ascii_lowercase() || a.id == id)
        .ok_or_else(|| {
            SdkError::new(
                StatusCode::NOT_FOUND,
                "approval_not_found",
                format!("no approval {id}"),
            )
        })
}

#[derive(Deserialize)]
pub struct WaitQuery {
    #[serde(default)]
    wait: Option<u64>,
}

/// `GET /sdk/approvals/{id}[?wait=N]`: long-polls up to N (≤ 25) seconds for a decision.
pub async fn approval_status(
    State(st): State<SdkState>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
    ctx: SdkCtx,
) -> SdkResult {
    ctx.require("approvals:read")
        .or_else(|_| ctx.require("proxy:execute"))?;
    let wait = q.wait.unwrap_or(0);
    if wait > 25 {
        return Err(SdkError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "wait is at most 25 seconds",
        ));
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
    loop {
        let a = find_approval(&st, &ctx, &id).await?;
        if a.status != "pending" || tokio::time::Instant::now() >= deadline {
            let held = run_held(&st, &a).await?;
            return ok(approval_json(&a, held.as_ref()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `GET /sdk/approvals/{id}/result`: the answer of the call the vault ran after approval.
pub async fn approval_result(
    State(st): State<SdkState>,
    Path(id): Path<String>,
    ctx: SdkCtx,
) -> SdkResult {
    ctx.require("approvals:read")
        .or_else(|_| ctx.require("proxy:execute"))?;
    let a = find_approval(&st, &ctx, &id).await?;
    let held = run_held(&st, &a).await?;
    match held {
        Some(HeldCallRow {
            status: HeldStatus::Executed,
            result: Some(r),
            ..
        }) => {
            let mut v: Value = serde_json::from_str(&r).unwrap_or_default();
            v["approval_id"] = json!(sdk_uuid(&a.id));
            ok(v)
        }
        Some(HeldCallRow {
            status: HeldStatus::Failed,
            error,
            ..
        }) => Err(SdkError::new(
            StatusCode::CONFLICT,
            "approval_execution_failed",
            error.unwrap_or_else(|| "the approved call failed".into()),
        )),
        _ => Err(SdkError::new(
            StatusCode::CONFLICT,
            "approval_not_executed",
            format!("approval {id} has no result yet (status {})", a.status),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Identity

#[derive(Deserialize)]
struct ResolveBody {
    #[serde(default)]
    user_token: Option<String>,
}

/// `POST /sdk/identity/resolve`.
pub async fn identity_resolve(State(st): State<SdkState>, ctx: SdkCtx) -> SdkResult {
    let b: ResolveBody = ctx.json()?;
    let caller = ctx.caller(&st, b.user_token.as_deref()).await?;
    let p = &caller.principal;
    let (user, subject, issuer) = match p.kind() {
        PrincipalKind::User => {
            let (iss, sub) = p.id().rsplit_once('#').unwrap_or(("", p.id()));
            (
                Some(p.id().to_owned()),
                Some(sub.to_owned()),
                Some(iss.to_owned()),
            )
        }
        _ => (None, None, None),
    };
    let ctxv = |k: &str| {
        ctx.context
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    ok(json!({
        "app_id": "vault-mcp",
        "app_user_id": user,
        "external_subject_id": subject,
        "idp_id": issuer,
        "user_status": if user.is_some() { Some("active") } else { None },
        "group_ids": caller.groups,
        "agent_id": (p.kind() == PrincipalKind::Agent).then(|| sdk_uuid(p.id())),
        "actor_id": null,
        "trace": {"run_id": ctxv("run_id"), "thread_id": ctxv("thread_id")},
        "display_name": (p.kind() == PrincipalKind::User).then(|| p.display().to_owned()),
    }))
}

#[derive(Deserialize)]
struct VerifyBody {
    token: String,
}

/// `POST /sdk/auth/verify-token`: `{sub}` for a valid user token, 401 otherwise.
pub async fn verify_token(State(st): State<SdkState>, ctx: SdkCtx) -> SdkResult {
    let b: VerifyBody = ctx.json()?;
    let caller = ctx.caller(&st, Some(&b.token)).await?;
    let sub = caller
        .principal
        .id()
        .rsplit_once('#')
        .map(|(_, s)| s.to_owned())
        .unwrap_or_else(|| caller.principal.id().to_owned());
    ok(json!({ "sub": sub }))
}

// ---------------------------------------------------------------------------------------------
// Agents

fn agent_info(v: &AgentView, version: i64) -> Value {
    let status = match v.status {
        AgentStatus::Active => "active",
        AgentStatus::Disabled => "inactive",
    };
    json!({
        "id": sdk_uuid(&v.id),
        "name": v.name,
        "display_name": v.description,
        "type": "agent",
        "status": status,
        "scopes": v.access.scopes,
        "policy": {},
        "metadata": {"vault_mcp_id": v.id},
        "version": version,
        "created_at": sdk_time(&v.created_at),
        "last_used_at": v.last_used_at.as_deref().map(sdk_time),
    })
}

/// The agent's version for optimistic updates: its last change.
async fn version_of(st: &SdkState, v: &AgentView) -> i64 {
    st.vault
        .agent_by_sdk_id(&sdk_uuid(&v.id))
        .await
        .ok()
        .flatten()
        .map(|a| a.updated_at)
        .unwrap_or(0)
}

async fn agent_by_uuid(st: &SdkState, id: &str) -> Result<AgentView, SdkError> {
    let a = st.vault.agent_by_sdk_id(id).await?.ok_or_else(|| {
        SdkError::new(
            StatusCode::NOT_FOUND,
            "agent_not_found",
            format!("no agent {id}"),
        )
    })?;
    Ok(st.vault.show_agent(&a.id).await?)
}

#[derive(Deserialize)]
struct CreateAgentBody {
    name: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    scopes: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    display_name: Option<String>,
}

/// `POST /sdk/agents` (+ `Idempotency-Key`).
pub async fn agent_create(
    State(st): State<SdkState>,
    headers: HeaderMap,
    ctx: SdkCtx,
) -> SdkResult {
    ctx.require("agents:admin")?;
    let b: CreateAgentBody = ctx.json()?;
    if b.kind
        .as_deref()
        .is_some_and(|k| k != "agent" && k != "service")
    {
        return Err(SdkError::bad_request("type", "agent or service"));
    }
    let idem = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let issued = st
        .vault
        .create_agent(NewAgent {
            name: b.name,
            description: b.display_name,
            idempotency_key: idem,
            jwt_subject: None,
            access: AgentAccess {
                grants: Vec::new(),
                scopes: b.scopes,
            },
        })
        .await
        .map_err(|e| match e {
            crate::vault::VaultError::InvalidRequest { ref message, .. }
                if message.contains("exists already") =>
            {
                SdkError::new(StatusCode::CONFLICT, "agent_name_exists", e.to_string())
            }
            other => other.into(),
        })?;
    let version = version_of(&st, &issued.agent).await;
    let mut v = agent_info(&issued.agent, version);
    v["api_key"] = match &issued.api_key {
        Some(k) => json!(crate::secret::Expose::expose_secret(k)),
        None => Value::Null,
    };
    v["key_id"] = json!(sdk_uuid(&format!("{}:key", issued.agent.id)));
    Ok((
        if issued.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        axum::Json(v),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct AgentListQuery {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: Option<usize>,
}

/// `GET /sdk/agents[?name=|?limit=&offset=]`.
pub async fn agent_list(
    State(st): State<SdkState>,
    Query(q): Query<AgentListQuery>,
    ctx: SdkCtx,
) -> SdkResult {
    ctx.require("agents:admin")?;
    let all = st.vault.list_agents().await?;
    let mut infos = Vec::new();
    for a in &all {
        infos.push(agent_info(a, version_of(&st, a).await));
    }
    if let Some(n) = q.name {
        infos.retain(|v| v["name"] == json!(n));
        return ok(json!({ "items": infos }));
    }
    let total = infos.len();
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let page: Vec<Value> = infos.into_iter().skip(offset).take(limit).collect();
    ok(json!({
        "has_more": offset + page.len() < total,
        "agents": page,
        "total": total,
        "limit": limit,
        "offset": offset,
    }))
}

/// `GET /sdk/agents/me`: the agent of an agent key.
pub async fn agent_me(State(st): State<SdkState>, ctx: SdkCtx) -> SdkResult {
    if !ctx.is_agent_key() {
        return Err(SdkError::new(
            StatusCode::BAD_REQUEST,
            "me_requires_agent_key",
            "this needs an agent key (alter_ak_…)",
        ));
    }
    let v = st.vault.show_agent(ctx.principal.id()).await?;
    ok(agent_info(&v, version_of(&st, &v).await))
}

pub async fn agent_get(
    State(st): State<SdkState>,
    Path(id): Path<String>,
    ctx: SdkCtx,
) -> SdkResult {
    ctx.require("agents:admin")?;
    let v = agent_by_uuid(&st, &id).await?;
    ok(agent_info(&v, version_of(&st, &v).await))
}

#[derive(Deserialize)]
struct PatchBody {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    scopes: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    display_name: Option<String>,
}

/// `PATCH /sdk/agents/{id}`: suspend/resume (`status`), scopes (replaced), display name.
pub async fn agent_patch(
    State(st): State<SdkState>,
    Path(id): Path<String>,
    ctx: SdkCtx,
) -> SdkResult {
    ctx.require("agents:admin")?;
    let b: PatchBody = ctx.json()?;
    let v = agent_by_uuid(&st, &id).await?;
    let mut u = AgentUpdate {
        description: b.display_name,
        ..Default::default()
    };
    u.status = match b.status.as_deref() {
        None => None,
        Some("active") => Some(AgentStatus::Active),
        Some("inactive") => Some(AgentStatus::Disabled),
        Some(other) => {
            return Err(SdkError::bad_request(
                "status",
                format!("`{other}`: active or inactive"),
            ));
        }
    };
    if let Some(scopes) = b.scopes {
        u.clear_scopes = v
            .access
            .scopes
            .keys()
            .filter(|p| !scopes.contains_key(*p))
            .cloned()
            .collect();
        u.set_scopes = scopes;
    }
    let v = st.vault.update_agent(&v.id, u).await?;
    ok(agent_info(&v, version_of(&st, &v).await))
}

/// `DELETE /sdk/agents/{id}`: the agent and its delegations (an agent owning grants stays).
pub async fn agent_delete(
    State(st): State<SdkState>,
    Path(id): Path<String>,
    ctx: SdkCtx,
) -> SdkResult {
    ctx.require("agents:admin")?;
    let v = agent_by_uuid(&st, &id).await?;
    st.vault.delete_agent(&v.id, false).await?;
    let mut info = agent_info(&v, version_of(&st, &v).await);
    info["status"] = json!("revoked");
    ok(info)
}

// ---------------------------------------------------------------------------------------------
// Keys

fn key_info(k: &crate::vault::api_keys::ApiKeyView) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "key_prefix": k.key_prefix,
        "key_type": "rk",
        "scopes": k.scopes,
        "scope_version": 1,
        "created_at": sdk_time(&k.created_at),
        "expires_at": k.expires_at.as_deref().map(sdk_time),
        "revoked_at": (k.status == crate::model::KeyStatus::Revoked).then(|| sdk_time(&rfc3339(crate::vault::now()))),
    })
}

#[derive(Deserialize)]
struct RotateBody {
    #[serde(default)]
    overlap_days: i64,
}

/// `POST /sdk/keys/{id}/rotate`.
pub async fn key_rotate(
    State(st): State<SdkState>,
    Path(id): Path<String>,
    ctx: SdkCtx,
) -> SdkResult {
    ctx.require("keys:admin")?;
    let b: RotateBody = ctx.json()?;
    let (view, key) = st
        .vault
        .rotate_api_key(&id, b.overlap_days * 86_400)
        .await?;
    let mut v = key_info(&view);
    v["api_key"] = json!(crate::secret::Expose::expose_secret(&key));
    ok(v)
}

/// `DELETE /sdk/keys/{id}`.
pub async fn key_revoke(
    State(st): State<SdkState>,
    Path(id): Path<String>,
    ctx: SdkCtx,
) -> SdkResult {
    ctx.require("keys:admin")?;
    let view = st.vault.revoke_api_key(&id).await?;
    ok(key_info(&view))
}

// ---------------------------------------------------------------------------------------------
// Catalogs

/// `GET /sdk/oauth/provider-catalog`.
pub async fn provider_catalog(State(st): State<SdkState>, ctx: SdkCtx) -> SdkResult {
    ctx.require("providers:read")?;
    let mut providers = serde_json::Map::new();
    for p in st
        .vault
        .catalog()
        .all()
        .filter(|p| p.kind == ProviderKind::Oauth2)
    {
        let available: serde_json::Map<String, Value> = p
            .scopes
            .iter()
            .map(|(s, words)| {
                (
                    s.clone(),
                    json!({
                        "description": words,
                        "required": false,
                        "is_default": p.default_scopes.contains(s),
                        "requires": [],
                    }),
                )
            })
            .collect();
        providers.insert(
            p.id.clone(),
            json!({
                "id": p.id,
                "name": p.name,
                "display_name": p.name,
                "category": p.category,
                "description": null,
                "logo_url": null,
                "supports_refresh": true,
                "supports_pkce": p.pkce,
                "available_scopes": available,
                "default_scopes": p.default_scopes,
                "required_scopes": [],
                "status": if p.is_configured() { "active" } else { "unconfigured" },
            }),
        );
    }
    ok(json!({ "providers": providers }))
}

/// `GET /sdk/scopes`: the key-scope vocabulary.
pub async fn scopes(State(_st): State<SdkState>, _ctx: SdkCtx) -> SdkResult {
    let mut resources: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in crate::vault::api_keys::KEY_SCOPES {
        let (r, verb) = s.split_once(':').expect("resource:verb");
        resources
            .entry(r.to_owned())
            .or_default()
            .push(verb.to_owned());
    }
    let mut verbs: Vec<String> = resources.values().flatten().cloned().collect();
    verbs.sort();
    verbs.dedup();
    ok(json!({
        "scope_version": 1,
        "resources": resources.into_iter().map(|(r, v)| (r, json!({"verbs": v}))).collect::<serde_json::Map<_, _>>(),
        "action_verbs": verbs,
        "deprecated": [],
    }))
}
