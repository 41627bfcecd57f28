//! Configuration: a TOML file in the platform config directory, overridden by `VAULT_MCP_*`
//! environment variables, overridden by command-line flags. Every key is documented in
//! `docs/configuration.md`; unknown keys are errors, so a typo never silently does nothing.

mod http;

pub use http::{HttpConfig, IdentityMode, IdpConfig};

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

/// Errors a person can act on: each names the file, key or variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    log: Option<String>,
    #[serde(default)]
    vault: VaultSection,
    #[serde(default)]
    request: RequestSection,
    #[serde(default)]
    connect: ConnectSection,
    #[serde(default)]
    identity: IdentitySection,
    #[serde(default)]
    audit: AuditSection,
    #[serde(default)]
    approvals: ApprovalsSection,
    #[serde(default)]
    providers: toml::Table,
    #[serde(default)]
    policy: Option<toml::Value>,
    #[serde(default)]
    tools: ToolsSection,
    #[serde(default)]
    http: Option<toml::Value>,
    #[serde(default)]
    sdk: SdkSection,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SdkSection {
    enabled: Option<bool>,
    max_clock_skew_secs: Option<i64>,
    user_token_audience: Option<String>,
}

/// `[sdk]`: the Alter SDK protocol on `/sdk/*` (hosted mode).
#[derive(Debug, Clone)]
pub struct SdkConfig {
    pub enabled: bool,
    /// How far a signed request's timestamp may be from the server clock.
    pub max_clock_skew_secs: i64,
    /// Expected `aud` of user tokens (default: the MCP resource URL, like MCP bearer tokens).
    pub user_token_audience: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct VaultSection {
    database: Option<String>,
    master_key_file: Option<PathBuf>,
    database_pool_size: Option<u32>,
    database_statement_timeout_secs: Option<u64>,
    database_acquire_timeout_secs: Option<u64>,
    grant_cache_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RequestSection {
    timeout_secs: Option<u64>,
    max_response_bytes: Option<usize>,
    allow_http_loopback: Option<bool>,
    max_redirects: Option<usize>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConnectSection {
    listen: Option<String>,
    public_url: Option<String>,
    session_ttl_secs: Option<u64>,
    refresh_skew_secs: Option<u64>,
    refresh_lease_secs: Option<u64>,
    wait_in_client_secs: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct IdentitySection {
    local_user: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ToolsSection {
    dir: Option<PathBuf>,
    #[serde(default)]
    disabled: Vec<String>,
}

/// `[tools]`: tool packs.
#[derive(Debug, Clone)]
pub struct ToolsConfig {
    /// Directory with user packs (default: `tools/` next to the config file).
    pub dir: PathBuf,
    /// Pack ids or tool names to leave out.
    pub disabled: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApprovalsSection {
    open_browser: Option<bool>,
    in_client: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AuditSection {
    retention_days: Option<u32>,
    fsync: Option<bool>,
    checkpoint_file: Option<PathBuf>,
}

/// Outbound request settings for `vault_request`.
#[derive(Debug, Clone)]
pub struct RequestConfig {
    pub timeout_secs: u64,
    pub max_response_bytes: usize,
    pub allow_http_loopback: bool,
    pub max_redirects: usize,
}

/// Connect (OAuth) settings.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// True when `public_url` was configured rather than derived from `listen`.
    pub public_url_explicit: bool,
    /// Loopback listener for Connect pages and the OAuth callback in stdio mode.
    pub listen: SocketAddr,
    /// Base URL users' browsers reach the Connect pages at (defaults to `http://<listen>`).
    pub public_url: url::Url,
    pub session_ttl_secs: u64,
    /// Refresh access tokens this many seconds before they expire.
    pub refresh_skew_secs: u64,
    /// How long one process may hold a grant's refresh lease; if it dies holding it, another
    /// takes over after this long.
    pub refresh_lease_secs: u64,
    /// How long a tool call waits for the user to finish Connect when their client showed the
    /// link itself (URL-mode elicitation, or a 2026-07-28 input request).
    pub wait_in_client_secs: u64,
}

impl ConnectConfig {
    /// The OAuth redirect URI to register with providers.
    pub fn redirect_uri(&self) -> String {
        self.public_url
            .join("oauth/callback")
            .expect("joinable")
            .to_string()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// `sqlite://…` path or `postgres://…` URL.
    pub database: String,
    pub master_key_file: PathBuf,
    /// Log filter; empty means the command's default (info for `serve`, warn otherwise).
    pub log: String,
    pub request: RequestConfig,
    pub connect: ConnectConfig,
    /// Principal id of the local user (stdio and CLI).
    pub local_user: String,
    pub audit_retention_days: Option<u32>,
    /// Audit commits wait for the disk (true, default) or only for the OS (false).
    pub audit_fsync: bool,
    /// PostgreSQL pool settings (`[vault] database_*`).
    pub database_pool: crate::store::PgOptions,
    /// Where the signed head of the audit chain is kept, outside the database.
    pub audit_checkpoint: PathBuf,
    /// Local mode: open the approval page in the user's browser when the client cannot ask.
    pub approvals_open_browser: bool,
    /// Ask users to approve in their MCP client (elicitation / input requests) when it can.
    pub approvals_in_client: bool,
    /// How long a grant list read from the database serves further calls (`[vault] grant_cache_ms`).
    pub grant_cache_ttl: std::time::Duration,
    /// Raw `[providers.*]` tables, merged into the catalog by `providers::Catalog::load`.
    pub providers: toml::Table,
    /// Raw `[policy]` section (interpreted by the policy engine).
    pub policy: Option<toml::Value>,
    pub tools: ToolsConfig,
    /// `[http]`: hosted mode.
    pub http: HttpConfig,
    /// `[sdk]`: the Alter SDK protocol.
    pub sdk: SdkConfig,
    /// Directory for user tool packs and the default config file.
    pub config_dir: PathBuf,
}

/// What the command line contributed.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub database: Option<String>,
    pub log: Option<String>,
}

pub const DEFAULT_CONNECT_LISTEN: &str = "127.0.0.1:47821";

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("dev", "vault-mcp", "vault-mcp")
}

/// The default config file location (`<platform config dir>/config.toml`).
pub fn default_config_dir() -> PathBuf {
    project_dirs()
        .map(|d| d.config_dir().to_owned())
        .unwrap_or_else(|| PathBuf::from(".vault-mcp"))
}

fn default_data_dir() -> PathBuf {
    project_dirs()
        .map(|d| d.data_dir().to_owned())
        .unwrap_or_else(|| PathBuf::from(".vault-mcp"))
}

fn parse_env<T: std::str::FromStr>(
    env: &dyn Fn(&str) -> Option<String>,
    var: &str,
    what: &str,
) -> Result<Option<T>, ConfigError> {
    match env(var) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| ConfigError::Env {
            var: var.into(),
            message: format!("`{v}` is not {what}"),
        }),
    }
}

impl Config {
    /// Load from the process environment.
    pub fn load(o: &Overrides) -> Result<Self, ConfigError> {
        Self::load_with(o, &env_var)
    }

    pub fn load_with(
        o: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let config_dir = default_config_dir();
        let (file_path, must_exist) = match (&o.config_file, env("VAULT_MCP_CONFIG")) {
            (Some(p), _) => (p.clone(), true),
            (None, Some(p)) => (PathBuf::from(p), true),
            (None, None) => (config_dir.join("config.toml"), false),
        };
        let (file, fc) = read_file(&file_path, must_exist)?;
        let file_err = |message: String| ConfigError::File {
            path: file_path.display().to_string(),
            message,
        };

        let data_dir = o
            .data_dir
            .clone()
            .or_else(|| env("VAULT_MCP_DATA_DIR").map(PathBuf::from))
            .or(fc.data_dir.clone())
            .unwrap_or_else(default_data_dir);
        let database = o
            .database
            .clone()
            .or_else(|| env("VAULT_MCP_DATABASE_URL"))
            .or(fc.vault.database.clone())
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("vault.db").display()));
        if !(database.starts_with("sqlite:")
            || database.starts_with("postgres://")
            || database.starts_with("postgresql://"))
        {
            return Err(ConfigError::Other(format!(
                "database `{}` must start with sqlite:// or postgres:// (set [vault] database, VAULT_MCP_DATABASE_URL or --database)",
                redact_url(&database)
            )));
        }
        let master_key_file = env("VAULT_MCP_MASTER_KEY_FILE")
            .map(PathBuf::from)
            .or(fc.vault.master_key_file.clone())
            .unwrap_or_else(|| data_dir.join("master.key"));
        let log = o
            .log
            .clone()
            .or_else(|| env("VAULT_MCP_LOG"))
            .or(fc.log.clone())
            .unwrap_or_default();

        let request = RequestConfig {
            timeout_secs: parse_env(env, "VAULT_MCP_REQUEST_TIMEOUT_SECS", "a number of seconds")?
                .or(fc.request.timeout_secs)
                .unwrap_or(30),
            max_response_bytes: parse_env(
                env,
                "VAULT_MCP_MAX_RESPONSE_BYTES",
                "a number of bytes",
            )?
            .or(fc.request.max_response_bytes)
            .unwrap_or(256 * 1024),
            allow_http_loopback: fc.request.allow_http_loopback.unwrap_or(true),
            max_redirects: fc.request.max_redirects.unwrap_or(5),
        };
        if request.timeout_secs == 0 || request.timeout_secs > 600 {
            return Err(file_err(
                "request.timeout_secs must be between 1 and 600".into(),
            ));
        }
        if request.max_response_bytes < 1024 {
            return Err(file_err(
                "request.max_response_bytes must be at least 1024".into(),
            ));
        }

        let listen_text = env("VAULT_MCP_CONNECT_LISTEN")
            .or(fc.connect.listen.clone())
            .unwrap_or_else(|| DEFAULT_CONNECT_LISTEN.into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            ConfigError::Other(format!(
                "connect listen address `{listen_text}` is not host:port (set [connect] listen or VAULT_MCP_CONNECT_LISTEN, e.g. {DEFAULT_CONNECT_LISTEN})"
            ))
        })?;
        let public_explicit = env("VAULT_MCP_PUBLIC_URL").or(fc.connect.public_url.clone());
        let public_url_explicit = public_explicit.is_some();
        let public_text = public_explicit.unwrap_or_else(|| format!("http://{listen}/"));
        let mut public_url = url::Url::parse(&public_text).map_err(|e| {
            ConfigError::Other(format!(
                "public URL `{public_text}` is invalid ({e}); set [connect] public_url or VAULT_MCP_PUBLIC_URL to e.g. https://vault.example.com/"
            ))
        })?;
        if !public_url.path().ends_with('/') {
            let p = format!("{}/", public_url.path());
            public_url.set_path(&p);
        }
        if public_url.scheme() != "https" && !is_loopback_url(&public_url) {
            return Err(ConfigError::Other(format!(
                "public URL {public_url} must use https unless it points at this machine (127.0.0.1, ::1, localhost)"
            )));
        }
        let connect = ConnectConfig {
            public_url_explicit,
            listen,
            public_url,
            session_ttl_secs: fc.connect.session_ttl_secs.unwrap_or(600),
            refresh_skew_secs: fc.connect.refresh_skew_secs.unwrap_or(60),
            refresh_lease_secs: fc.connect.refresh_lease_secs.unwrap_or(45).clamp(2, 600),
            wait_in_client_secs: fc.connect.wait_in_client_secs.unwrap_or(300),
        };
        if !(10..=3600).contains(&connect.wait_in_client_secs) {
            return Err(file_err(
                "connect.wait_in_client_secs must be between 10 and 3600".into(),
            ));
        }
        if !(60..=86_400).contains(&connect.session_ttl_secs) {
            return Err(file_err(
                "connect.session_ttl_secs must be between 60 and 86400".into(),
            ));
        }

        let tools = ToolsConfig {
            dir: fc.tools.dir.clone().unwrap_or_else(|| match &file {
                Some(f) => f
                    .parent()
                    .map(|d| d.join("tools"))
                    .unwrap_or_else(|| PathBuf::from("tools")),
                None => config_dir.join("tools"),
            }),
            disabled: fc.tools.disabled.clone(),
        };
        let local_user = env("VAULT_MCP_LOCAL_USER")
            .or(fc.identity.local_user.clone())
            .unwrap_or_else(|| "local".into());

        let defaults = crate::store::PgOptions::default();
        let database_pool = crate::store::PgOptions {
            max_connections: parse_env(env, "VAULT_MCP_DATABASE_POOL_SIZE", "a number")?
                .or(fc.vault.database_pool_size)
                .unwrap_or(defaults.max_connections),
            statement_timeout: std::time::Duration::from_secs(
                parse_env(
                    env,
                    "VAULT_MCP_DATABASE_STATEMENT_TIMEOUT_SECS",
                    "a number of seconds",
                )?
                .or(fc.vault.database_statement_timeout_secs)
                .unwrap_or(defaults.statement_timeout.as_secs()),
            ),
            acquire_timeout: std::time::Duration::from_secs(
                fc.vault
                    .database_acquire_timeout_secs
                    .unwrap_or(defaults.acquire_timeout.as_secs()),
            ),
        };
        if !(1..=1000).contains(&database_pool.max_connections) {
            return Err(file_err(
                "vault.database_pool_size must be between 1 and 1000".into(),
            ));
        }
        if database_pool.statement_timeout.is_zero() || database_pool.acquire_timeout.is_zero() {
            return Err(file_err(
                "vault.database_statement_timeout_secs and database_acquire_timeout_secs must be at least 1".into(),
            ));
        }
        let audit_checkpoint = env("VAULT_MCP_AUDIT_CHECKPOINT")
            .map(PathBuf::from)
            .or(fc.audit.checkpoint_file.clone())
            .unwrap_or_else(|| data_dir.join("audit-head.json"));
        Ok(Config {
            file,
            data_dir,
            database,
            master_key_file,
            log,
            request,
            connect,
            local_user,
            audit_retention_days: fc.audit.retention_days,
            audit_fsync: fc.audit.fsync.unwrap_or(true),
            audit_checkpoint,
            database_pool,
            approvals_open_browser: fc.approvals.open_browser.unwrap_or(true),
            approvals_in_client: fc.approvals.in_client.unwrap_or(true),
            sdk: SdkConfig {
                enabled: fc.sdk.enabled.unwrap_or(true),
                max_clock_skew_secs: match fc.sdk.max_clock_skew_secs {
                    None => 300,
                    Some(s) if (10..=3600).contains(&s) => s,
                    Some(s) => {
                        return Err(ConfigError::Other(format!(
                            "[sdk] max_clock_skew_secs: {s} must be between 10 and 3600"
                        )));
                    }
                },
                user_token_audience: fc.sdk.user_token_audience.clone(),
            },
            grant_cache_ttl: std::time::Duration::from_millis(
                fc.vault.grant_cache_ms.unwrap_or(1000).min(60_000),
            ),
            providers: fc.providers,
            policy: fc.policy,
            tools,
            http: HttpConfig::from_section(
                fc.http.as_ref(),
                env,
                &file_path.display().to_string(),
            )?,
            config_dir,
        })
    }

