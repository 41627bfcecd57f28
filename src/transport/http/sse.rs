//! The legacy HTTP+SSE transport (protocol 2024-11-05) for older hosted agents: `GET /sse` opens
//! an event stream whose first event names the message endpoint; the client POSTs JSON-RPC there
//! (`202 Accepted`) and reads every answer from the stream. rmcp has no server side for it, so
//! this adapts the pair to an rmcp transport (a sink and a stream over channels). Each stream is
//! bound to the principal that opened it; POSTs from anyone else are refused.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Extension,
    body::Bytes,
    extract::{Query, State},
    http::StatusCode,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{SinkExt, StreamExt, channel::mpsc};
use rmcp::{
    ServiceExt,
    model::{ClientJsonRpcMessage, ServerJsonRpcMessage},
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{
    mcp::{IdentitySource, InFlight, ToolSet, VaultMcp},
    vault::{Principal, Vault},
};

struct Session {
    principal: String,
    to_server: mpsc::Sender<ClientJsonRpcMessage>,
}

#[derive(Clone)]
pub struct SseState {
    inflight: InFlight,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    vault: Vault,
    tools: Arc<ToolSet>,
    shutdown: CancellationToken,
    /// Path clients POST to, e.g. `/message`.
    message_path: String,
}

impl SseState {
    pub fn new(
        inflight: InFlight,
        vault: Vault,
        tools: Arc<ToolSet>,
        shutdown: CancellationToken,
        message_path: String,
    ) -> Self {
        SseState {
            inflight,
            sessions: Arc::default(),
            vault,
            tools,
            shutdown,
            message_path,
        }
    }
}

/// Removes the session and stops its server when the client goes away.
struct Guard {
    id: String,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    stop: CancellationToken,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.sessions.lock().expect("sse sessions").remove(&self.id);
        self.stop.cancel();
    }
}

/// The stream also names its session in an `Mcp-Session-Id` response header, like Streamable
/// HTTP does, so a load balancer can stick the session's POSTs (`?sessionId=`) to this instance.
pub async fn open(
    State(st): State<SseState>,
    Extension(principal): Extension<Principal>,
) -> impl IntoResponse {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (to_server, from_client) = mpsc::channel::<ClientJsonRpcMessage>(64);
    let (to_client, from_server) = mpsc::channel(64);
    st.sessions.lock().expect("sse sessions").insert(
        id.clone(),
        Session {
            principal: principal.id().to_owned(),
            to_server,
        },
    );
    let stop = st.shutdown.child_token();
    // Each POST carries its own request parts (principal and the token's current groups), as
    // on Streamable HTTP; the session is bound to the principal that opened it.
    let server = VaultMcp::new(
        st.vault.clone(),
        IdentitySource::PerRequest,
        st.tools.clone(),
    )
    .with_inflight(st.inflight.clone());
    let server_stop = stop.clone();
    tokio::spawn(async move {
        match server
            .serve_with_ct((to_client, from_client), server_stop)
            .await
        {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(e) => tracing::warn!(error = %e, "legacy SSE session ended during initialization"),
        }
    });
    let guard = Guard {
        id: id.clone(),
        sessions: st.sessions.clone(),
        stop: stop.clone(),
    };
    let endpoint = Event::default()
        .event("endpoint")
        .data(format!("{}?sessionId={id}", st.message_path));
    let messages = from_server.map(move |msg: ServerJsonRpcMessage| {
        let _keep = &guard;
        Ok::<_, Infallible>(Event::default().event("message").data(message_data(&msg)))
    });
    let stream = futures::stream::once(async move { Ok(endpoint) })
        .chain(messages)
        .take_until(async move { stop.cancelled().await });
    (
        [("mcp-session-id", id)],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
}

/// The `data` of the `message` event that carries one server message to the client.
pub fn message_data(msg: &ServerJsonRpcMessage) -> String {
    serde_json::to_string(msg).expect("JSON-RPC message serializes")
}

/// A POSTed body as the JSON-RPC message it must be (`None`: answered with 400).
pub fn parse_message(body: &[u8]) -> Option<ClientJsonRpcMessage> {
    serde_json::from_slice(body).ok()
}

#[derive(Deserialize)]
pub struct MessageQuery {
    #[serde(rename = "sessionId", alias = "session_id")]
    session_id: Option<String>,
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}

pub async fn post(
    State(st): State<SseState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<MessageQuery>,
    parts: http::request::Parts,
    body: Bytes,
) -> Response {
    let Some(id) = q.session_id else {
        return plain(
            StatusCode::BAD_REQUEST,
            "sessionId query parameter is required",
        );
    };
    let sender = {
        let map = st.sessions.lock().expect("sse sessions");
        match map.get(&id) {
            // Another user's session looks exactly like a missing one.
            Some(s) if s.principal == principal.id() => s.to_server.clone(),
            _ => return plain(StatusCode::NOT_FOUND, "unknown session"),
        }
    };
    let Some(mut msg) = parse_message(&body) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "the body is not a JSON-RPC message",
        );
    };
    {
        use rmcp::model::GetExtensions;
        match &mut msg {
            ClientJsonRpcMessage::Request(r) => {
                r.request.extensions_mut().insert(parts);
            }
            ClientJsonRpcMessage::Notification(n) => {
                n.notification.extensions_mut().insert(parts);
            }
            _ => {}
        }
    }
    let mut sender = sender;
    match sender.send(msg).await {
        Ok(()) => plain(StatusCode::ACCEPTED, "Accepted"),
        Err(_) => plain(StatusCode::NOT_FOUND, "session closed"),
    }
}
