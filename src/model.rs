//! The vocabulary every layer shares: ids and states as types, not strings. Each enum is stored
//! as its snake_case text (the same in SQLite and PostgreSQL, and in the audit chain's canonical
//! JSON), so a typo cannot compile and an unknown value read from the database is an error,
//! not a silent default.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sqlx::{Database, Decode, Encode, Type, encode::IsNull, error::BoxDynError};

/// An enum stored as text: `as_str`, parsing, Display, serde and sqlx for any database whose
/// strings sqlx knows.
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::parse(s).ok_or_else(|| format!(
                    "`{s}` is not a valid {}; use one of: {}",
                    stringify!($name),
                    Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
                ))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "enum": [$($text),+]
                })
            }
        }

        impl<DB: Database> Type<DB> for $name where String: Type<DB> {
            fn type_info() -> DB::TypeInfo {
                <String as Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: Database> Encode<'q, DB> for $name where String: Encode<'q, DB> {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as Database>::ArgumentBuffer<'q>,
            ) -> Result<IsNull, BoxDynError> {
                <String as Encode<'q, DB>>::encode(self.as_str().to_owned(), buf)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $name where String: Decode<'r, DB> {
            fn decode(v: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let s = <String as Decode<'r, DB>>::decode(v)?;
                Ok(s.parse::<$name>()?)
            }
        }
    };
}

text_enum! {
    /// Where a grant's credential came from.
    GrantKind {
        /// Obtained through Connect (an OAuth authorization).
        OAuth => "oauth",
        /// A managed secret (API key) stored by a person.
        Secret => "secret",
    }
}

text_enum! {
    /// Whether a grant can be used.
    GrantStatus {
        Active => "active",
        /// The provider no longer accepts the refresh token: the user must reconnect.
        CredentialRevoked => "credential_revoked",
        /// Revoked in the vault.
        Revoked => "revoked",
    }
}

text_enum! {
    /// Who a grant belongs to, or who is calling.
    PrincipalKind {
        /// A signed-in end user (JWT `sub`, or the local user).
        User => "user",
        /// Every member of an IdP group (from a JWT claim, checked on every call).
        Group => "group",
        /// The application itself: operator-provisioned, no end user.
        App => "app",
        /// A named managed agent with its own key or client-credentials identity.
        Agent => "agent",
    }
}

text_enum! {
    /// Whether an agent may call.
    AgentStatus {
        Active => "active",
        /// Every key and JWT of the agent is refused until it is enabled again.
        Disabled => "disabled",
    }
}

text_enum! {
    /// Whether an application API key (`/sdk/*`) works.
    KeyStatus {
        Active => "active",
        Revoked => "revoked",
    }
}

text_enum! {
    /// Where a call held for approval (SDK proxy mode) stands.
    HeldStatus {
        Held => "held",
        Executing => "executing",
        Executed => "executed",
        Failed => "failed",
    }
}

text_enum! {
    /// How a caller reaches a grant (shown by `list_grants`, recorded in the audit trail).
    Access {
        /// The caller's own grant.
        Own => "own",
        /// A grant of one of the caller's groups.
        Group => "group",
        /// Listed in the agent's access set by the operator.
        AccessSet => "access_set",
        /// Lent to the agent by its owner.
        Delegated => "delegated",
    }
}

text_enum! {
    /// Where a Connect session stands.
    SessionStatus {
        Pending => "pending",
        Completed => "completed",
        Denied => "denied",
        Expired => "expired",
        Error => "error",
    }
}

text_enum! {
    /// Where an approval stands.
    ApprovalStatus {
        Pending => "pending",
        Approved => "approved",
        Denied => "denied",
        /// Consumed by the call it approved.
        Used => "used",
    }
}

text_enum! {
    /// A token our authorization server issued.
    TokenKind {
        Access => "access",
        Refresh => "refresh",
    }
}

text_enum! {
    /// How an audited event ended: `ok`, a stable error code (`docs/errors.md`) for refused
    /// calls, or the step an approval, Connect or token event reached.
    AuditOutcome {
        Ok => "ok",
        ProviderError => "provider_error",
        Created => "created",
        Replaced => "replaced",
        Pending => "pending",
        Approved => "approved",
        Declined => "declined",
        Timeout => "timeout",
        Used => "used",
        Denied => "denied",
        Expired => "expired",
        InvalidState => "invalid_state",
        WrongUser => "wrong_user",
        Error => "error",
        Issued => "issued",
        Revoked => "revoked",
        CodeReplayed => "code_replayed",
        RefreshReplayed => "refresh_replayed",
        InvalidRequest => "invalid_request",
        UnknownProvider => "unknown_provider",
        AuthorizationRequired => "authorization_required",
        ScopeReauthRequired => "scope_reauth_required",
        GrantNotFound => "grant_not_found",
        AmbiguousGrant => "ambiguous_grant",
        GrantExpired => "grant_expired",
        GrantRevoked => "grant_revoked",
        CredentialRevoked => "credential_revoked",
        ProviderNotConfigured => "provider_not_configured",
        BlockedDestination => "blocked_destination",
        PolicyViolation => "policy_violation",
        ApprovalRequired => "approval_required",
        ApprovalDenied => "approval_denied",
        RateLimited => "rate_limited",
        TokenRefreshFailed => "token_refresh_failed",
        ProviderUnauthorized => "provider_unauthorized",
        NetworkError => "network_error",
        AuditUnavailable => "audit_unavailable",
        StorageError => "storage_error",
        EncryptionError => "encryption_error",
        InternalError => "internal_error",
        Unauthenticated => "unauthenticated",
        ScopeNotAllowed => "scope_not_allowed",
        RequiresProxy => "requires_proxy",
    }
}

#[allow(clippy::derivable_impls)] // the enum's derives come from `text_enum!`
impl Default for AuditOutcome {
    fn default() -> Self {
        AuditOutcome::Ok
    }
}

/// A random, prefixed id as a type (`grt_…`, `agt_…`): reads as `&str` wherever text is
/// wanted, but a grant id cannot be passed where an agent id is expected.
macro_rules! prefixed_id {
    ($(#[$m:meta])* $name:ident, $prefix:literal) => {
        $(#[$m])*
        #[derive(
            Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
            schemars::JsonSchema,
        )]
        #[sqlx(transparent)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn new() -> Self {
                $name(crate::vault::new_id($prefix))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether `s` has this id's shape (prefix, `_`, lower-case letters and digits).
            pub fn looks_like(s: &str) -> bool {
                s.strip_prefix(concat!($prefix, "_")).is_some_and(|r| {
                    !r.is_empty()
                        && r.len() <= 64
                        && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// Reads as the text id wherever a `&str` is wanted (messages, SQL binds, lookups).
        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<$name> for String {
            fn from(g: $name) -> Self {
                g.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, o: &str) -> bool {
                self.0 == o
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, o: &&str) -> bool {
                self.0 == *o
            }
        }
    };
}

prefixed_id!(
    /// A grant id (`grt_…`).
    GrantId, "grt"
);

prefixed_id!(
    /// A managed agent's id (`agt_…`); stable across renames, so grants owned by an agent and
    /// delegations name it rather than its name.
    AgentId, "agt"
);

/// A list of OAuth scopes, stored space-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scopes(pub Vec<String>);

impl Scopes {
    pub fn parse(s: &str) -> Self {
        Scopes(s.split_whitespace().map(str::to_owned).collect())
    }

    pub fn text(&self) -> String {
        self.0.join(" ")
    }
}

impl std::ops::Deref for Scopes {
    type Target = Vec<String>;
    fn deref(&self) -> &Vec<String> {
        &self.0
    }
}

impl std::ops::DerefMut for Scopes {
    fn deref_mut(&mut self) -> &mut Vec<String> {
        &mut self.0
    }
}

impl From<Vec<String>> for Scopes {
    fn from(v: Vec<String>) -> Self {
        Scopes(v)
    }
}

impl<DB: Database> Type<DB> for Scopes
where
    String: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <String as Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <String as Type<DB>>::compatible(ty)
    }
}

impl<'q, DB: Database> Encode<'q, DB> for Scopes
where
    String: Encode<'q, DB>,
{
    fn encode_by_ref(
        &self,
        buf: &mut <DB as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, DB>>::encode(self.text(), buf)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for Scopes
where
    String: Decode<'r, DB>,
{
    fn decode(v: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Scopes::parse(&<String as Decode<'r, DB>>::decode(v)?))
    }
}

/// The stable UUID by which the SDK protocol (`/sdk/*`) names a grant or an agent: a UUIDv8
/// derived from our id, so it never changes and needs no second id generator.
pub fn sdk_uuid(id: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("vault-mcp/sdk-id/v1:{id}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Uuid::new_v8(b).hyphenated().to_string()
}

/// A lifetime written the way people write them: `90s`, `15m`, `12h`, `30d`, `2w`, or
/// combinations such as `1d 12h` (a day is 24 hours). At least one second.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let bad = || format!("`{text}` is not a duration; write it like 90s, 15m, 12h, 30d or 2w");
    let span: jiff::Span = text.trim().parse().map_err(|_| bad())?;
    let secs = span
        .total((
            jiff::Unit::Second,
            jiff::SpanRelativeTo::days_are_24_hours(),
        ))
        .map_err(|_| bad())?;
    if !(1.0..=(10.0 * 365.0 * 86_400.0)).contains(&secs) {
        return Err(format!(
            "`{text}` is out of range: between 1 second and 10 years"
        ));
    }
    Ok(secs as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_through_text_and_serde() {
        for k in PrincipalKind::ALL {
            assert_eq!(PrincipalKind::parse(k.as_str()), Some(*k));
            let j = serde_json::to_string(k).unwrap();
            assert_eq!(serde_json::from_str::<PrincipalKind>(&j).unwrap(), *k);
        }
        let e = "robot".parse::<PrincipalKind>().unwrap_err();
        assert!(e.contains("user, group, app, agent"), "{e}");
        assert_eq!(
            GrantStatus::CredentialRevoked.to_string(),
            "credential_revoked"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("12h"), Ok(43_200));
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400));
        assert_eq!(parse_duration("2w"), Ok(14 * 86_400));
        assert_eq!(parse_duration("1d 12h"), Ok(86_400 + 43_200));
        for bad in ["", "soon", "-5s", "0s", "20y", "5"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(bad) || bad.is_empty(), "{bad}: {e}");
        }
    }

    #[test]
    fn scopes_text() {
        let s = Scopes::parse(" repo  read:user ");
        assert_eq!(s.0, vec!["repo", "read:user"]);
        assert_eq!(s.text(), "repo read:user");
    }
}
