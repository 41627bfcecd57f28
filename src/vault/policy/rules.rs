//! Parsing and compiling `[policy]`.

use std::time::Duration;

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    Deny,
    Approve,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    #[default]
    Grant,
    User,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    #[serde(default)]
    days: Vec<String>,
    from: String,
    to: String,
    #[serde(default = "utc")]
    tz: String,
}

fn utc() -> String {
    "UTC".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    requests: u32,
    per_secs: u64,
    #[serde(default)]
    per: LimitKey,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    providers: Vec<String>,
    #[serde(default)]
    grants: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    principal_kinds: Vec<crate::model::PrincipalKind>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    agents: Vec<String>,
    #[serde(default)]
    context: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    effect: Option<Effect>,
    #[serde(default)]
    require_reason: bool,
    #[serde(default)]
    require_scopes: Vec<String>,
    #[serde(default)]
    time_window: Option<RawWindow>,
    #[serde(default)]
    rate_limit: Option<RawLimit>,
    #[serde(default)]
    max_grant_age_days: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    grant_ttl_days: Option<u32>,
    #[serde(default)]
    approval_timeout_secs: Option<u64>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

pub(super) struct TimeWindow {
    pub days: Vec<jiff::civil::Weekday>,
    pub from: jiff::civil::Time,
    pub to: jiff::civil::Time,
    pub tz: jiff::tz::TimeZone,
    pub text: String,
}

/// A fixed-window budget, counted in the database (`CounterStore`) so every instance on one
/// database shares it.
pub(super) struct RateLimit {
    pub requests: u32,
    pub per_secs: u64,
    pub per: LimitKey,
}

pub(super) struct Rule {
    pub id: String,
    pub description: Option<String>,
    pub message: Option<String>,
    pub providers: Vec<String>,
    pub grants: Vec<String>,
    pub users: Vec<String>,
    pub principal_kinds: Vec<crate::model::PrincipalKind>,
    pub groups: Vec<String>,
    pub agents: Vec<String>,
    /// Context key → glob on its value; every key must be present and match.
    pub context: Vec<(String, GlobMatcher)>,
    pub methods: Vec<String>,
    pub hosts: Vec<String>,
    pub paths: Vec<(String, GlobMatcher)>,
    pub effect: Option<Effect>,
    pub require_reason: bool,
    pub require_scopes: Vec<String>,
    pub time_window: Option<TimeWindow>,
    pub rate_limit: Option<RateLimit>,
    pub max_grant_age_days: Option<u32>,
}

pub(super) struct Compiled {
    pub approval_timeout_secs: u64,
    pub default_allow: bool,
    pub methods: Option<Vec<String>>,
    pub grant_ttl_days: Option<u32>,
    pub rules: Vec<Rule>,
}

/// The compiled policy, or the configuration error that makes every call fail closed.
pub struct PolicySet {
    pub(super) compiled: Result<Compiled, String>,
}

/// A rule as shown by `vault-mcp policy show`.
#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    pub id: String,
    pub effect: String,
    pub matches: String,
    pub constraints: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn weekday(s: &str) -> Option<jiff::civil::Weekday> {
    use jiff::civil::Weekday::*;
    Some(match s.to_ascii_lowercase().get(..3)? {
        "mon" => Monday,
        "tue" => Tuesday,
        "wed" => Wednesday,
        "thu" => Thursday,
        "fri" => Friday,
        "sat" => Saturday,
        "sun" => Sunday,
        _ => return None,
    })
}

/// A rule's host in the canonical form requests are matched in: lower case, punycode, no
/// trailing dot, IP literals normalized; `*.` and `:port` kept.
fn normalize_host(h: &str) -> Result<String, String> {
    let bad = || format!("`{h}` must be a host like api.example.com, *.example.com or host:8443");
    if h.is_empty() || h.contains('/') || h.contains('@') {
        return Err(bad());
    }
    let (wild, rest) = match h.strip_prefix("*.") {
        Some(r) => ("*.", r),
        None => ("", h),
    };
    let url = url::Url::parse(&format!("https://{rest}/")).map_err(|_| bad())?;
    let canonical = crate::vault::canonical::CanonicalUrl::new(url).map_err(|_| bad())?;
    Ok(format!("{wild}{}", canonical.host_label()))
}

fn compile_rule(r: RawRule, index: usize) -> Result<Rule, String> {
    let name = if r.id.trim().is_empty() {
        format!("rules[{index}]")
    } else {
        format!("rule `{}`", r.id)
    };
    let err = |field: &str, msg: String| format!("[[policy.rules]] {name}: {field}: {msg}");
    if r.id.trim().is_empty() {
        return Err(err("id", "every rule needs a unique id".into()));
    }
    let methods: Vec<String> = r.methods.iter().map(|m| m.to_ascii_uppercase()).collect();
    for m in &methods {
        if !crate::vault::request::METHODS.contains(&m.as_str()) {
            return Err(err(
                "methods",
                format!("`{m}` is not an HTTP method vault_request allows"),
            ));
        }
    }
    let mut paths = Vec::new();
    for p in &r.paths {
        if !p.starts_with('/') {
            return Err(err("paths", format!("`{p}` must start with `/`")));
        }
        // `*` stays within one path segment, `**` spans any number; `/x/**` also matches `/x`.
        let mut variants = vec![p.as_str()];
        if let Some(prefix) = p.strip_suffix("/**").filter(|x| !x.is_empty()) {
            variants.push(prefix);
        }
        for v in variants {
            // Case-insensitive: many APIs (GitHub owners and repos, IIS-hosted ones) treat
            // `/Repos/ACME` like `/repos/acme`, so a rule must too.
            let matcher = GlobBuilder::new(v)
                .literal_separator(true)
                .case_insensitive(true)
                .build()
                .map_err(|e| err("paths", format!("`{p}`: {e}")))?
                .compile_matcher();
            paths.push((p.clone(), matcher));
        }
    }
    let mut context = Vec::new();
    for (k, v) in &r.context {
        if !crate::vault::request::valid_context_key(k) {
            return Err(err(
                "context",
                format!("`{k}` is not a context key (letters, digits, `_ . : -`, at most 64)"),
            ));
        }
        let glob = GlobBuilder::new(v)
            .build()
            .map_err(|e| err("context", format!("`{k} = {v}`: {e}")))?
            .compile_matcher();
        context.push((k.clone(), glob));
    }
    for (field, list) in [("groups", &r.groups), ("agents", &r.agents)] {
        if list.iter().any(|x| x.trim().is_empty()) {
            return Err(err(field, "names must not be empty".into()));
        }
    }
    let mut hosts = Vec::new();
    for h in &r.hosts {
        hosts.push(normalize_host(h).map_err(|m| err("hosts", m))?);
    }
    let time_window = match r.time_window {
        None => None,
        Some(w) => {
            let tz = jiff::tz::TimeZone::get(&w.tz).map_err(|e| {
                err(
                    "time_window.tz",
                    format!("`{}` is not a known time zone ({e})", w.tz),
                )
            })?;
            let parse = |t: &str, f: &str| {
                jiff::civil::Time::strptime("%H:%M", t)
                    .map_err(|_| err(f, format!("`{t}` is not HH:MM")))
            };
            let mut days = Vec::new();
            for d in &w.days {
                days.push(weekday(d).ok_or_else(|| {
                    err(
                        "time_window.days",
                        format!("`{d}` is not a weekday (mon..sun)"),
                    )
                })?);
            }
            Some(TimeWindow {
                text: format!(
                    "{} {}-{} {}",
                    if w.days.is_empty() {
                        "every day".into()
                    } else {
                        w.days.join(",")
                    },
                    w.from,
                    w.to,
                    w.tz
                ),
                from: parse(&w.from, "time_window.from")?,
                to: parse(&w.to, "time_window.to")?,
                days,
                tz,
            })
        }
    };
    let rate_limit = match r.rate_limit {
        None => None,
        Some(l) => {
            if l.requests == 0 {
                return Err(err("rate_limit.requests", "must be at least 1".into()));
            }
            if l.per_secs == 0 {
                return Err(err("rate_limit.per_secs", "must be at least 1".into()));
            }
            Some(RateLimit {
                requests: l.requests,
                per_secs: l.per_secs,
                per: l.per,
            })
        }
    };
    if r.effect.is_none()
        && !r.require_reason
        && r.require_scopes.is_empty()
        && time_window.is_none()
        && rate_limit.is_none()
        && r.max_grant_age_days.is_none()
    {
        return Err(err(
            "effect",
            "the rule does nothing: give an effect (allow, deny, approve) or a constraint".into(),
        ));
    }
    Ok(Rule {
        id: r.id,
        description: r.description,
        message: r.message,
        providers: r.providers,
        grants: r.grants,
        users: r.users,
        principal_kinds: r.principal_kinds,
        groups: r.groups,
        agents: r.agents,
        context,
        methods,
        hosts,
        paths,
        effect: r.effect,
        require_reason: r.require_reason,
        require_scopes: r.require_scopes,
        time_window,
        rate_limit,
        max_grant_age_days: r.max_grant_age_days,
    })
}

fn compile(value: Option<&toml::Value>) -> Result<Compiled, String> {
    let raw: RawPolicy = match value {
        None => RawPolicy::default(),
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| format!("[policy]: {}", e.message()))?,
    };
    let default_allow = match raw.default.as_deref() {
        None | Some("allow") => true,
        Some("deny") => false,
        Some(other) => {
            return Err(format!(
                "[policy] default: `{other}` must be \"allow\" or \"deny\""
            ));
        }
    };
    let methods = match raw.methods {
        None => None,
        Some(ms) => {
            let up: Vec<String> = ms.iter().map(|m| m.to_ascii_uppercase()).collect();
            for m in &up {
                if !crate::vault::request::METHODS.contains(&m.as_str()) {
                    return Err(format!(
                        "[policy] methods: `{m}` is not an HTTP method vault_request allows"
                    ));
                }
            }
            Some(up)
        }
    };
    let mut rules = Vec::new();
    for (i, r) in raw.rules.into_iter().enumerate() {
        let rule = compile_rule(r, i)?;
        if rules.iter().any(|x: &Rule| x.id == rule.id) {
            return Err(format!(
                "[[policy.rules]] rule `{}`: id: used twice; ids must be unique",
                rule.id
            ));
        }
        rules.push(rule);
    }
    let approval_timeout_secs = raw.approval_timeout_secs.unwrap_or(120);
    if !(5..=3600).contains(&approval_timeout_secs) {
        return Err("[policy] approval_timeout_secs must be between 5 and 3600".into());
    }
    Ok(Compiled {
        approval_timeout_secs,
        default_allow,
        methods,
        grant_ttl_days: raw.grant_ttl_days,
        rules,
    })
}

