//! The audit write path. Every call and vault event becomes one [`AuditEntry`]; a single
//! writer task batches concurrent entries into one transaction (group commit), so many calls
//! share one fsync, and each caller waits until its entry is durable before returning.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Caller, VaultError};
use crate::store::{AuditEntry, Store};

type Ack = oneshot::Sender<Result<(), String>>;

/// Handle to the audit writer.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<(AuditEntry, Ack)>,
}

/// SQLite allows 32766 bound values; 21 columns × 1000 rows stays well below.
const MAX_BATCH: usize = 1000;

impl AuditSink {
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(AuditEntry, Ack)>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                let (entries, acks): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let result = store
                    .append_audit(&entries)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                if let Err(e) = &result {
                    tracing::error!(error = %e, entries = entries.len(), "audit write failed");
                }
                for ack in acks {
                    let _ = ack.send(result.clone());
                }
            }
        });
        AuditSink { tx }
    }

    /// Write one entry and wait until it is committed.
    pub async fn write(&self, entry: AuditEntry) -> Result<(), VaultError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send((entry, ack))
            .await
            .map_err(|_| VaultError::AuditUnavailable("audit writer stopped".into()))?;
        done.await
            .map_err(|_| VaultError::AuditUnavailable("audit writer stopped".into()))?
            .map_err(VaultError::AuditUnavailable)
    }
}

pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A new entry attributed to `caller`.
pub fn entry(caller: &Caller, event: &str, id: &str) -> AuditEntry {
    AuditEntry {
        id: id.to_owned(),
        ts_ms: now_ms(),
        event: event.to_owned(),
        principal: caller.principal.id().to_owned(),
        agent: caller.agent.clone(),
        client: caller.client.clone(),
        tool: Some(caller.tool.clone()),
        outcome: "ok".into(),
        ..Default::default()
    }
}
