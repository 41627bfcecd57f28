//! Turning a credential into what goes on the request (a header or a query parameter, or an
//! AWS SigV4 signature over the finished request), the way the provider wants it. Used only by
//! the outbound door.

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

/// Sign a finished request with AWS Signature Version 4 (the `aws-sigv4` crate): adds
/// `Authorization`, `X-Amz-Date`, the payload hash and the session token. The secret key stays
/// here; the signature is valid for this request only.
pub fn sign_sigv4(
    req: &mut reqwest::Request,
    cred: &Credential,
    region: &str,
    service: &str,
) -> Result<(), VaultError> {
    use aws_sigv4::{
        http_request::{
            PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
            SigningSettings, UriPathNormalizationMode, sign,
        },
        sign::v4,
    };
    let key_id = cred.username.as_deref().ok_or_else(|| {
        VaultError::Internal(
            "this SigV4 secret has no access key id; store it again with --username AKID".into(),
        )
    })?;
    let identity = aws_credential_types::Credentials::new(
        key_id,
        cred.access_token.as_str(),
        cred.session_token.clone(),
        None,
        "vault-mcp",
    )
    .into();
    let mut settings = SigningSettings::default();
    if service == "s3" {
        // S3 wants the payload hash as a header and the path exactly as sent.
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(std::time::SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| VaultError::Internal(format!("SigV4 parameters: {e}")))?
        .into();
    let body: &[u8] = req.body().and_then(|b| b.as_bytes()).unwrap_or_default();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let url = req.url().to_string();
    let method = req.method().as_str().to_owned();
    let signable = SignableRequest::new(
        &method,
        url.as_str(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| VaultError::Internal(format!("SigV4 cannot sign this request: {e}")))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| VaultError::Internal(format!("SigV4 signing failed: {e}")))?
        .into_parts();
    for (name, value) in instructions.headers() {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| VaultError::Internal(format!("SigV4 header `{name}`")))?;
        req.headers_mut().insert(name, sensitive(value)?);
    }
    Ok(())
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
        // Signed over the finished request instead (`sign_sigv4`).
        Injection::AwsSigV4 { .. } => (None, None),
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
            session_token: None,
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
