//! The `vault_request` pipeline, top to bottom:
//! validate → canonical URL → resolve grant → destination check → scope check → policy →
//! credential (refresh) → the outbound door (inject, send, same-origin redirects re-checked
//! against destination and policy, scrub) → classify → audit.
//! The audit entry is durable before the result is returned; if it cannot be written, the
//! caller gets `audit_unavailable` instead of the response. Refused calls are audited too.

use crate::model::{AuditOutcome, GrantKind};
use std::{collections::BTreeMap, sync::Arc, time::Instant};

use serde::Serialize;
use serde_json::Value;
use url::Url;

use super::{
    Caller, GrantSelector, Vault, VaultError,
    approval::ApprovalQuestion,
    audit,
    cache::Ready,
    canonical::CanonicalUrl,
    classify::{ScopeSignal, scope_signal},
    headers, new_id, now,
    outbound::{ApiCall, Purpose, Sent},
    policy::{Decision, PolicyInput},
    template,
};
use crate::{
    providers::{Injection, Provider},
    secret::Credential,
    store::{AuditEntry, GrantRow},
};

pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
const MAX_URL_LEN: usize = 65_536;
const MAX_REASON_LEN: usize = 1_000;

#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    None,
    Json(Value),
    Text(String),
}

/// A validated-shape request from a tool or the CLI (values still unchecked).
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: String,
    pub url: String,
    pub path_params: BTreeMap<String, String>,
    pub query_params: Vec<(String, String)>,
    pub headers: BTreeMap<String, String>,
    pub body: RequestBody,
    pub grant: GrantSelector,
    pub reason: Option<String>,
    /// Scopes the caller knows this call needs; missing ones yield `scope_reauth_required`.
    pub required_scopes: Vec<String>,
    /// The server runs read-only: only GET, HEAD and OPTIONS may be sent.
    pub read_only: bool,
    /// The caller's context for the audit trail and policy: string pairs, checked (types and
    /// limits) by `check_context` inside the audited pipeline, so a bad one is audited too.
    pub context: BTreeMap<String, Value>,
}

/// Limits of `context`: what fits an audit record and a policy match, never trimmed silently.
pub const CONTEXT_MAX_KEYS: usize = 20;
pub const CONTEXT_MAX_KEY_LEN: usize = 64;
pub const CONTEXT_MAX_VALUE_LEN: usize = 512;
pub const CONTEXT_MAX_BYTES: usize = 4096;

/// Whether `k` may be a context key: letters, digits, `_ . : -` (so it can be searched and
/// named in policy without quoting).
pub fn valid_context_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars().count() <= CONTEXT_MAX_KEY_LEN
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Check a request context against its limits; returns its canonical JSON (keys sorted).
pub fn check_context(ctx: &BTreeMap<String, Value>) -> Result<Option<String>, VaultError> {
    if ctx.is_empty() {
        return Ok(None);
    }
    if ctx.len() > CONTEXT_MAX_KEYS {
        return Err(VaultError::invalid(
            "context",
            format!(
                "has {} keys; at most {CONTEXT_MAX_KEYS} are allowed",
                ctx.len()
            ),
        ));
    }
    for (k, v) in ctx {
        let shown_key: String = k.chars().take(80).collect();
        let Some(v) = v.as_str() else {
            return Err(VaultError::invalid(
                format!("context.{shown_key}"),
                "values are strings (write numbers and flags as text, e.g. \"5\")",
            ));
        };
        if !valid_context_key(k) {
            let shown: String = k.chars().take(80).collect();
            return Err(VaultError::invalid(
                "context",
                format!(
                    "key `{shown}` is not allowed: keys are 1 to {CONTEXT_MAX_KEY_LEN} characters of letters, digits, `_`, `.`, `:` and `-`"
                ),
            ));
        }
        if v.chars().count() > CONTEXT_MAX_VALUE_LEN {
            return Err(VaultError::invalid(
                format!("context.{k}"),
                format!(
                    "is {} characters long; values are at most {CONTEXT_MAX_VALUE_LEN}",
                    v.chars().count()
                ),
            ));
        }
    }
    let json = serde_json::to_string(ctx).expect("string map serializes");
    if json.len() > CONTEXT_MAX_BYTES {
        return Err(VaultError::invalid(
            "context",
            format!(
                "is {} bytes as JSON; at most {CONTEXT_MAX_BYTES} are allowed",
                json.len()
            ),
        ));
    }
    Ok(Some(json))
}

