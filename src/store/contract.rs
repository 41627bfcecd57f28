//! The contract every backend keeps: one suite, run against SQLite (a temporary file) and
//! against a real PostgreSQL (`VAULT_TEST_PG`, a URL of a server where the role may create
//! databases; `scripts/test.sh` starts one with `scripts/pg.sh`). Each test gets a fresh
//! database. Without `VAULT_TEST_PG` the PostgreSQL half is skipped with a note, unless
//! `VAULT_TEST_REQUIRE_PG=1` (the test script sets it), which turns the skip into a failure.

use std::collections::BTreeMap;

use super::*;
use crate::{
    crypto::ChainKey,
    model::{ApprovalStatus, GrantId, GrantKind, GrantStatus, PrincipalKind, SessionStatus},
    store::Lifetime,
};

async fn sqlite() -> (Stores, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("vault.db"))
        .await
        .unwrap();
    (Stores::sqlite(s), dir)
}

/// A fresh database on the test server, or `None` (skip) when none is configured.
async fn postgres_url() -> Option<String> {
    let Ok(base) = std::env::var("VAULT_TEST_PG") else {
        if std::env::var("VAULT_TEST_REQUIRE_PG").is_ok_and(|v| v == "1") {
            panic!("VAULT_TEST_REQUIRE_PG=1 but VAULT_TEST_PG is not set");
        }
        eprintln!("note: VAULT_TEST_PG is not set; the PostgreSQL half of the contract is skipped");
        return None;
    };
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    let name = format!("contract_{}", crate::vault::new_id("db").replace('-', "_"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&format!("/{name}"));
    Some(url.to_string())
}

async fn postgres() -> Option<Stores> {
    let url = postgres_url().await?;
    Some(Stores::postgres(
        PgStore::open(&url, &PgOptions::default()).await.unwrap(),
    ))
}

/// Run one contract function against both backends.
macro_rules! contract {
    ($($name:ident),+ $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (s, _dir) = super::sqlite().await;
                    super::$name(s).await;
                }
            )+
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(s) = super::postgres().await {
                        super::$name(s).await;
                    }
                }
            )+
        }
    };
}

contract!(
    meta_and_sealed,
    grants_lifecycle,
    grant_owners_are_isolated,
    refresh_lease,
    rate_slots_count_exactly,
    connect_sessions_and_attempts,
    oauth_server_rows,
    approvals_bind_the_exact_call,
    audit_chain_and_queries,
    audit_prune_leaves_a_sealed_anchor,
    agents_and_delegations,
    grants_by_id_and_owner,
    audit_principal_fields_and_context_search,
    api_keys_and_sdk_ids,
);

fn sealed(t: &str) -> Sealed {
    Sealed {
        key_id: "k1".into(),
        text: t.into(),
    }
}

fn grant(owner: (PrincipalKind, &str), provider: &str, account: &str) -> GrantRow {
    GrantRow {
        id: GrantId::new(),
        principal_kind: owner.0,
        principal: owner.1.into(),
        provider: provider.into(),
        kind: GrantKind::OAuth,
        account: account.into(),
        account_display: Some("Display".into()),
        scopes: Scopes::parse("repo read:user"),
        status: GrantStatus::Active,
        scope_mismatch: None,
        injection: None,
        hosts: Some(vec!["api.example.com".into()]),
        sealed: sealed("blob"),
        token_expires_at: Some(100),
        grant_expires_at: None,
        ttl_secs: None,
        version: 1,
        created_at: 10,
        updated_at: 10,
        last_used_at: None,
    }
}

async fn meta_and_sealed(s: Stores) {
    assert_eq!(s.meta.get_meta("k").await.unwrap(), None);
    s.meta.put_meta("k", "1").await.unwrap();
    s.meta.put_meta("k", "2").await.unwrap();
    assert_eq!(s.meta.get_meta("k").await.unwrap().as_deref(), Some("2"));
    assert!(s.meta.insert_meta_if_absent("once", "a").await.unwrap());
    assert!(!s.meta.insert_meta_if_absent("once", "b").await.unwrap());
    assert_eq!(s.meta.get_meta("once").await.unwrap().as_deref(), Some("a"));

    let g = grant((PrincipalKind::User, "alice"), "github", "a");
    s.grants.insert_grant(&g).await.unwrap();
    s.meta.put_meta("key_check", "v1.k1.x").await.unwrap();
    let items = s.meta.list_sealed().await.unwrap();
    assert_eq!(items.len(), 2, "{items:?}");
    let rewrapped: Vec<SealedRef> = items
        .into_iter()
        .map(|mut it| {
            it.sealed.key_id = "k2".into();
            it.sealed.text = format!("{}-rewrapped", it.sealed.text);
            it
        })
        .collect();
    s.meta.replace_sealed(&rewrapped).await.unwrap();
    let back = s.grants.get_grant(&g.id).await.unwrap().unwrap();
    assert_eq!(back.sealed.key_id, "k2");
    assert_eq!(back.sealed.text, "blob-rewrapped");
    assert_eq!(
        back.version, 2,
        "a re-wrap changes the row version (caches notice)"
    );
    assert_eq!(
        s.meta.get_meta("key_check").await.unwrap().as_deref(),
        Some("v1.k1.x-rewrapped")
    );
}

