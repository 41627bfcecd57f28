//! The audit write path. Every call and vault event becomes one [`AuditEntry`]; a single
//! writer task batches concurrent entries into one transaction (group commit), so many calls
//! share one fsync, and each caller waits until its entry is durable before returning. The
//! writer signs the new head of the chain into a checkpoint file outside the database — after a
//! batch, at most every `CHECKPOINT_EVERY` (and on the next batch after a quiet spell) — so
//! `audit verify` notices records cut from the end.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{Caller, VaultError};
use crate::{
    crypto::ChainKey,
    model::AuditOutcome,
    store::{AuditEntry, AuditStore},
};

/// The signed head of the chain, as kept in the checkpoint file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    pub mac: String,
    pub ts_ms: i64,
}

impl Checkpoint {
    pub fn read(path: &Path) -> std::io::Result<Option<Checkpoint>> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Write a new head, never moving the checkpoint backwards: `last` is the newest head this
    /// process wrote or found in the file at start (several processes may share one file).
    /// Written to a temporary file and renamed, so a reader never sees half of it.
    fn advance(
        path: &Path,
        chain: &ChainKey,
        seq: i64,
        hash: &str,
        last: &mut Option<i64>,
    ) -> std::io::Result<()> {
        let newest = *last.get_or_insert_with(|| {
            Self::read(path)
                .ok()
                .flatten()
                .filter(|c| chain.check_point("checkpoint", c.seq, &c.hash, &c.mac))
                .map_or(0, |c| c.seq)
        });
        if newest >= seq {
            return Ok(());
        }
        let c = Checkpoint {
            seq,
            hash: hash.to_owned(),
            mac: chain.seal_point("checkpoint", seq, hash),
            ts_ms: now_ms(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(&c).expect("serializes"))?;
        std::fs::rename(&tmp, path)?;
        *last = Some(seq);
        Ok(())
    }
}

type Ack = oneshot::Sender<Result<(), String>>;

/// Handle to the audit writer.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<(AuditEntry, Ack)>,
}

/// How often, at most, a busy writer signs the head of the chain into the checkpoint file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// SQLite allows 32766 bound values; 21 columns × 1000 rows stays well below.
const MAX_BATCH: usize = 1000;

impl AuditSink {
    pub fn start(store: Arc<dyn AuditStore>, chain: ChainKey, checkpoint: Option<PathBuf>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(AuditEntry, Ack)>(4096);
        tokio::spawn(async move {
            let mut checkpoint_failed = false;
            let mut checkpoint_seq = None;
            let mut checkpoint_at: Option<std::time::Instant> = None;
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
                    .append_audit(&entries, &chain)
                    .await
                    .map_err(|e| e.to_string());
                // A rename per batch cost about 4% of a loaded server; under load the head is
                // signed every CHECKPOINT_EVERY, and at once after a quiet spell.
                let due =
                    checkpoint_at.is_none_or(|t| t.elapsed() >= CHECKPOINT_EVERY) || rx.is_empty();
                if due
                    && let (Ok(records), Some(path)) = (&result, &checkpoint)
                    && let Some(last) = records.last()
                {
                    checkpoint_at = Some(std::time::Instant::now());
                    match Checkpoint::advance(
                        path,
                        &chain,
                        last.seq,
                        &last.hash,
                        &mut checkpoint_seq,
                    ) {
                        Ok(()) => checkpoint_failed = false,
                        Err(e) if !checkpoint_failed => {
                            checkpoint_failed = true;
                            tracing::warn!(path = %path.display(), error = %e, "cannot write the audit checkpoint; truncation of the log will not be detected until it can");
                        }
                        Err(_) => {}
                    }
                }
                let result = result.map(|_| ());
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
    jiff::Timestamp::now().as_millisecond()
}

/// A new entry attributed to `caller`.
pub fn entry(caller: &Caller, event: &str, id: &str) -> AuditEntry {
    AuditEntry {
        id: id.to_owned(),
        ts_ms: now_ms(),
        event: event.to_owned(),
        principal: caller.principal.id().to_owned(),
        principal_kind: Some(caller.principal.kind()),
        agent: caller.agent.clone(),
        client: caller.client.clone(),
        tool: Some(caller.tool.clone()),
        outcome: AuditOutcome::Ok,
        ..Default::default()
    }
}
