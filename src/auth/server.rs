//! vault-mcp as the OAuth 2.1 authorization server for MCP clients (`oauth` identity mode):
//! RFC 8414 metadata, RFC 7591 dynamic client registration, `/authorize` with mandatory PKCE
//! S256, user sign-in delegated to the upstream IdP (see `browser`), our own consent page (the
//! IdP's consent covers vault-mcp, not the MCP client that registered a minute ago), our own
//! access and refresh tokens — stored hashed, audience-bound to the MCP resource (RFC 8707),
//! refresh tokens rotated with reuse detection, revocable (RFC 7009). Everything lives in the
//! store, so a restart loses no registration or token.

use crate::model::{AuditOutcome, TokenKind};
use std::sync::Arc;

use axum::{
    Form, Json, Router,
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{browser::BrowserAuth, jwt::TokenError};
use crate::{
    html::{html, message_page, page},
    store::{OAuthClientRow, OAuthCodeRow, OAuthRequestRow, OAuthServerStore, OAuthTokenRow},
    vault::{Caller, Principal, Vault, audit_entry, new_token, now, sha256_hex},
};

const CODE_TTL: i64 = 300;
const REQUEST_TTL: i64 = 900;

pub struct AuthServer {
    store: Arc<dyn OAuthServerStore>,
    vault: Vault,
    browser: Arc<BrowserAuth>,
    /// Our issuer identifier (public URL without a trailing slash).
    pub issuer: String,
    base: url::Url,
    resource: String,
    scope: String,
    access_ttl: i64,
    refresh_ttl: i64,
    max_clients: i64,
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    let mut r = (
        status,
        Json(json!({ "error": code, "error_description": description })),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn same_resource(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

fn valid_redirect_uri(u: &str) -> Result<(), String> {
    let parsed = url::Url::parse(u).map_err(|e| format!("`{u}` is not a URL ({e})"))?;
    if parsed.fragment().is_some() {
        return Err(format!("`{u}` must not contain a fragment"));
    }
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if crate::config::is_loopback_url(&parsed) => Ok(()),
        "http" => Err(format!("`{u}` must use https (http only for loopback)")),
        // private-use schemes of native apps (RFC 8252 7.1), e.g. com.example.app:/callback
        s if s.contains('.') => Ok(()),
        s => Err(format!("`{u}`: scheme `{s}` is not allowed")),
    }
}

#[derive(Deserialize)]
struct RegisterRequest {
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
    #[serde(default)]
    response_types: Option<Vec<String>>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    state: Option<String>,
    scope: Option<String>,
    resource: Option<String>,
}

#[derive(Deserialize)]
struct ContinueQuery {
    request: String,
}

#[derive(Deserialize)]
struct DecisionForm {
    request: String,
    csrf: String,
    decision: String,
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct RevokeForm {
    token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

impl AuthServer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vault: Vault,
        browser: Arc<BrowserAuth>,
        base: url::Url,
        resource: String,
        scope: String,
        access_ttl: u64,
        refresh_ttl: u64,
        max_clients: i64,
    ) -> Self {
        AuthServer {
            store: vault.oauth_server_store(),
            vault,
            browser,
            issuer: base.as_str().trim_end_matches('/').to_owned(),
            base,
            resource,
            scope,
            access_ttl: access_ttl as i64,
            refresh_ttl: refresh_ttl as i64,
            max_clients,
        }
    }

    fn url(&self, path: &str) -> String {
        self.base.join(path).expect("joinable").to_string()
    }

    /// Routes of the authorization server (mounted at the public root).
    pub fn router(self: &Arc<Self>) -> Router {
        let path = self.base.path().trim_end_matches('/').to_owned();
        let mut r = Router::new()
            .route("/.well-known/oauth-authorization-server", get(metadata))
            .route("/register", post(register))
            .route("/authorize", get(authorize))
            .route("/authorize/continue", get(authorize_continue))
            .route("/authorize/decision", post(decision))
            .route("/token", post(token))
            .route("/revoke", post(revoke));
        if !path.is_empty() {
            r = r.route(
                &format!("/.well-known/oauth-authorization-server{path}"),
                get(metadata),
            );
        }
        r.with_state(self.clone())
    }

    fn metadata_doc(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "authorization_endpoint": self.url("authorize"),
            "token_endpoint": self.url("token"),
            "registration_endpoint": self.url("register"),
            "revocation_endpoint": self.url("revoke"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
            "revocation_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
            "scopes_supported": [self.scope],
            "authorization_response_iss_parameter_supported": true,
            "client_id_metadata_document_supported": false,
        })
    }

    /// Validate one of our access tokens for `resource` with `scope`.
    pub async fn validate_access_token(
        &self,
        token: &str,
        resource: &str,
        scope: &str,
    ) -> Result<Principal, TokenError> {
        if !token.starts_with("vmat_") || token.len() > 200 {
            return Err(TokenError::Malformed);
        }
        let row = self
            .store
            .get_oauth_token(&sha256_hex(token))
            .await
            .map_err(|_| TokenError::Unavailable)?
            .filter(|t| t.kind == TokenKind::Access)
            .ok_or(TokenError::Signature)?;
        if row.revoked_at.is_some() {
            return Err(TokenError::Revoked);
        }
        if row.expires_at <= now() {
            return Err(TokenError::Expired);
        }
        if !same_resource(&row.resource, resource) {
            return Err(TokenError::Audience);
        }
        if !row.scope.split_whitespace().any(|s| s == scope) {
            return Err(TokenError::InsufficientScope);
        }
        Ok(Principal::new(row.principal, row.principal_display))
    }

    async fn audit(&self, principal: &str, event: &str, outcome: AuditOutcome, detail: String) {
        let caller = Caller::new(Principal::new(principal, principal), "oauth");
        let mut e = audit_entry(&caller, event);
        e.outcome = outcome;
        e.detail = Some(detail);
        if let Err(err) = self.vault.audit_event(e).await {
            tracing::error!(error = %err, "audit of an authorization-server event failed");
        }
    }

    fn redirect_with(&self, redirect_uri: &str, params: &[(&str, &str)]) -> Response {
        let mut u = match url::Url::parse(redirect_uri) {
            Ok(u) => u,
            Err(_) => {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    "The client's redirect URI is invalid.",
                );
            }
        };
        {
            let mut q = u.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            q.append_pair("iss", &self.issuer);
        }
        let mut r = StatusCode::FOUND.into_response();
        r.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(u.as_str()).expect("ASCII URL"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    async fn consent_page(
        &self,
        req: &OAuthRequestRow,
        request_token: &str,
        user: &Principal,
    ) -> Response {
        let client = self
            .store
            .get_oauth_client(&req.client_id)
            .await
            .ok()
            .flatten();
        let name = client
            .as_ref()
            .and_then(|c| c.client_name.clone())
            .unwrap_or_else(|| "An MCP client".into());
        let host = url::Url::parse(&req.redirect_uri)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let csrf = self.browser.mac(&["consent", request_token, user.id()]);
        let action = self.url("authorize/decision");
        let body = maud::html! {
            p {
                strong id="client-name" { (name) } " wants to use vault-mcp as "
                strong id="user" { (user.display()) }
                ": to call the APIs you connected, with your grants, through vault-mcp's tools."
            }
            section.card {
                p { "It will send you back to " strong { (host) } " afterwards." }
                p.fine { "Scopes: " code { (req.scope) } ". Credentials stay in the vault; the client never sees them." }
            }
            div.actions {
                @for (decision, id, class, label) in [("approve", "approve-client", "primary", "Allow"), ("deny", "deny-client", "secondary", "Deny")] {
                    form method="post" action=(action) {
                        input type="hidden" name="request" value=(request_token);
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="decision" value=(decision);
                        button class=(class) id=(id) type="submit" { (label) }
                    }
                }
            }
            p.fine { "Only allow clients you just added yourself." }
        };
        html(200, page(&format!("Allow {name}?"), "", body))
    }

    fn client_auth<'a>(
        headers: &HeaderMap,
        id: Option<&'a str>,
        secret: Option<&'a str>,
    ) -> (Option<String>, Option<String>) {
        if let Some(basic) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok())
            && let Some((u, p)) = basic.split_once(':')
        {
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .unwrap_or_else(|_| s.to_owned())
            };
            return (Some(dec(u)), Some(dec(p)));
        }
        (id.map(str::to_owned), secret.map(str::to_owned))
    }

    async fn authenticate_client(
        &self,
        headers: &HeaderMap,
        id: Option<&str>,
        secret: Option<&str>,
    ) -> Result<OAuthClientRow, Response> {
        let (id, secret) = Self::client_auth(headers, id, secret);
        let invalid = || {
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "unknown client or wrong credentials",
            )
        };
        let id = id.ok_or_else(invalid)?;
        let client = self
            .store
            .get_oauth_client(&id)
            .await
            .map_err(|_| {
                oauth_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "storage error",
                )
            })?
            .ok_or_else(invalid)?;
        match (&client.secret_hash, secret) {
            (None, _) => Ok(client),
            (Some(h), Some(s)) if constant_eq(h.as_bytes(), sha256_hex(&s).as_bytes()) => {
                Ok(client)
            }
            _ => Err(invalid()),
        }
    }

    async fn issue(
        &self,
        family: &str,
        client_id: &str,
        principal: &str,
        display: &str,
        scope: &str,
        resource: &str,
    ) -> Result<Value, Response> {
        let t = now();
        let access = format!("vmat_{}", new_token());
        let refresh = format!("vmrt_{}", new_token());
        let row = |hash: String, kind: TokenKind, ttl: i64| OAuthTokenRow {
            token_hash: hash,
            kind,
            family: family.into(),
            client_id: client_id.into(),
            principal: principal.into(),
            principal_display: display.into(),
            scope: scope.into(),
            resource: resource.into(),
            created_at: t,
            expires_at: t + ttl,
            revoked_at: None,
        };
        let store_err = |_| {
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "storage error",
            )
        };
        self.store
            .insert_oauth_token(&row(
                sha256_hex(&access),
                TokenKind::Access,
                self.access_ttl,
            ))
            .await
            .map_err(store_err)?;
        self.store
            .insert_oauth_token(&row(
                sha256_hex(&refresh),
                TokenKind::Refresh,
                self.refresh_ttl,
            ))
            .await
            .map_err(store_err)?;
        Ok(json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.access_ttl,
            "refresh_token": refresh,
            "scope": scope,
        }))
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error_page(status: StatusCode, message: &str) -> Response {
    html(
        status.as_u16(),
        message_page("Authorization problem", "bad", message),
    )
}

