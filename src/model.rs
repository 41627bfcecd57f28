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
    }
}

#[allow(clippy::derivable_impls)] // the enum's derives come from `text_enum!`
impl Default for AuditOutcome {
    fn default() -> Self {
        AuditOutcome::Ok
    }
}

/// A grant id (`grt_…`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct GrantId(pub String);

impl GrantId {
    pub fn new() -> Self {
        GrantId(crate::vault::new_id("grt"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for GrantId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads as the text id wherever a `&str` is wanted (messages, SQL binds, lookups).
impl std::ops::Deref for GrantId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for GrantId {
    fn from(s: String) -> Self {
        GrantId(s)
    }
}

impl From<GrantId> for String {
    fn from(g: GrantId) -> Self {
        g.0
    }
}

impl From<&str> for GrantId {
    fn from(s: &str) -> Self {
        GrantId(s.to_owned())
    }
}

impl PartialEq<str> for GrantId {
    fn eq(&self, o: &str) -> bool {
        self.0 == o
    }
}

impl PartialEq<&str> for GrantId {
    fn eq(&self, o: &&str) -> bool {
        self.0 == *o
    }
}

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
    fn scopes_text() {
        let s = Scopes::parse(" repo  read:user ");
        assert_eq!(s.0, vec!["repo", "read:user"]);
        assert_eq!(s.text(), "repo read:user");
    }
}
