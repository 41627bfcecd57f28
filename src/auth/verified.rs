//! Tokens that passed verification, remembered briefly: a client sends the same bearer token on
//! every call, and checking its signature each time (an RSA or ECDSA verification) is most of
//! what authentication costs. Only successes are kept, under a SHA-256 of the token and what it
//! was checked for (audience, use), never the token itself; an entry ends at the token's expiry
//! or after the TTL, whichever comes first, and all end when the issuer's key set changes (it is
//! fetched again every few minutes, so a withdrawn key stops working within that time plus the
//! TTL). Bounded: when full, expired entries go first, then everything.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

pub struct VerifiedTokens<T> {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<[u8; 32], (T, Instant)>>,
}

impl<T: Clone> VerifiedTokens<T> {
    pub fn new(ttl: Duration, max: usize) -> Self {
        VerifiedTokens {
            ttl,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cache key for a token and the context it was verified in (parts are length-prefixed,
    /// so no two different lists hash alike).
    pub fn key(&self, parts: &[&str]) -> [u8; 32] {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        h.finalize().into()
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<T> {
        let mut m = self.entries.lock().expect("verified-token lock");
        match m.get(key) {
            Some((v, until)) if Instant::now() < *until => Some(v.clone()),
            Some(_) => {
                m.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remember a verified token until `exp_unix` (its expiry, seconds since the epoch) or the
    /// TTL, whichever is sooner.
    pub fn put(&self, key: [u8; 32], value: T, exp_unix: Option<i64>) {
        let now = Instant::now();
        let mut until = now + self.ttl;
        if let Some(exp) = exp_unix {
            let left = exp - crate::vault::now();
            if left <= 0 {
                return;
            }
            if let Some(at) = now.checked_add(Duration::from_secs(left as u64)) {
                until = until.min(at);
            }
        }
        let mut m = self.entries.lock().expect("verified-token lock");
        if m.len() >= self.max {
            m.retain(|_, (_, u)| *u > now);
            if m.len() >= self.max {
                m.clear();
            }
        }
        m.insert(key, (value, until));
    }

    /// Forget every remembered token (the issuer's keys changed).
    pub fn clear(&self) {
        self.entries.lock().expect("verified-token lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_successes_by_token_and_context_until_expiry() {
        let c = VerifiedTokens::new(Duration::from_secs(60), 3);
        let k = c.key(&["tok", "aud-a", "access"]);
        assert_ne!(k, c.key(&["tok", "aud-b", "access"]), "another audience");
        assert_ne!(k, c.key(&["tok", "aud-a", "id"]), "another use");
        assert_ne!(
            c.key(&["ab", "c"]),
            c.key(&["a", "bc"]),
            "parts cannot run together"
        );
        assert_eq!(c.get(&k), None);
        c.put(k, 7, Some(crate::vault::now() + 3600));
        assert_eq!(c.get(&k), Some(7));
        // an expired token is not remembered at all
        let gone = c.key(&["old"]);
        c.put(gone, 1, Some(crate::vault::now() - 1));
        assert_eq!(c.get(&gone), None);
        // bounded: a full cache makes room
        for i in 0..10 {
            c.put(c.key(&[&i.to_string()]), i, None);
        }
        assert!(c.entries.lock().unwrap().len() <= 3);
    }

    #[test]
    fn entries_end_with_the_ttl() {
        let c = VerifiedTokens::new(Duration::from_millis(20), 10);
        let k = c.key(&["tok"]);
        c.put(k, 1, None);
        assert_eq!(c.get(&k), Some(1));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get(&k), None);
    }
}
