//! The provider catalog: OAuth endpoints, API hosts, scopes, identity lookup and credential
//! injection for each provider, as data. Built-in entries come from `catalog.toml`; the config
//! file can override any key or add whole providers.

mod hosts;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use hosts::HostPattern;

use crate::secret::Secret;

const BUILTIN: &str = include_str!("catalog.toml");

/// The categories catalog entries are grouped by (`providers list --category`).
pub const CATEGORIES: &[&str] = &[
    "source_control",
    "issue_tracking",
    "chat",
    "mail_calendar",
    "docs_wiki",
    "crm_support",
    "payments_accounting",
    "cloud_observability",
    "design",
    "storage",
    "social",
    "ai",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Credentials come from an OAuth authorization (Connect).
    #[default]
    Oauth2,
    /// Credentials are API keys stored with `vault-mcp secret add`.
    ApiKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuth {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
    /// Public client: PKCE only.
    None,
}

/// How a credential is put on an outgoing request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Injection {
    /// `Authorization: Bearer <token>`.
    #[default]
    Bearer,
    /// A header; `template` contains `{token}` (default: the token alone).
    Header {
        name: String,
        #[serde(default = "default_template")]
        template: String,
    },
    /// `Authorization: Basic base64(username:token)`; username from the credential or here.
    Basic {
        #[serde(default)]
        username: Option<String>,
    },
    /// A query parameter.
    Query { param: String },
    /// AWS Signature Version 4: the credential's username is the access key id, the token the
    /// secret access key (plus an optional STS session token). The whole request is signed.
    #[serde(rename = "sigv4")]
    AwsSigV4 { region: String, service: String },
}

fn default_template() -> String {
    "{token}".into()
}

impl Injection {
    /// The header carrying the credential, if any (lower case).
    pub fn header_name(&self) -> Option<String> {
        match self {
            Injection::Bearer | Injection::Basic { .. } | Injection::AwsSigV4 { .. } => {
                Some("authorization".into())
            }
            Injection::Header { name, .. } => Some(name.to_ascii_lowercase()),
            Injection::Query { .. } => None,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        match self {
            Injection::Header { name, template } => {
                http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    format!("injection header name `{name}` is not a valid header name")
                })?;
                if !template.contains("{token}") {
                    return Err(format!(
                        "injection template `{template}` must contain {{token}}"
                    ));
                }
                Ok(())
            }
            Injection::Query { param } if param.is_empty() => {
                Err("injection query parameter name is empty".into())
            }
            Injection::AwsSigV4 { region, service } => {
                let word = |v: &str| {
                    !v.is_empty()
                        && v.len() <= 64
                        && v.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                };
                if !word(region) {
                    return Err(format!(
                        "SigV4 region `{region}` is not a region name such as eu-west-1"
                    ));
                }
                if !word(service) {
                    return Err(format!(
                        "SigV4 service `{service}` is not a service name such as s3 or execute-api"
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Injection::Bearer => "Authorization: Bearer".into(),
            Injection::Header { name, template } => format!("{name}: {template}"),
            Injection::Basic { .. } => "Authorization: Basic".into(),
            Injection::Query { param } => format!("query parameter `{param}`"),
            Injection::AwsSigV4 { region, service } => {
                format!("AWS Signature Version 4 ({service}, {region})")
            }
        }
    }
}

/// How to learn the account a new token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    /// `api` (call `url`, default) or `token_response`.
    #[serde(default)]
    pub from: IdentitySource,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default = "default_get")]
    pub method: String,
    #[serde(default)]
    pub body: Option<String>,
    /// JSON pointer to the account identifier (login, email).
    pub account: String,
    /// JSON pointer to a display name.
    #[serde(default)]
    pub display: Option<String>,
}

fn default_get() -> String {
    "GET".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IdentitySource {
    #[default]
    Api,
    TokenResponse,
}

/// Whether a provider issues refresh tokens and what happens to them on use (informational:
/// shown by `providers show`; the vault always stores the newest refresh token it is given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshBehaviour {
    /// Every refresh returns a new refresh token and the old one stops working.
    Rotating,
    /// The refresh token stays valid across refreshes.
    Reusable,
    /// No refresh tokens: access tokens are long-lived (or the user reconnects).
    None,
}

