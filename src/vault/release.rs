//! Releasing a credential to a trusted backend: the SDK protocol's raw-token mode
//! (`POST /sdk/token`). This is the one place a credential leaves the vault instead of being put
//! on a request by the outbound door, so it is fenced in:
//!
//! - only application keys with the `tokens:raw` scope reach it (the SDK layer checks), never
//!   MCP (a model never sees a credential) and never an agent;
//! - only for a call to the provider's own hosts (the destination check runs first);
//! - never for a delegated grant, a grant a policy rule holds for approval or meters with a rate
//!   limit, or a query-parameter credential: those calls must go through the vault
//!   (`RequiresProxy`, the SDK's `*_requires_proxy` errors);
//! - every release is audited like a call.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{
    Caller, GrantSelector, Vault, VaultError, audit, canonical::CanonicalUrl, new_id, now,
    outbound::Purpose, policy::Decision,
};
use crate::{
    model::{Access, GrantKind},
    providers::Injection,
    secret::{Credential, Secret, secret},
    store::GrantRow,
};

/// Why a call must go through the vault instead of getting the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyReason {
    /// A delegated grant, or the caller is an agent.
    Delegated,
    /// A policy rule requires a person's approval.
    Approval,
    /// A policy rule meters or restricts the call, or the credential goes in the query.
    Restricted,
}

/// What the raw-token caller asks for.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub grant: GrantSelector,
    pub method: String,
    /// The URL the caller will call (without its query).
    pub url: String,
    pub reason: Option<String>,
    pub context: BTreeMap<String, Value>,
}

/// The credential and how to put it on the request.
pub struct ReleasedToken {
    pub grant: GrantRow,
    pub access_token: Secret,
    pub token_type: String,
    /// The binding expiry: the sooner of the token's and the grant's.
    pub expires_at: Option<i64>,
    pub injection_header: String,
    /// `{token}` is replaced by the access token; `AWS4-HMAC-SHA256` means SigV4.
    pub injection_format: String,
    /// SigV4: `secret_key`, `session_token`, `region`, `service`.
    pub additional_credentials: BTreeMap<String, Secret>,
}

impl std::fmt::Debug for ReleasedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleasedToken")
            .field("grant", &self.grant.id)
            .field("injection_header", &self.injection_header)
            .finish_non_exhaustive()
    }
}

fn shape(
    injection: &Injection,
    cred: &Credential,
) -> Result<(String, String, String, BTreeMap<String, Secret>), VaultError> {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let token = cred.access_token.clone();
    Ok(match injection {
        Injection::Bearer => (
            "Authorization".into(),
            "Bearer {token}".into(),
            token,
            BTreeMap::new(),
        ),
        Injection::Header { name, template } => {
            (name.clone(), template.clone(), token, BTreeMap::new())
        }
        Injection::Basic { username } => {
            let user = cred
                .username
                .as_deref()
                .or(username.as_deref())
                .unwrap_or("");
            (
                "Authorization".into(),
                "Basic {token}".into(),
                STANDARD.encode(format!("{user}:{token}")),
                BTreeMap::new(),
            )
        }
        Injection::AwsSigV4 { region, service } => {
            let mut extra = BTreeMap::from([
                ("secret_key".to_owned(), secret(token)),
                ("region".to_owned(), secret(region.clone())),
                ("service".to_owned(), secret(service.clone())),
            ]);
            if let Some(t) = &cred.session_token {
                extra.insert("session_token".into(), secret(t.clone()));
            }
            let key_id = cred.username.clone().ok_or_else(|| {
                VaultError::Internal("this SigV4 secret has no access key id".into())
            })?;
            (
                "Authorization".into(),
                "AWS4-HMAC-SHA256".into(),
                key_id,
                extra,
            )
        }
        Injection::Query { .. } => {
            return Err(VaultError::RequiresProxy {
                reason: ProxyReason::Restricted,
                message: "this provider takes its credential in the query string; call it through the vault (proxy_request)".into(),
            });
        }
    })
}

