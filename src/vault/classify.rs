//! Reading a provider's answer for what it means to the grant: RFC 6750 `WWW-Authenticate`
//! challenges (`insufficient_scope`, `invalid_token`) and GitHub's `X-Accepted-OAuth-Scopes`.

use std::collections::BTreeMap;

use http::HeaderMap;

/// Parameters of the first `Bearer` challenge, keys lower-cased. Lenient: stops at the first
/// item it cannot parse and keeps what it had.
pub fn bearer_challenge(headers: &HeaderMap) -> Option<BTreeMap<String, String>> {
    let raw = headers.get(http::header::WWW_AUTHENTICATE)?.to_str().ok()?;
    let rest = raw.trim_start();
    let (scheme, mut rest) = rest.split_at(rest.find(char::is_whitespace).unwrap_or(rest.len()));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut out = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            break;
        }
        rest = &rest[eq + 1..];
        let value = if let Some(q) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            let Some(end) = end else { break };
            rest = &q[end..];
            v
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            let v = rest[..end].trim().to_owned();
            rest = &rest[end..];
            v
        };
        out.insert(key.to_ascii_lowercase(), value);
    }
    Some(out)
}

/// What a failed response says about the grant's scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeSignal {
    /// RFC 6750 `insufficient_scope`, with the scopes the resource asked for (may be empty).
    Insufficient(Vec<String>),
    None,
}

/// Look for a scope shortfall in a 4xx response.
pub fn scope_signal(status: u16, headers: &HeaderMap, granted: &[String]) -> ScopeSignal {
    if (status == 403 || status == 401)
        && let Some(ch) = bearer_challenge(headers)
        && ch.get("error").map(String::as_str) == Some("insufficient_scope")
    {
        let want: Vec<String> = ch
            .get("scope")
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        return ScopeSignal::Insufficient(want);
    }
    // GitHub: X-Accepted-OAuth-Scopes lists scopes any one of which would do; it answers 403 or
    // 404 (to hide private resources) when the token has none of them.
    if (status == 403 || status == 404)
        && let Some(acc) = headers
            .get("x-accepted-oauth-scopes")
            .and_then(|v| v.to_str().ok())
    {
        let accepted: Vec<String> = acc
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if !accepted.is_empty() && !accepted.iter().any(|a| granted.contains(a)) {
            return ScopeSignal::Insufficient(vec![accepted[0].clone()]);
        }
    }
    ScopeSignal::None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn parses_quoted_escaped_and_bare_params() {
        let h = hm(&[(
            "www-authenticate",
            r#"Bearer realm="api", error="insufficient_scope", scope="a b", error_description="say \"hi\"", x=bare"#,
        )]);
        let c = bearer_challenge(&h).unwrap();
        assert_eq!(c["realm"], "api");
        assert_eq!(c["scope"], "a b");
        assert_eq!(c["error_description"], "say \"hi\"");
        assert_eq!(c["x"], "bare");
        assert!(bearer_challenge(&hm(&[("www-authenticate", "Basic realm=x")])).is_none());
        // unterminated quote: keep what parsed
        let c = bearer_challenge(&hm(&[(
            "www-authenticate",
            r#"Bearer error="invalid_token", scope="oops"#,
        )]))
        .unwrap();
        assert_eq!(c["error"], "invalid_token");
    }

    #[test]
    fn insufficient_scope_from_rfc6750_and_github() {
        let h = hm(&[(
            "www-authenticate",
            r#"Bearer error="insufficient_scope", scope="calendar.read""#,
        )]);
        assert_eq!(
            scope_signal(403, &h, &[]),
            ScopeSignal::Insufficient(vec!["calendar.read".into()])
        );
        let gh = hm(&[("x-accepted-oauth-scopes", "repo, public_repo")]);
        assert_eq!(
            scope_signal(404, &gh, &["read:user".into()]),
            ScopeSignal::Insufficient(vec!["repo".into()])
        );
        assert_eq!(scope_signal(404, &gh, &["repo".into()]), ScopeSignal::None);
        assert_eq!(scope_signal(500, &h, &[]), ScopeSignal::None);
        let invalid = hm(&[("www-authenticate", r#"Bearer error="invalid_token""#)]);
        assert_eq!(scope_signal(401, &invalid, &[]), ScopeSignal::None);
    }
}
