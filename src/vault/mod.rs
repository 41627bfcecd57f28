//! The vault core: grants, credentials, the `vault_request` pipeline, Connect and audit.
//!
//! `Vault` is the facade every entry point (MCP tools, CLI, HTTP pages) calls. It knows nothing
//! of MCP or HTTP routing: callers hand it a [`Caller`] and typed arguments and get typed
//! results or a [`VaultError`] with a stable code.

pub mod agent_key;
pub mod agents;
pub mod api_keys;
pub mod approval;
mod audit;
mod audit_log;
mod cache;
mod caller;
pub mod canonical;
mod classify;
pub mod connect;
mod credential;
mod error;
pub mod grants;
mod headers;
mod held;
pub mod outbound;
pub mod policy;
mod reach;
pub mod release;
pub mod request;
mod response;
pub mod scrub;
pub mod template;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock, Weak},
};

use rand::{Rng, distr::Alphanumeric};

pub use agents::{AgentAuthError, AgentUpdate, AgentView, IssuedKey, NewAgent};
pub use audit::{AuditSink, now_ms};
pub use audit_log::VerifyReport;
pub use caller::{Caller, Groups, Principal};
pub use connect::{
    CallbackOutcome, CallbackParams, ConnectStarted, ConnectView, ProviderItem, StartConnect,
};
pub use error::GrantCandidate;
pub use error::{ConnectOffer, ERROR_CODES, VaultError};
pub use grants::{GrantSelector, GrantView, NewSecret, ProviderView, SecretOwner};
pub use release::RawCallReport;
pub use request::{ApiRequest, ApiResponse, RequestBody};

use crate::{
    config::{ConnectConfig, RequestConfig},
    crypto::{self, ChainKey, CryptoError, Keyring, Sealed},
    providers::Catalog,
    store::{AuditStore, MetaStore, Stores},
};

/// Settings the vault needs from the config.
#[derive(Debug, Clone)]
pub struct VaultSettings {
    pub request: RequestConfig,
    pub connect: ConnectConfig,
    /// Raw `[policy]` section, compiled when the vault opens.
    pub policy: Option<toml::Value>,
    /// File holding the signed head of the audit chain (outside the database), if any.
    pub audit_checkpoint: Option<std::path::PathBuf>,
    pub approvals: ApprovalDelivery,
    /// How long a grant list read for one call serves the next ones (0 turns it off).
    pub grant_cache_ttl: std::time::Duration,
}

/// How a pending approval reaches the person when their client cannot ask them directly.
#[derive(Debug, Clone, Default)]
pub struct ApprovalDelivery {
    /// Put the approval link in the tool result. Only where the page needs the user's own
    /// signed-in session (hosted `jwt`/`oauth` identity): elsewhere an agent that can fetch the
    /// link could approve its own call.
    pub links_in_results: bool,
    /// Open the approval page in this machine's browser (local mode).
    pub open_browser: bool,
    /// Let a user's MCP client ask them (form elicitation, or a 2026-07-28 input request). Never
    /// for agent principals: nobody sits behind an agent's client to answer.
    pub in_client: bool,
}

impl VaultSettings {
    pub fn from_config(c: &crate::config::Config) -> Self {
        VaultSettings {
            request: c.request.clone(),
            connect: c.connect.clone(),
            policy: c.policy.clone(),
            audit_checkpoint: Some(c.audit_checkpoint.clone()),
            approvals: ApprovalDelivery {
                links_in_results: false,
                open_browser: c.approvals_open_browser,
                in_client: c.approvals_in_client,
            },
            grant_cache_ttl: c.grant_cache_ttl,
        }
    }
}

/// Shared state behind the cheap-to-clone [`Vault`] handle.
pub(crate) struct Inner {
    pub stores: Stores,
    keys: RwLock<Keyring>,
    pub catalog: Catalog,
    pub settings: VaultSettings,
    /// The one door out: every request that carries a credential (see `outbound`).
    pub outbound: outbound::Outbound,
    pub audit: AuditSink,
    /// Keys the audit chain, its anchor and its checkpoints.
    pub chain: ChainKey,
    /// Warm grants and ready credentials (see `cache`).
    pub cache: cache::Cache,
    pub policy: policy::PolicySet,
    /// One in-process lock per grant being refreshed (single flight).
    pub refresh_locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// Identifies this process as refresh-lease owner.
    pub instance: String,
}

#[derive(Clone)]
pub struct Vault {
    pub(crate) inner: Arc<Inner>,
}

/// Sealed in `vault_meta` to prove a master key opens this vault. v2 also says the audit chain
/// is keyed, so a deleted chain key reads as tampering, not as an old vault.
const KEY_CHECK_V1: &[u8] = b"vault-mcp key check v1";
const KEY_CHECK_V2: &[u8] = b"vault-mcp key check v2: audit chain keyed";

