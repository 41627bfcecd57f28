//! Connect: obtaining grants through real OAuth flows.
//!
//! A Connect *session* is the link handed to a user (through the agent) to authorize one or
//! more providers. Its URL carries a random token; only the token's hash is stored, so a
//! database dump yields no usable links. Each trip to a provider is an *attempt* with its own
//! `state` (CSRF, single use) and PKCE verifier (sealed at rest). The session is bound to the
//! principal that created it; the grant it produces belongs to that principal, whoever clicks.
//! The web pages that drive this live in `web/` and call only the `Vault` methods here; every
//! request to a provider goes through the outbound door (`outbound::oauth`).

use crate::model::{AgentId, AuditOutcome, GrantId, GrantKind, GrantStatus, SessionStatus};
use std::{borrow::Cow, collections::BTreeMap};

use serde::Serialize;

use super::outbound::oauth::{self, AccountIdentity, TokenSet};
use crate::{
    providers::{Provider, ProviderKind},
    store::{
        ConnectAttemptRow, ConnectSessionRow, CredentialUpdate, DelegationRow, GrantRow, Lifetime,
    },
    vault::{Caller, ConnectOffer, Vault, VaultError, new_id, new_token, now, rfc3339, sha256_hex},
};

/// What `start_connect` asks for.
#[derive(Debug, Clone, Default)]
pub struct StartConnect {
    pub providers: Vec<String>,
    /// Extra scopes per provider (the provider's default scopes are always included).
    pub scopes: BTreeMap<String, Vec<String>>,
    pub repair_grant_id: Option<String>,
    pub return_url: Option<String>,
    /// An agent (name or id) the person may delegate the new grant to on the Connect page.
    pub agent: Option<String>,
    /// Lifetime of the grant(s) this session creates.
    pub ttl_secs: Option<i64>,
    /// The account label a key entered on the page is stored under (API-key providers).
    pub account_label: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConnectStarted {
    pub connect_url: String,
    pub expires_at: String,
    pub session_id: String,
    pub providers: Vec<String>,
    pub scopes: BTreeMap<String, Vec<String>>,
    /// The agent the person will be offered to delegate to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// When the grant will expire after it is connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_ttl_secs: Option<i64>,
}

/// One provider on the Connect page.
#[derive(Debug, Clone)]
pub struct ProviderItem {
    pub id: String,
    pub name: String,
    /// (scope, plain-words description)
    pub scopes: Vec<(String, String)>,
    /// Account connected in this session already, if any.
    pub connected: Option<String>,
    /// API-key providers: the person types the key on the page (no OAuth round trip).
    pub key_entry: bool,
    /// Where to get the key (API-key providers).
    pub hint: Option<String>,
}

/// What the Connect page shows for a link.
#[derive(Debug, Clone)]
pub enum ConnectView {
    /// Unknown token: mistyped, forged, or purged long ago.
    Invalid,
    Expired,
    Finished {
        status: SessionStatus,
        error: Option<String>,
    },
    Pending {
        session_id: String,
        user: String,
        providers: Vec<ProviderItem>,
        expires_at: String,
        /// The agent the person may delegate the grant to (a checkbox, unchecked).
        delegate_agent: Option<String>,
        /// The grant's lifetime, in words.
        grant_ttl: Option<String>,
    },
}

/// Query parameters of the OAuth callback.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// What happened at the callback, for the result page.
#[derive(Debug, Clone, PartialEq)]
pub enum CallbackOutcome {
    Connected {
        provider_name: String,
        account: String,
        display: Option<String>,
        scopes: Vec<String>,
        grant_id: String,
        /// The agent the person delegated the grant to, if they did.
        delegated_to: Option<String>,
        /// Providers of the same session still to connect (the user reopens the link for them).
        remaining: Vec<String>,
        return_url: Option<String>,
    },
    Denied {
        provider_name: String,
    },
    Expired {
        provider_name: String,
    },
    /// Unknown, tampered or already used `state`.
    InvalidState,
    /// The link was opened by someone other than the user who asked for it.
    WrongUser,
    Failed {
        provider_name: String,
        message: String,
    },
}

const ATTEMPT_TTL: i64 = 600;

fn scopes_for(p: &Provider, extra: &[String]) -> Vec<String> {
    let mut out = p.default_scopes.clone();
    for s in extra {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

impl Vault {
    fn connect_url(&self, token: &str) -> String {
        self.inner
            .settings
            .connect
            .public_url
            .join(&format!("connect/{token}"))
            .expect("joinable")
            .to_string()
    }

    /// A provider a Connect session may name: an OAuth provider ready to use, or an API-key
    /// provider (the person enters the key on the page): a catalog one, or a managed secret
    /// the operator defined by storing an app key for it (its hosts and injection are the
    /// template for the keys people enter).
    async fn connectable(&self, id: &str) -> Result<Cow<'_, Provider>, VaultError> {
        match self.inner.catalog.get(id) {
            Some(p) if p.kind == ProviderKind::ApiKey => Ok(Cow::Borrowed(p)),
            Some(_) => self.oauth_provider(id).map(Cow::Borrowed),
            None => match self.key_template(id).await? {
                Some(t) => Ok(Cow::Owned(self.inner.effective_provider(&t)?.into_owned())),
                None => Err(self.inner.unknown_provider(id)),
            },
        }
    }

    /// The app's grant for a provider outside the catalog: the template of a managed secret.
    async fn key_template(&self, provider: &str) -> Result<Option<GrantRow>, VaultError> {
        let app = [(crate::model::PrincipalKind::App, "app".to_owned())];
        Ok(self
            .inner
            .stores
            .grants
            .list_grants(&crate::store::GrantFilter {
                owners: &app,
                ids: &[],
                provider: Some(provider),
            })
            .await?
            .into_iter()
            .find(|g| g.kind == GrantKind::Secret && g.hosts.is_some()))
    }

    fn oauth_provider(&self, id: &str) -> Result<&Provider, VaultError> {
        let p = self
            .inner
            .catalog
            .get(id)
            .ok_or_else(|| self.inner.unknown_provider(id))?;
        if p.kind == ProviderKind::ApiKey {
            return Err(VaultError::invalid(
                "providers",
                format!(
                    "{} uses API keys, not OAuth; store one with `vault-mcp secret add {}`",
                    p.name, p.id
                ),
            ));
        }
        if !p.is_configured() {
            return Err(VaultError::ProviderNotConfigured {
                provider: p.id.clone(),
                hint: p.configure_hint(),
            });
        }
        Ok(p)
    }

    /// Create a Connect session and return its link.
    pub async fn start_connect(
        &self,
        caller: &Caller,
        req: StartConnect,
    ) -> Result<ConnectStarted, VaultError> {
        if req.providers.is_empty() {
            return Err(VaultError::invalid(
                "providers",
                "name at least one provider id (see list_providers)",
            ));
        }
        if req.providers.len() > 10 {
            return Err(VaultError::invalid(
                "providers",
                "at most 10 providers per session",
            ));
        }
        for k in req.scopes.keys() {
            if !req.providers.contains(k) {
                return Err(VaultError::invalid(
                    format!("scopes.{k}"),
                    "scopes given for a provider not in `providers`",
                ));
            }
        }
        if caller.is_agent() {
            return Err(VaultError::invalid(
                "providers",
                "an agent cannot open a Connect link (it has no browser); a user connects the provider and delegates the grant to the agent (start_connect with `agent`)",
            ));
        }
        let delegate_agent: Option<AgentId> = match &req.agent {
            Some(a) => Some(self.find_agent(a).await?.id),
            None => None,
        };
        if let Some(t) = req.ttl_secs
            && !(1..=super::grants::MAX_TTL_SECS).contains(&t)
        {
            return Err(VaultError::invalid(
                "ttl_seconds",
                "must be between 1 second and 10 years",
            ));
        }
        if let Some(r) = &req.return_url {
            let u = url::Url::parse(r)
                .map_err(|e| VaultError::invalid("return_url", format!("not a URL: {e}")))?;
            if !matches!(u.scheme(), "https" | "http") {
                return Err(VaultError::invalid("return_url", "must be an http(s) URL"));
            }
        }
        let mut scopes = BTreeMap::new();
        let mut providers = Vec::new();
        for id in &req.providers {
            if providers.contains(id) {
                continue;
            }
            let p = self.connectable(id).await?;
            let p = p.as_ref();
            if let (Some(t), Some(max)) = (req.ttl_secs, p.max_ttl_secs)
                && t > max
            {
                return Err(VaultError::invalid(
                    "ttl_seconds",
                    format!(
                        "{t} s is longer than {} grants may live here ({max} s, max_ttl of [providers.{}])",
                        p.name, p.id
                    ),
                ));
            }
            let mut extra = req.scopes.get(id).cloned().unwrap_or_default();
            if let Some(gid) = &req.repair_grant_id
                && let Some(g) = self.inner.stores.grants.get_grant(gid).await?
                && g.principal == caller.principal.id()
                && &g.provider == id
            {
                for s in g.scopes.0 {
                    if !extra.contains(&s) {
                        extra.push(s);
                    }
                }
            }
            scopes.insert(id.clone(), scopes_for(p, &extra));
            providers.push(id.clone());
        }
        let token = new_token();
        let t = now();
        let row = ConnectSessionRow {
            id: sha256_hex(&token),
            public_id: new_id("cs"),
            principal: caller.principal.id().to_owned(),
            providers: providers.clone(),
            scopes: scopes.clone(),
            repair_grant_id: req.repair_grant_id.clone(),
            return_url: req.return_url.clone(),
            status: SessionStatus::Pending,
            error: None,
            result_grants: Vec::new(),
            created_at: t,
            expires_at: t + self.inner.settings.connect.session_ttl_secs as i64,
            completed_at: None,
            delegate_agent: delegate_agent.clone(),
            grant_ttl_secs: req.ttl_secs,
            account_label: req.account_label.clone(),
        };
        self.inner
            .stores
            .connect
            .insert_connect_session(&row)
            .await?;
        // Opportunistic cleanup of long-dead sessions.
        let _ = self
            .inner
            .stores
            .connect
            .purge_connect(t - 7 * 86_400)
            .await;
        let mut ev = crate::vault::audit_entry(caller, "connect_start");
        ev.provider = Some(providers.join(","));
        ev.detail = Some(format!("session={}", row.public_id));
        self.inner.audit.write(ev).await?;
        Ok(ConnectStarted {
            connect_url: self.connect_url(&token),
            expires_at: rfc3339(row.expires_at),
            session_id: row.public_id,
            providers,
            scopes,
            agent: req.agent.clone(),
            grant_ttl_secs: req.ttl_secs,
        })
    }

    /// A Connect link for a failed call, when one can help; otherwise extend `message` with
    /// what the user must do instead.
    pub(crate) async fn offer_connect(
        &self,
        caller: &Caller,
        provider: &str,
        scopes: &[String],
        repair_grant_id: Option<&str>,
        message: &mut String,
    ) -> Result<Option<ConnectOffer>, VaultError> {
        let sep = if message.is_empty() { "" } else { ". " };
        let Some(p) = self.inner.catalog.get(provider) else {
            message.push_str(&format!(
                "{sep}store a key with `vault-mcp secret add {provider} --host <api host>`"
            ));
            return Ok(None);
        };
        if !p.is_configured() && p.kind != ProviderKind::ApiKey {
            message.push_str(&format!(
                "{sep}{} cannot be connected yet because its OAuth app is not configured: {}",
                p.name,
                p.configure_hint()
            ));
            return Ok(None);
        }
        let mut req = StartConnect {
            providers: vec![provider.to_owned()],
            repair_grant_id: repair_grant_id.map(str::to_owned),
            ..Default::default()
        };
        req.scopes.insert(provider.to_owned(), scopes.to_vec());
        let started = self.start_connect(caller, req).await?;
        message.push_str(&if p.kind == ProviderKind::ApiKey {
            format!(
                "{sep}{} uses an API key: ask the user to open {} and enter theirs there (never in the chat), then retry",
                p.name, started.connect_url
            )
        } else {
            format!(
                "{sep}Ask the user to open {} to authorize {}, then retry",
                started.connect_url, p.name
            )
        });
        Ok(Some(ConnectOffer {
            connect_url: started.connect_url,
            expires_at: started.expires_at,
            session_id: started.session_id,
        }))
    }

    async fn session_for_token(
        &self,
        token: &str,
    ) -> Result<Option<ConnectSessionRow>, VaultError> {
        if token.len() > 100 {
            return Ok(None);
        }
        Ok(self
            .inner
            .stores
            .connect
            .get_connect_session(&sha256_hex(token))
            .await?)
    }

    /// The state of a Connect link, for its page. `viewer` is the signed-in browser user in
    /// hosted mode (None in single-user mode).
    pub async fn connect_view(&self, token: &str) -> Result<ConnectView, VaultError> {
        let Some(s) = self.session_for_token(token).await? else {
            return Ok(ConnectView::Invalid);
        };
        if s.status != SessionStatus::Pending {
            return Ok(ConnectView::Finished {
                status: s.status,
                error: s.error,
            });
        }
        if s.expires_at <= now() {
            return Ok(ConnectView::Expired);
        }
        let done: BTreeMap<&str, &str> = s
            .result_grants
            .iter()
            .filter_map(|r| r.split_once('='))
            .collect();
        let mut providers = Vec::new();
        for id in &s.providers {
            let Ok(p) = self.connectable(id).await else {
                continue;
            };
            providers.push(ProviderItem {
                id: id.clone(),
                name: p.name.clone(),
                scopes: s
                    .scopes
                    .get(id)
                    .map(|v| {
                        v.iter()
                            .map(|sc| (sc.clone(), p.describe_scope(sc)))
                            .collect()
                    })
                    .unwrap_or_default(),
                connected: done.get(id.as_str()).map(|a| a.to_string()),
                key_entry: p.kind == ProviderKind::ApiKey,
                hint: p
                    .setup_hint
                    .clone()
                    .or_else(|| p.app_registration_url.clone()),
            });
        }
        let delegate_agent = match &s.delegate_agent {
            Some(id) => self
                .inner
                .stores
                .agents
                .get_agent(id)
                .await?
                .map(|a| a.name),
            None => None,
        };
        Ok(ConnectView::Pending {
            session_id: s.public_id,
            user: s.principal,
            providers,
            expires_at: rfc3339(s.expires_at),
            delegate_agent,
            grant_ttl: s.grant_ttl_secs.map(super::grants::ttl_words),
        })
    }

    /// The principal a Connect link belongs to (hosted mode checks the browser user against it).
    pub async fn connect_owner(&self, token: &str) -> Result<Option<String>, VaultError> {
        Ok(self.session_for_token(token).await?.map(|s| s.principal))
    }

    /// User clicked "Continue": create an attempt and return the provider's authorize URL.
    /// `delegate`: the person ticked "let the agent use this grant".
    pub async fn begin_authorization(
        &self,
        token: &str,
        provider: &str,
        delegate: bool,
    ) -> Result<String, ConnectView> {
        let view_err = |v: ConnectView| v;
        let s = match self.session_for_token(token).await {
            Ok(Some(s)) => s,
            _ => return Err(ConnectView::Invalid),
        };
        if s.status != SessionStatus::Pending {
            return Err(view_err(ConnectView::Finished {
                status: s.status,
                error: s.error,
            }));
        }
        let t = now();
        if s.expires_at <= t {
            return Err(ConnectView::Expired);
        }
        if !s.providers.iter().any(|p| p == provider) {
            return Err(ConnectView::Invalid);
        }
        let fail = |message: String| ConnectView::Finished {
            status: SessionStatus::Error,
            error: Some(message),
        };
        let p = self
            .oauth_provider(provider)
            .map_err(|e| fail(e.to_string()))?;
        let redirect_uri = self.inner.settings.connect.redirect_uri();
        let scopes = s.scopes.get(provider).cloned().unwrap_or_default();
        let start =
            oauth::authorization_url(p, &redirect_uri, &scopes).map_err(|e| fail(e.to_string()))?;
        let state_hash = sha256_hex(&start.state);
        let sealed = self.inner.seal(
            &state_hash,
            start
                .verifier
                .as_ref()
                .map(|v| v.as_bytes())
                .unwrap_or_default(),
        );
        let attempt = ConnectAttemptRow {
            state_hash,
            session_id: s.id.clone(),
            provider: provider.to_owned(),
            scopes: scopes.into(),
            redirect_uri,
            sealed,
            created_at: t,
            expires_at: (t + ATTEMPT_TTL).min(s.expires_at),
            used_at: None,
            delegate_agent: s.delegate_agent.clone().filter(|_| delegate),
        };
        self.inner
            .stores
            .connect
            .insert_connect_attempt(&attempt)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(start.url)
    }

    /// The person typed an API key on the Connect page of an API-key provider: store it as
    /// their grant (the session's principal; hosted mode checked the browser's user first).
    pub async fn submit_key(
        &self,
        token: &str,
        provider: &str,
        key: crate::secret::Secret,
        delegate: bool,
    ) -> Result<CallbackOutcome, ConnectView> {
        let s = match self.session_for_token(token).await {
            Ok(Some(s)) => s,
            _ => return Err(ConnectView::Invalid),
        };
        if s.status != SessionStatus::Pending {
            return Err(ConnectView::Finished {
                status: s.status,
                error: s.error,
            });
        }
        let t = now();
        if s.expires_at <= t {
            return Err(ConnectView::Expired);
        }
        let p = match self.connectable(provider).await {
            Ok(p)
                if p.kind == ProviderKind::ApiKey && s.providers.iter().any(|x| x == provider) =>
            {
                p.into_owned()
            }
            _ => return Err(ConnectView::Invalid),
        };
        // A managed secret outside the catalog: the person's key goes where the app's goes.
        let template = if self.inner.catalog.get(provider).is_none() {
            self.key_template(provider).await.ok().flatten()
        } else {
            None
        };
        let caller = Caller::new(
            crate::vault::Principal::new(s.principal.clone(), s.principal.clone()),
            "connect",
        );
        let account = s.account_label.clone().unwrap_or_else(|| "default".into());
        let mut ev = crate::vault::audit_entry(&caller, "connect");
        ev.provider = Some(provider.to_owned());
        ev.detail = Some(format!("session={} key entry", s.public_id));
        let stored = self
            .add_secret(
                &caller,
                super::NewSecret {
                    provider: provider.to_owned(),
                    account: account.clone(),
                    secret: key,
                    username: None,
                    session_token: None,
                    injection: template
                        .as_ref()
                        .and_then(|t| t.injection.as_deref())
                        .and_then(|j| serde_json::from_str(j).ok()),
                    hosts: template.as_ref().and_then(|t| t.hosts.clone()),
                    owner: super::SecretOwner::Caller,
                    ttl_secs: s.grant_ttl_secs.or(p.default_ttl_secs),
                },
            )
            .await;
        let outcome = match stored {
            Err(e) => CallbackOutcome::Failed {
                provider_name: p.name.clone(),
                message: e.to_string(),
            },
            Ok(stored) => {
                let mut delegated_to = None;
                if delegate
                    && let Some(agent_id) = &s.delegate_agent
                    && let Ok(Some(agent)) = self.inner.stores.agents.get_agent(agent_id).await
                    && self
                        .inner
                        .stores
                        .agents
                        .delegate(&DelegationRow {
                            grant_id: stored.grant.id.as_str().into(),
                            agent_id: agent.id.clone(),
                            delegated_by: s.principal.clone(),
                            created_at: t,
                        })
                        .await
                        .is_ok()
                {
                    delegated_to = Some(agent.name);
                }
                let mut results = s.result_grants.clone();
                results.retain(|r| !r.starts_with(&format!("{provider}=")));
                results.push(format!("{provider}={account}"));
                let remaining: Vec<String> = s
                    .providers
                    .iter()
                    .filter(|id| !results.iter().any(|r| r.starts_with(&format!("{id}="))))
                    .cloned()
                    .collect();
                let done = if remaining.is_empty() {
                    self.inner
                        .stores
                        .connect
                        .finish_connect_session(&s.id, SessionStatus::Completed, None, &results, t)
                        .await
                } else {
                    self.inner
                        .stores
                        .connect
                        .update_connect_results(&s.id, &results)
                        .await
                };
                if let Err(e) = done {
                    return Err(ConnectView::Finished {
                        status: SessionStatus::Error,
                        error: Some(e.to_string()),
                    });
                }
                ev.grant_id = Some(stored.grant.id.clone());
                CallbackOutcome::Connected {
                    provider_name: p.name.clone(),
                    account: account.clone(),
                    display: None,
                    scopes: Vec::new(),
                    grant_id: stored.grant.id.clone(),
                    delegated_to,
                    remaining,
                    return_url: s.return_url.clone(),
                }
            }
        };
        if let CallbackOutcome::Failed { message, .. } = &outcome {
            ev.outcome = AuditOutcome::Error;
            ev.reason = Some(message.clone());
        }
        let _ = self.inner.audit.write(ev).await;
        Ok(outcome)
    }

    /// The user declined on our own page.
    pub async fn cancel_connect(&self, token: &str) -> Result<bool, VaultError> {
        let Some(s) = self.session_for_token(token).await? else {
            return Ok(false);
        };
        Ok(self
            .inner
            .stores
            .connect
            .finish_connect_session(
                &s.id,
                SessionStatus::Denied,
                Some("cancelled on the Connect page"),
                &s.result_grants,
                now(),
            )
            .await?)
    }

    /// The provider sent the browser back. Every path ends the attempt (single use).
    /// `viewer`: in hosted mode, the signed-in browser user; the link's owner must be the one
    /// completing it.
    pub async fn complete_authorization(
        &self,
        params: &CallbackParams,
        viewer: Option<&str>,
    ) -> CallbackOutcome {
        match self.complete_inner(params, viewer).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "connect callback failed");
                CallbackOutcome::Failed {
                    provider_name: "the provider".into(),
                    message: e.to_string(),
                }
            }
        }
    }

    async fn complete_inner(
        &self,
        params: &CallbackParams,
        viewer: Option<&str>,
    ) -> Result<CallbackOutcome, VaultError> {
        let inner = &self.inner;
        let Some(state) = params
            .state
            .as_deref()
            .filter(|s| !s.is_empty() && s.len() <= 200)
        else {
            return Ok(CallbackOutcome::InvalidState);
        };
        let t = now();
        let Some(attempt) = inner
            .stores
            .connect
            .take_connect_attempt(&sha256_hex(state), t)
            .await?
        else {
            return Ok(CallbackOutcome::InvalidState);
        };
        let Some(session) = inner
            .stores
            .connect
            .get_connect_session(&attempt.session_id)
            .await?
        else {
            return Ok(CallbackOutcome::InvalidState);
        };
        let caller = Caller::new(
            crate::vault::Principal::new(session.principal.clone(), session.principal.clone()),
            "connect",
        );
        let provider = inner.catalog.get(&attempt.provider);
        let provider_name = provider
            .map(|p| p.name.clone())
            .unwrap_or_else(|| attempt.provider.clone());
        // Every failure ends the session with a status the Connect page and the CLI show.
        let end = |status: SessionStatus, error: Option<String>| {
            let session = &session;
            async move {
                inner
                    .stores
                    .connect
                    .finish_connect_session(
                        &session.id,
                        status,
                        error.as_deref(),
                        &session.result_grants,
                        t,
                    )
                    .await
            }
        };
        let mut ev = crate::vault::audit_entry(&caller, "connect");
        ev.provider = Some(attempt.provider.clone());
        ev.detail = Some(format!("session={}", session.public_id));

        let outcome = if session.status != SessionStatus::Pending {
            CallbackOutcome::InvalidState
        } else if viewer.is_some_and(|v| v != session.principal) {
            // Someone else's browser came back with this state: the attempt is spent, the
            // session stays open for its owner.
            CallbackOutcome::WrongUser
        } else if session.expires_at <= t || attempt.expires_at <= t {
            end(SessionStatus::Expired, None).await?;
            CallbackOutcome::Expired { provider_name }
        } else if let Some(err) = &params.error {
            if err == "access_denied" {
                end(SessionStatus::Denied, params.error_description.clone()).await?;
                CallbackOutcome::Denied { provider_name }
            } else {
                let desc = params
                    .error_description
                    .as_ref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                let message = format!("{provider_name} answered `{err}`{desc}");
                end(SessionStatus::Error, Some(message.clone())).await?;
                CallbackOutcome::Failed {
                    provider_name,
                    message,
                }
            }
        } else if let (Some(p), Some(iss)) = (
            provider.and_then(|p| p.issuer.as_deref()),
            params.iss.as_deref(),
        ) && p != iss
        {
            // RFC 9207: the response came from another authorization server (mix-up attack).
            let message = format!(
                "the authorization response came from `{iss}`, not from {provider_name} (`{p}`)"
            );
            end(SessionStatus::Error, Some(message.clone())).await?;
            CallbackOutcome::Failed {
                provider_name,
                message,
            }
        } else if let Some(code) = params.code.as_deref().filter(|c| !c.is_empty()) {
            let p = provider
                .ok_or_else(|| VaultError::Internal("provider vanished from the catalog".into()))?;
            let plain = inner.open(&attempt.state_hash, &attempt.sealed)?;
            let verifier =
                (!plain.is_empty()).then(|| String::from_utf8_lossy(&plain).into_owned());
            let saved = match oauth::exchange_code(
                &inner.outbound,
                p,
                &attempt.redirect_uri,
                code,
                verifier.as_deref(),
            )
            .await
            {
                Ok(tokens) => self
                    .save_oauth_grant(
                        &caller,
                        p,
                        tokens,
                        &attempt.scopes.0,
                        session.repair_grant_id.as_deref(),
                        session.grant_ttl_secs,
                    )
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("exchanging the authorization code failed: {e}")),
            };
            match saved {
                Ok((grant, who)) => {
                    ev.grant_id = Some(grant.id.to_string());
                    // The person ticked the delegation box on our page for this attempt.
                    let mut delegated_to = None;
                    if let Some(agent_id) = &attempt.delegate_agent
                        && let Some(agent) = inner.stores.agents.get_agent(agent_id).await?
                    {
                        inner
                            .stores
                            .agents
                            .delegate(&DelegationRow {
                                grant_id: grant.id.clone(),
                                agent_id: agent.id.clone(),
                                delegated_by: session.principal.clone(),
                                created_at: t,
                            })
                            .await?;
                        ev.agent = Some(agent.name.clone());
                        ev.detail = Some(format!(
                            "session={} delegated_to={} ({})",
                            session.public_id, agent.name, agent.id
                        ));
                        delegated_to = Some(agent.name);
                    }
                    let mut results = session.result_grants.clone();
                    results.retain(|r| !r.starts_with(&format!("{}=", p.id)));
                    results.push(format!("{}={}", p.id, who.account));
                    let remaining: Vec<String> = session
                        .providers
                        .iter()
                        .filter(|id| !results.iter().any(|r| r.starts_with(&format!("{id}="))))
                        .cloned()
                        .collect();
                    if remaining.is_empty() {
                        inner
                            .stores
                            .connect
                            .finish_connect_session(
                                &session.id,
                                SessionStatus::Completed,
                                None,
                                &results,
                                t,
                            )
                            .await?;
                    } else {
                        inner
                            .stores
                            .connect
                            .update_connect_results(&session.id, &results)
                            .await?;
                    }
                    CallbackOutcome::Connected {
                        provider_name,
                        account: who.account,
                        display: who.display,
                        scopes: grant.scopes.0.clone(),
                        grant_id: grant.id.to_string(),
                        delegated_to,
                        remaining: remaining
                            .iter()
                            .map(|id| {
                                inner
                                    .catalog
                                    .get(id)
                                    .map(|p| p.name.clone())
                                    .unwrap_or_else(|| id.clone())
                            })
                            .collect(),
                        return_url: session.return_url.clone(),
                    }
                }
                Err(message) => {
                    end(SessionStatus::Error, Some(message.clone())).await?;
                    CallbackOutcome::Failed {
                        provider_name,
                        message,
                    }
                }
            }
        } else {
            CallbackOutcome::InvalidState
        };
        ev.outcome = match &outcome {
            CallbackOutcome::Connected { .. } => AuditOutcome::Ok,
            CallbackOutcome::Denied { .. } => AuditOutcome::Denied,
            CallbackOutcome::Expired { .. } => AuditOutcome::Expired,
            CallbackOutcome::InvalidState => AuditOutcome::InvalidState,
            CallbackOutcome::WrongUser => AuditOutcome::WrongUser,
            CallbackOutcome::Failed { message, .. } => {
                ev.reason = Some(message.clone());
                AuditOutcome::Error
            }
        };
        inner.audit.write(ev).await?;
        Ok(outcome)
    }

    /// Store tokens as a grant: the repaired grant, else the same account's grant (updated in
    /// place, same id), else a new one.
    pub(crate) async fn save_oauth_grant(
        &self,
        caller: &Caller,
        p: &Provider,
        tokens: TokenSet,
        requested: &[String],
        repair_grant_id: Option<&str>,
        ttl_secs: Option<i64>,
    ) -> Result<(GrantRow, AccountIdentity), VaultError> {
        let inner = &self.inner;
        let who = oauth::fetch_identity(&inner.outbound, p, &tokens)
            .await
            .map_err(|e| {
                VaultError::Internal(format!(
                    "could not learn which {} account was connected: {e}",
                    p.name
                ))
            })?;
        let t = now();
        let scopes = tokens.scopes.clone().unwrap_or_else(|| requested.to_vec());
        let expires = tokens.expires_in.map(|d| t + d.as_secs() as i64);
        let owner = caller.principal.owner();
        let mut target = match repair_grant_id {
            Some(id) => inner.stores.grants.get_grant(id).await?.filter(|g| {
                (g.principal_kind, g.principal.as_str()) == owner
                    && g.provider == p.id
                    && g.account == who.account
            }),
            None => None,
        };
        if target.is_none() {
            target = inner
                .stores
                .grants
                .find_grant_by_account(owner, &p.id, &who.account)
                .await?;
        }
        // The lifetime asked for, else the one the grant had (a renewal), else the provider's.
        let lifetime = |old: Option<i64>| {
            let ttl = ttl_secs.or(old).or(p.default_ttl_secs);
            Lifetime {
                ttl_secs: ttl,
                expires_at: ttl.map(|d| t + d),
            }
        };
        match target {
            Some(g) => {
                let old_refresh = inner
                    .open(&g.id, &g.sealed)
                    .ok()
                    .and_then(|b| crate::secret::Credential::from_sealing_bytes(&b))
                    .and_then(|c| c.refresh_token.clone());
                let cred = tokens.into_credential(old_refresh.as_deref());
                let update = CredentialUpdate {
                    sealed: inner.seal(&g.id, &cred.to_sealing_bytes()),
                    scopes: scopes.into(),
                    token_expires_at: expires,
                    account_display: who.display.clone(),
                    now: t,
                };
                inner
                    .stores
                    .grants
                    .reauthorize_grant(&g.id, &update, lifetime(g.ttl_secs))
                    .await?;
                inner.cache.invalidate(&g.id);
                let row =
                    inner.stores.grants.get_grant(&g.id).await?.ok_or_else(|| {
                        VaultError::Internal("grant vanished while saving".into())
                    })?;
                Ok((row, who))
            }
            None => {
                let id = GrantId::new();
                let cred = tokens.into_credential(None);
                let row = GrantRow {
                    sealed: inner.seal(&id, &cred.to_sealing_bytes()),
                    id,
                    principal_kind: owner.0,
                    principal: owner.1.to_owned(),
                    provider: p.id.clone(),
                    kind: GrantKind::OAuth,
                    account: who.account.clone(),
                    account_display: who.display.clone(),
                    scopes: scopes.into(),
                    status: GrantStatus::Active,
                    scope_mismatch: None,
                    injection: None,
                    hosts: None,
                    token_expires_at: expires,
                    grant_expires_at: lifetime(None).expires_at,
                    ttl_secs: lifetime(None).ttl_secs,
                    version: 1,
                    created_at: t,
                    updated_at: t,
                    last_used_at: None,
                };
                inner.stores.grants.insert_grant(&row).await?;
                inner.cache.invalidate(&row.id);
                Ok((row, who))
            }
        }
    }

    /// Status of a session by its public id (the CLI polls this while the user is in the browser).
    pub async fn connect_status(
        &self,
        caller: &Caller,
        session_id: &str,
    ) -> Result<Option<ConnectSessionRow>, VaultError> {
        Ok(self
            .inner
            .stores
            .connect
            .get_connect_session_by_public_id(session_id)
            .await?
            .filter(|s| s.principal == caller.principal.id()))
    }

    /// Any session by its public id, for the application backend (an SDK app key) that started
    /// it for one of its users: the SDK polls without the user's token.
    pub async fn connect_status_for_app(
        &self,
        session_id: &str,
    ) -> Result<Option<ConnectSessionRow>, VaultError> {
        Ok(self
            .inner
            .stores
            .connect
            .get_connect_session_by_public_id(session_id)
            .await?)
    }

    /// Device authorization (RFC 8628), step 1.
    pub async fn device_start(
        &self,
        provider: &str,
        extra_scopes: &[String],
    ) -> Result<(oauth::DeviceStart, Vec<String>), VaultError> {
        let p = self.oauth_provider(provider)?;
        if !p.supports_device_flow() {
            return Err(VaultError::invalid(
                "device",
                format!(
                    "{} does not offer the device flow; connect in the browser instead",
                    p.name
                ),
            ));
        }
        let scopes = scopes_for(p, extra_scopes);
        let start = oauth::device_start(&self.inner.outbound, p, &scopes)
            .await
            .map_err(|e| VaultError::Internal(format!("starting the device flow failed: {e}")))?;
        Ok((start, scopes))
    }

    /// Device authorization, step 2: wait for the user, then store the grant.
    pub async fn device_finish(
        &self,
        caller: &Caller,
        provider: &str,
        start: &oauth::DeviceStart,
        scopes: &[String],
    ) -> Result<(GrantRow, AccountIdentity), VaultError> {
        let p = self.oauth_provider(provider)?;
        let mut ev = crate::vault::audit_entry(caller, "connect");
        ev.provider = Some(provider.to_owned());
        ev.detail = Some("device flow".into());
        let result = match oauth::device_finish(&self.inner.outbound, p, start).await {
            Ok(tokens) => {
                self.save_oauth_grant(caller, p, tokens, scopes, None, None)
                    .await
            }
            Err(e) => Err(VaultError::Internal(format!(
                "device authorization did not complete: {e}"
            ))),
        };
        match &result {
            Ok((g, _)) => ev.grant_id = Some(g.id.to_string()),
            Err(e) => {
                ev.outcome = AuditOutcome::Error;
                ev.reason = Some(e.to_string());
            }
        }
        self.inner.audit.write(ev).await?;
        result
    }
}
