//! Grants: resolving which one a call uses, listing, revoking, and storing managed secrets.

use crate::model::{Access, AuditOutcome, GrantKind, GrantStatus, PrincipalKind};
use std::borrow::Cow;

use schemars::JsonSchema;
use serde::Serialize;

use super::{
    Caller, Inner, Vault, VaultError, error::GrantCandidate, new_id, now, reach::Reach, rfc3339,
};
use crate::{
    providers::{HostPattern, Injection, Provider, ProviderKind},
    secret::{Credential, Expose, Secret},
    store::{GrantFilter, GrantRow},
};

/// How a call names its grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantSelector {
    Id(String),
    Provider {
        provider: String,
        account: Option<String>,
    },
}

/// A grant as shown to users and models. Never contains credential material.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct GrantView {
    /// Grant id, usable as `grant_id` in vault_request.
    pub id: String,
    pub provider: String,
    pub provider_name: String,
    /// Account identifier at the provider (login, email) or the managed secret's label.
    pub account: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_display: Option<String>,
    /// `oauth` (from Connect) or `secret` (a managed API key).
    pub kind: GrantKind,
    /// Whose grant this is: `user`, `group`, `app` or `agent`.
    pub principal_type: PrincipalKind,
    /// The owner: the group's name, `app`, the agent's id; absent for your own grants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// How you reach this grant: `own`, `group`, `access_set` (an operator gave this agent
    /// access) or `delegated` (its owner lent it to this agent).
    pub access: Access,
    /// Agents this grant of yours is delegated to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delegated_to: Vec<String>,
    pub scopes: Vec<String>,
    /// `active`, `credential_revoked` (reconnect needed) or `expired`.
    pub status: String,
    /// True when the provider reported that the grant lacks scopes a call needed.
    pub scope_mismatch: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_scopes: Vec<String>,
    /// When the grant itself stops being usable (policy TTL), if ever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When the current access token expires (it is refreshed automatically).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    pub created_at: String,
}

/// A catalog entry as shown to users and models.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct ProviderView {
    pub id: String,
    pub name: String,
    /// `oauth2` (connect through the browser) or `api_key` (store a key with `vault-mcp secret add`).
    pub kind: String,
    pub api_hosts: Vec<String>,
    pub default_scopes: Vec<String>,
    /// Whether the OAuth app credentials are set, so Connect can work.
    pub configured: bool,
    pub supports_device_flow: bool,
    /// How the credential is sent.
    pub injection: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup_hint: Option<String>,
}

impl ProviderView {
    pub fn from_provider(p: &Provider) -> Self {
        ProviderView {
            id: p.id.clone(),
            name: p.name.clone(),
            kind: match p.kind {
                ProviderKind::Oauth2 => "oauth2".into(),
                ProviderKind::ApiKey => "api_key".into(),
            },
            api_hosts: p.api_hosts.clone(),
            default_scopes: p.default_scopes.clone(),
            configured: p.is_configured(),
            supports_device_flow: p.supports_device_flow(),
            injection: p.injection.describe(),
            setup_hint: match (p.kind, p.is_configured()) {
                (ProviderKind::Oauth2, false) => Some(p.configure_hint()),
                (ProviderKind::ApiKey, _) => Some(format!(
                    "store a key: vault-mcp secret add {} (reads the key from stdin)",
                    p.id
                )),
                _ => None,
            },
        }
    }
}

/// Who a managed secret is stored for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SecretOwner {
    /// The caller (the local user at the CLI).
    #[default]
    Caller,
    User(String),
    /// Every current member of an IdP group.
    Group(String),
    App,
    /// An agent, by name or id.
    Agent(String),
}

impl std::str::FromStr for SecretOwner {
    type Err = String;
    /// `user:ID`, `group:NAME`, `app`, `agent:NAME`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            Err(format!(
                "`{s}`: {why}; use user:ID, group:NAME, app or agent:NAME"
            ))
        };
        if s == "app" {
            return Ok(SecretOwner::App);
        }
        let Some((kind, id)) = s.split_once(':') else {
            return bad("no kind");
        };
        if id.trim().is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
            return bad("the name must be 1 to 200 printable characters");
        }
        match kind {
            "user" => Ok(SecretOwner::User(id.to_owned())),
            "group" => Ok(SecretOwner::Group(id.to_owned())),
            "agent" => Ok(SecretOwner::Agent(id.to_owned())),
            _ => bad("unknown kind"),
        }
    }
}

