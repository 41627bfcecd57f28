//! The credential plane: `/sdk/proxy` (the vault makes the call: the mode we recommend),
//! `/sdk/token` (raw-token mode: the credential goes to a trusted backend holding an app key
//! with `tokens:raw`; see `vault::release`), and the two reports the SDK sends after a raw-token
//! call (its audit row, and a provider's `insufficient_scope`).

use std::collections::BTreeMap;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{SdkCtx, SdkError, SdkResult, SdkState, gid, grant_by_sdk_id, ok};
use crate::{
    secret::Expose,
    vault::{ApiRequest, GrantSelector, RequestBody, VaultError, release::TokenRequest},
};

#[derive(Deserialize)]
struct CallTarget {
    method: String,
    url: String,
}

#[derive(Deserialize)]
struct TokenBody {
    #[serde(default)]
    grant_id: Option<String>,
    #[serde(default)]
    provider_id: Option<String>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    request: Option<CallTarget>,
    #[serde(default)]
    user_token: Option<String>,
    #[serde(default)]
    app_user_id: Option<String>,
}

/// `grant_id` (a UUID) or `provider_id` (+ `account`) → how the vault names the grant.
async fn selector(
    st: &SdkState,
    grant_id: Option<&str>,
    provider_id: Option<&str>,
    account: Option<&str>,
    label: Option<&str>,
) -> Result<GrantSelector, SdkError> {
    match (
        grant_id.filter(|s| !s.is_empty()),
        provider_id.filter(|s| !s.is_empty()),
    ) {
        (Some(_), Some(_)) => Err(SdkError::bad_request(
            "grant_id",
            "give either grant_id or provider_id, not both",
        )),
        (Some(g), None) => Ok(GrantSelector::Id(
            grant_by_sdk_id(st, g).await?.id.to_string(),
        )),
        (None, Some(p)) => Ok(GrantSelector::Provider {
            provider: p.trim().to_ascii_lowercase(),
            // A label names a managed secret's account in this vault.
            account: account
                .or(label)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        }),
        (None, None) => Err(SdkError::bad_request(
            "provider_id",
            "say which grant: grant_id or provider_id",
        )),
    }
}

fn app_user_unsupported(app_user_id: &Option<String>) -> Result<(), SdkError> {
    if app_user_id.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(SdkError::not_implemented(
            "app_user_id (this server identifies users by their user_token)",
        ));
    }
    Ok(())
}

/// `POST /sdk/token`: the credential and how to inject it.
pub async fn token(State(st): State<SdkState>, ctx: SdkCtx) -> SdkResult {
    if ctx.principal.kind() == crate::model::PrincipalKind::Agent {
        let e: SdkError = VaultError::RequiresProxy {
            reason: crate::vault::release::ProxyReason::Delegated,
            message:
                "agents do not receive credentials; make the call through the vault (proxy_request)"
                    .into(),
        }
        .into();
        ctx.audit_refusal(&st, "token", &e).await;
        return Err(e);
    }
    if let Err(e) = ctx.require("tokens:raw") {
        ctx.audit_refusal(&st, "token", &e).await;
        return Err(e);
    }
    let b: TokenBody = ctx.json()?;
    app_user_unsupported(&b.app_user_id)?;
    let caller = ctx.caller(&st, b.user_token.as_deref()).await?;
    let target = b.request.ok_or_else(|| {
        SdkError::bad_request("request", "give the call the token is for: {method, url}")
    })?;
    let grant = selector(
        &st,
        b.grant_id.as_deref(),
        b.provider_id.as_deref(),
        b.account.as_deref(),
        b.label.as_deref(),
    )
    .await?;
    let t = st
        .vault
        .release_token(
            &caller,
            TokenRequest {
                grant,
                method: target.method,
                url: target.url,
                reason: b.reason,
                context: ctx.context.clone(),
            },
        )
        .await?;
    let now = crate::vault::now();
    let expires_at = t.expires_at.map(|e| {
        jiff::Timestamp::from_second(e)
            .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default()
    });
    let extra: BTreeMap<&str, &str> = t
        .additional_credentials
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose_secret()))
        .collect();
    ok(json!({
        "access_token": t.access_token.expose_secret(),
        "token_type": t.token_type,
        "expires_in": t.expires_at.map(|e| (e - now).max(0)),
        "expires_at": expires_at,
        "scopes": t.grant.scopes.0,
        "grant_id": gid(&t.grant.id),
        "provider_id": t.grant.provider,
        "scope_mismatch": !t.grant.missing_scopes().is_empty(),
        "injection_header": t.injection_header,
        "injection_format": t.injection_format,
        "additional_credentials": if extra.is_empty() { Value::Null } else { json!(extra) },
    }))
}

