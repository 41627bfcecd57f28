//! Persistence, one trait per aggregate: grants + credentials, Connect sessions, the OAuth
//! server's clients/codes/tokens, approvals, the audit log, counters and leases, and vault
//! metadata. Each trait has a SQLite implementation (`sqlite`, the embedded default) and a
//! PostgreSQL one (`postgres`, for many instances on one database); one contract test suite
//! (`contract`) runs every trait against both.
//!
//! The store holds rows, never plaintext secrets: credential material arrives already sealed by
//! `crypto`. Times are unix seconds (`_ms` fields: milliseconds). Row types derive `FromRow`
//! once and are read the same way by both backends.

#[cfg(test)]
pub(crate) mod contract;
mod postgres;
mod sql;
mod sqlite;
mod sqlite_audit;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::Row;

pub use postgres::{PgOptions, PgStore};
pub use sqlite::SqliteStore;

use crate::{
    crypto::{ChainKey, Sealed},
    model::{
        AgentId, AgentStatus, ApprovalStatus, AuditOutcome, GrantId, GrantKind, GrantStatus,
        HeldStatus, KeyStatus, PrincipalKind, Scopes, SessionStatus, TokenKind,
    },
};

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
    #[error("the database is unavailable ({0}); retry when it is back")]
    Unavailable(String),
    #[error("database error: {0}")]
    Db(String),
    #[error("stored row is invalid: {0}")]
    Invalid(String),
    /// A unique value (an agent's name, a key prefix, a JWT subject) is taken.
    #[error("already exists: {0}")]
    Conflict(String),
}

impl StoreError {
    /// A database error, classified: connection trouble is `Unavailable` (retryable).
    pub fn db(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
            sqlx::Error::Database(d)
                if d.code().is_some_and(|c| {
                    // PostgreSQL: admin shutdown, cannot connect now, statement timeout.
                    matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "57014")
                }) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Conflict(d.message().to_owned())
            }
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Invalid(e.to_string())
            }
            _ => StoreError::Db(e.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rows

/// A sealed column pair (`key_id`, `sealed`) read straight into [`Sealed`].
impl<'r, R: Row> sqlx::FromRow<'r, R> for Sealed
where
    &'r str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(Sealed {
            key_id: row.try_get("key_id")?,
            text: row.try_get("sealed")?,
        })
    }
}

/// One grant. `sealed` holds the encrypted [`crate::secret::Credential`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GrantRow {
    pub id: GrantId,
    pub principal_kind: PrincipalKind,
    pub principal: String,
    pub provider: String,
    pub kind: GrantKind,
    pub account: String,
    pub account_display: Option<String>,
    pub scopes: Scopes,
    pub status: GrantStatus,
    /// Scopes the provider said were missing.
    pub scope_mismatch: Option<Scopes>,
    /// JSON injection override (managed secrets).
    pub injection: Option<String>,
    /// Host allowlist override (managed secrets).
    #[sqlx(json(nullable))]
    pub hosts: Option<Vec<String>>,
    #[sqlx(flatten)]
    pub sealed: Sealed,
    pub token_expires_at: Option<i64>,
    pub grant_expires_at: Option<i64>,
    /// The lifetime the grant was given, so a renewal gives the same again.
    pub ttl_secs: Option<i64>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
}

impl GrantRow {
    pub fn missing_scopes(&self) -> &[String] {
        self.scope_mismatch
            .as_ref()
            .map(|s| s.as_slice())
            .unwrap_or(&[])
    }
}

/// Which grants to list.
#[derive(Debug, Clone, Default)]
pub struct GrantFilter<'a> {
    /// Owners to include as (kind, id); empty with empty `ids` = every owner (operator views only).
    pub owners: &'a [(PrincipalKind, String)],
    /// Grants to include whoever owns them (an agent's access set and delegations).
    pub ids: &'a [GrantId],
    pub provider: Option<&'a str>,
}

