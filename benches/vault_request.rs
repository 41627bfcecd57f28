//! vault_request pipeline overhead against a direct reqwest call to the same loopback upstream,
//! measured in the same run. Prints both and the ratio at the end.
//!
//! Run: `cargo bench --bench vault_request`. The vault uses a real SQLite file (WAL) and writes
//! its audit record durably before each call returns, as in production.

use std::{collections::BTreeMap, time::Duration};

use axum::{Router, http::HeaderMap, routing::get};
use criterion::Criterion;
use vault_mcp::{
    config::{Config, Overrides},
    crypto::{Keyring, MasterKey},
    model::{AuditOutcome, PrincipalKind},
    providers::Catalog,
    secret,
    store::{AuditStore, GrantFilter, SqliteStore, Stores},
    vault::{
        ApiRequest, Caller, GrantSelector, NewSecret, Principal, RequestBody, Vault, VaultSettings,
    },
};

const TOKEN: &str = "bench-token-0123456789";

async fn upstream() -> String {
    let app = Router::new().route(
        "/item",
        get(|h: HeaderMap| async move {
            let ok = h.get("authorization").and_then(|v| v.to_str().ok())
                == Some(&format!("Bearer {TOKEN}"));
            if ok {
                (axum::http::StatusCode::OK, "{\"id\":1,\"name\":\"widget\"}")
            } else {
                (axum::http::StatusCode::UNAUTHORIZED, "{}")
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("127.0.0.1:{}", addr.port())
}

async fn vault(
    dir: &std::path::Path,
    host: &str,
    audit_fsync: bool,
    policy: Option<toml::Value>,
) -> Vault {
    let config = Config::load_with(&Overrides::default(), &|_| None).unwrap();
    let store = Stores::sqlite(
        SqliteStore::open_with(&dir.join("vault.db"), audit_fsync)
            .await
            .unwrap(),
    );
    let catalog = Catalog::load(&toml::Table::new(), &|_| None).unwrap();
    let v = Vault::open(
        store,
        Keyring::from_keys(vec![MasterKey::generate()]),
        catalog,
        VaultSettings {
            request: config.request,
            connect: config.connect,
            policy,
            audit_checkpoint: None,
            approvals: Default::default(),
            grant_cache_ttl: std::time::Duration::from_secs(1),
        },
    )
    .await
    .unwrap();
    let caller = Caller::new(Principal::local("bench"), "bench");
    v.add_secret(
        &caller,
        NewSecret {
            provider: "upstream".into(),
            account: "default".into(),
            secret: secret::secret(TOKEN),
            username: None,
            injection: None,
            hosts: Some(vec![host.to_owned()]),
            owner: Default::default(),
            session_token: None,
            ttl_secs: None,
        },
    )
    .await
    .unwrap();
    v
}

fn request(url: &str) -> ApiRequest {
    ApiRequest {
        method: "GET".into(),
        url: url.to_owned(),
        path_params: BTreeMap::new(),
        query_params: vec![],
        headers: BTreeMap::new(),
        body: RequestBody::None,
        grant: GrantSelector::Provider {
            provider: "upstream".into(),
            account: None,
        },
        reason: None,
        required_scopes: vec![],
        read_only: false,
        context: Default::default(),
    }
}

/// The audit record the append benchmarks write.
fn bench_entry() -> vault_mcp::store::AuditEntry {
    vault_mcp::store::AuditEntry {
        id: "x".into(),
        principal: "bench".into(),
        event: "bench".into(),
        outcome: AuditOutcome::Ok,
        ..Default::default()
    }
}

fn mean_ns(group: &str, id: &str) -> Option<f64> {
    let p = std::path::Path::new("target/criterion")
        .join(group)
        .join(id)
        .join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (host, vault, vault_nofsync, vault_policy) = rt.block_on(async {
        let host = upstream().await;
        let v = vault(dir.path(), &host, true, None).await;
        let v2 = vault(&dir.path().join("nofsync"), &host, false, None).await;
        let policy: toml::Value = toml::from_str(include_str!("policy10.toml")).unwrap();
        let v3 = vault(
            &dir.path().join("policy"),
            &host,
            true,
            policy.get("policy").cloned(),
        )
        .await;
        (host, v, v2, v3)
    });
    let url = format!("http://{host}/item");
    let direct = reqwest::Client::new();
    let caller = Caller::new(Principal::local("bench"), "bench");

    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    {
        let mut g = c.benchmark_group("sequential");
        g.bench_function("direct_reqwest", |b| {
            b.to_async(&rt).iter(|| async {
                let r = direct.get(&url).bearer_auth(TOKEN).send().await.unwrap();
                assert!(r.status().is_success());
                r.bytes().await.unwrap()
            })
        });
        // The plain vault; the same call under a 10-rule policy (benches/policy10.toml); and with
        // [audit] fsync = false (audit durable against a process crash, not a power loss).
        for (id, v) in [
            ("vault_request", &vault),
            ("vault_request_policy10", &vault_policy),
            ("vault_request_audit_nofsync", &vault_nofsync),
        ] {
            g.bench_function(id, |b| {
                b.to_async(&rt).iter(|| async {
                    let r = v.request(&caller, request(&url)).await.unwrap();
                    assert_eq!(r.status, 200);
                    r
                })
            });
        }
        g.finish();
    }
    {
        // 32 calls in flight: shows what group commit of the audit log buys under load.
        let mut g = c.benchmark_group("concurrent32");
        g.throughput(criterion::Throughput::Elements(32));
        g.bench_function("direct_reqwest", |b| {
            b.to_async(&rt).iter(|| async {
                let futs = (0..32).map(|_| async {
                    direct
                        .get(&url)
                        .bearer_auth(TOKEN)
                        .send()
                        .await
                        .unwrap()
                        .bytes()
                        .await
                        .unwrap()
                });
                futures::future::join_all(futs).await
            })
        });
        g.bench_function("vault_request", |b| {
            b.to_async(&rt).iter(|| async {
                let futs = (0..32).map(|_| vault.request(&caller, request(&url)));
                let all = futures::future::join_all(futs).await;
                assert!(
                    all.iter()
                        .all(|r| r.as_ref().is_ok_and(|r| r.status == 200))
                );
                all
            })
        });
        g.finish();
    }
    {
        // Where the time goes: the store calls every vault_request makes.
        let mut g = c.benchmark_group("components");
        let store = rt.block_on(async {
            Stores::sqlite(
                SqliteStore::open(&dir.path().join("vault.db"))
                    .await
                    .unwrap(),
            )
        });
        let owners = [(PrincipalKind::User, "bench".to_owned())];
        g.bench_function("resolve_grant_query", |b| {
            b.to_async(&rt).iter(|| async {
                store
                    .grants
                    .list_grants(&GrantFilter {
                        owners: &owners,
                        ids: &[],
                        provider: Some("upstream"),
                    })
                    .await
                    .unwrap()
            })
        });
        // The store's append alone, without the audit writer: from a task (handed to a blocking
        // thread and back) and on the calling thread, as the audit writer's thread calls it.
        let raw = rt.block_on(async {
            SqliteStore::open_with(&dir.path().join("raw").join("vault.db"), false)
                .await
                .unwrap()
        });
        let chain = vault_mcp::crypto::ChainKey::generate(1);
        g.bench_function("audit_store_append_nofsync", |b| {
            b.to_async(&rt)
                .iter(|| async { raw.append_audit(&[bench_entry()], &chain).await.unwrap() })
        });
        let direct = raw
            .blocking_append()
            .expect("SQLite appends on the calling thread");
        g.bench_function("audit_store_append_blocking_nofsync", |b| {
            b.iter(|| direct.append(&[bench_entry()], &chain).unwrap())
        });
        for (id, v) in [
            ("audit_append_fsync", &vault),
            ("audit_append_nofsync", &vault_nofsync),
        ] {
            g.bench_function(id, |b| {
                b.to_async(&rt)
                    .iter(|| async { v.audit_event(bench_entry()).await.unwrap() })
            });
        }
        g.finish();
    }
    c.final_summary();

    println!("\n== vault_request overhead (same upstream, same run) ==");
    for (group, id) in [
        ("sequential", "vault_request"),
        ("sequential", "vault_request_audit_nofsync"),
        ("sequential", "vault_request_policy10"),
        ("concurrent32", "vault_request"),
    ] {
        if let (Some(d), Some(v)) = (mean_ns(group, "direct_reqwest"), mean_ns(group, id)) {
            let per = if group == "concurrent32" { 32.0 } else { 1.0 };
            println!(
                "{:<40} direct {:>8.1} µs/call   vault {:>8.1} µs/call   overhead {:>8.1} µs/call   ratio {:.2}x",
                format!("{group}/{id}"),
                d / 1e3 / per,
                v / 1e3 / per,
                (v - d) / 1e3 / per,
                v / d
            );
        }
    }
}
