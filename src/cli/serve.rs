//! `vault-mcp serve`: the MCP server, on stdio (default) or over HTTP (`--http`).

use clap::Args;

use crate::config::Config;

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Serve Streamable HTTP (and legacy SSE) on this address instead of stdio, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Offer only tools that cannot change anything at a provider.
    #[arg(long)]
    pub read_only: bool,
}

/// Apply `[audit] retention_days` now and every hour while serving.
fn spawn_retention(vault: &crate::vault::Vault, days: Option<u32>) {
    let Some(days) = days else { return };
    let vault = vault.clone();
    tokio::spawn(async move {
        loop {
            match vault.prune_audit(days).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, days, "pruned old audit records"),
                Err(e) => tracing::error!(error = %e, "audit retention failed"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
    });
}

pub async fn run(
    config: &Config,
    args: ServeArgs,
    as_principal: Option<&str>,
) -> anyhow::Result<()> {
    let loaded = crate::mcp::packs::load(
        Some(&config.tools.dir),
        &config.tools.disabled,
        args.read_only,
    );
    for e in &loaded.errors {
        tracing::warn!(error = %e, "tool pack not loaded (the other tools are available)");
    }
    let tools = crate::mcp::ToolSet::with_packs(args.read_only, &loaded);
    if let Some(addr) = &args.http {
        let addr: std::net::SocketAddr = addr.parse().map_err(|_| {
            anyhow::anyhow!("--http `{addr}` is not host:port, e.g. 127.0.0.1:8080 or 0.0.0.0:8080")
        })?;
        let mut config = config.clone();
        if !config.connect.public_url_explicit {
            if addr.ip().is_unspecified() {
                anyhow::bail!(
                    "serving on {addr} needs the URL clients use to reach it: set [connect] public_url or VAULT_MCP_PUBLIC_URL (e.g. https://vault.example.com/)"
                );
            }
            config.connect.public_url = url::Url::parse(&format!("http://{addr}/"))?;
        }
        let mut settings = crate::vault::VaultSettings::from_config(&config);
        // Approval pages of a hosted vault answer only to the user's signed-in session, so the
        // link may travel through the model; with the `local` identity it may not.
        settings.approvals.links_in_results = config
            .http
            .identity_for(addr)
            .map_err(|e| anyhow::anyhow!(e))?
            != crate::config::IdentityMode::Local;
        settings.approvals.open_browser = false;
        let opened = super::open_vault_with(&config, settings).await?;
        spawn_retention(&opened.vault, config.audit_retention_days);
        return crate::transport::http::serve(&config, opened.vault, tools.into_arc(), addr).await;
    }
    let opened = super::open_vault(config).await?;
    spawn_retention(&opened.vault, config.audit_retention_days);
    // An agent runs the stdio server with its own key: the whole session acts as the agent.
    let principal = match crate::config::env_var("VAULT_MCP_AGENT_KEY").filter(|k| !k.is_empty()) {
        Some(key) => {
            if as_principal.is_some() {
                anyhow::bail!("give either VAULT_MCP_AGENT_KEY or --as, not both");
            }
            opened
                .vault
                .authenticate_agent_key(key.trim())
                .await
                .map_err(|e| anyhow::anyhow!("VAULT_MCP_AGENT_KEY: {e}"))?
        }
        None => super::open::principal(config, as_principal),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        database = %crate::config::redact_url(&config.database),
        principal = principal.id(),
        "vault-mcp serving MCP on stdio"
    );
    crate::transport::stdio::serve(opened.vault, principal, tools.into_arc()).await
}