/// New credential material for an existing grant (refresh or re-authorization).
#[derive(Debug, Clone)]
pub struct CredentialUpdate {
    pub sealed: Sealed,
    pub scopes: Scopes,
    pub token_expires_at: Option<i64>,
    pub account_display: Option<String>,
    pub now: i64,
}

/// A grant's own lifetime, set when it is (re-)authorized: `expires_at` None = no expiry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifetime {
    pub ttl_secs: Option<i64>,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConnectSessionRow {
    pub id: String,
    pub public_id: String,
    pub principal: String,
    #[sqlx(json)]
    pub providers: Vec<String>,
    #[sqlx(json)]
    pub scopes: std::collections::BTreeMap<String, Vec<String>>,
    pub repair_grant_id: Option<String>,
    pub return_url: Option<String>,
    pub status: SessionStatus,
    pub error: Option<String>,
    #[sqlx(json)]
    pub result_grants: Vec<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub completed_at: Option<i64>,
    /// The agent the person may delegate the new grant to (a checkbox on the Connect page).
    pub delegate_agent: Option<AgentId>,
    /// Lifetime asked for the grant this session creates.
    pub grant_ttl_secs: Option<i64>,
    /// The account label a key entered on the Connect page is stored under.
    pub account_label: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConnectAttemptRow {
    pub state_hash: String,
    pub session_id: String,
    pub provider: String,
    pub scopes: Scopes,
    pub redirect_uri: String,
    #[sqlx(flatten)]
    pub sealed: Sealed,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    /// Set when the person ticked "let this agent use the grant" for this attempt.
    pub delegate_agent: Option<AgentId>,
}

/// One audit event as written by the vault. Field order is the canonical hashing order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
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
    pub outcome: AuditOutcome,
    pub decision: Option<String>,
    pub reason: Option<String>,
    pub detail: Option<String>,
    // Fields added after the first release are left out of the canonical JSON when empty, so
    // the hashes of older records stay what they were.
    /// The caller's kind (`user`, `agent`); `principal` is its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_kind: Option<PrincipalKind>,
    /// Who owns the grant used: `user:<id>`, `group:<name>`, `app`, `agent:<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_owner: Option<String>,
    /// The delegation the call went through: the id of the user who delegated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<String>,
    /// The caller's request context, as canonical JSON (keys sorted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// An audit entry with its place in the hash chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct AuditRecord {
    pub seq: i64,
    #[serde(flatten)]
    #[sqlx(flatten)]
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
    pub outcome: Option<AuditOutcome>,
    pub principal_kind: Option<PrincipalKind>,
    /// Acting agent or caller label.
    pub agent: Option<String>,
    /// Context pairs that must all be present with exactly these values.
    pub context: Vec<(String, String)>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub after_seq: Option<i64>,
    pub limit: Option<i64>,
    /// Newest first when true (tail/search), oldest first otherwise (export/verify).
    pub newest_first: bool,
}

/// A dynamically registered OAuth client of our authorization server.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OAuthClientRow {
    pub client_id: String,
    pub secret_hash: Option<String>,
    pub client_name: Option<String>,
    #[sqlx(json)]
    pub redirect_uris: Vec<String>,
    pub metadata: String,
    pub created_at: i64,
}

/// An /authorize request in progress.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OAuthRequestRow {
    pub id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub scope: String,
    pub resource: String,
    pub code_challenge: String,
    /// SHA-256 of the cookie naming the browser that started the request: only that browser
    /// may continue it (someone who learns the request id cannot complete it as themselves).
    pub binding: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
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

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OAuthTokenRow {
    pub token_hash: String,
    pub kind: TokenKind,
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
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ApprovalRow {
    pub id: String,
    pub token_hash: String,
    pub principal: String,
    pub grant_id: String,
    pub provider: String,
    pub method: String,
    pub host: String,
    pub path: String,
    /// SHA-256 over the exact call the person saw (method, canonical URL with query, body):
    /// only that call can consume the approval.
    pub call_hash: String,
    /// The start of the body the person was shown.
    pub body_preview: Option<String>,
    pub reason: Option<String>,
    pub rule: String,
    pub status: ApprovalStatus,
    pub created_at: i64,
    pub expires_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
}

/// What an agent may use besides its own grants and delegations. Read on every call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentAccess {
    /// Grants (of any owner) the operator lets the agent use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<GrantId>,
    /// Per provider: the only scopes the agent may ask for. A provider without an entry is
    /// unrestricted.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub scopes: std::collections::BTreeMap<String, Vec<String>>,
}