async fn grants_lifecycle(s: Stores) {
    let g = grant((PrincipalKind::User, "alice"), "github", "octo");
    s.grants.insert_grant(&g).await.unwrap();
    let back = s.grants.get_grant(&g.id).await.unwrap().unwrap();
    assert_eq!(back.id, g.id);
    assert_eq!(back.kind, GrantKind::OAuth);
    assert_eq!(back.scopes.0, vec!["repo", "read:user"]);
    assert_eq!(back.hosts, Some(vec!["api.example.com".to_owned()]));
    assert_eq!(back.sealed, g.sealed);
    // one account per owner and provider
    let dup = grant((PrincipalKind::User, "alice"), "github", "octo");
    assert!(s.grants.insert_grant(&dup).await.is_err());
    assert!(
        s.grants
            .find_grant_by_account((PrincipalKind::User, "alice"), "github", "octo")
            .await
            .unwrap()
            .is_some()
    );
    // optimistic credential update: only from the version read
    let upd = CredentialUpdate {
        sealed: sealed("new"),
        scopes: Scopes::parse("repo"),
        token_expires_at: Some(200),
        account_display: None,
        now: 20,
    };
    assert!(
        s.grants
            .update_grant_credential(&g.id, 1, &upd)
            .await
            .unwrap()
    );
    assert!(
        !s.grants
            .update_grant_credential(&g.id, 1, &upd)
            .await
            .unwrap(),
        "a stale version loses"
    );
    let back = s.grants.get_grant(&g.id).await.unwrap().unwrap();
    assert_eq!(
        (back.version, back.sealed.text.as_str()),
        (2, "new"),
        "{back:?}"
    );
    assert_eq!(
        back.account_display.as_deref(),
        Some("Display"),
        "kept when not given"
    );
    // status and scope mismatch change the version too; re-authorization resets both
    s.grants
        .set_scope_mismatch(&g.id, &["admin".into()], 30)
        .await
        .unwrap();
    s.grants
        .set_grant_status(&g.id, GrantStatus::CredentialRevoked, 31)
        .await
        .unwrap();
    let back = s.grants.get_grant(&g.id).await.unwrap().unwrap();
    assert_eq!(back.missing_scopes(), ["admin"]);
    assert_eq!(back.status, GrantStatus::CredentialRevoked);
    assert_eq!(s.grants.grant_version(&g.id).await.unwrap(), Some(4));
    s.grants
        .reauthorize_grant(&g.id, &upd, Lifetime::default())
        .await
        .unwrap();
    let back = s.grants.get_grant(&g.id).await.unwrap().unwrap();
    assert_eq!(back.status, GrantStatus::Active);
    assert!(back.missing_scopes().is_empty());
    // touch is coarse: at most once a minute, and not a version change
    s.grants.touch_grant(&g.id, 1000).await.unwrap();
    s.grants.touch_grant(&g.id, 1030).await.unwrap();
    let back = s.grants.get_grant(&g.id).await.unwrap().unwrap();
    assert_eq!(back.last_used_at, Some(1000));
    assert_eq!(back.version, 5);
    assert!(s.grants.delete_grant(&g.id).await.unwrap());
    assert!(!s.grants.delete_grant(&g.id).await.unwrap());
    assert_eq!(s.grants.grant_version(&g.id).await.unwrap(), None);
}

