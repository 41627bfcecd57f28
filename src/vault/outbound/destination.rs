//! Where a credential may go: only the provider's declared API hosts, over https (http only to
//! loopback, for development), never with userinfo in the URL. Checked before any credential is
//! decrypted, and again for every redirect hop.

use std::net::IpAddr;

use url::Host;

use crate::{
    providers::HostPattern,
    vault::{VaultError, canonical::CanonicalUrl},
};

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
        Host::Domain(d) => d.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
    }
}

/// Refuse the URL unless the credential may be sent there.
pub fn check(
    canonical: &CanonicalUrl,
    allowed: &[HostPattern],
    provider: &str,
    allow_http_loopback: bool,
) -> Result<(), VaultError> {
    let url = canonical.url();
    let label = canonical.host_label();
    let blocked = |message: String| VaultError::BlockedDestination {
        host: label.clone(),
        message,
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(blocked(
            "the URL carries user information (user@host); remove it, credentials are injected by the vault".into(),
        ));
    }
    let host = url
        .host()
        .ok_or_else(|| blocked("the URL has no host".into()))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http_loopback && is_loopback(&host) => {}
        "http" => {
            return Err(blocked(format!(
                "{label} must be called over https (plain http is allowed only to this machine, for development)"
            )));
        }
        other => {
            return Err(blocked(format!(
                "scheme `{other}` is not allowed; use https"
            )));
        }
    }
    let port = url.port_or_known_default().unwrap_or(0);
    let default_port = if url.scheme() == "https" { 443 } else { 80 };
    if allowed.iter().any(|p| p.matches(&host, port, default_port)) {
        return Ok(());
    }
    let list = allowed
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    Err(blocked(format!(
        "{label} is not an API host of {provider}; its credential may only be sent to: {}",
        if list.is_empty() {
            "(none declared)".into()
        } else {
            list
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(p: &[&str]) -> Vec<HostPattern> {
        p.iter().map(|s| HostPattern::parse(s).unwrap()).collect()
    }

    /// Unparseable URLs count as refused: they never reach the network either.
    fn ok(url: &str, p: &[&str]) -> bool {
        CanonicalUrl::parse(url).is_ok_and(|u| check(&u, &pats(p), "x", true).is_ok())
    }

    #[test]
    fn exact_hosts_case_and_trailing_dot() {
        let gh = ["api.github.com"];
        assert!(ok("https://api.github.com/user", &gh));
        assert!(ok("https://API.GitHub.COM/user", &gh));
        assert!(ok("https://api.github.com./user", &gh));
        assert!(ok("https://api.github.com:443/user", &gh));
        assert!(!ok("https://api.github.com.evil.com/user", &gh));
        assert!(!ok("https://evilapi.github.com/user", &gh));
        assert!(!ok("https://github.com/user", &gh));
    }

    #[test]
    fn userinfo_tricks_are_refused() {
        let gh = ["api.github.com"];
        assert!(!ok("https://api.github.com@evil.com/", &gh));
        assert!(!ok("https://user:pw@api.github.com/", &gh));
        assert!(!ok("https://evil.com@api.github.com/", &gh));
        assert!(!ok("https://evil.com%40api.github.com/", &gh));
        assert!(!ok("https://evil.com\\@api.github.com/", &gh));
    }

    #[test]
    fn ports_and_schemes() {
        let gh = ["api.github.com"];
        assert!(!ok("https://api.github.com:8443/", &gh));
        assert!(!ok("http://api.github.com/", &gh));
        assert!(!ok("ftp://api.github.com/", &gh));
        let local = ["127.0.0.1:9100"];
        assert!(ok("http://127.0.0.1:9100/user", &local));
        assert!(!ok("http://127.0.0.1:9101/user", &local));
        assert!(!ok("http://127.0.0.1/user", &local));
        let url = CanonicalUrl::parse("http://127.0.0.1:9100/").unwrap();
        assert!(
            check(&url, &pats(&local), "x", false).is_err(),
            "http loopback can be switched off"
        );
    }

    #[test]
    fn ip_literals_never_match_names_and_are_normalized() {
        assert!(!ok("https://140.82.112.6/", &["api.github.com"]));
        let local = ["127.0.0.1:9100"];
        // alternative spellings of 127.0.0.1 normalize to the same address
        assert!(ok("http://2130706433:9100/", &local));
        assert!(ok("http://0x7f.0.0.1:9100/", &local));
        assert!(ok("http://127.1:9100/", &local));
        assert!(!ok("http://[::1]:9100/", &local));
        assert!(ok("http://[::1]:9100/", &["[::1]:9100"]));
        assert!(!ok("https://localhost/", &["127.0.0.1"]));
    }

    #[test]
    fn idn_hosts_compare_in_punycode() {
        let p = ["bücher.example"];
        assert!(ok("https://xn--bcher-kva.example/", &p));
        assert!(ok("https://BÜCHER.example/", &p));
        assert!(!ok("https://bucher.example/", &p));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let sf = ["*.my.salesforce.com"];
        assert!(ok("https://acme.my.salesforce.com/services", &sf));
        assert!(ok("https://a.b.my.salesforce.com/", &sf));
        assert!(!ok("https://my.salesforce.com/", &sf));
        assert!(!ok("https://evilmy.salesforce.com/", &sf));
        assert!(!ok("https://acme.my.salesforce.com.evil.com/", &sf));
        assert!(HostPattern::parse("*.com").is_err());
        assert!(HostPattern::parse("*.1.2.3.4").is_err());
        assert!(HostPattern::parse("a.*.com").is_err());
    }

    #[test]
    fn message_lists_allowed_hosts() {
        let e = check(
            &CanonicalUrl::parse("https://evil.com/").unwrap(),
            &pats(&["api.github.com"]),
            "github",
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("evil.com") && e.contains("api.github.com") && e.contains("github"),
            "{e}"
        );
    }
}