/// A managed agent. Its API keys are never stored: `key_hash` is the SHA-256 of the current
/// key, `key_prefix` the first characters of its random part (to find the row); the request
/// signing keys derived from the keys (for HMAC-signed protocols) are sealed.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AgentRow {
    pub id: AgentId,
    pub name: String,
    pub description: Option<String>,
    pub key_prefix: Option<String>,
    pub key_hash: Option<String>,
    pub previous_key_prefix: Option<String>,
    pub previous_key_hash: Option<String>,
    pub previous_key_expires_at: Option<i64>,
    #[sqlx(flatten)]
    pub sealed: Sealed,
    pub jwt_subject: Option<String>,
    #[sqlx(json)]
    pub access: AgentAccess,
    pub idempotency_key: Option<String>,
    pub status: AgentStatus,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
}

/// An application API key of the SDK protocol (`alter_rk_…`). Only its SHA-256 and lookup
/// prefix are stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ApiKeyRow {
    /// A UUID.
    pub id: String,
    pub name: String,
    pub key_prefix: String,
    pub key_hash: String,
    pub previous_key_prefix: Option<String>,
    pub previous_key_hash: Option<String>,
    pub previous_key_expires_at: Option<i64>,
    #[sqlx(json)]
    pub scopes: Vec<String>,
    pub status: KeyStatus,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// A user's grant lent to an agent.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DelegationRow {
    pub grant_id: GrantId,
    pub agent_id: AgentId,
    /// The principal id of whoever delegated (the grant's owner, or `operator`).
    pub delegated_by: String,
    pub created_at: i64,
}

/// A proxied call held for a person's approval, run by the vault once approved.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct HeldCallRow {
    pub approval_id: String,
    pub principal_kind: PrincipalKind,
    pub principal: String,
    /// JSON: what else the caller was (display name, groups, label).
    pub caller: String,
    /// JSON: the request as the caller sent it (no credentials, no user token).
    pub request: String,
    pub status: HeldStatus,
    /// JSON: the scrubbed answer.
    pub result: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Which sealed column a rotation touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedTable {
    Grants,
    ConnectAttempts,
    Agents,
    Meta,
}

#[derive(Debug, Clone)]
pub struct SealedRef {
    pub table: SealedTable,
    pub id: String,
    pub sealed: Sealed,
}

// ---------------------------------------------------------------------------------------------
// Aggregates

/// Vault metadata (`vault_meta`) and the sealed-blob sweep key rotation needs.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Human-readable location (path or redacted URL) for messages.
    fn location(&self) -> String;
    /// Close every connection, at exit. SQLite folds its write-ahead log back into the database
    /// file when its last connection closes, so the next start has no log to replay.
    async fn close(&self);
    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>>;
    async fn put_meta(&self, key: &str, value: &str) -> StoreResult<()>;
    /// Store `value` unless the key exists; true when this call stored it (first writer wins
    /// when several processes start at once).
    async fn insert_meta_if_absent(&self, key: &str, value: &str) -> StoreResult<bool>;
    async fn list_sealed(&self) -> StoreResult<Vec<SealedRef>>;
    /// Write re-wrapped blobs in one transaction.
    async fn replace_sealed(&self, items: &[SealedRef]) -> StoreResult<()>;
}