async fn metadata(State(s): State<Arc<AuthServer>>) -> Response {
    let mut r = Json(s.metadata_doc()).into_response();
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

async fn register(State(s): State<Arc<AuthServer>>, body: axum::body::Bytes) -> Response {
    let bad = |d: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_client_metadata", d);
    let req: RegisterRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad(&format!("not a JSON client registration: {e}")),
    };
    if req.redirect_uris.is_empty() || req.redirect_uris.len() > 10 {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_redirect_uri",
            "give 1 to 10 redirect_uris",
        );
    }
    for u in &req.redirect_uris {
        if let Err(e) = valid_redirect_uri(u) {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_redirect_uri", &e);
        }
    }
    let method = req
        .token_endpoint_auth_method
        .clone()
        .unwrap_or_else(|| "client_secret_basic".into());
    if !["none", "client_secret_post", "client_secret_basic"].contains(&method.as_str()) {
        return bad(&format!(
            "token_endpoint_auth_method `{method}` is not supported"
        ));
    }
    let grants = req
        .grant_types
        .clone()
        .unwrap_or_else(|| vec!["authorization_code".into()]);
    if grants
        .iter()
        .any(|g| g != "authorization_code" && g != "refresh_token")
    {
        return bad("grant_types may contain only authorization_code and refresh_token");
    }
    let responses = req
        .response_types
        .clone()
        .unwrap_or_else(|| vec!["code".into()]);
    if responses.iter().any(|r| r != "code") {
        return bad("response_types may contain only code");
    }
    if req.client_name.as_ref().is_some_and(|n| n.len() > 200) {
        return bad("client_name is longer than 200 characters");
    }
    match s.store.count_oauth_clients().await {
        Ok(n) if n >= s.max_clients => {
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the client registration limit is reached",
            );
        }
        Err(_) => {
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "storage error",
            );
        }
        _ => {}
    }
    let client_id = format!("vmc_{}", &new_token()[..24]);
    let secret = (method != "none").then(|| format!("vmcs_{}", new_token()));
    let t = now();
    let mut doc = json!({
        "client_id": client_id,
        "client_id_issued_at": t,
        "redirect_uris": req.redirect_uris,
        "grant_types": grants,
        "response_types": responses,
        "token_endpoint_auth_method": method,
        "scope": req.scope.clone().unwrap_or_else(|| s.scope.clone()),
    });
    if let Some(n) = &req.client_name {
        doc["client_name"] = json!(n);
    }
    let row = OAuthClientRow {
        client_id: client_id.clone(),
        secret_hash: secret.as_ref().map(|x| sha256_hex(x)),
        client_name: req.client_name.clone(),
        redirect_uris: req.redirect_uris.clone(),
        metadata: doc.to_string(),
        created_at: t,
    };
    if s.store.insert_oauth_client(&row).await.is_err() {
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "storage error",
        );
    }
    if let Some(sec) = secret {
        doc["client_secret"] = json!(sec);
        doc["client_secret_expires_at"] = json!(0);
    }
    let mut r = (StatusCode::CREATED, Json(doc)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn authorize(
    State(s): State<Arc<AuthServer>>,
    headers: HeaderMap,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    let Some(client_id) = q.client_id.as_deref() else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The request names no client (client_id is missing).",
        );
    };
    let client = match s.store.get_oauth_client(client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "This client is not registered with vault-mcp.",
            );
        }
        Err(_) => return error_page(StatusCode::SERVICE_UNAVAILABLE, "Storage error; try again."),
    };
    let redirect_uri = match q.redirect_uri.as_deref() {
        Some(u) if client.redirect_uris.iter().any(|r| r == u) => u.to_owned(),
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        _ => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "The redirect URI does not match the client's registration.",
            );
        }
    };
    // From here on, errors go back to the client.
    let state = q.state.clone();
    let back = |code: &str, desc: &str| {
        let mut p = vec![("error", code), ("error_description", desc)];
        if let Some(st) = state.as_deref() {
            p.push(("state", st));
        }
        s.redirect_with(&redirect_uri, &p)
    };
    if q.response_type.as_deref() != Some("code") {
        return back(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    let Some(challenge) = q
        .code_challenge
        .clone()
        .filter(|c| (43..=128).contains(&c.len()))
    else {
        return back(
            "invalid_request",
            "PKCE is required: send code_challenge with code_challenge_method=S256",
        );
    };
    if q.code_challenge_method.as_deref() != Some("S256") {
        return back("invalid_request", "code_challenge_method must be S256");
    }
    if let Some(res) = &q.resource
        && !same_resource(res, &s.resource)
    {
        return back(
            "invalid_target",
            "this server issues tokens only for its own MCP resource",
        );
    }
    // Scopes we do not know are dropped; what is left (or our default) is what the token gets.
    let scope = q
        .scope
        .as_deref()
        .map(|sc| {
            sc.split_whitespace()
                .filter(|x| *x == s.scope)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|sc| !sc.is_empty())
        .unwrap_or_else(|| s.scope.clone());
    let request_token = new_token();
    let t = now();
    // Only this browser may continue the request (see `OAuthRequestRow::binding`).
    let (nonce, set_cookie) = s.browser.browser_nonce(&headers);
    let row = OAuthRequestRow {
        id: sha256_hex(&request_token),
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        state: q.state.clone(),
        scope,
        resource: s.resource.clone(),
        code_challenge: challenge,
        binding: sha256_hex(&nonce),
        created_at: t,
        expires_at: t + REQUEST_TTL,
    };
    if s.store.insert_oauth_request(&row).await.is_err() {
        return back("temporarily_unavailable", "storage error");
    }
    let _ = s.store.purge_oauth(t).await;
    let mut r = match s.browser.session(&headers) {
        Some(user) => s.consent_page(&row, &request_token, &user).await,
        None => {
            let next = format!(
                "{}authorize/continue?request={request_token}",
                s.base.path()
            );
            s.browser.start_login(&next)
        }
    };
    if let Some(c) = set_cookie {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// Is this the browser that started `row`?
fn same_browser(s: &AuthServer, headers: &HeaderMap, row: &OAuthRequestRow) -> bool {
    let (nonce, fresh) = s.browser.browser_nonce(headers);
    fresh.is_none() && constant_eq(sha256_hex(&nonce).as_bytes(), row.binding.as_bytes())
}

fn other_browser() -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "This authorization was started in another browser. Start again from your MCP client, in this browser.",
    )
}

async fn authorize_continue(
    State(s): State<Arc<AuthServer>>,
    headers: HeaderMap,
    Query(q): Query<ContinueQuery>,
) -> Response {
    let Ok(Some(row)) = s.store.get_oauth_request(&sha256_hex(&q.request)).await else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This authorization request is unknown or already finished. Start again from your MCP client.",
        );
    };
    if row.expires_at <= now() {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This authorization request expired. Start again from your MCP client.",
        );
    }
    if !same_browser(&s, &headers, &row) {
        return other_browser();
    }
    match s.browser.session(&headers) {
        Some(user) => s.consent_page(&row, &q.request, &user).await,
        None => s.browser.start_login(&format!(
            "{}authorize/continue?request={}",
            s.base.path(),
            q.request
        )),
    }
}

