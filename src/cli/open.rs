//! Shared start-up: logging to stderr, and opening the store, key and vault from the config.

use anyhow::{Context, bail};

use crate::{
    config::Config,
    crypto::{KeySource, Keyring},
    providers::Catalog,
    store::{MetaStore, StoreOptions, Stores},
    vault::{Principal, Vault, VaultSettings},
};

/// Log to stderr only (stdout is the stdio transport). Libraries that could print request
/// details at debug/trace level are capped at info unless named explicitly.
pub fn init_logging(filter: &str, serving: bool) {
    let base = if filter.is_empty() {
        if serving { "info" } else { "warn" }
    } else {
        filter
    };
    let mut directives = base.to_owned();
    for lib in [
        "hyper",
        "hyper_util",
        "reqwest",
        "h2",
        "rustls",
        "aws_sigv4",
        "tower_http",
        "sqlx",
        "oauth2",
    ] {
        if !base.contains(lib) {
            directives.push_str(&format!(",{lib}=info"));
        }
    }
    let env_filter = tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("warning: log filter `{filter}` is invalid ({e}); using info");
        tracing_subscriber::EnvFilter::new("info")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

pub struct Opened {
    pub vault: Vault,
    pub keys_source: KeySource,
}

/// The database `--database` / `VAULT_MCP_DATABASE_URL` names: SQLite (default) or PostgreSQL.
pub async fn open_store(config: &Config) -> anyhow::Result<Stores> {
    Ok(crate::store::open(
        &config.database,
        &StoreOptions {
            audit_fsync: config.audit_fsync,
            postgres: config.database_pool.clone(),
        },
    )
    .await?)
}

/// The master key: `VAULT_MCP_MASTER_KEY`, else the key file — created on first run, but only
/// for a vault that has never sealed anything (a missing key file for an existing vault is an
/// error, never a silent new key).
pub async fn load_keys(config: &Config, store: &dyn MetaStore) -> anyhow::Result<Keyring> {
    if let Some(v) = crate::config::env_var("VAULT_MCP_MASTER_KEY") {
        return Ok(Keyring::from_env_value(&v)?);
    }
    let path = &config.master_key_file;
    if path.exists() {
        return Ok(Keyring::from_file(path)?);
    }
    if store.get_meta("key_check").await?.is_some() {
        bail!(
            "the vault at {} was created with a master key, but the key file {} is missing; restore it, or set VAULT_MCP_MASTER_KEY",
            store.location(),
            path.display()
        );
    }
    let ring = Keyring::create_file(path)?;
    tracing::info!(path = %path.display(), key = ring.current().id(), "created a new master key file");
    Ok(ring)
}

pub async fn open_vault(config: &Config) -> anyhow::Result<Opened> {
    open_vault_with(config, VaultSettings::from_config(config)).await
}

/// `open_vault` with settings the caller adjusted (hosted serving).
pub async fn open_vault_with(config: &Config, settings: VaultSettings) -> anyhow::Result<Opened> {
    let catalog =
        Catalog::load(&config.providers, &crate::config::env_var).context("provider catalog")?;
    let store = open_store(config).await?;
    let keys = load_keys(config, store.meta.as_ref()).await?;
    let keys_source = keys.source().clone();
    let vault = Vault::open(store, keys, catalog, settings).await?;
    OPENED.lock().expect("opened vaults").push(vault.clone());
    Ok(Opened { vault, keys_source })
}

/// Every vault this process opened, so the command's end can flush their audit writers.
static OPENED: std::sync::Mutex<Vec<Vault>> = std::sync::Mutex::new(Vec::new());

/// Before the process exits: every audit record written is committed and signed into the
/// checkpoint (callers get their answers before the checkpoint is written, so a command that
/// ends right after its last record must wait for it here). Then the store's connections are
/// closed, which lets SQLite fold its write-ahead log into the database file.
pub async fn flush_opened() {
    let vaults = std::mem::take(&mut *OPENED.lock().expect("opened vaults"));
    for v in vaults {
        if let Err(e) = v.close().await {
            tracing::warn!(error = %e, "could not flush the audit log before exiting");
        }
    }
}

pub fn principal(config: &Config, as_principal: Option<&str>) -> Principal {
    match as_principal {
        Some(p) => Principal::new(p, p),
        None => Principal::local(&config.local_user),
    }
}
