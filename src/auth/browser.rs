//! Browser sign-in for hosted mode: users sign in at the company IdP (OpenID Connect, code +
//! PKCE) and get a signed session cookie. The Connect pages use it to check that whoever opens a
//! link is the user whose agent created it; the `oauth` authorization server uses it to know who
//! is consenting.

use std::sync::Arc;

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use hmac::{Hmac, Mac};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, StandardTokenResponse,
    TokenUrl,
    basic::{
        BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
        BasicTokenType,
    },
};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::jwt::JwtValidator;
use crate::{
    config::IdpConfig,
    providers::HostPattern,
    secret::{Expose, Secret},
    vault::{CallbackParams, Principal, now, outbound::Outbound, scrub::Scrubber},
};

const SESSION_COOKIE: &str = "vault_mcp_session";
const LOGIN_COOKIE: &str = "vault_mcp_login";
const BROWSER_COOKIE: &str = "vault_mcp_browser";
const SESSION_TTL: i64 = 8 * 3600;
const LOGIN_TTL: i64 = 600;
/// OAuth `state` values of sign-ins start with this, so the shared callback can tell them from
/// Connect attempts.
pub const LOGIN_STATE_PREFIX: &str = "login.";

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct IdTokenField {
    #[serde(default)]
    id_token: Option<String>,
}
impl ExtraTokenFields for IdTokenField {}

type LoginClient = oauth2::Client<
    BasicErrorResponse,
    StandardTokenResponse<IdTokenField, BasicTokenType>,
    BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

#[derive(Serialize, Deserialize)]
struct SessionCookie {
    p: String,
    d: String,
    exp: i64,
}

#[derive(Serialize, Deserialize)]
struct LoginCookie {
    state: String,
    verifier: String,
    nonce: String,
    next: String,
    exp: i64,
}

pub struct BrowserAuth {
    key: Zeroizing<[u8; 32]>,
    idp: Arc<JwtValidator>,
    client_id: String,
    client_secret: Option<Secret>,
    scopes: Vec<String>,
    redirect_uri: String,
    /// Path prefix of the public URL ("/" or "/vault/"), for cookie paths and local redirects.
    base_path: String,
    secure: bool,
    /// The vault's outbound door: the client secret goes only to the IdP's token endpoint.
    out: Outbound,
    token_hosts: Vec<HostPattern>,
}

impl BrowserAuth {
    pub fn new(
        key: Zeroizing<[u8; 32]>,
        idp: Arc<JwtValidator>,
        cfg: &IdpConfig,
        public_url: &url::Url,
        out: Outbound,
    ) -> Result<Self, String> {
        let client_id = cfg.client_id.clone().ok_or_else(|| {
            "[http.idp] client_id is required: users sign in through it (register vault-mcp at your IdP with redirect URI <public_url>oauth/callback)".to_owned()
        })?;
        let (Some(_), Some(token_endpoint)) =
            (&idp.info.authorization_endpoint, &idp.info.token_endpoint)
        else {
            return Err(format!(
                "the IdP {} publishes no authorization/token endpoints",
                idp.info.issuer
            ));
        };
        let token_hosts = vec![
            url::Url::parse(token_endpoint)
                .map_err(|e| e.to_string())
                .and_then(|u| HostPattern::from_url(&u))
                .map_err(|e| format!("the IdP's token endpoint `{token_endpoint}`: {e}"))?,
        ];
        Ok(BrowserAuth {
            key,
            idp,
            client_id,
            client_secret: cfg.client_secret.clone(),
            scopes: cfg.scopes.clone(),
            redirect_uri: public_url
                .join("oauth/callback")
                .expect("joinable")
                .to_string(),
            base_path: public_url.path().to_owned(),
            secure: public_url.scheme() == "https",
            out,
            token_hosts,
        })
    }

