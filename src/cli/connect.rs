//! `vault-mcp connect <provider>`: create a Connect session, open the browser, wait with a
//! spinner, and report the account and scopes (or why it failed). `--device` uses the RFC 8628
//! device flow instead, for machines without a browser.

use std::time::Duration;

use anyhow::bail;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{
    config::Config,
    vault::{Caller, StartConnect},
};

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Provider id (see `vault-mcp providers list`).
    pub provider: String,
    /// Extra scope to request beyond the provider's defaults (repeatable).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Print the link instead of opening a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// Use the device flow: show a code to enter on another device.
    #[arg(long)]
    pub device: bool,
    /// The grant stops working after this long (90s, 12h, 30d, 2w …).
    #[arg(long, value_name = "DURATION", value_parser = crate::model::parse_duration)]
    pub ttl: Option<i64>,
    /// Offer to let this agent use the new grant without you (a checkbox on the Connect page).
    #[arg(long, value_name = "AGENT")]
    pub agent: Option<String>,
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("template"));
    pb.set_message(msg.to_owned());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

pub async fn run(
    config: &Config,
    a: ConnectArgs,
    as_principal: Option<&str>,
) -> anyhow::Result<()> {
    let opened = super::open_vault(config).await?;
    let vault = opened.vault;
    let caller = Caller::new(super::open::principal(config, as_principal), "cli:connect");
    if a.device && (a.ttl.is_some() || a.agent.is_some()) {
        bail!("--ttl and --agent work with the browser flow; leave out --device");
    }
    if a.device {
        let (start, scopes) = vault.device_start(&a.provider, &a.scopes).await?;
        let link = start
            .verification_uri_complete
            .clone()
            .unwrap_or_else(|| start.verification_uri.clone());
        println!(
            "Open {} and enter the code:\n\n    {}\n",
            start.verification_uri, start.user_code
        );
        if !a.no_browser {
            let _ = webbrowser::open(&link);
        }
        let pb = spinner("Waiting for you to approve");
        let result = vault
            .device_finish(&caller, &a.provider, &start, &scopes)
            .await;
        pb.finish_and_clear();
        let (grant, who) = result?;
        println!(
            "Connected {} as {} (grant {}; scopes: {})",
            a.provider,
            who.display.as_deref().unwrap_or(&who.account),
            grant.id,
            if grant.scopes.is_empty() {
                "-".into()
            } else {
                grant.scopes.join(" ")
            }
        );
        return Ok(());
    }
    let mut req = StartConnect {
        providers: vec![a.provider.clone()],
        agent: a.agent.clone(),
        ttl_secs: a.ttl,
        ..Default::default()
    };
    if !a.scopes.is_empty() {
        req.scopes.insert(a.provider.clone(), a.scopes.clone());
    }
    let started = vault.start_connect(&caller, req).await?;
    // Serve the callback ourselves unless another vault-mcp already listens (same database).
    let listener =
        crate::transport::stdio::spawn_connect_listener(vault.clone(), config.connect.listen).await;
    println!(
        "Open this link to connect {}:\n\n    {}\n",
        a.provider, started.connect_url
    );
    if !a.no_browser && webbrowser::open(&started.connect_url).is_err() {
        eprintln!("(could not open a browser; open the link yourself)");
    }
    let pb = spinner("Waiting for you to finish in the browser");
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(config.connect.session_ttl_secs + 5);
    let session = loop {
        if tokio::time::Instant::now() > deadline {
            pb.finish_and_clear();
            bail!("the Connect link expired before it was completed; run the command again");
        }
        match vault.connect_status(&caller, &started.session_id).await? {
            Some(s) if s.status != crate::model::SessionStatus::Pending => break s,
            _ => tokio::time::sleep(Duration::from_millis(400)).await,
        }
    };
    pb.finish_and_clear();
    if let Some(l) = listener {
        l.abort();
    }
    match session.status.as_str() {
        "completed" => {
            let account = session
                .result_grants
                .iter()
                .find_map(|r| r.strip_prefix(&format!("{}=", a.provider)))
                .unwrap_or("?")
                .to_owned();
            let grants = vault.list_grants(&caller, Some(&a.provider)).await?;
            let g = grants.iter().find(|g| g.account == account);
            println!(
                "Connected {} as {}{}",
                a.provider,
                g.and_then(|g| g.account_display.clone())
                    .unwrap_or(account.clone()),
                g.map(|g| format!(
                    " (grant {}; scopes: {})",
                    g.id,
                    if g.scopes.is_empty() {
                        "-".into()
                    } else {
                        g.scopes.join(" ")
                    }
                ))
                .unwrap_or_default()
            );
            Ok(())
        }
        "denied" => bail!(
            "access was not granted ({})",
            session
                .error
                .unwrap_or_else(|| "declined at the provider".into())
        ),
        "expired" => bail!("the Connect link expired; run the command again"),
        _ => bail!(
            "connecting failed: {}",
            session.error.unwrap_or_else(|| "unknown error".into())
        ),
    }
}
