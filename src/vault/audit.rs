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

/// Handle to the audit writer. A message without an entry is a flush: answered once everything
/// before it is committed and the checkpoint names it.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<(Option<AuditEntry>, Ack)>,
}

/// How often, at most, a busy writer signs the head of the chain into the checkpoint file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// SQLite allows 32766 bound values; 21 columns × 1000 rows stays well below.
const MAX_BATCH: usize = 1000;

/// Signs the head of the chain into the checkpoint file: at most every `CHECKPOINT_EVERY` under
/// load (a rename per batch cost about 4% of a loaded server), at once after a quiet spell, and
/// always after the callers of a batch have their answers (no result waits for a rename).
struct Signer {
    path: Option<PathBuf>,
    chain: ChainKey,
    seq: Option<i64>,
    at: Option<std::time::Instant>,
    failed: bool,
    /// The newest committed head not yet in the checkpoint.
    unsigned: Option<(i64, String)>,
}

impl Signer {
    fn due(&self, quiet: bool) -> bool {
        self.unsigned.is_some()
            && (quiet || self.at.is_none_or(|t| t.elapsed() >= CHECKPOINT_EVERY))
    }

    fn sign(&mut self) {
        let (Some(path), Some((seq, hash))) = (&self.path, self.unsigned.take()) else {
            return;
        };
        self.at = Some(std::time::Instant::now());
        match Checkpoint::advance(path, &self.chain, seq, &hash, &mut self.seq) {
            Ok(()) => self.failed = false,
            Err(e) if !self.failed => {
                self.failed = true;
                tracing::warn!(path = %path.display(), error = %e, "cannot write the audit checkpoint; truncation of the log will not be detected until it can");
            }
            Err(_) => {}
        }
    }
}

impl AuditSink {
    pub fn start(store: Arc<dyn AuditStore>, chain: ChainKey, checkpoint: Option<PathBuf>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Option<AuditEntry>, Ack)>(4096);
        tokio::spawn(async move {
            let mut signer = Signer {
                path: checkpoint,
                chain: chain.clone(),
                seq: None,
                at: None,
                failed: false,
                unsigned: None,
            };
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                let (entries, acks): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let entries: Vec<AuditEntry> = entries.into_iter().flatten().collect();
                let flush = entries.len() < acks.len();
                let result = if entries.is_empty() {
                    Ok(())
                } else {
                    match store.append_audit(&entries, &chain).await {
                        Ok(records) => {
                            if let Some(last) = records.last() {
                                signer.unsigned = Some((last.seq, last.hash.clone()));
                            }
                            Ok(())
                        }
                        Err(e) => {
                            tracing::error!(error = %e, entries = entries.len(), "audit write failed");
                            Err(e.to_string())
                        }
                    }
                };
                // A flush waits for the checkpoint; everyone else is answered first.
                if flush {
                    signer.sign();
                }
                for ack in acks {
                    let _ = ack.send(result.clone());
                }
                if signer.due(rx.is_empty()) {
                    signer.sign();
                }
            }
            signer.sign();
        });
        AuditSink { tx }
    }

    /// Wait until every entry sent before is committed and named by the checkpoint (a server
    /// that is stopping calls this, so a clean stop never leaves the checkpoint behind).
    pub async fn flush(&self) -> Result<(), VaultError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send((None, ack))
            .await
            .map_err(|_| VaultError::AuditUnavailable("audit writer stopped".into()))?;
        done.await
            .map_err(|_| VaultError::AuditUnavailable("audit writer stopped".into()))?
            .map_err(VaultError::AuditUnavailable)
    }

    /// Write one entry and wait until it is committed.
    pub async fn write(&self, entry: AuditEntry) -> Result<(), VaultError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send((Some(entry), ack))
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
