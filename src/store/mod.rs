//! Persistence behind one interface. `sqlite` is the embedded default; a PostgreSQL
//! implementation satisfies the same [`Store`] trait for scale-out deployments.
//!
//! The store holds rows, never plaintext secrets: credential material arrives already sealed by
//! `crypto`. Times are unix seconds (`_ms` fields: milliseconds).

mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::crypto::{ChainKey, Sealed};

pub use sqlite::SqliteStore;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {location}: {message}")]
    Open { location: String, message: String },
    #[error(
        "database {location} is not a vault-mcp SQLite database or is corrupt ({message}); \
         nothing was changed. Restore it from a backup, or move it aside to start an empty vault"
    )]
    Corrupt { location: String, message: String },
    #[error("database error: {0}")]
    Db(String),
    #[error("stored row is invalid: {0}")]
    Invalid(String),
}

/// One grant row. `sealed` holds the encrypted [`crate::secret::Credential`].
#[derive(Debug, Clone)]
pub struct GrantRow {
    pub id: String,
    pub principal: String,
    pub provider: String,
    pub kind: String,
    pub account: String,
    pub account_display: Option<String>,
    pub scopes: Vec<String>,
    pub status: String,
    pub scope_mismatch: Vec<String>,
    pub injection: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub sealed: Sealed,
    pub token_expires_at: Option<i64>,
    pub grant_expires_at: Option<i64>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
}

/// New credential material for an existing grant (refresh or re-authorization).
#[derive(Debug, Clone)]
pub struct CredentialUpdate {
    pub sealed: Sealed,
    pub scopes: Vec<String>,
    pub token_expires_at: Option<i64>,
    pub account_display: Option<String>,
    pub now: i64,
}

#[derive(Debug, Clone)]
pub struct ConnectSessionRow {
    pub id: String,
    pub public_id: String,
    pub principal: String,
    pub providers: Vec<String>,
    pub scopes: std::collections::BTreeMap<String, Vec<String>>,
    pub repair_grant_id: Option<String>,
    pub return_url: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub result_grants: Vec<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub completed_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct ConnectAttemptRow {
    pub state_hash: String,
    pub session_id: String,
    pub provider: String,
    pub scopes: Vec<String>,
    pub redirect_uri: String,
    pub sealed: Sealed,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// One audit event as written by the vault. Field order is the canonical hashing order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: String,
    pub ts_ms: i64,
    pub event: String,
    pub principal: String,
    pub agent: Option<String>,
    pub client: Option<String>,
    pub tool: Option<String>,
    pub grant_id: Option<String>,
    pub provider: Option<String>,
    pub method: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub status: Option<i64>,
    pub latency_ms: Option<i64>,
    pub outcome: String,
    pub decision: Option<String>,
    pub reason: Option<String>,
    pub detail: Option<String>,
}

/// An audit entry with its place in the hash chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

/// Search filter for the audit log. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub principal: Option<String>,
    pub provider: Option<String>,
    pub grant_id: Option<String>,
    pub outcome: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub after_seq: Option<i64>,
    pub limit: Option<i64>,
    /// Newest first when true (tail/search), oldest first otherwise (export/verify).
    pub newest_first: bool,
}

/// A dynamically registered OAuth client of our authorization server.
#[derive(Debug, Clone)]
pub struct OAuthClientRow {
    pub client_id: String,
    pub secret_hash: Option<String>,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub metadata: String,
    pub created_at: i64,
}

/// An /authorize request in progress.
#[derive(Debug, Clone)]
pub struct OAuthRequestRow {
    pub id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub scope: String,
    pub resource: String,
    pub code_challenge: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct OAuthCodeRow {
    pub code_hash: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub principal: String,
    pub principal_display: String,
    pub scope: String,
    pub resource: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct OAuthTokenRow {
    pub token_hash: String,
    /// `access` or `refresh`.
    pub kind: String,
    pub family: String,
    pub client_id: String,
    pub principal: String,
    pub principal_display: String,
    pub scope: String,
    pub resource: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// A one-time approval of a call a policy marked `approve`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRow {
    pub id: String,
    pub token_hash: String,
    pub principal: String,
    pub grant_id: String,
    pub provider: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub reason: Option<String>,
    pub rule: String,
    pub status: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
}

/// Which sealed column a rotation touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedTable {
    Grants,
    ConnectAttempts,
    Meta,
}

#[derive(Debug, Clone)]
pub struct SealedRef {
    pub table: SealedTable,
    pub id: String,
    pub sealed: Sealed,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Human-readable location (path or redacted URL) for messages.
    fn location(&self) -> String;

