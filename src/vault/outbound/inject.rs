//! Turning a credential into what goes on the request (a header or a query parameter), the
//! way the provider wants it. Used only by the outbound door.

use base64::{Engine, engine::general_purpose::STANDARD};
use http::{HeaderName, HeaderValue};
use zeroize::Zeroizing;

use crate::{providers::Injection, secret::Credential, vault::VaultError};

/// What injection adds to a request. Header values are marked sensitive (never printed).
pub struct Injected {
    pub header: Option<(HeaderName, HeaderValue)>,
    pub query: Option<(String, Zeroizing<String>)>,
}

fn sensitive(value: &str) -> Result<HeaderValue, VaultError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        VaultError::Internal("stored credential contains characters not allowed in a header".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

pub fn inject(injection: &Injection, cred: &Credential) -> Result<Injected, VaultError> {
    let token = cred.access_token.as_str();
    let (header, query) = match injection {
        Injection::Bearer => (
            Some((
                http::header::AUTHORIZATION,
                sensitive(&format!("Bearer {token}"))?,
            )),
            None,
        ),
        Injection::Header { name, template } => {
            let value = Zeroizing::new(template.replacen("{token}", token, 1));
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| VaultError::Internal(format!("invalid injection header `{name}`")))?;
            (Some((name, sensitive(&value)?)), None)
        }
        Injection::Basic { username } => {
            let user = cred
                .username
                .as_deref()
                .or(username.as_deref())
                .unwrap_or("");
            let encoded = Zeroizing::new(STANDARD.encode(format!("{user}:{token}")));
            (
                Some((
                    http::header::AUTHORIZATION,
                    sensitive(&format!("Basic {}", encoded.as_str()))?,
                )),
                None,
            )
        }
        Injection::Query { param } => (
            None,
            Some((param.clone(), Zeroizing::new(token.to_owned()))),
        ),
    };
    Ok(Injected { header, query })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(t: &str) -> Credential {
        Credential {
            access_token: t.into(),
            refresh_token: None,
            username: None,
        }
    }

    #[test]
    fn each_injection_kind() {
        let i = inject(&Injection::Bearer, &cred("tok1234")).unwrap();
        let (n, v) = i.header.unwrap();
        assert_eq!(n, "authorization");
        assert_eq!(v.to_str().unwrap(), "Bearer tok1234");
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("tok1234"));

        let i = inject(
            &Injection::Header {
                name: "X-Api-Key".into(),
                template: "key={token}".into(),
            },
            &cred("tok1234"),
        )
        .unwrap();
        assert_eq!(i.header.unwrap().1.to_str().unwrap(), "key=tok1234");

        let i = inject(
            &Injection::Basic {
                username: Some("api".into()),
            },
            &cred("pw123456"),
        )
        .unwrap();
        assert_eq!(
            i.header.unwrap().1.to_str().unwrap(),
            format!("Basic {}", STANDARD.encode("api:pw123456"))
        );

        let i = inject(
            &Injection::Query {
                param: "api_key".into(),
            },
            &cred("a b+c/d"),
        )
        .unwrap();
        assert_eq!(i.query.as_ref().unwrap().0, "api_key");
        assert_eq!(i.query.as_ref().unwrap().1.as_str(), "a b+c/d");
    }
}
