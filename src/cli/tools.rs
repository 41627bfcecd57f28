//! `vault-mcp tools list`: every tool the server would offer, by pack, and packs that failed to load.

use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum ToolsCmd {
    /// List tools (built-in and from packs) and pack load errors.
    List {
        /// As `serve --read-only` would offer them.
        #[arg(long)]
        read_only: bool,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, cmd: ToolsCmd) -> anyhow::Result<()> {
    let ToolsCmd::List { read_only, json } = cmd;
    let loaded =
        crate::mcp::packs::load(Some(&config.tools.dir), &config.tools.disabled, read_only);
    let set = crate::mcp::ToolSet::with_packs(read_only, &loaded);
    if json {
        let v = serde_json::json!({
            "tools": set.list(),
            "packs": loaded.packs,
            "errors": loaded.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let rows: Vec<Vec<String>> = set
            .list()
            .iter()
            .map(|t| {
                let pack = loaded
                    .tools
                    .iter()
                    .find(|p| p.def.name == t.name)
                    .map(|p| p.pack.clone())
                    .unwrap_or_else(|| "built-in".into());
                let ro = t
                    .annotations
                    .as_ref()
                    .and_then(|a| a.read_only_hint)
                    .unwrap_or(false);
                vec![
                    t.name.to_string(),
                    pack,
                    if ro { "read".into() } else { "write".into() },
                    t.title.clone().unwrap_or_default(),
                ]
            })
            .collect();
        super::print_table(&["TOOL", "PACK", "ACCESS", "TITLE"], &rows);
        println!("\nuser packs: {}", config.tools.dir.display());
        for e in &loaded.errors {
            eprintln!("error: pack not loaded: {e}");
        }
    }
    if !loaded.errors.is_empty() {
        anyhow::bail!(
            "{} pack(s) failed to load; the other tools are available",
            loaded.errors.len()
        );
    }
    Ok(())
}
