//! A 2026-07-28 client (rmcp's own, in `Discover` mode, so no `initialize` and no server-to-client
//! requests) against the real `vault-mcp serve` over stdio: approvals and Connect come back as
//! `InputRequiredResult`; the client answers and retries; a tampered, replayed or moved
//! `requestState` is refused. The upstream is a loopback HTTP server that counts requests.
//! (The full Connect round trip through a browser is in tests/e2e/test_in_client.py.)

use std::{
    io::Write,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use rmcp::{
    ClientHandler, ErrorData, RoleClient,
    model::{
        CallToolRequestParams, CallToolResponse, ClientCapabilities, ClientConfig,
        ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationCapability,
        FormElicitationCapability, InputResponses, ProtocolVersion, UrlElicitationCapability,
    },
    service::{ClientLifecycleMode, ClientServiceExt, RequestContext, RunningService},
    transport::TokioChildProcess,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_vault-mcp");

/// A loopback API answering every request `200 {"ok":true}`; counts what it received.
async fn upstream() -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let h = h.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // Read the head, then the body by Content-Length.
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"ok":true}"#;
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (port, hits)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Vault {
    dir: tempfile::TempDir,
    api_port: u16,
}

impl Vault {
    fn new(api_port: u16) -> Vault {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"
[connect]
listen = "127.0.0.1:{}"
[approvals]
open_browser = false
[policy]
approval_timeout_secs = 60
[[policy.rules]]
id = "posts-need-approval"
methods = ["POST"]
effect = "approve"
[providers.demo]
name = "Demo"
authorize_url = "https://auth.demo.example/authorize"
token_url = "https://auth.demo.example/token"
api_hosts = ["api.demo.example"]
default_scopes = ["read"]
client_id = "demo"
client_secret = "demo-secret"
"#,
            free_port()
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let v = Vault { dir, api_port };
        let mut add = v
            .command()
            .args(["secret", "add", "testapi", "--host"])
            .arg(format!("127.0.0.1:{api_port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        add.stdin
            .take()
            .unwrap()
            .write_all(b"sk_test_rounds\n")
            .unwrap();
        assert!(add.wait().unwrap().success(), "secret add failed");
        v
    }

    fn command(&self) -> std::process::Command {
        let mut c = std::process::Command::new(BIN);
        c.env("VAULT_MCP_CONFIG", self.dir.path().join("config.toml"))
            .env("VAULT_MCP_DATA_DIR", self.dir.path().join("data"))
            .env_remove("VAULT_MCP_MASTER_KEY");
        c
    }

    fn post(&self, n: u32) -> CallToolRequestParams {
        args(json!({
            "method": "POST",
            "url": format!("http://127.0.0.1:{}/records", self.api_port),
            "provider": "testapi",
            "json": {"n": n},
            "reason": "write a test record"
        }))
    }
}

fn args(v: Value) -> CallToolRequestParams {
    let Value::Object(m) = v else { unreachable!() };
    CallToolRequestParams::new("vault_request").with_arguments(m)
}

/// The person at the client: answers approval forms with `approve`, declines URL requests.
#[derive(Clone)]
struct Person {
    approve: bool,
    asked: Arc<Mutex<Vec<ElicitRequestParams>>>,
}

impl ClientHandler for Person {
    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        self.asked.lock().unwrap().push(request.clone());
        Ok(match request {
            ElicitRequestParams::FormElicitationParams { .. } => {
                ElicitResult::new(ElicitationAction::Accept)
                    .with_content(json!({ "approve": self.approve }))
            }
            _ => ElicitResult::new(ElicitationAction::Decline),
        })
    }

    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::default();
        caps.elicitation = Some(
            ElicitationCapability::new()
                .with_form(FormElicitationCapability::default())
                .with_url(UrlElicitationCapability::new()),
        );
        ClientConfig::new(
            caps,
            rmcp::model::Implementation::new("rounds-test", "1.0.0"),
        )
    }
}

async fn connect(v: &Vault, approve: bool) -> (RunningService<RoleClient, Person>, Person) {
    let person = Person {
        approve,
        asked: Default::default(),
    };
    let mut cmd = tokio::process::Command::from(v.command());
    cmd.arg("serve").stderr(Stdio::null());
    let client = person
        .clone()
        .serve_with_lifecycle(
            TokioChildProcess::new(cmd).unwrap(),
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("a 2026-07-28 session");
    (client, person)
}

fn structured(r: &CallToolResponse) -> Value {
    match r {
        CallToolResponse::Complete(c) => c.structured_content.clone().expect("structured content"),
        other => panic!("expected a complete result, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_through_input_required_and_state_refusals() {
    let (port, hits) = upstream().await;
    let v = Vault::new(port);
    let (client, person) = connect(&v, true).await;

    // The high-level call drives the rounds: the form is answered and the same call goes through.
    let done = client.call_tool(v.post(1)).await.expect("call");
    let out = done.structured_content.unwrap();
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    {
        let asked = person.asked.lock().unwrap();
        assert_eq!(asked.len(), 1);
        let ElicitRequestParams::FormElicitationParams { message, .. } = &asked[0] else {
            panic!("expected a form, got {:?}", asked[0])
        };
        assert!(
            message.contains("POST") && message.contains("/records"),
            "{message}"
        );
    }

    // Drive a round by hand for the refusals.
    let first = client.call_tool_once(v.post(2)).await.expect("round one");
    let CallToolResponse::InputRequired(ir) = first else {
        panic!("expected input_required, got {first:?}")
    };
    assert!(ir.input_requests.as_ref().unwrap().contains_key("approval"));
    let state = ir.request_state.clone().expect("a requestState");
    let yes: InputResponses = serde_json::from_value(
        json!({"approval": {"action": "accept", "content": {"approve": true}}}),
    )
    .unwrap();
    let retry = |params: CallToolRequestParams, state: String| {
        params
            .with_input_responses(yes.clone())
            .with_request_state(state)
    };
    let refused = |r: Result<CallToolResponse, rmcp::service::ServiceError>| match r {
        Err(rmcp::service::ServiceError::McpError(e)) => {
            e.message.contains("requestState is not valid")
        }
        _ => false,
    };
    // altered: a byte of the sealed payload changed
    let mut tampered = state.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(refused(
        client.call_tool_once(retry(v.post(2), tampered)).await
    ));
    // moved to another call (different arguments)
    assert!(refused(
        client.call_tool_once(retry(v.post(3), state.clone())).await
    ));
    assert_eq!(hits.load(Ordering::SeqCst), 1, "nothing reached the API");
    // the genuine retry goes through once
    let ok = client
        .call_tool_once(retry(v.post(2), state.clone()))
        .await
        .expect("retry");
    assert_eq!(structured(&ok)["status"], 200);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // replayed
    assert!(refused(
        client.call_tool_once(retry(v.post(2), state.clone())).await
    ));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "a replay never reaches the API"
    );
    client.cancel().await.ok();

    // Declined in the client: the call is refused and nothing is sent.
    let (client, _) = connect(&v, false).await;
    let r = client.call_tool(v.post(4)).await.expect("call");
    assert_eq!(r.is_error, Some(true));
    assert_eq!(r.structured_content.unwrap()["error"], "approval_denied");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    client.cancel().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_through_a_url_input_request() {
    let (port, _) = upstream().await;
    let v = Vault::new(port);
    let (client, person) = connect(&v, true).await;
    let call =
        args(json!({"method": "GET", "url": "https://api.demo.example/me", "provider": "demo"}));

    let first = client
        .call_tool_once(call.clone())
        .await
        .expect("round one");
    let CallToolResponse::InputRequired(ir) = first else {
        panic!("expected input_required, got {first:?}")
    };
    let requests = serde_json::to_value(ir.input_requests.as_ref().unwrap()).unwrap();
    let params = &requests["connect"]["params"];
    assert_eq!(params["mode"], "url", "{requests}");
    assert!(
        params["url"].as_str().unwrap().contains("/connect/"),
        "{params}"
    );

    // The high-level call: the person declines the URL; the answer is the link, as without rounds.
    let r = client.call_tool(call).await.expect("call");
    let out = r.structured_content.unwrap();
    assert_eq!(out["error"], "authorization_required", "{out}");
    assert!(out["connect_url"].as_str().unwrap().contains("/connect/"));
    assert!(matches!(
        person.asked.lock().unwrap().as_slice(),
        [ElicitRequestParams::UrlElicitationParams { .. }]
    ));
    client.cancel().await.ok();
}
