//! Managed agents: creating them (the API key is shown once), their access sets, key rotation,
//! disabling and deleting; recognizing an agent from its key or a client-credentials JWT; and
//! delegations, which lend a user's grant to an agent.
//!
//! Operator actions (everything but authentication and the two delegation tools) are reached
//! only from the CLI. Each is audited.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Caller, Principal, Vault, VaultError, agent_key, now, rfc3339};
use crate::{
    model::{Access, AgentId, AgentStatus, AuditOutcome, GrantId, PrincipalKind},
    secret::{Expose, Secret},
    store::{AgentAccess, AgentRow, AuditEntry, DelegationRow, StoreError},
};

/// The longest grace period a rotated-out key may keep working.
pub const MAX_KEY_GRACE_SECS: i64 = 30 * 86_400;

/// What `agents create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewAgent {
    pub name: String,
    pub description: Option<String>,
    /// A retry with the same key returns the agent created the first time.
    pub idempotency_key: Option<String>,
    pub jwt_subject: Option<String>,
    pub access: AgentAccess,
}

/// A change to an agent; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AgentUpdate {
    pub description: Option<String>,
    /// `Some(None)` removes the mapping.
    pub jwt_subject: Option<Option<String>>,
    pub add_grants: Vec<GrantId>,
    pub remove_grants: Vec<GrantId>,
    /// Replace the allowlist of these providers.
    pub set_scopes: BTreeMap<String, Vec<String>>,
    /// Lift the allowlist of these providers.
    pub clear_scopes: Vec<String>,
    pub status: Option<AgentStatus>,
}

/// An agent as the operator sees it. Never contains a key.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AgentView {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub status: AgentStatus,
    /// The start of the current key, to tell which key is in use (`alter_ak_abcdefgh…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// The rotated-out key still accepted until `previous_key_expires_at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_key_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_key_expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_subject: Option<String>,
    pub access: AgentAccess,
    pub delegations: Vec<DelegationView>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DelegationView {
    pub grant_id: String,
    pub delegated_by: String,
    pub created_at: String,
}

/// The result of `agents create` / `agents rotate-key`. The key is here once and nowhere else.
pub struct IssuedKey {
    pub agent: AgentView,
    /// `None` when an idempotent retry found the agent created before.
    pub api_key: Option<Secret>,
    pub created: bool,
}

/// The signing keys derived from the current and previous API keys (sealed in the agent row).
#[derive(Serialize, Deserialize, Default)]
struct SigningKeys {
    current: Option<String>,
    previous: Option<String>,
}

/// Why an agent key or JWT was not accepted. The text is what the 401 says; it never contains
/// the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentAuthError {
    #[error("{0}")]
    Malformed(#[from] agent_key::KeyFormatError),
    #[error("unknown agent key (deleted, or never issued)")]
    Unknown,
    #[error("this agent key was replaced by a newer one (rotated); use the current key")]
    RotatedOut,
    #[error("agent {0} is disabled")]
    Disabled(String),
    #[error("the vault could not check the key right now; retry")]
    Unavailable,
}

fn valid_name(name: &str) -> Result<(), VaultError> {
    if !super::grants::valid_id(name) {
        return Err(VaultError::invalid(
            "name",
            "use 1 to 64 lower-case letters, digits, `-` and `_` (e.g. ci-bot)",
        ));
    }
    if AgentId::looks_like(name) {
        return Err(VaultError::invalid(
            "name",
            "must not look like an agent id (agt_…); pick a name such as ci-bot",
        ));
    }
    Ok(())
}

fn valid_text(field: &str, v: &str, max: usize) -> Result<(), VaultError> {
    if v.trim().is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(VaultError::invalid(
            field,
            format!("must be 1 to {max} printable characters"),
        ));
    }
    Ok(())
}

fn shown_prefix(p: &Option<String>) -> Option<String> {
    p.as_ref().map(|p| format!("alter_ak_{p}…"))
}

impl Vault {
    fn operator_event(&self, event: &str, agent: &AgentRow) -> AuditEntry {
        let caller = Caller::new(Principal::local("operator"), format!("agents {event}"));
        let mut e = super::audit_entry(&caller, event);
        e.agent = Some(agent.name.clone());
        e.detail = Some(format!("agent={}", agent.id));
        e
    }

