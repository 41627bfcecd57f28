//! Application API keys for the SDK protocol (`/sdk/*`): `alter_rk_…`, created with
//! `vault-mcp keys create`, shown once, stored as a SHA-256 and a lookup prefix, scoped,
//! revocable and rotatable with an overlap. An application key acts as the app principal, or as
//! a user when the request carries that user's token. Agent keys live with their agents
//! (`agents.rs`).

use serde::Serialize;

use super::{Caller, Principal, Vault, VaultError, agent_key, now, rfc3339};
use crate::{
    model::{AuditOutcome, KeyStatus, PrincipalKind},
    secret::{Expose, Secret},
    store::ApiKeyRow,
};

/// Every key scope the server knows. `tokens:raw` releases credentials to the caller
/// (`POST /sdk/token`), so keys get it only when asked for by name.
pub const KEY_SCOPES: &[&str] = &[
    "grants:read",
    "grants:write",
    "connect:initiate",
    "secrets:write",
    "audit:emit",
    "approvals:read",
    "proxy:execute",
    "providers:read",
    "idp_users:read",
    "idp_users:write",
    "agents:admin",
    "keys:admin",
    "spans:emit",
    "tokens:raw",
];

/// The scopes a key gets when none are named: all but `tokens:raw`.
pub fn default_scopes() -> Vec<String> {
    KEY_SCOPES
        .iter()
        .filter(|s| **s != "tokens:raw")
        .map(|s| (*s).to_owned())
        .collect()
}

/// A key as the operator sees it. Never the key itself.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    /// The start of the key, to tell which one is in use.
    pub key_prefix: String,
    pub scopes: Vec<String>,
    pub status: KeyStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_key_expires_at: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
}

impl ApiKeyView {
    fn of(k: &ApiKeyRow) -> Self {
        ApiKeyView {
            id: k.id.clone(),
            name: k.name.clone(),
            key_prefix: format!("alter_rk_{}…", k.key_prefix),
            scopes: k.scopes.clone(),
            status: k.status,
            previous_key_expires_at: k
                .previous_key_expires_at
                .filter(|t| *t > now())
                .map(rfc3339),
            created_at: rfc3339(k.created_at),
            expires_at: k.expires_at.map(rfc3339),
            last_used_at: k.last_used_at.map(rfc3339),
        }
    }
}

/// An application key that authenticated: who it is and what it may do.
#[derive(Debug, Clone)]
pub struct AppKey {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// True when the key used is the rotated-out one, still in its overlap.
    pub deprecated: bool,
}

impl AppKey {
    /// The app principal this key speaks for (when no user token says otherwise).
    pub fn principal(&self) -> Principal {
        Principal::of_kind(PrincipalKind::App, "app", format!("app key {}", self.name))
    }
}

/// Why an application key was refused, with the SDK's code for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyAuthError {
    #[error("{0}")]
    Malformed(#[from] agent_key::KeyFormatError),
    #[error("unknown API key")]
    Unknown,
    #[error("this API key was revoked")]
    Revoked,
    #[error("this API key expired")]
    Expired,
    #[error("this API key was replaced by a newer one and its overlap has ended")]
    RotatedOut,
    #[error("the vault could not check the key right now; retry")]
    Unavailable,
}

impl KeyAuthError {
    /// The SDK protocol's error code.
    pub fn code(&self) -> &'static str {
        match self {
            KeyAuthError::Malformed(_) | KeyAuthError::Unknown => "invalid_key",
            KeyAuthError::Revoked => "key_revoked",
            KeyAuthError::Expired => "key_expired",
            KeyAuthError::RotatedOut => "key_rotated_grace_expired",
            KeyAuthError::Unavailable => "service_unavailable",
        }
    }
}

