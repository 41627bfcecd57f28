//! The OAuth client side, on the `oauth2` crate: authorization URLs with PKCE S256, code
//! exchange, refresh, RFC 7009 revocation, RFC 8628 device flow, and the account lookup that
//! tells us who authorized. Every request goes through the outbound door: token-endpoint
//! requests through [`TokenHttp`] (only to the provider's own OAuth endpoints), the account
//! lookup through the identity destination check. Error texts never include response bodies,
//! and the provider's `error_description` is scrubbed of the secrets that were sent.

use std::{future::Future, pin::Pin, time::Duration};

use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    DeviceAuthorizationUrl, EndpointMaybeSet, EndpointNotSet, ExtraTokenFields, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, RevocationUrl,
    StandardDeviceAuthorizationResponse, StandardRevocableToken, StandardTokenResponse,
    TokenResponse, TokenUrl,
    basic::{
        BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
        BasicTokenIntrospectionResponse, BasicTokenType,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use super::{Outbound, Purpose, destination, inject};
use crate::{
    providers::{HostPattern, IdentitySource, Provider, TokenAuth},
    secret::{Credential, Expose},
    vault::{canonical::CanonicalUrl, scrub::Scrubber},
};

const TOKEN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Non-standard fields of a token response, kept for identity lookup (Notion, Slack).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ExtraFields {
    #[serde(flatten)]
    pub fields: serde_json::Map<String, Value>,
}
impl ExtraTokenFields for ExtraFields {}

type TokenResp = StandardTokenResponse<ExtraFields, BasicTokenType>;
type Client = oauth2::Client<
    BasicErrorResponse,
    TokenResp,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointMaybeSet,
    EndpointMaybeSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// What went wrong talking to a provider's OAuth endpoints.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The provider says the grant is dead (`invalid_grant`): reconnecting is the only fix.
    #[error("the provider rejected the grant (invalid_grant){}", .0.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    InvalidGrant(Option<String>),
    #[error("the provider refused: {code}{}", description.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        code: String,
        description: Option<String>,
    },
    #[error("could not reach the provider's token endpoint: {0}")]
    Network(String),
    /// The request would have sent a secret somewhere the provider does not declare.
    #[error("blocked destination: {0}")]
    Blocked(String),
    #[error("the provider's answer was not a valid OAuth token response")]
    BadResponse,
    #[error("{0}")]
    Config(String),
}

impl OAuthError {
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, OAuthError::InvalidGrant(_))
    }

    /// The same error with provider-written text scrubbed of `s`'s secrets.
    fn scrubbed(self, s: &Scrubber) -> Self {
        match self {
            OAuthError::InvalidGrant(d) => OAuthError::InvalidGrant(s.opt(d)),
            OAuthError::Refused { code, description } => OAuthError::Refused {
                code: s.owned(code),
                description: s.opt(description),
            },
            OAuthError::Network(m) => OAuthError::Network(s.owned(m)),
            other => other,
        }
    }
}

/// Why the door refused or failed a token-endpoint request.
#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    #[error("{0}")]
    Blocked(String),
    #[error("{0}")]
    Network(String),
}

/// The `oauth2` crate's HTTP client, through the outbound door: a request goes out only when
/// its URL passes the destination check against the provider's OAuth endpoint origins.
pub struct TokenHttp<'a> {
    pub(super) out: &'a Outbound,
    pub(super) provider: String,
    pub(super) allowed: Vec<HostPattern>,
}

impl<'c> oauth2::AsyncHttpClient<'c> for TokenHttp<'_> {
    type Error = DoorError;
    type Future =
        Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, DoorError>> + Send + Sync + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let url = CanonicalUrl::parse(&request.uri().to_string())
                .map_err(|e| DoorError::Blocked(e.to_string()))?;
            destination::check(
                &url,
                &self.allowed,
                &self.provider,
                self.out.allow_http_loopback,
            )
            .map_err(|e| DoorError::Blocked(e.to_string()))?;
            let req: reqwest::Request = request
                .try_into()
                .map_err(|e: reqwest::Error| DoorError::Network(error_chain(&e.without_url())))?;
            let resp = self
                .out
                .http
                .execute(req)
                .await
                .map_err(|e| DoorError::Network(error_chain(&e.without_url())))?;
            let mut builder = http::Response::builder().status(resp.status());
            for (name, value) in resp.headers() {
                builder = builder.header(name, value);
            }
            let body = resp
                .bytes()
                .await
                .map_err(|e| DoorError::Network(error_chain(&e.without_url())))?;
            builder
                .body(body.to_vec())
                .map_err(|e| DoorError::Network(e.to_string()))
        })
    }
}

