//! Seal/open of one record: `v1.<key id>.<wrapped data key>.<ciphertext>` (base64url parts).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit, Payload},
};
use rand::RngCore;
use zeroize::Zeroizing;

use super::{CryptoError, Keyring, MasterKey};

const NONCE: usize = 24;

/// A sealed record as stored: opaque text plus the id of the master key that wraps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub text: String,
}

fn aad(layer: &str, record: &str) -> Vec<u8> {
    format!("vault-mcp/v1/{layer}/{record}").into_bytes()
}

fn encrypt(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut nonce = [0u8; NONCE];
    rand::rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    out
}

fn decrypt(key: &[u8; 32], aad: &[u8], blob: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if blob.len() < NONCE + 16 {
        return None;
    }
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(
            XNonce::from_slice(&blob[..NONCE]),
            Payload {
                msg: &blob[NONCE..],
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

fn wrap(master: &MasterKey, record: &str, dek: &[u8; 32]) -> Vec<u8> {
    encrypt(master.bytes(), &aad("dek", record), dek)
}

/// Seal `plain` for the record `record` with a fresh data key under the keyring's current key.
pub fn seal(keys: &Keyring, record: &str, plain: &[u8]) -> Sealed {
    let master = keys.current();
    let mut dek = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(dek.as_mut());
    let wrapped = wrap(master, record, &dek);
    let ct = encrypt(&dek, &aad("data", record), plain);
    Sealed {
        key_id: master.id().to_owned(),
        text: format!(
            "v1.{}.{}.{}",
            master.id(),
            B64.encode(wrapped),
            B64.encode(ct)
        ),
    }
}

struct Parts<'a> {
    key_id: &'a str,
    wrapped: Vec<u8>,
    ct: Vec<u8>,
}

fn parse<'a>(record: &str, text: &'a str) -> Result<Parts<'a>, CryptoError> {
    let bad = |why: &str| CryptoError::Malformed {
        record: record.to_owned(),
        why: why.to_owned(),
    };
    let mut it = text.split('.');
    match it.next() {
        Some("v1") => {}
        _ => return Err(bad("unknown version prefix")),
    }
    let key_id = it.next().ok_or_else(|| bad("missing key id"))?;
    let wrapped = B64
        .decode(it.next().ok_or_else(|| bad("missing data key"))?)
        .map_err(|_| bad("data key is not base64url"))?;
    let ct = B64
        .decode(it.next().ok_or_else(|| bad("missing ciphertext"))?)
        .map_err(|_| bad("ciphertext is not base64url"))?;
    if it.next().is_some() {
        return Err(bad("trailing fields"));
    }
    Ok(Parts {
        key_id,
        wrapped,
        ct,
    })
}

fn unwrap_dek(
    keys: &Keyring,
    record: &str,
    parts: &Parts<'_>,
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let master = keys
        .find(parts.key_id)
        .ok_or_else(|| CryptoError::UnknownKey {
            record: record.to_owned(),
            record_key: parts.key_id.to_owned(),
            loaded: keys.current().id().to_owned(),
        })?;
    let dek = decrypt(master.bytes(), &aad("dek", record), &parts.wrapped).ok_or_else(|| {
        CryptoError::Tampered {
            record: record.to_owned(),
        }
    })?;
    let arr: [u8; 32] = dek
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::Tampered {
            record: record.to_owned(),
        })?;
    Ok(Zeroizing::new(arr))
}

/// Open a sealed record. Fails with a clear error on a wrong key, tampering or a moved blob.
pub fn open(keys: &Keyring, record: &str, text: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let parts = parse(record, text)?;
    let dek = unwrap_dek(keys, record, &parts)?;
    decrypt(&dek, &aad("data", record), &parts.ct).ok_or_else(|| CryptoError::Tampered {
        record: record.to_owned(),
    })
}

/// Re-wrap a record's data key under the current master key; the ciphertext is untouched.
pub fn rewrap(keys: &Keyring, record: &str, text: &str) -> Result<Sealed, CryptoError> {
    let parts = parse(record, text)?;
    let dek = unwrap_dek(keys, record, &parts)?;
    let master = keys.current();
    let wrapped = wrap(master, record, &dek);
    Ok(Sealed {
        key_id: master.id().to_owned(),
        text: format!(
            "v1.{}.{}.{}",
            master.id(),
            B64.encode(wrapped),
            B64.encode(&parts.ct)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(seed: u8) -> Keyring {
        Keyring::from_keys(vec![MasterKey::from_bytes([seed; 32])])
    }

    #[test]
    fn round_trip() {
        let k = ring(1);
        let s = seal(&k, "grant-1", b"hello");
        assert_eq!(&open(&k, "grant-1", &s.text).unwrap()[..], b"hello");
        assert!(!s.text.contains("hello"));
    }

    #[test]
    fn wrong_key_is_a_clear_error_not_garbage() {
        let s = seal(&ring(1), "g", b"x");
        let err = open(&ring(2), "g", &s.text).unwrap_err();
        assert!(matches!(err, CryptoError::UnknownKey { .. }), "{err}");
        assert!(err.to_string().contains("VAULT_MCP_MASTER_KEY"));
    }

    #[test]
    fn record_id_is_bound() {
        let k = ring(1);
        let s = seal(&k, "grant-a", b"x");
        assert!(matches!(
            open(&k, "grant-b", &s.text),
            Err(CryptoError::Tampered { .. })
        ));
    }

    #[test]
    fn tampering_detected() {
        let k = ring(1);
        let s = seal(&k, "g", b"some secret value");
        let mut parts: Vec<String> = s.text.split('.').map(str::to_owned).collect();
        let mut ct = B64.decode(&parts[3]).unwrap();
        let last = ct.len() - 1;
        ct[last] ^= 1;
        parts[3] = B64.encode(ct);
        assert!(matches!(
            open(&k, "g", &parts.join(".")),
            Err(CryptoError::Tampered { .. })
        ));
        assert!(matches!(
            open(&k, "g", "v2.x.y.z"),
            Err(CryptoError::Malformed { .. })
        ));
        assert!(matches!(
            open(&k, "g", "v1.x"),
            Err(CryptoError::Malformed { .. })
        ));
    }

    #[test]
    fn rewrap_moves_to_new_key_and_keeps_plaintext() {
        let old = MasterKey::from_bytes([1; 32]);
        let new = MasterKey::from_bytes([2; 32]);
        let s = seal(&Keyring::from_keys(vec![old.clone()]), "g", b"payload");
        let both = Keyring::from_keys(vec![new.clone(), old]);
        let r = rewrap(&both, "g", &s.text).unwrap();
        assert_eq!(r.key_id, new.id());
        let only_new = Keyring::from_keys(vec![new]);
        assert_eq!(&open(&only_new, "g", &r.text).unwrap()[..], b"payload");
        // the data ciphertext is reused: only the wrapped key changed
        assert_eq!(
            s.text.rsplit('.').next().unwrap(),
            r.text.rsplit('.').next().unwrap()
        );
    }
}
