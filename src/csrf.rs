//! Cross-site request forgery protection for every form vault-mcp serves. Two independent
//! checks, both required on every state-changing POST:
//! - a token in the form, a keyed MAC over what the form acts on (the link token) and who the
//!   page was shown to, so a form can only be submitted from the page we rendered for them;
//! - the browser's own word on where the request came from: a `Sec-Fetch-Site` other than
//!   `same-origin`/`none`, or an `Origin` that is not ours, is refused.

use axum::http::{HeaderMap, header};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Issues and checks form tokens. The key is derived from the master key, so tokens survive
/// restarts and are valid on every instance sharing the vault.
pub struct Csrf {
    key: Zeroizing<[u8; 32]>,
}

impl Csrf {
    pub fn new(key: Zeroizing<[u8; 32]>) -> Self {
        Csrf { key }
    }

    fn mac(&self, parts: &[&str]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_ref()).expect("key");
        for p in parts {
            mac.update(p.as_bytes());
            mac.update(b"\0");
        }
        mac
    }

    /// The token for a form acting on `parts` (e.g. `["connect", link token, viewer]`).
    pub fn token(&self, parts: &[&str]) -> String {
        B64.encode(self.mac(parts).finalize().into_bytes())
    }

    /// Constant-time check of a submitted token.
    pub fn verify(&self, parts: &[&str], given: &str) -> bool {
        B64.decode(given)
            .is_ok_and(|sig| self.mac(parts).verify_slice(&sig).is_ok())
    }
}

/// False when the browser says the request comes from another site. `public` is the URL users
/// reach the pages at (a load balancer may rewrite `Host`). `Sec-Fetch-Site`, sent by every
/// current browser, decides when present; otherwise a real `Origin` must be ours. `Origin: null`
/// is what our own pages send (they set `Referrer-Policy: no-referrer`), so it proves nothing
/// either way and the form token decides.
pub fn same_origin(headers: &HeaderMap, public: &url::Url) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return matches!(site, "same-origin" | "none");
    }
    match text(header::ORIGIN.as_str()) {
        None | Some("null") => true,
        Some(origin) => url::Url::parse(origin).is_ok_and(|o| {
            if o.origin() == public.origin() {
                return true;
            }
            let authority = match (o.host_str(), o.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_owned(),
                _ => return false,
            };
            text(header::HOST.as_str()).is_some_and(|h| authority.eq_ignore_ascii_case(h))
        }),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn tokens_bind_every_part() {
        let c = Csrf::new(Zeroizing::new([7u8; 32]));
        let t = c.token(&["connect", "link", "alice"]);
        assert!(c.verify(&["connect", "link", "alice"], &t));
        assert!(!c.verify(&["connect", "link", "bob"], &t));
        assert!(!c.verify(&["connect", "other", "alice"], &t));
        assert!(!c.verify(&["cancel", "link", "alice"], &t));
        assert!(!c.verify(&["connect", "link", "alice"], ""));
        assert!(!c.verify(&["connect", "link", "alice"], "not base64 !"));
        let other = Csrf::new(Zeroizing::new([8u8; 32]));
        assert!(!other.verify(&["connect", "link", "alice"], &t));
    }

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let public = url::Url::parse("https://vault.example.com/").unwrap();
        let same_origin = |m: &HeaderMap| super::same_origin(m, &public);
        assert!(same_origin(&h(&[("host", "127.0.0.1:8080")])));
        assert!(same_origin(&h(&[
            ("host", "10.0.0.5:8080"),
            ("origin", "https://vault.example.com"),
        ])));
        assert!(same_origin(&h(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "cross-site"),
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "same-site"),
        ])));
        assert!(same_origin(&h(&[
            ("host", "a"),
            ("origin", "null"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "a"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site")
        ])));
    }
}
