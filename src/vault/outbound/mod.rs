//! The one door out. This module is the only code that puts a credential — access token, API
//! key, refresh token, OAuth client secret — on an outgoing HTTP request, and every such request
//! passes the destination check first, against the hosts the provider declares for that purpose:
//!
//! | purpose | who sends | may go to |
//! |---|---|---|
//! | [`Purpose::Api`] | `vault_request`, tool packs | the provider's `api_hosts` (or the grant's own hosts) |
//! | [`Purpose::Identity`] | the account lookup after Connect | `api_hosts` + `identity_hosts` |
//! | [`Purpose::Token`] | code exchange, refresh, revocation, device flow, IdP sign-in | the origins of the provider's token/revoke/device endpoints |
//!
//! Redirects are followed only within the same origin, and every hop is checked again (the
//! destination here, policy through the caller's hook). Whatever comes back is scrubbed of every
//! form of the secrets that went out (see [`super::scrub`]).

mod destination;
mod inject;
pub mod oauth;

use std::time::{Duration, Instant};

use http::{HeaderMap, Method};

use super::{
    VaultError,
    canonical::CanonicalUrl,
    response::{self, RenderedBody},
    scrub::Scrubber,
};
use crate::{
    config::RequestConfig,
    providers::{HostPattern, Provider},
    secret::Credential,
};

/// What a credential is sent for; decides which hosts may receive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Api,
    Identity,
    Token,
}

impl Purpose {
    /// The host patterns a provider declares for this purpose.
    pub fn allowed(self, p: &Provider) -> Vec<HostPattern> {
        match self {
            Purpose::Api => p.host_patterns.clone(),
            Purpose::Identity => p
                .host_patterns
                .iter()
                .chain(&p.identity_host_patterns)
                .cloned()
                .collect(),
            Purpose::Token => p.token_host_patterns.clone(),
        }
    }
}

/// The shared outbound HTTP client and its rules.
#[derive(Clone)]
pub struct Outbound {
    http: reqwest::Client,
    allow_http_loopback: bool,
}

/// One API call to make with a credential.
pub struct ApiCall<'a> {
    pub provider: &'a Provider,
    pub credential: &'a Credential,
    /// Every form of the credential's secrets (`scrubber_for`), compiled once per credential.
    pub scrubber: &'a Scrubber,
    pub method: Method,
    pub url: CanonicalUrl,
    /// Caller headers, already validated (no credential-bearing or hop-by-hop headers).
    pub headers: HeaderMap,
    pub body: Option<(Vec<u8>, &'static str)>,
    pub limits: &'a RequestConfig,
    /// Asked before a same-origin redirect is followed (policy re-check); an error stops there.
    pub on_redirect: &'a (dyn Fn(&Method, &CanonicalUrl) -> Result<(), VaultError> + Send + Sync),
}

/// The provider's answer, already scrubbed.
pub struct Sent {
    pub status: u16,
    /// Every response header, values scrubbed (classification reads some the model never sees).
    pub headers: HeaderMap,
    pub rendered: RenderedBody,
    /// The URL that answered (differs from the request's after same-origin redirects).
    pub url: CanonicalUrl,
    /// Canonical paths of the redirects followed, in order.
    pub redirects: Vec<String>,
    /// Every form of the secrets sent, for scrubbing error texts built from the answer.
    pub scrubber: Scrubber,
}

/// The secrets of a credential, for scrubbing what comes back.
pub fn scrubber_for(cred: &Credential) -> Scrubber {
    Scrubber::new(
        std::iter::once(cred.access_token.as_str())
            .chain(cred.refresh_token.as_deref())
            .chain(cred.session_token.as_deref()),
    )
}