    async fn agent_view(&self, a: &AgentRow) -> Result<AgentView, VaultError> {
        let delegations = self
            .inner
            .stores
            .agents
            .delegations_of_agent(&a.id)
            .await?
            .into_iter()
            .map(|d| DelegationView {
                grant_id: d.grant_id.to_string(),
                delegated_by: d.delegated_by,
                created_at: rfc3339(d.created_at),
            })
            .collect();
        let grace = a.previous_key_expires_at.filter(|t| *t > now());
        Ok(AgentView {
            id: a.id.to_string(),
            name: a.name.clone(),
            description: a.description.clone(),
            status: a.status,
            key_prefix: shown_prefix(&a.key_prefix),
            previous_key_prefix: grace.and(shown_prefix(&a.previous_key_prefix)),
            previous_key_expires_at: grace.map(rfc3339),
            jwt_subject: a.jwt_subject.clone(),
            access: a.access.clone(),
            delegations,
            created_at: rfc3339(a.created_at),
            last_used_at: a.last_used_at.map(rfc3339),
        })
    }

    /// A fresh key for `a`: prefix, hash and sealed signing key written into the row.
    fn install_key(&self, a: &mut AgentRow, keep_previous_until: Option<i64>) -> Secret {
        let key = agent_key::generate();
        let parsed = agent_key::parse(key.expose_secret()).expect("generated keys parse");
        let old = self
            .inner
            .open(&a.id, &a.sealed)
            .ok()
            .and_then(|b| serde_json::from_slice::<SigningKeys>(&b).ok())
            .unwrap_or_default();
        let signing = SigningKeys {
            current: Some(hex::encode(agent_key::signing_key(&key))),
            previous: keep_previous_until.and(old.current),
        };
        match keep_previous_until {
            Some(until) => {
                a.previous_key_prefix = a.key_prefix.take();
                a.previous_key_hash = a.key_hash.take();
                a.previous_key_expires_at = Some(until);
            }
            None => {
                a.previous_key_prefix = None;
                a.previous_key_hash = None;
                a.previous_key_expires_at = None;
            }
        }
        a.key_prefix = Some(parsed.lookup_prefix().to_owned());
        a.key_hash = Some(agent_key::hash(&key));
        a.sealed = self
            .inner
            .seal(&a.id, &serde_json::to_vec(&signing).expect("serializes"));
        key
    }

    /// `agents create`: the new agent and its API key (shown once).
    pub async fn create_agent(&self, new: NewAgent) -> Result<IssuedKey, VaultError> {
        valid_name(&new.name)?;
        if let Some(d) = &new.description {
            valid_text("description", d, 500)?;
        }
        if let Some(k) = &new.idempotency_key {
            valid_text("idempotency_key", k, 200)?;
            if let Some(existing) = self
                .inner
                .stores
                .agents
                .get_agent_by_idempotency_key(k)
                .await?
            {
                if existing.name != new.name {
                    return Err(VaultError::invalid(
                        "idempotency_key",
                        format!(
                            "was used to create agent `{}`, not `{}`; use a new key for a new agent",
                            existing.name, new.name
                        ),
                    ));
                }
                return Ok(IssuedKey {
                    agent: self.agent_view(&existing).await?,
                    api_key: None,
                    created: false,
                });
            }
        }
        if let Some(s) = &new.jwt_subject {
            valid_text("jwt_subject", s, 255)?;
        }
        self.check_access(&new.access).await?;
        let t = now();
        let mut row = AgentRow {
            id: AgentId::new(),
            name: new.name.clone(),
            description: new.description.clone(),
            key_prefix: None,
            key_hash: None,
            previous_key_prefix: None,
            previous_key_hash: None,
            previous_key_expires_at: None,
            sealed: crate::crypto::Sealed {
                key_id: String::new(),
                text: String::new(),
            },
            jwt_subject: new.jwt_subject.clone(),
            access: new.access.clone(),
            idempotency_key: new.idempotency_key.clone(),
            status: AgentStatus::Active,
            created_at: t,
            updated_at: t,
            last_used_at: None,
        };
        let key = self.install_key(&mut row, None);
        match self.inner.stores.agents.insert_agent(&row).await {
            Ok(()) => self.inner.cache.forget_subjects(),
            Err(StoreError::Conflict(_)) => {
                // Which unique value clashed, in words the operator can act on.
                let agents = &self.inner.stores.agents;
                let field = if agents.get_agent_by_name(&row.name).await?.is_some() {
                    (
                        "name",
                        format!("an agent named `{}` exists already", row.name),
                    )
                } else if let Some(s) = &row.jwt_subject
                    && agents.get_agent_by_jwt_subject(s).await?.is_some()
                {
                    ("jwt_subject", format!("`{s}` is mapped to another agent"))
                } else if let Some(k) = &row.idempotency_key
                    && agents.get_agent_by_idempotency_key(k).await?.is_some()
                {
                    // Another process created it a moment ago: same answer as a retry.
                    return Box::pin(self.create_agent(new)).await;
                } else {
                    (
                        "name",
                        "a value clashed with another agent; try again".into(),
                    )
                };
                return Err(VaultError::invalid(field.0, field.1));
            }
            Err(e) => return Err(e.into()),
        }
        let mut e = self.operator_event("agent_created", &row);
        e.outcome = AuditOutcome::Created;
        self.inner.audit.write(e).await?;
        Ok(IssuedKey {
            agent: self.agent_view(&row).await?,
            api_key: Some(key),
            created: true,
        })
    }

