//! Request signatures of the Alter SDK protocol, checked exactly as the SDK computes them.
//!
//! The signing key is HMAC-SHA256(api key, "alter-signing-v1"). The string to sign joins, with
//! `\n`: the method, the canonical path and query, the timestamp, the nonce, the body's SHA-256
//! (hex), the scope-constraints header (always a line, possibly empty), then `request-rule:<v>`
//! when that header is set. Identity headers (caller, caller type, actor id, context) are bound
//! by the "V2" string, which appends `caller:`, `caller-type:`, `actor-id:`, `actor-context:`
//! lines for the non-empty ones; when any is present only a V2 signature is accepted, so
//! stripping them (a downgrade) breaks the signature.
//!
//! Canonical path and query follow the SDK's Python: the path percent-decoded (`+` kept), the
//! query parsed as a form (`+` is a space), sorted by (name, value) and re-encoded with
//! `quote_plus` (unreserved `A-Za-z0-9_.-~`, upper-case hex).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The identity headers V2 binds, in signing order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    pub caller: Option<String>,
    pub caller_type: Option<String>,
    pub actor_id: Option<String>,
    pub context: Option<String>,
}

impl IdentityHeaders {
    fn any(&self) -> bool {
        [
            &self.caller,
            &self.caller_type,
            &self.actor_id,
            &self.context,
        ]
        .iter()
        .any(|v| v.as_deref().is_some_and(|s| !s.is_empty()))
    }
}

/// Everything the signature covers.
#[derive(Debug, Clone)]
pub struct Signed<'a> {
    pub method: &'a str,
    /// The request target as received: raw path, optionally `?` and the raw query.
    pub path_and_query: &'a str,
    pub timestamp: &'a str,
    pub nonce: &'a str,
    pub body_sha256: &'a str,
    pub scope_constraints: &'a str,
    pub request_rule: Option<&'a str>,
    pub identity: &'a IdentityHeaders,
}

/// The key requests are signed with, derived from the API key.
pub fn signing_key(api_key: &str) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(api_key.as_bytes()).expect("any key length");
    m.update(b"alter-signing-v1");
    m.finalize().into_bytes().into()
}

pub fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Python `urllib.parse.unquote`: %XX decoded as UTF-8, invalid sequences replaced.
fn unquote(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Python `quote_plus` with its default safe set.
fn quote_plus(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The canonical form of a request target (see the module docs).
pub fn canonical_path_and_query(target: &str) -> String {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let path = unquote(path);
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return path;
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
            (unquote(&k.replace('+', " ")), unquote(&v.replace('+', " ")))
        })
        .collect();
    pairs.sort();
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", quote_plus(k), quote_plus(v)))
        .collect();
    format!("{path}?{}", encoded.join("&"))
}

/// The string the SDK signs; `v2` adds the identity lines.
pub fn string_to_sign(s: &Signed<'_>, v2: bool) -> String {
    let mut out = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        s.method.to_ascii_uppercase(),
        canonical_path_and_query(s.path_and_query),
        s.timestamp,
        s.nonce,
        s.body_sha256,
        s.scope_constraints
    );
    if let Some(r) = s.request_rule.filter(|r| !r.is_empty()) {
        out.push_str("\nrequest-rule:");
        out.push_str(r);
    }
    if v2 {
        for (label, v) in [
            ("caller", &s.identity.caller),
            ("caller-type", &s.identity.caller_type),
            ("actor-id", &s.identity.actor_id),
            ("actor-context", &s.identity.context),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                out.push('\n');
                out.push_str(label);
                out.push(':');
                out.push_str(v);
            }
        }
    }
    out
}