/// A managed secret to store.
pub struct NewSecret {
    pub provider: String,
    pub account: String,
    pub secret: Secret,
    pub username: Option<String>,
    /// A temporary credential's session token (AWS STS), sent with SigV4.
    pub session_token: Option<Secret>,
    pub injection: Option<Injection>,
    pub hosts: Option<Vec<String>>,
    pub owner: SecretOwner,
    /// The grant expires this long after it is stored.
    pub ttl_secs: Option<i64>,
}

/// Result of storing a managed secret.
#[derive(Debug, Clone, Serialize)]
pub struct StoredSecret {
    pub grant: GrantView,
    pub replaced: bool,
}

/// Result of revoking a grant.
#[derive(Debug, Clone, Serialize)]
pub struct Revoked {
    pub grant_id: String,
    pub provider: String,
    /// `revoked`, `not_supported` or an error text when provider-side revocation was tried.
    pub provider_revocation: String,
}

/// The longest lifetime a grant may be given.
pub const MAX_TTL_SECS: i64 = 10 * 365 * 86_400;

/// A lifetime in words for pages and messages: `2 days`, `3 hours`, `45 seconds`.
pub fn ttl_words(secs: i64) -> String {
    let (n, unit) = match secs {
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

pub(crate) fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Inner {
    /// The provider definition that applies to a grant: the catalog entry with the grant's
    /// own host/injection overrides, or a synthesized one for custom managed secrets.
    pub fn effective_provider<'a>(&'a self, g: &GrantRow) -> Result<Cow<'a, Provider>, VaultError> {
        let base = self.catalog.get(&g.provider);
        if let Some(b) = base
            && g.injection.is_none()
            && g.hosts.is_none()
        {
            return Ok(Cow::Borrowed(b));
        }
        let mut p = match base {
            Some(b) => b.clone(),
            None => Provider::custom_api_key(&g.provider),
        };
        if let Some(inj) = &g.injection {
            p.injection = serde_json::from_str(inj)
                .map_err(|e| VaultError::Internal(format!("grant {} injection: {e}", g.id)))?;
        }
        if let Some(hosts) = &g.hosts {
            p.api_hosts = hosts.clone();
            p.host_patterns = hosts
                .iter()
                .map(|h| HostPattern::parse(h))
                .collect::<Result<_, _>>()
                .map_err(|e| VaultError::Internal(format!("grant {} hosts: {e}", g.id)))?;
        }
        Ok(Cow::Owned(p))
    }

    pub fn grant_view(&self, g: &GrantRow) -> GrantView {
        let status =
            if g.grant_expires_at.is_some_and(|t| t <= now()) && g.status == GrantStatus::Active {
                "expired".to_owned()
            } else {
                g.status.to_string()
            };
        GrantView {
            principal: match g.principal_kind {
                PrincipalKind::User => None,
                _ => Some(g.principal.clone()),
            },
            access: Access::Own,
            delegated_to: Vec::new(),
            id: g.id.to_string(),
            provider: g.provider.clone(),
            provider_name: self
                .catalog
                .get(&g.provider)
                .map(|p| p.name.clone())
                .unwrap_or_else(|| g.provider.clone()),
            account: g.account.clone(),
            account_display: g.account_display.clone(),
            kind: g.kind,
            principal_type: g.principal_kind,
            scopes: g.scopes.0.clone(),
            status,
            scope_mismatch: !g.missing_scopes().is_empty(),
            missing_scopes: g.missing_scopes().to_vec(),
            expires_at: g.grant_expires_at.map(rfc3339),
            token_expires_at: g.token_expires_at.map(rfc3339),
            last_used_at: g.last_used_at.map(rfc3339),
            created_at: rfc3339(g.created_at),
        }
    }

    pub fn unknown_provider(&self, provider: &str) -> VaultError {
        VaultError::UnknownProvider {
            provider: provider.to_owned(),
            suggestion: self.catalog.suggest(provider).map(str::to_owned),
            known: self.catalog.ids().join(", "),
        }
    }
}

