//! `vault-mcp providers`: the provider catalog, and for one provider everything needed to set it
//! up — where to register the OAuth app (or create the key), the redirect URI to give it, the
//! scopes to request, and the exact lines to paste.

use anyhow::bail;
use clap::Subcommand;
use serde_json::json;

use crate::{
    config::Config,
    providers::{Catalog, Provider, ProviderKind, TokenAuth, env_prefix},
    vault::ProviderView,
};

#[derive(Subcommand, Debug)]
pub enum ProvidersCmd {
    /// List catalog providers and whether each is ready to use.
    List {
        /// Only this category (source_control, chat, …).
        #[arg(long)]
        category: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// How to set up one provider: where to register, the redirect URI, scopes, config lines.
    Show {
        /// Provider id, e.g. github.
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, cmd: ProvidersCmd) -> anyhow::Result<()> {
    let catalog = Catalog::load(&config.providers, &crate::config::env_var)?;
    match cmd {
        ProvidersCmd::List { category, json } => {
            let chosen: Vec<&Provider> = catalog
                .all()
                .filter(|p| {
                    category
                        .as_ref()
                        .is_none_or(|c| p.category.as_deref() == Some(c.as_str()))
                })
                .collect();
            if chosen.is_empty()
                && let Some(c) = &category
            {
                let mut known: Vec<&str> = catalog
                    .all()
                    .filter_map(|p| p.category.as_deref())
                    .collect();
                known.sort_unstable();
                known.dedup();
                bail!(
                    "no provider in category `{c}`; categories: {}",
                    known.join(", ")
                );
            }
            let views: Vec<ProviderView> = chosen
                .iter()
                .map(|p| ProviderView::from_provider(p))
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&views)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = chosen
                .iter()
                .zip(&views)
                .map(|(p, v)| {
                    vec![
                        v.id.clone(),
                        v.name.clone(),
                        v.kind.clone(),
                        p.category.clone().unwrap_or_default(),
                        if v.configured { "yes" } else { "no" }.into(),
                    ]
                })
                .collect();
            super::print_table(&["ID", "NAME", "KIND", "CATEGORY", "READY"], &rows);
            println!(
                "\n{} providers. `vault-mcp providers show ID` says how to set one up.",
                rows.len()
            );
            Ok(())
        }
        ProvidersCmd::Show { id, json } => {
            let Some(p) = catalog.get(&id) else {
                match catalog.suggest(&id) {
                    Some(s) => bail!("no provider `{id}`; did you mean `{s}`?"),
                    None => bail!(
                        "no provider `{id}`; `vault-mcp providers list` shows the catalog, and [providers.{id}] in the config adds your own"
                    ),
                }
            };
            let redirect = config.connect.redirect_uri();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&show_json(p, &redirect))?
                );
            } else {
                print!(
                    "{}",
                    show_text(p, &redirect, config.connect.public_url_explicit)
                );
            }
            Ok(())
        }
    }
}

fn kind_word(p: &Provider) -> &'static str {
    match p.kind {
        ProviderKind::Oauth2 => "oauth2",
        ProviderKind::ApiKey => "api_key",
    }
}

fn show_json(p: &Provider, redirect: &str) -> serde_json::Value {
    let env = env_prefix(&p.id);
    json!({
        "id": p.id,
        "name": p.name,
        "kind": kind_word(p),
        "category": p.category,
        "docs_url": p.docs_url,
        "registration_url": p.app_registration_url,
        "setup_hint": p.setup_hint,
        "configured": p.is_configured(),
        "redirect_uri": (p.kind == ProviderKind::Oauth2).then_some(redirect),
        "default_scopes": p.default_scopes,
        "scopes": p.scopes,
        "api_hosts": p.api_hosts,
        "injection": p.injection.describe(),
        "pkce": p.pkce,
        "device_flow": p.supports_device_flow(),
        "refresh": p.refresh,
        "env": match p.kind {
            ProviderKind::Oauth2 => json!([format!("{env}_CLIENT_ID"), format!("{env}_CLIENT_SECRET")]),
            ProviderKind::ApiKey => json!([]),
        },
    })
}

