//! The Connect web pages and the OAuth callback, as an axum router. Served on a loopback
//! listener in stdio mode and under the public base URL in hosted mode.

pub mod pages;

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;

use crate::{connect::CallbackParams, vault::Vault};

#[derive(Clone)]
pub struct WebState {
    pub vault: Vault,
}

/// Routes: `/connect/{token}`, `/connect/{token}/authorize`, `/connect/{token}/cancel`,
/// `/oauth/callback`, `/healthz`.
pub fn router(vault: Vault) -> Router {
    Router::new()
        .route("/connect/{token}", get(connect_page))
        .route("/connect/{token}/authorize", post(authorize))
        .route("/connect/{token}/cancel", post(cancel))
        .route("/oauth/callback", get(callback))
        .route("/healthz", get(healthz))
        .with_state(WebState { vault })
}

/// An HTML answer with headers that keep the link token and the page to ourselves.
pub fn html(status: u16, body: String) -> Response {
    let mut r = (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The Connect token is in our URL: never send it to the provider as a Referer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'"),
    );
    r
}

async fn connect_page(State(s): State<WebState>, Path(token): Path<String>) -> Response {
    match s.vault.connect_view(&token).await {
        Ok(view) => {
            let (status, body) = pages::connect_page(&view, &token);
            html(status, body)
        }
        Err(e) => server_error(&e.to_string()),
    }
}

#[derive(Deserialize)]
struct AuthorizeForm {
    provider: String,
}

async fn authorize(
    State(s): State<WebState>,
    Path(token): Path<String>,
    Form(f): Form<AuthorizeForm>,
) -> Response {
    match s.vault.begin_authorization(&token, &f.provider).await {
        Ok(url) => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&url) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r.headers_mut().insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(view) => {
            let (status, body) = pages::connect_page(&view, &token);
            html(status, body)
        }
    }
}

async fn cancel(State(s): State<WebState>, Path(token): Path<String>) -> Response {
    match s.vault.cancel_connect(&token).await {
        Ok(true) => html(200, pages::cancelled_page()),
        Ok(false) => match s.vault.connect_view(&token).await {
            Ok(view) => {
                let (status, body) = pages::connect_page(&view, &token);
                html(status, body)
            }
            Err(e) => server_error(&e.to_string()),
        },
        Err(e) => server_error(&e.to_string()),
    }
}

async fn callback(State(s): State<WebState>, Query(p): Query<CallbackParams>) -> Response {
    let outcome = s.vault.complete_authorization(&p).await;
    let (status, body) = pages::callback_page(&outcome);
    html(status, body)
}

async fn healthz() -> Response {
    let mut r = axum::Json(serde_json::json!({"status": "ok", "service": "vault-mcp", "version": env!("CARGO_PKG_VERSION")})).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn server_error(message: &str) -> Response {
    tracing::error!(error = %message, "connect page failed");
    html(
        500,
        pages::page(
            "Something went wrong",
            "bad",
            "<p>The vault could not load this page. Try again in a moment; if it persists, tell the vault's operator.</p>",
        ),
    )
}