#[derive(Deserialize, serde::Serialize, Clone)]
pub(crate) struct ProxyBody {
    method: String,
    url: String,
    #[serde(default)]
    grant_id: Option<String>,
    #[serde(default)]
    provider_id: Option<String>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default, skip_serializing)]
    user_token: Option<String>,
    #[serde(default, skip_serializing)]
    app_user_id: Option<String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    query_params: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    reason: Option<String>,
}

fn query_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The raw bytes of what the vault returned (already scrubbed of every secret).
fn body_bytes(body: &Value, encoding: &str) -> Vec<u8> {
    match (encoding, body) {
        ("empty", _) | (_, Value::Null) => Vec::new(),
        ("base64", Value::String(s)) => STANDARD.decode(s).unwrap_or_default(),
        (_, Value::String(s)) => s.clone().into_bytes(),
        (_, v) => serde_json::to_vec(v).unwrap_or_default(),
    }
}

/// `POST /sdk/proxy`: the vault makes the call (every check of `vault_request` applies). A call
/// a policy holds for a person answers 202; once approved, the vault runs it (`run_held`).
pub async fn proxy(State(st): State<SdkState>, ctx: SdkCtx) -> SdkResult {
    if let Err(e) = ctx.require("proxy:execute") {
        ctx.audit_refusal(&st, "proxy", &e).await;
        return Err(e);
    }
    let b: ProxyBody = ctx.json()?;
    app_user_unsupported(&b.app_user_id)?;
    let caller = ctx.caller(&st, b.user_token.as_deref()).await?;
    match execute(&st, &caller, b.clone(), ctx.context.clone()).await {
        Err(HeldOrError::Held { approval_id, url }) => {
            let request = serde_json::json!({"request": b, "context": ctx.context});
            st.vault
                .hold_call(&approval_id, &caller, request.to_string())
                .await?;
            super::manage::pending_approval(&st, &approval_id, url).await
        }
        Err(HeldOrError::Error(e)) => Err(e),
        Ok(v) => ok(v),
    }
}

pub(crate) enum HeldOrError {
    Held {
        approval_id: String,
        url: Option<String>,
    },
    Error(SdkError),
}

impl From<SdkError> for HeldOrError {
    fn from(e: SdkError) -> Self {
        HeldOrError::Error(e)
    }
}