    // ---- meta ----
    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>>;
    async fn put_meta(&self, key: &str, value: &str) -> StoreResult<()>;
    /// Store `value` unless the key exists; true when this call stored it (first writer wins
    /// when several processes start at once).
    async fn insert_meta_if_absent(&self, key: &str, value: &str) -> StoreResult<bool>;

    // ---- grants ----
    async fn insert_grant(&self, grant: &GrantRow) -> StoreResult<()>;
    async fn get_grant(&self, id: &str) -> StoreResult<Option<GrantRow>>;
    /// Grants of a principal (all principals when `None`), optionally for one provider.
    async fn list_grants(
        &self,
        principal: Option<&str>,
        provider: Option<&str>,
    ) -> StoreResult<Vec<GrantRow>>;
    async fn find_grant_by_account(
        &self,
        principal: &str,
        provider: &str,
        account: &str,
    ) -> StoreResult<Option<GrantRow>>;
    /// Replace the credential if the row is still at `expected_version`. Returns false when
    /// another writer got there first.
    async fn update_grant_credential(
        &self,
        id: &str,
        expected_version: i64,
        update: &CredentialUpdate,
    ) -> StoreResult<bool>;
    /// Same as `update_grant_credential` but also resets status and scope mismatch (re-auth).
    async fn reauthorize_grant(&self, id: &str, update: &CredentialUpdate) -> StoreResult<()>;
    async fn set_grant_status(&self, id: &str, status: &str, now: i64) -> StoreResult<()>;
    async fn set_scope_mismatch(&self, id: &str, missing: &[String], now: i64) -> StoreResult<()>;
    async fn touch_grant(&self, id: &str, now: i64) -> StoreResult<()>;
    async fn delete_grant(&self, id: &str) -> StoreResult<bool>;
    /// Take the cross-process refresh lease for a grant until `until`; false if someone holds it.
    async fn acquire_refresh_lease(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> StoreResult<bool>;
    async fn release_refresh_lease(&self, id: &str, owner: &str) -> StoreResult<()>;

    // ---- key rotation ----
    async fn list_sealed(&self) -> StoreResult<Vec<SealedRef>>;
    /// Write re-wrapped blobs in one transaction.
    async fn replace_sealed(&self, items: &[SealedRef]) -> StoreResult<()>;

    // ---- connect ----
    async fn insert_connect_session(&self, s: &ConnectSessionRow) -> StoreResult<()>;
    async fn get_connect_session(&self, id: &str) -> StoreResult<Option<ConnectSessionRow>>;
    async fn get_connect_session_by_public_id(
        &self,
        public_id: &str,
    ) -> StoreResult<Option<ConnectSessionRow>>;
    /// Move a pending session to a final status; false if it was no longer pending.
    async fn finish_connect_session(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
        result_grants: &[String],
        now: i64,
    ) -> StoreResult<bool>;
    /// Record per-provider results of a still-pending session; false if it is no longer pending.
    async fn update_connect_results(&self, id: &str, result_grants: &[String])
    -> StoreResult<bool>;
    async fn insert_connect_attempt(&self, a: &ConnectAttemptRow) -> StoreResult<()>;
    /// Mark an attempt used and return it; `None` if unknown or already used (single use).
    async fn take_connect_attempt(
        &self,
        state_hash: &str,
        now: i64,
    ) -> StoreResult<Option<ConnectAttemptRow>>;
    /// Drop sessions and attempts that expired before `before`.
    async fn purge_connect(&self, before: i64) -> StoreResult<u64>;

    // ---- our OAuth authorization server (hosted `oauth` mode) ----
    async fn insert_oauth_client(&self, c: &OAuthClientRow) -> StoreResult<()>;
    async fn get_oauth_client(&self, client_id: &str) -> StoreResult<Option<OAuthClientRow>>;
    async fn count_oauth_clients(&self) -> StoreResult<i64>;
    async fn insert_oauth_request(&self, r: &OAuthRequestRow) -> StoreResult<()>;
    /// Remove and return a pending authorization request (single use).
    async fn take_oauth_request(&self, id: &str) -> StoreResult<Option<OAuthRequestRow>>;
    async fn get_oauth_request(&self, id: &str) -> StoreResult<Option<OAuthRequestRow>>;
    async fn insert_oauth_code(&self, c: &OAuthCodeRow) -> StoreResult<()>;
    /// Mark a code used and return it; a second use returns the row with `used_at` already set
    /// (so the caller can revoke what the first use issued).
    async fn use_oauth_code(&self, code_hash: &str, now: i64) -> StoreResult<Option<OAuthCodeRow>>;
    async fn insert_oauth_token(&self, t: &OAuthTokenRow) -> StoreResult<()>;
    async fn get_oauth_token(&self, token_hash: &str) -> StoreResult<Option<OAuthTokenRow>>;
    /// Revoke one token; false if it was already revoked (refresh rotation relies on this).
    async fn revoke_oauth_token(&self, token_hash: &str, now: i64) -> StoreResult<bool>;
    async fn revoke_oauth_family(&self, family: &str, now: i64) -> StoreResult<u64>;
    /// Drop expired codes, requests and tokens.
    async fn purge_oauth(&self, now: i64) -> StoreResult<u64>;

    // ---- approvals ----
    async fn insert_approval(&self, a: &ApprovalRow) -> StoreResult<()>;
    async fn get_approval(&self, id: &str) -> StoreResult<Option<ApprovalRow>>;
    async fn get_approval_by_token(&self, token_hash: &str) -> StoreResult<Option<ApprovalRow>>;
    /// Pending approvals of a principal (all principals when `None`), newest first.
    async fn list_approvals(
        &self,
        principal: Option<&str>,
        status: Option<&str>,
    ) -> StoreResult<Vec<ApprovalRow>>;
    /// Move a pending approval to `approved` or `denied`; false if it was not pending.
    async fn decide_approval(
        &self,
        id: &str,
        status: &str,
        by: &str,
        now: i64,
    ) -> StoreResult<bool>;
    /// Use up an approved, unexpired approval matching this call; returns it if there was one.
    async fn consume_approval(
        &self,
        principal: &str,
        grant_id: &str,
        method: &str,
        host: &str,
        path: &str,
        now: i64,
    ) -> StoreResult<Option<ApprovalRow>>;

    // ---- audit ----
    /// Append entries in one transaction, chaining each to the newest stored hash.
    async fn append_audit(
        &self,
        entries: &[AuditEntry],
        chain: &ChainKey,
    ) -> StoreResult<Vec<AuditRecord>>;
    async fn query_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRecord>>;
    async fn count_audit(&self) -> StoreResult<i64>;
    /// Remove entries older than `before_ms`; the chain restarts from the oldest kept entry,
    /// behind an anchor sealed with the chain key.
    async fn prune_audit(&self, before_ms: i64, chain: &ChainKey) -> StoreResult<u64>;
}

/// Hash of audit record `seq` chained to the previous hash (see `crypto::ChainKey`).
pub fn audit_hash(chain: &ChainKey, seq: i64, prev_hash: &str, entry: &AuditEntry) -> String {
    let canonical = serde_json::to_vec(entry).expect("audit entry serializes");
    chain.link(seq, prev_hash, &canonical)
}

/// The chain's starting value.
pub const AUDIT_GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `vault_meta` keys whose values are sealed under the master key (re-wrapped on rotation).
pub const SEALED_META: &[&str] = &["key_check", "audit_chain"];

pub(crate) fn split_scopes(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// Where the kept chain starts after pruning: `"<seq>:<hash>:<mac>"` in `vault_meta`
/// (`audit_anchor`); the genesis when nothing was pruned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub seq: i64,
    pub hash: String,
    /// Seal over `seq` and `hash` with the chain key; absent on anchors older than the key.
    pub mac: Option<String>,
}

impl Anchor {
    pub fn genesis() -> Self {
        Anchor {
            seq: 0,
            hash: AUDIT_GENESIS.to_owned(),
            mac: None,
        }
    }

    pub fn sealed(chain: &ChainKey, seq: i64, hash: String) -> Self {
        let mac = Some(chain.seal_point("anchor", seq, &hash));
        Anchor { seq, hash, mac }
    }

    pub fn parse(text: Option<&str>) -> Self {
        let Some(t) = text else {
            return Self::genesis();
        };
        let mut it = t.splitn(3, ':');
        match (it.next().and_then(|s| s.parse().ok()), it.next()) {
            (Some(seq), Some(hash)) => Anchor {
                seq,
                hash: hash.to_owned(),
                mac: it.next().map(str::to_owned),
            },
            _ => Self::genesis(),
        }
    }

    pub fn to_text(&self) -> String {
        match &self.mac {
            Some(m) => format!("{}:{}:{m}", self.seq, self.hash),
            None => format!("{}:{}", self.seq, self.hash),
        }
    }
}
