//! One canonical form of every outgoing URL. The destination check, policy matching and the
//! audit trail all read this form, so no other spelling of a URL (`//admin`, `/%61dmin`,
//! `/x/../admin`, `API.Example.COM.`) can look different to one of them than to the others.
//!
//! The URL that is *sent* is the WHATWG-normalized one the caller wrote (a server may give
//! meaning to an encoded `%2F`, as GitLab does); the canonical path is what it means:
//! percent-decoded once, `\` read as `/`, `;params` dropped from segments, duplicate slashes
//! collapsed, dot-segments resolved, and no trailing slash. Host: lower case, punycode, no
//! trailing dot.

use url::{Host, Url};

use super::VaultError;

/// A parsed outgoing URL with its canonical parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalUrl {
    url: Url,
    host: String,
    port: u16,
    path: String,
}

fn decode_path(raw: &str) -> Result<String, String> {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    let s = String::from_utf8(bytes)
        .map_err(|_| "the path decodes to bytes that are not UTF-8".to_owned())?;
    if s.chars().any(char::is_control) {
        return Err("the path holds an encoded control character (%00-%1F, %7F)".into());
    }
    Ok(s)
}

/// Canonical form of a URL path (see the module docs).
pub fn canonical_path(raw: &str) -> Result<String, String> {
    let decoded = decode_path(raw)?.replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        // `;jsessionid=…`-style parameters are ignored by many servers.
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    Ok(format!("/{}", out.join("/")))
}

impl CanonicalUrl {
    pub fn new(url: Url) -> Result<Self, VaultError> {
        let invalid = |m: String| VaultError::invalid("url", m);
        let host = match url.host() {
            Some(Host::Domain(d)) => d.trim_end_matches('.').to_ascii_lowercase(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => format!("[{ip}]"),
            None => return Err(invalid(format!("`{url}` has no host"))),
        };
        if host.is_empty() {
            return Err(invalid(format!("`{url}` has no host")));
        }
        let path = canonical_path(url.path()).map_err(|e| invalid(format!("`{url}`: {e}")))?;
        Ok(CanonicalUrl {
            port: url.port_or_known_default().unwrap_or(0),
            host,
            path,
            url,
        })
    }

    pub fn parse(text: &str) -> Result<Self, VaultError> {
        let url = Url::parse(text).map_err(|e| {
            VaultError::invalid(
                "url",
                format!("`{text}` is not an absolute URL ({e}); write it as https://host/path"),
            )
        })?;
        Self::new(url)
    }

    /// The URL as it is sent.
    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn into_url(self) -> Url {
        self.url
    }

    /// Lower-case host without a trailing dot (IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host` or `host:port` when the port is not the scheme's default.
    pub fn host_label(&self) -> String {
        match self.url.port() {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    /// The canonical path (decoded, normalized).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Same scheme, host and port.
    pub fn same_origin(&self, other: &CanonicalUrl) -> bool {
        self.url.scheme() == other.url.scheme()
            && self.host == other.host
            && self.port == other.port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(u: &str) -> String {
        CanonicalUrl::parse(u).unwrap().path().to_owned()
    }

    #[test]
    fn spellings_of_one_path_agree() {
        for u in [
            "https://h/admin/users",
            "https://h//admin/users",
            "https://h/%61dmin/users",
            "https://h/%61%64%6D%69%6E/users/",
            "https://h/x/../admin/users",
            "https://h/x/%2e%2e/admin/users",
            "https://h/./admin/./users",
            "https://h/admin;jsessionid=1/users",
            "https://h/admin%2Fusers",
            "https://h/admin%5Cusers",
            "https://h\\admin\\users",
            "https://h/admin//users//",
            "https://h/../../admin/users",
        ] {
            assert_eq!(path(u), "/admin/users", "{u}");
        }
        assert_eq!(path("https://h"), "/");
        assert_eq!(path("https://h/"), "/");
    }

    #[test]
    fn hosts_are_canonical() {
        let c = CanonicalUrl::parse("https://API.GitHub.COM./x").unwrap();
        assert_eq!(c.host(), "api.github.com");
        assert_eq!(c.port(), 443);
        assert_eq!(c.host_label(), "api.github.com");
        let c = CanonicalUrl::parse("http://127.1:9100/x").unwrap();
        assert_eq!(c.host_label(), "127.0.0.1:9100");
        let c = CanonicalUrl::parse("https://[::1]:8443/").unwrap();
        assert_eq!(c.host_label(), "[::1]:8443");
        let c = CanonicalUrl::parse("https://bücher.example/").unwrap();
        assert_eq!(c.host(), "xn--bcher-kva.example");
    }

    #[test]
    fn encoded_control_characters_are_refused() {
        for u in ["https://h/a%00b", "https://h/a%0d%0aX: y", "https://h/%7f"] {
            assert!(CanonicalUrl::parse(u).is_err(), "{u}");
        }
    }

    #[test]
    fn origins() {
        let a = CanonicalUrl::parse("https://h/x").unwrap();
        assert!(a.same_origin(&CanonicalUrl::parse("https://H.:443/y").unwrap()));
        assert!(!a.same_origin(&CanonicalUrl::parse("https://h:8443/y").unwrap()));
        assert!(!a.same_origin(&CanonicalUrl::parse("http://h/y").unwrap()));
    }
}
