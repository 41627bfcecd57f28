//! Who is calling on `/sdk/*`, checked before any handler runs: the API key (`x-api-key`: an
//! application key or an agent key), the HMAC signature over the request (`sign.rs`), a
//! timestamp within the allowed skew, and a nonce never seen before — counted in the shared
//! counters, so a replay is refused on every instance on one database. Every refusal is audited
//! (without the key). Then the caller: the app, a user (the request's `user_token`, checked
//! against the IdP), or an agent (its own key, or the app key naming it as `X-Alter-Caller`).

use axum::body::Bytes;
use axum::{
    extract::{FromRequest, Request},
    http::{HeaderMap, StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{Context, SdkError, SdkState, sign};
use crate::{
    model::{AgentStatus, PrincipalKind},
    vault::{
        Caller, Principal, agent_key,
        api_keys::{AppKey, KeyAuthError},
    },
};

/// The scopes an agent key carries: what an agent may do on its own.
const AGENT_KEY_SCOPES: &[&str] = &[
    "proxy:execute",
    "grants:read",
    "approvals:read",
    "providers:read",
];

/// The largest request body `/sdk/*` reads.
const MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone)]
pub enum KeyKind {
    App(AppKey),
    Agent,
}

/// An authenticated `/sdk/*` request.
#[derive(Debug, Clone)]
pub struct SdkCtx {
    pub key: KeyKind,
    /// The app, the agent of an agent key, or the agent an app key names as its caller.
    pub principal: Principal,
    /// `X-Alter-Caller` when it is a label (attribution only).
    pub label: Option<String>,
    /// `X-Alter-Context`.
    pub context: Context,
    /// The key's scopes, narrowed by `X-Alter-Scope-Constraints`.
    pub scopes: Vec<String>,
    pub body: Bytes,
    pub path: String,
    /// The lookup prefix of the key used, for the audit trail.
    pub key_label: String,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn printable(s: &str) -> bool {
    s.len() <= 255 && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

impl FromRequest<SdkState> for SdkCtx {
    type Rejection = SdkError;

    async fn from_request(req: Request, st: &SdkState) -> Result<Self, SdkError> {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
            SdkError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {MAX_BODY} bytes"),
            )
        })?;
        match authenticate(st, &parts, body).await {
            Ok(ctx) => Ok(ctx),
            Err((e, key_label)) => {
                st.vault
                    .audit_refused(
                        "sdk_auth",
                        &e.code,
                        format!(
                            "{} {} key={} {}",
                            parts.method,
                            parts.uri.path(),
                            key_label.as_deref().unwrap_or("-"),
                            e.message
                        ),
                    )
                    .await;
                Err(e)
            }
        }
    }
}

type Refusal = (SdkError, Option<String>);

