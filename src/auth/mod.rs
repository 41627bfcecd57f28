//! The identity layer: who is calling over HTTP. Produces a `vault::Principal` for every request
//! (from a bearer JWT, from one of our own OAuth access tokens, or the fixed local user) and puts
//! it in the request's extensions, where the MCP layer reads it. Also serves RFC 9728 protected
//! resource metadata and answers unauthenticated requests with the challenge MCP clients expect.
//! The MCP access token is used here only; it is never forwarded to any provider.

pub mod browser;
pub mod jwt;
pub mod server;

use std::sync::Arc;

use axum::{
    Json,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use jwt::{Claims, JwtValidator, TokenError};

use crate::vault::Principal;

/// The principal for an OpenID subject: `<issuer>#<sub>`, shown by email or username.
pub fn principal_from_claims(c: &Claims) -> Principal {
    Principal::new(
        format!("{}#{}", c.iss.trim_end_matches('/'), c.sub),
        c.display(),
    )
}

pub enum Authenticator {
    /// Bearer JWTs from the IdP, audience-bound to our resource URL.
    Jwt {
        validator: Arc<JwtValidator>,
        audience: String,
    },
    /// Opaque access tokens issued by our own authorization server.
    OAuth(Arc<server::AuthServer>),
    /// Everyone is the local user (loopback binds only).
    Local(Principal),
}

#[derive(Clone)]
pub struct AuthState {
    pub authn: Arc<Authenticator>,
    /// This server's MCP resource URL (RFC 8707 audience), e.g. `https://vault.example.com/mcp`.
    pub resource: String,
    /// Where our RFC 9728 metadata lives.
    pub metadata_url: String,
    pub required_scope: String,
    /// Authorization server issuer advertised in the metadata.
    pub authorization_server: Option<String>,
}

impl AuthState {
    fn challenge(&self, status: StatusCode, err: &TokenError) -> Response {
        let code = match err {
            TokenError::InsufficientScope => "insufficient_scope",
            TokenError::Unavailable => "temporarily_unavailable",
            _ => "invalid_token",
        };
        let mut value = format!(
            "Bearer resource_metadata=\"{}\", scope=\"{}\"",
            self.metadata_url, self.required_scope
        );
        // RFC 6750 3.1: no error code when the request simply carried no token.
        if *err != TokenError::Missing {
            value.push_str(&format!(", error=\"{code}\", error_description=\"{err}\""));
        }
        let status = if *err == TokenError::Unavailable {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            status
        };
        let mut r = (
            status,
            Json(serde_json::json!({ "error": code, "error_description": err.to_string() })),
        )
            .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&value).expect("ASCII"),
        );
        r
    }

    /// Identify the caller of one request.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, TokenError> {
        if let Authenticator::Local(p) = self.authn.as_ref() {
            return Ok(p.clone());
        }
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(TokenError::Missing)?;
        let (scheme, token) = auth.split_once(' ').ok_or(TokenError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::Missing);
        }
        let token = token.trim();
        match self.authn.as_ref() {
            Authenticator::Jwt {
                validator,
                audience,
            } => {
                let claims = validator
                    .validate(token, audience, jwt::TokenUse::Access)
                    .await?;
                if !claims.scopes().iter().any(|s| s == &self.required_scope) {
                    return Err(TokenError::InsufficientScope);
                }
                Ok(principal_from_claims(&claims))
            }
            Authenticator::OAuth(server) => {
                server
                    .validate_access_token(token, &self.resource, &self.required_scope)
                    .await
            }
            Authenticator::Local(_) => unreachable!("handled above"),
        }
    }
}

/// Middleware in front of every MCP endpoint: a valid bearer token or a 401/403 challenge.
pub async fn require_principal(
    State(st): State<AuthState>,
    mut req: Request,
    next: Next,
) -> Response {
    // MCP forbids tokens in the query string (they end up in logs and browser history).
    if req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("access_token=")))
    {
        return st.challenge(StatusCode::UNAUTHORIZED, &TokenError::Malformed);
    }
    match st.authenticate(req.headers()).await {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(TokenError::InsufficientScope) => {
            st.challenge(StatusCode::FORBIDDEN, &TokenError::InsufficientScope)
        }
        Err(e) => st.challenge(StatusCode::UNAUTHORIZED, &e),
    }
}

/// RFC 9728 protected resource metadata.
pub async fn protected_resource_metadata(State(st): State<AuthState>) -> Response {
    let mut doc = serde_json::json!({
        "resource": st.resource,
        "scopes_supported": [st.required_scope],
        "bearer_methods_supported": ["header"],
        "resource_name": "vault-mcp",
        "resource_documentation": "https://github.com/vault-mcp/vault-mcp#readme",
    });
    if let Some(asv) = &st.authorization_server {
        doc["authorization_servers"] = serde_json::json!([asv]);
    }
    let mut r = Json(doc).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}
