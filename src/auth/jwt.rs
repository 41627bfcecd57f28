//! Bearer JWT validation against an OpenID issuer: discovery, a JWKS cache refreshed on an unknown
//! `kid` (at most every few seconds), signature with allowed asymmetric algorithms only (no `none`,
//! no HS/RS confusion: the algorithm must match the key's type), `iss`, `aud`, `exp`/`nbf` with a
//! small leeway. Tokens that passed are remembered for a short while (`verified.rs`), so a
//! client sending the same bearer on every call pays for the signature check once.

use std::{
    sync::{Mutex, RwLock},
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header,
    jwk::{AlgorithmParameters, JwkSet},
};
use serde::Deserialize;

const LEEWAY_SECS: u64 = 30;
/// How long a verified token is taken on trust before its signature is checked again (bounds
/// how long a key the issuer removed from its JWKS keeps working).
const VERIFIED_TTL: Duration = Duration::from_secs(60);
/// The most verified tokens remembered at once.
const VERIFIED_MAX: usize = 10_000;
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// The key set is fetched again at least this often, so a key the issuer withdraws (without
/// issuing tokens under a new kid) stops being accepted.
const JWKS_MAX_AGE: Duration = Duration::from_secs(300);

/// Why a token was refused. Messages are safe to send to the client (no token content).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token was signed with an unknown key")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by another issuer")]
    Issuer,
    #[error("the token was issued for another resource")]
    Audience,
    #[error("the token has been revoked")]
    Revoked,
    #[error("the token lacks the required scope")]
    InsufficientScope,
    #[error("the identity provider could not be reached")]
    Unavailable,
    /// An agent key or agent JWT was refused (malformed, unknown, rotated out, disabled).
    #[error("{0}")]
    Agent(String),
}

/// The claims we use.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub scp: Option<Vec<String>>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub preferred_username: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub nonce: Option<String>,
    /// Every other claim (group claims have no fixed name).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Claims {
    pub fn scopes(&self) -> Vec<String> {
        let mut s: Vec<String> = self
            .scope
            .as_deref()
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        if let Some(scp) = &self.scp {
            s.extend(scp.iter().cloned());
        }
        s
    }

    /// The groups named by the claim at `path` (`groups`, `roles`, a dotted path such as
    /// `realm_access.roles`): a JSON array of strings or one space-separated string. Anything
    /// else yields no groups.
    pub fn groups(&self, path: &str) -> Vec<String> {
        let mut parts = path.split('.');
        let Some(first) = parts.next() else {
            return Vec::new();
        };
        let mut v = self.extra.get(first);
        for p in parts {
            v = v.and_then(|x| x.get(p));
        }
        let mut out: Vec<String> = match v {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str())
                .map(str::to_owned)
                .collect(),
            Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        out.retain(|g| !g.is_empty() && g.len() <= 200);
        out.sort();
        out.dedup();
        out
    }

    pub fn display(&self) -> String {
        self.email
            .clone()
            .or_else(|| self.preferred_username.clone())
            .unwrap_or_else(|| self.sub.clone())
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
}

/// Endpoints learned from the issuer's discovery document.
#[derive(Debug, Clone)]
pub struct IssuerInfo {
    pub issuer: String,
    pub jwks_uri: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
}

/// Fetch `/.well-known/openid-configuration` (then RFC 8414's document) of an issuer.
pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<IssuerInfo, String> {
    let mut last = String::new();
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let url = format!("{issuer}{path}");
        match http.get(&url).timeout(Duration::from_secs(10)).send().await {
            Ok(r) if r.status().is_success() => {
                let d: Discovery = r
                    .json()
                    .await
                    .map_err(|e| format!("{url}: not a discovery document ({e})"))?;
                if d.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
                    return Err(format!(
                        "{url} names issuer `{}`, expected `{issuer}`",
                        d.issuer
                    ));
                }
                return Ok(IssuerInfo {
                    issuer: issuer.to_owned(),
                    jwks_uri: d.jwks_uri,
                    authorization_endpoint: d.authorization_endpoint,
                    token_endpoint: d.token_endpoint,
                });
            }
            Ok(r) => last = format!("{url} answered HTTP {}", r.status().as_u16()),
            Err(e) => {
                last = format!(
                    "{url}: {}",
                    crate::vault::outbound::oauth::error_chain(&e.without_url())
                )
            }
        }
    }
    Err(last)
}

