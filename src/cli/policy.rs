//! `vault-mcp policy`: show the rules in effect and check what they decide for a request.

use anyhow::bail;
use clap::Subcommand;

use crate::{
    config::Config,
    vault::policy::{Decision, PolicyInput, PolicySet},
};

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Print the policy in effect (or its configuration error).
    Show,
    /// Decide about a request without making it: prints the decision and the rule that made it.
    /// Exit code 0 when the call would go ahead, 1 otherwise.
    Check(Box<CheckArgs>),
}

/// What `policy check` decides about.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// HTTP method, e.g. POST.
    method: String,
    /// Full URL, e.g. https://api.stripe.com/v1/charges.
    url: String,
    /// Provider id (when no --grant is given).
    #[arg(long)]
    provider: Option<String>,
    /// A grant id: its provider, kind, scopes and age are used.
    #[arg(long)]
    grant: Option<String>,
    /// Principal id of the caller (default: the local user).
    #[arg(long)]
    user: Option<String>,
    /// The reason the agent states.
    #[arg(long)]
    reason: Option<String>,
    /// Scopes the grant holds (without --grant).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Evaluate at this time (RFC 3339) instead of now.
    #[arg(long)]
    at: Option<String>,
    /// The caller is this managed agent (its name).
    #[arg(long, conflicts_with = "user")]
    agent: Option<String>,
    /// A group the calling user is in (repeatable).
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    /// A request context pair KEY=VALUE (repeatable).
    #[arg(long = "context", value_name = "KEY=VALUE")]
    context: Vec<String>,
}

pub async fn run(config: &Config, cmd: PolicyCmd) -> anyhow::Result<()> {
    let policy = PolicySet::from_config(config.policy.as_ref());
    match cmd {
        PolicyCmd::Show => {
            if let Some(e) = policy.error() {
                bail!("the policy is invalid, so every call is denied: {e}");
            }
            println!(
                "default: {}   approvals time out after {}s",
                if policy.default_allow() {
                    "allow"
                } else {
                    "deny"
                },
                policy.approval_timeout().as_secs()
            );
            let rows: Vec<Vec<String>> = policy
                .rules()
                .into_iter()
                .map(|r| vec![r.id, r.effect, r.matches, r.constraints])
                .collect();
            if rows.is_empty() {
                println!("no rules");
            } else {
                super::print_table(&["RULE", "EFFECT", "MATCHES", "CONSTRAINTS"], &rows);
            }
            Ok(())
        }
        PolicyCmd::Check(args) => {
            let CheckArgs {
                method,
                url,
                provider,
                grant,
                user,
                reason,
                scopes,
                at,
                agent,
                groups,
                context,
            } = *args;
            let mut ctx = std::collections::BTreeMap::new();
            for kv in &context {
                let Some((k, v)) = kv.split_once('=') else {
                    bail!("--context `{kv}`: write KEY=VALUE");
                };
                ctx.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
            }
            crate::vault::request::check_context(&ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
            // The same canonical form the request pipeline gives policy.
            let parsed = crate::vault::canonical::CanonicalUrl::parse(&url)
                .map_err(|e| anyhow::anyhow!("`{url}`: {e}"))?;
            let host = parsed.host_label();
            let principal = user.unwrap_or_else(|| config.local_user.clone());
            let (provider, grant_id, kind, scopes, age) = match grant {
                Some(g) => {
                    let vault = super::open_vault(config).await?.vault;
                    let Some(row) = vault.operator_grant(&g).await? else {
                        bail!("no grant `{g}`");
                    };
                    let age = crate::vault::now() - row.updated_at.max(row.created_at);
                    (
                        row.provider,
                        row.id.to_string(),
                        row.kind.to_string(),
                        row.scopes.0,
                        age,
                    )
                }
                None => {
                    let Some(p) = provider else {
                        bail!("give --provider or --grant")
                    };
                    (p, "(any)".into(), "oauth".into(), scopes, 0)
                }
            };
            let now = match at {
                Some(t) => t
                    .parse::<jiff::Timestamp>()
                    .map_err(|e| anyhow::anyhow!("--at `{t}`: {e}"))?,
                None => jiff::Timestamp::now(),
            };
            let method = method.to_ascii_uppercase();
            let input = PolicyInput {
                principal: &principal,
                caller: crate::vault::policy::CallerFacts {
                    kind: if agent.is_some() {
                        crate::model::PrincipalKind::Agent
                    } else {
                        crate::model::PrincipalKind::User
                    },
                    groups: &groups,
                    agent: agent.as_deref(),
                    context: Some(&ctx),
                },
                provider: &provider,
                grant_id: &grant_id,
                grant_kind: &kind,
                grant_scopes: &scopes,
                grant_age_secs: age,
                method: &method,
                host: &host,
                path: parsed.path(),
                reason: reason.as_deref(),
                now,
            };
            let slots = policy.slots(&input);
            let (line, ok) = match policy.check(&input) {
                Decision::Allow { rules } if rules.is_empty() => (
                    "allow (no rule matched; the default allows)".to_owned(),
                    true,
                ),
                Decision::Allow { rules } => (format!("allow (rules: {})", rules.join(", ")), true),
                Decision::Deny { rule, message } => {
                    (format!("deny by rule `{rule}`: {message}"), false)
                }
                Decision::GrantExpired { rule } => (
                    format!("deny by rule `{rule}`: the grant is too old; reconnect"),
                    false,
                ),
                Decision::Approve { rule, message } => {
                    (format!("needs approval by rule `{rule}`: {message}"), false)
                }
            };
            println!("{line}");
            for s in &slots {
                println!(
                    "counts against rule `{}`: {} call(s) per {}s ({})",
                    s.rule,
                    s.limit,
                    s.window_end - s.window_start,
                    s.key
                );
            }
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
