//! The `vault-mcp` binary: everything lives in the library; this only runs the CLI.

/// mimalloc: the request path allocates many small, short-lived buffers across threads (JSON,
/// headers, bodies); glibc's allocator spent about 15% of a loaded server's CPU on them.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let code = vault_mcp::cli::run().await;
    std::process::exit(code);
}
