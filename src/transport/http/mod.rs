//! Hosted mode: one axum server with Streamable HTTP at `/mcp`, the legacy SSE pair
//! (`/sse` + `/message`), the Connect pages and OAuth callback, RFC 9728 metadata, our
//! authorization server in `oauth` mode, and `/healthz`. Cross-cutting concerns are layers,
//! composed in `app`: Host checks (DNS rebinding), body size limits, timeouts, identity.

mod sessions;
pub mod sse;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService,
    session::{local::LocalSessionManager, never::NeverSessionManager},
};
use tokio_util::sync::CancellationToken;
use tower_http::{limit::RequestBodyLimitLayer, timeout::TimeoutLayer};

use crate::{
    auth::{
        self, AuthState, Authenticator, browser::BrowserAuth, jwt::JwtValidator, server::AuthServer,
    },
    config::{Config, IdentityMode},
    mcp::{IdentitySource, InFlight, ToolSet, VaultMcp},
    vault::{Principal, Vault},
};

/// Everything needed to answer one HTTP request, built once at start-up.
pub struct HostedServer {
    pub app: Router,
    pub shutdown: CancellationToken,
    pub resource: String,
    /// Tool calls in progress across all connections.
    pub inflight: InFlight,
}

/// Host names accepted in the `Host` header: the public URL's host, loopback names, and any
/// configured extras.
fn allowed_hosts(config: &Config, addr: SocketAddr) -> Vec<String> {
    let mut hosts = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        "[::1]".to_owned(),
    ];
    if let Some(h) = config.connect.public_url.host_str() {
        hosts.push(h.to_owned());
    }
    if !addr.ip().is_unspecified() {
        hosts.push(addr.ip().to_string());
    }
    hosts.extend(config.http.allowed_hosts.iter().cloned());
    hosts
}

async fn check_host(State(allowed): State<Arc<Vec<String>>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| {
            // strip the port, keeping IPv6 brackets intact
            if h.starts_with('[') {
                h.split(']')
                    .next()
                    .map(|x| format!("{x}]"))
                    .unwrap_or_default()
            } else {
                h.rsplit_once(':')
                    .map(|(a, _)| a.to_owned())
                    .unwrap_or_else(|| h.to_owned())
            }
        });
    match host {
        Some(h) if allowed.iter().any(|a| a.eq_ignore_ascii_case(&h)) => next.run(req).await,
        _ => (
            StatusCode::FORBIDDEN,
            "Forbidden: Host header is not allowed",
        )
            .into_response(),
    }
}

