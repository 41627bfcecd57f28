//! `vault-mcp doctor`: configuration, master key, database and providers at a glance. Each
//! check says what is wrong and what to do; the exit code is 1 when any check fails.

use clap::Args;

use crate::{
    config::Config,
    providers::{Catalog, ProviderKind},
};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Check {
    name: String,
    ok: bool,
    detail: String,
}

pub async fn run(config: &Config, a: DoctorArgs) -> anyhow::Result<()> {
    let mut checks: Vec<Check> = Vec::new();
    let mut add = |name: &str, ok: bool, detail: String| {
        checks.push(Check {
            name: name.into(),
            ok,
            detail,
        })
    };

    add(
        "config file",
        true,
        match &config.file {
            Some(p) => format!("{}", p.display()),
            None => format!(
                "none (defaults; create {} to configure)",
                config.config_dir.join("config.toml").display()
            ),
        },
    );
    add(
        "data directory",
        true,
        config.data_dir.display().to_string(),
    );

    let catalog = Catalog::load(&config.providers, &crate::config::env_var);
    match &catalog {
        Ok(c) => {
            let oauth: Vec<_> = c.all().filter(|p| p.kind == ProviderKind::Oauth2).collect();
            let ready: Vec<&str> = oauth
                .iter()
                .filter(|p| p.is_configured())
                .map(|p| p.id.as_str())
                .collect();
            add(
                "providers",
                true,
                format!(
                    "{} in catalog; OAuth ready: {}",
                    c.all().count(),
                    if ready.is_empty() {
                        "none (set VAULT_MCP_PROVIDER_<ID>_CLIENT_ID/_SECRET)".into()
                    } else {
                        ready.join(", ")
                    }
                ),
            );
        }
        Err(e) => add("providers", false, e.to_string()),
    }

    let policy = crate::vault::policy::PolicySet::from_config(config.policy.as_ref());
    match policy.error() {
        Some(e) => add(
            "policy",
            false,
            format!("{e} (every call is denied until this is fixed)"),
        ),
        None => add(
            "policy",
            true,
            format!(
                "{} rule(s), default {}",
                policy.rules().len(),
                if policy.default_allow() {
                    "allow"
                } else {
                    "deny"
                }
            ),
        ),
    }

    let loaded = crate::mcp::packs::load(Some(&config.tools.dir), &config.tools.disabled, false);
    if loaded.errors.is_empty() {
        add(
            "tool packs",
            true,
            format!(
                "{} pack tools ({} packs; user packs in {})",
                loaded.tools.len(),
                loaded.packs.len(),
                config.tools.dir.display()
            ),
        );
    } else {
        let errs: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        add(
            "tool packs",
            false,
            format!("not loaded: {}", errs.join("; ")),
        );
    }

    let store = super::open::open_store(config).await;
    match store {
        Err(e) => add("database", false, format!("{e:#}")),
        Ok(store) => {
            let grants = store
                .grants
                .list_grants(&Default::default())
                .await
                .map(|g| g.len())
                .unwrap_or(0);
            let audit = store.audit.count_audit().await.unwrap_or(0);
            add(
                "database",
                true,
                format!(
                    "{} ({grants} grants, {audit} audit records)",
                    crate::config::redact_url(&config.database)
                ),
            );
            match super::open::load_keys(config, store.meta.as_ref()).await {
                Err(e) => add("master key", false, format!("{e:#}")),
                Ok(keys) => {
                    let id = keys.current().id().to_owned();
                    let src = keys.source().to_string();
                    match &catalog {
                        Ok(c) => match crate::vault::Vault::open(
                            store.clone(),
                            keys,
                            c.clone(),
                            crate::vault::VaultSettings::from_config(config),
                        )
                        .await
                        {
                            Ok(_) => add(
                                "master key",
                                true,
                                format!("{id} from {src}; opens this vault"),
                            ),
                            Err(e) => add("master key", false, e.to_string()),
                        },
                        Err(_) => add(
                            "master key",
                            true,
                            format!("{id} from {src} (not verified: catalog error)"),
                        ),
                    }
                }
            }
        }
    }

    let port_free = std::net::TcpListener::bind(config.connect.listen).is_ok();
    add(
        "connect pages",
        true,
        format!(
            "listen {} ({}); register this redirect URI with OAuth apps: {}",
            config.connect.listen,
            if port_free {
                "free"
            } else {
                "in use, probably by a running vault-mcp"
            },
            config.connect.redirect_uri()
        ),
    );

    let failed = checks.iter().any(|c| !c.ok);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            println!(
                "{} {:<15} {}",
                if c.ok { "ok " } else { "ERR" },
                c.name,
                c.detail
            );
        }
    }
    if failed {
        anyhow::bail!("some checks failed (see above)");
    }
    Ok(())
}