pub fn sign(key: &[u8; 32], text: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("32-byte key");
    m.update(text.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// Check the signature headers of a request. With identity headers present only the V2 string
/// is accepted, and `X-Alter-Signature-V2`, when sent, must agree.
pub fn verify(key: &[u8; 32], s: &Signed<'_>, signature: &str, signature_v2: Option<&str>) -> bool {
    let v2 = s.identity.any();
    let expected = sign(key, &string_to_sign(s, v2));
    let eq = |given: &str| -> bool { expected.as_bytes().ct_eq(given.trim().as_bytes()).into() };
    if !eq(signature) {
        return false;
    }
    match signature_v2 {
        Some(v) => v2 && eq(v),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "alter_rk_abcdefghijklmnopqrstuv_iwpykn";
    const TS: &str = "1700000000";
    const NONCE: &str = "0123456789abcdef0123456789abcdef";
    const BODY_A: &str = r#"{"grant_id":"11111111-2222-3333-4444-555555555555","reason":null,"request":{"method":"GET","url":"https://api.example.com/x"}}"#;
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn signed<'a>(
        method: &'a str,
        target: &'a str,
        sha: &'a str,
        identity: &'a IdentityHeaders,
    ) -> Signed<'a> {
        Signed {
            method,
            path_and_query: target,
            timestamp: TS,
            nonce: NONCE,
            body_sha256: sha,
            scope_constraints: "",
            request_rule: None,
            identity,
        }
    }

    #[test]
    fn signing_key_vector() {
        assert_eq!(
            hex::encode(signing_key(KEY)),
            "d686d74251939c285fe8fa5ad18c0e2003f1ca17a5346e7838389386c1ac079f"
        );
    }

    #[test]
    fn canonical_targets() {
        assert_eq!(
            canonical_path_and_query("/sdk/x?b=2&a=hello world&a=%7E*"),
            "/sdk/x?a=hello+world&a=~%2A&b=2"
        );
        assert_eq!(
            canonical_path_and_query(
                "/sdk/provider-specs/oauth/my%20prov/operation?operation_id=post%3A%2Femails"
            ),
            "/sdk/provider-specs/oauth/my prov/operation?operation_id=post%3A%2Femails"
        );
        assert_eq!(canonical_path_and_query("/x?"), "/x");
        assert_eq!(canonical_path_and_query("/x?&"), "/x?");
        assert_eq!(
            canonical_path_and_query("/a+b"),
            "/a+b",
            "+ is kept in the path"
        );
        assert_eq!(
            canonical_path_and_query("/x?k"),
            "/x?k=",
            "blank values kept"
        );
    }

    #[test]
    fn reference_vectors() {
        let key = signing_key(KEY);
        let body_sha = sha256_hex(BODY_A.as_bytes());
        assert!(body_sha.starts_with("47c54f94") && body_sha.ends_with("a45a"));
        let none = IdentityHeaders::default();
        // A: POST /sdk/token
        let a = signed("POST", "/sdk/token", &body_sha, &none);
        assert_eq!(
            sign(&key, &string_to_sign(&a, false)),
            "bfafa92ad9624090b919ecbb5c31b7bc8507e6b104497c25a41f590ead298682"
        );
        // B: a sorted query
        let b = signed(
            "GET",
            "/sdk/agents?offset=0&limit=10&include_revoked=false",
            EMPTY,
            &none,
        );
        assert_eq!(
            sign(&key, &string_to_sign(&b, false)),
            "b2c6ec01213fcb1d544d4e34f1d7ef1bd3d9bc0b976f43d5ba15f841389e67d0"
        );
        // C: actor context bound by V2
        let ctx = IdentityHeaders {
            context: Some(r#"{"tool":"t"}"#.into()),
            ..Default::default()
        };
        let c = signed("POST", "/sdk/token", &body_sha, &ctx);
        let sig_c = sign(&key, &string_to_sign(&c, true));
        assert_eq!(
            sig_c,
            "d715828e3210304e20f05254e3dbd665b548f0f4ebe67627158706acd473a610"
        );
        assert!(verify(&key, &c, &sig_c, Some(&sig_c)));
        // D: constructor caller
        let caller = IdentityHeaders {
            caller: Some("my-agent".into()),
            caller_type: Some("agent".into()),
            ..Default::default()
        };
        let d = signed("POST", "/sdk/token", &body_sha, &caller);
        assert_eq!(
            sign(&key, &string_to_sign(&d, true)),
            "9b969718c938fcb6adeec889c75204edd5deef77ebc223c6e5972ca9e5705193"
        );
        // E: constraints and a request rule
        let mut e = signed("GET", "/sdk/scopes", EMPTY, &none);
        e.scope_constraints = "grants:read";
        let rule = "eyJydWxlX3R5cGUiOiJqc29uX21hdGNoIiwicnVsZV9ib2R5Ijp7IndoZW4iOnsibWV0aG9kIjoiUE9TVCJ9LCJlZmZlY3QiOiJkZW55In19";
        e.request_rule = Some(rule);
        let text = string_to_sign(&e, false);
        assert!(text.ends_with(&format!("\ngrants:read\nrequest-rule:{rule}")));
    }

    #[test]
    fn tampering_and_downgrades_fail() {
        let key = signing_key(KEY);
        let body_sha = sha256_hex(BODY_A.as_bytes());
        let caller = IdentityHeaders {
            caller: Some("my-agent".into()),
            caller_type: Some("agent".into()),
            ..Default::default()
        };
        let d = signed("POST", "/sdk/token", &body_sha, &caller);
        let good = sign(&key, &string_to_sign(&d, true));
        assert!(verify(&key, &d, &good, None));
        // Another caller, another body, another path: refused.
        let other = IdentityHeaders {
            caller: Some("admin".into()),
            ..caller.clone()
        };
        assert!(!verify(
            &key,
            &signed("POST", "/sdk/token", &body_sha, &other),
            &good,
            None
        ));
        assert!(!verify(
            &key,
            &signed("POST", "/sdk/token", EMPTY, &caller),
            &good,
            None
        ));
        assert!(!verify(
            &key,
            &signed("POST", "/sdk/proxy", &body_sha, &caller),
            &good,
            None
        ));
        // Identity headers stripped, legacy signature of the stripped request from elsewhere:
        // the legacy signature does not verify a request that carries identity headers.
        let none = IdentityHeaders::default();
        let legacy = sign(
            &key,
            &string_to_sign(&signed("POST", "/sdk/token", &body_sha, &none), false),
        );
        assert!(!verify(&key, &d, &legacy, None));
        // A V2 header on a request without identity headers is refused.
        let plain = signed("POST", "/sdk/token", &body_sha, &none);
        assert!(!verify(&key, &plain, &legacy, Some(&legacy)));
        assert!(verify(&key, &plain, &legacy, None));
        // Another key.
        let other_key = signing_key("alter_rk_bbcdefghijklmnopqrstuv_aaaaaa");
        assert!(!verify(&other_key, &plain, &legacy, None));
    }
}