    fn sign(&self, payload: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_ref()).expect("key");
        mac.update(payload);
        format!(
            "{}.{}",
            B64.encode(payload),
            B64.encode(mac.finalize().into_bytes())
        )
    }

    fn verify(&self, value: &str) -> Option<Vec<u8>> {
        let (payload, sig) = value.split_once('.')?;
        let payload = B64.decode(payload).ok()?;
        let sig = B64.decode(sig).ok()?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_ref()).expect("key");
        mac.update(&payload);
        mac.verify_slice(&sig).ok()?;
        Some(payload)
    }

    /// A random value naming this browser (a cookie it keeps): binds an authorization request
    /// to the browser that started it. Returns the value and, when new, the cookie to set.
    pub fn browser_nonce(&self, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
        if let Some(v) = Self::read_cookie(headers, BROWSER_COOKIE).filter(|v| v.len() == 43) {
            return (v.to_owned(), None);
        }
        let v = crate::vault::new_token();
        let c = self.cookie(BROWSER_COOKIE, &v, SESSION_TTL);
        (v, Some(c))
    }

    /// A keyed MAC over `parts`, for CSRF tokens bound to a session.
    pub fn mac(&self, parts: &[&str]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_ref()).expect("key");
        for p in parts {
            mac.update(p.as_bytes());
            mac.update(b"\0");
        }
        B64.encode(mac.finalize().into_bytes())
    }

    fn cookie(&self, name: &str, value: &str, max_age: i64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path={}; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
            self.base_path
        ))
        .expect("cookie is ASCII")
    }

    fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .map(str::trim)
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }

    /// The signed-in user, if the browser carries a valid session cookie.
    pub fn session(&self, headers: &HeaderMap) -> Option<Principal> {
        let raw = Self::read_cookie(headers, SESSION_COOKIE)?;
        let s: SessionCookie = serde_json::from_slice(&self.verify(raw)?).ok()?;
        (s.exp > now()).then(|| Principal::new(s.p, s.d))
    }

    /// Send the browser to the IdP; come back to `next` (a local path) when signed in.
    pub fn start_login(&self, next: &str) -> Response {
        let next = safe_next(next, &self.base_path);
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e),
        };
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = crate::vault::new_token();
        let mut req = client
            .authorize_url(|| {
                CsrfToken::new(format!("{LOGIN_STATE_PREFIX}{}", crate::vault::new_token()))
            })
            .set_pkce_challenge(challenge)
            .add_extra_param("nonce", nonce.clone());
        req = req.add_extra_param("scope", self.scopes.join(" "));
        let (url, state) = req.url();
        let cookie = LoginCookie {
            state: state.secret().clone(),
            verifier: verifier.secret().clone(),
            nonce,
            next,
            exp: now() + LOGIN_TTL,
        };
        let value = self.sign(&serde_json::to_vec(&cookie).expect("serialize"));
        let mut r = StatusCode::SEE_OTHER.into_response();
        let h = r.headers_mut();
        h.insert(
            header::LOCATION,
            HeaderValue::from_str(url.as_str()).expect("url is ASCII"),
        );
        h.insert(
            header::SET_COOKIE,
            self.cookie(LOGIN_COOKIE, &value, LOGIN_TTL),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    fn client(&self) -> Result<LoginClient, String> {
        let info = &self.idp.info;
        let mut c = oauth2::Client::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri(
                AuthUrl::new(info.authorization_endpoint.clone().expect("checked"))
                    .map_err(|e| e.to_string())?,
            )
            .set_token_uri(
                TokenUrl::new(info.token_endpoint.clone().expect("checked"))
                    .map_err(|e| e.to_string())?,
            )
            .set_redirect_uri(
                RedirectUrl::new(self.redirect_uri.clone()).map_err(|e| e.to_string())?,
            );
        if let Some(s) = &self.client_secret {
            c = c.set_client_secret(ClientSecret::new(s.expose_secret().to_owned()));
        }
        Ok(c)
    }

    /// The IdP sent the browser back: check state, exchange the code, verify the ID token, set
    /// the session cookie and continue to where the sign-in started.
    pub async fn finish_login(&self, headers: &HeaderMap, p: &CallbackParams) -> Response {
        let Some(login) = Self::read_cookie(headers, LOGIN_COOKIE)
            .and_then(|raw| self.verify(raw))
            .and_then(|b| serde_json::from_slice::<LoginCookie>(&b).ok())
        else {
            return error_page(
                StatusCode::BAD_REQUEST,
                "This sign-in cannot be completed: start again from the link you were given.",
            );
        };
        if login.exp <= now() || p.state.as_deref() != Some(login.state.as_str()) {
            return error_page(
                StatusCode::BAD_REQUEST,
                "This sign-in expired or does not match; start again.",
            );
        }
        if let Some(err) = &p.error {
            return error_page(
                StatusCode::FORBIDDEN,
                &format!("Sign-in was not completed ({err})."),
            );
        }
        if let (Some(iss), false) = (
            &p.iss,
            p.iss.as_deref() == Some(self.idp.info.issuer.as_str()),
        ) {
            return error_page(
                StatusCode::BAD_REQUEST,
                &format!("The sign-in answer came from an unexpected issuer ({iss})."),
            );
        }
        let Some(code) = &p.code else {
            return error_page(
                StatusCode::BAD_REQUEST,
                "The sign-in answer carries no code.",
            );
        };
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e),
        };
        let resp = client
            .exchange_code(AuthorizationCode::new(code.clone()))
            .set_pkce_verifier(PkceCodeVerifier::new(login.verifier.clone()))
            .request_async(&self.out.token_http("idp", self.token_hosts.clone()))
            .await;
        let id_token = match resp {
            Ok(r) => r.extra_fields().id_token.clone(),
            Err(e) => {
                let scrub = Scrubber::new(
                    self.client_secret
                        .as_ref()
                        .map(|s| s.expose_secret())
                        .into_iter()
                        .chain([code.as_str(), login.verifier.as_str()]),
                );
                tracing::warn!(error = %scrub.text(&e.to_string()), "sign-in code exchange failed");
                return error_page(
                    StatusCode::BAD_GATEWAY,
                    "The identity provider refused the sign-in; start again.",
                );
            }
        };
        let Some(id_token) = id_token else {
            return error_page(
                StatusCode::BAD_GATEWAY,
                "The identity provider returned no ID token (is `openid` among [http.idp] scopes?).",
            );
        };
        let claims = match self
            .idp
            .validate(&id_token, &self.client_id, super::jwt::TokenUse::Id)
            .await
        {
            Ok(c) if c.nonce.as_deref() == Some(login.nonce.as_str()) => c,
            Ok(_) => {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    "The ID token does not belong to this sign-in.",
                );
            }
            Err(e) => {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    &format!("The ID token was refused: {e}."),
                );
            }
        };
        let principal = super::principal_from_claims(&claims);
        let session = SessionCookie {
            p: principal.id().to_owned(),
            d: principal.display().to_owned(),
            exp: now() + SESSION_TTL,
        };
        let value = self.sign(&serde_json::to_vec(&session).expect("serialize"));
        let mut r = StatusCode::SEE_OTHER.into_response();
        let h = r.headers_mut();
        h.insert(
            header::LOCATION,
            HeaderValue::from_str(&login.next).unwrap_or(HeaderValue::from_static("/")),
        );
        h.append(
            header::SET_COOKIE,
            self.cookie(SESSION_COOKIE, &value, SESSION_TTL),
        );
        h.append(header::SET_COOKIE, self.cookie(LOGIN_COOKIE, "", 0));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    crate::html::html(
        status.as_u16(),
        crate::html::message_page("Sign-in problem", "bad", message),
    )
}

