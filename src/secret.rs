//! Typed wrappers for secret material.
//!
//! Anything that can unlock an account — access tokens, refresh tokens, API keys, client secrets,
//! PKCE verifiers, the master key — lives in one of these types. None of them implements
//! `Display` or `Serialize`, and their `Debug` prints a fixed placeholder, so a secret cannot reach
//! a log line, a tool result or an error message by accident; reading one takes an explicit
//! `expose_secret()` call that is easy to audit with grep.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

pub use secrecy::ExposeSecret as Expose;

/// A secret string (token, API key, client secret). Re-exported so callers need one import.
pub type Secret = SecretString;

/// Build a [`Secret`] from an owned string.
pub fn secret(s: impl Into<String>) -> Secret {
    SecretString::from(s.into())
}

/// The credential a grant holds. Sealed (encrypted) as a whole in the store.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub struct Credential {
    /// Token or API key injected into provider requests.
    pub access_token: String,
    /// OAuth refresh token, if the provider issued one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// For basic-auth managed secrets: the username paired with `access_token` as password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// For AWS SigV4 managed secrets with temporary credentials: the STS session token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
}

impl Credential {
    /// Serialized form, only for sealing. Returned in a zeroizing buffer.
    pub fn to_sealing_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(serde_json::to_vec(self).expect("credential serializes"))
    }

    pub fn from_sealing_bytes(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential([REDACTED])")
    }
}

/// Placeholder written wherever a secret was removed from text (see `vault::scrub`).
pub const REDACTED: &str = "[REDACTED]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secret() {
        let c = Credential {
            access_token: "tok-canary-123".into(),
            refresh_token: Some("rt-canary-456".into()),
            username: None,
            session_token: None,
        };
        let s = format!("{c:?}");
        assert!(!s.contains("canary"), "{s}");
        let k = secret("key-canary-789");
        assert!(!format!("{k:?}").contains("canary"));
    }

    #[test]
    fn sealing_round_trip() {
        let c = Credential {
            access_token: "a".into(),
            refresh_token: None,
            username: Some("u".into()),
            session_token: None,
        };
        let b = c.to_sealing_bytes();
        let back = Credential::from_sealing_bytes(&b).unwrap();
        assert_eq!(back.access_token, "a");
        assert_eq!(back.username.as_deref(), Some("u"));
    }
}