impl Vault {
    /// Hand a grant's credential to a trusted backend (see the module docs). Audited.
    pub async fn release_token(
        &self,
        caller: &Caller,
        req: TokenRequest,
    ) -> Result<ReleasedToken, VaultError> {
        let mut ev = audit::entry(caller, "token_release", &new_id("call"));
        ev.reason = req.reason.clone();
        ev.method = Some(req.method.to_ascii_uppercase());
        let r = self.release_inner(caller, &req, &mut ev).await;
        if let Err(e) = &r {
            ev.outcome = e.outcome();
            if ev.provider.is_none() {
                ev.provider = e.provider().map(str::to_owned);
            }
            ev.detail = Some(e.to_string());
        }
        self.inner.audit.write(ev).await?;
        r
    }

    async fn release_inner(
        &self,
        caller: &Caller,
        req: &TokenRequest,
        ev: &mut crate::store::AuditEntry,
    ) -> Result<ReleasedToken, VaultError> {
        let inner = &self.inner;
        ev.context = super::request::check_context(&req.context)?;
        if caller.is_agent() {
            return Err(VaultError::RequiresProxy {
                reason: ProxyReason::Delegated,
                message: "agents do not receive credentials; make the call through the vault (proxy_request)".into(),
            });
        }
        let method = req.method.trim().to_ascii_uppercase();
        if !super::request::METHODS.contains(&method.as_str()) {
            return Err(VaultError::invalid(
                "request.method",
                format!("`{}` is not allowed", req.method),
            ));
        }
        let url = CanonicalUrl::parse(&req.url)?;
        ev.host = Some(url.host_label());
        ev.path = Some(url.path().to_owned());
        let reach = self.reach(caller).await?;
        let grant = self.resolve_grant(caller, &reach, &req.grant).await?;
        ev.grant_id = Some(grant.id.to_string());
        ev.provider = Some(grant.provider.clone());
        ev.grant_owner = Some(super::reach::owner_label(&grant));
        if reach.access(&grant) == Some(Access::Delegated) {
            return Err(VaultError::RequiresProxy {
                reason: ProxyReason::Delegated,
                message: format!(
                    "grant {} is delegated; use it through the vault (proxy_request)",
                    grant.id
                ),
            });
        }
        if let Some(e) = self.status_error(&grant) {
            return Err(self.with_repair_link(caller, e, &grant).await?);
        }
        if grant.grant_expires_at.is_some_and(|t| t <= now()) {
            return Err(VaultError::GrantExpired {
                grant_id: grant.id.to_string(),
                provider: grant.provider.clone(),
                connect: None,
            });
        }
        let provider = inner.effective_provider(&grant)?.into_owned();
        // The credential is released only for a call to where it may go.
        inner.outbound.check(&url, &provider, Purpose::Api)?;
        let api = super::ApiRequest {
            method: method.clone(),
            url: req.url.clone(),
            path_params: Default::default(),
            query_params: Vec::new(),
            headers: Default::default(),
            body: super::RequestBody::None,
            grant: req.grant.clone(),
            reason: req.reason.clone(),
            required_scopes: Vec::new(),
            read_only: false,
            context: req.context.clone(),
        };
        let host = url.host_label();
        let input = Self::policy_input(caller, &api, &grant, &method, &host, url.path());
        match inner.policy.check(&input) {
            Decision::Allow { rules } => {
                if !inner.policy.slots(&input).is_empty() {
                    return Err(VaultError::RequiresProxy {
                        reason: ProxyReason::Restricted,
                        message: "a rate limit applies to this grant; call it through the vault (proxy_request)".into(),
                    });
                }
                ev.decision = Some(if rules.is_empty() {
                    "allow".into()
                } else {
                    format!("allow:{}", rules.join(","))
                });
            }
            Decision::Deny { rule, message } => {
                ev.decision = Some(format!("deny:{rule}"));
                return Err(VaultError::PolicyViolation { rule, message });
            }
            Decision::Approve { rule, .. } => {
                ev.decision = Some(format!("approval:{rule}"));
                return Err(VaultError::RequiresProxy {
                    reason: ProxyReason::Approval,
                    message: format!(
                        "policy rule `{rule}` requires a person's approval; call it through the vault (proxy_request)"
                    ),
                });
            }
            Decision::GrantExpired { rule } => {
                ev.decision = Some(format!("expired:{rule}"));
                return Err(VaultError::GrantExpired {
                    grant_id: grant.id.to_string(),
                    provider: grant.provider.clone(),
                    connect: None,
                });
            }
        }
        let (cred, grant) = self
            .usable_credential(caller, &grant, &provider, false)
            .await?;
        let (header, format, token, extra) = shape(&provider.injection, &cred)?;
        let expires_at = match (grant.token_expires_at, grant.grant_expires_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let _ = inner.stores.grants.touch_grant(&grant.id, now()).await;
        Ok(ReleasedToken {
            token_type: if grant.kind == GrantKind::OAuth {
                "Bearer".into()
            } else {
                "api_key".into()
            },
            access_token: secret(token),
            expires_at,
            injection_header: header,
            injection_format: format,
            additional_credentials: extra,
            grant,
        })
    }
}

/// What the SDK reports about a call it made with a released credential. Only the call's shape
/// is kept; the headers and bodies the SDK offers are not stored (a provider may echo anything).
#[derive(Debug, Clone, Default)]
pub struct RawCallReport {
    pub grant_id: Option<String>,
    pub provider: Option<String>,
    pub method: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub status: Option<i64>,
    pub latency_ms: Option<i64>,
    pub reason: Option<String>,
    pub context: Option<String>,
}

impl Vault {
    /// Record a raw-token call the caller made itself.
    pub async fn audit_raw_call(
        &self,
        caller: &Caller,
        r: RawCallReport,
    ) -> Result<(), VaultError> {
        let mut e = audit::entry(caller, "raw_call", &new_id("call"));
        e.grant_id = r.grant_id;
        e.provider = r.provider;
        e.method = r.method;
        e.host = r.host;
        e.path = r.path;
        e.status = r.status;
        e.latency_ms = r.latency_ms;
        e.reason = r.reason;
        e.context = r.context;
        e.outcome = match r.status {
            Some(s) if (200..400).contains(&s) => crate::model::AuditOutcome::Ok,
            _ => crate::model::AuditOutcome::ProviderError,
        };
        self.inner.audit.write(e).await
    }