/// Make a proxied call; its 200 body as the SDK reads it.
pub(crate) async fn execute(
    st: &SdkState,
    caller: &crate::vault::Caller,
    b: ProxyBody,
    context: super::Context,
) -> Result<Value, HeldOrError> {
    let grant = selector(
        st,
        b.grant_id.as_deref(),
        b.provider_id.as_deref(),
        b.account.as_deref(),
        b.label.as_deref(),
    )
    .await?;
    let mut query_params = Vec::new();
    for (k, v) in b.query_params.unwrap_or_default() {
        match &v {
            Value::Array(items) => {
                for i in items {
                    query_params.push((
                        k.clone(),
                        query_text(i).ok_or_else(|| {
                            SdkError::bad_request(
                                &format!("query_params.{k}"),
                                "values are strings, numbers or booleans",
                            )
                        })?,
                    ));
                }
            }
            Value::Null => {}
            other => query_params.push((
                k.clone(),
                query_text(other).ok_or_else(|| {
                    SdkError::bad_request(
                        &format!("query_params.{k}"),
                        "values are strings, numbers or booleans",
                    )
                })?,
            )),
        }
    }
    let req = ApiRequest {
        method: b.method,
        url: b.url,
        path_params: Default::default(),
        query_params,
        headers: b.headers.unwrap_or_default(),
        body: match b.body {
            None | Some(Value::Null) => RequestBody::None,
            Some(Value::String(s)) => RequestBody::Text(s),
            Some(v) => RequestBody::Json(v),
        },
        grant,
        reason: b.reason.filter(|r| !r.trim().is_empty()),
        required_scopes: Vec::new(),
        read_only: false,
        context,
    };
    match st.vault.request(caller, req).await {
        Ok(r) => {
            let bytes = body_bytes(&r.body, &r.body_encoding);
            Ok(json!({
                "approval_id": null,
                "status_code": r.status,
                "headers": r.headers,
                "body_b64": STANDARD.encode(bytes),
                "body_truncated": r.truncated,
                "duration_ms": r.latency_ms,
            }))
        }
        Err(VaultError::ApprovalRequired {
            approval_id: Some(id),
            approval_url,
            ..
        }) => Err(HeldOrError::Held {
            approval_id: id,
            url: approval_url,
        }),
        Err(e) => Err(HeldOrError::Error(e.into())),
    }
}

#[derive(Deserialize)]
struct ApiCallAudit {
    #[serde(default)]
    grant_id: Option<String>,
    #[serde(default)]
    provider_id: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    response_status: Option<i64>,
    #[serde(default)]
    latency_ms: Option<i64>,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /sdk/oauth/audit/api-call`: the SDK's own record of a raw-token call. Only the call's
/// shape is kept (method, host, path, status); headers and bodies the SDK sends along are not
/// stored, so nothing a provider echoed lands in the audit trail.
pub async fn audit_api_call(State(st): State<SdkState>, ctx: SdkCtx) -> SdkResult {
    ctx.require("audit:emit")?;
    let b: ApiCallAudit = ctx.json()?;
    let caller = ctx.caller(&st, None).await?;
    let url = b.url.as_deref().and_then(|u| url::Url::parse(u).ok());
    let grant = match b.grant_id.as_deref() {
        Some(g) => st.vault.grant_by_sdk_id(g).await?,
        None => None,
    };
    st.vault
        .audit_raw_call(
            &caller,
            crate::vault::RawCallReport {
                grant_id: grant.map(|g| g.id.to_string()),
                provider: b.provider_id,
                method: b.method.map(|m| m.to_ascii_uppercase()),
                host: url.as_ref().and_then(|u| u.host_str().map(str::to_owned)),
                path: url.as_ref().map(|u| u.path().to_owned()),
                status: b.response_status,
                latency_ms: b.latency_ms,
                reason: b.reason,
                context: ctx.context_json(),
            },
        )
        .await?;
    Ok((StatusCode::NO_CONTENT, ()).into_response())
}

#[derive(Deserialize)]
struct ScopeReport {
    #[serde(default)]
    missing_scopes: Option<Vec<String>>,
}

/// `POST /sdk/grants/{id}/report-scope-mismatch`: a provider said the grant lacks scopes; the
/// grant is flagged so the next `/sdk/token` says `scope_mismatch`.
pub async fn report_scope_mismatch(
    State(st): State<SdkState>,
    Path(grant_id): Path<String>,
    ctx: SdkCtx,
) -> SdkResult {
    let b: ScopeReport = ctx.json()?;
    let caller = ctx.caller(&st, None).await?;
    let g = grant_by_sdk_id(&st, &grant_id).await?;
    let missing: Vec<String> = b
        .missing_scopes
        .unwrap_or_default()
        .into_iter()
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .take(50)
        .collect();
    st.vault
        .report_scope_mismatch(&caller, &g.id, &missing)
        .await?;
    let mut r = (StatusCode::NO_CONTENT, ()).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&crate::vault::new_id("corr")) {
        r.headers_mut().insert("x-correlation-id", v);
    }
    Ok(r)
}