/// The token-endpoint client for a provider.
fn token_http<'a>(out: &'a Outbound, p: &Provider) -> TokenHttp<'a> {
    out.token_http(&p.id, Purpose::Token.allowed(p))
}

/// Secrets a token-endpoint exchange sends, to scrub from the provider's error text.
fn exchange_scrubber(p: &Provider, extra: &[&str]) -> Scrubber {
    Scrubber::new(
        p.client_secret
            .as_ref()
            .map(|s| s.expose_secret())
            .into_iter()
            .chain(extra.iter().copied()),
    )
}

/// Tokens obtained from a provider.
pub struct TokenSet {
    pub access_token: Zeroizing<String>,
    pub refresh_token: Option<Zeroizing<String>>,
    pub expires_in: Option<Duration>,
    /// Scopes the provider says it granted (`None` when it did not say).
    pub scopes: Option<Vec<String>>,
    pub extra: serde_json::Map<String, Value>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("expires_in", &self.expires_in)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl TokenSet {
    pub fn into_credential(self, previous_refresh: Option<&str>) -> Credential {
        Credential {
            access_token: self.access_token.to_string(),
            refresh_token: self
                .refresh_token
                .as_ref()
                .map(|r| r.to_string())
                .or_else(|| previous_refresh.map(str::to_owned)),
            username: None,
            session_token: None,
        }
    }
}

fn client(p: &Provider, redirect_uri: Option<&str>) -> Result<Client, OAuthError> {
    let cfg = |what: &str, e: url::ParseError| {
        OAuthError::Config(format!("provider {}: {what}: {e}", p.id))
    };
    let client_id = p.client_id.clone().ok_or_else(|| {
        OAuthError::Config(format!(
            "provider {} has no client id: {}",
            p.id,
            p.configure_hint()
        ))
    })?;
    let mut c = oauth2::Client::new(ClientId::new(client_id))
        .set_auth_uri_option(
            p.authorize_url
                .as_ref()
                .map(|u| AuthUrl::new(u.clone()))
                .transpose()
                .map_err(|e| cfg("authorize_url", e))?,
        )
        .set_token_uri_option(
            p.token_url
                .as_ref()
                .map(|u| TokenUrl::new(u.clone()))
                .transpose()
                .map_err(|e| cfg("token_url", e))?,
        )
        .set_revocation_url_option(
            p.revoke_url
                .as_ref()
                .map(|u| RevocationUrl::new(u.clone()))
                .transpose()
                .map_err(|e| cfg("revoke_url", e))?,
        )
        .set_device_authorization_url_option(
            p.device_authorization_url
                .as_ref()
                .map(|u| DeviceAuthorizationUrl::new(u.clone()))
                .transpose()
                .map_err(|e| cfg("device_authorization_url", e))?,
        )
        .set_auth_type(match p.token_auth {
            TokenAuth::ClientSecretPost | TokenAuth::None => AuthType::RequestBody,
            TokenAuth::ClientSecretBasic => AuthType::BasicAuth,
        });
    if let Some(s) = &p.client_secret
        && p.token_auth != TokenAuth::None
    {
        c = c.set_client_secret(ClientSecret::new(s.expose_secret().to_owned()));
    }
    if let Some(r) = redirect_uri {
        c = c.set_redirect_uri(RedirectUrl::new(r.to_owned()).map_err(|e| cfg("redirect uri", e))?);
    }
    Ok(c)
}

/// Split scopes the way providers write them: spaces (RFC 6749) or commas (GitHub, Slack).
pub fn parse_scopes(s: &str) -> Vec<String> {
    let mut out: Vec<String> = s
        .split([' ', ','])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect();
    out.dedup();
    out
}

fn token_set(r: TokenResp) -> TokenSet {
    let scopes = r.scopes().map(|s| {
        let mut all = Vec::new();
        for sc in s {
            all.extend(parse_scopes(sc.as_str()));
        }
        all
    });
    TokenSet {
        access_token: Zeroizing::new(r.access_token().secret().clone()),
        refresh_token: r
            .refresh_token()
            .map(|t| Zeroizing::new(t.secret().clone())),
        expires_in: r.expires_in(),
        scopes,
        extra: {
            let mut m = r.extra_fields().fields.clone();
            // Never keep secrets we do not use.
            m.remove("id_token");
            m.remove("access_token");
            m.remove("refresh_token");
            m
        },
    }
}

fn map_err(e: RequestTokenError<DoorError, BasicErrorResponse>) -> OAuthError {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let desc = r.error_description().cloned();
            match r.error() {
                BasicErrorResponseType::InvalidGrant => OAuthError::InvalidGrant(desc),
                other => OAuthError::Refused {
                    code: other.as_ref().to_owned(),
                    description: desc,
                },
            }
        }
        RequestTokenError::Request(DoorError::Blocked(m)) => OAuthError::Blocked(m),
        RequestTokenError::Request(DoorError::Network(m)) => OAuthError::Network(m),
        RequestTokenError::Parse(..) => OAuthError::BadResponse,
        RequestTokenError::Other(_) => OAuthError::BadResponse,
    }
}

