//! `vault-mcp audit`: tail, search, export and verify the hash-chained audit trail; prune by
//! retention.

use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};

use crate::{
    config::Config,
    store::{AuditFilter, AuditRecord},
    vault::{now_ms, rfc3339_ms},
};

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Show the newest records; --follow keeps printing new ones.
    Tail {
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: i64,
        #[arg(short, long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Find records by user, provider, grant, outcome and time range (newest first).
    Search(SearchArgs),
    /// Write records as JSON lines (oldest first), with their hashes.
    Export {
        /// Write JSON lines (the only format; the flag is for clarity in scripts).
        #[arg(long)]
        jsonl: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Check the hash chain; names the first edited, deleted or reordered record.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Delete records older than N days (default: [audit] retention_days).
    Prune {
        #[arg(long)]
        days: Option<u32>,
    },
}

#[derive(Args, Debug, Default)]
pub struct FilterArgs {
    /// Principal id (e.g. local, or <issuer>#<sub> in hosted mode).
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub provider: Option<String>,
    #[arg(long)]
    pub grant: Option<String>,
    /// Outcome such as ok, provider_error, policy_violation, blocked_destination.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Start: RFC 3339 time or an age like 15m, 2h, 7d.
    #[arg(long)]
    pub since: Option<String>,
    /// End: RFC 3339 time or an age.
    #[arg(long)]
    pub until: Option<String>,
    /// Only calls whose request context has KEY=VALUE (repeatable; all must match).
    #[arg(long = "context", value_name = "KEY=VALUE")]
    pub context: Vec<String>,
    /// Only callers of this kind: user or agent.
    #[arg(long)]
    pub principal_kind: Option<crate::model::PrincipalKind>,
    /// Only calls by this agent (its name) or with this caller label.
    #[arg(long)]
    pub agent: Option<String>,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    #[arg(long)]
    pub json: bool,
}

/// RFC 3339 or a relative age (`30s`, `15m`, `2h`, `7d`) → unix milliseconds.
fn parse_time(s: &str, flag: &str) -> anyhow::Result<i64> {
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = num.parse().map_err(|_| {
        anyhow::anyhow!(
            "--{flag} `{s}`: use an RFC 3339 time (2026-11-24T10:00:00Z) or an age like 15m, 2h, 7d"
        )
    })?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("--{flag} `{s}`: the unit must be s, m, h or d"),
    };
    Ok(now_ms() - secs * 1000)
}

impl FilterArgs {
    fn to_filter(&self) -> anyhow::Result<AuditFilter> {
        Ok(AuditFilter {
            principal: self.user.clone(),
            provider: self.provider.clone(),
            grant_id: self.grant.clone(),
            outcome: self
                .outcome
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e: String| anyhow::anyhow!("--outcome: {e}"))?,
            since_ms: self
                .since
                .as_deref()
                .map(|s| parse_time(s, "since"))
                .transpose()?,
            until_ms: self
                .until
                .as_deref()
                .map(|s| parse_time(s, "until"))
                .transpose()?,
            principal_kind: self.principal_kind,
            agent: self.agent.clone(),
            context: self
                .context
                .iter()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').ok_or_else(|| {
                        anyhow::anyhow!("--context `{kv}`: write KEY=VALUE, e.g. ticket=OPS-1")
                    })?;
                    if !crate::vault::request::valid_context_key(k) {
                        anyhow::bail!(
                            "--context `{kv}`: `{k}` is not a context key (letters, digits, `_ . : -`)"
                        );
                    }
                    Ok((k.to_owned(), v.to_owned()))
                })
                .collect::<anyhow::Result<_>>()?,
            ..Default::default()
        })
    }
}

fn row(r: &AuditRecord) -> Vec<String> {
    let e = &r.entry;
    let target = match (&e.method, &e.host, &e.path) {
        (Some(m), Some(h), Some(p)) => format!("{m} {h}{p}"),
        _ => "-".into(),
    };
    vec![
        r.seq.to_string(),
        rfc3339_ms(e.ts_ms),
        e.principal.clone(),
        e.event.clone(),
        e.provider.clone().unwrap_or_else(|| "-".into()),
        target,
        e.status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into()),
        e.outcome.to_string(),
        e.decision.clone().unwrap_or_else(|| "-".into()),
        e.latency_ms
            .map(|l| format!("{l}ms"))
            .unwrap_or_else(|| "-".into()),
    ]
}

const HEADERS: &[&str] = &[
    "SEQ", "TIME", "USER", "EVENT", "PROVIDER", "REQUEST", "STATUS", "OUTCOME", "DECISION",
    "LATENCY",
];

fn print(records: &[AuditRecord], json: bool) {
    if json {
        for r in records {
            println!("{}", serde_json::to_string(r).expect("serialize"));
        }
    } else {
        super::print_table(HEADERS, &records.iter().map(row).collect::<Vec<_>>());
    }
}

pub async fn run(config: &Config, cmd: AuditCmd) -> anyhow::Result<()> {
    let vault = super::open_vault(config).await?.vault;
    match cmd {
        AuditCmd::Tail {
            lines,
            follow,
            json,
        } => {
            let mut recs = vault
                .search_audit(&AuditFilter {
                    limit: Some(lines),
                    newest_first: true,
                    ..Default::default()
                })
                .await?;
            recs.reverse();
            print(&recs, json);
            if follow {
                let mut last = recs.last().map(|r| r.seq).unwrap_or(0);
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let new = vault
                        .search_audit(&AuditFilter {
                            after_seq: Some(last),
                            limit: Some(1000),
                            ..Default::default()
                        })
                        .await?;
                    if let Some(l) = new.last() {
                        last = l.seq;
                        for r in &new {
                            if json {
                                println!("{}", serde_json::to_string(r)?);
                            } else {
                                println!("{}", row(r).join("  "));
                            }
                        }
                    }
                }
            }
            Ok(())
        }
        AuditCmd::Search(a) => {
            let mut f = a.filter.to_filter()?;
            f.limit = Some(a.limit);
            f.newest_first = true;
            let recs = vault.search_audit(&f).await?;
            print(&recs, a.json);
            if !a.json {
                eprintln!("{} record(s)", recs.len());
            }
            Ok(())
        }
        AuditCmd::Export { filter, .. } => {
            let mut f = filter.to_filter()?;
            f.limit = Some(10_000);
            f.after_seq = Some(0);
            loop {
                let page = vault.search_audit(&f).await?;
                let Some(last) = page.last().map(|r| r.seq) else {
                    break;
                };
                for r in &page {
                    println!("{}", serde_json::to_string(r)?);
                }
                f.after_seq = Some(last);
            }
            Ok(())
        }
        AuditCmd::Verify { json } => {
            let report = vault.verify_audit().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if let Some(p) = &report.problem {
                println!("TAMPERED after {} good records: {p}", report.checked);
            } else {
                println!(
                    "ok: {} records verified{}",
                    report.checked,
                    report
                        .head
                        .as_ref()
                        .map(|(s, h)| format!("; head {s} {h}"))
                        .unwrap_or_default()
                );
                println!("checkpoint: {}", report.checkpoint);
            }
            if report.problem.is_some() {
                bail!("the audit log failed verification");
            }
            Ok(())
        }
        AuditCmd::Prune { days } => {
            let Some(days) = days.or(config.audit_retention_days) else {
                bail!("give --days N or set [audit] retention_days");
            };
            let n = vault.prune_audit(days).await?;
            println!("removed {n} record(s) older than {days} days");
            Ok(())
        }
    }
}