async fn decision(
    State(s): State<Arc<AuthServer>>,
    headers: HeaderMap,
    Form(f): Form<DecisionForm>,
) -> Response {
    let Some(user) = s.browser.session(&headers) else {
        return error_page(
            StatusCode::FORBIDDEN,
            "You are not signed in; start again from your MCP client.",
        );
    };
    if !crate::csrf::same_origin(&headers, &s.base) {
        return error_page(
            StatusCode::FORBIDDEN,
            "This decision was sent from another site; open the consent page yourself.",
        );
    }
    // The decision must come from this user's own consent page (SameSite cookie + keyed token).
    let expected = s.browser.mac(&["consent", &f.request, user.id()]);
    if !constant_eq(expected.as_bytes(), f.csrf.as_bytes()) {
        return error_page(
            StatusCode::FORBIDDEN,
            "This approval did not come from your consent page.",
        );
    }
    match s.store.get_oauth_request(&sha256_hex(&f.request)).await {
        Ok(Some(row)) if !same_browser(&s, &headers, &row) => return other_browser(),
        _ => {}
    }
    let Ok(Some(req)) = s.store.take_oauth_request(&sha256_hex(&f.request)).await else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This authorization request is unknown or already finished.",
        );
    };
    if req.expires_at <= now() {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This authorization request expired. Start again from your MCP client.",
        );
    }
    let mut params: Vec<(&str, String)> = Vec::new();
    if f.decision != "approve" {
        s.audit(
            user.id(),
            "mcp_authorize",
            AuditOutcome::Denied,
            format!("client={}", req.client_id),
        )
        .await;
        params.push(("error", "access_denied".into()));
        params.push(("error_description", "the user denied access".into()));
    } else {
        let code = format!("vmac_{}", new_token());
        let t = now();
        let row = OAuthCodeRow {
            code_hash: sha256_hex(&code),
            client_id: req.client_id.clone(),
            redirect_uri: req.redirect_uri.clone(),
            code_challenge: req.code_challenge.clone(),
            principal: user.id().to_owned(),
            principal_display: user.display().to_owned(),
            scope: req.scope.clone(),
            resource: req.resource.clone(),
            created_at: t,
            expires_at: t + CODE_TTL,
            used_at: None,
        };
        if s.store.insert_oauth_code(&row).await.is_err() {
            return error_page(StatusCode::SERVICE_UNAVAILABLE, "Storage error; try again.");
        }
        s.audit(
            user.id(),
            "mcp_authorize",
            AuditOutcome::Ok,
            format!("client={}", req.client_id),
        )
        .await;
        params.push(("code", code));
    }
    if let Some(st) = &req.state {
        params.push(("state", st.clone()));
    }
    let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    s.redirect_with(&req.redirect_uri, &refs)
}