/// The provider's answer, as the model sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub ok: bool,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    pub body_encoding: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    pub truncated: bool,
    pub size_bytes: usize,
    pub grant_id: String,
    pub provider: String,
    pub account: String,
    pub call_id: String,
    pub latency_ms: u64,
}

/// A request after argument validation: final URL (without the injected query credential).
struct Prepared {
    method: http::Method,
    url: CanonicalUrl,
    body: Option<(Vec<u8>, &'static str)>,
}

fn prepare(req: &ApiRequest) -> Result<(Prepared, String), VaultError> {
    let method_up = req.method.trim().to_ascii_uppercase();
    if !METHODS.contains(&method_up.as_str()) {
        return Err(VaultError::invalid(
            "method",
            format!(
                "`{}` is not allowed; use one of {}",
                req.method,
                METHODS.join(", ")
            ),
        ));
    }
    let method = http::Method::from_bytes(method_up.as_bytes()).expect("allowlisted");
    let rendered = template::render(&req.url, &req.path_params)?;
    let mut url = Url::parse(&rendered).map_err(|e| {
        VaultError::invalid(
            "url",
            format!(
                "`{}` is not an absolute URL ({e}); write it as https://host/path",
                req.url
            ),
        )
    })?;
    url.set_fragment(None);
    if !req.query_params.is_empty() {
        let mut q = url.query_pairs_mut();
        for (k, v) in &req.query_params {
            if k.is_empty() {
                return Err(VaultError::invalid(
                    "query_params",
                    "parameter names must not be empty",
                ));
            }
            q.append_pair(k, v);
        }
    }
    if url.as_str().len() > MAX_URL_LEN {
        return Err(VaultError::invalid(
            "url",
            format!("the URL with its query is longer than {MAX_URL_LEN} characters"),
        ));
    }
    if let Some(r) = &req.reason
        && r.chars().count() > MAX_REASON_LEN
    {
        return Err(VaultError::invalid(
            "reason",
            format!("keep it under {MAX_REASON_LEN} characters"),
        ));
    }
    let body = match &req.body {
        RequestBody::None => None,
        RequestBody::Json(v) => Some((
            serde_json::to_vec(v).expect("JSON value serializes"),
            "application/json",
        )),
        RequestBody::Text(t) => Some((t.clone().into_bytes(), "text/plain; charset=utf-8")),
    };
    // Header rules that need no grant are checked up front, before any lookup.
    headers::caller_headers(&req.headers, None)?;
    if body.is_some() && method == http::Method::HEAD {
        return Err(VaultError::invalid(
            "body",
            "a HEAD request cannot have a body",
        ));
    }
    let url = CanonicalUrl::new(url)?;
    Ok((Prepared { method, url, body }, method_up))
}

/// What an approval is bound to: the method, the URL as sent (with its query) and the body.
fn call_hash(
    method: &http::Method,
    url: &CanonicalUrl,
    body: Option<&(Vec<u8>, &'static str)>,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update(b"\n");
    h.update(url.url().as_str().as_bytes());
    h.update(b"\n");
    if let Some((b, ct)) = body {
        h.update(ct.as_bytes());
        h.update(b"\n");
        h.update(b);
    }
    hex::encode(h.finalize())
}

/// An agent's call against its scope allowlist for the provider: every scope it declares must
/// be allowed, and a grant broader than the allowlist is usable only with such a declaration
/// (tokens cannot be narrowed after they are issued).
fn agent_scopes(
    grant: &GrantRow,
    required: &[String],
    allowed: &[String],
) -> Result<(), VaultError> {
    let refused: Vec<String> = required
        .iter()
        .filter(|s| !allowed.contains(s))
        .cloned()
        .collect();
    let allowed_text = if allowed.is_empty() {
        "none".to_owned()
    } else {
        allowed.join(", ")
    };
    if !refused.is_empty() {
        return Err(VaultError::ScopeNotAllowed {
            provider: grant.provider.clone(),
            message: format!(
                "this agent may not use the {} scope(s) {} (allowed: {allowed_text}); an operator can widen its access set with `vault-mcp agents update NAME --scopes {}=...`",
                grant.provider,
                refused.join(", "),
                grant.provider
            ),
            scopes: refused,
            allowed: allowed.to_vec(),
        });
    }
    let beyond: Vec<String> = grant
        .scopes
        .iter()
        .filter(|s| !allowed.contains(s))
        .cloned()
        .collect();
    if required.is_empty() && !beyond.is_empty() {
        return Err(VaultError::ScopeNotAllowed {
            provider: grant.provider.clone(),
            message: format!(
                "grant {} carries scope(s) beyond this agent's allowlist ({}); declare the scopes this call needs in required_scopes (allowed: {allowed_text})",
                grant.id,
                beyond.join(", ")
            ),
            scopes: beyond,
            allowed: allowed.to_vec(),
        });
    }
    Ok(())
}

/// The first 500 characters of a body, for the person approving the call.
fn body_preview(b: &[u8]) -> String {
    let text = String::from_utf8_lossy(b);
    match text.char_indices().nth(500) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.into_owned(),
    }
}

/// A query parameter named like the one the credential is injected as would travel beside it
/// (and some servers read the first, some the last): refuse it.
fn query_conflict(url: &CanonicalUrl, injection: &Injection) -> Result<(), VaultError> {
    let Injection::Query { param } = injection else {
        return Ok(());
    };
    match url
        .url()
        .query_pairs()
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(param))
    {
        Some((k, _)) => Err(VaultError::invalid(
            format!("query_params.{k}"),
            format!(
                "`{k}` is the parameter the vault puts the credential in; remove it from the url and query_params"
            ),
        )),
        None => Ok(()),
    }
}