async fn authenticate(st: &SdkState, parts: &Parts, body: Bytes) -> Result<SdkCtx, Refusal> {
    let h = &parts.headers;
    let no_key = |e: SdkError| (e, None);
    let key = header(h, "x-api-key").ok_or_else(|| {
        no_key(SdkError::unauthorized(
            "invalid_key",
            "send the API key in the x-api-key header",
        ))
    })?;
    // The key's lookup prefix names it in the audit trail without revealing it.
    let key_label = key
        .get(..9)
        .filter(|p| p.starts_with("alter_"))
        .and_then(|kind| {
            let kind = &kind[6..8];
            agent_key::parse_kind(key, kind)
                .ok()
                .map(|p| format!("alter_{kind}_{}…", p.lookup_prefix()))
        });
    let refuse = |e: SdkError| (e, key_label.clone());
    let (kind, mut principal) = if key.starts_with("alter_rk_") {
        match st.vault.authenticate_app_key(key).await {
            Ok(k) => {
                let p = k.principal();
                (KeyKind::App(k), p)
            }
            Err(e @ KeyAuthError::Unavailable) => {
                return Err(refuse(SdkError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.code(),
                    e.to_string(),
                )));
            }
            Err(e) => {
                return Err(refuse(
                    SdkError::unauthorized(e.code(), e.to_string()).with(
                        "hint",
                        json!("create a key with `vault-mcp keys create NAME`"),
                    ),
                ));
            }
        }
    } else if key.starts_with("alter_ak_") {
        match st.vault.authenticate_agent_key(key).await {
            Ok(p) => (KeyKind::Agent, p),
            Err(crate::vault::AgentAuthError::Unavailable) => {
                return Err(refuse(SdkError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "the vault could not check the key right now; retry",
                )));
            }
            Err(e) => {
                let code = match e {
                    crate::vault::AgentAuthError::Disabled(_) => "agent_inactive",
                    crate::vault::AgentAuthError::RotatedOut => "key_rotated_grace_expired",
                    _ => "invalid_key",
                };
                return Err(refuse(SdkError::unauthorized(code, e.to_string())));
            }
        }
    } else {
        return Err(refuse(SdkError::unauthorized(
            "invalid_key",
            "not an API key this server issues (alter_rk_… application keys, alter_ak_… agent keys)",
        )));
    };

    // The signature, over exactly what was received.
    let bad_sig = |m: &str| refuse(SdkError::unauthorized("invalid_signature", m.to_owned()));
    let (Some(ts), Some(nonce), Some(signature)) = (
        header(h, "x-alter-timestamp"),
        header(h, "x-alter-nonce"),
        header(h, "x-alter-signature"),
    ) else {
        return Err(bad_sig(
            "the request is not signed (X-Alter-Timestamp, X-Alter-Nonce and X-Alter-Signature are required)",
        ));
    };
    let t: i64 = ts
        .parse()
        .map_err(|_| bad_sig("X-Alter-Timestamp is not a number of seconds"))?;
    if crate::vault::now().abs_diff(t) > st.max_skew_secs.unsigned_abs() {
        return Err(refuse(SdkError::unauthorized(
            "stale_timestamp",
            format!(
                "the request's timestamp is more than {} s from the server's clock; check the clock and retry",
                st.max_skew_secs
            ),
        )));
    }
    if !(8..=128).contains(&nonce.len())
        || !nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad_sig(
            "X-Alter-Nonce must be 8 to 128 letters, digits, - or _",
        ));
    }
    let body_sha = sign::sha256_hex(&body);
    if let Some(claimed) = header(h, "x-alter-content-sha256")
        && !claimed.eq_ignore_ascii_case(&body_sha)
    {
        return Err(bad_sig("the body does not match X-Alter-Content-SHA256"));
    }
    let identity = sign::IdentityHeaders {
        caller: header(h, "x-alter-caller").map(str::to_owned),
        caller_type: header(h, "x-alter-caller-type").map(str::to_owned),
        actor_id: header(h, "x-alter-actor-id").map(str::to_owned),
        context: header(h, "x-alter-context").map(str::to_owned),
    };
    let constraints = header(h, "x-alter-scope-constraints").unwrap_or("");
    let rule = header(h, "x-alter-request-rule");
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let signed = sign::Signed {
        method: parts.method.as_str(),
        path_and_query: target,
        timestamp: ts,
        nonce,
        body_sha256: &body_sha,
        scope_constraints: constraints,
        request_rule: rule,
        identity: &identity,
    };
    if !sign::verify(
        &sign::signing_key(key),
        &signed,
        signature,
        header(h, "x-alter-signature-v2"),
    ) {
        return Err(bad_sig(
            "the signature does not match the request (tampered, or signed with another key)",
        ));
    }
    // Single use, on every instance: only after the signature holds, so strangers cannot
    // burn nonces.
    match st
        .vault
        .claim_nonce(
            key_label.as_deref().unwrap_or("?"),
            nonce,
            2 * st.max_skew_secs,
        )
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return Err(refuse(SdkError::unauthorized(
                "replayed_nonce",
                "this nonce was used before: every request needs a fresh one",
            )));
        }
        Err(e) => return Err(refuse(e.into())),
    }
    if rule.is_some() {
        // A per-request rule only ever narrows; refusing it is the safe answer until it is
        // enforced.
        return Err(refuse(SdkError::not_implemented(
            "X-Alter-Request-Rule (per-request rules)",
        )));
    }

    // What the key may do, narrowed by signed constraints.
    let mut scopes: Vec<String> = match &kind {
        KeyKind::App(k) => k.scopes.clone(),
        KeyKind::Agent => AGENT_KEY_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
    };
    if !constraints.is_empty() {
        let asked: Vec<String> = constraints
            .split(',')
            .map(|s| s.trim().to_owned())
            .collect();
        if let Some(wide) = asked.iter().find(|s| !scopes.contains(s)) {
            return Err(refuse(SdkError::new(
                StatusCode::BAD_REQUEST,
                "constraint_not_narrowing",
                format!("the key does not have `{wide}`: constraints may only narrow its scopes"),
            )));
        }
        scopes = asked;
    }

    // The caller: a label, or (app keys) an agent named by its UUID.
    let mut label = None;
    if let Some(c) = identity.caller.as_deref() {
        if !printable(c) {
            return Err(refuse(SdkError::bad_request(
                "X-Alter-Caller",
                "printable ASCII, at most 255 characters",
            )));
        }
        let as_agent =
            identity.caller_type.as_deref() == Some("agent") && uuid::Uuid::parse_str(c).is_ok();
        match (&kind, as_agent) {
            (KeyKind::App(_), true) => {
                // Acting as an agent reaches what is delegated to it: only keys that administer
                // agents (and so could mint the agent a key anyway) may, and only with what an
                // agent's own key could do.
                if !scopes.iter().any(|s| s == "agents:admin") {
                    return Err(refuse(SdkError::new(
                        StatusCode::FORBIDDEN,
                        "insufficient_scope",
                        "acting as an agent (X-Alter-Caller-Type: agent) needs a key with the agents:admin scope",
                    )));
                }
                scopes.retain(|s| AGENT_KEY_SCOPES.contains(&s.as_str()));
                let agent = st
                    .vault
                    .agent_by_sdk_id(c)
                    .await
                    .map_err(|e| refuse(e.into()))?
                    .ok_or_else(|| {
                        refuse(SdkError::new(
                            StatusCode::NOT_FOUND,
                            "caller_agent_unresolved",
                            format!("no agent {c}"),
                        ))
                    })?;
                if agent.status != AgentStatus::Active {
                    return Err(refuse(SdkError::unauthorized(
                        "agent_inactive",
                        format!("agent {} is disabled", agent.name),
                    )));
                }
                principal =
                    Principal::of_kind(PrincipalKind::Agent, agent.id.to_string(), agent.name);
            }
            (KeyKind::Agent, true)
                if crate::model::sdk_uuid(principal.id()) != c.to_ascii_lowercase() =>
            {
                return Err(refuse(SdkError::new(
                    StatusCode::BAD_REQUEST,
                    "caller_agent_mismatch",
                    "an agent key speaks only for its own agent",
                )));
            }
            _ => label = Some(c.to_owned()),
        }
    }
    let context: Context = match identity.context.as_deref() {
        None => Context::new(),
        Some(text) => serde_json::from_str(text).map_err(|_| {
            refuse(SdkError::bad_request(
                "X-Alter-Context",
                "must be a JSON object of string values",
            ))
        })?,
    };
    Ok(SdkCtx {
        key: kind,
        principal,
        label,
        context,
        scopes,
        body,
        path: parts.uri.path().to_owned(),
        key_label: key_label.unwrap_or_default(),
    })
}

