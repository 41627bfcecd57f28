//! The Connect web pages, approval pages and the OAuth callback, as an axum router. Served on a
//! loopback listener in stdio mode and under the public base URL in hosted mode.
//!
//! Every state-changing form (authorize, cancel, approve/deny) checks a CSRF token bound to the
//! link and the viewer, and refuses posts the browser marks as cross-site (`crate::csrf`). In
//! hosted mode every page first checks that the signed-in user owns the link.

pub mod pages;

use std::sync::Arc;

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::HeaderMap,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;

pub use crate::html::html;
use crate::{
    auth::browser::{BrowserAuth, LOGIN_STATE_PREFIX},
    csrf,
    vault::{CallbackOutcome, CallbackParams, ConnectView, Vault},
};

#[derive(Clone)]
pub struct WebState {
    pub vault: Vault,
    /// Hosted mode: browsers sign in, and a Connect link works only for its owner.
    pub browser: Option<Arc<BrowserAuth>>,
    csrf: Arc<csrf::Csrf>,
}

/// Single-user routes (stdio mode): `/connect/{token}`, `/connect/{token}/authorize`,
/// `/connect/{token}/cancel`, `/oauth/callback`, `/approvals/{token}`, `/healthz`.
pub fn router(vault: Vault) -> Router {
    router_with(vault, None)
}

/// The same routes; with `browser`, every page first checks who the browser is.
pub fn router_with(vault: Vault, browser: Option<Arc<BrowserAuth>>) -> Router {
    let csrf = Arc::new(csrf::Csrf::new(vault.derived_key("csrf-forms")));
    Router::new()
        .route("/connect/{token}", get(connect_page))
        .route("/connect/{token}/authorize", post(authorize))
        .route("/connect/{token}/cancel", post(cancel))
        .route("/connect/{token}/key", post(submit_key))
        .route("/oauth/callback", get(callback))
        .route(
            "/approvals/{token}",
            get(approval_page).post(approval_decision),
        )
        .route("/login", get(login))
        .route("/healthz", get(healthz))
        .with_state(WebState {
            vault,
            browser,
            csrf,
        })
}