    /// A provider told a raw-token caller that the grant lacks scopes: flag the grant (the next
    /// release says `scope_mismatch`).
    pub async fn report_scope_mismatch(
        &self,
        caller: &Caller,
        grant_id: &str,
        missing: &[String],
    ) -> Result<(), VaultError> {
        // The SDK sends this report without the user's token: an application key (the app's
        // trusted backend) may flag any grant; anyone else only one they reach.
        let g = if caller.principal.kind() == crate::model::PrincipalKind::App {
            self.inner
                .stores
                .grants
                .get_grant(grant_id)
                .await?
                .ok_or_else(|| VaultError::GrantNotFound {
                    grant_id: grant_id.to_owned(),
                })?
        } else {
            let reach = self.reach(caller).await?;
            self.resolve_grant(caller, &reach, &GrantSelector::Id(grant_id.to_owned()))
                .await?
        };
        let missing: Vec<String> = if missing.is_empty() {
            // The provider did not say which: record the mismatch without names.
            vec!["(unknown)".into()]
        } else {
            missing.to_vec()
        };
        self.inner
            .stores
            .grants
            .set_scope_mismatch(&g.id, &missing, now())
            .await?;
        self.inner.cache.invalidate(&g.id);
        let mut e = audit::entry(caller, "scope_mismatch_reported", &new_id("evt"));
        e.grant_id = Some(g.id.to_string());
        e.provider = Some(g.provider.clone());
        e.detail = Some(format!("missing={}", missing.join(" ")));
        self.inner.audit.write(e).await
    }
}