    /// SQLite file path, when the database is SQLite.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.database
            .strip_prefix("sqlite://")
            .or_else(|| self.database.strip_prefix("sqlite:"))
            .map(PathBuf::from)
    }
}

fn read_file(path: &Path, must_exist: bool) -> Result<(Option<PathBuf>, FileConfig), ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let fc: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            Ok((Some(path.to_owned()), fc))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
            Ok((None, FileConfig::default()))
        }
        Err(e) => Err(ConfigError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        }),
    }
}

/// An environment variable, treating empty values and unsubstituted `${...}` placeholders as
/// unset (MCP bundle hosts leave `${user_config.x}` in place when the user did not set `x`).
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| {
        let t = v.trim();
        let placeholder = t.starts_with("${") && t.ends_with('}');
        !(t.is_empty() || placeholder)
    })
}

pub fn is_loopback_url(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A database URL with any password removed, for messages.
pub fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("****"));
            parsed.to_string()
        }
        _ => u.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "data_dir = \"/from/file\"\n[request]\ntimeout_secs = 7\n",
        )
        .unwrap();
        let o = Overrides {
            config_file: Some(f.clone()),
            ..Default::default()
        };
        let c = Config::load_with(&o, &|_| None).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.request.timeout_secs, 7);
        assert!(c.database.ends_with("/from/file/vault.db"));
        let env = |k: &str| (k == "VAULT_MCP_DATA_DIR").then(|| "/from/env".to_owned());
        assert_eq!(
            Config::load_with(&o, &env).unwrap().data_dir,
            PathBuf::from("/from/env")
        );
        let o2 = Overrides {
            data_dir: Some("/from/flag".into()),
            ..o
        };
        assert_eq!(
            Config::load_with(&o2, &env).unwrap().data_dir,
            PathBuf::from("/from/flag")
        );
    }

    #[test]
    fn typos_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[request]\ntimeout = 7\n").unwrap();
        let o = Overrides {
            config_file: Some(f),
            ..Default::default()
        };
        let e = Config::load_with(&o, &|_| None).unwrap_err().to_string();
        assert!(e.contains("timeout") && e.contains("c.toml"), "{e}");
        let env = |k: &str| (k == "VAULT_MCP_REQUEST_TIMEOUT_SECS").then(|| "soon".to_owned());
        let e = Config::load_with(&Overrides::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("VAULT_MCP_REQUEST_TIMEOUT_SECS"), "{e}");
        let e = Config::load_with(
            &Overrides {
                config_file: Some("/nonexistent/x.toml".into()),
                ..Default::default()
            },
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/x.toml"), "{e}");
    }

    #[test]
    fn public_url_must_be_https_off_loopback() {
        let env =
            |k: &str| (k == "VAULT_MCP_PUBLIC_URL").then(|| "http://vault.example.com".to_owned());
        assert!(Config::load_with(&Overrides::default(), &env).is_err());
        let env = |k: &str| {
            (k == "VAULT_MCP_PUBLIC_URL").then(|| "https://vault.example.com/base".to_owned())
        };
        let c = Config::load_with(&Overrides::default(), &env).unwrap();
        assert_eq!(
            c.connect.redirect_uri(),
            "https://vault.example.com/base/oauth/callback"
        );
    }
}