impl SdkCtx {
    /// Refuse unless the key (as narrowed) has `scope`.
    pub fn require(&self, scope: &str) -> Result<(), SdkError> {
        if self.scopes.iter().any(|s| s == scope) {
            return Ok(());
        }
        Err(SdkError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this key lacks the `{scope}` scope"),
        )
        .with("required", json!([scope]))
        .with("granted", json!(self.scopes))
        .with("missing", json!([scope]))
        .with("scope_version", json!(1))
        .with("current_scope_version", json!(1))
        .with("scope_version_mismatch", json!(false)))
    }

    pub fn is_agent_key(&self) -> bool {
        matches!(self.key, KeyKind::Agent)
    }

    /// The request body as `T`; a body that does not fit is a 422 naming what is wrong.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, SdkError> {
        let body: &[u8] = if self.body.is_empty() {
            b"{}"
        } else {
            &self.body
        };
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body)).map_err(
            |e| {
                SdkError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_error",
                    format!("request body: {}: {}", e.path(), e.inner()),
                )
            },
        )
    }

    /// The `Caller` the vault sees: the key's principal, or the user of `user_token` (app keys
    /// only: an agent acts as itself).
    pub async fn caller(
        &self,
        st: &SdkState,
        user_token: Option<&str>,
    ) -> Result<Caller, SdkError> {
        let tool = format!("sdk:{}", self.path.trim_start_matches("/sdk/"));
        let token = user_token.map(str::trim).filter(|t| !t.is_empty());
        let mut caller = match token {
            None => Caller::new(self.principal.clone(), tool),
            Some(_) if self.principal.kind() == PrincipalKind::Agent => {
                return Err(SdkError::bad_request(
                    "user_token",
                    "an agent acts as itself; user tokens go with application keys",
                ));
            }
            Some(t) => {
                let users = st.users.as_ref().ok_or_else(|| {
                    SdkError::unauthorized(
                        "jwt_validation_error",
                        "this server has no [http.idp] to check user tokens against",
                    )
                })?;
                let claims = users
                    .validator
                    .validate(t, &users.audience, crate::auth::jwt::TokenUse::Access)
                    .await
                    .map_err(|e| {
                        SdkError::unauthorized(
                            "jwt_validation_error",
                            format!("the user token was refused: {e}"),
                        )
                    })?;
                // As on MCP: a client-credentials subject mapped to an agent is that agent, never
                // a user (a disabled agent is refused).
                match st.vault.agent_for_jwt_subject(&claims.sub).await {
                    Ok(Some(agent)) => Caller::new(agent, tool),
                    Ok(None) => {
                        let groups = users
                            .groups_claim
                            .as_deref()
                            .map(|c| claims.groups(c))
                            .unwrap_or_default();
                        Caller::new(crate::auth::principal_from_claims(&claims), tool)
                            .with_groups(groups)
                    }
                    Err(e) => {
                        return Err(SdkError::unauthorized(
                            "jwt_validation_error",
                            format!("the user token was refused: {e}"),
                        ));
                    }
                }
            }
        };
        if caller.principal.kind() != PrincipalKind::Agent {
            caller.agent = self.label.clone();
        }
        Ok(caller)
    }

    /// The context as the audit trail keeps it: the SDK's pairs (run, thread, tool call…).
    pub fn context_json(&self) -> Option<String> {
        crate::vault::request::check_context(&self.context)
            .ok()
            .flatten()
    }

    /// Audit a request refused after authentication.
    pub async fn audit_refusal(&self, st: &SdkState, what: &str, e: &SdkError) {
        let caller = Caller::new(self.principal.clone(), format!("sdk:{what}"));
        st.vault
            .audit_sdk(
                &caller,
                "sdk_call",
                &e.code,
                self.context_json(),
                format!("{what}: {}", e.message),
            )
            .await;
    }

    /// Audit a request (for endpoints the vault does not audit on its own).
    pub async fn audit(&self, st: &SdkState, caller: &Caller, outcome: &str, detail: String) {
        st.vault
            .audit_sdk(caller, "sdk_call", outcome, self.context_json(), detail)
            .await;
    }
}
