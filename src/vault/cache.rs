//! The hot path's memory: what a warm `vault_request` would otherwise read from the database and
//! decrypt on every call.
//!
//! - **Grant lists** per (owners, provider): the rows `resolve_grant` chooses from, kept for a
//!   short time (`cache_ttl`, default 1 s).
//! - **Ready credentials** per grant: the decrypted credential (zeroized when dropped), the
//!   scrubber compiled from it and the provider definition that applies, keyed by the grant row's
//!   version: a row that changed (refresh, re-authorization, revocation, key rotation — every write
//!   bumps `version`) never serves an old entry. Entries live at most `credential_ttl` (60 s).
//!
//! - **JWT subjects mapped to no agent** (users, most of them): kept for the list TTL, so a JWT call
//!   does not read the agents table each time; every agent write here forgets them all. A subject
//!   that is an agent is read every time (a disabled agent is refused at once).
//!
//! - **Last-used marks** per grant: when this process last wrote a grant's `last_used_at`, so the
//!   coarse once-a-minute write is decided without a database round trip (the cached grant row
//!   keeps the value it was read with).
//!
//! Invalidation: every write the vault makes to a grant evicts it and empties the lists at once.
//! Writes by other processes are seen when the short list TTL runs out — or at once on PostgreSQL,
//! where a trigger announces grant changes and `Vault::open` forwards them here (`watch`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::scrub::Scrubber;
use crate::{model::PrincipalKind, providers::Provider, secret::Credential, store::GrantRow};

/// A credential ready to inject, and what goes with it.
pub(crate) struct Ready {
    pub version: i64,
    pub credential: Credential,
    pub scrubber: Scrubber,
    pub provider: Arc<Provider>,
    at: Instant,
}

/// What a JWT subject maps to: the agent (id, name, whether it is active), or no agent.
pub(crate) type SubjectAgent = Option<(String, String, bool)>;

type ListKey = (Vec<(PrincipalKind, String)>, String);
type Lists = HashMap<ListKey, (Instant, Arc<Vec<GrantRow>>)>;

pub(crate) struct Cache {
    lists: Mutex<Lists>,
    ready: Mutex<HashMap<String, Arc<Ready>>>,
    subjects: Mutex<HashMap<String, (Instant, SubjectAgent)>>,
    touched: Mutex<HashMap<String, i64>>,
    list_ttl: Duration,
    credential_ttl: Duration,
}

/// Entries beyond this many are dropped wholesale (memory stays bounded under any workload).
const MAX_ENTRIES: usize = 10_000;

impl Cache {
    pub fn new(list_ttl: Duration) -> Self {
        Cache {
            lists: Mutex::default(),
            ready: Mutex::default(),
            subjects: Mutex::default(),
            touched: Mutex::default(),
            list_ttl,
            credential_ttl: Duration::from_secs(60),
        }
    }

    pub fn lists_enabled(&self) -> bool {
        !self.list_ttl.is_zero()
    }

    pub fn grants(
        &self,
        owners: &[(PrincipalKind, String)],
        provider: &str,
    ) -> Option<Arc<Vec<GrantRow>>> {
        if !self.lists_enabled() {
            return None;
        }
        let key = (owners.to_vec(), provider.to_owned());
        let map = self.lists.lock().expect("grant cache");
        map.get(&key)
            .filter(|(at, _)| at.elapsed() < self.list_ttl)
            .map(|(_, rows)| rows.clone())
    }

    pub fn put_grants(
        &self,
        owners: &[(PrincipalKind, String)],
        provider: &str,
        rows: Vec<GrantRow>,
    ) -> Arc<Vec<GrantRow>> {
        let rows = Arc::new(rows);
        if self.lists_enabled() {
            let mut map = self.lists.lock().expect("grant cache");
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(
                (owners.to_vec(), provider.to_owned()),
                (Instant::now(), rows.clone()),
            );
        }
        rows
    }

    /// The ready credential of `grant`, if one is cached for its current version.
    pub fn ready(&self, grant: &GrantRow) -> Option<Arc<Ready>> {
        let map = self.ready.lock().expect("credential cache");
        map.get(grant.id.as_str())
            .filter(|r| r.version == grant.version && r.at.elapsed() < self.credential_ttl)
            .cloned()
    }

    pub fn put_ready(
        &self,
        grant: &GrantRow,
        credential: Credential,
        scrubber: Scrubber,
        provider: Arc<Provider>,
    ) -> Arc<Ready> {
        let r = Arc::new(Ready {
            version: grant.version,
            credential,
            scrubber,
            provider,
            at: Instant::now(),
        });
        let mut map = self.ready.lock().expect("credential cache");
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(grant.id.to_string(), r.clone());
        r
    }