impl PolicySet {
    pub fn from_config(value: Option<&toml::Value>) -> Self {
        let compiled = compile(value);
        if let Err(e) = &compiled {
            tracing::error!(error = %e, "policy configuration is invalid: every call will be denied until it is fixed");
        }
        PolicySet { compiled }
    }

    /// The configuration error, if the policy could not be compiled.
    pub fn error(&self) -> Option<&str> {
        self.compiled.as_ref().err().map(String::as_str)
    }

    /// How long to wait for a person's answer to an approval request.
    pub fn approval_timeout(&self) -> Duration {
        Duration::from_secs(
            self.compiled
                .as_ref()
                .map(|c| c.approval_timeout_secs)
                .unwrap_or(120),
        )
    }

    pub fn default_allow(&self) -> bool {
        matches!(&self.compiled, Ok(c) if c.default_allow)
    }

    pub fn rules(&self) -> Vec<RuleView> {
        let Ok(c) = &self.compiled else {
            return Vec::new();
        };
        c.rules
            .iter()
            .map(|r| {
                let mut m = Vec::new();
                let list =
                    |k: &str, v: &[String]| (!v.is_empty()).then(|| format!("{k}={}", v.join(",")));
                m.extend(list("providers", &r.providers));
                let kinds: Vec<String> = r.principal_kinds.iter().map(|k| k.to_string()).collect();
                m.extend(list("principal_kinds", &kinds));
                m.extend(list("groups", &r.groups));
                m.extend(list("agents", &r.agents));
                let ctx: Vec<String> = r
                    .context
                    .iter()
                    .map(|(k, g)| format!("{k}:{}", g.glob().glob()))
                    .collect();
                m.extend(list("context", &ctx));
                m.extend(list("grants", &r.grants));
                m.extend(list("users", &r.users));
                m.extend(list("methods", &r.methods));
                m.extend(list("hosts", &r.hosts));
                let mut paths: Vec<String> = r.paths.iter().map(|(p, _)| p.clone()).collect();
                paths.dedup();
                m.extend(list("paths", &paths));
                let mut c = Vec::new();
                if r.require_reason {
                    c.push("reason required".to_owned());
                }
                if !r.require_scopes.is_empty() {
                    c.push(format!("scopes {}", r.require_scopes.join(" ")));
                }
                if let Some(w) = &r.time_window {
                    c.push(format!("only {}", w.text));
                }
                if let Some(l) = &r.rate_limit {
                    c.push(
                        format!("{} per {}s per {:?}", l.requests, l.per_secs, l.per)
                            .to_lowercase(),
                    );
                }
                if let Some(d) = r.max_grant_age_days {
                    c.push(format!("grants younger than {d} days"));
                }
                RuleView {
                    id: r.id.clone(),
                    effect: r
                        .effect
                        .map(|e| format!("{e:?}").to_lowercase())
                        .unwrap_or_else(|| "constrain".into()),
                    matches: if m.is_empty() {
                        "every call".into()
                    } else {
                        m.join(" ")
                    },
                    constraints: if c.is_empty() {
                        "-".into()
                    } else {
                        c.join("; ")
                    },
                    description: r.description.clone(),
                }
            })
            .collect()
    }
}