/// The sources of an error joined, without any URL (reqwest errors can embed one).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.dedup();
    let text = parts.join(": ");
    // drop anything that looks like a URL with a query
    text.split_whitespace()
        .map(|w| if w.contains("://") { "<url>" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, OAuthError>>,
) -> Result<T, OAuthError> {
    tokio::time::timeout(TOKEN_CALL_TIMEOUT, f)
        .await
        .map_err(|_| {
            OAuthError::Network(format!(
                "no answer within {}s",
                TOKEN_CALL_TIMEOUT.as_secs()
            ))
        })?
}

/// Start of an authorization: the URL to send the browser to, its `state` and PKCE verifier.
pub struct AuthorizationStart {
    pub url: String,
    pub state: Zeroizing<String>,
    pub verifier: Option<Zeroizing<String>>,
}

pub fn authorization_url(
    p: &Provider,
    redirect_uri: &str,
    scopes: &[String],
) -> Result<AuthorizationStart, OAuthError> {
    let c = client(p, Some(redirect_uri))?;
    let mut req = c
        .authorize_url(CsrfToken::new_random)
        .map_err(|e| OAuthError::Config(format!("provider {}: {e}", p.id)))?;
    if !scopes.is_empty() {
        req = req.add_extra_param("scope", p.join_scopes(scopes));
    }
    for (k, v) in &p.authorize_params {
        req = req.add_extra_param(k.clone(), v.clone());
    }
    let verifier = if p.pkce {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        req = req.set_pkce_challenge(challenge);
        Some(Zeroizing::new(verifier.secret().clone()))
    } else {
        None
    };
    let (url, state) = req.url();
    Ok(AuthorizationStart {
        url: url.to_string(),
        state: Zeroizing::new(state.secret().clone()),
        verifier,
    })
}

pub async fn exchange_code(
    out: &Outbound,
    p: &Provider,
    redirect_uri: &str,
    code: &str,
    verifier: Option<&str>,
) -> Result<TokenSet, OAuthError> {
    let c = client(p, Some(redirect_uri))?;
    let mut req = c
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|e| OAuthError::Config(e.to_string()))?;
    if let Some(v) = verifier {
        req = req.set_pkce_verifier(PkceCodeVerifier::new(v.to_owned()));
    }
    let http = token_http(out, p);
    timed(async {
        req.request_async(&http)
            .await
            .map(token_set)
            .map_err(map_err)
    })
    .await
    .map_err(|e| e.scrubbed(&exchange_scrubber(p, &[code, verifier.unwrap_or_default()])))
}

pub async fn refresh(
    out: &Outbound,
    p: &Provider,
    refresh_token: &str,
) -> Result<TokenSet, OAuthError> {
    let c = client(p, None)?;
    let rt = RefreshToken::new(refresh_token.to_owned());
    let req = c
        .exchange_refresh_token(&rt)
        .map_err(|e| OAuthError::Config(e.to_string()))?;
    let http = token_http(out, p);
    timed(async {
        req.request_async(&http)
            .await
            .map(token_set)
            .map_err(map_err)
    })
    .await
    .map_err(|e| e.scrubbed(&exchange_scrubber(p, &[refresh_token])))
}

