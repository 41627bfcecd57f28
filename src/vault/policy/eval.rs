//! Evaluating the policy for one call. Order: configuration error → global method allowlist →
//! grant age → matching rules in order (a `deny` ends it; each matching rule's constraints must
//! hold) → default deny → rate limits → approval → allow.

use std::collections::BTreeMap;

use super::rules::{Effect, LimitKey, PolicySet, Rule};
use crate::model::PrincipalKind;

/// What the policy sees of the caller beyond its id.
#[derive(Debug, Clone, Copy)]
pub struct CallerFacts<'a> {
    pub kind: PrincipalKind,
    /// The user's current IdP groups.
    pub groups: &'a [String],
    /// The calling agent's name (agents only: a free-form label never counts).
    pub agent: Option<&'a str>,
    /// The request context (values already checked to be strings).
    pub context: Option<&'a BTreeMap<String, serde_json::Value>>,
}

impl Default for CallerFacts<'_> {
    fn default() -> Self {
        CallerFacts {
            kind: PrincipalKind::User,
            groups: &[],
            agent: None,
            context: None,
        }
    }
}

/// What the policy sees of a call.
#[derive(Debug, Clone)]
pub struct PolicyInput<'a> {
    pub principal: &'a str,
    pub caller: CallerFacts<'a>,
    pub provider: &'a str,
    pub grant_id: &'a str,
    /// `oauth` or `secret` (managed secrets have no scopes).
    pub grant_kind: &'a str,
    pub grant_scopes: &'a [String],
    /// Seconds since the grant was last authorized.
    pub grant_age_secs: i64,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub reason: Option<&'a str>,
    pub now: jiff::Timestamp,
}

/// One rate-limit budget a call takes a unit from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub rule: String,
    /// Counter key: the rule and the grant or user it counts for.
    pub key: String,
    pub limit: i64,
    /// The fixed window (unix seconds) the unit is counted in.
    pub window_start: i64,
    pub window_end: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; the ids of the rules that matched.
    Allow {
        rules: Vec<String>,
    },
    Deny {
        rule: String,
        message: String,
    },
    /// The grant is older than a policy allows: the user must reconnect.
    GrantExpired {
        rule: String,
    },
    /// A person must approve this call first.
    Approve {
        rule: String,
        message: String,
    },
}

/// `host:port` → (`host`, `Some(port)`); IPv6 stays in brackets.
fn split_port(s: &str) -> (&str, Option<&str>) {
    if let Some(end) = s.strip_prefix('[').and_then(|r| r.find(']')) {
        let (h, rest) = s.split_at(end + 2);
        return (h, rest.strip_prefix(':'));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    }
}

/// `host` is the canonical host label (lower case, punycode, no trailing dot, `:port` when not
/// the default); patterns are normalized the same way when the policy is compiled. A pattern
/// with a port matches only that port; one without matches any port.
fn host_matches(pattern: &str, host: &str) -> bool {
    let (h, port) = split_port(host);
    let (p, p_port) = split_port(pattern);
    if p_port.is_some() && p_port != port {
        return false;
    }
    match p.strip_prefix("*.") {
        Some(suffix) => {
            h.len() > suffix.len() + 1
                && h.ends_with(suffix)
                && h.as_bytes()[h.len() - suffix.len() - 1] == b'.'
        }
        None => h == p,
    }
}

/// Does a method list cover `method`? A HEAD request is a GET without the body, so a rule (or
/// the global allowlist) naming GET covers HEAD too; OPTIONS is covered only when listed.
pub(super) fn method_listed(methods: &[String], method: &str) -> bool {
    methods
        .iter()
        .any(|m| m == method || (method == "HEAD" && m == "GET"))
}

