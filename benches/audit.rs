//! Audit trail and policy costs:
//! - searching 1,000,000 audit records by user and by provider (newest 100, as `audit search`);
//! - evaluating a 10-rule policy for one call;
//! - the audit write path alone, one record per call and 32 concurrent.
//!
//! Run: `cargo bench --bench audit` (building the 1M-row table takes a minute the first time).

use std::{sync::Arc, time::Duration};

use criterion::Criterion;
use vault_mcp::{
    model::AuditOutcome,
    store::{AuditEntry, AuditFilter, AuditStore, SqliteStore},
    vault::policy::{PolicyInput, PolicySet},
};

const ROWS: i64 = 1_000_000;
const USERS: i64 = 2_000;
const PROVIDERS: &[&str] = &[
    "github",
    "google",
    "slack",
    "stripe",
    "notion",
    "linear",
    "atlassian",
    "hubspot",
    "dropbox",
    "discord",
];

fn entry(i: i64) -> AuditEntry {
    AuditEntry {
        id: format!("call_{i:012}"),
        ts_ms: 1_760_000_000_000 + i * 1_000,
        event: "request".into(),
        principal: format!("user-{}", (i * 7919) % USERS),
        client: Some("claude-ai".into()),
        tool: Some("vault_request".into()),
        grant_id: Some(format!("grt_{}", i % 5_000)),
        provider: Some(PROVIDERS[(i % PROVIDERS.len() as i64) as usize].into()),
        method: Some("GET".into()),
        host: Some("api.example.com".into()),
        path: Some(format!("/items/{}", i % 100)),
        status: Some(200),
        latency_ms: Some(42),
        outcome: AuditOutcome::Ok,
        decision: Some("allow".into()),
        ..Default::default()
    }
}

async fn big_store(path: &std::path::Path) -> Arc<SqliteStore> {
    let store = Arc::new(SqliteStore::open_with(path, false).await.unwrap());
    let have = store.count_audit().await.unwrap();
    let mut i = have;
    while i < ROWS {
        let batch: Vec<AuditEntry> = (i..(i + 1000).min(ROWS)).map(entry).collect();
        store
            .append_audit(&batch, &vault_mcp::crypto::ChainKey::generate(1))
            .await
            .unwrap();
        i += batch.len() as i64;
    }
    store
}

fn policy() -> PolicySet {
    let text = include_str!("policy10.toml");
    let v: toml::Value = toml::from_str(text).unwrap();
    let p = PolicySet::from_config(v.get("policy"));
    assert!(p.error().is_none(), "{:?}", p.error());
    p
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let path = std::path::Path::new("target/bench-audit-1m.db");
    let store = rt.block_on(big_store(path));
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    {
        let mut g = c.benchmark_group("audit_search_1m");
        let newest = |f: AuditFilter| AuditFilter {
            limit: Some(100),
            newest_first: true,
            ..f
        };
        let searches = [
            (
                "by_user_newest_100",
                newest(AuditFilter {
                    principal: Some("user-1234".into()),
                    ..Default::default()
                }),
                Some(100),
            ),
            (
                "by_provider_newest_100",
                newest(AuditFilter {
                    provider: Some("stripe".into()),
                    ..Default::default()
                }),
                Some(100),
            ),
            (
                "by_user_and_provider_in_a_day",
                newest(AuditFilter {
                    principal: Some("user-1234".into()),
                    provider: Some("github".into()),
                    since_ms: Some(1_760_000_000_000 + 400_000_000),
                    until_ms: Some(1_760_000_000_000 + 400_000_000 + 86_400_000),
                    ..Default::default()
                }),
                None,
            ),
        ];
        for (id, filter, expect) in searches {
            let s = store.clone();
            g.bench_function(id, |b| {
                b.to_async(&rt).iter(|| async {
                    let r = s.query_audit(&filter).await.unwrap();
                    if let Some(n) = expect {
                        assert_eq!(r.len(), n);
                    }
                    r
                })
            });
        }
        g.finish();
    }
    {
        let p = policy();
        let scopes = vec!["repo".to_owned()];
        let mut g = c.benchmark_group("policy");
        g.bench_function("check_10_rules", |b| {
            b.iter(|| {
                let i = PolicyInput {
                    principal: "alice",
                    caller: Default::default(),
                    provider: "github",
                    grant_id: "grt_1",
                    grant_kind: "oauth",
                    grant_scopes: &scopes,
                    grant_age_secs: 86_400,
                    method: "GET",
                    host: "api.github.com",
                    path: "/repos/acme/widgets/issues",
                    reason: None,
                    now: jiff::Timestamp::now(),
                };
                p.check(&i)
            })
        });
        g.finish();
    }
    c.final_summary();
    let mean = |g: &str, id: &str| -> Option<f64> {
        let p = std::path::Path::new("target/criterion")
            .join(g)
            .join(id)
            .join("new/estimates.json");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
        v["mean"]["point_estimate"].as_f64()
    };
    println!("\n== audit search over {ROWS} records ==");
    for id in [
        "by_user_newest_100",
        "by_provider_newest_100",
        "by_user_and_provider_in_a_day",
    ] {
        if let Some(ns) = mean("audit_search_1m", id) {
            println!("{id:<32} {:>8.3} ms", ns / 1e6);
        }
    }
    if let Some(ns) = mean("policy", "check_10_rules") {
        println!("{:<32} {:>8.3} µs", "policy check (10 rules)", ns / 1e3);
    }
}
