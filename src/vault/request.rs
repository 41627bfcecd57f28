//! The `vault_request` pipeline, top to bottom:
//! validate → resolve grant → destination check → scope check → credential (refresh) →
//! inject → send (same-origin redirects only) → classify → scrub → audit.
//! The audit entry is durable before the result is returned; if it cannot be written, the
//! caller gets `audit_unavailable` instead of the response.

use std::{collections::BTreeMap, time::Instant};

use serde::Serialize;
use serde_json::Value;
use url::Url;

use super::{
    Caller, GrantSelector, Vault, VaultError,
    approval::ApprovalQuestion,
    audit,
    classify::{ScopeSignal, scope_signal},
    destination, headers,
    inject::{Injected, inject},
    new_id, now,
    policy::{Decision, PolicyInput},
    response::{self, RenderedBody},
    template,
};
use crate::{
    providers::Provider,
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
    url: Url,
    headers: http::HeaderMap,
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
    Ok((
        Prepared {
            method,
            url,
            headers: http::HeaderMap::new(),
            body,
        },
        method_up,
    ))
}

/// Injection for the identity lookup during Connect (same rules as API calls).
pub(crate) fn injection_for_identity(
    p: &Provider,
    cred: &Credential,
) -> Result<Injected, VaultError> {
    inject(&p.injection, cred)
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host() == b.host()
        && a.port_or_known_default() == b.port_or_known_default()
}

