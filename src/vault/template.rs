//! `{name}` path templating. Values are percent-encoded as a single path segment (every
//! reserved character, `/` included), so a value can never add segments, a query or a host.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use url::Url;

use super::VaultError;

/// Everything but RFC 3986 unreserved characters is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What a placeholder must never change: scheme, user info, host and port.
fn origin(u: &Url) -> (&str, &str, Option<&str>, Option<&str>, Option<u16>) {
    (
        u.scheme(),
        u.username(),
        u.password(),
        u.host_str(),
        u.port_or_known_default(),
    )
}

fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Substitute `{name}` placeholders in `url` from `params`.
pub fn render(url: &str, params: &BTreeMap<String, String>) -> Result<String, VaultError> {
    for k in params.keys() {
        if !valid_name(k) {
            return Err(VaultError::invalid(
                format!("path_params.{k}"),
                "names must match [A-Za-z_][A-Za-z0-9_]*",
            ));
        }
    }
    // Placeholders may only sit after the authority: the host is never templated.
    let authority_end = url
        .find("://")
        .map(|i| {
            let rest = &url[i + 3..];
            i + 3 + rest.find(['/', '?', '#']).unwrap_or(rest.len())
        })
        .unwrap_or(0);
    if url[..authority_end].contains(['{', '}']) {
        return Err(VaultError::invalid(
            "url",
            "placeholders are only allowed in the path and query, never in the scheme or host",
        ));
    }
    let mut out = String::with_capacity(url.len() + 16);
    let mut used = std::collections::BTreeSet::new();
    let mut rest = url;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(VaultError::invalid(
                "url",
                format!("unmatched `}}` at `{}`", snippet(&rest[open..])),
            ));
        }
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| {
            VaultError::invalid(
                "url",
                format!("unclosed `{{` at `{}`", snippet(&rest[open..])),
            )
        })?;
        let name = &after[..close];
        if !valid_name(name) {
            return Err(VaultError::invalid(
                "url",
                format!(
                    "`{{{name}}}` is not a placeholder; names match [A-Za-z_][A-Za-z0-9_]* (encode literal braces as %7B / %7D)"
                ),
            ));
        }
        let value = params.get(name).ok_or_else(|| {
            VaultError::invalid(
                "path_params",
                format!("the url uses {{{name}}} but path_params has no `{name}`"),
            )
        })?;
        if value.is_empty() || value == "." || value == ".." {
            return Err(VaultError::invalid(
                format!("path_params.{name}"),
                "must not be empty, `.` or `..`",
            ));
        }
        out.extend(utf8_percent_encode(value, SEGMENT));
        used.insert(name);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    // The text test above misses URLs whose authority the URL parser finds without `://`
    // (`https:{h}`, `https:/{h}`, `https:///{h}`, `https:\\{h}`): the part before the first
    // placeholder must already fix the origin of the result.
    if let Some(first) = url.find('{')
        && let Ok(done) = Url::parse(&out)
        && !Url::parse(&url[..first]).is_ok_and(|fixed| origin(&fixed) == origin(&done))
    {
        return Err(VaultError::invalid(
            "url",
            "placeholders are only allowed in the path and query, never in the scheme or host",
        ));
    }
    if let Some(unused) = params.keys().find(|k| !used.contains(k.as_str())) {
        return Err(VaultError::invalid(
            format!("path_params.{unused}"),
            format!("is not used by the url (no {{{unused}}} placeholder)"),
        ));
    }
    Ok(out)
}

fn snippet(s: &str) -> &str {
    let end = s.char_indices().nth(20).map(|(i, _)| i).unwrap_or(s.len());
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitutes_and_encodes() {
        let u = render(
            "https://api.github.com/repos/{owner}/{repo}/issues",
            &p(&[("owner", "a b"), ("repo", "x/../y?z#w")]),
        )
        .unwrap();
        assert_eq!(
            u,
            "https://api.github.com/repos/a%20b/x%2F..%2Fy%3Fz%23w/issues"
        );
        assert_eq!(render("https://h/x", &p(&[])).unwrap(), "https://h/x");
        assert_eq!(
            render("https://h/{n}", &p(&[("n", "é~-._")])).unwrap(),
            "https://h/%C3%A9~-._"
        );
    }

    #[test]
    fn problems_name_the_field() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            ("https://h/{a}", &[], "path_params"),
            ("https://h/{a}", &[("a", "1"), ("b", "2")], "path_params.b"),
            ("https://h/{a", &[("a", "1")], "url"),
            ("https://h/a}", &[], "url"),
            ("https://h/{a-b}", &[], "url"),
            ("https://{host}/x", &[("host", "evil.com")], "url"),
            ("https:{host}/x", &[("host", "evil.com")], "url"),
            ("http:user{u}?", &[("u", "me")], "url"),
            ("https:/{host}/x", &[("host", "evil.com")], "url"),
            ("https:///{host}/x", &[("host", "evil.com")], "url"),
            ("https:\\\\{host}/x", &[("host", "evil.com")], "url"),
            ("https:{u}@api.github.com/x", &[("u", "evil")], "url"),
            ("https:/api.github.com:{port}/x", &[("port", "8443")], "url"),
            ("https://h/{a}", &[("a", "..")], "path_params.a"),
            ("https://h/{a}", &[("a", "")], "path_params.a"),
            ("https://h/{1a}", &[("1a", "x")], "path_params.1a"),
        ];
        for (url, params, field) in cases {
            match render(url, &p(params)) {
                Err(VaultError::InvalidRequest { field: f, .. }) => assert_eq!(&f, field, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_value_stays_one_segment(v in "\\PC{1,40}") {
            proptest::prop_assume!(v != "." && v != "..");
            let u = render("https://api.example.com/a/{v}/b", &p(&[("v", &v)])).unwrap();
            let parsed = url::Url::parse(&u).unwrap();
            proptest::prop_assert_eq!(parsed.host_str(), Some("api.example.com"));
            let segs: Vec<_> = parsed.path_segments().unwrap().collect();
            proptest::prop_assert_eq!(segs.len(), 3);
            proptest::prop_assert_eq!(segs[0], "a");
            proptest::prop_assert_eq!(segs[2], "b");
            proptest::prop_assert!(parsed.query().is_none() && parsed.fragment().is_none());
            let decoded = percent_encoding::percent_decode_str(segs[1]).decode_utf8().unwrap();
            proptest::prop_assert_eq!(decoded, v.as_str());
        }
    }
}
