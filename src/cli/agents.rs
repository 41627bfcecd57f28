//! `vault-mcp agents`: managed agents with their own API keys, access sets and delegations.
//! The key is printed once, on stdout (so a script can capture it), with a warning on stderr.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::{Args, Subcommand};

use crate::{
    config::Config,
    model::{AgentStatus, GrantId},
    secret::Expose,
    store::AgentAccess,
    vault::{AgentUpdate, AgentView, IssuedKey, NewAgent},
};

#[derive(Subcommand, Debug)]
pub enum AgentsCmd {
    /// Create an agent and print its API key (shown once).
    Create(CreateArgs),
    /// List agents.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one agent: key prefix, access set, delegations, last use.
    Show {
        /// Agent name or id.
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Change an agent's access set, description, JWT mapping or status.
    Update(UpdateArgs),
    /// Issue a new API key; the old one stops working (after --grace).
    RotateKey {
        name: String,
        /// Keep the old key working this long (e.g. 1h, 7d; at most 30d).
        #[arg(long, value_parser = crate::model::parse_duration)]
        grace: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// Delete an agent and its delegations.
    Delete {
        name: String,
        /// Also delete the grants the agent owns (otherwise such an agent is not deleted).
        #[arg(long)]
        delete_grants: bool,
    },
}

/// `provider=scope,scope`
fn parse_scopes(s: &str) -> Result<(String, Vec<String>), String> {
    let (p, list) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: write PROVIDER=SCOPE,SCOPE (e.g. github=read:user)"))?;
    let scopes: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect();
    Ok((p.trim().to_owned(), scopes))
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// A name such as ci-bot (lower-case letters, digits, `-`, `_`).
    pub name: String,
    #[arg(long)]
    pub description: Option<String>,
    /// Makes a retry safe: the same key and name return the agent created the first time
    /// (without a new API key).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Accept client-credentials JWTs from the IdP whose `sub` is this as this agent.
    #[arg(long)]
    pub jwt_subject: Option<String>,
    /// A grant the agent may use (repeatable).
    #[arg(long = "grant", value_name = "GRANT_ID")]
    pub grants: Vec<String>,
    /// The only scopes the agent may use on a provider: PROVIDER=SCOPE,SCOPE (repeatable).
    #[arg(long = "scopes", value_name = "PROVIDER=SCOPES", value_parser = parse_scopes)]
    pub scopes: Vec<(String, Vec<String>)>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Agent name or id.
    pub name: String,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long, conflicts_with = "no_jwt_subject")]
    pub jwt_subject: Option<String>,
    /// Remove the client-credentials mapping.
    #[arg(long)]
    pub no_jwt_subject: bool,
    /// Add a grant to the access set (repeatable).
    #[arg(long = "grant", value_name = "GRANT_ID")]
    pub grants: Vec<String>,
    /// Remove a grant from the access set (repeatable).
    #[arg(long = "remove-grant", value_name = "GRANT_ID")]
    pub remove_grants: Vec<String>,
    /// Set a provider's scope allowlist: PROVIDER=SCOPE,SCOPE (repeatable).
    #[arg(long = "scopes", value_name = "PROVIDER=SCOPES", value_parser = parse_scopes)]
    pub scopes: Vec<(String, Vec<String>)>,
    /// Lift a provider's scope allowlist (repeatable).
    #[arg(long = "clear-scopes", value_name = "PROVIDER")]
    pub clear_scopes: Vec<String>,
    /// Refuse every call with the agent's keys and JWTs.
    #[arg(long, conflicts_with = "enable")]
    pub disable: bool,
    #[arg(long)]
    pub enable: bool,
    #[arg(long)]
    pub json: bool,
}