/// JSON-RPC over HTTP: a body that is not JSON is a parse error (HTTP 400, code -32700), and one
/// that is JSON but not a message is an invalid request (-32600). rmcp would answer 415 for both;
/// clients and the JSON-RPC spec expect these.
async fn json_rpc_body(State(limit): State<usize>, req: Request, next: Next) -> Response {
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
    };
    let error = |code: i64, message: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}})),
        )
            .into_response()
    };
    // Syntax only (no tree is built): rmcp parses the message itself.
    if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
        return error(-32700, "Parse error: the body is not JSON");
    }
    if !matches!(
        bytes.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    ) {
        return error(-32600, "Invalid Request: not a JSON-RPC message");
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// Ending a session (`DELETE /mcp`): rmcp answers 202, clients (the official Python SDK among
/// them) expect 200 or 204 and log a failure otherwise. Nothing follows, so 204 it is.
async fn session_end_status(req: Request, next: Next) -> Response {
    let deleting = req.method() == axum::http::Method::DELETE;
    let mut r = next.run(req).await;
    if deleting && r.status() == StatusCode::ACCEPTED {
        *r.status_mut() = StatusCode::NO_CONTENT;
        *r.body_mut() = axum::body::Body::empty();
        r.headers_mut().remove(header::CONTENT_LENGTH);
    }
    r
}

/// Build the hosted app. `addr` is the bind address (the `local` identity requires loopback).
pub async fn build(
    config: &Config,
    vault: Vault,
    tools: Arc<ToolSet>,
    addr: SocketAddr,
) -> anyhow::Result<HostedServer> {
    let public = config.connect.public_url.clone();
    let resource = public.join("mcp").expect("joinable").to_string();
    let metadata_url = public
        .join(".well-known/oauth-protected-resource/mcp")
        .expect("joinable")
        .to_string();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("HTTP client")?;
    let shutdown = CancellationToken::new();

    let idp_validator = match &config.http.idp {
        Some(idp) => Some(Arc::new(
            JwtValidator::new(
                http.clone(),
                &idp.issuer,
                &idp.algorithms,
                idp.strict_token_type,
            )
            .await
            .map_err(|e| anyhow::anyhow!("[http.idp] issuer {}: {e}", idp.issuer))?,
        )),
        None => None,
    };
    let browser = match (&config.http.idp, &idp_validator) {
        (Some(idp), Some(v)) if idp.client_id.is_some() => Some(Arc::new(
            BrowserAuth::new(
                vault.derived_key("browser-session"),
                v.clone(),
                idp,
                &public,
                vault.outbound().clone(),
            )
            .map_err(|e| anyhow::anyhow!(e))?,
        )),
        _ => None,
    };

    let mut auth_server = None;
    let identity = config
        .http
        .identity_for(addr)
        .map_err(|e| anyhow::anyhow!(e))?;
    if config.http.identity.is_none() && identity == IdentityMode::Local {
        tracing::info!(%addr, user = %config.local_user, "no [http] identity configured: serving the local user on this loopback address (development); configure jwt or oauth for a team");
    }
    let authn = match identity {
        IdentityMode::Local => {
            if !addr.ip().is_loopback() {
                bail!(
                    "[http] identity = \"local\" is accepted only on loopback binds (127.0.0.1, ::1); use jwt or oauth for {addr}"
                );
            }
            Authenticator::Local(Principal::local(&config.local_user))
        }
        IdentityMode::Jwt => {
            let (Some(idp), Some(v)) = (&config.http.idp, &idp_validator) else {
                bail!(
                    "[http] identity = \"jwt\" needs [http.idp] issuer (or VAULT_MCP_IDP_ISSUER): the OpenID provider whose tokens to accept"
                );
            };
            if browser.is_none() {
                bail!(
                    "[http.idp] client_id is required so users can sign in on the Connect pages (register vault-mcp at {} with redirect URI {}oauth/callback)",
                    idp.issuer,
                    public
                );
            }
            Authenticator::Jwt {
                validator: v.clone(),
                audience: idp.audience.clone().unwrap_or_else(|| resource.clone()),
            }
        }
        IdentityMode::Oauth => {
            let Some(b) = &browser else {
                bail!(
                    "[http] identity = \"oauth\" needs [http.idp] issuer and client_id: users sign in there before vault-mcp issues their MCP tokens"
                );
            };
            let s = Arc::new(AuthServer::new(
                vault.clone(),
                b.clone(),
                public.clone(),
                resource.clone(),
                config.http.required_scope.clone(),
                config.http.access_token_ttl_secs,
                config.http.refresh_token_ttl_secs,
                config.http.max_clients,
            ));
            auth_server = Some(s.clone());
            Authenticator::OAuth(s)
        }
    };
    let auth_state = AuthState {
        authorization_server: match (&authn, &config.http.idp) {
            (Authenticator::OAuth(s), _) => Some(s.issuer.clone()),
            (Authenticator::Jwt { .. }, Some(idp)) => Some(idp.issuer.clone()),
            _ => None,
        },
        authn: Arc::new(authn),
        resource: resource.clone(),
        metadata_url,
        required_scope: config.http.required_scope.clone(),
        vault: vault.clone(),
        groups_claim: config
            .http
            .idp
            .as_ref()
            .and_then(|i| i.groups_claim.clone()),
    };

    let hosts = allowed_hosts(config, addr);
    let mut mcp_cfg = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts.clone())
        .with_cancellation_token(shutdown.child_token())
        .with_max_request_body_bytes(config.http.max_body_bytes)
        .with_legacy_session_mode(!config.http.stateless);
    if config.http.stateless {
        mcp_cfg = mcp_cfg.with_json_response(true);
    }
    let factory_vault = vault.clone();
    let factory_tools = tools.clone();
    let stateless = config.http.stateless;
    let inflight = InFlight::default();
    let factory_inflight = inflight.clone();
    let factory = move || {
        let server = VaultMcp::new(
            factory_vault.clone(),
            IdentitySource::PerRequest,
            factory_tools.clone(),
        )
        .with_inflight(factory_inflight.clone());
        Ok(if stateless {
            server.without_elicitation()
        } else {
            server
        })
    };
    let mcp_router = if config.http.stateless {
        Router::new().nest_service(
            "/mcp",
            StreamableHttpService::new(factory, Arc::new(NeverSessionManager::default()), mcp_cfg),
        )
    } else {
        Router::new().nest_service(
            "/mcp",
            StreamableHttpService::new(factory, Arc::new(LocalSessionManager::default()), mcp_cfg),
        )
    }
    .layer(middleware::from_fn(session_end_status))
    .layer(middleware::from_fn_with_state(
        sessions::SessionOwners::default(),
        sessions::bind,
    ))
    .layer(middleware::from_fn_with_state(
        config.http.max_body_bytes,
        json_rpc_body,
    ));

    let sse_state = sse::SseState::new(
        inflight.clone(),
        vault.clone(),
        tools.clone(),
        shutdown.child_token(),
        format!("{}message", public.path()),
    );
    let sse_router = Router::new()
        .route("/sse", get(sse::open))
        .route("/message", post(sse::post))
        .with_state(sse_state)
        .layer(RequestBodyLimitLayer::new(config.http.max_body_bytes));

    let protected = mcp_router
        .merge(sse_router)
        .layer(middleware::from_fn_with_state(
            auth_state.clone(),
            auth::require_principal,
        ));

    let timeout = Duration::from_secs(config.http.request_timeout_secs);
    let mut open = Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(auth::protected_resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(auth::protected_resource_metadata),
        )
        .with_state(auth_state)
        .merge(crate::web::router_with(vault.clone(), browser.clone()));
    if let Some(s) = &auth_server {
        open = open.merge(s.router());
    }
    let open =
        open.layer(RequestBodyLimitLayer::new(64 * 1024))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                timeout,
            ));

    let mut app = protected.merge(open);
    if config.sdk.enabled {
        // The Alter SDK protocol: its own authentication (keys + signatures), same vault.
        let users = match (&idp_validator, &config.http.idp) {
            (Some(v), Some(idp)) => Some(crate::sdk::UserTokens {
                validator: v.clone(),
                audience: config
                    .sdk
                    .user_token_audience
                    .clone()
                    .or_else(|| idp.audience.clone())
                    .unwrap_or_else(|| resource.clone()),
                groups_claim: idp.groups_claim.clone(),
            }),
            _ => None,
        };
        let sdk = crate::sdk::router(crate::sdk::SdkState {
            vault: vault.clone(),
            users,
            max_skew_secs: config.sdk.max_clock_skew_secs,
            public_url: public.clone(),
        })
        .layer(RequestBodyLimitLayer::new(config.http.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout + Duration::from_secs(30),
        ));
        app = app.merge(sdk);
    }
    let app = app.layer(middleware::from_fn_with_state(Arc::new(hosts), check_host));
    Ok(HostedServer {
        app,
        shutdown,
        resource,
        inflight,
    })
}