struct Sent {
    status: u16,
    headers: http::HeaderMap,
    rendered: RenderedBody,
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
                    "ok".into()
                } else {
                    "provider_error".into()
                };
            }
            Err(e) => {
                ev.outcome = e.code().into();
                if ev.provider.is_none() {
                    ev.provider = e.provider().map(str::to_owned);
                }
                ev.detail = Some(e.to_string());
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
        let (mut prepared, method) = prepare(req)?;
        ev.method = Some(method);
        ev.host = Some(destination::host_label(&prepared.url));
        ev.path = Some(prepared.url.path().to_owned());
        if let GrantSelector::Provider { provider, .. } = &req.grant {
            ev.provider = Some(provider.clone());
        }

        let grant = self.resolve_grant(caller, &req.grant).await?;
        ev.grant_id = Some(grant.id.clone());
        ev.provider = Some(grant.provider.clone());
        // Borrowed from the catalog unless the grant overrides hosts or injection: no clone per call.
        let provider = inner.effective_provider(&grant)?;

        if let Some(e) = self.status_error(&grant) {
            return Err(self.with_repair_link(caller, e, &grant).await?);
        }
        if grant.grant_expires_at.is_some_and(|t| t <= now()) {
            return Err(VaultError::GrantExpired {
                grant_id: grant.id.clone(),
                provider: grant.provider.clone(),
                connect: None,
            });
        }

        // Before anything secret is touched: is this a place the credential may go?
        destination::check(
            &prepared.url,
            &provider.host_patterns,
            &provider.id,
            inner.settings.request.allow_http_loopback,
        )?;
        prepared.headers =
            headers::caller_headers(&req.headers, provider.injection.header_name().as_deref())?;

        if grant.kind == "oauth" {
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

        let (cred, grant) = self
            .usable_credential(caller, &grant, &provider, false)
            .await?;
        let mut sent = self.send(&prepared, &provider, &cred).await?;
        let mut grant = grant;
        if sent.status == 401 && grant.kind == "oauth" && cred.refresh_token.is_some() {
            // The token may have been revoked or rotated early: refresh once and retry.
            let (cred2, g2) = self
                .usable_credential(caller, &grant, &provider, true)
                .await?;
            sent = self.send(&prepared, &provider, &cred2).await?;
            grant = g2;
        }

        if sent.status >= 400
            && grant.kind == "oauth"
            && let ScopeSignal::Insufficient(wanted) =
                scope_signal(sent.status, &sent.headers, &grant.scopes)
        {
            let missing: Vec<String> = wanted
                .into_iter()
                .filter(|s| !grant.scopes.contains(s))
                .collect();
            inner
                .store
                .set_scope_mismatch(&grant.id, &missing, now())
                .await?;
            return Err(self.scope_reauth(caller, &grant, missing).await?);
        }
        if sent.status == 401 {
            let detail = super::classify::bearer_challenge(&sent.headers)
                .and_then(|c| c.get("error_description").or(c.get("error")).cloned());
            return Err(VaultError::ProviderUnauthorized {
                grant_id: grant.id.clone(),
                provider: grant.provider.clone(),
                detail,
            });
        }

        // Coarse last-used tracking: a write at most once a minute per grant keeps the hot path
        // free of database writes other than the audit record.
        let t = now();
        if grant.last_used_at.is_none_or(|u| u < t - 60) {
            inner.store.touch_grant(&grant.id, t).await?;
        }
        Ok(ApiResponse {
            status: sent.status,
            ok: (200..400).contains(&sent.status),
            headers: headers::response_headers(&sent.headers, &[]),
            body: sent.rendered.body,
            body_encoding: sent.rendered.encoding.into(),
            content_type: sent.rendered.content_type,
            truncated: sent.rendered.truncated,
            size_bytes: sent.rendered.size_bytes,
            grant_id: grant.id.clone(),
            provider: grant.provider.clone(),
            account: grant.account.clone(),
            call_id: call_id.to_owned(),
            latency_ms: started.elapsed().as_millis() as u64,
        })
    }

    async fn apply_policy(
        &self,
        caller: &Caller,
        req: &ApiRequest,
        grant: &GrantRow,
        prepared: &Prepared,
        ev: &mut AuditEntry,
    ) -> Result<(), VaultError> {
        let host = destination::host_label(&prepared.url);
        let method = prepared.method.as_str();
        let input = PolicyInput {
            principal: caller.principal.id(),
            provider: &grant.provider,
            grant_id: &grant.id,
            grant_kind: &grant.kind,
            grant_scopes: &grant.scopes,
            // re-authorizing renews a grant
            grant_age_secs: now() - grant.updated_at.max(grant.created_at),
            method,
            host: &host,
            path: prepared.url.path(),
            reason: req.reason.as_deref(),
            now: jiff::Timestamp::now(),
        };
        match self.inner.policy.check(&input, true) {
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
            Decision::RateLimited {
                rule,
                retry_after_secs,
            } => {
                ev.decision = Some(format!("rate_limited:{rule}"));
                Err(VaultError::RateLimited {
                    rule,
                    retry_after_secs,
                })
            }
            Decision::GrantExpired { rule } => {
                ev.decision = Some(format!("expired:{rule}"));
                let err = VaultError::GrantExpired {
                    grant_id: grant.id.clone(),
                    provider: grant.provider.clone(),
                    connect: None,
                };
                Err(self.with_repair_link(caller, err, grant).await?)
            }
            Decision::Approve { rule, message } => {
                ev.decision = Some(format!("approval:{rule}"));
                let q = ApprovalQuestion {
                    provider: grant.provider.clone(),
                    account: grant.account.clone(),
                    method: method.to_owned(),
                    host,
                    path: prepared.url.path().to_owned(),
                    reason: req.reason.clone(),
                    rule,
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
            grant_id: grant.id.clone(),
            missing_scopes: missing,
            message,
            connect: connect.map(Box::new),
        })
    }

    /// Send with the credential injected; follow redirects only within the same origin.
    async fn send(
        &self,
        p: &Prepared,
        provider: &Provider,
        cred: &Credential,
    ) -> Result<Sent, VaultError> {
        let inner = &self.inner;
        let cfg = &inner.settings.request;
        let injected = inject(&provider.injection, cred)?;
        let needles = injected.needles();
        let mut url = p.url.clone();
        let mut method = p.method.clone();
        let mut body = p.body.clone();
        let timeout = std::time::Duration::from_secs(cfg.timeout_secs);
        let deadline = Instant::now() + timeout;
        for hop in 0..=cfg.max_redirects {
            let mut target = url.clone();
            if let Some((k, v)) = &injected.query {
                target.query_pairs_mut().append_pair(k, v);
            }
            let mut rb = inner
                .http
                .request(method.clone(), target)
                .headers(p.headers.clone());
            for (k, v) in &provider.extra_headers {
                if !p.headers.contains_key(k.as_str()) {
                    rb = rb.header(k, v);
                }
            }
            if let Some((name, value)) = &injected.header {
                rb = rb.header(name, value.clone());
            }
            if let Some((bytes, ct)) = &body {
                if !p.headers.contains_key(http::header::CONTENT_TYPE) {
                    rb = rb.header(http::header::CONTENT_TYPE, *ct);
                }
                rb = rb.body(bytes.clone());
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let host = destination::host_label(&url);
            let resp = rb.timeout(remaining).send().await.map_err(|e| {
                if e.is_timeout() {
                    VaultError::Timeout {
                        host: host.clone(),
                        secs: cfg.timeout_secs,
                    }
                } else {
                    VaultError::Network {
                        host: host.clone(),
                        message: crate::secret::scrub(
                            &crate::connect::oauth::error_chain(&e.without_url()),
                            &needles,
                        ),
                    }
                }
            })?;
            let status = resp.status().as_u16();
            if resp.status().is_redirection()
                && hop < cfg.max_redirects
                && let Some(next) = resp
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                && same_origin(&url, &next)
            {
                // Same origin: the credential may follow. 301/302/303 turn into a body-less GET.
                if matches!(status, 301..=303) && method != http::Method::HEAD {
                    method = http::Method::GET;
                    body = None;
                }
                url = next;
                continue;
            }
            // Anything else (including a redirect to another origin) goes back to the caller as is.
            let headers = resp.headers().clone();
            let ct = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let (bytes, truncated) = tokio::time::timeout(
                remaining,
                response::read_capped(resp, cfg.max_response_bytes),
            )
            .await
            .map_err(|_| VaultError::Timeout {
                host: host.clone(),
                secs: cfg.timeout_secs,
            })?
            .map_err(|e| VaultError::Network {
                host: host.clone(),
                message: crate::secret::scrub(
                    &crate::connect::oauth::error_chain(&e.without_url()),
                    &needles,
                ),
            })?;
            let rendered = response::render(bytes, truncated, ct.as_deref(), &needles);
            let mut headers_scrubbed = http::HeaderMap::new();
            for (k, v) in &headers {
                if let Ok(s) = v.to_str()
                    && needles.iter().any(|n| s.contains(n))
                {
                    continue;
                }
                headers_scrubbed.append(k.clone(), v.clone());
            }
            return Ok(Sent {
                status,
                headers: headers_scrubbed,
                rendered,
            });
        }
        unreachable!("the loop returns on its last hop")
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
        }
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
        assert_eq!(p.url.as_str(), "https://a/x?keep=1&q=a+b%26c&q=2");
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
