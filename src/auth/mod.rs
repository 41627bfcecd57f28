//! The identity layer: who is calling over HTTP. Produces a `vault::Principal` for every request
//! (an agent from its API key, from a bearer JWT — a user, or an agent mapped to a
//! client-credentials subject —, from one of our own OAuth access tokens, or the fixed local
//! user) and puts it in the request's extensions with the user's current [`Groups`], where the
//! MCP layer reads them. Also serves RFC 9728 protected
//! resource metadata and answers unauthenticated requests with the challenge MCP clients expect.
//! The MCP access token is used here only; it is never forwarded to any provider.

pub mod browser;
pub mod jwt;
pub mod server;
mod verified;

use std::sync::Arc;

use axum::{
    Json,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use jwt::{Claims, JwtValidator, TokenError};

use crate::vault::{Groups, Principal, Vault, agent_key};

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
    /// Recognizes agent keys and agents mapped to client-credentials subjects.
    pub vault: Vault,
    /// The JWT claim holding a user's groups (`[http.idp] groups_claim`), if groups are used.
    pub groups_claim: Option<String>,
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

    /// Identify the caller of one request: the principal and the user's current groups.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Principal, Groups), TokenError> {
        let bearer = match headers.get(header::AUTHORIZATION) {
            None => None,
            Some(v) => {
                let auth = v.to_str().map_err(|_| TokenError::Malformed)?;
                let (scheme, token) = auth.split_once(' ').ok_or(TokenError::Malformed)?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_owned())
            }
        };
        // An agent key is recognized by its prefix in every identity mode, before any JWT
        // parsing; a key that is not valid is refused, never treated as something else.
        if let Some(t) = &bearer
            && agent_key::looks_like_agent_key(t)
        {
            return match self.vault.authenticate_agent_key(t).await {
                Ok(p) => Ok((p, Groups::default())),
                Err(crate::vault::AgentAuthError::Unavailable) => Err(TokenError::Unavailable),
                Err(e) => Err(TokenError::Agent(e.to_string())),
            };
        }
        if let Authenticator::Local(p) = self.authn.as_ref() {
            return Ok((p.clone(), Groups::default()));
        }
        let token = bearer.ok_or(TokenError::Missing)?;
        match self.authn.as_ref() {
            Authenticator::Jwt {
                validator,
                audience,
            } => {
                let claims = validator
                    .validate(&token, audience, jwt::TokenUse::Access)
                    .await?;
                if !claims.scopes().iter().any(|s| s == &self.required_scope) {
                    return Err(TokenError::InsufficientScope);
                }
                // A client-credentials token whose subject is mapped to an agent is that agent.
                match self.vault.agent_for_jwt_subject(&claims.sub).await {
                    Ok(Some(agent)) => return Ok((agent, Groups::default())),
                    Ok(None) => {}
                    Err(crate::vault::AgentAuthError::Unavailable) => {
                        return Err(TokenError::Unavailable);
                    }
                    Err(e) => return Err(TokenError::Agent(e.to_string())),
                }
                let groups = self
                    .groups_claim
                    .as_deref()
                    .map(|c| claims.groups(c))
                    .unwrap_or_default();
                Ok((principal_from_claims(&claims), Groups(groups)))
            }
            Authenticator::OAuth(server) => server
                .validate_access_token(&token, &self.resource, &self.required_scope)
                .await
                .map(|p| (p, Groups::default())),
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
        Ok((p, groups)) => {
            req.extensions_mut().insert(p);
            req.extensions_mut().insert(groups);
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