fn rule_matches(r: &Rule, i: &PolicyInput<'_>) -> bool {
    (r.providers.is_empty() || r.providers.iter().any(|p| p == i.provider))
        && (r.grants.is_empty() || r.grants.iter().any(|g| g == i.grant_id))
        && (r.users.is_empty() || r.users.iter().any(|u| u == i.principal))
        && (r.methods.is_empty() || method_listed(&r.methods, i.method))
        && (r.hosts.is_empty() || r.hosts.iter().any(|h| host_matches(h, i.host)))
        && (r.paths.is_empty() || r.paths.iter().any(|(_, g)| g.is_match(i.path)))
        && (r.principal_kinds.is_empty() || r.principal_kinds.contains(&i.caller.kind))
        && (r.groups.is_empty() || r.groups.iter().any(|g| i.caller.groups.contains(g)))
        && (r.agents.is_empty()
            || i.caller
                .agent
                .is_some_and(|a| r.agents.iter().any(|x| x == a)))
        && r.context.iter().all(|(k, glob)| {
            i.caller
                .context
                .and_then(|c| c.get(k))
                .and_then(|v| v.as_str())
                .is_some_and(|v| glob.is_match(v))
        })
}

fn label(r: &Rule, default: String) -> String {
    r.message.clone().unwrap_or(default)
}

impl PolicySet {
    /// The rate-limit budgets a call takes from, if the decision lets it through: one per
    /// matching rule with a `rate_limit`, in the current fixed window. The vault takes them
    /// from the shared counters, so every instance on one database counts together.
    pub fn slots(&self, i: &PolicyInput<'_>) -> Vec<Slot> {
        let Ok(c) = &self.compiled else {
            return Vec::new();
        };
        let now = i.now.as_second();
        c.rules
            .iter()
            .filter(|r| rule_matches(r, i))
            .filter_map(|r| {
                let l = r.rate_limit.as_ref()?;
                let per = l.per_secs as i64;
                let window_start = now - now.rem_euclid(per);
                Some(Slot {
                    rule: r.id.clone(),
                    key: match l.per {
                        LimitKey::Grant => format!("policy:{}:grant:{}", r.id, i.grant_id),
                        LimitKey::User => format!("policy:{}:user:{}", r.id, i.principal),
                    },
                    limit: l.requests as i64,
                    window_start,
                    window_end: window_start + per,
                })
            })
            .collect()
    }

