//! Which grants a caller may use, and how: the one place the access rules live.
//!
//! - a user: their own grants and those of their current groups (from this request's token);
//! - an agent: its own grants, the grants of its access set and the grants delegated to it,
//!   with the per-provider scope allowlist of its access set;
//! - app grants are reached only through an agent's access set.
//!
//! An agent's row and delegations are read on every call (never cached), so widening,
//! narrowing, undelegating, disabling and deleting take effect on the agent's next call.

use std::collections::BTreeMap;

use super::{Caller, Vault, VaultError};
use crate::{
    model::{Access, AgentId, AgentStatus, GrantId, PrincipalKind},
    store::{AgentRow, GrantRow},
};

/// What one call may reach.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// Owners whose grants are the caller's own or its groups'.
    pub owners: Vec<(PrincipalKind, String)>,
    /// Grants of other owners: the access set and delegations (an agent's).
    pub ids: Vec<GrantId>,
    /// Delegated grant → who delegated it.
    delegated: BTreeMap<GrantId, String>,
    /// Per provider, the scopes an agent may ask for (no entry: unrestricted).
    pub scopes: BTreeMap<String, Vec<String>>,
    /// The calling agent's row, read for this call.
    pub agent: Option<AgentRow>,
}

impl Reach {
    /// How the caller reaches `g`, if at all.
    pub fn access(&self, g: &GrantRow) -> Option<Access> {
        let owner = (g.principal_kind, g.principal.clone());
        if let Some(i) = self.owners.iter().position(|o| *o == owner) {
            // The first owner is the caller itself; the rest are its groups.
            return Some(if i == 0 { Access::Own } else { Access::Group });
        }
        if self.delegated.contains_key(&g.id) {
            return Some(Access::Delegated);
        }
        if self.ids.contains(&g.id) {
            return Some(Access::AccessSet);
        }
        None
    }

    /// Who delegated `g` to the calling agent, when that is how it is reached.
    pub fn delegated_by(&self, g: &GrantRow) -> Option<&str> {
        self.delegated.get(&g.id).map(String::as_str)
    }

    /// The scopes the agent may ask for on `provider`, when its access set limits them.
    pub fn allowed_scopes(&self, provider: &str) -> Option<&[String]> {
        self.scopes.get(provider).map(Vec::as_slice)
    }

    /// A key naming exactly this reach (for the short-lived grant list cache).
    pub fn cache_key(&self) -> Vec<(PrincipalKind, String)> {
        let mut k = self.owners.clone();
        k.extend(
            self.ids
                .iter()
                .map(|id| (PrincipalKind::Agent, format!("#{id}"))),
        );
        k
    }
}

/// `user:<id>`, `group:<name>`, `app`, `agent:<id>`: a grant's owner in the audit trail.
pub fn owner_label(g: &GrantRow) -> String {
    match g.principal_kind {
        PrincipalKind::App => "app".into(),
        k => format!("{k}:{}", g.principal),
    }
}

impl Vault {
    /// What `caller` may reach on this call. An agent that was disabled or deleted since it
    /// authenticated is refused here.
    pub(crate) async fn reach(&self, caller: &Caller) -> Result<Reach, VaultError> {
        let p = &caller.principal;
        let mut r = Reach {
            owners: vec![(p.kind(), p.id().to_owned())],
            ..Default::default()
        };
        match p.kind() {
            PrincipalKind::User => {
                for g in &caller.groups {
                    r.owners.push((PrincipalKind::Group, g.clone()));
                }
            }
            PrincipalKind::Agent => {
                let stores = &self.inner.stores.agents;
                let agent = match stores.get_agent(p.id()).await? {
                    Some(a) if a.status == AgentStatus::Active => a,
                    Some(a) => {
                        return Err(VaultError::Unauthenticated {
                            message: format!(
                                "agent {} is disabled; an operator enables it with `vault-mcp agents update {} --enable`",
                                a.name, a.name
                            ),
                        });
                    }
                    None => {
                        return Err(VaultError::Unauthenticated {
                            message: format!("agent {} no longer exists", p.display()),
                        });
                    }
                };
                for d in stores.delegations_of_agent(&agent.id).await? {
                    r.ids.push(d.grant_id.clone());
                    r.delegated.insert(d.grant_id, d.delegated_by);
                }
                for g in &agent.access.grants {
                    if !r.ids.contains(g) {
                        r.ids.push(g.clone());
                    }
                }
                r.scopes = agent.access.scopes.clone();
                r.agent = Some(agent);
            }
            // Groups and the app never call; a principal of those kinds reaches its own.
            PrincipalKind::Group | PrincipalKind::App => {}
        }
        Ok(r)
    }

    /// An agent by name or id (`agt_…`), for arguments that name one.
    pub(crate) async fn find_agent(&self, name_or_id: &str) -> Result<AgentRow, VaultError> {
        let stores = &self.inner.stores.agents;
        let found = if AgentId::looks_like(name_or_id) {
            stores.get_agent(name_or_id).await?
        } else {
            stores.get_agent_by_name(name_or_id).await?
        };
        found.ok_or_else(|| {
            VaultError::invalid(
                "agent",
                format!(
                    "no agent `{name_or_id}`; `vault-mcp agents list` shows the agents (create one with `vault-mcp agents create NAME`)"
                ),
            )
        })
    }
}
