//! stdio: MCP over stdin/stdout for local clients (Claude Desktop, Claude Code, Cursor, VS Code).
//! stdout carries only JSON-RPC; logs go to stderr. The Connect pages are served on a loopback
//! listener next to it so OAuth can complete in the user's browser.

use std::{net::SocketAddr, sync::Arc};

use rmcp::ServiceExt;

use crate::{
    mcp::{IdentitySource, ToolSet, VaultMcp},
    vault::{Principal, Vault},
};

/// Start the Connect listener. When the port is taken (typically by another vault-mcp serving
/// the same data directory for another client), carry on: sessions live in the shared
/// database, so that process's pages complete our links too.
pub async fn spawn_connect_listener(
    vault: Vault,
    addr: SocketAddr,
) -> Option<tokio::task::JoinHandle<()>> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            tracing::info!(%addr, "Connect pages listening");
            let app = crate::web::router(vault);
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "Connect listener stopped");
                }
            }))
        }
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot listen for Connect pages; if another vault-mcp uses this data directory its listener serves them, otherwise set [connect] listen");
            None
        }
    }
}

/// Serve MCP on stdio until the client disconnects.
pub async fn serve(vault: Vault, principal: Principal, tools: Arc<ToolSet>) -> anyhow::Result<()> {
    let listener = spawn_connect_listener(vault.clone(), vault.settings().connect.listen).await;
    let server = VaultMcp::new(vault, IdentitySource::Fixed(principal), tools);
    let running = server
        .serve(super::stdio_frames::framed(
            tokio::io::stdin(),
            tokio::io::stdout(),
        ))
        .await?;
    let reason = running.waiting().await?;
    tracing::info!(?reason, "stdio client disconnected");
    if let Some(l) = listener {
        l.abort();
    }
    Ok(())
}
