//! `vault-mcp keys`: application API keys for the Alter SDK protocol (`/sdk/*`). A key is
//! printed once, on stdout; `tokens:raw` (credentials handed to your backend) must be asked for
//! by name.

use clap::Subcommand;

use crate::{config::Config, secret::Expose, vault::api_keys::ApiKeyView};

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Create an application key (alter_rk_…) and print it once.
    Create {
        /// A name to recognize the key by (e.g. the backend that uses it).
        name: String,
        /// Comma-separated key scopes (default: all but tokens:raw). `vault-mcp keys scopes`
        /// lists them.
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        /// The key stops working after this long (90d, 12h …).
        #[arg(long, value_parser = crate::model::parse_duration)]
        ttl: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// List application keys (never the keys themselves).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: requests with it are refused from now on.
    Revoke { id: String },
    /// Issue a new key for the same id and scopes; the old one works for --overlap (default 0).
    Rotate {
        id: String,
        #[arg(long, value_parser = crate::model::parse_duration)]
        overlap: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// The key scopes this server knows.
    Scopes,
}

fn print_key(v: &ApiKeyView, key: &crate::secret::Secret, json: bool) -> anyhow::Result<()> {
    if json {
        let mut o = serde_json::to_value(v)?;
        o["key"] = key.expose_secret().into();
        println!("{}", serde_json::to_string_pretty(&o)?);
    } else {
        eprintln!(
            "key {} ({}), scopes {}: it follows, shown this once; store it in your secret manager now",
            v.name,
            v.id,
            v.scopes.join(",")
        );
        println!("{}", key.expose_secret());
    }
    Ok(())
}

pub async fn run(config: &Config, cmd: KeysCmd) -> anyhow::Result<()> {
    if let KeysCmd::Scopes = cmd {
        for s in crate::vault::api_keys::KEY_SCOPES {
            let note = if *s == "tokens:raw" {
                "  (hands credentials to the caller: POST /sdk/token; only when asked for)"
            } else {
                ""
            };
            println!("{s}{note}");
        }
        return Ok(());
    }
    let vault = super::open_vault(config).await?.vault;
    match cmd {
        KeysCmd::Create {
            name,
            scopes,
            ttl,
            json,
        } => {
            let (v, key) = vault.create_api_key(&name, scopes, ttl).await?;
            print_key(&v, &key, json)
        }
        KeysCmd::List { json } => {
            let keys = vault.list_api_keys().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
                return Ok(());
            }
            if keys.is_empty() {
                println!("No application keys. Create one with `vault-mcp keys create NAME`.");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.clone(),
                        k.name.clone(),
                        k.key_prefix.clone(),
                        k.status.to_string(),
                        k.scopes.join(","),
                        k.last_used_at.clone().unwrap_or_else(|| "never".into()),
                    ]
                })
                .collect();
            super::print_table(
                &["ID", "NAME", "KEY", "STATUS", "SCOPES", "LAST USED"],
                &rows,
            );
            Ok(())
        }
        KeysCmd::Revoke { id } => {
            let v = vault.revoke_api_key(&id).await?;
            println!("Revoked key {} ({}).", v.name, v.id);
            Ok(())
        }
        KeysCmd::Rotate { id, overlap, json } => {
            let (v, key) = vault.rotate_api_key(&id, overlap.unwrap_or(0)).await?;
            print_key(&v, &key, json)
        }
        KeysCmd::Scopes => unreachable!("handled above"),
    }
}