/// Grants and their sealed credentials.
#[async_trait]
pub trait GrantStore: Send + Sync + 'static {
    async fn insert_grant(&self, grant: &GrantRow) -> StoreResult<()>;
    async fn get_grant(&self, id: &str) -> StoreResult<Option<GrantRow>>;
    async fn list_grants(&self, filter: &GrantFilter<'_>) -> StoreResult<Vec<GrantRow>>;
    async fn find_grant_by_account(
        &self,
        owner: (PrincipalKind, &str),
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
    /// Also sets the grant's lifetime: a renewal starts a new one.
    async fn reauthorize_grant(
        &self,
        id: &str,
        update: &CredentialUpdate,
        lifetime: Lifetime,
    ) -> StoreResult<()>;
    async fn set_grant_status(&self, id: &str, status: GrantStatus, now: i64) -> StoreResult<()>;
    async fn set_scope_mismatch(&self, id: &str, missing: &[String], now: i64) -> StoreResult<()>;
    async fn touch_grant(&self, id: &str, now: i64) -> StoreResult<()>;
    async fn delete_grant(&self, id: &str) -> StoreResult<bool>;
    /// The row's version, cheaply (cache validation).
    async fn grant_version(&self, id: &str) -> StoreResult<Option<i64>>;
    /// The grant the SDK protocol names by this UUID (`model::sdk_uuid`).
    async fn get_grant_by_sdk_id(&self, sdk_id: &str) -> StoreResult<Option<GrantRow>>;
    /// Give rows written before the SDK protocol existed their UUIDs (grants and agents).
    async fn backfill_sdk_ids(&self) -> StoreResult<u64>;
    /// Changes other processes make, as they happen, where the backend can announce them
    /// (PostgreSQL's LISTEN/NOTIFY). `None`: caches rely on their short time to live.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<GrantChange>> {
        None
    }
}

/// A grant changed somewhere (or, when the feed was interrupted, maybe any did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantChange {
    Grant(String),
    All,
}

/// Counters and leases shared by every process on the database: the refresh lease of a grant
/// and fixed-window rate-limit counters.
#[async_trait]
pub trait CounterStore: Send + Sync + 'static {
    /// Take the cross-process refresh lease for a grant until `until`; false if someone holds it.
    async fn acquire_refresh_lease(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> StoreResult<bool>;
    async fn release_refresh_lease(&self, id: &str, owner: &str) -> StoreResult<()>;
    /// Count one use of `key` in the window starting at `window_start`; returns the count
    /// including this use, or `None` (nothing counted) when `limit` was already reached.
    async fn take_slot(
        &self,
        key: &str,
        window_start: i64,
        limit: i64,
        expires_at: i64,
    ) -> StoreResult<Option<i64>>;
    /// Drop counters whose window ended before `now`.
    async fn purge_counters(&self, now: i64) -> StoreResult<u64>;
}

/// Connect sessions and their OAuth attempts.
#[async_trait]
pub trait ConnectStore: Send + Sync + 'static {
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
        status: SessionStatus,
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
}

/// Our OAuth authorization server (hosted `oauth` identity mode).
#[async_trait]
pub trait OAuthServerStore: Send + Sync + 'static {
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
}