/// A link token as a path segment (it came decoded from the path; it goes back encoded, so
/// no `..` or `/` in it can change where a sign-in returns to).
fn seg(token: &str) -> String {
    percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The viewer a form token is bound to: the signed-in user, or `local` in single-user mode.
fn viewer_key(viewer: Option<&str>) -> &str {
    viewer.unwrap_or("local")
}

fn forbidden(message: &str) -> Response {
    html(403, pages::message_page("Not allowed", "bad", message))
}

impl WebState {
    /// Both CSRF checks of a form post (see `csrf`): the refusal to send, if any.
    fn refuse_form(
        &self,
        headers: &HeaderMap,
        parts: &[&str],
        token: Option<&str>,
    ) -> Option<Response> {
        if !csrf::same_origin(headers, &self.vault.settings().connect.public_url) {
            return Some(forbidden(
                "This form was sent from another site. Open the link yourself and use the buttons on the page.",
            ));
        }
        if !token.is_some_and(|t| self.csrf.verify(parts, t)) {
            return Some(forbidden(
                "This form is out of date or did not come from this page. Reload the page and try again.",
            ));
        }
        None
    }
}

/// In hosted mode: `Ok(Some(principal))` when the browser's user owns the link, a sign-in
/// redirect or a refusal page otherwise. In single-user mode: `Ok(None)`.
async fn check_owner(
    s: &WebState,
    headers: &HeaderMap,
    token: &str,
    path: &str,
) -> Result<Option<String>, Response> {
    let Some(b) = &s.browser else { return Ok(None) };
    let owner = match s.vault.connect_owner(token).await {
        Ok(Some(o)) => o,
        Ok(None) => {
            let (status, body) = pages::connect_page(&ConnectView::Invalid, token, "");
            return Err(html(status, body));
        }
        Err(e) => return Err(server_error(&e.to_string())),
    };
    match b.session(headers) {
        None => Err(b.start_login(path)),
        Some(p) if p.id() == owner => Ok(Some(owner)),
        Some(_) => {
            let (status, body) = pages::callback_page(&CallbackOutcome::WrongUser);
            Err(html(status, body))
        }
    }
}

/// Hosted mode: the approval's owner must be the signed-in user.
async fn approval_viewer(
    s: &WebState,
    headers: &HeaderMap,
    path: &str,
) -> Result<Option<String>, Response> {
    match &s.browser {
        None => Ok(None),
        Some(b) => match b.session(headers) {
            Some(p) => Ok(Some(p.id().to_owned())),
            None => Err(b.start_login(path)),
        },
    }
}

async fn approval_page(
    State(s): State<WebState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let viewer = match approval_viewer(&s, &headers, &format!("/approvals/{}", seg(&token))).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match s.vault.approval_by_token(&token).await {
        Ok(Some(a)) if viewer.as_deref().is_none_or(|v| v == a.principal) => {
            let csrf = s
                .csrf
                .token(&["approval", &token, viewer_key(viewer.as_deref())]);
            html(200, pages::approval_page(&a, &token, &csrf))
        }
        Ok(_) => invalid_approval(),
        Err(e) => server_error(&e.to_string()),
    }
}

fn invalid_approval() -> Response {
    html(
        404,
        pages::message_page(
            "This approval link is not valid",
            "bad",
            "It is unknown, or belongs to someone else.",
        ),
    )
}

#[derive(Deserialize)]
struct DecisionForm {
    decision: String,
    #[serde(default)]
    csrf: Option<String>,
}

async fn approval_decision(
    State(s): State<WebState>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(f): Form<DecisionForm>,
) -> Response {
    let viewer = match approval_viewer(&s, &headers, &format!("/approvals/{}", seg(&token))).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Some(r) = s.refuse_form(
        &headers,
        &["approval", &token, viewer_key(viewer.as_deref())],
        f.csrf.as_deref(),
    ) {
        return r;
    }
    let approve = match f.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return forbidden("Unknown decision."),
    };
    match s
        .vault
        .decide_by_token(&token, approve, viewer.as_deref())
        .await
    {
        Ok(Some(a)) => html(200, pages::approval_done(&a)),
        Ok(None) => invalid_approval(),
        Err(e) => html(
            409,
            pages::message_page("Already decided", "bad", &e.to_string()),
        ),
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login(State(s): State<WebState>, Query(q): Query<LoginQuery>) -> Response {
    match &s.browser {
        Some(b) => b.start_login(q.next.as_deref().unwrap_or("/")),
        None => html(
            404,
            pages::message_page(
                "Not here",
                "bad",
                "This vault-mcp has no sign-in; it serves a single local user.",
            ),
        ),
    }
}

async fn connect_page(
    State(s): State<WebState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let viewer = match check_owner(&s, &headers, &token, &format!("/connect/{}", seg(&token))).await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    match s.vault.connect_view(&token).await {
        Ok(view) => {
            let csrf = s
                .csrf
                .token(&["connect", &token, viewer_key(viewer.as_deref())]);
            let (status, body) = pages::connect_page(&view, &token, &csrf);
            html(status, body)
        }
        Err(e) => server_error(&e.to_string()),
    }
}

#[derive(Deserialize)]
struct AuthorizeForm {
    provider: String,
    #[serde(default)]
    csrf: Option<String>,
    /// The "let the agent use this grant" checkbox (present only when ticked).
    #[serde(default)]
    delegate: Option<String>,
}

/// The checks every form posted on a Connect page passes first: the signed-in user owns the link
/// (before an OAuth attempt or a key is bound to it, or the session is cancelled), and the form
/// carries its CSRF token.
async fn connect_form_guard(
    s: &WebState,
    headers: &HeaderMap,
    token: &str,
    csrf: Option<&str>,
) -> Result<(), Response> {
    let viewer = check_owner(s, headers, token, &format!("/connect/{}", seg(token))).await?;
    match s.refuse_form(
        headers,
        &["connect", token, viewer_key(viewer.as_deref())],
        csrf,
    ) {
        Some(r) => Err(r),
        None => Ok(()),
    }
}

async fn authorize(
    State(s): State<WebState>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(f): Form<AuthorizeForm>,
) -> Response {
    if let Err(r) = connect_form_guard(&s, &headers, &token, f.csrf.as_deref()).await {
        return r;
    }
    let delegate = f.delegate.as_deref() == Some("1");
    match s
        .vault
        .begin_authorization(&token, &f.provider, delegate)
        .await
    {
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
            let (status, body) = pages::connect_page(&view, &token, "");
            html(status, body)
        }
    }
}

#[derive(Deserialize)]
struct KeyForm {
    provider: String,
    #[serde(default)]
    csrf: Option<String>,
    secret: crate::secret::Secret,
    #[serde(default)]
    delegate: Option<String>,
}

/// An API key typed on the Connect page (API-key providers): stored as the link owner's grant.
async fn submit_key(
    State(s): State<WebState>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(f): Form<KeyForm>,
) -> Response {
    if let Err(r) = connect_form_guard(&s, &headers, &token, f.csrf.as_deref()).await {
        return r;
    }
    let delegate = f.delegate.as_deref() == Some("1");
    match s
        .vault
        .submit_key(&token, &f.provider, f.secret, delegate)
        .await
    {
        Ok(outcome) => {
            let (status, body) = pages::callback_page(&outcome);
            html(status, body)
        }
        Err(view) => {
            let (status, body) = pages::connect_page(&view, &token, "");
            html(status, body)
        }
    }
}

#[derive(Deserialize)]
struct CancelForm {
    #[serde(default)]
    csrf: Option<String>,
}

async fn cancel(
    State(s): State<WebState>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(f): Form<CancelForm>,
) -> Response {
    if let Err(r) = connect_form_guard(&s, &headers, &token, f.csrf.as_deref()).await {
        return r;
    }
    match s.vault.cancel_connect(&token).await {
        Ok(true) => html(200, pages::cancelled_page()),
        Ok(false) => match s.vault.connect_view(&token).await {
            Ok(view) => {
                let (status, body) = pages::connect_page(&view, &token, "");
                html(status, body)
            }
            Err(e) => server_error(&e.to_string()),
        },
        Err(e) => server_error(&e.to_string()),
    }
}

async fn callback(
    State(s): State<WebState>,
    headers: HeaderMap,
    Query(p): Query<CallbackParams>,
) -> Response {
    // One redirect URI serves both the users' own sign-in and provider Connect flows.
    if let Some(b) = &s.browser
        && p.state
            .as_deref()
            .is_some_and(|st| st.starts_with(LOGIN_STATE_PREFIX))
    {
        return b.finish_login(&headers, &p).await;
    }
    // Hosted mode: the provider's answer only counts for the browser of the link's owner.
    let viewer = match &s.browser {
        Some(b) => match b.session(&headers) {
            Some(p) => Some(p.id().to_owned()),
            None => {
                let (status, body) = pages::callback_page(&CallbackOutcome::WrongUser);
                return html(status, body);
            }
        },
        None => None,
    };
    let outcome = s.vault.complete_authorization(&p, viewer.as_deref()).await;
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
        pages::message_page(
            "Something went wrong",
            "bad",
            "The vault could not load this page. Try again in a moment; if it persists, tell the vault's operator.",
        ),
    )
}