fn show_text(p: &Provider, redirect: &str, public_explicit: bool) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let category = p
        .category
        .as_deref()
        .map(|c| format!(", {c}"))
        .unwrap_or_default();
    let _ = writeln!(o, "{} ({}) — {}{category}", p.name, p.id, kind_word(p));
    if let Some(d) = &p.docs_url {
        let _ = writeln!(o, "documentation: {d}");
    }
    let _ = writeln!(
        o,
        "status:        {}",
        if p.is_configured() {
            "ready"
        } else {
            "needs an OAuth app (below)"
        }
    );
    let _ = writeln!(o, "API hosts:     {}", p.api_hosts.join(" "));
    let _ = writeln!(o, "credential:    {}", p.injection.describe());
    let env = env_prefix(&p.id);
    match p.kind {
        ProviderKind::ApiKey => {
            let _ = writeln!(o, "\n1. Create a key");
            if let Some(u) = &p.app_registration_url {
                let _ = writeln!(o, "   at {u}");
            }
            if let Some(h) = &p.setup_hint {
                let _ = writeln!(o, "   {h}");
            }
            let _ = writeln!(o, "\n2. Store it (the key is read from stdin or a prompt)");
            let _ = writeln!(o, "   vault-mcp secret add {}", p.id);
            let _ = writeln!(
                o,
                "   or, in hosted mode, ask the agent to call start_connect for `{}`: the user types the key on the Connect page",
                p.id
            );
        }
        ProviderKind::Oauth2 => {
            let _ = writeln!(o, "\n1. Register an OAuth app");
            if let Some(u) = &p.app_registration_url {
                let _ = writeln!(o, "   at {u}");
            }
            if let Some(h) = &p.setup_hint {
                let _ = writeln!(o, "   {h}");
            }
            let _ = writeln!(o, "   redirect URI: {redirect}");
            if !public_explicit {
                let _ = writeln!(
                    o,
                    "     (hosted: <your [connect] public_url>oauth/callback instead)"
                );
            }
            let scopes = if p.default_scopes.is_empty() {
                "none (this provider grants access per app, not per scope)".into()
            } else {
                p.join_scopes(&p.default_scopes)
            };
            let _ = writeln!(o, "   scopes requested by default: {scopes}");
            let _ = writeln!(
                o,
                "   client type: {}",
                match p.token_auth {
                    TokenAuth::None => "public (PKCE, no secret)",
                    _ if p.pkce => "confidential (client secret), PKCE on",
                    _ => "confidential (client secret)",
                }
            );
            if p.supports_device_flow() {
                let _ = writeln!(
                    o,
                    "   device flow: supported (enable it for the app to connect from a machine without a browser)"
                );
            }
            let _ = writeln!(o, "\n2. Give vault-mcp the app's credentials, either");
            let _ = writeln!(o, "   export {env}_CLIENT_ID=…");
            if p.token_auth != TokenAuth::None {
                let _ = writeln!(o, "   export {env}_CLIENT_SECRET=…");
            }
            let _ = writeln!(o, "   or in config.toml:");
            let _ = writeln!(o, "   [providers.{}]", p.id);
            let _ = writeln!(o, "   client_id = \"…\"");
            if p.token_auth != TokenAuth::None {
                let _ = writeln!(
                    o,
                    "   client_secret_env = \"{}_CLIENT_SECRET\"   # names the variable holding the secret",
                    p.id.to_ascii_uppercase().replace('-', "_")
                );
            }
            let _ = writeln!(
                o,
                "\n3. Connect an account: vault-mcp connect {}   (or let the agent call start_connect)",
                p.id
            );
        }
    }
    if !p.scopes.is_empty() {
        let _ = writeln!(o, "\nScopes:");
        let w = p.scopes.keys().map(|s| s.len()).max().unwrap_or(0);
        for (s, d) in &p.scopes {
            let _ = writeln!(o, "  {s:w$}  {d}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::load(&Default::default(), &|_| None).expect("the built-in catalog loads")
    }

    #[test]
    fn show_names_registration_redirect_scopes_and_config_lines() {
        let c = catalog();
        let gh = c.get("github").unwrap();
        let t = show_text(gh, "http://127.0.0.1:8765/oauth/callback", false);
        for want in [
            "https://github.com/settings/developers",
            "redirect URI: http://127.0.0.1:8765/oauth/callback",
            "export VAULT_MCP_PROVIDER_GITHUB_CLIENT_ID=…",
            "[providers.github]",
            "client_secret_env = \"GITHUB_CLIENT_SECRET\"",
            "scopes requested by default: repo read:user",
            "vault-mcp connect github",
        ] {
            assert!(t.contains(want), "missing `{want}` in:\n{t}");
        }
        let stripe = show_text(c.get("stripe").unwrap(), "unused", true);
        assert!(stripe.contains("vault-mcp secret add stripe"), "{stripe}");
        assert!(!stripe.contains("redirect URI"), "{stripe}");
    }
}
