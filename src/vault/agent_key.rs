//! The API key format: `alter_<type>_<22 random>_<6 checksum>`, the scoped key format of the
//! Alter Vault SDK (so its clients accept our keys as they are). `ak` keys belong to managed
//! agents, `rk` keys to the application (the SDK protocol's app keys).
//!
//! The random part and the checksum use the lower-case base32 alphabet. The checksum is the
//! CRC32 of `"<type>:<random>"`, written as six 5-bit groups, least significant first: a typo
//! gate that refuses a mistyped or truncated key before any database lookup. It is not a
//! secret and proves nothing; the vault still compares the SHA-256 of the whole key.
//!
//! What the vault keeps of a key: its lookup prefix (the first 8 random characters, about 40
//! bits: enough to find the row, far too little to guess the rest from), the SHA-256 of the
//! whole key, and the request-signing key derived from it (sealed), for the HMAC-signed
//! protocol. Never the key.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::{Expose, Secret, secret};

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const RANDOM_LEN: usize = 22;
const CHECKSUM_LEN: usize = 6;
/// How many characters of the random part find the key's row.
pub const PREFIX_LEN: usize = 8;

/// Why a string is not a well-formed agent key. Messages name the problem, never the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error(
        "not a key of this kind (agent keys start with `alter_ak_`, application keys with `alter_rk_`)"
    )]
    NotAnAgentKey,
    #[error(
        "the agent key is malformed (expected alter_ak_ + 22 characters + _ + 6 characters, lower-case letters and digits 2-7); it may be truncated"
    )]
    Shape,
    #[error("the agent key's checksum does not match: it was mistyped or truncated")]
    Checksum,
}

/// The checksum of a scoped key of type `kind` (`ak`, `rk`, …) with random part `random`.
pub fn checksum(kind: &str, random: &str) -> String {
    let crc = crc32fast::hash(format!("{kind}:{random}").as_bytes());
    (0..CHECKSUM_LEN)
        .map(|i| ALPHABET[((crc >> (5 * i)) & 0x1f) as usize] as char)
        .collect()
}

fn in_alphabet(s: &str) -> bool {
    s.bytes().all(|b| ALPHABET.contains(&b))
}

/// A well-formed agent key's parts.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    pub random: &'a str,
}

impl ParsedKey<'_> {
    /// The characters that find the key's row.
    pub fn lookup_prefix(&self) -> &str {
        &self.random[..PREFIX_LEN]
    }
}

/// Whether `s` claims to be an agent key (so the identity layer tries it before anything else).
pub fn looks_like_agent_key(s: &str) -> bool {
    s.starts_with("alter_ak_")
}

/// Check an agent key's shape and checksum.
pub fn parse(key: &str) -> Result<ParsedKey<'_>, KeyFormatError> {
    parse_kind(key, "ak")
}

/// Check the shape and checksum of a key of type `kind` (`ak`, `rk`).
pub fn parse_kind<'a>(key: &'a str, kind: &str) -> Result<ParsedKey<'a>, KeyFormatError> {
    let rest = key
        .strip_prefix("alter_")
        .and_then(|r| r.strip_prefix(kind))
        .and_then(|r| r.strip_prefix('_'))
        .ok_or(KeyFormatError::NotAnAgentKey)?;
    let (random, sum) = rest.split_once('_').ok_or(KeyFormatError::Shape)?;
    if random.len() != RANDOM_LEN
        || sum.len() != CHECKSUM_LEN
        || !in_alphabet(random)
        || !in_alphabet(sum)
    {
        return Err(KeyFormatError::Shape);
    }
    if checksum(kind, random) != sum {
        return Err(KeyFormatError::Checksum);
    }
    Ok(ParsedKey { random })
}

/// A new random agent key.
pub fn generate() -> Secret {
    generate_kind("ak")
}

/// A new random key of type `kind`.
pub fn generate_kind(kind: &str) -> Secret {
    use rand::Rng;
    let mut rng = rand::rng();
    let random: String = (0..RANDOM_LEN)
        .map(|_| ALPHABET[rng.random_range(0..32)] as char)
        .collect();
    let sum = checksum(kind, &random);
    secret(format!("alter_{kind}_{random}_{sum}"))
}

/// What the vault stores to recognize a key.
pub fn hash(key: &Secret) -> String {
    hex::encode(Sha256::digest(key.expose_secret().as_bytes()))
}

/// Whether `key` is the one whose hash is `stored` (constant time).
pub fn matches(key: &Secret, stored: &str) -> bool {
    hash(key).as_bytes().ct_eq(stored.as_bytes()).into()
}

/// The request-signing key of the HMAC-signed protocol: HMAC-SHA256(key, "alter-signing-v1").
/// Knowing it lets one check a signature, not recover the key.
pub fn signing_key(key: &Secret) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes())
        .expect("HMAC takes any key length");
    m.update(b"alter-signing-v1");
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_the_published_test_vector() {
        // From the Alter SDK's key format: type rk, random a..v.
        assert_eq!(checksum("rk", "abcdefghijklmnopqrstuv"), "iwpykn");
    }

    #[test]
    fn generated_keys_parse_and_typos_do_not() {
        let k = generate();
        let text = k.expose_secret().to_owned();
        let p = parse(&text).unwrap();
        assert_eq!(p.lookup_prefix().len(), PREFIX_LEN);
        assert!(matches(&k, &hash(&k)));
        assert!(!matches(&generate(), &hash(&k)));

        // One changed character anywhere in the random part or checksum is caught.
        for i in "alter_ak_".len()..text.len() {
            if text.as_bytes()[i] == b'_' {
                continue;
            }
            let mut b = text.clone().into_bytes();
            b[i] = if b[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(b).unwrap();
            assert!(parse(&typo).is_err(), "{i}");
        }
        assert_eq!(
            parse(&text[..text.len() - 1]).unwrap_err(),
            KeyFormatError::Shape
        );
        assert_eq!(
            parse(&text.to_uppercase()).unwrap_err(),
            KeyFormatError::NotAnAgentKey
        );
        assert_eq!(
            parse(&text.replace("alter_ak_", "alter_rk_")).unwrap_err(),
            KeyFormatError::NotAnAgentKey
        );
        assert_eq!(
            parse("alter_ak_abcdefghijklmnopqrstu1_aaaaaa").unwrap_err(),
            KeyFormatError::Shape,
            "1 is not in the alphabet"
        );
        // The error text never echoes the key.
        assert!(!KeyFormatError::Checksum.to_string().contains(&text));
    }

    #[test]
    fn signing_key_is_derived_not_the_key() {
        let k = generate();
        let s = signing_key(&k);
        assert_eq!(s, signing_key(&k));
        assert_ne!(hex::encode(s), hash(&k));
    }
}