/// Where to go after sign-in: a path on this server under `base_path`, never anything a
/// browser could read as another site. Control characters and whitespace are refused outright
/// (browsers strip tabs and newlines from URLs, turning `/\t/evil.com` into `//evil.com`).
fn safe_next(next: &str, base_path: &str) -> String {
    let fallback = || base_path.to_owned();
    if next.is_empty()
        || next
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        || !next.starts_with('/')
        || next.starts_with("//")
    {
        return fallback();
    }
    let base = url::Url::parse("http://vault.invalid/").expect("static URL");
    let resolved = match base.join(next) {
        Ok(u) if u.origin() == base.origin() && u.path().starts_with(base_path) => {
            match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_owned(),
            }
        }
        _ => return fallback(),
    };
    // Resolving dot-segments (`/.//evil.com`, `/%2e//evil.com`) can itself produce a
    // network-path reference: check the result, not only the input.
    if resolved.starts_with("//") || resolved.contains('\\') {
        return fallback();
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_server() {
        for ok in ["/connect/abc", "/approvals/x?y=1", "/vault/connect/abc"] {
            let base = if ok.starts_with("/vault/") {
                "/vault/"
            } else {
                "/"
            };
            assert_eq!(safe_next(ok, base), ok);
        }
        for bad in [
            "//evil.com",
            "/\t/evil.com",
            "/\n/evil.com",
            "/\r\n/evil.com",
            "/ /evil.com",
            "\\\\evil.com",
            "/\\evil.com",
            "https://evil.com/",
            "evil.com",
            "/%0a/evil.com/..",
            "",
            "/\u{0085}/evil.com",
            "/\u{2028}/evil.com",
            "/.//evil.com",
            "/..//evil.com",
            "/x/..//evil.com",
            "/%2e//evil.com",
            "/x/%2E%2E//evil.com",
            "/approvals/..%2F%2Fevil.com",
        ] {
            let out = safe_next(bad, "/");
            assert!(
                out == "/" || (out.starts_with('/') && !out.starts_with("//")),
                "{bad:?} -> {out:?}"
            );
            // However a browser reads it, it stays on this server.
            let lands = url::Url::parse("https://vault.example/")
                .unwrap()
                .join(&out)
                .unwrap();
            assert_eq!(
                lands.host_str(),
                Some("vault.example"),
                "{bad:?} -> {out:?}"
            );
            assert!(
                !out.starts_with("//") && !out.contains('\\'),
                "{bad:?} -> {out:?}"
            );
        }
        assert_eq!(safe_next("/connect/x", "/vault/"), "/vault/");
    }
}
