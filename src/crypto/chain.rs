//! The audit chain's key. Each audit record's hash is an HMAC over its sequence number, its
//! predecessor's hash and its contents, keyed with a random 256-bit key that lives in the
//! database only sealed under the master key. Someone who can write the database but does not
//! hold the master key can therefore neither edit a record nor recompute the chain after
//! deleting one. The same key signs the head checkpoint kept outside the database and the
//! anchor that retention pruning leaves, so cutting the tail or the head is detected too.
//!
//! Vaults created before the chain was keyed keep their older records verifiable: records
//! numbered below `keyed_from` were linked with plain SHA-256, and `keyed_from` is sealed
//! together with the key, so it cannot be moved to pass off forged records as old ones.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The chain's key and the first record it applies to.
#[derive(Clone)]
pub struct ChainKey {
    key: Zeroizing<[u8; 32]>,
    keyed_from: i64,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainKey(keyed from record {})", self.keyed_from)
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    k: String,
    from: i64,
}

impl ChainKey {
    /// A fresh random key for records numbered `keyed_from` and later.
    pub fn generate(keyed_from: i64) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rng(), key.as_mut());
        ChainKey { key, keyed_from }
    }

    /// Bytes to seal under the master key.
    pub fn to_sealing_bytes(&self) -> Zeroizing<Vec<u8>> {
        let s = Stored {
            k: STANDARD.encode(self.key.as_ref()),
            from: self.keyed_from,
        };
        Zeroizing::new(serde_json::to_vec(&s).expect("serializes"))
    }

    pub fn from_sealing_bytes(b: &[u8]) -> Option<Self> {
        let s: Stored = serde_json::from_slice(b).ok()?;
        let raw = Zeroizing::new(STANDARD.decode(&s.k).ok()?);
        let key: [u8; 32] = raw.as_slice().try_into().ok()?;
        Some(ChainKey {
            key: Zeroizing::new(key),
            keyed_from: s.from,
        })
    }

    pub fn keyed_from(&self) -> i64 {
        self.keyed_from
    }

    fn mac(&self, domain: &[u8]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_ref()).expect("any key");
        m.update(domain);
        m
    }

    /// The hash of record `seq` with contents `canonical`, linked to `prev`.
    pub fn link(&self, seq: i64, prev: &str, canonical: &[u8]) -> String {
        if seq < self.keyed_from {
            // The unkeyed chain of records written before this vault had a chain key.
            return hex::encode(
                Sha256::new()
                    .chain_update(prev.as_bytes())
                    .chain_update(b"\n")
                    .chain_update(canonical)
                    .finalize(),
            );
        }
        let mut m = self.mac(b"vault-mcp audit link v2\0");
        m.update(seq.to_string().as_bytes());
        m.update(b"\n");
        m.update(prev.as_bytes());
        m.update(b"\n");
        m.update(canonical);
        hex::encode(m.finalize().into_bytes())
    }

    /// A MAC naming record `seq` with `hash` as a point of the chain (checkpoints, anchors).
    pub fn seal_point(&self, what: &str, seq: i64, hash: &str) -> String {
        let mut m = self.mac(b"vault-mcp audit point v1\0");
        m.update(what.as_bytes());
        m.update(b"\n");
        m.update(seq.to_string().as_bytes());
        m.update(b"\n");
        m.update(hash.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    /// Constant-time check of [`ChainKey::seal_point`].
    pub fn check_point(&self, what: &str, seq: i64, hash: &str, mac: &str) -> bool {
        let Ok(given) = hex::decode(mac) else {
            return false;
        };
        let mut m = self.mac(b"vault-mcp audit point v1\0");
        m.update(what.as_bytes());
        m.update(b"\n");
        m.update(seq.to_string().as_bytes());
        m.update(b"\n");
        m.update(hash.as_bytes());
        m.verify_slice(&given).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_links_depend_on_key_seq_prev_and_contents() {
        let k = ChainKey::generate(1);
        let h = k.link(5, "prev", b"{}");
        assert_eq!(h, k.link(5, "prev", b"{}"));
        assert_ne!(h, k.link(6, "prev", b"{}"));
        assert_ne!(h, k.link(5, "prev2", b"{}"));
        assert_ne!(h, k.link(5, "prev", b"{ }"));
        assert_ne!(h, ChainKey::generate(1).link(5, "prev", b"{}"));
    }

    #[test]
    fn records_before_the_key_keep_the_plain_chain() {
        let k = ChainKey::generate(10);
        let plain = hex::encode(Sha256::digest(b"prev\n{}"));
        assert_eq!(k.link(9, "prev", b"{}"), plain);
        assert_ne!(k.link(10, "prev", b"{}"), plain);
    }

    #[test]
    fn sealing_round_trip_and_points() {
        let k = ChainKey::generate(3);
        let back = ChainKey::from_sealing_bytes(&k.to_sealing_bytes()).unwrap();
        assert_eq!(back.keyed_from(), 3);
        assert_eq!(back.link(4, "p", b"x"), k.link(4, "p", b"x"));
        let mac = k.seal_point("checkpoint", 7, "abc");
        assert!(back.check_point("checkpoint", 7, "abc", &mac));
        assert!(!back.check_point("checkpoint", 8, "abc", &mac));
        assert!(!back.check_point("anchor", 7, "abc", &mac));
        assert!(!back.check_point("checkpoint", 7, "abd", &mac));
        assert!(!back.check_point("checkpoint", 7, "abc", "zz"));
        assert!(format!("{k:?}").contains("keyed from record 3"));
    }
}
