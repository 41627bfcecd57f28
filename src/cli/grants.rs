//! `vault-mcp grants`.

use clap::Subcommand;

use crate::{config::Config, vault::Caller};

#[derive(Subcommand, Debug)]
pub enum GrantsCmd {
    /// List your grants.
    List {
        /// Only this provider.
        #[arg(long)]
        provider: Option<String>,
        /// Every principal's grants (operators).
        #[arg(long)]
        all: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a grant: revoke it at the provider when supported (RFC 7009), then delete it.
    Revoke {
        /// Grant id (see `grants list`).
        grant_id: String,
        /// Only delete it here; do not ask the provider to revoke the token.
        #[arg(long)]
        local_only: bool,
    },
    /// Lend a grant to an agent (operators: any grant). The credential stays in the vault.
    Delegate {
        grant_id: String,
        /// Agent name or id.
        agent: String,
    },
    /// Take a delegation back. Doing it twice is harmless; the grant stays active.
    Undelegate {
        grant_id: String,
        /// Agent name or id.
        agent: String,
    },
}

pub async fn run_grants(
    config: &Config,
    cmd: GrantsCmd,
    as_principal: Option<&str>,
) -> anyhow::Result<()> {
    let opened = super::open_vault(config).await?;
    let caller = Caller::new(super::open::principal(config, as_principal), "cli:grants");
    match cmd {
        GrantsCmd::List {
            provider,
            all,
            json,
        } => {
            let rows: Vec<(String, crate::vault::GrantView)> = if all {
                opened
                    .vault
                    .list_all_grants()
                    .await?
                    .into_iter()
                    .filter(|(_, g)| provider.as_ref().is_none_or(|p| &g.provider == p))
                    .collect()
            } else {
                opened
                    .vault
                    .list_grants(&caller, provider.as_deref())
                    .await?
                    .into_iter()
                    .map(|g| (caller.principal.id().to_owned(), g))
                    .collect()
            };
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(p, g)| {
                        let mut o = serde_json::to_value(g).expect("serialize");
                        o["principal"] = serde_json::Value::String(p.clone());
                        o
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            if rows.is_empty() {
                println!(
                    "No grants yet. Connect one with `vault-mcp connect <provider>` or store a key with `vault-mcp secret add <provider>`."
                );
                return Ok(());
            }
            let mut headers = vec![
                "ID",
                "PROVIDER",
                "ACCOUNT",
                "KIND",
                "STATUS",
                "SCOPES",
                "LAST USED",
                "DELEGATED TO",
            ];
            if all {
                headers.insert(0, "PRINCIPAL");
            }
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|(p, g)| {
                    let mut status = g.status.clone();
                    if g.scope_mismatch {
                        status.push_str(" (scope_mismatch)");
                    }
                    let mut r = vec![
                        g.id.clone(),
                        g.provider.clone(),
                        g.account.clone(),
                        g.kind.to_string(),
                        status,
                        g.scopes.join(" "),
                        g.last_used_at.clone().unwrap_or_else(|| "-".into()),
                        if g.delegated_to.is_empty() {
                            "-".into()
                        } else {
                            g.delegated_to.join(",")
                        },
                    ];
                    if all {
                        r.insert(
                            0,
                            match g.principal_type {
                                crate::model::PrincipalKind::App => "app".into(),
                                k => format!("{k}:{p}"),
                            },
                        );
                    }
                    r
                })
                .collect();
            super::print_table(&headers, &table);
            Ok(())
        }
        GrantsCmd::Revoke {
            grant_id,
            local_only,
        } => {
            let r = opened
                .vault
                .revoke_grant(&caller, &grant_id, !local_only)
                .await?;
            let remote = match r.provider_revocation.as_str() {
                "revoked" => format!("revoked at {}", r.provider),
                "not_supported" => format!(
                    "{} has no revocation endpoint; revoke the app in its settings if needed",
                    r.provider
                ),
                "not_requested" => "not revoked at the provider".into(),
                other => format!("provider revocation {other}"),
            };
            println!("Revoked grant {} ({remote}).", r.grant_id);
            Ok(())
        }
        GrantsCmd::Delegate { grant_id, agent } => {
            let changed = opened
                .vault
                .delegate_grant(&caller, &grant_id, &agent, true)
                .await?;
            println!(
                "{}",
                if changed {
                    format!("Agent {agent} may now use grant {grant_id}.")
                } else {
                    format!("Grant {grant_id} was already delegated to agent {agent}.")
                }
            );
            Ok(())
        }
        GrantsCmd::Undelegate { grant_id, agent } => {
            let changed = opened
                .vault
                .undelegate_grant(&caller, &grant_id, &agent, true)
                .await?;
            println!(
                "{}",
                if changed {
                    format!(
                        "Agent {agent} can no longer use grant {grant_id}; the grant stays active."
                    )
                } else {
                    format!("Grant {grant_id} was not delegated to agent {agent}; nothing to do.")
                }
            );
            Ok(())
        }
    }
}