    /// Decide about one call (rate limits aside: see [`PolicySet::slots`]).
    pub fn check(&self, i: &PolicyInput<'_>) -> Decision {
        let c = match &self.compiled {
            Ok(c) => c,
            Err(e) => {
                return Decision::Deny {
                    rule: "policy-config".into(),
                    message: format!(
                        "the vault's policy configuration is invalid, so every call is denied: {e}"
                    ),
                };
            }
        };
        if let Some(ms) = &c.methods
            && !method_listed(ms, i.method)
        {
            return Decision::Deny {
                rule: "methods".into(),
                message: format!(
                    "{} requests are not allowed by policy (allowed: {})",
                    i.method,
                    ms.join(", ")
                ),
            };
        }
        if let Some(days) = c.grant_ttl_days
            && i.grant_age_secs > days as i64 * 86_400
        {
            return Decision::GrantExpired {
                rule: "grant_ttl_days".into(),
            };
        }
        let matching: Vec<&Rule> = c.rules.iter().filter(|r| rule_matches(r, i)).collect();
        for r in &matching {
            if r.effect == Some(Effect::Deny) {
                return Decision::Deny {
                    rule: r.id.clone(),
                    message: label(
                        r,
                        format!("{} {}{} is denied by policy", i.method, i.host, i.path),
                    ),
                };
            }
        }
        for r in &matching {
            if r.require_reason && i.reason.is_none_or(|x| x.trim().len() < 3) {
                return Decision::Deny {
                    rule: r.id.clone(),
                    message: label(
                        r,
                        "this call needs a `reason`: say in a sentence why it is made, then retry"
                            .into(),
                    ),
                };
            }
            if !r.require_scopes.is_empty() {
                if i.grant_kind != "oauth" {
                    return Decision::Deny {
                        rule: r.id.clone(),
                        message: format!(
                            "rule `{}` requires scopes, but this grant is an API key whose scopes the vault cannot know",
                            r.id
                        ),
                    };
                }
                let missing: Vec<&String> = r
                    .require_scopes
                    .iter()
                    .filter(|s| !i.grant_scopes.contains(s))
                    .collect();
                if !missing.is_empty() {
                    return Decision::Deny {
                        rule: r.id.clone(),
                        message: label(
                            r,
                            format!(
                                "policy requires the grant to hold {} for this call",
                                missing
                                    .iter()
                                    .map(|s| s.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ),
                    };
                }
            }
            if let Some(w) = &r.time_window {
                let local = i.now.to_zoned_datetime(w.tz.clone());
                let t = local.time();
                let day_ok = w.days.is_empty() || w.days.contains(&local.weekday());
                let time_ok = if w.from <= w.to {
                    t >= w.from && t < w.to
                } else {
                    t >= w.from || t < w.to
                };
                if !(day_ok && time_ok) {
                    return Decision::Deny {
                        rule: r.id.clone(),
                        message: label(
                            r,
                            format!(
                                "this call is allowed only {} (it is now {})",
                                w.text,
                                local.strftime("%a %H:%M %Z")
                            ),
                        ),
                    };
                }
            }
            if let Some(days) = r.max_grant_age_days
                && i.grant_age_secs > days as i64 * 86_400
            {
                return Decision::GrantExpired { rule: r.id.clone() };
            }
        }
        let granted = matching
            .iter()
            .any(|r| matches!(r.effect, Some(Effect::Allow) | Some(Effect::Approve)));
        if !c.default_allow && !granted {
            return Decision::Deny {
                rule: "default".into(),
                message: format!(
                    "no policy rule allows {} {}{} (the policy denies by default)",
                    i.method, i.host, i.path
                ),
            };
        }
        if let Some(r) = matching.iter().find(|r| r.effect == Some(Effect::Approve)) {
            return Decision::Approve {
                rule: r.id.clone(),
                message: label(
                    r,
                    format!(
                        "{} {}{} needs a person's approval",
                        i.method, i.host, i.path
                    ),
                ),
            };
        }
        Decision::Allow {
            rules: matching.iter().map(|r| r.id.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_text: &str) -> PolicySet {
        let v: toml::Value = toml::from_str(toml_text).unwrap();
        PolicySet::from_config(v.get("policy"))
    }

    fn input<'a>(method: &'a str, host: &'a str, path: &'a str) -> PolicyInput<'a> {
        PolicyInput {
            principal: "alice",
            caller: CallerFacts::default(),
            provider: "github",
            grant_id: "grt_1",
            grant_kind: "oauth",
            grant_scopes: &[],
            grant_age_secs: 10,
            method,
            host,
            path,
            reason: None,
            now: "2026-11-24T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn empty_policy_allows() {
        assert!(matches!(
            policy("").check(&input("GET", "api.github.com", "/user")),
            Decision::Allow { .. }
        ));
    }

    #[test]
    fn deny_by_host_and_path_glob() {
        let p = policy(
            r#"
            [[policy.rules]]
            id = "no-admin"
            hosts = ["api.github.com"]
            paths = ["/orgs/*/members/**", "/admin/**"]
            effect = "deny"
            message = "admin endpoints are off limits"
        "#,
        );
        assert!(
            matches!(p.check(&input("GET", "api.github.com", "/orgs/acme/members/bob")),
            Decision::Deny { ref rule, ref message } if rule == "no-admin" && message == "admin endpoints are off limits")
        );
        assert!(matches!(
            p.check(&input("GET", "api.github.com", "/orgs/acme/repos")),
            Decision::Allow { .. }
        ));
        assert!(
            matches!(
                p.check(&input("GET", "api.github.com", "/admin")),
                Decision::Deny { .. }
            ),
            "** matches zero segments"
        );
        assert!(matches!(
            p.check(&input("GET", "uploads.github.com", "/admin/x")),
            Decision::Allow { .. }
        ));
    }

    #[test]
    fn method_allowlist_and_default_deny() {
        let p = policy("[policy]\nmethods = [\"GET\"]\n");
        assert!(
            matches!(p.check(&input("DELETE", "h", "/")), Decision::Deny { ref rule, .. } if rule == "methods")
        );
        let p = policy(
            r#"
            [policy]
            default = "deny"
            [[policy.rules]]
            id = "reads"
            methods = ["GET"]
            effect = "allow"
        "#,
        );
        assert!(matches!(
            p.check(&input("GET", "h", "/")),
            Decision::Allow { .. }
        ));
        assert!(
            matches!(p.check(&input("POST", "h", "/")), Decision::Deny { ref rule, .. } if rule == "default")
        );
    }

    #[test]
    fn reason_and_scopes_constraints() {
        let p = policy(
            r#"
            [[policy.rules]]
            id = "writes-need-reason"
            methods = ["POST", "PUT", "PATCH", "DELETE"]
            require_reason = true
            [[policy.rules]]
            id = "repo-scope"
            paths = ["/repos/**"]
            require_scopes = ["repo"]
        "#,
        );
        let mut i = input("POST", "api.github.com", "/gists");
        assert!(
            matches!(p.check(&i), Decision::Deny { ref rule, .. } if rule == "writes-need-reason")
        );
        i.reason = Some("create a gist the user asked for");
        assert!(matches!(p.check(&i), Decision::Allow { .. }));
        let i = input("GET", "api.github.com", "/repos/a/b");
        assert!(matches!(p.check(&i), Decision::Deny { ref rule, .. } if rule == "repo-scope"));
        let scopes = vec!["repo".to_owned()];
        let i = PolicyInput {
            grant_scopes: &scopes,
            ..input("GET", "api.github.com", "/repos/a/b")
        };
        assert!(matches!(p.check(&i), Decision::Allow { .. }));
        let i = PolicyInput {
            grant_kind: "secret",
            ..input("GET", "api.github.com", "/repos/a/b")
        };
        assert!(
            matches!(p.check(&i), Decision::Deny { ref message, .. } if message.contains("API key")),
            "missing data fails closed"
        );
    }

    #[test]
    fn time_windows_with_time_zones() {
        let p = policy(
            r#"
            [[policy.rules]]
            id = "office-hours"
            methods = ["POST"]
            time_window = { days = ["mon", "tue", "wed", "thu", "fri"], from = "09:00", to = "18:00", tz = "Europe/Berlin" }
        "#,
        );
        // Tuesday 2026-11-24 10:00 UTC = 11:00 in Berlin: inside
        assert!(matches!(
            p.check(&input("POST", "h", "/")),
            Decision::Allow { .. }
        ));
        let mut i = input("POST", "h", "/");
        i.now = "2026-11-24T17:30:00Z".parse().unwrap(); // 18:30 Berlin
        assert!(matches!(p.check(&i), Decision::Deny { ref rule, .. } if rule == "office-hours"));
        i.now = "2026-11-28T10:00:00Z".parse().unwrap(); // Saturday
        assert!(matches!(p.check(&i), Decision::Deny { .. }));
        i.method = "GET";
        assert!(
            matches!(p.check(&i), Decision::Allow { .. }),
            "the rule only matches POST"
        );
    }

    #[test]
    fn overnight_window() {
        let p = policy(
            r#"
            [[policy.rules]]
            id = "night-batch"
            time_window = { from = "22:00", to = "06:00" }
        "#,
        );
        let mut i = input("GET", "h", "/");
        i.now = "2026-11-24T23:00:00Z".parse().unwrap();
        assert!(matches!(p.check(&i), Decision::Allow { .. }));
        i.now = "2026-11-24T12:00:00Z".parse().unwrap();
        assert!(matches!(p.check(&i), Decision::Deny { .. }));
    }

    #[test]
    fn rate_limit_slots_per_grant_and_per_user() {
        let p = policy(
            r#"
            [[policy.rules]]
            id = "three-a-minute"
            rate_limit = { requests = 3, per_secs = 60, per = "grant" }
            [[policy.rules]]
            id = "per-user"
            hosts = ["h"]
            rate_limit = { requests = 1, per_secs = 3600, per = "user" }
        "#,
        );
        let i = input("GET", "h", "/");
        let slots = p.slots(&i);
        assert_eq!(slots.len(), 2, "{slots:?}");
        assert_eq!(slots[0].key, "policy:three-a-minute:grant:grt_1");
        assert_eq!(slots[0].limit, 3);
        assert_eq!(slots[0].window_end - slots[0].window_start, 60);
        assert!(
            slots[0].window_start <= i.now.as_second() && i.now.as_second() < slots[0].window_end
        );
        assert_eq!(slots[1].key, "policy:per-user:user:alice");
        let other = PolicyInput {
            grant_id: "grt_2",
            ..i.clone()
        };
        assert_eq!(
            p.slots(&other)[0].key,
            "policy:three-a-minute:grant:grt_2",
            "per grant"
        );
        assert_eq!(
            p.slots(&other)[1].key,
            slots[1].key,
            "one budget across the user's grants"
        );
        assert_eq!(
            p.slots(&input("GET", "other", "/")).len(),
            1,
            "only matching rules count"
        );
        assert!(matches!(p.check(&i), Decision::Allow { .. }));
    }

    #[test]
    fn approval_and_grant_age() {
        let p = policy(
            r#"
            [policy]
            grant_ttl_days = 30
            [[policy.rules]]
            id = "payments"
            providers = ["github"]
            methods = ["POST"]
            effect = "approve"
        "#,
        );
        assert!(
            matches!(p.check(&input("POST", "h", "/")), Decision::Approve { ref rule, .. } if rule == "payments")
        );
        assert!(matches!(
            p.check(&input("GET", "h", "/")),
            Decision::Allow { .. }
        ));
        let old = PolicyInput {
            grant_age_secs: 31 * 86_400,
            ..input("GET", "h", "/")
        };
        assert!(matches!(p.check(&old), Decision::GrantExpired { .. }));
    }

    #[test]
    fn deny_wins_over_allow_and_approval() {
        let p = policy(
            r#"
            [[policy.rules]]
            id = "allow-all"
            effect = "allow"
            [[policy.rules]]
            id = "approve-posts"
            methods = ["POST"]
            effect = "approve"
            [[policy.rules]]
            id = "never-delete"
            methods = ["DELETE"]
            effect = "deny"
        "#,
        );
        assert!(
            matches!(p.check(&input("DELETE", "h", "/")), Decision::Deny { ref rule, .. } if rule == "never-delete")
        );
        assert!(matches!(
            p.check(&input("POST", "h", "/")),
            Decision::Approve { .. }
        ));
    }

    #[test]
    fn broken_config_fails_closed_and_names_the_error() {
        for (text, needle) in [
            ("[policy]\ndefault = \"maybe\"", "default"),
            (
                "[[policy.rules]]\nid = \"x\"\neffect = \"allow\"\nbogus = 1",
                "bogus",
            ),
            (
                "[[policy.rules]]\nid = \"x\"\ntime_window = { from = \"9\", to = \"17:00\" }",
                "HH:MM",
            ),
            (
                "[[policy.rules]]\nid = \"x\"\ntime_window = { from = \"09:00\", to = \"17:00\", tz = \"Mars/Olympus\" }",
                "Mars/Olympus",
            ),
            (
                "[[policy.rules]]\nid = \"x\"\nmethods = [\"TRACE\"]\neffect = \"deny\"",
                "TRACE",
            ),
            ("[[policy.rules]]\nid = \"x\"", "does nothing"),
            (
                "[[policy.rules]]\nid = \"x\"\neffect = \"deny\"\n[[policy.rules]]\nid = \"x\"\neffect = \"deny\"",
                "twice",
            ),
            (
                "[[policy.rules]]\nid = \"x\"\npaths = [\"repos\"]\neffect = \"deny\"",
                "start with",
            ),
            (
                "[[policy.rules]]\nid = \"x\"\nrate_limit = { requests = 0, per_secs = 1 }",
                "at least 1",
            ),
        ] {
            let p = policy(text);
            let e = p
                .error()
                .unwrap_or_else(|| panic!("{text} should not compile"));
            assert!(e.contains(needle), "{e} should mention {needle}");
            match p.check(&input("GET", "h", "/")) {
                Decision::Deny { rule, message } => {
                    assert_eq!(rule, "policy-config");
                    assert!(message.contains(needle));
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