/// One provider. Deserialized from the merged catalog + config table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    #[serde(skip)]
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub kind: ProviderKind,
    #[serde(default)]
    pub authorize_url: Option<String>,
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default)]
    pub revoke_url: Option<String>,
    #[serde(default)]
    pub device_authorization_url: Option<String>,
    /// Expected `iss` on the authorization response (RFC 9207).
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub api_hosts: Vec<String>,
    #[serde(skip)]
    pub host_patterns: Vec<HostPattern>,
    /// Hosts outside `api_hosts` the account lookup (`identity.url`) may send a token to.
    #[serde(default)]
    pub identity_hosts: Vec<String>,
    #[serde(skip)]
    pub identity_host_patterns: Vec<HostPattern>,
    /// Origins of the token, revocation and device endpoints: where the client secret and
    /// refresh tokens may go. Derived from those URLs.
    #[serde(skip)]
    pub token_host_patterns: Vec<HostPattern>,
    #[serde(default)]
    pub default_scopes: Vec<String>,
    #[serde(default = "space")]
    pub scope_separator: String,
    #[serde(default = "yes")]
    pub pkce: bool,
    #[serde(default)]
    pub token_auth: TokenAuth,
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    #[serde(default)]
    pub identity: Option<IdentitySpec>,
    #[serde(default)]
    pub injection: Injection,
    /// Plain-words descriptions of scopes for the Connect page.
    #[serde(default)]
    pub scopes: BTreeMap<String, String>,
    /// Headers every API request to this provider carries unless the caller sets them.
    #[serde(default)]
    pub extra_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub app_registration_url: Option<String>,
    /// The provider documentation the entry's facts come from.
    #[serde(default)]
    pub docs_url: Option<String>,
    /// Grouping for listings (`source_control`, `chat`, `payments_accounting`, …).
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub refresh: Option<RefreshBehaviour>,
    /// Where to click and what to watch out for when registering the app or creating a key.
    #[serde(default)]
    pub setup_hint: Option<String>,
    /// Lifetime of a new grant when Connect asks for none (`"30d"`, `"12h"`).
    #[serde(default)]
    pub default_ttl: Option<String>,
    /// The longest lifetime Connect may give a grant.
    #[serde(default)]
    pub max_ttl: Option<String>,
    #[serde(skip)]
    pub default_ttl_secs: Option<i64>,
    #[serde(skip)]
    pub max_ttl_secs: Option<i64>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing)]
    pub client_secret: Option<Secret>,
    /// Name of an environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Where `client_id` came from, for messages.
    #[serde(skip)]
    pub client_id_source: Option<String>,
}

fn space() -> String {
    " ".into()
}
fn yes() -> bool {
    true
}

impl Provider {
    /// A provider that exists only through a managed secret's own hosts and injection (a
    /// custom API the catalog does not know).
    pub fn custom_api_key(id: &str) -> Self {
        Provider {
            id: id.to_owned(),
            name: id.to_owned(),
            kind: ProviderKind::ApiKey,
            authorize_url: None,
            token_url: None,
            revoke_url: None,
            device_authorization_url: None,
            issuer: None,
            api_hosts: Vec::new(),
            host_patterns: Vec::new(),
            identity_hosts: Vec::new(),
            identity_host_patterns: Vec::new(),
            token_host_patterns: Vec::new(),
            default_scopes: Vec::new(),
            scope_separator: " ".into(),
            pkce: true,
            token_auth: TokenAuth::default(),
            authorize_params: BTreeMap::new(),
            identity: None,
            injection: Injection::Bearer,
            scopes: BTreeMap::new(),
            extra_headers: BTreeMap::new(),
            app_registration_url: None,
            docs_url: None,
            category: None,
            default_ttl: None,
            max_ttl: None,
            default_ttl_secs: None,
            max_ttl_secs: None,
            refresh: None,
            setup_hint: None,
            client_id: None,
            client_secret: None,
            client_secret_env: None,
            client_id_source: None,
        }
    }

    /// OAuth client credentials are present (or not needed for a public PKCE client).
    pub fn is_configured(&self) -> bool {
        match self.kind {
            ProviderKind::ApiKey => true,
            ProviderKind::Oauth2 => {
                self.client_id.is_some()
                    && (self.client_secret.is_some() || self.token_auth == TokenAuth::None)
            }
        }
    }

    /// What to set to configure this provider, in words.
    pub fn configure_hint(&self) -> String {
        let env = env_prefix(&self.id);
        let mut s = format!(
            "set {env}_CLIENT_ID and {env}_CLIENT_SECRET, or client_id / client_secret under [providers.{}] in the config file",
            self.id
        );
        if let Some(u) = &self.app_registration_url {
            s.push_str(&format!(" (register an OAuth app at {u})"));
        }
        s
    }

