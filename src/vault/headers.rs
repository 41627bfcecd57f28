//! Header rules: which request headers a caller may set (never credential-bearing or
//! hop-by-hop ones), and which response headers are passed back to the model.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::VaultError;

/// Request headers callers may never set. Credential-bearing ones would bypass injection;
/// the rest would let a caller confuse proxies or smuggle requests.
const FORBIDDEN: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "cookie2",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "x-http-method-override",
    // The vault negotiates compression itself and decodes what comes back before scrubbing;
    // a caller-chosen encoding would reach the scrubber still compressed.
    "accept-encoding",
    "x-method-override",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "private-token",
];

/// A header name as servers that treat `_` like `-` (nginx with underscores on, CGI, many
/// frameworks) read it: lower case, `_` → `-`.
fn folded(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Validate caller headers into a map. `injection_header` is the grant's own credential header.
/// Names are compared in their folded form, so `X_Api_Key` cannot ride beside `X-Api-Key`.
pub fn caller_headers(
    headers: &BTreeMap<String, String>,
    injection_header: Option<&str>,
) -> Result<HeaderMap, VaultError> {
    let mut out = HeaderMap::new();
    let injection = injection_header.map(folded);
    for (k, v) in headers {
        let field = format!("headers.{k}");
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| VaultError::invalid(&field, "is not a valid HTTP header name"))?;
        let f = folded(name.as_str());
        if FORBIDDEN.contains(&f.as_str())
            || f.starts_with("proxy-")
            || injection.as_deref() == Some(f.as_str())
        {
            return Err(VaultError::invalid(
                &field,
                format!(
                    "callers may not set `{k}`: credentials are injected by the vault and connection headers are managed by it; remove this header"
                ),
            ));
        }
        let value = HeaderValue::from_str(v).map_err(|_| {
            VaultError::invalid(
                &field,
                "value contains characters not allowed in a header (e.g. line breaks)",
            )
        })?;
        out.append(name, value);
    }
    Ok(out)
}

/// Response headers worth showing the model. Everything else (Set-Cookie, auth challenges with
/// realm details, internal routing headers) stays out.
fn is_safe_response_header(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "content-length"
            | "content-language"
            | "content-disposition"
            | "etag"
            | "last-modified"
            | "cache-control"
            | "expires"
            | "date"
            | "location"
            | "link"
            | "retry-after"
            | "www-authenticate"
            | "x-request-id"
            | "x-github-request-id"
            | "request-id"
            | "x-oauth-scopes"
            | "x-accepted-oauth-scopes"
            | "x-total-count"
            | "x-next-page"
            | "x-page"
            | "x-per-page"
    ) || name.starts_with("x-ratelimit-")
        || name.starts_with("ratelimit")
}

/// The safe subset of (already scrubbed) response headers. Repeated headers are joined with ", ".
pub fn response_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if !is_safe_response_header(n) {
            continue;
        }
        let Ok(v) = value.to_str() else { continue };
        let v = v.to_owned();
        out.entry(n.to_owned())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn credential_and_hop_headers_are_refused_any_case() {
        for name in [
            "Authorization",
            "AUTHORIZATION",
            "Cookie",
            "Proxy-Authorization",
            "Proxy-Foo",
            "Host",
            "X-Forwarded-For",
            "Transfer-Encoding",
        ] {
            let e = caller_headers(&h(&[(name, "x")]), None).unwrap_err();
            assert!(
                matches!(&e, VaultError::InvalidRequest { field, .. } if field == &format!("headers.{name}")),
                "{name}: {e}"
            );
        }
    }

    #[test]
    fn the_grants_own_injection_header_is_refused() {
        assert!(caller_headers(&h(&[("X-Custom-Key", "x")]), Some("x-custom-key")).is_err());
        assert!(caller_headers(&h(&[("X-Custom-Key", "x")]), None).is_ok());
    }

    #[test]
    fn underscore_spellings_are_the_same_header() {
        for name in ["X_Custom_Key", "x_custom-key", "X-CUSTOM_KEY"] {
            assert!(
                caller_headers(&h(&[(name, "x")]), Some("X-Custom-Key")).is_err(),
                "{name}"
            );
        }
        for name in ["Proxy_Authorization", "X_Forwarded_For", "x_api_key"] {
            assert!(caller_headers(&h(&[(name, "x")]), None).is_err(), "{name}");
        }
    }

    #[test]
    fn ordinary_headers_pass_and_bad_values_fail() {
        let m = caller_headers(
            &h(&[("Accept", "application/json"), ("X-Trace", "1")]),
            Some("authorization"),
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert!(caller_headers(&h(&[("X-A", "a\r\nInjected: 1")]), None).is_err());
        assert!(caller_headers(&h(&[("Bad Name", "a")]), None).is_err());
    }

    #[test]
    fn response_headers_are_filtered() {
        let mut m = HeaderMap::new();
        m.insert("content-type", "application/json".parse().unwrap());
        m.insert("set-cookie", "session=abc".parse().unwrap());
        m.insert("x-ratelimit-remaining", "42".parse().unwrap());
        m.insert("x-echo-authorization", "Bearer x".parse().unwrap());
        m.append("link", "<https://x/?p=2>; rel=next".parse().unwrap());
        m.append("link", "<https://x/?p=9>; rel=last".parse().unwrap());
        let out = response_headers(&m);
        assert_eq!(out.get("content-type").unwrap(), "application/json");
        assert_eq!(out.get("x-ratelimit-remaining").unwrap(), "42");
        assert!(!out.contains_key("set-cookie"));
        assert!(!out.contains_key("x-echo-authorization"));
        assert_eq!(
            out.get("link").unwrap(),
            "<https://x/?p=2>; rel=next, <https://x/?p=9>; rel=last"
        );
    }
}