    /// Access-set grants must exist (a typo would silently give nothing).
    async fn check_access(&self, access: &AgentAccess) -> Result<(), VaultError> {
        for g in &access.grants {
            match self.inner.stores.grants.get_grant(g).await? {
                None => {
                    return Err(VaultError::invalid(
                        "grants",
                        format!("no grant `{g}`; `vault-mcp grants list --all` shows the grants"),
                    ));
                }
                // A person's own grant reaches an agent only with that person's consent.
                Some(row) if row.principal_kind == PrincipalKind::User => {
                    return Err(VaultError::invalid(
                        "grants",
                        format!(
                            "grant {g} belongs to user {}; a user's grant reaches an agent only when its owner delegates it (the Connect page's checkbox, or `vault-mcp --as USER grants delegate {g} AGENT`). Access sets take app, group and agent grants",
                            row.principal
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        for (p, scopes) in &access.scopes {
            if !super::grants::valid_id(p) {
                return Err(VaultError::invalid(
                    "scopes",
                    format!("`{p}` is not a provider id"),
                ));
            }
            if scopes
                .iter()
                .any(|s| s.is_empty() || s.len() > 200 || s.contains(char::is_whitespace))
            {
                return Err(VaultError::invalid(
                    format!("scopes.{p}"),
                    "scopes are non-empty words without spaces",
                ));
            }
        }
        Ok(())
    }

    pub async fn list_agents(&self) -> Result<Vec<AgentView>, VaultError> {
        let mut out = Vec::new();
        for a in self.inner.stores.agents.list_agents().await? {
            out.push(self.agent_view(&a).await?);
        }
        Ok(out)
    }

    pub async fn show_agent(&self, name: &str) -> Result<AgentView, VaultError> {
        let a = self.find_agent(name).await?;
        self.agent_view(&a).await
    }

    pub async fn update_agent(&self, name: &str, u: AgentUpdate) -> Result<AgentView, VaultError> {
        let mut a = self.find_agent(name).await?;
        if let Some(d) = u.description {
            valid_text("description", &d, 500)?;
            a.description = Some(d);
        }
        if let Some(s) = u.jwt_subject {
            if let Some(s) = &s {
                valid_text("jwt_subject", s, 255)?;
                if let Some(other) = self.inner.stores.agents.get_agent_by_jwt_subject(s).await?
                    && other.id != a.id
                {
                    return Err(VaultError::invalid(
                        "jwt_subject",
                        format!("`{s}` is mapped to agent `{}` already", other.name),
                    ));
                }
            }
            a.jwt_subject = s;
        }
        let mut access = a.access.clone();
        for g in u.add_grants {
            if !access.grants.contains(&g) {
                access.grants.push(g);
            }
        }
        access.grants.retain(|g| !u.remove_grants.contains(g));
        for (p, scopes) in u.set_scopes {
            access.scopes.insert(p, scopes);
        }
        for p in &u.clear_scopes {
            access.scopes.remove(p);
        }
        self.check_access(&AgentAccess {
            // Only new grants must exist; one deleted since is removed quietly by the operator.
            grants: access
                .grants
                .iter()
                .filter(|g| !a.access.grants.contains(g))
                .cloned()
                .collect(),
            scopes: access.scopes.clone(),
        })
        .await?;
        a.access = access;
        if let Some(s) = u.status {
            a.status = s;
        }
        a.updated_at = now();
        let updated = self.inner.stores.agents.update_agent(&a).await?;
        self.inner.cache.forget_subjects();
        if !updated {
            return Err(VaultError::invalid(
                "agent",
                format!("agent `{name}` was deleted"),
            ));
        }
        let mut e = self.operator_event("agent_updated", &a);
        e.detail = Some(format!(
            "agent={} status={} grants={} scopes={}",
            a.id,
            a.status,
            a.access.grants.len(),
            serde_json::to_string(&a.access.scopes).unwrap_or_default()
        ));
        self.inner.audit.write(e).await?;
        self.agent_view(&a).await
    }

    /// A new key; the old one keeps working for `grace_secs` (0: stops now).
    pub async fn rotate_agent_key(
        &self,
        name: &str,
        grace_secs: i64,
    ) -> Result<IssuedKey, VaultError> {
        if !(0..=MAX_KEY_GRACE_SECS).contains(&grace_secs) {
            return Err(VaultError::invalid(
                "grace",
                "must be between 0 and 30 days",
            ));
        }
        let mut a = self.find_agent(name).await?;
        let t = now();
        let key = self.install_key(&mut a, (grace_secs > 0).then_some(t + grace_secs));
        a.updated_at = t;
        self.inner.stores.agents.update_agent(&a).await?;
        self.inner.cache.forget_subjects();
        let mut e = self.operator_event("agent_key_rotated", &a);
        e.detail = Some(format!("agent={} grace_secs={grace_secs}", a.id));
        self.inner.audit.write(e).await?;
        Ok(IssuedKey {
            agent: self.agent_view(&a).await?,
            api_key: Some(key),
            created: false,
        })
    }

    /// Delete an agent (and its delegations). Its own grants go too with `delete_grants`;
    /// without it, an agent that owns grants is not deleted.
    pub async fn delete_agent(&self, name: &str, delete_grants: bool) -> Result<usize, VaultError> {
        let a = self.find_agent(name).await?;
        let owners = [(PrincipalKind::Agent, a.id.to_string())];
        let owned = self
            .inner
            .stores
            .grants
            .list_grants(&crate::store::GrantFilter {
                owners: &owners,
                ..Default::default()
            })
            .await?;
        if !owned.is_empty() && !delete_grants {
            return Err(VaultError::invalid(
                "agent",
                format!(
                    "agent `{}` owns {} grant(s) ({}); pass --delete-grants to delete them with it",
                    a.name,
                    owned.len(),
                    owned
                        .iter()
                        .map(|g| format!("{} {}", g.id, g.provider))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        for g in &owned {
            self.inner.stores.grants.delete_grant(&g.id).await?;
            self.inner.cache.invalidate(&g.id);
        }
        self.inner.stores.agents.delete_agent(&a.id).await?;
        self.inner.cache.forget_subjects();
        let mut e = self.operator_event("agent_deleted", &a);
        e.detail = Some(format!("agent={} grants_deleted={}", a.id, owned.len()));
        self.inner.audit.write(e).await?;
        Ok(owned.len())
    }

    /// Who an agent key belongs to. Every refusal is audited (without the key).
    pub async fn authenticate_agent_key(&self, key: &str) -> Result<Principal, AgentAuthError> {
        let r = self.check_agent_key(key).await;
        if let Err(err) = &r
            && *err != AgentAuthError::Unavailable
        {
            let caller = Caller::new(Principal::local("anonymous"), "authenticate");
            let mut e = super::audit_entry(&caller, "agent_auth");
            e.principal_kind = Some(PrincipalKind::Agent);
            e.outcome = AuditOutcome::Unauthenticated;
            e.reason = Some(err.to_string());
            // The lookup prefix names the key without revealing it.
            if let Ok(p) = agent_key::parse(key) {
                e.detail = Some(format!("key=alter_ak_{}…", p.lookup_prefix()));
            }
            let _ = self.inner.audit.write(e).await;
        }
        r
    }

    async fn check_agent_key(&self, key: &str) -> Result<Principal, AgentAuthError> {
        let parsed = agent_key::parse(key)?;
        let a = self
            .inner
            .stores
            .agents
            .get_agent_by_key_prefix(parsed.lookup_prefix())
            .await
            .map_err(|_| AgentAuthError::Unavailable)?
            .ok_or(AgentAuthError::Unknown)?;
        let key = crate::secret::secret(key);
        let t = now();
        let current = a
            .key_hash
            .as_deref()
            .is_some_and(|h| agent_key::matches(&key, h));
        let previous = !current
            && a.previous_key_expires_at.is_some_and(|until| until > t)
            && a.previous_key_hash
                .as_deref()
                .is_some_and(|h| agent_key::matches(&key, h));
        if !current && !previous {
            let was_previous = a
                .previous_key_hash
                .as_deref()
                .is_some_and(|h| agent_key::matches(&key, h));
            return Err(if was_previous {
                AgentAuthError::RotatedOut
            } else {
                AgentAuthError::Unknown
            });
        }
        if a.status != AgentStatus::Active {
            return Err(AgentAuthError::Disabled(a.name));
        }
        let _ = self.inner.stores.agents.touch_agent(&a.id, t).await;
        Ok(Principal::of_kind(
            PrincipalKind::Agent,
            a.id.to_string(),
            a.name,
        ))
    }

    /// The agent mapped to a client-credentials token's subject, if any.
    pub async fn agent_for_jwt_subject(
        &self,
        subject: &str,
    ) -> Result<Option<Principal>, AgentAuthError> {
        // Most subjects are users, mapped to no agent: that answer is kept for the list TTL (this
        // runs on every JWT-authenticated call). A mapped subject is read every time, so an agent
        // disabled or deleted by another process is refused on its next call.
        let found = match self.inner.cache.subject(subject) {
            Some(None) => None,
            _ => {
                let row = self
                    .inner
                    .stores
                    .agents
                    .get_agent_by_jwt_subject(subject)
                    .await
                    .map_err(|_| AgentAuthError::Unavailable)?;
                if let Some(a) = &row
                    && a.status == AgentStatus::Active
                {
                    let _ = self.inner.stores.agents.touch_agent(&a.id, now()).await;
                }
                if row.is_none() {
                    self.inner.cache.put_subject(subject, None);
                }
                row.map(|a| (a.id.to_string(), a.name, a.status == AgentStatus::Active))
            }
        };
        let Some((id, name, active)) = found else {
            return Ok(None);
        };
        if !active {
            return Err(AgentAuthError::Disabled(name));
        }
        Ok(Some(Principal::of_kind(PrincipalKind::Agent, id, name)))
    }

    /// Check a caller's label: one shaped like an agent id must name an agent (a typo there
    /// would otherwise silently become a free-form label). Labels never grant access. A refusal
    /// is audited.
    pub async fn check_label(&self, caller: &Caller) -> Result<(), VaultError> {
        let Some(label) = caller.agent.as_deref().filter(|_| !caller.is_agent()) else {
            return Ok(());
        };
        if !label.starts_with("agt_") || self.inner.stores.agents.get_agent(label).await?.is_some()
        {
            return Ok(());
        }
        let err = VaultError::invalid(
            "_meta.io.vault-mcp/agent",
            format!(
                "`{label}` looks like an agent id but no such agent exists; an agent acts through its own key, and a free-form label must not start with agt_"
            ),
        );
        let mut e = super::audit_entry(caller, "label_refused");
        e.outcome = err.outcome();
        e.reason = Some(err.to_string());
        self.inner.audit.write(e).await?;
        Err(err)
    }

    // -----------------------------------------------------------------------------------------
    // Delegation

    async fn delegation_event(
        &self,
        caller: &Caller,
        event: &str,
        grant: &GrantId,
        agent: &AgentRow,
        changed: bool,
    ) -> Result<(), VaultError> {
        let mut e = super::audit_entry(caller, event);
        e.grant_id = Some(grant.to_string());
        e.detail = Some(format!(
            "agent={} ({}) changed={changed}",
            agent.name, agent.id
        ));
        if caller.principal.kind() != PrincipalKind::Agent {
            e.agent = Some(agent.name.clone());
        }
        self.inner.audit.write(e).await
    }

    /// Lend `grant_id` to `agent`. The grant's owner (a user, `Access::Own`) may; the operator
    /// (`operator = true`, CLI only) may lend any grant.
    pub async fn delegate_grant(
        &self,
        caller: &Caller,
        grant_id: &str,
        agent: &str,
        operator: bool,
    ) -> Result<bool, VaultError> {
        let g = self.owned_grant(caller, grant_id, operator).await?;
        if operator
            && g.principal_kind == PrincipalKind::User
            && (caller.principal.kind(), caller.principal.id())
                != (PrincipalKind::User, g.principal.as_str())
        {
            return Err(VaultError::invalid(
                "grant_id",
                format!(
                    "grant {} belongs to user {}; only its owner may lend it to an agent (run the command as that user with --as, or let them tick the box on the Connect page)",
                    g.id, g.principal
                ),
            ));
        }
        let a = self.find_agent(agent).await?;
        let changed = self
            .inner
            .stores
            .agents
            .delegate(&DelegationRow {
                grant_id: g.id.clone(),
                agent_id: a.id.clone(),
                delegated_by: if g.principal_kind == PrincipalKind::User {
                    g.principal.clone()
                } else {
                    format!("operator:{}", caller.principal.id())
                },
                created_at: now(),
            })
            .await?;
        self.delegation_event(caller, "delegate", &g.id, &a, changed)
            .await?;
        Ok(changed)
    }

    /// Take a delegation back (idempotent). The owner or the operator.
    pub async fn undelegate_grant(
        &self,
        caller: &Caller,
        grant_id: &str,
        agent: &str,
        operator: bool,
    ) -> Result<bool, VaultError> {
        let g = self.owned_grant(caller, grant_id, operator).await?;
        let a = self.find_agent(agent).await?;
        let changed = self.inner.stores.agents.undelegate(&g.id, &a.id).await?;
        self.delegation_event(caller, "undelegate", &g.id, &a, changed)
            .await?;
        Ok(changed)
    }

    /// The calling agent gives up a delegation it holds (idempotent).
    pub async fn release_delegation(
        &self,
        caller: &Caller,
        grant_id: &str,
    ) -> Result<bool, VaultError> {
        if !caller.is_agent() {
            return Err(VaultError::invalid(
                "grant_id",
                "only an agent can release a delegation; a user takes one back with undelegate_grant",
            ));
        }
        let reach = self.reach(caller).await?;
        let a = reach.agent.clone().expect("agents have a row");
        let changed = self.inner.stores.agents.undelegate(grant_id, &a.id).await?;
        self.delegation_event(
            caller,
            "release_delegation",
            &GrantId::from(grant_id),
            &a,
            changed,
        )
        .await?;
        Ok(changed)
    }

    /// A grant the caller owns (someone else's looks missing), or any grant for the operator.
    async fn owned_grant(
        &self,
        caller: &Caller,
        grant_id: &str,
        operator: bool,
    ) -> Result<crate::store::GrantRow, VaultError> {
        let not_found = || VaultError::GrantNotFound {
            grant_id: grant_id.to_owned(),
        };
        let g = self
            .inner
            .stores
            .grants
            .get_grant(grant_id)
            .await?
            .ok_or_else(not_found)?;
        if operator {
            return Ok(g);
        }
        let reach = self.reach(caller).await?;
        match reach.access(&g) {
            Some(Access::Own) => Ok(g),
            Some(_) => Err(VaultError::invalid(
                "grant_id",
                format!(
                    "grant {} is not yours (you reach it through a group, an access set or a delegation); only its owner can delegate it",
                    g.id
                ),
            )),
            None => Err(not_found()),
        }
    }

    /// The agents each grant of `ids` is delegated to (names), for `list_grants`.
    pub(crate) async fn delegated_to(&self, grant_id: &str) -> Result<Vec<String>, VaultError> {
        let mut out = Vec::new();
        for d in self
            .inner
            .stores
            .agents
            .delegations_of_grant(grant_id)
            .await?
        {
            if let Some(a) = self.inner.stores.agents.get_agent(&d.agent_id).await? {
                out.push(a.name);
            }
        }
        Ok(out)
    }

    /// An agent's id by name (for `secret add --for agent:NAME`).
    pub async fn agent_id(&self, name: &str) -> Result<AgentId, VaultError> {
        Ok(self.find_agent(name).await?.id)
    }
}