impl Vault {
    /// Make an authenticated API call for `caller`. See the module docs for the steps.
    pub async fn request(
        &self,
        caller: &Caller,
        req: ApiRequest,
    ) -> Result<ApiResponse, VaultError> {
        let call_id = new_id("call");
        let started = Instant::now();
        let mut ev = audit::entry(caller, "request", &call_id);
        ev.reason = req.reason.clone();
        let result = self
            .request_inner(caller, &req, &call_id, &mut ev, started)
            .await;
        ev.latency_ms = Some(started.elapsed().as_millis() as i64);
        match &result {
            Ok(r) => {
                ev.status = Some(r.status as i64);
                ev.outcome = if r.ok {
                    AuditOutcome::Ok
                } else {
                    AuditOutcome::ProviderError
                };
            }
            Err(e) => {
                ev.outcome = e.outcome();
                if ev.provider.is_none() {
                    ev.provider = e.provider().map(str::to_owned);
                }
                ev.detail = Some(match ev.detail.take() {
                    Some(d) => format!("{d}; {e}"),
                    None => e.to_string(),
                });
            }
        }
        self.inner.audit.write(ev).await?;
        result
    }

    async fn request_inner(
        &self,
        caller: &Caller,
        req: &ApiRequest,
        call_id: &str,
        ev: &mut AuditEntry,
        started: Instant,
    ) -> Result<ApiResponse, VaultError> {
        let inner = &self.inner;
        ev.context = check_context(&req.context)?;
        let (prepared, method) = prepare(req)?;
        // The audit trail records the canonical form policy decides on.
        ev.method = Some(method);
        ev.host = Some(prepared.url.host_label());
        ev.path = Some(prepared.url.path().to_owned());
        if let GrantSelector::Provider { provider, .. } = &req.grant {
            ev.provider = Some(provider.clone());
        }
        if req.read_only && !matches!(prepared.method.as_str(), "GET" | "HEAD" | "OPTIONS") {
            return Err(VaultError::PolicyViolation {
                rule: "read-only".into(),
                message: format!(
                    "this vault-mcp runs read-only: {} requests are not allowed, only GET, HEAD and OPTIONS",
                    prepared.method
                ),
            });
        }

        let reach = self.reach(caller).await?;
        let grant = self.resolve_grant(caller, &reach, &req.grant).await?;
        ev.grant_id = Some(grant.id.to_string());
        ev.provider = Some(grant.provider.clone());
        ev.grant_owner = Some(super::reach::owner_label(&grant));
        ev.delegation = reach.delegated_by(&grant).map(str::to_owned);
        // A warm grant comes with its provider definition, credential and scrubber (see `cache`).
        let cached = inner.cache.ready(&grant);
        let provider: Arc<Provider> = match &cached {
            Some(r) => r.provider.clone(),
            None => Arc::new(inner.effective_provider(&grant)?.into_owned()),
        };

        if let Some(e) = self.status_error(&grant) {
            return Err(self.with_repair_link(caller, e, &grant).await?);
        }
        if grant.grant_expires_at.is_some_and(|t| t <= now()) {
            let e = VaultError::GrantExpired {
                grant_id: grant.id.to_string(),
                provider: grant.provider.clone(),
                connect: None,
            };
            return Err(if grant.kind == GrantKind::OAuth {
                self.with_repair_link(caller, e, &grant).await?
            } else {
                e
            });
        }

        // Before anything secret is touched: is this a place the credential may go?
        inner
            .outbound
            .check(&prepared.url, &provider, Purpose::Api)?;
        let caller_headers =
            headers::caller_headers(&req.headers, provider.injection.header_name().as_deref())?;
        query_conflict(&prepared.url, &provider.injection)?;

        // An agent asks only for the scopes its access set allows on this provider.
        if let Some(allowed) = reach.allowed_scopes(&grant.provider) {
            agent_scopes(&grant, &req.required_scopes, allowed)?;
        }

        if grant.kind == GrantKind::OAuth {
            let missing: Vec<String> = req
                .required_scopes
                .iter()
                .filter(|s| !grant.scopes.contains(s))
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(self.scope_reauth(caller, &grant, missing).await?);
            }
        }

