//! `[http]`: hosted mode (Streamable HTTP + legacy SSE) and how callers are identified.

use serde::Deserialize;

use super::ConfigError;
use crate::secret::Secret;

/// How HTTP callers are identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMode {
    /// Resource server: bearer JWTs from the configured OpenID issuer.
    Jwt,
    /// vault-mcp is the authorization server for MCP clients; users sign in at the upstream IdP.
    Oauth,
    /// One fixed local identity; accepted only on loopback binds (development).
    Local,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpSection {
    identity: Option<IdentityMode>,
    stateless: Option<bool>,
    max_body_bytes: Option<usize>,
    request_timeout_secs: Option<u64>,
    allowed_hosts: Option<Vec<String>>,
    required_scope: Option<String>,
    access_token_ttl_secs: Option<u64>,
    refresh_token_ttl_secs: Option<u64>,
    max_clients: Option<i64>,
    idp: Option<IdpSection>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct IdpSection {
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    client_secret_env: Option<String>,
    scopes: Option<Vec<String>>,
    algorithms: Option<Vec<String>>,
    audience: Option<String>,
    strict_token_type: Option<bool>,
    groups_claim: Option<String>,
}

/// The company OpenID provider: validates bearer JWTs (`jwt` mode) and signs users in (Connect
/// pages, `oauth` mode).
#[derive(Debug, Clone)]
pub struct IdpConfig {
    pub issuer: String,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub scopes: Vec<String>,
    pub algorithms: Vec<String>,
    /// Expected `aud` of bearer JWTs; defaults to this server's MCP resource URL (RFC 8707).
    pub audience: Option<String>,
    /// Accept only RFC 9068 `typ: at+jwt` access tokens (many IdPs still send `JWT`).
    pub strict_token_type: bool,
    /// The access-token claim holding a user's groups (`groups`, `roles`, `realm_access.roles`).
    pub groups_claim: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// As configured; `None` = not set (see [`HttpConfig::identity_for`]).
    pub identity: Option<IdentityMode>,
    /// No MCP sessions: every request stands alone (load-balanced deployments).
    pub stateless: bool,
    pub max_body_bytes: usize,
    pub request_timeout_secs: u64,
    /// Host header values accepted besides the public URL's host and loopback names.
    pub allowed_hosts: Vec<String>,
    /// Scope an MCP access token must carry.
    pub required_scope: String,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    pub max_clients: i64,
    pub idp: Option<IdpConfig>,
}

const ALLOWED_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

impl HttpConfig {
    /// The identity mode for a bind address: the configured one; else `jwt` when an IdP is
    /// configured; else `local` on a loopback bind (development). A public bind with neither is an
    /// error naming the choices.
    pub fn identity_for(&self, addr: std::net::SocketAddr) -> Result<IdentityMode, String> {
        match (self.identity, &self.idp) {
            (Some(m), _) => Ok(m),
            (None, Some(_)) => Ok(IdentityMode::Jwt),
            (None, None) if addr.ip().is_loopback() => Ok(IdentityMode::Local),
            (None, None) => Err(format!(
                "serving on {addr} needs to know who is calling: set [http] identity = \"jwt\" with [http.idp] issuer and client_id (bearer JWTs from your OpenID provider), or identity = \"oauth\" with the same [http.idp] settings (vault-mcp is the authorization server); for development, bind a loopback address (127.0.0.1) and use identity = \"local\""
            )),
        }
    }

    pub(super) fn from_section(
        value: Option<&toml::Value>,
        env: &dyn Fn(&str) -> Option<String>,
        path: &str,
    ) -> Result<Self, ConfigError> {
        let sec: HttpSection = match value {
            Some(v) => v
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::File {
                    path: path.into(),
                    message: format!("[http]: {}", e.message()),
                })?,
            None => HttpSection::default(),
        };
        let bad = |message: String| ConfigError::File {
            path: path.into(),
            message,
        };
        let identity = match env("VAULT_MCP_HTTP_IDENTITY") {
            Some(v) => match v.as_str() {
                "jwt" => Some(IdentityMode::Jwt),
                "oauth" => Some(IdentityMode::Oauth),
                "local" => Some(IdentityMode::Local),
                other => {
                    return Err(ConfigError::Env {
                        var: "VAULT_MCP_HTTP_IDENTITY".into(),
                        message: format!("`{other}` is not one of jwt, oauth, local"),
                    });
                }
            },
            None => sec.identity,
        };
        let idp_sec = sec.idp.clone().unwrap_or_default();
        let issuer = env("VAULT_MCP_IDP_ISSUER").or(idp_sec.issuer.clone());
        let idp = match issuer {
            None => None,
            Some(issuer) => {
                let parsed = url::Url::parse(&issuer)
                    .map_err(|e| bad(format!("[http.idp] issuer `{issuer}`: {e}")))?;
                if parsed.scheme() != "https" && !super::is_loopback_url(&parsed) {
                    return Err(bad(format!("[http.idp] issuer `{issuer}` must use https")));
                }
                let algorithms = idp_sec
                    .algorithms
                    .clone()
                    .unwrap_or_else(|| vec!["RS256".into(), "ES256".into()]);
                for a in &algorithms {
                    if !ALLOWED_ALGS.contains(&a.as_str()) {
                        return Err(bad(format!(
                            "[http.idp] algorithms: `{a}` is not allowed (use asymmetric algorithms: {})",
                            ALLOWED_ALGS.join(", ")
                        )));
                    }
                }
                let mut client_secret = idp_sec.client_secret.clone();
                if let Some(var) = &idp_sec.client_secret_env {
                    client_secret = Some(crate::secret::secret(env(var).ok_or_else(|| {
                        bad(format!(
                            "[http.idp] client_secret_env names `{var}`, which is not set"
                        ))
                    })?));
                }
                if let Some(s) = env("VAULT_MCP_IDP_CLIENT_SECRET") {
                    client_secret = Some(crate::secret::secret(s));
                }
                Some(IdpConfig {
                    issuer: issuer.trim_end_matches('/').to_owned(),
                    client_id: env("VAULT_MCP_IDP_CLIENT_ID").or(idp_sec.client_id.clone()),
                    client_secret,
                    scopes: idp_sec
                        .scopes
                        .clone()
                        .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]),
                    algorithms,
                    audience: idp_sec.audience.clone(),
                    strict_token_type: idp_sec.strict_token_type.unwrap_or(false),
                    groups_claim: match idp_sec.groups_claim.as_deref().map(str::trim) {
                        None => None,
                        Some(c)
                            if !c.is_empty()
                                && c.split('.').all(|p| {
                                    !p.is_empty()
                                        && p.bytes().all(|b| {
                                            b.is_ascii_alphanumeric()
                                                || matches!(b, b'_' | b'-' | b':' | b'/')
                                        })
                                }) =>
                        {
                            Some(c.to_owned())
                        }
                        Some(c) => {
                            return Err(bad(format!(
                                "[http.idp] groups_claim: `{c}` is not a claim name or dotted path such as groups or realm_access.roles"
                            )));
                        }
                    },
                })
            }
        };
        Ok(HttpConfig {
            identity,
            stateless: sec.stateless.unwrap_or(false),
            max_body_bytes: sec.max_body_bytes.unwrap_or(4 * 1024 * 1024),
            request_timeout_secs: sec.request_timeout_secs.unwrap_or(120),
            allowed_hosts: sec.allowed_hosts.clone().unwrap_or_default(),
            required_scope: sec
                .required_scope
                .clone()
                .unwrap_or_else(|| "mcp:tools".into()),
            access_token_ttl_secs: sec.access_token_ttl_secs.unwrap_or(3600),
            refresh_token_ttl_secs: sec.refresh_token_ttl_secs.unwrap_or(30 * 86_400),
            max_clients: sec.max_clients.unwrap_or(10_000),
            idp,
        })
    }
}