async fn token(
    State(s): State<Arc<AuthServer>>,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> Response {
    let client = match s
        .authenticate_client(&headers, f.client_id.as_deref(), f.client_secret.as_deref())
        .await
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    let grant = |d: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", d);
    let t = now();
    let body = match f.grant_type.as_deref() {
        Some("authorization_code") => {
            let (Some(code), Some(verifier)) = (f.code.as_deref(), f.code_verifier.as_deref())
            else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "code and code_verifier are required",
                );
            };
            let hash = sha256_hex(code);
            let Ok(Some(row)) = s.store.use_oauth_code(&hash, t).await else {
                return grant("unknown authorization code");
            };
            if row.used_at.is_some() {
                // A replayed code: revoke whatever the first use issued (RFC 6749 4.1.2).
                let _ = s.store.revoke_oauth_family(&hash, t).await;
                s.audit(
                    &row.principal,
                    "mcp_token",
                    AuditOutcome::CodeReplayed,
                    format!("client={}", row.client_id),
                )
                .await;
                return grant("authorization code already used");
            }
            if row.expires_at <= t {
                return grant("authorization code expired");
            }
            if row.client_id != client.client_id {
                return grant("authorization code was issued to another client");
            }
            if f.redirect_uri
                .as_deref()
                .is_some_and(|u| u != row.redirect_uri)
            {
                return grant("redirect_uri does not match the authorization request");
            }
            let computed = B64.encode(Sha256::digest(verifier.as_bytes()));
            if !constant_eq(computed.as_bytes(), row.code_challenge.as_bytes()) {
                return grant("code_verifier does not match the code_challenge");
            }
            if let Some(res) = &f.resource
                && !same_resource(res, &row.resource)
            {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_target",
                    "resource does not match the authorization",
                );
            }
            let issued = s
                .issue(
                    &hash,
                    &row.client_id,
                    &row.principal,
                    &row.principal_display,
                    &row.scope,
                    &row.resource,
                )
                .await;
            s.audit(
                &row.principal,
                "mcp_token",
                AuditOutcome::Issued,
                format!("client={}", row.client_id),
            )
            .await;
            issued
        }
        Some("refresh_token") => {
            let Some(rt) = f.refresh_token.as_deref() else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "refresh_token is required",
                );
            };
            let hash = sha256_hex(rt);
            let Ok(Some(row)) = s.store.get_oauth_token(&hash).await else {
                return grant("unknown refresh token");
            };
            if row.kind != TokenKind::Refresh || row.client_id != client.client_id {
                return grant("unknown refresh token");
            }
            if row.expires_at <= t {
                return grant("refresh token expired");
            }
            // Rotation: the old refresh token dies now; if it was already dead, this is a replay
            // and the whole family goes.
            if row.revoked_at.is_some()
                || !s.store.revoke_oauth_token(&hash, t).await.unwrap_or(false)
            {
                let _ = s.store.revoke_oauth_family(&row.family, t).await;
                s.audit(
                    &row.principal,
                    "mcp_token",
                    AuditOutcome::RefreshReplayed,
                    format!("client={}", row.client_id),
                )
                .await;
                return grant("refresh token already used; all tokens of this grant were revoked");
            }
            if let Some(res) = &f.resource
                && !same_resource(res, &row.resource)
            {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_target",
                    "resource does not match the grant",
                );
            }
            let scope = match f.scope.as_deref() {
                Some(sc)
                    if sc
                        .split_whitespace()
                        .all(|x| row.scope.split_whitespace().any(|y| y == x)) =>
                {
                    sc.to_owned()
                }
                Some(_) => {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        "a refresh cannot widen the scope",
                    );
                }
                None => row.scope.clone(),
            };
            s.issue(
                &row.family,
                &row.client_id,
                &row.principal,
                &row.principal_display,
                &scope,
                &row.resource,
            )
            .await
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "use authorization_code or refresh_token",
            );
        }
    };
    match body {
        Ok(b) => {
            let mut r = Json(b).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(r) => r,
    }
}

async fn revoke(
    State(s): State<Arc<AuthServer>>,
    headers: HeaderMap,
    Form(f): Form<RevokeForm>,
) -> Response {
    let client = match s
        .authenticate_client(&headers, f.client_id.as_deref(), f.client_secret.as_deref())
        .await
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(token) = f.token.as_deref()
        && let Ok(Some(row)) = s.store.get_oauth_token(&sha256_hex(token)).await
        && row.client_id == client.client_id
    {
        let t = now();
        if row.kind == TokenKind::Refresh {
            let _ = s.store.revoke_oauth_family(&row.family, t).await;
        } else {
            let _ = s.store.revoke_oauth_token(&row.token_hash, t).await;
        }
        s.audit(
            &row.principal,
            "mcp_token",
            AuditOutcome::Revoked,
            format!("client={}", row.client_id),
        )
        .await;
    }
    // RFC 7009 2.2: 200 whether or not the token was known.
    StatusCode::OK.into_response()
}