        // Policy, still before any credential is decrypted; it fails closed.
        self.apply_policy(caller, req, &grant, &prepared, ev)
            .await?;

        let (ready, grant) = match cached {
            Some(r) if !self.needs_refresh(&grant) => (r, grant),
            _ => {
                let (cred, g) = self
                    .usable_credential(caller, &grant, &provider, false)
                    .await?;
                (self.make_ready(&g, cred, provider.clone()), g)
            }
        };
        // A same-origin redirect is followed only where policy would allow a call on its own.
        let hop_check = |m: &http::Method, next: &CanonicalUrl| {
            self.check_redirect(caller, req, &grant, m, next)
        };
        macro_rules! call {
            ($r:expr) => {
                ApiCall {
                    provider: &provider,
                    credential: &$r.credential,
                    scrubber: &$r.scrubber,
                    method: prepared.method.clone(),
                    url: prepared.url.clone(),
                    headers: caller_headers.clone(),
                    body: prepared.body.clone(),
                    limits: &inner.settings.request,
                    on_redirect: &hop_check,
                }
            };
        }
        let mut sent: Sent = inner.outbound.api_call(call!(ready)).await?;
        let mut refreshed = None;
        if sent.status == 401
            && grant.kind == GrantKind::OAuth
            && ready.credential.refresh_token.is_some()
        {
            // The token may have been revoked or rotated early: refresh once and retry.
            let (cred2, g2) = self
                .usable_credential(caller, &grant, &provider, true)
                .await?;
            let ready2 = self.make_ready(&g2, cred2, provider.clone());
            sent = inner.outbound.api_call(call!(ready2)).await?;
            refreshed = Some(g2);
        }
        let grant = refreshed.unwrap_or(grant);
        if !sent.redirects.is_empty() {
            ev.detail = Some(format!("redirected to {}", sent.redirects.join(" -> ")));
        }

        if sent.status >= 400
            && grant.kind == GrantKind::OAuth
            && let ScopeSignal::Insufficient(wanted) =
                scope_signal(sent.status, &sent.headers, &grant.scopes)
        {
            let missing: Vec<String> = wanted
                .into_iter()
                .filter(|s| !grant.scopes.contains(s))
                .collect();
            inner
                .stores
                .grants
                .set_scope_mismatch(&grant.id, &missing, now())
                .await?;
            inner.cache.invalidate(&grant.id);
            if let Some(allowed) = reach.allowed_scopes(&grant.provider) {
                // Re-authorizing for a scope the agent may not use would not help it.
                agent_scopes(&grant, &missing, allowed)?;
            }
            return Err(self.scope_reauth(caller, &grant, missing).await?);
        }
        if sent.status == 401 {
            let detail = super::classify::bearer_challenge(&sent.headers)
                .and_then(|c| c.get("error_description").or(c.get("error")).cloned())
                .map(|d| sent.scrubber.owned(d));
            return Err(VaultError::ProviderUnauthorized {
                grant_id: grant.id.to_string(),
                provider: grant.provider.clone(),
                detail,
            });
        }