async fn grant_owners_are_isolated(s: Stores) {
    let owners = [
        (PrincipalKind::User, "alice"),
        (PrincipalKind::User, "bob"),
        (PrincipalKind::Group, "alice"),
        (PrincipalKind::App, "app"),
        (PrincipalKind::Agent, "bot"),
    ];
    for o in owners {
        for p in ["github", "slack"] {
            s.grants.insert_grant(&grant(o, p, "acct")).await.unwrap();
        }
    }
    for o in owners {
        let only = [(o.0, o.1.to_owned())];
        let rows = s
            .grants
            .list_grants(&GrantFilter {
                owners: &only,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rows.len(), 2, "{o:?}");
        assert!(
            rows.iter()
                .all(|r| r.principal_kind == o.0 && r.principal == o.1)
        );
    }
    let two = [
        (PrincipalKind::User, "alice".to_owned()),
        (PrincipalKind::Group, "alice".to_owned()),
    ];
    let rows = s
        .grants
        .list_grants(&GrantFilter {
            owners: &two,
            provider: Some("github"),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        s.grants
            .list_grants(&GrantFilter::default())
            .await
            .unwrap()
            .len(),
        10
    );
}

async fn refresh_lease(s: Stores) {
    let g = grant((PrincipalKind::User, "alice"), "github", "a");
    s.grants.insert_grant(&g).await.unwrap();
    assert!(
        s.counters
            .acquire_refresh_lease(&g.id, "one", 100, 145)
            .await
            .unwrap()
    );
    assert!(
        !s.counters
            .acquire_refresh_lease(&g.id, "two", 110, 155)
            .await
            .unwrap()
    );
    assert!(
        s.counters
            .acquire_refresh_lease(&g.id, "one", 110, 155)
            .await
            .unwrap(),
        "the holder may extend"
    );
    assert!(
        s.counters
            .acquire_refresh_lease(&g.id, "two", 156, 200)
            .await
            .unwrap(),
        "an expired lease can be taken (a holder that died does not wedge the grant)"
    );
    s.counters
        .release_refresh_lease(&g.id, "one")
        .await
        .unwrap();
    assert!(
        !s.counters
            .acquire_refresh_lease(&g.id, "one", 157, 200)
            .await
            .unwrap(),
        "only the holder releases"
    );
    s.counters
        .release_refresh_lease(&g.id, "two")
        .await
        .unwrap();
    assert!(
        s.counters
            .acquire_refresh_lease(&g.id, "one", 158, 200)
            .await
            .unwrap()
    );
}

async fn rate_slots_count_exactly(s: Stores) {
    let mut joins = Vec::new();
    for _ in 0..40 {
        let c = s.counters.clone();
        joins.push(tokio::spawn(async move {
            c.take_slot("rule:user:alice", 1000, 5, 2000).await.unwrap()
        }));
    }
    let mut got = Vec::new();
    for j in joins {
        got.push(j.await.unwrap());
    }
    let mut counts: Vec<i64> = got.iter().flatten().copied().collect();
    counts.sort();
    assert_eq!(counts, vec![1, 2, 3, 4, 5], "{got:?}");
    assert_eq!(
        s.counters
            .take_slot("rule:user:alice", 2000, 5, 3000)
            .await
            .unwrap(),
        Some(1),
        "a new window starts over"
    );
    assert_eq!(
        s.counters
            .take_slot("rule:user:bob", 1000, 5, 2000)
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(s.counters.purge_counters(2500).await.unwrap(), 2);
}

async fn connect_sessions_and_attempts(s: Stores) {
    let row = ConnectSessionRow {
        id: "hash1".into(),
        public_id: "cs_1".into(),
        principal: "alice".into(),
        providers: vec!["github".into(), "slack".into()],
        scopes: BTreeMap::from([("github".into(), vec!["repo".into()])]),
        repair_grant_id: None,
        return_url: None,
        status: SessionStatus::Pending,
        error: None,
        result_grants: vec![],
        created_at: 10,
        expires_at: 100,
        completed_at: None,
        delegate_agent: None,
        grant_ttl_secs: Some(3600),
        account_label: Some("own".into()),
    };
    s.connect.insert_connect_session(&row).await.unwrap();
    let back = s
        .connect
        .get_connect_session("hash1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.providers, row.providers);
    assert_eq!(back.scopes, row.scopes);
    assert_eq!(back.grant_ttl_secs, Some(3600));
    assert!(
        s.connect
            .get_connect_session_by_public_id("cs_1")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        s.connect
            .update_connect_results("hash1", &["github=octo".into()])
            .await
            .unwrap()
    );
    let a = ConnectAttemptRow {
        state_hash: "st1".into(),
        session_id: "hash1".into(),
        provider: "github".into(),
        scopes: Scopes::parse("repo"),
        redirect_uri: "http://127.0.0.1/cb".into(),
        sealed: sealed("verifier"),
        created_at: 10,
        expires_at: 50,
        used_at: None,
        delegate_agent: Some("agt_x".into()),
    };
    s.connect.insert_connect_attempt(&a).await.unwrap();
    let taken = s
        .connect
        .take_connect_attempt("st1", 20)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.sealed, a.sealed);
    assert_eq!(taken.delegate_agent, a.delegate_agent);
    assert!(
        s.connect
            .take_connect_attempt("st1", 21)
            .await
            .unwrap()
            .is_none(),
        "single use"
    );
    assert!(
        s.connect
            .finish_connect_session(
                "hash1",
                SessionStatus::Completed,
                None,
                &["github=octo".into()],
                30
            )
            .await
            .unwrap()
    );
    assert!(
        !s.connect
            .finish_connect_session("hash1", SessionStatus::Denied, Some("x"), &[], 31)
            .await
            .unwrap(),
        "a finished session stays finished"
    );
    let back = s
        .connect
        .get_connect_session("hash1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.status, SessionStatus::Completed);
    assert_eq!(back.result_grants, vec!["github=octo"]);
    assert_eq!(s.connect.purge_connect(1000).await.unwrap(), 2);
}

async fn oauth_server_rows(s: Stores) {
    use crate::model::TokenKind;
    s.oauth
        .insert_oauth_client(&OAuthClientRow {
            client_id: "c1".into(),
            secret_hash: None,
            client_name: Some("Client".into()),
            redirect_uris: vec!["http://127.0.0.1/cb".into()],
            metadata: "{}".into(),
            created_at: 1,
        })
        .await
        .unwrap();
    assert_eq!(s.oauth.count_oauth_clients().await.unwrap(), 1);
    let c = s.oauth.get_oauth_client("c1").await.unwrap().unwrap();
    assert_eq!(c.redirect_uris, vec!["http://127.0.0.1/cb"]);
    s.oauth
        .insert_oauth_request(&OAuthRequestRow {
            id: "r1".into(),
            client_id: "c1".into(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            state: None,
            scope: "mcp:tools".into(),
            resource: "http://x/mcp".into(),
            code_challenge: "ch".into(),
            binding: "b".into(),
            created_at: 1,
            expires_at: 100,
        })
        .await
        .unwrap();
    assert!(s.oauth.get_oauth_request("r1").await.unwrap().is_some());
    assert!(s.oauth.take_oauth_request("r1").await.unwrap().is_some());
    assert!(s.oauth.take_oauth_request("r1").await.unwrap().is_none());
    let code = OAuthCodeRow {
        code_hash: "code1".into(),
        client_id: "c1".into(),
        redirect_uri: "http://127.0.0.1/cb".into(),
        code_challenge: "ch".into(),
        principal: "alice".into(),
        principal_display: "Alice".into(),
        scope: "mcp:tools".into(),
        resource: "http://x/mcp".into(),
        created_at: 1,
        expires_at: 100,
        used_at: None,
    };
    s.oauth.insert_oauth_code(&code).await.unwrap();
    let first = s.oauth.use_oauth_code("code1", 5).await.unwrap().unwrap();
    assert_eq!(first.used_at, None, "the first use sees a fresh code");
    let second = s.oauth.use_oauth_code("code1", 6).await.unwrap().unwrap();
    assert_eq!(second.used_at, Some(5), "a replay sees it used");
    for (hash, kind) in [("t1", TokenKind::Access), ("t2", TokenKind::Refresh)] {
        s.oauth
            .insert_oauth_token(&OAuthTokenRow {
                token_hash: hash.into(),
                kind,
                family: "fam".into(),
                client_id: "c1".into(),
                principal: "alice".into(),
                principal_display: "Alice".into(),
                scope: "mcp:tools".into(),
                resource: "http://x/mcp".into(),
                created_at: 1,
                expires_at: 100,
                revoked_at: None,
            })
            .await
            .unwrap();
    }
    assert_eq!(
        s.oauth.get_oauth_token("t2").await.unwrap().unwrap().kind,
        TokenKind::Refresh
    );
    assert!(s.oauth.revoke_oauth_token("t2", 7).await.unwrap());
    assert!(
        !s.oauth.revoke_oauth_token("t2", 8).await.unwrap(),
        "rotation relies on this"
    );
    assert_eq!(s.oauth.revoke_oauth_family("fam", 9).await.unwrap(), 1);
    assert_eq!(s.oauth.purge_oauth(100_000).await.unwrap(), 3);
}

async fn approvals_bind_the_exact_call(s: Stores) {
    let row = |id: &str, hash: &str| ApprovalRow {
        id: id.into(),
        token_hash: format!("tok-{id}"),
        principal: "alice".into(),
        grant_id: "grt_1".into(),
        provider: "github".into(),
        method: "POST".into(),
        host: "api.github.com".into(),
        path: "/repos/a/b/issues".into(),
        call_hash: hash.into(),
        body_preview: Some("{\"title\":\"x\"}".into()),
        reason: None,
        rule: "writes".into(),
        status: ApprovalStatus::Pending,
        created_at: 10,
        expires_at: 100,
        decided_at: None,
        decided_by: None,
    };
    s.approvals
        .insert_approval(&row("apr_1", "h1"))
        .await
        .unwrap();
    s.approvals
        .insert_approval(&row("apr_2", "h2"))
        .await
        .unwrap();
    assert_eq!(
        s.approvals
            .get_approval_by_token("tok-apr_1")
            .await
            .unwrap()
            .unwrap()
            .id,
        "apr_1"
    );
    assert_eq!(
        s.approvals
            .list_approvals(Some("alice"), Some(ApprovalStatus::Pending))
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        s.approvals
            .list_approvals(Some("bob"), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.approvals
            .consume_approval("alice", "grt_1", "h1", 20)
            .await
            .unwrap()
            .is_none(),
        "not approved yet"
    );
    assert!(
        s.approvals
            .decide_approval("apr_1", ApprovalStatus::Approved, "cli", 20)
            .await
            .unwrap()
    );
    assert!(
        !s.approvals
            .decide_approval("apr_1", ApprovalStatus::Denied, "cli", 21)
            .await
            .unwrap(),
        "decided once"
    );
    assert!(
        s.approvals
            .consume_approval("alice", "grt_1", "h2", 22)
            .await
            .unwrap()
            .is_none(),
        "another call's hash cannot use it"
    );
    assert!(
        s.approvals
            .consume_approval("bob", "grt_1", "h1", 22)
            .await
            .unwrap()
            .is_none()
    );
    // two consumers at once: exactly one wins
    let (a, b) = tokio::join!(
        s.approvals.consume_approval("alice", "grt_1", "h1", 23),
        s.approvals.consume_approval("alice", "grt_1", "h1", 23)
    );
    assert_eq!(
        [a.unwrap().is_some(), b.unwrap().is_some()]
            .iter()
            .filter(|x| **x)
            .count(),
        1
    );
    assert_eq!(
        s.approvals
            .get_approval("apr_1")
            .await
            .unwrap()
            .unwrap()
            .status,
        ApprovalStatus::Used
    );
    // expired approvals are not used
    s.approvals
        .decide_approval("apr_2", ApprovalStatus::Approved, "cli", 30)
        .await
        .unwrap();
    assert!(
        s.approvals
            .consume_approval("alice", "grt_1", "h2", 100)
            .await
            .unwrap()
            .is_none()
    );
}

fn entry(i: i64, principal: &str) -> AuditEntry {
    AuditEntry {
        id: format!("evt_{i}"),
        ts_ms: 1_000 + i,
        event: "request".into(),
        principal: principal.into(),
        provider: Some(if i % 2 == 0 { "github" } else { "slack" }.into()),
        outcome: if i % 3 == 0 {
            crate::model::AuditOutcome::PolicyViolation
        } else {
            crate::model::AuditOutcome::Ok
        },
        ..Default::default()
    }
}

/// The whole log is one chain from the genesis: `n` records, no gaps, no fork, every hash right.
pub(crate) async fn assert_one_chain(audit: &dyn AuditStore, chain: &ChainKey, n: usize) {
    let all = audit
        .query_audit(&AuditFilter {
            after_seq: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), n);
    let mut prev = AUDIT_GENESIS.to_owned();
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.seq, i as i64 + 1, "no gaps");
        assert_eq!(r.prev_hash, prev, "no fork at {}", r.seq);
        assert_eq!(audit_hash(chain, r.seq, &r.prev_hash, &r.entry), r.hash);
        prev = r.hash.clone();
    }
}

async fn audit_chain_and_queries(s: Stores) {
    let chain = ChainKey::generate(1);
    // Writers race on one chain; each batch must link to the one before, whichever it was.
    let mut joins = Vec::new();
    for w in 0..4 {
        let audit = s.audit.clone();
        let chain = chain.clone();
        joins.push(tokio::spawn(async move {
            for b in 0..5 {
                let batch: Vec<AuditEntry> = (0..3)
                    .map(|i| {
                        entry(
                            w * 100 + b * 10 + i,
                            if w % 2 == 0 { "alice" } else { "bob" },
                        )
                    })
                    .collect();
                audit.append_audit(&batch, &chain).await.unwrap();
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    assert_one_chain(s.audit.as_ref(), &chain, 60).await;
    assert_eq!(s.audit.count_audit().await.unwrap(), 60);
    let alice = s
        .audit
        .query_audit(&AuditFilter {
            principal: Some("alice".into()),
            provider: Some("github".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        !alice.is_empty()
            && alice
                .iter()
                .all(|r| r.entry.principal == "alice"
                    && r.entry.provider.as_deref() == Some("github"))
    );
    let refused = s
        .audit
        .query_audit(&AuditFilter {
            outcome: Some(crate::model::AuditOutcome::PolicyViolation),
            newest_first: true,
            limit: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(refused.len(), 3);
    assert!(
        refused
            .windows(2)
            .all(|w| w[0].entry.ts_ms >= w[1].entry.ts_ms)
    );
}

async fn audit_prune_leaves_a_sealed_anchor(s: Stores) {
    let chain = ChainKey::generate(1);
    let batch: Vec<AuditEntry> = (0..10).map(|i| entry(i, "alice")).collect();
    s.audit.append_audit(&batch, &chain).await.unwrap();
    assert_eq!(s.audit.prune_audit(1_004, &chain).await.unwrap(), 4);
    let anchor = Anchor::parse(s.meta.get_meta("audit_anchor").await.unwrap().as_deref());
    assert_eq!(anchor.seq, 4);
    assert!(chain.check_point(
        "anchor",
        anchor.seq,
        &anchor.hash,
        anchor.mac.as_deref().unwrap()
    ));
    let rest = s
        .audit
        .query_audit(&AuditFilter {
            after_seq: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.first().unwrap().seq, 5);
    assert_eq!(rest.first().unwrap().prev_hash, anchor.hash);
    // the chain continues after the anchor
    let more = s
        .audit
        .append_audit(&[entry(99, "alice")], &chain)
        .await
        .unwrap();
    assert_eq!(more[0].seq, 11);
}

fn agent(name: &str, prefix: &str) -> AgentRow {
    AgentRow {
        id: crate::model::AgentId::new(),
        name: name.into(),
        description: Some("nightly".into()),
        key_prefix: Some(prefix.into()),
        key_hash: Some(format!("hash-{prefix}")),
        previous_key_prefix: None,
        previous_key_hash: None,
        previous_key_expires_at: None,
        sealed: sealed("signing"),
        jwt_subject: None,
        access: AgentAccess::default(),
        idempotency_key: None,
        status: crate::model::AgentStatus::Active,
        created_at: 10,
        updated_at: 10,
        last_used_at: None,
    }
}

async fn agents_and_delegations(s: Stores) {
    let mut a = agent("ci-bot", "aaaaaaaa");
    a.idempotency_key = Some("idem-1".into());
    a.jwt_subject = Some("ci-client".into());
    s.agents.insert_agent(&a).await.unwrap();
    assert_eq!(s.agents.get_agent(&a.id).await.unwrap().as_ref(), Some(&a));
    assert_eq!(
        s.agents.get_agent_by_name("ci-bot").await.unwrap().as_ref(),
        Some(&a)
    );
    assert_eq!(
        s.agents
            .get_agent_by_jwt_subject("ci-client")
            .await
            .unwrap()
            .map(|x| x.id),
        Some(a.id.clone())
    );
    assert_eq!(
        s.agents
            .get_agent_by_idempotency_key("idem-1")
            .await
            .unwrap()
            .map(|x| x.id),
        Some(a.id.clone())
    );
    // Every unique value refuses a second owner.
    for clash in [
        agent("ci-bot", "bbbbbbbb"),
        agent("other", "aaaaaaaa"),
        AgentRow {
            jwt_subject: Some("ci-client".into()),
            ..agent("other2", "cccccccc")
        },
        AgentRow {
            idempotency_key: Some("idem-1".into()),
            ..agent("other3", "dddddddd")
        },
    ] {
        let e = s.agents.insert_agent(&clash).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    }
    // Rotation: the previous prefix still finds the row until it is cleared.
    let mut rotated = a.clone();
    rotated.previous_key_prefix = rotated.key_prefix.take();
    rotated.previous_key_hash = rotated.key_hash.take();
    rotated.previous_key_expires_at = Some(99);
    rotated.key_prefix = Some("eeeeeeee".into());
    rotated.key_hash = Some("hash-e".into());
    rotated.access.grants.push(GrantId::from("grt_x"));
    rotated
        .access
        .scopes
        .insert("github".into(), vec!["read:user".into()]);
    rotated.status = crate::model::AgentStatus::Disabled;
    rotated.updated_at = 20;
    assert!(s.agents.update_agent(&rotated).await.unwrap());
    for p in ["aaaaaaaa", "eeeeeeee"] {
        assert_eq!(
            s.agents.get_agent_by_key_prefix(p).await.unwrap().as_ref(),
            Some(&rotated),
            "{p}"
        );
    }
    assert!(
        s.agents
            .get_agent_by_key_prefix("zzzzzzzz")
            .await
            .unwrap()
            .is_none()
    );
    s.agents.touch_agent(&a.id, 1_000).await.unwrap();
    s.agents.touch_agent(&a.id, 1_010).await.unwrap();
    assert_eq!(
        s.agents
            .get_agent(&a.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(1_000),
        "touch is coarse"
    );

    let b = agent("support", "ffffffff");
    s.agents.insert_agent(&b).await.unwrap();
    assert_eq!(
        s.agents
            .list_agents()
            .await
            .unwrap()
            .iter()
            .map(|x| x.name.as_str())
            .collect::<Vec<_>>(),
        ["ci-bot", "support"]
    );
    let d = |g: &str, ag: &crate::model::AgentId| DelegationRow {
        grant_id: g.into(),
        agent_id: ag.clone(),
        delegated_by: "alice".into(),
        created_at: 5,
    };
    assert!(s.agents.delegate(&d("grt_1", &a.id)).await.unwrap());
    assert!(
        !s.agents.delegate(&d("grt_1", &a.id)).await.unwrap(),
        "idempotent"
    );
    assert!(s.agents.delegate(&d("grt_2", &a.id)).await.unwrap());
    assert!(s.agents.delegate(&d("grt_1", &b.id)).await.unwrap());
    assert_eq!(s.agents.delegations_of_agent(&a.id).await.unwrap().len(), 2);
    assert_eq!(
        s.agents.delegations_of_grant("grt_1").await.unwrap().len(),
        2
    );
    assert!(s.agents.undelegate("grt_2", &a.id).await.unwrap());
    assert!(
        !s.agents.undelegate("grt_2", &a.id).await.unwrap(),
        "idempotent"
    );
    assert!(s.agents.delete_agent(&a.id).await.unwrap());
    assert!(!s.agents.delete_agent(&a.id).await.unwrap());
    assert!(s.agents.get_agent(&a.id).await.unwrap().is_none());
    assert!(
        s.agents
            .delegations_of_agent(&a.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.agents.delegations_of_grant("grt_1").await.unwrap(),
        vec![d("grt_1", &b.id)],
        "other agents' delegations stay"
    );
    assert!(!s.agents.update_agent(&rotated).await.unwrap(), "gone");
}

async fn grants_by_id_and_owner(s: Stores) {
    let mine = grant((PrincipalKind::Agent, "agt_a"), "github", "a");
    let lent = grant((PrincipalKind::User, "alice"), "github", "alice");
    let app = grant((PrincipalKind::App, "app"), "stripe", "live");
    let other = grant((PrincipalKind::User, "bob"), "github", "bob");
    for g in [&mine, &lent, &app, &other] {
        s.grants.insert_grant(g).await.unwrap();
    }
    let owners = [(PrincipalKind::Agent, "agt_a".to_owned())];
    let ids = [lent.id.clone(), app.id.clone()];
    let rows = s
        .grants
        .list_grants(&GrantFilter {
            owners: &owners,
            ids: &ids,
            provider: None,
        })
        .await
        .unwrap();
    let mut got: Vec<_> = rows.iter().map(|r| r.id.clone()).collect();
    got.sort();
    let mut want = vec![mine.id.clone(), lent.id.clone(), app.id.clone()];
    want.sort();
    assert_eq!(got, want);
    let rows = s
        .grants
        .list_grants(&GrantFilter {
            owners: &owners,
            ids: &ids,
            provider: Some("github"),
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "the provider narrows ids too");
    let only_ids = s
        .grants
        .list_grants(&GrantFilter {
            ids: &ids[..1],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(only_ids.len(), 1);
    assert_eq!(only_ids[0].id, lent.id);

    // Renewal writes the lifetime with the credential.
    let mut g = grant((PrincipalKind::User, "alice"), "slack", "x");
    g.ttl_secs = Some(60);
    g.grant_expires_at = Some(70);
    s.grants.insert_grant(&g).await.unwrap();
    let back = s.grants.get_grant(&g.id).await.unwrap().unwrap();
    assert_eq!((back.ttl_secs, back.grant_expires_at), (Some(60), Some(70)));
    let u = CredentialUpdate {
        sealed: sealed("new"),
        scopes: Scopes::parse("a"),
        token_expires_at: None,
        account_display: None,
        now: 100,
    };
    s.grants
        .reauthorize_grant(
            &g.id,
            &u,
            Lifetime {
                ttl_secs: Some(60),
                expires_at: Some(160),
            },
        )
        .await
        .unwrap();
    let back = s.grants.get_grant(&g.id).await.unwrap().unwrap();
    assert_eq!(
        (back.ttl_secs, back.grant_expires_at),
        (Some(60), Some(160))
    );
}

async fn audit_principal_fields_and_context_search(s: Stores) {
    let chain = ChainKey::generate(1);
    let mut a = entry(1, "agt_a");
    a.principal_kind = Some(PrincipalKind::Agent);
    a.agent = Some("ci-bot".into());
    a.grant_owner = Some("user:alice".into());
    a.delegation = Some("alice".into());
    a.context = Some(r#"{"run":"nightly","ticket":"OPS-1"}"#.into());
    let mut b = entry(2, "alice");
    b.principal_kind = Some(PrincipalKind::User);
    b.context = Some(r#"{"ticket":"OPS-2"}"#.into());
    let old = entry(3, "alice");
    s.audit
        .append_audit(&[a.clone(), b.clone(), old.clone()], &chain)
        .await
        .unwrap();
    let all = s
        .audit
        .query_audit(&AuditFilter {
            after_seq: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all[0].entry, a, "new fields round-trip");
    for r in &all {
        assert_eq!(audit_hash(&chain, r.seq, &r.prev_hash, &r.entry), r.hash);
    }
    // An entry without the new fields hashes as it did before they existed.
    let plain = serde_json::to_string(&old).unwrap();
    assert!(
        !plain.contains("principal_kind") && !plain.contains("context"),
        "{plain}"
    );

    let q = |f: AuditFilter| {
        let s = s.clone();
        async move {
            s.audit
                .query_audit(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.entry.id)
                .collect::<Vec<_>>()
        }
    };
    let ctx = |pairs: &[(&str, &str)]| AuditFilter {
        context: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    };
    assert_eq!(q(ctx(&[("ticket", "OPS-1")])).await, ["evt_1"]);
    assert_eq!(q(ctx(&[("ticket", "OPS-2")])).await, ["evt_2"]);
    assert_eq!(
        q(ctx(&[("ticket", "OPS-1"), ("run", "nightly")])).await,
        ["evt_1"]
    );
    assert!(
        q(ctx(&[("ticket", "OPS-1"), ("run", "daily")]))
            .await
            .is_empty()
    );
    assert!(
        q(ctx(&[("ticket", "OPS")])).await.is_empty(),
        "exact values only"
    );
    assert!(
        q(ctx(&[("tick", "OPS-1")])).await.is_empty(),
        "exact keys only"
    );
    assert_eq!(
        q(AuditFilter {
            principal_kind: Some(PrincipalKind::Agent),
            ..Default::default()
        })
        .await,
        ["evt_1"]
    );
    assert_eq!(
        q(AuditFilter {
            agent: Some("ci-bot".into()),
            ..Default::default()
        })
        .await,
        ["evt_1"]
    );
}

async fn api_keys_and_sdk_ids(s: Stores) {
    use crate::model::{KeyStatus, sdk_uuid};
    let k = ApiKeyRow {
        id: "6f1c2a4e-0000-4000-8000-000000000001".into(),
        name: "backend".into(),
        key_prefix: "aaaaaaaa".into(),
        key_hash: "h1".into(),
        previous_key_prefix: None,
        previous_key_hash: None,
        previous_key_expires_at: None,
        scopes: vec!["grants:read".into(), "proxy:execute".into()],
        status: KeyStatus::Active,
        created_at: 1,
        updated_at: 1,
        expires_at: None,
        last_used_at: None,
    };
    s.keys.insert_api_key(&k).await.unwrap();
    assert_eq!(s.keys.get_api_key(&k.id).await.unwrap().as_ref(), Some(&k));
    let dup = ApiKeyRow {
        id: "other".into(),
        ..k.clone()
    };
    assert!(matches!(
        s.keys.insert_api_key(&dup).await.unwrap_err(),
        StoreError::Conflict(_)
    ));
    let mut rotated = k.clone();
    rotated.previous_key_prefix = Some(rotated.key_prefix.clone());
    rotated.previous_key_hash = Some(rotated.key_hash.clone());
    rotated.previous_key_expires_at = Some(50);
    rotated.key_prefix = "bbbbbbbb".into();
    rotated.key_hash = "h2".into();
    rotated.status = KeyStatus::Revoked;
    rotated.updated_at = 2;
    assert!(s.keys.update_api_key(&rotated).await.unwrap());
    for p in ["aaaaaaaa", "bbbbbbbb"] {
        assert_eq!(
            s.keys.get_api_key_by_prefix(p).await.unwrap().as_ref(),
            Some(&rotated)
        );
    }
    assert!(
        s.keys
            .get_api_key_by_prefix("cccccccc")
            .await
            .unwrap()
            .is_none()
    );
    s.keys.touch_api_key(&k.id, 100).await.unwrap();
    assert_eq!(
        s.keys.list_api_keys().await.unwrap()[0].last_used_at,
        Some(100)
    );

    // Grants and agents are found by their SDK UUID, derived from their ids.
    let g = grant((PrincipalKind::User, "alice"), "github", "a");
    s.grants.insert_grant(&g).await.unwrap();
    let by_uuid = s
        .grants
        .get_grant_by_sdk_id(&sdk_uuid(&g.id))
        .await
        .unwrap();
    assert_eq!(by_uuid.map(|r| r.id), Some(g.id.clone()));
    let a = agent("sdk-bot", "dddddddd");
    s.agents.insert_agent(&a).await.unwrap();
    let by_uuid = s
        .agents
        .get_agent_by_sdk_id(&sdk_uuid(&a.id))
        .await
        .unwrap();
    assert_eq!(by_uuid.map(|r| r.id), Some(a.id.clone()));
    assert_eq!(
        s.grants.backfill_sdk_ids().await.unwrap(),
        0,
        "new rows have theirs"
    );
}