/// Approvals of calls a policy holds for a person.
#[async_trait]
pub trait ApprovalStore: Send + Sync + 'static {
    async fn insert_approval(&self, a: &ApprovalRow) -> StoreResult<()>;
    async fn get_approval(&self, id: &str) -> StoreResult<Option<ApprovalRow>>;
    async fn get_approval_by_token(&self, token_hash: &str) -> StoreResult<Option<ApprovalRow>>;
    /// Approvals of a principal (all principals when `None`), newest first.
    async fn list_approvals(
        &self,
        principal: Option<&str>,
        status: Option<ApprovalStatus>,
    ) -> StoreResult<Vec<ApprovalRow>>;
    /// Move a pending approval to `approved` or `denied`; false if it was not pending.
    async fn decide_approval(
        &self,
        id: &str,
        status: ApprovalStatus,
        by: &str,
        now: i64,
    ) -> StoreResult<bool>;
    async fn insert_held_call(&self, h: &HeldCallRow) -> StoreResult<()>;
    async fn get_held_call(&self, approval_id: &str) -> StoreResult<Option<HeldCallRow>>;
    /// Move a held call to `executing`; false if someone else already did (run it once).
    async fn claim_held_call(&self, approval_id: &str, now: i64) -> StoreResult<bool>;
    /// Record how a claimed call ended.
    async fn finish_held_call(
        &self,
        approval_id: &str,
        status: HeldStatus,
        result: Option<&str>,
        error: Option<&str>,
        now: i64,
    ) -> StoreResult<()>;
    /// Use up an approved, unexpired approval of exactly this call; returns it if there was one.
    async fn consume_approval(
        &self,
        principal: &str,
        grant_id: &str,
        call_hash: &str,
        now: i64,
    ) -> StoreResult<Option<ApprovalRow>>;
}

/// Managed agents and the delegations that lend them grants.
#[async_trait]
pub trait AgentStore: Send + Sync + 'static {
    /// Fails with `Conflict` when the name, key prefix, JWT subject or idempotency key is taken.
    async fn insert_agent(&self, a: &AgentRow) -> StoreResult<()>;
    async fn get_agent(&self, id: &str) -> StoreResult<Option<AgentRow>>;
    async fn get_agent_by_name(&self, name: &str) -> StoreResult<Option<AgentRow>>;
    /// The agent whose current or previous key starts with `prefix`.
    async fn get_agent_by_key_prefix(&self, prefix: &str) -> StoreResult<Option<AgentRow>>;
    async fn get_agent_by_jwt_subject(&self, subject: &str) -> StoreResult<Option<AgentRow>>;
    async fn get_agent_by_idempotency_key(&self, key: &str) -> StoreResult<Option<AgentRow>>;
    async fn list_agents(&self) -> StoreResult<Vec<AgentRow>>;
    /// Write every mutable column of the row (by id); false if the agent is gone.
    async fn update_agent(&self, a: &AgentRow) -> StoreResult<bool>;
    /// Delete the agent and its delegations; false if it did not exist.
    async fn delete_agent(&self, id: &str) -> StoreResult<bool>;
    /// Note a use, coarsely (at most one write a minute).
    async fn touch_agent(&self, id: &str, now: i64) -> StoreResult<()>;
    /// Add a delegation; false if it already existed (idempotent).
    async fn delegate(&self, d: &DelegationRow) -> StoreResult<bool>;
    /// Remove a delegation; false if there was none (idempotent).
    async fn undelegate(&self, grant_id: &str, agent_id: &str) -> StoreResult<bool>;
    async fn delegations_of_agent(&self, agent_id: &str) -> StoreResult<Vec<DelegationRow>>;
    async fn delegations_of_grant(&self, grant_id: &str) -> StoreResult<Vec<DelegationRow>>;
    /// The agent the SDK protocol names by this UUID (`model::sdk_uuid`).
    async fn get_agent_by_sdk_id(&self, sdk_id: &str) -> StoreResult<Option<AgentRow>>;
}

/// Application API keys of the SDK protocol.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    async fn insert_api_key(&self, k: &ApiKeyRow) -> StoreResult<()>;
    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRow>>;
    /// The key whose current or previous key starts with `prefix`.
    async fn get_api_key_by_prefix(&self, prefix: &str) -> StoreResult<Option<ApiKeyRow>>;
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRow>>;
    /// Write every mutable column (by id); false if the key is gone.
    async fn update_api_key(&self, k: &ApiKeyRow) -> StoreResult<bool>;
    async fn touch_api_key(&self, id: &str, now: i64) -> StoreResult<()>;
}