/// Check that `keys` open this vault (a wrong master key fails here, clearly, before any tool
/// call). Returns whether the vault already keyed its audit chain.
async fn check_key(store: &dyn MetaStore, keys: &Keyring) -> Result<bool, VaultError> {
    match store.get_meta("key_check").await? {
        Some(text) => {
            let plain = crypto::open(keys, "key_check", &text)?;
            match &plain[..] {
                KEY_CHECK_V1 => Ok(false),
                KEY_CHECK_V2 => Ok(true),
                _ => Err(CryptoError::Tampered {
                    record: "key_check".into(),
                }
                .into()),
            }
        }
        None => {
            let s = crypto::seal(keys, "key_check", KEY_CHECK_V1);
            store.insert_meta_if_absent("key_check", &s.text).await?;
            Box::pin(check_key(store, keys)).await
        }
    }
}

/// The audit chain key, created (keyed from the next record) the first time a vault opens.
async fn load_chain_key(
    store: &dyn MetaStore,
    audit: &dyn AuditStore,
    keys: &Keyring,
) -> Result<ChainKey, VaultError> {
    let keyed = check_key(store, keys).await?;
    if let Some(text) = store.get_meta("audit_chain").await? {
        let plain = crypto::open(keys, "audit_chain", &text)?;
        let chain = ChainKey::from_sealing_bytes(&plain).ok_or_else(|| CryptoError::Malformed {
            record: "audit_chain".into(),
            why: "not a chain key".into(),
        })?;
        if !keyed {
            let s = crypto::seal(keys, "key_check", KEY_CHECK_V2);
            store.put_meta("key_check", &s.text).await?;
        }
        return Ok(chain);
    }
    if keyed {
        return Err(VaultError::AuditUnavailable(
            "the audit chain key is missing from the database although this vault keyed its chain: \
             the database was tampered with or partly restored; restore it from a backup"
                .into(),
        ));
    }
    let newest = audit
        .query_audit(&crate::store::AuditFilter {
            newest_first: true,
            after_seq: Some(0),
            limit: Some(1),
            ..Default::default()
        })
        .await?;
    let next = match newest.first() {
        Some(r) => r.seq + 1,
        None => {
            crate::store::Anchor::parse(store.get_meta("audit_anchor").await?.as_deref()).seq + 1
        }
    };
    let chain = ChainKey::generate(next);
    let sealed = crypto::seal(keys, "audit_chain", &chain.to_sealing_bytes());
    // Several processes may open a new vault at once: the first key stored wins.
    store
        .insert_meta_if_absent("audit_chain", &sealed.text)
        .await?;
    Box::pin(load_chain_key(store, audit, keys)).await
}

impl Vault {
    /// Open the vault over a store with a keyring. Verifies that the keyring opens this vault
    /// (a wrong master key fails here, clearly, before any tool call).
    pub async fn open(
        stores: Stores,
        keys: Keyring,
        catalog: Catalog,
        settings: VaultSettings,
    ) -> Result<Self, VaultError> {
        let chain = load_chain_key(stores.meta.as_ref(), stores.audit.as_ref(), &keys).await?;
        // Rows from before the SDK protocol get the UUIDs it names them by (once; cheap after).
        stores.grants.backfill_sdk_ids().await?;
        let outbound = outbound::Outbound::new(settings.request.allow_http_loopback)?;
        let changes = stores.grants.changes();
        let vault = Vault {
            inner: Arc::new(Inner {
                audit: AuditSink::start(
                    stores.audit.clone(),
                    chain.clone(),
                    settings.audit_checkpoint.clone(),
                ),
                chain,
                cache: cache::Cache::new(settings.grant_cache_ttl),
                policy: policy::PolicySet::from_config(settings.policy.as_ref()),
                stores,
                keys: RwLock::new(keys),
                catalog,
                settings,
                outbound,
                refresh_locks: Mutex::new(HashMap::new()),
                instance: new_id("inst"),
            }),
        };
        if let Some(rx) = changes {
            vault.follow_changes(rx);
        }
        Ok(vault)
    }

