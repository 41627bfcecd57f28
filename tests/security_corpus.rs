//! Two adversarial corpora, run through the real request pipeline (the library's `Vault`, a
//! SQLite vault in a temporary directory, a loopback upstream that records what reaches it):
//!
//! - **exfiltration**: more than 100 URLs that try to send a credential somewhere other than
//!   its provider's API host (userinfo, IP literal spellings, metadata addresses, homographs,
//!   trailing dots, ports, schemes, templated hosts, redirects). Every one must be refused
//!   before anything leaves, and the upstream must receive no credential.
//! - **policy bypass**: for each rule kind, spellings of a denied request (`//admin`,
//!   `/%61dmin`, `/x/../admin`, trailing-dot hosts, HEAD for GET, redirects into a denied
//!   path). Every one must be refused, and the denied path must never reach the upstream.
//!
//! Both tables are generated into `docs/security.md` (between marker comments); the test fails
//! when the document is out of date. Regenerate with `UPDATE_SECURITY_DOCS=1 cargo test --test
//! security_corpus`.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::Request,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
};
use vault_mcp::{
    config::{Config, Overrides},
    crypto::{Keyring, MasterKey},
    providers::{Catalog, Injection},
    secret,
    store::{AuditFilter, SqliteStore, Stores},
    vault::{
        ApiRequest, Caller, GrantSelector, NewSecret, Principal, RequestBody, Vault, VaultError,
        VaultSettings,
    },
};

const CANARY: &str = "cnry-exfil-7f3a9c2e51";

