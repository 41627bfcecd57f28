//! The `vault-mcp` command line: argument definitions and dispatch. Commands other than
//! `serve` print results on stdout; everything diagnostic goes to stderr.

mod agents;
mod approvals;
mod audit;
mod connect;
mod doctor;
mod grants;
mod key;
mod keys;
mod open;
mod policy;
mod providers;
mod secret;
mod serve;
mod tools;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use open::{Opened, init_logging, open_vault, open_vault_with};

#[derive(Parser, Debug)]
#[command(
    name = "vault-mcp",
    version,
    about = "MCP server that lets AI agents call APIs as you, without ever seeing a credential",
    long_about = "vault-mcp is an MCP server: agents call `vault_request`, the vault injects your stored \
credential, calls the API and returns the response. Run `vault-mcp serve` from your MCP client \
(Claude Desktop, Claude Code, Cursor, VS Code). Configuration: a TOML file in the platform config \
directory (see `vault-mcp doctor`), VAULT_MCP_* environment variables, and these flags."
)]
pub struct Cli {
    /// Config file (default: <platform config dir>/config.toml; env VAULT_MCP_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory holding the database and key file (env VAULT_MCP_DATA_DIR).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite://PATH (default, in the data directory) or postgres://... (env VAULT_MCP_DATABASE_URL).
    #[arg(long, global = true, value_name = "URL")]
    pub database: Option<String>,
    /// Log filter for stderr, e.g. info, debug, vault_mcp=trace (env VAULT_MCP_LOG).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,
    /// Act as this principal instead of the local user (operators of hosted deployments).
    #[arg(
        long = "as-principal",
        global = true,
        value_name = "ID",
        hide_short_help = true
    )]
    pub as_principal: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the MCP server (stdio by default; --http for hosted mode).
    Serve(serve::ServeArgs),
    /// Store and manage API keys (managed secrets).
    #[command(subcommand)]
    Secret(secret::SecretCmd),
    /// List and revoke grants (connected accounts and stored keys).
    #[command(subcommand)]
    Grants(grants::GrantsCmd),
    /// Managed agents: their own API keys, access sets and delegations.
    #[command(subcommand)]
    Agents(agents::AgentsCmd),
    /// Application API keys for the Alter SDK protocol (/sdk/*).
    #[command(subcommand)]
    Keys(keys::KeysCmd),
    /// Show the provider catalog.
    #[command(subcommand)]
    Providers(providers::ProvidersCmd),
    /// Connect an account through OAuth in your browser (or with a device code).
    Connect(connect::ConnectArgs),
    /// Check configuration, master key, database and providers at a glance.
    Doctor(doctor::DoctorArgs),
    /// Master key: generate, rotate, show its id.
    #[command(subcommand)]
    Key(key::KeyCmd),
    /// The audit trail: tail, search, export, verify, prune.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Policies: show the rules in effect, check a request against them.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Calls a policy held for a person's approval.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCmd),
    /// Tools the server offers, including tool packs.
    #[command(subcommand)]
    Tools(tools::ToolsCmd),
    /// Print the table of error codes with what each means and what to do.
    Errors,
}

/// Parse arguments and run; returns the process exit code.
pub async fn run() -> i32 {
    let cli = Cli::parse();
    let is_serve = matches!(cli.command, None | Some(Command::Serve(_)));
    let overrides = crate::config::Overrides {
        config_file: cli.config.clone(),
        data_dir: cli.data_dir.clone(),
        database: cli.database.clone(),
        log: cli.log.clone(),
    };
    let config = match crate::config::Config::load(&overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    init_logging(&config.log, is_serve);
    if !is_serve {
        // `vault-mcp grants list | head` should end quietly, not panic on a closed pipe.
        #[cfg(unix)]
        // SAFETY: restoring the default disposition of SIGPIPE before any other thread writes.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        None => {
            serve::run(
                &config,
                serve::ServeArgs::default(),
                cli.as_principal.as_deref(),
            )
            .await
        }
        Some(Command::Serve(a)) => serve::run(&config, a, cli.as_principal.as_deref()).await,
        Some(Command::Secret(c)) => secret::run(&config, c, cli.as_principal.as_deref()).await,
        Some(Command::Grants(c)) => {
            grants::run_grants(&config, c, cli.as_principal.as_deref()).await
        }
        Some(Command::Providers(c)) => providers::run(&config, c).await,
        Some(Command::Agents(c)) => agents::run(&config, c).await,
        Some(Command::Keys(c)) => keys::run(&config, c).await,
        Some(Command::Connect(a)) => connect::run(&config, a, cli.as_principal.as_deref()).await,
        Some(Command::Doctor(a)) => doctor::run(&config, a).await,
        Some(Command::Key(c)) => key::run(&config, c).await,
        Some(Command::Audit(c)) => audit::run(&config, c).await,
        Some(Command::Policy(c)) => policy::run(&config, c).await,
        Some(Command::Approvals(c)) => {
            approvals::run(&config, c, cli.as_principal.as_deref()).await
        }
        Some(Command::Tools(c)) => tools::run(&config, c).await,
        Some(Command::Errors) => {
            print_errors();
            Ok(())
        }
    };
    open::flush_opened().await;
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn print_errors() {
    println!("{:<24} MEANING / WHAT TO DO", "CODE");
    for (code, meaning, action) in crate::vault::ERROR_CODES {
        println!("{code:<24} {meaning}\n{:<24} → {action}", "");
    }
}

/// A simple aligned table for CLI listings.
pub(crate) fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}