fn check_scopes(scopes: &[String]) -> Result<(), VaultError> {
    if scopes.is_empty() {
        return Err(VaultError::invalid(
            "scopes",
            "give at least one scope (or leave --scopes out for the defaults)",
        ));
    }
    for s in scopes {
        if !KEY_SCOPES.contains(&s.as_str()) {
            return Err(VaultError::invalid(
                "scopes",
                format!(
                    "`{s}` is not a key scope; use any of {}",
                    KEY_SCOPES.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

impl Vault {
    async fn key_event(
        &self,
        event: &str,
        k: &ApiKeyRow,
        detail: String,
    ) -> Result<(), VaultError> {
        let caller = Caller::new(Principal::local("operator"), format!("keys {event}"));
        let mut e = super::audit_entry(&caller, event);
        e.detail = Some(format!("key={} name={} {detail}", k.id, k.name));
        self.inner.audit.write(e).await
    }

    /// `keys create`: a new application key, returned once.
    pub async fn create_api_key(
        &self,
        name: &str,
        scopes: Option<Vec<String>>,
        ttl_secs: Option<i64>,
    ) -> Result<(ApiKeyView, Secret), VaultError> {
        if name.trim().is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(VaultError::invalid("name", "1 to 100 printable characters"));
        }
        let scopes = scopes.unwrap_or_else(default_scopes);
        check_scopes(&scopes)?;
        let key = agent_key::generate_kind("rk");
        let parsed =
            agent_key::parse_kind(key.expose_secret(), "rk").expect("generated keys parse");
        let t = now();
        let row = ApiKeyRow {
            id: uuid::Uuid::new_v4().hyphenated().to_string(),
            name: name.to_owned(),
            key_prefix: parsed.lookup_prefix().to_owned(),
            key_hash: agent_key::hash(&key),
            previous_key_prefix: None,
            previous_key_hash: None,
            previous_key_expires_at: None,
            scopes,
            status: KeyStatus::Active,
            created_at: t,
            updated_at: t,
            expires_at: ttl_secs.map(|d| t + d),
            last_used_at: None,
        };
        self.inner.stores.keys.insert_api_key(&row).await?;
        self.key_event(
            "key_created",
            &row,
            format!("scopes={}", row.scopes.join(",")),
        )
        .await?;
        Ok((ApiKeyView::of(&row), key))
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyView>, VaultError> {
        Ok(self
            .inner
            .stores
            .keys
            .list_api_keys()
            .await?
            .iter()
            .map(ApiKeyView::of)
            .collect())
    }

    async fn api_key_row(&self, id: &str) -> Result<ApiKeyRow, VaultError> {
        self.inner
            .stores
            .keys
            .get_api_key(id)
            .await?
            .ok_or_else(|| {
                VaultError::invalid(
                    "key",
                    format!("no API key `{id}`; `vault-mcp keys list` shows them"),
                )
            })
    }

    /// Revoke a key (idempotent). Requests with it are refused from now on.
    pub async fn revoke_api_key(&self, id: &str) -> Result<ApiKeyView, VaultError> {
        let mut k = self.api_key_row(id).await?;
        if k.status != KeyStatus::Revoked {
            k.status = KeyStatus::Revoked;
            k.updated_at = now();
            self.inner.stores.keys.update_api_key(&k).await?;
            self.key_event("key_revoked", &k, String::new()).await?;
        }
        Ok(ApiKeyView::of(&k))
    }

    /// A new key for the same id and scopes; the old one keeps working for `overlap_secs`.
    pub async fn rotate_api_key(
        &self,
        id: &str,
        overlap_secs: i64,
    ) -> Result<(ApiKeyView, Secret), VaultError> {
        if !(0..=30 * 86_400).contains(&overlap_secs) {
            return Err(VaultError::invalid("overlap", "between 0 and 30 days"));
        }
        let mut k = self.api_key_row(id).await?;
        if k.status == KeyStatus::Revoked {
            return Err(VaultError::invalid(
                "key",
                "a revoked key cannot be rotated; create a new one",
            ));
        }
        let key = agent_key::generate_kind("rk");
        let parsed =
            agent_key::parse_kind(key.expose_secret(), "rk").expect("generated keys parse");
        let t = now();
        if overlap_secs > 0 {
            k.previous_key_prefix = Some(k.key_prefix.clone());
            k.previous_key_hash = Some(k.key_hash.clone());
            k.previous_key_expires_at = Some(t + overlap_secs);
        } else {
            k.previous_key_prefix = None;
            k.previous_key_hash = None;
            k.previous_key_expires_at = None;
        }
        k.key_prefix = parsed.lookup_prefix().to_owned();
        k.key_hash = agent_key::hash(&key);
        k.updated_at = t;
        self.inner.stores.keys.update_api_key(&k).await?;
        self.key_event("key_rotated", &k, format!("overlap_secs={overlap_secs}"))
            .await?;
        Ok((ApiKeyView::of(&k), key))
    }

    /// Which application key `key` is. Refusals are the caller's to audit (they know the
    /// request).
    pub async fn authenticate_app_key(&self, key: &str) -> Result<AppKey, KeyAuthError> {
        let parsed = agent_key::parse_kind(key, "rk")?;
        let k = self
            .inner
            .stores
            .keys
            .get_api_key_by_prefix(parsed.lookup_prefix())
            .await
            .map_err(|_| KeyAuthError::Unavailable)?
            .ok_or(KeyAuthError::Unknown)?;
        let secret = crate::secret::secret(key);
        let t = now();
        let current = agent_key::matches(&secret, &k.key_hash);
        let previous = !current
            && k.previous_key_hash
                .as_deref()
                .is_some_and(|h| agent_key::matches(&secret, h));
        if !current && !previous {
            return Err(KeyAuthError::Unknown);
        }
        if k.status == KeyStatus::Revoked {
            return Err(KeyAuthError::Revoked);
        }
        if k.expires_at.is_some_and(|e| e <= t) {
            return Err(KeyAuthError::Expired);
        }
        if previous && k.previous_key_expires_at.is_none_or(|e| e <= t) {
            return Err(KeyAuthError::RotatedOut);
        }
        let _ = self.inner.stores.keys.touch_api_key(&k.id, t).await;
        Ok(AppKey {
            id: k.id,
            name: k.name,
            scopes: k.scopes,
            deprecated: previous,
        })
    }

    /// Audit a refused SDK request (bad key, bad signature, stale or replayed).
    pub async fn audit_refused(&self, event: &str, reason: &str, detail: String) {
        let caller = Caller::new(Principal::local("anonymous"), "sdk");
        let mut e = super::audit_entry(&caller, event);
        e.outcome = AuditOutcome::Unauthenticated;
        e.reason = Some(reason.to_owned());
        e.detail = Some(detail);
        let _ = self.inner.audit.write(e).await;
    }

    /// Use up a request nonce: true the first time, false on a replay (on every instance that
    /// shares the database). Remembered for `ttl_secs`.
    pub async fn claim_nonce(
        &self,
        key: &str,
        nonce: &str,
        ttl_secs: i64,
    ) -> Result<bool, VaultError> {
        self.use_once(&format!("sdk-nonce:{key}"), nonce, ttl_secs)
            .await
    }

    /// The grant the SDK protocol names by `uuid` (no access decision: callers check reach).
    pub async fn grant_by_sdk_id(
        &self,
        uuid: &str,
    ) -> Result<Option<crate::store::GrantRow>, VaultError> {
        Ok(self
            .inner
            .stores
            .grants
            .get_grant_by_sdk_id(&uuid.to_ascii_lowercase())
            .await?)
    }

    /// The agent the SDK protocol names by `uuid`.
    pub async fn agent_by_sdk_id(
        &self,
        uuid: &str,
    ) -> Result<Option<crate::store::AgentRow>, VaultError> {
        Ok(self
            .inner
            .stores
            .agents
            .get_agent_by_sdk_id(&uuid.to_ascii_lowercase())
            .await?)
    }

    /// One audit record for an SDK request the vault does not audit on its own.
    pub async fn audit_sdk(
        &self,
        caller: &Caller,
        event: &str,
        outcome: &str,
        context: Option<String>,
        detail: String,
    ) {
        let mut e = super::audit_entry(caller, event);
        e.outcome = match outcome {
            "ok" => AuditOutcome::Ok,
            other => AuditOutcome::parse(other).unwrap_or_else(|| {
                e.reason = Some(other.to_owned());
                AuditOutcome::Denied
            }),
        };
        e.context = context;
        e.detail = Some(detail);
        let _ = self.inner.audit.write(e).await;
    }
}