    /// Whether a call at `now` (unix seconds) should record that it used `grant_id`: true at most
    /// once a minute per grant in this process (and never when the row says it was used within the
    /// minute, e.g. by another instance).
    pub fn should_touch(&self, grant_id: &str, row_last_used: Option<i64>, now: i64) -> bool {
        if row_last_used.is_some_and(|u| u >= now - 60) {
            return false;
        }
        let mut t = self.touched.lock().expect("last-used marks");
        if t.get(grant_id).is_some_and(|&u| u >= now - 60) {
            return false;
        }
        if t.len() >= MAX_ENTRIES {
            t.clear();
        }
        t.insert(grant_id.to_owned(), now);
        true
    }

    /// A grant changed (or went away): forget it and every list.
    pub fn invalidate(&self, grant_id: &str) {
        self.ready
            .lock()
            .expect("credential cache")
            .remove(grant_id);
        self.lists.lock().expect("grant cache").clear();
    }

    /// Forget everything (key rotation, a lost change feed).
    pub fn clear(&self) {
        self.ready.lock().expect("credential cache").clear();
        self.lists.lock().expect("grant cache").clear();
        self.forget_subjects();
    }

    /// What a JWT subject was found to map to, if looked up within the list TTL.
    pub fn subject(&self, sub: &str) -> Option<SubjectAgent> {
        if !self.lists_enabled() {
            return None;
        }
        let map = self.subjects.lock().expect("subject cache");
        map.get(sub)
            .filter(|(at, _)| at.elapsed() < self.list_ttl)
            .map(|(_, v)| v.clone())
    }

    pub fn put_subject(&self, sub: &str, v: SubjectAgent) {
        if !self.lists_enabled() {
            return;
        }
        let mut map = self.subjects.lock().expect("subject cache");
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(sub.to_owned(), (Instant::now(), v));
    }

    /// An agent was created, changed or deleted.
    pub fn forget_subjects(&self) {
        self.subjects.lock().expect("subject cache").clear();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        crypto::Sealed,
        model::{GrantId, GrantKind, GrantStatus, Scopes},
    };

    #[test]
    fn last_used_is_written_at_most_once_a_minute() {
        let c = Cache::new(Duration::from_secs(1));
        assert!(c.should_touch("g1", None, 1_000));
        assert!(
            !c.should_touch("g1", None, 1_030),
            "within the minute: no write"
        );
        assert!(
            c.should_touch("g2", None, 1_030),
            "another grant is its own"
        );
        assert!(
            c.should_touch("g1", None, 1_061),
            "a minute later: write again"
        );
        assert!(
            !c.should_touch("g3", Some(1_050), 1_061),
            "the row says it was just used"
        );
    }

    pub(crate) fn row(id: &str, version: i64) -> GrantRow {
        GrantRow {
            id: GrantId(id.into()),
            principal_kind: PrincipalKind::User,
            principal: "alice".into(),
            provider: "github".into(),
            kind: GrantKind::OAuth,
            account: "a".into(),
            account_display: None,
            scopes: Scopes::default(),
            status: GrantStatus::Active,
            scope_mismatch: None,
            injection: None,
            hosts: None,
            sealed: Sealed {
                key_id: "k".into(),
                text: "t".into(),
            },
            token_expires_at: None,
            grant_expires_at: None,
            ttl_secs: None,
            version,
            created_at: 0,
            updated_at: 0,
            last_used_at: None,
        }
    }

    fn cred() -> Credential {
        Credential {
            access_token: "tok".into(),
            refresh_token: None,
            username: None,
            session_token: None,
        }
    }

    #[test]
    fn a_new_version_never_serves_the_old_credential() {
        let c = Cache::new(Duration::from_secs(1));
        let p = Arc::new(Provider::custom_api_key("x"));
        c.put_ready(&row("g1", 1), cred(), Scrubber::default(), p);
        assert!(c.ready(&row("g1", 1)).is_some());
        assert!(
            c.ready(&row("g1", 2)).is_none(),
            "refreshed or revoked elsewhere"
        );
        assert!(c.ready(&row("g2", 1)).is_none());
        c.invalidate("g1");
        assert!(c.ready(&row("g1", 1)).is_none());
    }

    #[test]
    fn lists_expire_and_are_cleared_by_any_grant_write() {
        let owners = vec![(PrincipalKind::User, "alice".to_owned())];
        let c = Cache::new(Duration::from_millis(50));
        c.put_grants(&owners, "github", vec![row("g1", 1)]);
        assert_eq!(c.grants(&owners, "github").unwrap().len(), 1);
        assert!(c.grants(&owners, "slack").is_none());
        let bob = vec![(PrincipalKind::User, "bob".to_owned())];
        assert!(
            c.grants(&bob, "github").is_none(),
            "lists are per owner set"
        );
        c.invalidate("g9");
        assert!(c.grants(&owners, "github").is_none());
        c.put_grants(&owners, "github", vec![row("g1", 1)]);
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.grants(&owners, "github").is_none(), "expired");
        let off = Cache::new(Duration::ZERO);
        off.put_grants(&owners, "github", vec![row("g1", 1)]);
        assert!(
            off.grants(&owners, "github").is_none(),
            "a zero TTL turns lists off"
        );
    }
}
