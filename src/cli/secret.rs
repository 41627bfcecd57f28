//! `vault-mcp secret`: store API keys. The key itself is read from stdin or a hidden prompt,
//! never from the command line (where it would land in shell history and `ps`).

use std::io::{IsTerminal, Read};

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};

use crate::{
    config::Config,
    providers::Injection,
    secret,
    vault::{Caller, NewSecret},
};

#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Store (or replace) an API key for a provider. The key is read from stdin or a prompt.
    Add(AddArgs),
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum InjectKind {
    /// Authorization: Bearer <key>
    Bearer,
    /// A custom header (--header-name, optional --template with {token})
    Header,
    /// Authorization: Basic base64(username:key)
    Basic,
    /// A query parameter (--query-param)
    Query,
    /// AWS Signature Version 4 (--username is the access key id; --region, --service). Stdin:
    /// the secret access key, then optionally a session token on a second line.
    Sigv4,
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// Provider id: a catalog provider (stripe, openai, github for a personal access token, ...)
    /// or a name of your own (then --host is required).
    pub provider: String,
    /// Label for this key, to tell several keys of one provider apart.
    #[arg(long, default_value = "default")]
    pub account: String,
    /// How the key is sent (default: the provider's usual way, else bearer).
    #[arg(long, value_enum)]
    pub inject: Option<InjectKind>,
    /// Header name for --inject header, e.g. X-API-Key.
    #[arg(long, value_name = "NAME")]
    pub header_name: Option<String>,
    /// Header value template for --inject header; {token} is replaced by the key.
    #[arg(long, value_name = "TEMPLATE")]
    pub template: Option<String>,
    /// Query parameter name for --inject query.
    #[arg(long, value_name = "NAME")]
    pub query_param: Option<String>,
    /// Username for --inject basic (the key is the password).
    #[arg(long)]
    pub username: Option<String>,
    /// API host the key may be sent to (repeatable); required for non-catalog providers.
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// AWS region for --inject sigv4, e.g. eu-west-1.
    #[arg(long)]
    pub region: Option<String>,
    /// AWS service for --inject sigv4, e.g. s3, execute-api, sqs.
    #[arg(long)]
    pub service: Option<String>,
    /// Whose key this is: user:ID, group:NAME (every current member of the IdP group), app
    /// (backend work; reached by agents through their access set) or agent:NAME.
    /// Default: the local user.
    #[arg(long = "for", value_name = "PRINCIPAL")]
    pub owner: Option<crate::vault::SecretOwner>,
    /// The grant stops working after this long: 90s, 12h, 30d, 2w …
    #[arg(long, value_name = "DURATION", value_parser = crate::model::parse_duration)]
    pub ttl: Option<i64>,
}

fn injection(a: &AddArgs) -> anyhow::Result<Option<Injection>> {
    Ok(match a.inject {
        None => {
            if a.header_name.is_some() || a.template.is_some() || a.query_param.is_some() {
                bail!(
                    "--header-name/--template/--query-param need --inject header or --inject query"
                );
            }
            None
        }
        Some(InjectKind::Bearer) => Some(Injection::Bearer),
        Some(InjectKind::Basic) => Some(Injection::Basic {
            username: a.username.clone(),
        }),
        Some(InjectKind::Header) => Some(Injection::Header {
            name: a.header_name.clone().ok_or_else(|| {
                anyhow::anyhow!("--inject header needs --header-name, e.g. --header-name X-API-Key")
            })?,
            template: a.template.clone().unwrap_or_else(|| "{token}".into()),
        }),
        Some(InjectKind::Query) => Some(Injection::Query {
            param: a.query_param.clone().ok_or_else(|| {
                anyhow::anyhow!("--inject query needs --query-param, e.g. --query-param api_key")
            })?,
        }),
        Some(InjectKind::Sigv4) => {
            if a.username.is_none() {
                bail!("--inject sigv4 needs --username with the access key id (AKIA…)");
            }
            Some(Injection::AwsSigV4 {
                region: a.region.clone().ok_or_else(|| {
                    anyhow::anyhow!("--inject sigv4 needs --region, e.g. --region eu-west-1")
                })?,
                service: a.service.clone().ok_or_else(|| {
                    anyhow::anyhow!("--inject sigv4 needs --service, e.g. --service s3")
                })?,
            })
        }
    })
}

/// For SigV4, stdin may carry the session token of temporary credentials on a second line.
fn split_session_token(
    a: &AddArgs,
    s: secret::Secret,
) -> anyhow::Result<(secret::Secret, Option<secret::Secret>)> {
    use secret::Expose;
    if !matches!(a.inject, Some(InjectKind::Sigv4)) {
        return Ok((s, None));
    }
    let text = s.expose_secret();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let key = lines.next().unwrap_or_default().to_owned();
    let token = lines.next().map(|t| secret::secret(t.to_owned()));
    if lines.next().is_some() {
        bail!(
            "stdin holds more than two lines; give the secret access key, then optionally the session token"
        );
    }
    Ok((secret::secret(key), token))
}

fn read_secret(provider: &str) -> anyhow::Result<secret::Secret> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let s = rpassword::prompt_password(format!("API key for {provider} (input hidden): "))?;
        return Ok(secret::secret(s));
    }
    let mut buf = zeroize::Zeroizing::new(String::new());
    stdin.lock().read_to_string(&mut buf)?;
    let trimmed = buf.trim_end_matches(['\r', '\n']).to_owned();
    Ok(secret::secret(trimmed))
}

pub async fn run(
    config: &Config,
    cmd: SecretCmd,
    as_principal: Option<&str>,
) -> anyhow::Result<()> {
    match cmd {
        SecretCmd::Add(a) => {
            let inj = injection(&a)?;
            let opened = super::open_vault(config).await?;
            if (a.region.is_some() || a.service.is_some())
                && !matches!(a.inject, Some(InjectKind::Sigv4))
            {
                bail!("--region and --service go with --inject sigv4");
            }
            let (secret, session_token) = split_session_token(&a, read_secret(&a.provider)?)?;
            let caller = Caller::new(
                super::open::principal(config, as_principal),
                "cli:secret add",
            );
            let stored = opened
                .vault
                .add_secret(
                    &caller,
                    NewSecret {
                        provider: a.provider.clone(),
                        account: a.account.clone(),
                        secret,
                        username: a.username.clone(),
                        session_token,
                        injection: inj,
                        hosts: (!a.hosts.is_empty()).then(|| a.hosts.clone()),
                        owner: a.owner.clone().unwrap_or_default(),
                        ttl_secs: a.ttl,
                    },
                )
                .await?;
            println!(
                "{} {} key `{}` as grant {}",
                if stored.replaced {
                    "Replaced"
                } else {
                    "Stored"
                },
                stored.grant.provider,
                stored.grant.account,
                stored.grant.id
            );
            if let Some(t) = &stored.grant.expires_at {
                println!("It expires at {t}.");
            }
            match stored.grant.principal_type {
                crate::model::PrincipalKind::Group => println!(
                    "Every current member of group {} can use it (provider \"{}\").",
                    stored.grant.principal.as_deref().unwrap_or_default(),
                    stored.grant.provider
                ),
                crate::model::PrincipalKind::App => println!(
                    "Give an agent access with: vault-mcp agents update NAME --grant {}",
                    stored.grant.id
                ),
                _ => println!(
                    "Agents can now call vault_request with provider \"{}\".",
                    stored.grant.provider
                ),
            }
            Ok(())
        }
    }
}