        // Coarse last-used tracking: a write at most once a minute per grant keeps the hot path
        // free of database writes other than the audit record.
        let t = now();
        if inner.cache.should_touch(&grant.id, grant.last_used_at, t) {
            inner.stores.grants.touch_grant(&grant.id, t).await?;
        }
        Ok(ApiResponse {
            status: sent.status,
            ok: (200..400).contains(&sent.status),
            headers: headers::response_headers(&sent.headers),
            body: sent.rendered.body,
            body_encoding: sent.rendered.encoding.into(),
            content_type: sent.rendered.content_type,
            truncated: sent.rendered.truncated,
            size_bytes: sent.rendered.size_bytes,
            grant_id: grant.id.to_string(),
            provider: grant.provider.clone(),
            account: grant.account.clone(),
            call_id: call_id.to_owned(),
            latency_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Cache a usable credential with its scrubber and provider (see `cache`).
    fn make_ready(
        &self,
        grant: &GrantRow,
        cred: Credential,
        provider: Arc<Provider>,
    ) -> Arc<Ready> {
        let scrubber = super::outbound::scrubber_for(&cred);
        self.inner.cache.put_ready(grant, cred, scrubber, provider)
    }

    pub(crate) fn policy_input<'a>(
        caller: &'a Caller,
        req: &'a ApiRequest,
        grant: &'a GrantRow,
        method: &'a str,
        host: &'a str,
        path: &'a str,
    ) -> PolicyInput<'a> {
        PolicyInput {
            principal: caller.principal.id(),
            caller: super::policy::CallerFacts {
                kind: caller.principal.kind(),
                groups: &caller.groups,
                agent: caller.is_agent().then(|| caller.principal.display()),
                context: Some(&req.context),
            },
            provider: &grant.provider,
            grant_id: &grant.id,
            grant_kind: grant.kind.as_str(),
            grant_scopes: &grant.scopes,
            // re-authorizing renews a grant
            grant_age_secs: now() - grant.updated_at.max(grant.created_at),
            method,
            host,
            path,
            reason: req.reason.as_deref(),
            now: jiff::Timestamp::now(),
        }
    }

    /// Policy for one redirect hop: the new path must be one a call could reach on its own
    /// without anything further (no approval, no rate-limit slot is used).
    fn check_redirect(
        &self,
        caller: &Caller,
        req: &ApiRequest,
        grant: &GrantRow,
        method: &http::Method,
        next: &CanonicalUrl,
    ) -> Result<(), VaultError> {
        let host = next.host_label();
        let input = Self::policy_input(caller, req, grant, method.as_str(), &host, next.path());
        match self.inner.policy.check(&input) {
            Decision::Allow { .. } => Ok(()),
            Decision::Deny { rule, message } => Err(VaultError::PolicyViolation {
                rule,
                message: format!(
                    "the provider redirected to {host}{}, and the vault did not follow: {message}",
                    next.path()
                ),
            }),
            Decision::GrantExpired { rule } | Decision::Approve { rule, .. } => {
                Err(VaultError::PolicyViolation {
                    message: format!(
                        "the provider redirected to {host}{}, which policy rule `{rule}` does not let the vault follow; call that URL directly",
                        next.path()
                    ),
                    rule,
                })
            }
        }
    }

    /// Take one unit from each rate-limit budget the call counts against (shared by every
    /// process on the database). The first exhausted budget refuses the call.
    async fn take_slots(&self, input: &PolicyInput<'_>) -> Result<(), VaultError> {
        for s in self.inner.policy.slots(input) {
            let taken = self
                .inner
                .stores
                .counters
                .take_slot(&s.key, s.window_start, s.limit, s.window_end)
                .await?;
            if taken.is_none() {
                return Err(VaultError::RateLimited {
                    retry_after_secs: (s.window_end - now()).max(1) as u64,
                    rule: s.rule,
                });
            }
        }
        Ok(())
    }

