//! `vault-mcp serve`: the MCP server.

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

pub async fn run(
    config: &Config,
    args: ServeArgs,
    as_principal: Option<&str>,
) -> anyhow::Result<()> {
    let opened = super::open_vault(config).await?;
    let tools = crate::mcp::core_tools();
    if let Some(addr) = args.http {
        anyhow::bail!(
            "--http {addr}: hosted mode is not available in this build yet; run without --http for stdio"
        );
    }
    let principal = super::open::principal(config, as_principal);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        database = %crate::config::redact_url(&config.database),
        principal = principal.id(),
        "vault-mcp serving MCP on stdio"
    );
    let _ = args.read_only;
    crate::transport::stdio::serve(opened.vault, principal, tools.into_arc()).await
}