impl Vault {
    /// Pick the grant a call uses, among those `reach` allows. Errors carry what the model
    /// needs to recover; a missing grant comes back as `AuthorizationRequired` with a Connect
    /// link when one can help.
    pub(crate) async fn resolve_grant(
        &self,
        caller: &Caller,
        reach: &Reach,
        sel: &GrantSelector,
    ) -> Result<GrantRow, VaultError> {
        let inner = &self.inner;
        match sel {
            GrantSelector::Id(id) => match inner.stores.grants.get_grant(id).await? {
                Some(g) if reach.access(&g).is_some() => Ok(g),
                // Someone else's grant looks exactly like a missing one.
                _ => Err(VaultError::GrantNotFound {
                    grant_id: id.clone(),
                }),
            },
            GrantSelector::Provider { provider, account } => {
                let key = reach.cache_key();
                let grants = match inner.cache.grants(&key, provider) {
                    Some(g) => g,
                    None => {
                        let rows = inner
                            .stores
                            .grants
                            .list_grants(&GrantFilter {
                                owners: &reach.owners,
                                ids: &reach.ids,
                                provider: Some(provider),
                            })
                            .await?;
                        inner.cache.put_grants(&key, provider, rows)
                    }
                };
                if grants.is_empty() && inner.catalog.get(provider).is_none() {
                    return Err(inner.unknown_provider(provider));
                }
                let matching: Vec<&GrantRow> = match account {
                    Some(a) => grants
                        .iter()
                        .filter(|g| {
                            g.account.eq_ignore_ascii_case(a)
                                || g.account_display
                                    .as_deref()
                                    .is_some_and(|d| d.eq_ignore_ascii_case(a))
                        })
                        .collect(),
                    None => grants.iter().collect(),
                };
                match matching.as_slice() {
                    [one] => Ok((*one).clone()),
                    [] => {
                        let mut message = match (account, grants.is_empty()) {
                            (Some(a), false) => format!(
                                "no {provider} grant for account `{a}` (connected: {})",
                                grants
                                    .iter()
                                    .map(|g| g.account.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                            _ if caller.is_agent() => format!(
                                "agent {} has no {provider} grant: its owner can connect one and delegate it (start_connect with `agent`), or an operator adds one to its access set (`vault-mcp agents update {} --grant GRANT_ID`)",
                                caller.principal.display(),
                                caller.principal.display()
                            ),
                            _ => format!("{provider} is not connected for this user"),
                        };
                        // An agent has no browser: no Connect link for it.
                        let connect = if caller.is_agent() {
                            None
                        } else {
                            self.offer_connect(caller, provider, &[], None, &mut message)
                                .await?
                        };
                        Err(VaultError::AuthorizationRequired {
                            provider: provider.clone(),
                            message,
                            connect: connect.map(Box::new),
                        })
                    }
                    many => Err(VaultError::AmbiguousGrant {
                        provider: provider.clone(),
                        candidates: many
                            .iter()
                            .map(|g| GrantCandidate {
                                grant_id: g.id.to_string(),
                                account: g.account.clone(),
                                principal_type: g.principal_kind,
                                principal: match reach.access(g) {
                                    Some(Access::Own) => String::new(),
                                    _ => g.principal.clone(),
                                },
                                access: reach.access(g).unwrap_or(Access::Own),
                            })
                            .collect(),
                    }),
                }
            }
        }
    }

    /// The grants the caller may use, optionally for one provider.
    pub async fn list_grants(
        &self,
        caller: &Caller,
        provider: Option<&str>,
    ) -> Result<Vec<GrantView>, VaultError> {
        let reach = self.reach(caller).await?;
        let rows = self
            .inner
            .stores
            .grants
            .list_grants(&GrantFilter {
                owners: &reach.owners,
                ids: &reach.ids,
                provider,
            })
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for g in &rows {
            let mut v = self.inner.grant_view(g);
            v.access = reach.access(g).unwrap_or(Access::Own);
            if v.access == Access::Own {
                v.principal = None;
                if !caller.is_agent() {
                    v.delegated_to = self.delegated_to(&g.id).await?;
                }
            }
            out.push(v);
        }
        Ok(out)
    }

    /// Any principal's grant by id (operator view, CLI only). Never includes plaintext.
    pub async fn operator_grant(&self, id: &str) -> Result<Option<GrantRow>, VaultError> {
        Ok(self.inner.stores.grants.get_grant(id).await?)
    }

    /// Every principal's grants (operator view, CLI only).
    pub async fn list_all_grants(&self) -> Result<Vec<(String, GrantView)>, VaultError> {
        let rows = self
            .inner
            .stores
            .grants
            .list_grants(&GrantFilter::default())
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for g in &rows {
            let mut v = self.inner.grant_view(g);
            v.delegated_to = self.delegated_to(&g.id).await?;
            out.push((g.principal.clone(), v));
        }
        Ok(out)
    }

    pub fn list_providers(&self) -> Vec<ProviderView> {
        self.inner
            .catalog
            .all()
            .map(ProviderView::from_provider)
            .collect()
    }

    /// Store (or replace) a managed secret for the caller.
    pub async fn add_secret(
        &self,
        caller: &Caller,
        s: NewSecret,
    ) -> Result<StoredSecret, VaultError> {
        let inner = &self.inner;
        if !valid_id(&s.provider) {
            return Err(VaultError::invalid(
                "provider",
                "use lower-case letters, digits, `-` and `_` (at most 64)",
            ));
        }
        if s.account.trim().is_empty() || s.account.len() > 200 {
            return Err(VaultError::invalid(
                "account",
                "must be 1 to 200 characters",
            ));
        }
        if s.secret.expose_secret().trim().is_empty() {
            return Err(VaultError::invalid(
                "secret",
                "is empty; pipe the key on stdin or type it at the prompt",
            ));
        }
        if s.secret.expose_secret().contains(['\r', '\n']) {
            return Err(VaultError::invalid(
                "secret",
                "contains a line break; store the key alone",
            ));
        }
        let catalog = inner.catalog.get(&s.provider);
        if catalog.is_none() && s.hosts.as_ref().is_none_or(Vec::is_empty) {
            return Err(VaultError::invalid(
                "hosts",
                format!(
                    "`{}` is not a catalog provider, so give the API host(s) the key may be sent to (--host api.example.com)",
                    s.provider
                ),
            ));
        }
        if let Some(hosts) = &s.hosts {
            for h in hosts {
                HostPattern::parse(h).map_err(|e| VaultError::invalid("hosts", e))?;
            }
        }
        if let Some(inj) = &s.injection {
            inj.validate()
                .map_err(|e| VaultError::invalid("injection", e))?;
        }
        if let Some(t) = s.ttl_secs
            && !(1..=MAX_TTL_SECS).contains(&t)
        {
            return Err(VaultError::invalid(
                "ttl",
                "must be between 1 second and 10 years",
            ));
        }
        let cred = Credential {
            access_token: s.secret.expose_secret().trim().to_owned(),
            refresh_token: None,
            username: s.username.clone(),
            session_token: s
                .session_token
                .as_ref()
                .map(|t| t.expose_secret().trim().to_owned()),
        };
        let ts = now();
        let owner_id: (PrincipalKind, String) = match &s.owner {
            SecretOwner::Caller => (caller.principal.kind(), caller.principal.id().to_owned()),
            SecretOwner::User(u) => (PrincipalKind::User, u.clone()),
            SecretOwner::Group(g) => (PrincipalKind::Group, g.clone()),
            SecretOwner::App => (PrincipalKind::App, "app".to_owned()),
            SecretOwner::Agent(a) => (PrincipalKind::Agent, self.agent_id(a).await?.to_string()),
        };
        let owner = (owner_id.0, owner_id.1.as_str());
        let existing = inner
            .stores
            .grants
            .find_grant_by_account(owner, &s.provider, &s.account)
            .await?;
        if let Some(e) = &existing
            && e.kind != GrantKind::Secret
        {
            return Err(VaultError::invalid(
                "account",
                format!(
                    "{} account `{}` is already connected through OAuth (grant {}); pick another --account label",
                    s.provider, s.account, e.id
                ),
            ));
        }
        let id = existing.as_ref().map(|e| e.id.clone()).unwrap_or_default();
        let sealed = inner.seal(&id, &cred.to_sealing_bytes());
        let row = GrantRow {
            id: id.clone(),
            principal_kind: owner.0,
            principal: owner.1.to_owned(),
            provider: s.provider.clone(),
            kind: GrantKind::Secret,
            account: s.account.clone(),
            account_display: None,
            scopes: Default::default(),
            status: GrantStatus::Active,
            scope_mismatch: None,
            injection: s
                .injection
                .as_ref()
                .map(|i| serde_json::to_string(i).expect("serialize")),
            hosts: s.hosts.clone(),
            sealed,
            token_expires_at: None,
            grant_expires_at: s.ttl_secs.map(|t| ts + t),
            ttl_secs: s.ttl_secs,
            version: 1,
            created_at: existing.as_ref().map(|e| e.created_at).unwrap_or(ts),
            updated_at: ts,
            last_used_at: None,
        };
        if existing.is_some() {
            inner.stores.grants.delete_grant(&id).await?;
        }
        inner.stores.grants.insert_grant(&row).await?;
        inner.cache.invalidate(&id);
        let mut e = super::audit::entry(caller, "secret_stored", &new_id("evt"));
        e.grant_id = Some(id.to_string());
        e.grant_owner = Some(super::reach::owner_label(&row));
        e.provider = Some(s.provider);
        e.outcome = if existing.is_some() {
            AuditOutcome::Replaced
        } else {
            AuditOutcome::Created
        };
        inner.audit.write(e).await?;
        Ok(StoredSecret {
            grant: inner.grant_view(&row),
            replaced: existing.is_some(),
        })
    }

    /// Revoke a grant: tell the provider when it supports RFC 7009, then delete the grant.
    pub async fn revoke_grant(
        &self,
        caller: &Caller,
        grant_id: &str,
        at_provider: bool,
    ) -> Result<Revoked, VaultError> {
        let inner = &self.inner;
        let reach = self.reach(caller).await?;
        let g = match inner.stores.grants.get_grant(grant_id).await? {
            Some(g) if reach.access(&g) == Some(Access::Own) => g,
            Some(g) if reach.access(&g).is_some() => {
                return Err(VaultError::invalid(
                    "grant_id",
                    format!(
                        "grant {} is not yours to revoke (you reach it through a group, an access set or a delegation){}",
                        g.id,
                        if caller.is_agent() {
                            "; give up a delegation with release_delegation"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            _ => {
                return Err(VaultError::GrantNotFound {
                    grant_id: grant_id.to_owned(),
                });
            }
        };
        let provider_revocation = if !at_provider || g.kind != GrantKind::OAuth {
            "not_requested".to_owned()
        } else {
            match inner.catalog.get(&g.provider) {
                Some(p) if p.revoke_url.is_some() => {
                    let plain = inner.open(&g.id, &g.sealed)?;
                    let cred = Credential::from_sealing_bytes(&plain).ok_or_else(|| {
                        VaultError::Internal(format!(
                            "grant {} holds an unreadable credential",
                            g.id
                        ))
                    })?;
                    match super::outbound::oauth::revoke(&inner.outbound, p, &cred).await {
                        Ok(()) => "revoked".to_owned(),
                        Err(e) => format!("failed: {e}"),
                    }
                }
                _ => "not_supported".to_owned(),
            }
        };
        inner.stores.grants.delete_grant(&g.id).await?;
        inner.cache.invalidate(&g.id);
        // A revoked grant's id is never reused, but its delegations would linger in listings.
        for d in inner.stores.agents.delegations_of_grant(&g.id).await? {
            inner.stores.agents.undelegate(&g.id, &d.agent_id).await?;
        }
        let mut e = super::audit::entry(caller, "revoke", &new_id("evt"));
        e.grant_id = Some(g.id.to_string());
        e.provider = Some(g.provider.clone());
        e.detail = Some(format!("provider_revocation={provider_revocation}"));
        inner.audit.write(e).await?;
        Ok(Revoked {
            grant_id: g.id.to_string(),
            provider: g.provider,
            provider_revocation,
        })
    }
}