fn print_view(v: &AgentView, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    println!("agent {} ({})", v.name, v.id);
    if let Some(d) = &v.description {
        println!("  description: {d}");
    }
    println!("  status:      {}", v.status);
    println!(
        "  key:         {}",
        v.key_prefix.as_deref().unwrap_or("(none)")
    );
    if let (Some(p), Some(t)) = (&v.previous_key_prefix, &v.previous_key_expires_at) {
        println!("  old key:     {p} (accepted until {t})");
    }
    if let Some(s) = &v.jwt_subject {
        println!("  jwt subject: {s}");
    }
    println!(
        "  grants:      {}",
        if v.access.grants.is_empty() {
            "(none in the access set)".to_owned()
        } else {
            v.access
                .grants
                .iter()
                .map(|g| g.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    for (p, s) in &v.access.scopes {
        println!("  scopes:      {p} = {}", s.join(", "));
    }
    for d in &v.delegations {
        println!(
            "  delegated:   {} by {} at {}",
            d.grant_id, d.delegated_by, d.created_at
        );
    }
    println!(
        "  last used:   {}",
        v.last_used_at.as_deref().unwrap_or("never")
    );
    Ok(())
}

fn print_key(issued: &IssuedKey, json: bool) -> anyhow::Result<()> {
    if json {
        let mut o = serde_json::to_value(&issued.agent)?;
        o["created"] = issued.created.into();
        o["api_key"] = match &issued.api_key {
            Some(k) => k.expose_secret().into(),
            None => serde_json::Value::Null,
        };
        println!("{}", serde_json::to_string_pretty(&o)?);
        return Ok(());
    }
    match &issued.api_key {
        Some(k) => {
            eprintln!(
                "agent {} ({}): its API key follows, shown this once; store it in your secret manager now",
                issued.agent.name, issued.agent.id
            );
            println!("{}", k.expose_secret());
        }
        None => eprintln!(
            "agent {} ({}) exists already (same idempotency key); its key was shown when it was created. Issue a new one with `vault-mcp agents rotate-key {}`",
            issued.agent.name, issued.agent.id, issued.agent.name
        ),
    }
    Ok(())
}

pub async fn run(config: &Config, cmd: AgentsCmd) -> anyhow::Result<()> {
    let opened = super::open_vault(config).await?;
    let vault = opened.vault;
    match cmd {
        AgentsCmd::Create(a) => {
            let issued = vault
                .create_agent(NewAgent {
                    name: a.name,
                    description: a.description,
                    idempotency_key: a.idempotency_key,
                    jwt_subject: a.jwt_subject,
                    access: AgentAccess {
                        grants: a.grants.into_iter().map(GrantId::from).collect(),
                        scopes: a.scopes.into_iter().collect::<BTreeMap<_, _>>(),
                    },
                })
                .await?;
            print_key(&issued, a.json)
        }
        AgentsCmd::List { json } => {
            let agents = vault.list_agents().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&agents)?);
                return Ok(());
            }
            if agents.is_empty() {
                println!("No agents yet. Create one with `vault-mcp agents create NAME`.");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = agents
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        a.id.clone(),
                        a.status.to_string(),
                        a.key_prefix.clone().unwrap_or_else(|| "-".into()),
                        a.access.grants.len().to_string(),
                        a.delegations.len().to_string(),
                        a.last_used_at.clone().unwrap_or_else(|| "never".into()),
                    ]
                })
                .collect();
            super::print_table(
                &[
                    "NAME",
                    "ID",
                    "STATUS",
                    "KEY",
                    "ACCESS SET",
                    "DELEGATED",
                    "LAST USED",
                ],
                &rows,
            );
            Ok(())
        }
        AgentsCmd::Show { name, json } => print_view(&vault.show_agent(&name).await?, json),
        AgentsCmd::Update(a) => {
            if a.jwt_subject.is_none()
                && !a.no_jwt_subject
                && a.description.is_none()
                && a.grants.is_empty()
                && a.remove_grants.is_empty()
                && a.scopes.is_empty()
                && a.clear_scopes.is_empty()
                && !a.disable
                && !a.enable
            {
                bail!(
                    "nothing to change; see `vault-mcp agents update --help` (--grant, --scopes, --disable, …)"
                );
            }
            let v = vault
                .update_agent(
                    &a.name,
                    AgentUpdate {
                        description: a.description,
                        jwt_subject: if a.no_jwt_subject {
                            Some(None)
                        } else {
                            a.jwt_subject.map(Some)
                        },
                        add_grants: a.grants.into_iter().map(GrantId::from).collect(),
                        remove_grants: a.remove_grants.into_iter().map(GrantId::from).collect(),
                        set_scopes: a.scopes.into_iter().collect(),
                        clear_scopes: a.clear_scopes,
                        status: match (a.disable, a.enable) {
                            (true, _) => Some(AgentStatus::Disabled),
                            (_, true) => Some(AgentStatus::Active),
                            _ => None,
                        },
                    },
                )
                .await?;
            print_view(&v, a.json)
        }
        AgentsCmd::RotateKey { name, grace, json } => {
            let issued = vault.rotate_agent_key(&name, grace.unwrap_or(0)).await?;
            if !json {
                match grace {
                    Some(g) if g > 0 => eprintln!(
                        "the old key keeps working for {}",
                        crate::vault::grants::ttl_words(g)
                    ),
                    _ => eprintln!("the old key stopped working now"),
                }
            }
            print_key(&issued, json)
        }
        AgentsCmd::Delete {
            name,
            delete_grants,
        } => {
            let n = vault.delete_agent(&name, delete_grants).await?;
            println!(
                "Deleted agent {name}{}; its keys and delegations no longer work.",
                if n > 0 {
                    format!(" and the {n} grant(s) it owned")
                } else {
                    String::new()
                }
            );
            Ok(())
        }
    }
}