/// What reached the upstream: (path with query, credential header if any).
type Hits = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn upstream(hits: Hits) -> u16 {
    let app = Router::new().fallback(move |req: Request| {
        let hits = hits.clone();
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let auth = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            hits.lock().unwrap().push((path.clone(), auth));
            if let Some(to) = path.strip_prefix("/redirect?to=") {
                let to = percent_encoding::percent_decode_str(to)
                    .decode_utf8_lossy()
                    .into_owned();
                let mut h = HeaderMap::new();
                h.insert(header::LOCATION, to.parse().unwrap());
                return (StatusCode::FOUND, h, "").into_response();
            }
            (StatusCode::OK, "{\"ok\":true}").into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

struct Lab {
    vault: Vault,
    stores: Stores,
    caller: Caller,
    hits: Hits,
    port: u16,
    _dir: tempfile::TempDir,
}

async fn lab(policy: &str) -> Lab {
    let hits: Hits = Arc::default();
    let port = upstream(hits.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = Config::load_with(&Overrides::default(), &|_| None).unwrap();
    let stores = Stores::sqlite(
        SqliteStore::open(&dir.path().join("vault.db"))
            .await
            .unwrap(),
    );
    let policy: Option<toml::Value> = (!policy.is_empty())
        .then(|| toml::from_str::<toml::Value>(policy).unwrap())
        .and_then(|v| v.get("policy").cloned());
    let vault = Vault::open(
        stores.clone(),
        Keyring::from_keys(vec![MasterKey::generate()]),
        Catalog::load(&toml::Table::new(), &|_| None).unwrap(),
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
    let caller = Caller::new(Principal::local("attacker"), "corpus");
    // Two grants: the upstream over loopback http (the policy corpus), and a real-looking
    // https API host (the exfiltration corpus never reaches any network).
    for (provider, hosts) in [
        (
            "upstream",
            vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")],
        ),
        ("target", vec!["api.target.example".to_owned()]),
    ] {
        vault
            .add_secret(
                &caller,
                NewSecret {
                    provider: provider.into(),
                    account: "default".into(),
                    secret: secret::secret(CANARY),
                    username: None,
                    injection: Some(Injection::Bearer),
                    hosts: Some(hosts),
                    owner: Default::default(),
                    session_token: None,
                    ttl_secs: None,
                },
            )
            .await
            .unwrap();
    }
    Lab {
        vault,
        stores,
        caller,
        hits,
        port,
        _dir: dir,
    }
}

fn request(method: &str, url: &str, provider: &str) -> ApiRequest {
    ApiRequest {
        method: method.into(),
        url: url.into(),
        path_params: BTreeMap::new(),
        query_params: vec![],
        headers: BTreeMap::new(),
        body: RequestBody::None,
        grant: GrantSelector::Provider {
            provider: provider.into(),
            account: None,
        },
        reason: Some("corpus".into()),
        required_scopes: vec![],
        read_only: false,
        context: Default::default(),
    }
}

fn outcome(r: &Result<vault_mcp::vault::ApiResponse, VaultError>) -> String {
    match r {
        Ok(resp) => format!("SENT ({})", resp.status),
        Err(e) => e.code().to_owned(),
    }
}

/// The exfiltration corpus: (category, URL). `{p}` is a path on the real host.
fn exfil_corpus() -> Vec<(&'static str, String)> {
    let mut c: Vec<(&'static str, String)> = Vec::new();
    let real = "api.target.example";
    for u in [
        format!("https://user@{real}/x"),
        format!("https://user:pw@{real}/x"),
        format!("https://{real}@evil.example/x"),
        format!("https://{real}:443@evil.example/x"),
        format!("https://evil.example@{real}/x"),
        format!("https://evil.example%40{real}/x"),
        format!("https://evil.example\\@{real}/x"),
        format!("https://{real}%2f@evil.example/x"),
        format!("https://{real}%23@evil.example/x"),
        format!("https://:@{real}/x"),
    ] {
        c.push(("userinfo", u));
    }
    for h in [
        "127.0.0.1",
        "2130706433",
        "0x7f000001",
        "017700000001",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "127.1",
        "0",
        "0.0.0.0",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[0:0:0:0:0:ffff:127.0.0.1]",
        "10.0.0.1",
        "192.168.1.1",
        "172.16.0.1",
        "[fd00::1]",
        "[::]",
        "3232235777",
        "0xc0a80101",
    ] {
        c.push(("IP literal", format!("https://{h}/x")));
    }
    for h in [
        "169.254.169.254",
        "[fd00:ec2::254]",
        "metadata.google.internal",
        "metadata",
        "169.254.170.2",
        "100.100.100.200",
        "2852039166",
        "0xa9fea9fe",
        "[::ffff:169.254.169.254]",
        "instance-data",
    ] {
        c.push(("metadata address", format!("http://{h}/latest/meta-data/")));
    }
    for h in [
        "api.target.exаmple", // Cyrillic а
        "аpi.target.example", // Cyrillic а
        "api.tаrget.example", // Cyrillic а
        "api.target.examp1e",
        "api.target.example.evil.example",
        "api-target.example",
        "apitarget.example",
        "api.target.example.",
        "API.TARGET.EXAMPLE.evil.example",
        "xn--pi-7ba.target.example",
    ] {
        c.push(("IDN / lookalike", format!("https://{h}/x")));
    }
    for h in [
        "evil.example.",
        "evil.example..",
        "target.example.",
        "example.",
        "api.target.example..",
    ] {
        c.push(("trailing dot", format!("https://{h}/x")));
    }
    for p in ["8443", "80", "444", "22", "0", "65535", "1"] {
        c.push(("port", format!("https://{real}:{p}/x")));
    }
    for u in [
        format!("http://{real}/x"),
        format!("ftp://{real}/x"),
        "file:///etc/passwd".to_owned(),
        format!("file://{real}/x"),
        format!("gopher://{real}/x"),
        format!("ws://{real}/x"),
        format!("wss://{real}/x"),
        format!("javascript:alert(1)//{real}"),
        format!("data:text/plain,{real}"),
        format!("//evil.example/{real}"),
        format!("https:/{real}/x/../evil"),
        format!("HTTP://{real}/x"),
        format!("hxxps://{real}/x"),
        format!("https//{real}/x"),
        format!("{real}/x"),
        "/x".to_owned(),
    ] {
        c.push(("scheme / shape", u));
    }
    for u in [
        "https://{host}/x".to_owned(),
        "https://{host}.example/x".to_owned(),
        format!("https://{real}.{{zone}}/x"),
        "https://api.{x}.example/x".to_owned(),
        "{scheme}://api.target.example/x".to_owned(),
    ] {
        c.push(("templated host", u));
    }
    for u in [
        "https://evil.example/x".to_owned(),
        "https://evil.example/api.target.example".to_owned(),
        "https://evil.example?api.target.example".to_owned(),
        "https://evil.example#api.target.example".to_owned(),
        "https://evil.example\\api.target.example".to_owned(),
        "https://evil.example%2fapi.target.example/".to_owned(),
        "https://evil.example%00.api.target.example/".to_owned(),
        "https://evil.example\t.api.target.example/".to_owned(),
        "https://target.example/x".to_owned(),
        "https://example/x".to_owned(),
        "https://localhost/x".to_owned(),
        "https://localhost./x".to_owned(),
        "https://api.target.example.localhost/x".to_owned(),
        "https://*.target.example/x".to_owned(),
        "https://api.target.example%2eevil.example/x".to_owned(),
        "https://api.target.example。evil.example/x".to_owned(),
        "https://api。target。example.evil.example/x".to_owned(),
        "https://[api.target.example]/x".to_owned(),
        "https://api.target.example:443:8443/x".to_owned(),
        "https://api.target.example%3a8443/x".to_owned(),
    ] {
        c.push(("foreign host", u));
    }
    c
}

#[derive(Default)]
struct Table {
    rows: Vec<String>,
}

impl Table {
    /// A row: the kind in words, the request and the result as code.
    fn row(&mut self, kind: &str, request: &str, result: &str) {
        let code = |s: &str| {
            let s = s
                .replace('|', "\\|")
                .replace('\t', "\\t")
                .replace('\n', "\\n")
                .replace('`', "'");
            format!("`{s}`")
        };
        self.rows
            .push(format!("| {kind} | {} | {} |", code(request), code(result)));
    }
}

/// Replace the text between `<!-- {name}:begin -->` and `<!-- {name}:end -->` in
/// docs/security.md, or check it is already that.
fn sync_doc(name: &str, body: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/security.md");
    let doc = std::fs::read_to_string(&path).expect("docs/security.md");
    let (begin, end) = (
        format!("<!-- {name}:begin -->\n"),
        format!("<!-- {name}:end -->"),
    );
    let a = doc.find(&begin).expect("begin marker") + begin.len();
    let b = doc.find(&end).expect("end marker");
    if doc[a..b] == *body {
        return;
    }
    if std::env::var("UPDATE_SECURITY_DOCS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, format!("{}{}{}", &doc[..a], body, &doc[b..])).unwrap();
        return;
    }
    panic!(
        "docs/security.md ({name}) is out of date; rerun with UPDATE_SECURITY_DOCS=1 cargo test --test security_corpus"
    );
}

async fn audited_refusals(stores: &Stores) -> usize {
    stores
        .audit
        .query_audit(&AuditFilter {
            after_seq: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .filter(|r| r.entry.event == "request" && r.entry.outcome.as_str() != "ok")
        .count()
}

#[tokio::test]
async fn exfiltration_corpus_is_refused_before_anything_leaves() {
    let lab = lab("").await;
    let corpus = exfil_corpus();
    assert!(corpus.len() >= 100, "{} URLs", corpus.len());
    let mut table = Table::default();
    let mut sent = Vec::new();
    for (category, url) in &corpus {
        let r = lab
            .vault
            .request(&lab.caller, request("GET", url, "target"))
            .await;
        let o = outcome(&r);
        if r.is_ok() {
            sent.push(url.clone());
        }
        table.row(category, url, &o);
    }
    assert!(sent.is_empty(), "sent with the credential: {sent:?}");
    assert!(
        lab.hits.lock().unwrap().is_empty(),
        "the upstream was reached"
    );
    assert_eq!(
        audited_refusals(&lab.stores).await,
        corpus.len(),
        "every refusal is audited"
    );
    let body = format!(
        "{} URLs, {} refused, 0 sent.\n\n| category | URL | result |\n|---|---|---|\n{}\n",
        corpus.len(),
        corpus.len() - sent.len(),
        table.rows.join("\n")
    );
    sync_doc("exfil-corpus", &body);
}

const POLICY: &str = r#"
[[policy.rules]]
id = "no-admin"
paths = ["/admin/**"]
effect = "deny"

[[policy.rules]]
id = "no-private-reads"
methods = ["GET"]
paths = ["/private/**"]
effect = "deny"

[[policy.rules]]
id = "no-localhost-name"
hosts = ["localhost"]
effect = "deny"

[[policy.rules]]
id = "no-repo-secrets"
paths = ["/repos/acme/secret/**"]
effect = "deny"
"#;

#[tokio::test]
async fn policy_bypass_corpus_is_denied() {
    let lab = lab(POLICY).await;
    let api = format!("http://127.0.0.1:{}", lab.port);
    let named = format!("http://localhost:{}", lab.port);
    let mut cases: Vec<(&str, &str, String)> = Vec::new();
    for p in [
        "/admin/users",
        "//admin/users",
        "///admin//users",
        "/%61dmin/users",
        "/%61%64%6d%69%6e/users",
        "/ADMIN/users",
        "/Admin/Users",
        "/x/../admin/users",
        "/x/%2e%2e/admin/users",
        "/./admin/users",
        "/admin;jsessionid=1/users",
        "/admin%2fusers",
        "/admin%2Fusers",
        "/admin/./users",
        "/admin/",
        "/admin",
        "/admin%5cusers",
        "/%2fadmin/users",
        "/public/../admin/users",
        "/public/%2e%2e/admin",
    ] {
        cases.push(("path deny (/admin/**)", "GET", format!("{api}{p}")));
    }
    for (m, p) in [
        ("GET", "/private/data"),
        ("HEAD", "/private/data"),
        ("get", "/private/data"),
        ("GET", "//private/data"),
        ("HEAD", "/%70rivate/data"),
        ("GET", "/PRIVATE/data"),
    ] {
        cases.push(("method deny (GET covers HEAD)", m, format!("{api}{p}")));
    }
    for h in [
        format!("{named}/x"),
        format!("http://localhost.:{}/x", lab.port),
        format!("http://LOCALHOST:{}/x", lab.port),
        format!("http://LocalHost.:{}/x", lab.port),
    ] {
        cases.push(("host deny (localhost)", "GET", h));
    }
    for p in [
        "/repos/acme/secret/contents",
        "/repos/ACME/Secret/contents",
        "/repos/acme//secret/contents",
        "/repos/acme/secret%2fcontents",
        "/repos/%61cme/secret/issues",
    ] {
        cases.push((
            "path deny, any case (/repos/acme/secret/**)",
            "GET",
            format!("{api}{p}"),
        ));
    }
    for to in [
        "/admin/users",
        "//admin/users",
        "/%61dmin/users",
        "/x/../admin/users",
        "/private/data",
    ] {
        cases.push((
            "redirect hop into a denied path",
            "GET",
            format!(
                "{api}/redirect?to={}",
                url::form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
            ),
        ));
    }
    let mut table = Table::default();
    let mut allowed = Vec::new();
    for (kind, method, url) in &cases {
        let r = lab
            .vault
            .request(&lab.caller, request(method, url, "upstream"))
            .await;
        // A redirect the vault does not follow (e.g. `//admin/users` is another host) is as
        // good as a refusal: the denied path is never requested with the credential.
        let unfollowed = kind.starts_with("redirect")
            && matches!(&r, Ok(resp) if (300..400).contains(&resp.status));
        let o = if unfollowed {
            format!("not followed ({})", outcome(&r))
        } else {
            outcome(&r)
        };
        if !unfollowed && !matches!(&r, Err(VaultError::PolicyViolation { .. })) {
            allowed.push(format!("{method} {url} -> {o}"));
        }
        let shown = url.replace(&format!(":{}", lab.port), ":{port}");
        table.row(kind, &format!("{method} {shown}"), &o);
    }
    assert!(allowed.is_empty(), "not denied: {allowed:#?}");
    let hits = lab.hits.lock().unwrap().clone();
    let reached: Vec<&String> = hits
        .iter()
        .map(|(p, _)| p)
        .filter(|p| !p.starts_with("/redirect"))
        .collect();
    assert!(
        reached.is_empty(),
        "denied paths reached the upstream: {reached:?}"
    );
    // Allowed spellings still work (the rules are not simply blocking everything).
    let ok = lab
        .vault
        .request(
            &lab.caller,
            request("GET", &format!("{api}/public/x"), "upstream"),
        )
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    let body = format!(
        "{} requests, {} denied, 0 reached the upstream.\n\n| rule kind | request | result |\n|---|---|---|\n{}\n",
        cases.len(),
        cases.len() - allowed.len(),
        table.rows.join("\n")
    );
    sync_doc("policy-corpus", &body);
}
