//! Tool calls in progress, shared by every connection of a server: counted, so a hosted server
//! that is shutting down can let them finish (and deliver their results) before it closes its
//! streams; and, for calls that wait for their caller to finish Connect in a browser, capped per
//! principal, so one caller cannot park an unbounded number of calls (each polling the store).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

/// How many calls of one principal may wait for a person at once; more get the link at once.
pub const MAX_WAITING_PER_PRINCIPAL: usize = 4;

#[derive(Debug, Default)]
struct Inner {
    running: AtomicUsize,
    waiting: Mutex<HashMap<String, usize>>,
}

#[derive(Clone, Debug, Default)]
pub struct InFlight(Arc<Inner>);

/// Held while one call runs.
pub struct CallGuard(Arc<Inner>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Held while one call waits for its caller in the browser.
pub struct WaitSlot {
    inner: Arc<Inner>,
    principal: String,
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        let mut w = self.inner.waiting.lock().expect("waiting lock");
        if let Some(n) = w.get_mut(&self.principal) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.principal);
            }
        }
    }
}

impl InFlight {
    pub fn enter(&self) -> CallGuard {
        self.0.running.fetch_add(1, Ordering::SeqCst);
        CallGuard(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.running.load(Ordering::SeqCst)
    }

    /// A slot to wait for `principal` in the browser, unless they already have the most allowed.
    pub fn wait_slot(&self, principal: &str) -> Option<WaitSlot> {
        let mut w = self.0.waiting.lock().expect("waiting lock");
        let n = w.entry(principal.to_owned()).or_default();
        if *n >= MAX_WAITING_PER_PRINCIPAL {
            return None;
        }
        *n += 1;
        Some(WaitSlot {
            inner: self.0.clone(),
            principal: principal.to_owned(),
        })
    }

    /// Wait until no call is running, or `limit` passes; true when drained.
    pub async fn drained(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_slots_are_capped_per_principal_and_given_back() {
        let f = InFlight::default();
        let held: Vec<_> = (0..MAX_WAITING_PER_PRINCIPAL)
            .map(|_| f.wait_slot("alice").expect("a slot"))
            .collect();
        assert!(f.wait_slot("alice").is_none(), "one more than the cap");
        assert!(
            f.wait_slot("bob").is_some(),
            "another principal is not affected"
        );
        drop(held);
        assert!(
            f.wait_slot("alice").is_some(),
            "slots come back when calls end"
        );
    }
}