    async fn apply_policy(
        &self,
        caller: &Caller,
        req: &ApiRequest,
        grant: &GrantRow,
        prepared: &Prepared,
        ev: &mut AuditEntry,
    ) -> Result<(), VaultError> {
        let host = prepared.url.host_label();
        let method = prepared.method.as_str();
        let input = Self::policy_input(caller, req, grant, method, &host, prepared.url.path());
        let decision = self.inner.policy.check(&input);
        if matches!(decision, Decision::Allow { .. } | Decision::Approve { .. })
            && let Err(e) = self.take_slots(&input).await
        {
            if let VaultError::RateLimited { rule, .. } = &e {
                ev.decision = Some(format!("rate_limited:{rule}"));
            }
            return Err(e);
        }
        match decision {
            Decision::Allow { rules } => {
                ev.decision = Some(if rules.is_empty() {
                    "allow".into()
                } else {
                    format!("allow:{}", rules.join(","))
                });
                Ok(())
            }
            Decision::Deny { rule, message } => {
                ev.decision = Some(format!("deny:{rule}"));
                Err(VaultError::PolicyViolation { rule, message })
            }
            Decision::GrantExpired { rule } => {
                ev.decision = Some(format!("expired:{rule}"));
                let err = VaultError::GrantExpired {
                    grant_id: grant.id.to_string(),
                    provider: grant.provider.clone(),
                    connect: None,
                };
                Err(self.with_repair_link(caller, err, grant).await?)
            }
            Decision::Approve { rule, message } => {
                ev.decision = Some(format!("approval:{rule}"));
                let q = ApprovalQuestion {
                    grant_id: grant.id.to_string(),
                    provider: grant.provider.clone(),
                    account: grant.account.clone(),
                    method: method.to_owned(),
                    scheme: prepared.url.url().scheme().to_owned(),
                    host,
                    path: match prepared.url.url().query() {
                        Some(q) => format!("{}?{q}", prepared.url.path()),
                        None => prepared.url.path().to_owned(),
                    },
                    body_preview: prepared.body.as_ref().map(|(b, _)| body_preview(b)),
                    reason: req.reason.clone(),
                    rule,
                    call_hash: call_hash(&prepared.method, &prepared.url, prepared.body.as_ref()),
                };
                let how = self.obtain_approval(caller, grant, q, &message).await?;
                ev.decision = Some(how);
                Ok(())
            }
        }
    }

