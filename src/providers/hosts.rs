//! Host patterns a credential may be sent to: `api.github.com`, `127.0.0.1:9100`,
//! `*.my.salesforce.com`. Parsed with the WHATWG URL parser so entries are normalized exactly
//! like request URLs (case, IDN → punycode, IP literal forms, trailing dots).

use std::fmt;

use url::{Host, Url};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Normalized host (punycode, lower case, no trailing dot); for IPv6 without brackets.
    host: String,
    /// `*.suffix`: matches any subdomain of `host`, never `host` itself.
    wildcard: bool,
    /// Explicit port; `None` = the scheme's default port only.
    port: Option<u16>,
    is_ip: bool,
}

impl HostPattern {
    pub fn parse(entry: &str) -> Result<Self, String> {
        let e = entry.trim();
        if e.is_empty() {
            return Err("empty host".into());
        }
        if e.contains("://") || e.contains('/') || e.contains('@') {
            return Err(format!(
                "`{e}` must be a bare host like `api.example.com` or `api.example.com:8443`, without scheme, path or user"
            ));
        }
        let (wildcard, rest) = match e.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, e),
        };
        if rest.contains('*') {
            return Err(format!("`{e}`: only a leading `*.` wildcard is supported"));
        }
        let url = Url::parse(&format!("https://{rest}/"))
            .map_err(|err| format!("`{e}` is not a valid host: {err}"))?;
        let (host, is_ip) = match url.host() {
            Some(Host::Domain(d)) => (d.trim_end_matches('.').to_owned(), false),
            Some(Host::Ipv4(ip)) => (ip.to_string(), true),
            Some(Host::Ipv6(ip)) => (ip.to_string(), true),
            None => return Err(format!("`{e}` has no host")),
        };
        if wildcard && is_ip {
            return Err(format!("`{e}`: a wildcard cannot apply to an IP address"));
        }
        if wildcard && !host.contains('.') {
            return Err(format!(
                "`{e}`: a wildcard needs a registrable suffix such as `*.example.com`"
            ));
        }
        // `Url` drops the port when it equals the scheme default (443); an explicit `:443` is kept
        // as "default port only", which is the same thing.
        Ok(HostPattern {
            host,
            wildcard,
            port: url.port(),
            is_ip,
        })
    }

    /// The pattern matching exactly the origin of an endpoint URL (host and port).
    pub fn from_url(url: &Url) -> Result<Self, String> {
        let host = match url.host() {
            Some(Host::Domain(d)) => d.to_owned(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => format!("[{ip}]"),
            None => return Err("the URL has no host".into()),
        };
        match url.port() {
            Some(p) => Self::parse(&format!("{host}:{p}")),
            None => Self::parse(&host),
        }
    }

    /// Does a normalized request host/port match? `port` is the effective port of the request,
    /// `default_port` the default port of its scheme.
    pub fn matches(&self, host: &Host<&str>, port: u16, default_port: u16) -> bool {
        let port_ok = match self.port {
            Some(p) => port == p,
            None => port == default_port,
        };
        if !port_ok {
            return false;
        }
        match host {
            Host::Domain(d) => {
                if self.is_ip {
                    return false;
                }
                let d = d.trim_end_matches('.');
                if self.wildcard {
                    d.len() > self.host.len() + 1
                        && d.ends_with(&self.host)
                        && d.as_bytes()[d.len() - self.host.len() - 1] == b'.'
                } else {
                    d == self.host
                }
            }
            Host::Ipv4(ip) => self.is_ip && ip.to_string() == self.host,
            Host::Ipv6(ip) => self.is_ip && ip.to_string() == self.host,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}
