//! Counting tool calls in progress, so a hosted server that is shutting down can let them finish
//! (and deliver their results) before it closes its streams.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

#[derive(Clone, Debug, Default)]
pub struct InFlight(Arc<AtomicUsize>);

/// Held while one call runs.
pub struct CallGuard(Arc<AtomicUsize>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl InFlight {
    pub fn enter(&self) -> CallGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        CallGuard(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
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