/// Serve until SIGINT/SIGTERM; in-flight requests finish, open streams are closed.
pub async fn serve(
    config: &Config,
    vault: Vault,
    tools: Arc<ToolSet>,
    addr: SocketAddr,
) -> anyhow::Result<()> {
    let server = build(config, vault, tools, addr).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(%addr, resource = %server.resource, "vault-mcp serving MCP over HTTP");
    let shutdown = server.shutdown.clone();
    let inflight = server.inflight.clone();
    axum::serve(listener, server.app)
        .with_graceful_shutdown(async move {
            wait_for_signal().await;
            // New connections stop now; calls already running deliver their results first (up to
            // 30 s), then the MCP streams are closed, which lets the open connections end.
            tracing::info!(
                in_flight = inflight.count(),
                "shutting down: finishing in-flight calls"
            );
            tokio::spawn(async move {
                if !inflight.drained(Duration::from_secs(30)).await {
                    tracing::warn!(
                        in_flight = inflight.count(),
                        "calls still running after 30 s; closing anyway"
                    );
                }
                // A call counts as done when its handler returns; give its response a moment to
                // be written to the client's stream before the streams close.
                tokio::time::sleep(Duration::from_millis(500)).await;
                shutdown.cancel();
            });
        })
        .await
        .context("HTTP server")?;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