pub struct JwtValidator {
    http: reqwest::Client,
    pub info: IssuerInfo,
    algorithms: Vec<Algorithm>,
    keys: RwLock<JwkSet>,
    last_refresh: Mutex<Instant>,
    /// Access tokens must say `typ: at+jwt` (RFC 9068).
    strict_typ: bool,
    verified: super::verified::VerifiedTokens<Claims>,
}

/// What a validated token is used as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// A bearer access token for our MCP resource.
    Access,
    /// An OpenID Connect ID token from the browser sign-in.
    Id,
}

impl JwtValidator {
    pub async fn new(
        http: reqwest::Client,
        issuer: &str,
        algorithms: &[String],
        strict_typ: bool,
    ) -> Result<Self, String> {
        let info = discover(&http, issuer).await?;
        let algorithms = algorithms
            .iter()
            .map(|a| {
                a.parse::<Algorithm>()
                    .map_err(|_| format!("unknown algorithm `{a}`"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let keys = fetch_jwks(&http, &info.jwks_uri).await?;
        Ok(JwtValidator {
            http,
            info,
            algorithms,
            keys: RwLock::new(keys),
            last_refresh: Mutex::new(Instant::now()),
            strict_typ,
            verified: super::verified::VerifiedTokens::new(VERIFIED_TTL, VERIFIED_MAX),
        })
    }

    /// Fetch the key set again; on a change, forget every remembered token (one signed by a
    /// withdrawn key must be checked again). On failure the old set stays.
    async fn refresh_keys(&self) -> Result<(), String> {
        let set = fetch_jwks(&self.http, &self.info.jwks_uri).await?;
        let mut keys = self.keys.write().expect("jwks lock");
        let changed = serde_json::to_value(&*keys).ok() != serde_json::to_value(&set).ok();
        *keys = set;
        drop(keys);
        if changed {
            self.verified.clear();
        }
        Ok(())
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<jsonwebtoken::jwk::Jwk, TokenError> {
        // Periodic refresh: at most one caller does it (the others go on with the current set).
        let stale = {
            let mut last = self.last_refresh.lock().expect("refresh lock");
            if last.elapsed() >= JWKS_MAX_AGE {
                *last = Instant::now();
                true
            } else {
                false
            }
        };
        if stale && let Err(e) = self.refresh_keys().await {
            tracing::warn!(error = %e, "periodic JWKS refresh failed; keeping the current keys");
        }
        let find = |set: &JwkSet| match kid {
            Some(k) => set.find(k).cloned(),
            // Without a kid, only an unambiguous single key will do.
            None if set.keys.len() == 1 => Some(set.keys[0].clone()),
            None => None,
        };
        if let Some(k) = find(&self.keys.read().expect("jwks lock")) {
            return Ok(k);
        }
        // Unknown kid: the issuer may have rotated its keys. Refresh, but not more often than
        // every few seconds, so garbage kids cannot turn us into a JWKS-fetching amplifier.
        let due = {
            let mut last = self.last_refresh.lock().expect("refresh lock");
            if last.elapsed() >= MIN_REFRESH_INTERVAL {
                *last = Instant::now();
                true
            } else {
                false
            }
        };
        if due && let Err(e) = self.refresh_keys().await {
            tracing::warn!(error = %e, "JWKS refresh failed");
            return Err(TokenError::Unavailable);
        }
        find(&self.keys.read().expect("jwks lock")).ok_or(TokenError::UnknownKey)
    }

    /// Validate a token for `audience`.
    pub async fn validate(
        &self,
        token: &str,
        audience: &str,
        used_as: TokenUse,
    ) -> Result<Claims, TokenError> {
        let use_tag = match used_as {
            TokenUse::Access => "access",
            TokenUse::Id => "id",
        };
        let cache_key = self.verified.key(&[token, audience, use_tag]);
        if let Some(c) = self.verified.get(&cache_key) {
            return Ok(c);
        }
        let claims = self.verify(token, audience, used_as).await?;
        // Trusted until the token expires (with the same leeway the check allows) or the TTL ends.
        // `exp` may be a float (jsonwebtoken accepts one); without a readable one, nothing is kept.
        if let Some(exp) = claims.extra.get("exp").and_then(serde_json::Value::as_f64) {
            let until = (exp.floor() as i64).saturating_add(LEEWAY_SECS as i64);
            self.verified.put(cache_key, claims.clone(), Some(until));
        }
        Ok(claims)
    }

    async fn verify(
        &self,
        token: &str,
        audience: &str,
        used_as: TokenUse,
    ) -> Result<Claims, TokenError> {
        if token.len() > 16 * 1024 {
            return Err(TokenError::Malformed);
        }
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenError::Algorithm);
        }
        // RFC 7515 4.1.11: we understand no extension, so any `crit` makes the token invalid.
        if header.crit.is_some() {
            return Err(TokenError::Malformed);
        }
        // RFC 9068 access tokens say `at+jwt`; many IdPs still say `JWT` or nothing. Other
        // types (ID tokens marked as such, logout or event tokens, DPoP proofs) are not
        // access tokens. `[http.idp] strict_token_type` keeps only the RFC 9068 types.
        let typ = header.typ.as_deref().map(str::to_ascii_lowercase);
        let access_typ = matches!(typ.as_deref(), Some("at+jwt" | "application/at+jwt"));
        let plain_typ = matches!(typ.as_deref(), None | Some("jwt"));
        let typ_ok = match used_as {
            TokenUse::Access => access_typ || (!self.strict_typ && plain_typ),
            // An access token must never pass as an ID token.
            TokenUse::Id => plain_typ,
        };
        if !typ_ok {
            return Err(TokenError::Malformed);
        }
        let jwk = self.key_for(header.kid.as_deref()).await?;
        // The key decides the algorithm family; a token claiming another family (HS256 signed with
        // an RSA public key as the secret) is refused before any verification.
        let family_ok = matches!(
            (&jwk.algorithm, header.alg),
            (
                AlgorithmParameters::RSA(_),
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (
                AlgorithmParameters::EllipticCurve(_),
                Algorithm::ES256 | Algorithm::ES384
            ) | (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA)
        );
        if !family_ok {
            return Err(TokenError::Algorithm);
        }
        if let Some(key_alg) = jwk.common.key_algorithm
            && key_alg.to_string() != format!("{:?}", header.alg)
        {
            return Err(TokenError::Algorithm);
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| TokenError::UnknownKey)?;
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        v.set_issuer(&[self.info.issuer.as_str(), &format!("{}/", self.info.issuer)]);
        v.set_audience(&[audience, audience.trim_end_matches('/')]);
        decode::<Claims>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => TokenError::Issuer,
                jsonwebtoken::errors::ErrorKind::InvalidAudience => TokenError::Audience,
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
                _ => TokenError::Malformed,
            })
            // A principal is named by its subject: an empty one would name everyone alike.
            .and_then(|c| {
                if c.sub.trim().is_empty() {
                    Err(TokenError::Malformed)
                } else {
                    Ok(c)
                }
            })
    }
}

async fn fetch_jwks(http: &reqwest::Client, uri: &str) -> Result<JwkSet, String> {
    let r = http
        .get(uri)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| {
            format!(
                "JWKS {uri}: {}",
                crate::vault::outbound::oauth::error_chain(&e.without_url())
            )
        })?;
    if !r.status().is_success() {
        return Err(format!("JWKS {uri} answered HTTP {}", r.status().as_u16()));
    }
    r.json::<JwkSet>()
        .await
        .map_err(|e| format!("JWKS {uri}: {e}"))
}
