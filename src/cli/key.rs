//! `vault-mcp key`: generate a key, rotate the master key (re-wrapping every record's data key),
//! prune retired keys, show the current key id.

use std::io::Read;

use anyhow::bail;
use clap::Subcommand;

use crate::{
    config::Config,
    crypto::{KeySource, MasterKey},
};

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Print a new random master key (base64) for VAULT_MCP_MASTER_KEY or a key file.
    Generate,
    /// Print the id (fingerprint) of the master key in use.
    Id,
    /// Rotate: a new master key becomes current and every record's data key is re-wrapped.
    /// With a key file, the old key stays as a retired line until `key prune`. With
    /// VAULT_MCP_MASTER_KEY, pass the new key on stdin with --new-key-stdin.
    Rotate {
        /// Read the new key from stdin instead of generating one.
        #[arg(long)]
        new_key_stdin: bool,
    },
    /// Remove retired keys from the key file once no record uses them.
    Prune,
}

pub async fn run(config: &Config, cmd: KeyCmd) -> anyhow::Result<()> {
    match cmd {
        KeyCmd::Generate => {
            println!("{}", crate::crypto::generate_key_b64().as_str());
            Ok(())
        }
        KeyCmd::Id => {
            let o = super::open_vault(config).await?;
            println!("{} ({})", o.vault.keyring().current().id(), o.keys_source);
            Ok(())
        }
        KeyCmd::Rotate { new_key_stdin } => {
            let o = super::open_vault(config).await?;
            let new = if new_key_stdin {
                let mut s = zeroize::Zeroizing::new(String::new());
                std::io::stdin().read_to_string(&mut s)?;
                MasterKey::parse(&s)?
            } else {
                MasterKey::generate()
            };
            if o.keys_source == KeySource::Env && !new_key_stdin {
                bail!(
                    "the master key comes from VAULT_MCP_MASTER_KEY: generate one with `vault-mcp key generate`, pass it with --new-key-stdin, then set VAULT_MCP_MASTER_KEY to it"
                );
            }
            let old_id = o.vault.keyring().current().id().to_owned();
            let (ring, n) = o.vault.rotate_key(new).await?;
            match &o.keys_source {
                KeySource::File(p) => {
                    ring.save_to(p)?;
                    println!(
                        "Rotated master key {old_id} → {} and re-wrapped {n} records; key file {} updated (old key kept as retired; `vault-mcp key prune` drops it).",
                        ring.current().id(),
                        p.display()
                    );
                }
                _ => println!(
                    "Rotated master key {old_id} → {} and re-wrapped {n} records. Now set VAULT_MCP_MASTER_KEY to the new key (you may list the old one after a comma while other instances restart).",
                    ring.current().id()
                ),
            }
            Ok(())
        }
        KeyCmd::Prune => {
            let o = super::open_vault(config).await?;
            let KeySource::File(path) = &o.keys_source else {
                bail!(
                    "prune works on key files; with VAULT_MCP_MASTER_KEY just drop the old key from the variable"
                );
            };
            let ring = o.vault.keyring();
            let in_use = o.vault.keys_in_use().await?;
            let stale: Vec<&str> = ring
                .ids()
                .into_iter()
                .skip(1)
                .filter(|id| in_use.contains(*id))
                .collect();
            if !stale.is_empty() {
                bail!(
                    "records still use retired key(s) {}; run `vault-mcp key rotate` first",
                    stale.join(", ")
                );
            }
            let dropped = ring.ids().len() - 1;
            ring.current_only().save_to(path)?;
            println!(
                "Kept key {}; removed {dropped} retired key(s) from {}.",
                ring.current().id(),
                path.display()
            );
            Ok(())
        }
    }
}