/// RFC 7009: revoke the refresh token (which revokes the grant at most providers), else the
/// access token. Written out rather than through `oauth2::Client::revoke_token`, which refuses
/// non-https endpoints and so could not serve loopback development providers; the catalog
/// already requires https for every non-loopback endpoint, and the door checks the origin.
pub async fn revoke(out: &Outbound, p: &Provider, cred: &Credential) -> Result<(), OAuthError> {
    use oauth2::AsyncHttpClient;
    let url = p
        .revoke_url
        .as_deref()
        .ok_or_else(|| OAuthError::Config(format!("provider {} has no revoke_url", p.id)))?;
    let client_id = p
        .client_id
        .as_deref()
        .ok_or_else(|| OAuthError::Config(format!("provider {} has no client id", p.id)))?;
    let (token, hint) = match &cred.refresh_token {
        Some(rt) => (Zeroizing::new(rt.clone()), "refresh_token"),
        None => (Zeroizing::new(cred.access_token.clone()), "access_token"),
    };
    // The form serializer is not `Send`: it lives in this block only, never across an await.
    let (req, body) = {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("token", &token)
            .append_pair("token_type_hint", hint);
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json");
        match (p.token_auth, &p.client_secret) {
            (TokenAuth::ClientSecretBasic, Some(secret)) => {
                use base64::Engine;
                let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    url::form_urlencoded::byte_serialize(client_id.as_bytes()).collect::<String>(),
                    url::form_urlencoded::byte_serialize(secret.expose_secret().as_bytes())
                        .collect::<String>()
                ));
                let mut v =
                    http::HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| {
                        OAuthError::Config("client credentials are not header-safe".into())
                    })?;
                v.set_sensitive(true);
                req = req.header(http::header::AUTHORIZATION, v);
            }
            (TokenAuth::ClientSecretPost, Some(secret)) => {
                form.append_pair("client_id", client_id)
                    .append_pair("client_secret", secret.expose_secret());
            }
            _ => {
                form.append_pair("client_id", client_id);
            }
        }
        (req, Zeroizing::new(form.finish()))
    };
    let req = req
        .body(body.as_bytes().to_vec())
        .map_err(|e| OAuthError::Config(e.to_string()))?;
    let http = token_http(out, p);
    let resp = timed(async {
        http.call(req).await.map_err(|e| match e {
            DoorError::Blocked(m) => OAuthError::Blocked(m),
            DoorError::Network(m) => OAuthError::Network(m),
        })
    })
    .await?;
    // RFC 7009 2.2: 200 means revoked (or already invalid).
    if resp.status().is_success() {
        return Ok(());
    }
    let status = resp.status().as_u16();
    let code = serde_json::from_slice::<Value>(resp.body())
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| format!("HTTP {status}"));
    Err(OAuthError::Refused {
        code,
        description: None,
    }
    .scrubbed(&exchange_scrubber(p, &[&token, &cred.access_token])))
}

/// RFC 8628 step 1: what to show the user.
pub struct DeviceStart {
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub user_code: String,
    pub expires_in: Duration,
    details: StandardDeviceAuthorizationResponse,
}

pub async fn device_start(
    out: &Outbound,
    p: &Provider,
    scopes: &[String],
) -> Result<DeviceStart, OAuthError> {
    let c = client(p, None)?;
    let mut req = c.exchange_device_code().map_err(|e| {
        OAuthError::Config(format!(
            "provider {} does not support the device flow: {e}",
            p.id
        ))
    })?;
    if !scopes.is_empty() {
        req = req.add_extra_param("scope", p.join_scopes(scopes));
    }
    let http = token_http(out, p);
    let details: StandardDeviceAuthorizationResponse =
        timed(async { req.request_async(&http).await.map_err(map_err) })
            .await
            .map_err(|e| e.scrubbed(&exchange_scrubber(p, &[])))?;
    Ok(DeviceStart {
        verification_uri: details.verification_uri().to_string(),
        verification_uri_complete: details
            .verification_uri_complete()
            .map(|u| u.secret().to_string()),
        user_code: details.user_code().secret().to_string(),
        expires_in: details.expires_in(),
        details,
    })
}