    pub fn describe_scope(&self, scope: &str) -> String {
        self.scopes
            .get(scope)
            .cloned()
            .unwrap_or_else(|| scope.to_owned())
    }

    pub fn supports_device_flow(&self) -> bool {
        self.device_authorization_url.is_some()
    }

    fn validate(&mut self) -> Result<(), String> {
        let parse_all = |field: &str, hosts: &[String]| {
            hosts
                .iter()
                .map(|h| HostPattern::parse(h).map_err(|e| format!("{field}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        self.host_patterns = parse_all("api_hosts", &self.api_hosts)?;
        self.identity_host_patterns = parse_all("identity_hosts", &self.identity_hosts)?;
        let ttl = |field: &str, v: &Option<String>| {
            v.as_deref()
                .map(|t| crate::model::parse_duration(t).map_err(|e| format!("{field}: {e}")))
                .transpose()
        };
        self.default_ttl_secs = ttl("default_ttl", &self.default_ttl)?;
        self.max_ttl_secs = ttl("max_ttl", &self.max_ttl)?;
        if let (Some(d), Some(m)) = (self.default_ttl_secs, self.max_ttl_secs)
            && d > m
        {
            return Err("default_ttl is longer than max_ttl".into());
        }
        self.injection
            .validate()
            .map_err(|e| format!("injection: {e}"))?;
        for (field, v) in [
            ("authorize_url", &self.authorize_url),
            ("token_url", &self.token_url),
            ("revoke_url", &self.revoke_url),
            ("device_authorization_url", &self.device_authorization_url),
        ] {
            if let Some(u) = v {
                let parsed = url::Url::parse(u)
                    .map_err(|e| format!("{field} `{u}` is not a valid URL: {e}"))?;
                if parsed.scheme() != "https" && !crate::config::is_loopback_url(&parsed) {
                    return Err(format!(
                        "{field} `{u}` must use https (plain http only for this machine)"
                    ));
                }
                if !parsed.username().is_empty() || parsed.password().is_some() {
                    return Err(format!("{field} `{u}` must not carry user information"));
                }
                if field != "authorize_url" {
                    let pat = HostPattern::from_url(&parsed)
                        .map_err(|e| format!("{field} `{u}`: {e}"))?;
                    if !self.token_host_patterns.contains(&pat) {
                        self.token_host_patterns.push(pat);
                    }
                }
            }
        }
        if self.kind == ProviderKind::Oauth2 {
            if self.authorize_url.is_none() && self.device_authorization_url.is_none() {
                return Err(
                    "an oauth2 provider needs authorize_url (or device_authorization_url)".into(),
                );
            }
            if self.token_url.is_none() {
                return Err("an oauth2 provider needs token_url".into());
            }
        }
        if let Some(id) = &self.identity
            && id.from == IdentitySource::Api
        {
            let Some(u) = &id.url else {
                return Err("identity: `url` is required unless from = \"token_response\"".into());
            };
            // The account lookup sends the fresh token: only to a host the entry declares.
            let parsed = crate::vault::canonical::CanonicalUrl::parse(u)
                .map_err(|e| format!("identity.url: {e}"))?;
            if !parsed.url().username().is_empty() || parsed.url().password().is_some() {
                return Err(format!(
                    "identity.url `{u}` must not carry user information"
                ));
            }
            if parsed.url().scheme() != "https" && !crate::config::is_loopback_url(parsed.url()) {
                return Err(format!(
                    "identity.url `{u}` must use https (plain http only for this machine)"
                ));
            }
            let host = parsed.url().host().expect("canonical URLs have a host");
            let port = parsed.port();
            let default = if parsed.url().scheme() == "https" {
                443
            } else {
                80
            };
            if !self
                .host_patterns
                .iter()
                .chain(&self.identity_host_patterns)
                .any(|p| p.matches(&host, port, default))
            {
                return Err(format!(
                    "identity.url `{u}`: its host {} is not among api_hosts or identity_hosts; list it in identity_hosts so the fresh token may be sent there",
                    parsed.host_label()
                ));
            }
            if !id.account.starts_with('/') {
                return Err(format!(
                    "identity.account `{}` must be a JSON pointer such as /login",
                    id.account
                ));
            }
        }
        if self.scope_separator.is_empty() {
            return Err("scope_separator must not be empty".into());
        }
        Ok(())
    }

    /// Scopes joined the way this provider wants them in authorize requests.
    pub fn join_scopes(&self, scopes: &[String]) -> String {
        scopes.join(&self.scope_separator)
    }
}

/// Environment variable prefix for a provider id: `VAULT_MCP_PROVIDER_<ID>`.
pub fn env_prefix(id: &str) -> String {
    format!(
        "VAULT_MCP_PROVIDER_{}",
        id.to_ascii_uppercase().replace(['-', '.'], "_")
    )
}

/// The loaded catalog.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    providers: BTreeMap<String, Provider>,
}

/// A catalog entry that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("provider `{id}`: {message}")]
pub struct CatalogError {
    pub id: String,
    pub message: String,
}

impl Catalog {
    /// Built-in entries merged with `[providers.*]` tables from the config, plus client
    /// credentials from the environment (`env` is injected so tests need not touch the process).
    pub fn load(
        overrides: &toml::Table,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, CatalogError> {
        let mut merged: toml::Table = toml::from_str(BUILTIN).expect("built-in catalog parses");
        for (id, value) in overrides {
            let toml::Value::Table(over) = value else {
                return Err(CatalogError {
                    id: id.clone(),
                    message: "must be a table ([providers.<id>])".into(),
                });
            };
            match merged.get_mut(id) {
                Some(toml::Value::Table(base)) => {
                    for (k, v) in over {
                        base.insert(k.clone(), v.clone());
                    }
                }
                _ => {
                    merged.insert(id.clone(), toml::Value::Table(over.clone()));
                }
            }
        }
        let mut providers = BTreeMap::new();
        for (id, value) in merged {
            let err = |message: String| CatalogError {
                id: id.clone(),
                message,
            };
            if !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(err(
                    "ids may contain only lower-case letters, digits, `-` and `_`".into(),
                ));
            }
            let mut p: Provider = value
                .try_into()
                .map_err(|e: toml::de::Error| err(e.message().to_owned()))?;
            p.id = id.clone();
            let prefix = env_prefix(&id);
            if let Some(cid) = env(&format!("{prefix}_CLIENT_ID")) {
                p.client_id = Some(cid);
                p.client_id_source = Some(format!("{prefix}_CLIENT_ID"));
            } else if p.client_id.is_some() {
                p.client_id_source = Some(format!("config [providers.{id}] client_id"));
            }
            if let Some(var) = &p.client_secret_env {
                match env(var) {
                    Some(s) => p.client_secret = Some(crate::secret::secret(s)),
                    None => {
                        return Err(err(format!(
                            "client_secret_env names `{var}`, which is not set in the environment"
                        )));
                    }
                }
            }
            if let Some(s) = env(&format!("{prefix}_CLIENT_SECRET")) {
                p.client_secret = Some(crate::secret::secret(s));
            }
            p.validate().map_err(err)?;
            providers.insert(id, p);
        }
        Ok(Catalog { providers })
    }

    pub fn get(&self, id: &str) -> Option<&Provider> {
        self.providers.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Provider> {
        self.providers.values()
    }

    pub fn ids(&self) -> Vec<&str> {
        self.providers.keys().map(String::as_str).collect()
    }

    /// Closest known id for a typo, for "did you mean" hints.
    pub fn suggest(&self, id: &str) -> Option<&str> {
        let id = id.to_ascii_lowercase();
        self.providers
            .keys()
            .map(|k| (strsim::damerau_levenshtein(k, &id), k))
            .filter(|(d, k)| *d <= 2 && *d < k.len())
            .min()
            .map(|(_, k)| k.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn builtin_catalog_loads_with_required_providers() {
        let c = Catalog::load(&toml::Table::new(), &no_env).unwrap();
        for id in [
            "github",
            "google",
            "microsoft",
            "slack",
            "notion",
            "linear",
            "atlassian",
            "salesforce",
            "hubspot",
            "dropbox",
            "discord",
            "stripe",
        ] {
            let p = c.get(id).unwrap_or_else(|| panic!("{id} missing"));
            assert!(!p.host_patterns.is_empty(), "{id} has no api hosts");
        }
        assert!(!c.get("github").unwrap().is_configured());
        assert!(c.get("stripe").unwrap().is_configured());
    }

    /// Every built-in entry, checked structurally: what a wrong or half-copied entry would get
    /// wrong. (Loading already refuses identity hosts outside the declared ones and bad URLs.)
    #[test]
    fn builtin_catalog_entries_are_complete_and_well_formed() {
        let raw: toml::Table =
            toml::from_str(BUILTIN).expect("catalog.toml parses (no duplicate ids)");
        let c = Catalog::load(&toml::Table::new(), &no_env).expect("every entry validates");
        assert!(c.ids().len() >= 60, "only {} providers", c.ids().len());
        assert_eq!(raw.len(), c.ids().len());
        let https = |id: &str, field: &str, u: &str| {
            let parsed = url::Url::parse(u).unwrap_or_else(|e| panic!("{id}.{field} `{u}`: {e}"));
            assert_eq!(parsed.scheme(), "https", "{id}.{field} `{u}` is not https");
        };
        for p in c.all() {
            let id = p.id.as_str();
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "id `{id}`: lower-case letters, digits and _ only"
            );
            for (field, v) in [
                ("authorize_url", &p.authorize_url),
                ("token_url", &p.token_url),
                ("revoke_url", &p.revoke_url),
                ("device_authorization_url", &p.device_authorization_url),
                ("docs_url", &p.docs_url),
                ("app_registration_url", &p.app_registration_url),
            ] {
                if let Some(u) = v {
                    https(id, field, u);
                }
            }
            if let Some(u) = p.identity.as_ref().and_then(|i| i.url.as_ref()) {
                https(id, "identity.url", u);
            }
            assert!(
                p.docs_url.is_some(),
                "{id}: docs_url (where the facts come from) is missing"
            );
            assert!(
                p.app_registration_url.is_some(),
                "{id}: app_registration_url (where to register the app or create the key) is missing"
            );
            let cat = p.category.as_deref().unwrap_or_default();
            assert!(
                CATEGORIES.contains(&cat),
                "{id}: category `{cat}` is not one of {CATEGORIES:?}"
            );
            assert!(!p.api_hosts.is_empty(), "{id}: no api_hosts");
            let sep = p.scope_separator.trim();
            for s in p.default_scopes.iter().chain(p.scopes.keys()) {
                assert!(
                    !s.is_empty()
                        && s.bytes().all(|b| b.is_ascii_graphic())
                        && (sep.is_empty() || !s.contains(sep)),
                    "{id}: scope `{s}` is not a single scope token"
                );
            }
            match p.kind {
                ProviderKind::Oauth2 => {
                    assert!(
                        p.authorize_url.is_some() && p.token_url.is_some(),
                        "{id}: OAuth endpoints"
                    );
                    assert!(
                        p.identity.is_some(),
                        "{id}: no identity lookup: every account would be `default`"
                    );
                }
                ProviderKind::ApiKey => assert!(
                    p.authorize_url.is_none() && p.token_url.is_none(),
                    "{id}: an api_key entry has no OAuth endpoints"
                ),
            }
        }
    }

    #[test]
    fn config_overrides_and_env_credentials() {
        let over: toml::Table = toml::from_str(
            r#"
            [github]
            default_scopes = ["read:user"]
            [local]
            name = "Local API"
            authorize_url = "http://127.0.0.1:9000/auth"
            token_url = "http://127.0.0.1:9000/token"
            api_hosts = ["127.0.0.1:9100"]
            client_id = "abc"
            client_secret = "shh"
            "#,
        )
        .unwrap();
        let env =
            |k: &str| (k == "VAULT_MCP_PROVIDER_GITHUB_CLIENT_ID").then(|| "gh-id".to_owned());
        let c = Catalog::load(&over, &env).unwrap();
        let gh = c.get("github").unwrap();
        assert_eq!(gh.default_scopes, vec!["read:user"]);
        assert_eq!(gh.client_id.as_deref(), Some("gh-id"));
        assert!(!gh.is_configured(), "no secret yet");
        assert!(c.get("local").unwrap().is_configured());
    }

    #[test]
    fn bad_entries_name_the_provider_and_field() {
        let over: toml::Table = toml::from_str(
            "[x]\nname = \"X\"\nkind = \"api_key\"\napi_hosts = [\"https://x.com/\"]",
        )
        .unwrap();
        let e = Catalog::load(&over, &no_env).unwrap_err().to_string();
        assert!(e.contains("provider `x`") && e.contains("api_hosts"), "{e}");
        let over: toml::Table =
            toml::from_str("[y]\nname = \"Y\"\nkind = \"api_key\"\nbogus = 1").unwrap();
        let e = Catalog::load(&over, &no_env).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }
}
