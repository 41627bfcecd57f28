//! The `vault-mcp` binary: everything lives in the library; this only runs the CLI.

#[tokio::main]
async fn main() {
    let code = vault_mcp::cli::run().await;
    std::process::exit(code);
}