/// RFC 8628 step 2: poll until the user approves, denies, or the code expires.
pub async fn device_finish(
    out: &Outbound,
    p: &Provider,
    start: &DeviceStart,
) -> Result<TokenSet, OAuthError> {
    let c = client(p, None)?;
    let req = c
        .exchange_device_access_token(&start.details)
        .map_err(|e| OAuthError::Config(e.to_string()))?;
    let http = token_http(out, p);
    req.request_async(&http, tokio::time::sleep, Some(start.expires_in))
        .await
        .map(token_set)
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(r) => OAuthError::Refused {
                code: r.error().to_string(),
                description: r.error_description().cloned(),
            },
            RequestTokenError::Request(DoorError::Blocked(m)) => OAuthError::Blocked(m),
            RequestTokenError::Request(DoorError::Network(m)) => OAuthError::Network(m),
            _ => OAuthError::BadResponse,
        })
        .map_err(|e| e.scrubbed(&exchange_scrubber(p, &[])))
}

/// Who authorized: account identifier and display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountIdentity {
    pub account: String,
    pub display: Option<String>,
}

fn pointer_text(v: &Value, ptr: &str) -> Option<String> {
    match v.pointer(ptr)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Ask the provider who the token belongs to. Falls back to `default` when the provider
/// declares no identity lookup.
pub async fn fetch_identity(
    out: &Outbound,
    p: &Provider,
    tokens: &TokenSet,
) -> Result<AccountIdentity, OAuthError> {
    let Some(spec) = &p.identity else {
        return Ok(AccountIdentity {
            account: "default".into(),
            display: None,
        });
    };
    let doc = match spec.from {
        IdentitySource::TokenResponse => Value::Object(tokens.extra.clone()),
        IdentitySource::Api => {
            let url = spec.url.as_deref().expect("validated at catalog load");
            let url = CanonicalUrl::parse(url).map_err(|e| OAuthError::Config(e.to_string()))?;
            // The fresh token goes only where the provider declares its identity lookup lives.
            out.check(&url, p, Purpose::Identity)
                .map_err(|e| OAuthError::Blocked(e.to_string()))?;
            let cred = Credential {
                access_token: tokens.access_token.to_string(),
                refresh_token: None,
                username: None,
                session_token: None,
            };
            let inj = inject::inject(&p.injection, &cred)
                .map_err(|e| OAuthError::Config(e.to_string()))?;
            let method =
                http::Method::from_bytes(spec.method.as_bytes()).unwrap_or(http::Method::GET);
            let mut req = out
                .http
                .request(method, url.url().clone())
                .header(http::header::ACCEPT, "application/json");
            for (k, v) in &p.extra_headers {
                req = req.header(k, v);
            }
            if let Some((n, v)) = inj.header {
                req = req.header(n, v);
            }
            if let Some((k, v)) = &inj.query {
                req = req.query(&[(k.as_str(), v.as_str())]);
            }
            if let Some(b) = &spec.body {
                req = req
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            let resp = timed(async {
                req.send()
                    .await
                    .map_err(|e| OAuthError::Network(error_chain(&e.without_url())))
            })
            .await?;
            if !resp.status().is_success() {
                return Err(OAuthError::Refused {
                    code: format!("account lookup answered HTTP {}", resp.status().as_u16()),
                    description: None,
                });
            }
            resp.json::<Value>()
                .await
                .map_err(|_| OAuthError::BadResponse)?
        }
    };
    let account = pointer_text(&doc, &spec.account).ok_or_else(|| OAuthError::Refused {
        code: format!("account lookup answer has no `{}`", spec.account),
        description: None,
    })?;
    Ok(AccountIdentity {
        account,
        display: spec.display.as_deref().and_then(|d| pointer_text(&doc, d)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_split_on_spaces_and_commas() {
        assert_eq!(parse_scopes("repo,read:user"), vec!["repo", "read:user"]);
        assert_eq!(parse_scopes(" a  b,c "), vec!["a", "b", "c"]);
        assert!(parse_scopes("").is_empty());
    }

    #[test]
    fn error_chain_hides_urls() {
        #[derive(Debug)]
        struct E;
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request for url (https://x/?token=abc)")
            }
        }
        impl std::error::Error for E {}
        let s = error_chain(&E);
        assert!(!s.contains("token=abc"), "{s}");
    }
}