/// The hash-chained audit log.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
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
    /// The same append as a blocking call, offered by a store whose append is local work
    /// (SQLite): the audit writer then runs it on its own OS thread, with no hand-off to
    /// another thread per batch. `None` (the default) for a store reached over the network.
    fn blocking_append(&self) -> Option<Arc<dyn BlockingAuditAppend>> {
        None
    }
}

/// An audit append that runs to completion on the calling thread (see
/// [`AuditStore::blocking_append`]); the same contract as [`AuditStore::append_audit`].
pub trait BlockingAuditAppend: Send + Sync + 'static {
    fn append(&self, entries: &[AuditEntry], chain: &ChainKey) -> StoreResult<Vec<AuditRecord>>;
}

/// Every aggregate of one database, as the vault and the identity layer use them.
#[derive(Clone)]
pub struct Stores {
    pub meta: Arc<dyn MetaStore>,
    pub grants: Arc<dyn GrantStore>,
    pub counters: Arc<dyn CounterStore>,
    pub connect: Arc<dyn ConnectStore>,
    pub oauth: Arc<dyn OAuthServerStore>,
    pub approvals: Arc<dyn ApprovalStore>,
    pub agents: Arc<dyn AgentStore>,
    pub keys: Arc<dyn KeyStore>,
    pub audit: Arc<dyn AuditStore>,
}

impl Stores {
    fn all<S>(s: Arc<S>) -> Self
    where
        S: MetaStore
            + GrantStore
            + CounterStore
            + ConnectStore
            + OAuthServerStore
            + ApprovalStore
            + AgentStore
            + KeyStore
            + AuditStore,
    {
        Stores {
            meta: s.clone(),
            grants: s.clone(),
            counters: s.clone(),
            connect: s.clone(),
            oauth: s.clone(),
            approvals: s.clone(),
            agents: s.clone(),
            keys: s.clone(),
            audit: s,
        }
    }

    pub fn sqlite(s: SqliteStore) -> Self {
        Self::all(Arc::new(s))
    }

    pub fn postgres(s: PgStore) -> Self {
        Self::all(Arc::new(s))
    }

    pub fn location(&self) -> String {
        self.meta.location()
    }
}

/// The chain's starting value.
pub const AUDIT_GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `vault_meta` keys whose values are sealed under the master key (re-wrapped on rotation).
pub const SEALED_META: &[&str] = &["key_check", "audit_chain"];

/// Hash of audit record `seq` chained to the previous hash (see `crypto::ChainKey`).
pub fn audit_hash(chain: &ChainKey, seq: i64, prev_hash: &str, entry: &AuditEntry) -> String {
    let canonical = serde_json::to_vec(entry).expect("audit entry serializes");
    chain.link(seq, prev_hash, &canonical)
}

/// The records that follow `tail` in the chain.
pub(crate) fn chain_records(
    key: &ChainKey,
    tail: (i64, String),
    entries: &[AuditEntry],
) -> Vec<AuditRecord> {
    let (mut seq, mut prev) = tail;
    let mut records = Vec::with_capacity(entries.len());
    for e in entries {
        seq += 1;
        let hash = audit_hash(key, seq, &prev, e);
        records.push(AuditRecord {
            seq,
            entry: e.clone(),
            prev_hash: std::mem::replace(&mut prev, hash.clone()),
            hash,
        });
    }
    records
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

/// How to reach the database, from a `--database` URL.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Audit commits wait for the disk (SQLite `synchronous=FULL` on the audit connection).
    pub audit_fsync: bool,
    pub postgres: PgOptions,
}

/// Open the database a URL names: `sqlite://PATH` (or a bare path) or `postgres://…`.
pub async fn open(url: &str, opts: &StoreOptions) -> StoreResult<Stores> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Stores::postgres(PgStore::open(url, &opts.postgres).await?));
    }
    let path = url.strip_prefix("sqlite://").unwrap_or(url);
    Ok(Stores::sqlite(
        SqliteStore::open_with(std::path::Path::new(path), opts.audit_fsync).await?,
    ))
}