impl Outbound {
    pub fn new(allow_http_loopback: bool) -> Result<Self, VaultError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vault-mcp/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| VaultError::Internal(format!("HTTP client: {e}")))?;
        Ok(Outbound {
            http,
            allow_http_loopback,
        })
    }

    /// May a credential of `provider` go to `url` for `purpose`?
    pub fn check(
        &self,
        url: &CanonicalUrl,
        provider: &Provider,
        purpose: Purpose,
    ) -> Result<(), VaultError> {
        destination::check(
            url,
            &purpose.allowed(provider),
            &provider.id,
            self.allow_http_loopback,
        )
    }

    /// Make an API call with the credential injected (see the module docs).
    pub async fn api_call(&self, c: ApiCall<'_>) -> Result<Sent, VaultError> {
        let injected = inject::inject(&c.provider.injection, c.credential)?;
        let scrubber = c.scrubber;
        let timeout = Duration::from_secs(c.limits.timeout_secs);
        let deadline = Instant::now() + timeout;
        let mut url = c.url;
        let mut method = c.method;
        let mut body = c.body;
        let mut redirects = Vec::new();
        for hop in 0..=c.limits.max_redirects {
            // Every hop: the destination again, before the credential goes on the request.
            self.check(&url, c.provider, Purpose::Api)?;
            let mut target = url.url().clone();
            if let Some((k, v)) = &injected.query {
                target.query_pairs_mut().append_pair(k, v);
            }
            let mut rb = self
                .http
                .request(method.clone(), target)
                .headers(c.headers.clone());
            for (k, v) in &c.provider.extra_headers {
                if !c.headers.contains_key(k.as_str()) {
                    rb = rb.header(k, v);
                }
            }
            if let Some((name, value)) = &injected.header {
                rb = rb.header(name, value.clone());
            }
            if let Some((bytes, ct)) = &body {
                if !c.headers.contains_key(http::header::CONTENT_TYPE) {
                    rb = rb.header(http::header::CONTENT_TYPE, *ct);
                }
                rb = rb.body(bytes.clone());
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let host = url.host_label();
            let network = |e: reqwest::Error| {
                if e.is_timeout() {
                    VaultError::Timeout {
                        host: host.clone(),
                        secs: c.limits.timeout_secs,
                    }
                } else {
                    VaultError::Network {
                        host: host.clone(),
                        message: scrubber.owned(oauth::error_chain(&e.without_url())),
                    }
                }
            };
            let mut req = rb.timeout(remaining).build().map_err(network)?;
            if let crate::providers::Injection::AwsSigV4 { region, service } = &c.provider.injection
            {
                // Signed per hop: a redirect changes what the signature covers.
                inject::sign_sigv4(&mut req, c.credential, region, service)?;
            }
            let resp = self.http.execute(req).await.map_err(network)?;
            let status = resp.status().as_u16();
            if resp.status().is_redirection()
                && hop < c.limits.max_redirects
                && let Some(next) = resp
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.url().join(l).ok())
                    .and_then(|u| CanonicalUrl::new(u).ok())
                && url.same_origin(&next)
            {
                // Same origin: the credential may follow, if policy allows the new path too.
                // 301/302/303 turn into a body-less GET.
                let next_method = if matches!(status, 301..=303) && method != Method::HEAD {
                    Method::GET
                } else {
                    method.clone()
                };
                (c.on_redirect)(&next_method, &next)?;
                if next_method != method {
                    body = None;
                }
                method = next_method;
                redirects.push(next.path().to_owned());
                url = next;
                continue;
            }
            // Anything else (including a redirect to another origin) goes back as it is.
            let mut headers = HeaderMap::with_capacity(resp.headers().len());
            for (k, v) in resp.headers() {
                // A value that is not text cannot be scrubbed reliably, so it is dropped.
                if let Ok(text) = v.to_str() {
                    match scrubber.text(text) {
                        std::borrow::Cow::Borrowed(_) => headers.append(k.clone(), v.clone()),
                        std::borrow::Cow::Owned(clean) => match http::HeaderValue::from_str(&clean)
                        {
                            Ok(v) => headers.append(k.clone(), v),
                            Err(_) => false,
                        },
                    };
                }
            }
            let ct = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            // reqwest decodes gzip, deflate and brotli (and drops the header); any other coding
            // would reach the scrubber still compressed, so such a body is not returned.
            let undecoded = headers
                .get(http::header::CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .filter(|e| !e.trim().eq_ignore_ascii_case("identity"))
                .map(str::to_owned);
            let (bytes, truncated) = tokio::time::timeout(
                remaining,
                response::read_capped(resp, c.limits.max_response_bytes),
            )
            .await
            .map_err(|_| VaultError::Timeout {
                host: host.clone(),
                secs: c.limits.timeout_secs,
            })?
            .map_err(network)?;
            let rendered = match undecoded {
                Some(coding) => response::withheld(
                    &format!(
                        "the provider sent the body with Content-Encoding `{coding}`, which the vault cannot decode and so cannot check for echoed credentials; it is not returned"
                    ),
                    ct.as_deref(),
                ),
                None => response::render(bytes, truncated, ct.as_deref(), scrubber),
            };
            return Ok(Sent {
                status,
                headers,
                rendered,
                url,
                redirects,
                scrubber: scrubber.clone(),
            });
        }
        unreachable!("the loop returns on its last hop")
    }

    /// An HTTP client for the OAuth crate (token, refresh, device flow) that refuses to send to
    /// anything but the `allowed` origins.
    pub fn token_http(&self, provider: &str, allowed: Vec<HostPattern>) -> oauth::TokenHttp<'_> {
        oauth::TokenHttp {
            out: self,
            provider: provider.to_owned(),
            allowed,
        }
    }
}
