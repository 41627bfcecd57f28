//! `vault-mcp approvals`: see and decide calls a policy held for approval.

use clap::Subcommand;

use crate::{config::Config, vault::Caller};

#[derive(Subcommand, Debug)]
pub enum ApprovalsCmd {
    /// Pending approvals (yours; --all for every user).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Approve one call: the agent's retry of exactly that call then goes through once.
    Approve { id: String },
    /// Deny a pending approval.
    Deny { id: String },
}

pub async fn run(
    config: &Config,
    cmd: ApprovalsCmd,
    as_principal: Option<&str>,
) -> anyhow::Result<()> {
    let vault = super::open_vault(config).await?.vault;
    let caller = Caller::new(
        super::open::principal(config, as_principal),
        "cli:approvals",
    );
    match cmd {
        ApprovalsCmd::List { all, json } => {
            let list = vault
                .list_approvals((!all).then_some(&caller), true)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("No pending approvals.");
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|a| {
                        vec![
                            a.id.clone(),
                            a.status.clone(),
                            format!("{} {}{}", a.method, a.host, a.path),
                            a.rule.clone(),
                            a.reason.clone().unwrap_or_else(|| "-".into()),
                            a.expires_at.clone(),
                        ]
                    })
                    .collect();
                super::print_table(
                    &["ID", "STATUS", "REQUEST", "RULE", "REASON", "EXPIRES"],
                    &rows,
                );
            }
            Ok(())
        }
        ApprovalsCmd::Approve { id } => {
            let a = vault.decide_approval(&caller, &id, true).await?;
            println!(
                "Approved {}: {} {}{} may go through once; ask your agent to retry.",
                a.id, a.method, a.host, a.path
            );
            Ok(())
        }
        ApprovalsCmd::Deny { id } => {
            let a = vault.decide_approval(&caller, &id, false).await?;
            println!("Denied {}.", a.id);
            Ok(())
        }
    }
}