    /// Forget cached grants other instances change (PostgreSQL's change feed).
    fn follow_changes(&self, mut rx: tokio::sync::broadcast::Receiver<crate::store::GrantChange>) {
        use crate::store::GrantChange;
        use tokio::sync::broadcast::error::RecvError;
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let msg = rx.recv().await;
                let Some(inner) = inner.upgrade() else { return };
                match msg {
                    Ok(GrantChange::Grant(id)) => inner.cache.invalidate(&id),
                    Ok(GrantChange::All) | Err(RecvError::Lagged(_)) => inner.cache.clear(),
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    pub fn settings(&self) -> &VaultSettings {
        &self.inner.settings
    }

    /// The outbound door, for components above the vault that send a secret of their own (the
    /// hosted sign-in's client secret).
    pub fn outbound(&self) -> &outbound::Outbound {
        &self.inner.outbound
    }

    pub fn policy(&self) -> &policy::PolicySet {
        &self.inner.policy
    }

    /// The OAuth authorization server's own aggregate (clients, codes, tokens): the identity
    /// layer's narrow way into storage.
    pub fn oauth_server_store(&self) -> Arc<dyn crate::store::OAuthServerStore> {
        self.inner.stores.oauth.clone()
    }

    /// Key ids still used by sealed records (key pruning).
    pub async fn keys_in_use(&self) -> Result<std::collections::BTreeSet<String>, VaultError> {
        Ok(self
            .inner
            .stores
            .meta
            .list_sealed()
            .await?
            .into_iter()
            .map(|s| s.sealed.key_id)
            .collect())
    }

    pub fn keyring(&self) -> Keyring {
        self.inner.keys.read().expect("keyring lock").clone()
    }

    /// Re-wrap every sealed record under `new` (which becomes current). Returns how many records
    /// were re-wrapped. Retired keys stay in the returned keyring until the caller drops them.
    pub async fn rotate_key(&self, new: crypto::MasterKey) -> Result<(Keyring, usize), VaultError> {
        let rotated = self.keyring().rotated(new);
        let items = self.inner.stores.meta.list_sealed().await?;
        let mut out = Vec::with_capacity(items.len());
        for mut it in items {
            it.sealed = crypto::rewrap(&rotated, &it.id, &it.sealed.text)?;
            out.push(it);
        }
        self.inner.stores.meta.replace_sealed(&out).await?;
        self.inner.cache.clear();
        *self.inner.keys.write().expect("keyring lock") = rotated.clone();
        Ok((rotated, out.len()))
    }

    /// A key for another component (cookie signing), derived from the current master key.
    pub fn derived_key(&self, label: &str) -> zeroize::Zeroizing<[u8; 32]> {
        self.inner
            .keys
            .read()
            .expect("keyring lock")
            .current()
            .derive(label)
    }

    /// Use up a single-use token (a sealed MCP `requestState`, say): true the first time, false
    /// on every later try, on every instance that shares the database. Remembered `ttl_secs`.
    pub async fn use_once(
        &self,
        scope: &str,
        token: &str,
        ttl_secs: i64,
    ) -> Result<bool, VaultError> {
        let t = now();
        Ok(self
            .inner
            .stores
            .counters
            .take_slot(&format!("{scope}:{token}"), 0, 1, t + ttl_secs)
            .await?
            .is_some())
    }

    /// Audit something the layers above refused before it reached the vault (a forged or replayed
    /// MCP `requestState`, say): the caller, the event, the outcome and what was wrong.
    pub async fn audit_refusal(
        &self,
        caller: &Caller,
        event: &str,
        outcome: crate::model::AuditOutcome,
        detail: String,
    ) -> Result<(), VaultError> {
        let mut e = audit_entry(caller, event);
        e.outcome = outcome;
        e.detail = Some(detail);
        self.inner.audit.write(e).await
    }

    /// Wait until every audit record written so far is committed and in the checkpoint.
    pub async fn flush_audit(&self) -> Result<(), VaultError> {
        self.inner.audit.flush().await
    }

    /// At exit: flush the audit log, then close the store's connections.
    pub async fn close(&self) -> Result<(), VaultError> {
        let flushed = self.flush_audit().await;
        self.inner.stores.meta.close().await;
        flushed
    }

    /// Write an audit entry for a vault event that is not a tool call (CLI actions).
    pub async fn audit_event(&self, entry: crate::store::AuditEntry) -> Result<(), VaultError> {
        self.inner.audit.write(entry).await
    }
}

impl Inner {
    pub fn seal(&self, record: &str, plain: &[u8]) -> Sealed {
        crypto::seal(&self.keys.read().expect("keyring lock"), record, plain)
    }

    /// Open a record; on an unknown key id, re-read the key file once (another process may have
    /// rotated the key) before failing.
    pub fn open(
        &self,
        record: &str,
        sealed: &Sealed,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, VaultError> {
        let first = crypto::open(
            &self.keys.read().expect("keyring lock"),
            record,
            &sealed.text,
        );
        match first {
            Err(CryptoError::UnknownKey { .. }) => {
                let reloaded = self.keys.read().expect("keyring lock").reload()?;
                if let Some(k) = reloaded {
                    let r = crypto::open(&k, record, &sealed.text);
                    if r.is_ok() {
                        *self.keys.write().expect("keyring lock") = k;
                    }
                    return r.map_err(Into::into);
                }
                first.map_err(Into::into)
            }
            other => other.map_err(Into::into),
        }
    }
}

/// A fresh audit entry with its own event id.
pub fn audit_entry(caller: &Caller, event: &str) -> crate::store::AuditEntry {
    audit::entry(caller, event, &new_id("evt"))
}

/// A random id with a readable prefix, e.g. `grt_4f9k…`.
pub fn new_id(prefix: &str) -> String {
    let s: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect();
    format!("{prefix}_{s}")
}

/// A random URL-safe secret token (32 bytes).
pub fn new_token() -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    URL_SAFE_NO_PAD.encode(b)
}

pub fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(s.as_bytes()))
}

pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// RFC 3339 UTC text for unix seconds.
pub fn rfc3339(ts: i64) -> String {
    jiff::Timestamp::from_second(ts)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ts.to_string())
}

/// RFC 3339 UTC text for unix milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}