    async fn scope_reauth(
        &self,
        caller: &Caller,
        grant: &GrantRow,
        missing: Vec<String>,
    ) -> Result<VaultError, VaultError> {
        let mut wanted = grant.scopes.clone();
        for m in &missing {
            if !wanted.contains(m) {
                wanted.push(m.clone());
            }
        }
        let mut message = if missing.is_empty() {
            format!(
                "{} says the grant lacks a permission this call needs",
                grant.provider
            )
        } else {
            format!(
                "the {} grant for {} lacks the scope(s) {}",
                grant.provider,
                grant.account,
                missing.join(", ")
            )
        };
        let connect = self
            .offer_connect(
                caller,
                &grant.provider,
                &wanted,
                Some(&grant.id),
                &mut message,
            )
            .await?;
        Ok(VaultError::ScopeReauthRequired {
            provider: grant.provider.clone(),
            grant_id: grant.id.to_string(),
            missing_scopes: missing,
            message,
            connect: connect.map(Box::new),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, url: &str) -> ApiRequest {
        ApiRequest {
            method: method.into(),
            url: url.into(),
            path_params: BTreeMap::new(),
            query_params: vec![],
            headers: BTreeMap::new(),
            body: RequestBody::None,
            grant: GrantSelector::Provider {
                provider: "x".into(),
                account: None,
            },
            reason: None,
            required_scopes: vec![],
            read_only: false,
            context: BTreeMap::new(),
        }
    }

    #[test]
    fn context_limits_name_the_field() {
        let s = |v: &str| Value::String(v.to_owned());
        let ok: BTreeMap<String, Value> = (0..CONTEXT_MAX_KEYS)
            .map(|i| (format!("k{i}"), s("v")))
            .collect();
        assert!(check_context(&ok).unwrap().is_some());
        assert_eq!(check_context(&BTreeMap::new()).unwrap(), None);
        let mut many = ok.clone();
        many.insert("one-more".into(), s("v"));
        assert_eq!(field(check_context(&many).unwrap_err()), "context");
        let long_key = BTreeMap::from([("k".repeat(65), s("v"))]);
        assert_eq!(field(check_context(&long_key).unwrap_err()), "context");
        let odd_key = BTreeMap::from([("a b".to_owned(), s("v"))]);
        assert_eq!(field(check_context(&odd_key).unwrap_err()), "context");
        let long_value = BTreeMap::from([("ticket".to_owned(), s(&"v".repeat(513)))]);
        assert_eq!(
            field(check_context(&long_value).unwrap_err()),
            "context.ticket"
        );
        let max_value = BTreeMap::from([("ticket".to_owned(), s(&"é".repeat(512)))]);
        assert!(check_context(&max_value).is_ok(), "characters, not bytes");
        let big: BTreeMap<String, Value> = (0..10)
            .map(|i| (format!("k{i}"), s(&"v".repeat(500))))
            .collect();
        for wrong in [
            serde_json::json!(5),
            serde_json::json!({"a": "b"}),
            Value::Null,
        ] {
            let m = BTreeMap::from([("run".to_owned(), wrong)]);
            assert_eq!(field(check_context(&m).unwrap_err()), "context.run");
        }
        assert_eq!(field(check_context(&big).unwrap_err()), "context");
        let json = check_context(&BTreeMap::from([
            ("b".to_owned(), s("2")),
            ("a".to_owned(), s("\"x\"")),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(json, r#"{"a":"\"x\"","b":"2"}"#, "canonical: sorted keys");
    }

    #[test]
    fn agent_scope_allowlist() {
        let mut g = GrantRow {
            scopes: crate::model::Scopes::parse("read:user"),
            ..crate::vault::cache::tests::row("grt_1", 1)
        };
        let allowed = vec!["read:user".to_owned(), "repo:status".to_owned()];
        assert!(
            agent_scopes(&g, &[], &allowed).is_ok(),
            "grant within the list"
        );
        assert!(agent_scopes(&g, &["repo:status".into()], &allowed).is_ok());
        let e = agent_scopes(&g, &["repo".into()], &allowed).unwrap_err();
        assert!(matches!(&e, VaultError::ScopeNotAllowed { scopes, .. } if scopes == &["repo"]));
        assert!(
            e.to_string().contains("allowed: read:user, repo:status"),
            "{e}"
        );
        g.scopes = crate::model::Scopes::parse("read:user repo");
        let e = agent_scopes(&g, &[], &allowed).unwrap_err();
        assert!(e.to_string().contains("declare"), "{e}");
        assert!(agent_scopes(&g, &["read:user".into()], &allowed).is_ok());
        assert!(
            agent_scopes(&g, &["read:user".into()], &[]).is_err(),
            "empty list allows nothing"
        );
    }

    fn field(e: VaultError) -> String {
        match e {
            VaultError::InvalidRequest { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn method_allowlist_and_case() {
        assert!(prepare(&req("get", "https://a/")).is_ok());
        assert_eq!(
            field(prepare(&req("TRACE", "https://a/")).err().unwrap()),
            "method"
        );
        assert_eq!(
            field(prepare(&req("CONNECT", "https://a/")).err().unwrap()),
            "method"
        );
    }

    #[test]
    fn url_must_be_absolute_and_query_params_append() {
        assert_eq!(
            field(prepare(&req("GET", "/relative")).err().unwrap()),
            "url"
        );
        let mut r = req("GET", "https://a/x?keep=1#frag");
        r.query_params = vec![("q".into(), "a b&c".into()), ("q".into(), "2".into())];
        let (p, _) = prepare(&r).unwrap();
        assert_eq!(p.url.url().as_str(), "https://a/x?keep=1&q=a+b%26c&q=2");
    }

    #[test]
    fn head_with_body_is_refused() {
        let mut r = req("HEAD", "https://a/");
        r.body = RequestBody::Text("x".into());
        assert_eq!(field(prepare(&r).err().unwrap()), "body");
    }

    #[test]
    fn overlong_url_refused() {
        let r = req("GET", &format!("https://a/{}", "x".repeat(MAX_URL_LEN)));
        assert_eq!(field(prepare(&r).err().unwrap()), "url");
    }
}
