//! Binds Streamable HTTP sessions to the principal that created them: a request naming another
//! principal's `Mcp-Session-Id` is answered like an unknown session (404), so a leaked session id
//! is worthless to anyone else.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Request, State},
    http::{Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::vault::Principal;

const HEADER: &str = "mcp-session-id";

#[derive(Clone, Default)]
pub struct SessionOwners(Arc<Mutex<HashMap<String, String>>>);

pub async fn bind(State(owners): State<SessionOwners>, req: Request, next: Next) -> Response {
    let principal = req
        .extensions()
        .get::<Principal>()
        .map(|p| p.id().to_owned());
    let asked = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(sid) = &asked {
        let owner = owners.0.lock().expect("session owners").get(sid).cloned();
        if owner.is_some() && owner != principal {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({
                    "jsonrpc": "2.0", "id": null,
                    "error": { "code": -32001, "message": "Session not found" }
                })),
            )
                .into_response();
        }
    }
    let deleting = req.method() == Method::DELETE;
    let resp = next.run(req).await;
    if let (Some(p), Some(sid)) = (
        principal,
        resp.headers().get(HEADER).and_then(|v| v.to_str().ok()),
    ) {
        owners
            .0
            .lock()
            .expect("session owners")
            .entry(sid.to_owned())
            .or_insert(p);
    }
    if deleting
        && resp.status().is_success()
        && let Some(sid) = asked
    {
        owners.0.lock().expect("session owners").remove(&sid);
    }
    resp
}
