//! The audit write path. Every call and vault event becomes one [`AuditEntry`]; a single
//! writer batches concurrent entries into one transaction (group commit), so many calls share
//! one fsync, and each caller waits until its entry is durable before returning. The writer is
//! an OS thread when the store's append is local work (SQLite: the append runs right there, no
//! further hand-off) and a task when it is a network round trip (PostgreSQL). It signs the new
//! head of the chain into a checkpoint file outside the database — after a batch, at most
//! every `CHECKPOINT_EVERY` (and on the next batch after a quiet spell) — so `audit verify`
//! notices records cut from the end.

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
    store::{AuditEntry, AuditRecord, AuditStore, BlockingAuditAppend},
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
type Message = (Option<AuditEntry>, Ack);

/// Handle to the audit writer. A message without an entry is a flush: answered once everything
/// before it is committed and the checkpoint names it.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Message>,
}

/// How often, at most, a busy writer signs the head of the chain into the checkpoint file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// SQLite allows 32766 bound values; 21 columns × 1000 rows stays well below.
const MAX_BATCH: usize = 1000;

/// At most this many entries wait for the writer; a caller beyond it waits to send (back
/// pressure instead of unbounded memory).
const QUEUE: usize = 4096;

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
    fn new(path: Option<PathBuf>, chain: ChainKey) -> Self {
        Signer {
            path,
            chain,
            seq: None,
            at: None,
            failed: false,
            unsigned: None,
        }
    }

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

/// The messages waiting when the writer wakes, up to `MAX_BATCH`: committed together.
struct Batch {
    entries: Vec<AuditEntry>,
    acks: Vec<Ack>,
    /// A flush is among them: the checkpoint is signed before anyone is answered.
    flush: bool,
}

impl Batch {
    fn gather(first: Message, rx: &mut mpsc::Receiver<Message>) -> Self {
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
        Batch {
            entries,
            acks,
            flush,
        }
    }

    /// Answer every caller of the batch with the append's result, signing the checkpoint
    /// first for a flush and after the answers otherwise.
    fn finish(
        self,
        appended: crate::store::StoreResult<Vec<AuditRecord>>,
        signer: &mut Signer,
        quiet: bool,
    ) {
        let result = match appended {
            Ok(records) => {
                if let Some(last) = records.last() {
                    signer.unsigned = Some((last.seq, last.hash.clone()));
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, entries = self.entries.len(), "audit write failed");
                Err(e.to_string())
            }
        };
        if self.flush {
            signer.sign();
        }
        for ack in self.acks {
            let _ = ack.send(result.clone());
        }
        if signer.due(quiet) {
            signer.sign();
        }
    }
}

impl AuditSink {
    pub fn start(store: Arc<dyn AuditStore>, chain: ChainKey, checkpoint: Option<PathBuf>) -> Self {
        if let Some(append) = store.blocking_append() {
            let (tx, rx) = mpsc::channel(QUEUE);
            let signer = Signer::new(checkpoint.clone(), chain.clone());
            let (c, spawned) = (chain.clone(), std::thread::Builder::new());
            match spawned
                .name("vault-audit".into())
                .spawn(move || Self::run_blocking(rx, append.as_ref(), &c, signer))
            {
                Ok(_) => return AuditSink { tx },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the audit writer thread; writing from a task instead");
                }
            }
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let signer = Signer::new(checkpoint, chain.clone());
        tokio::spawn(Self::run_async(rx, store, chain, signer));
        AuditSink { tx }
    }

    /// The writer as an OS thread: the append blocks it, never a runtime thread. Ends when
    /// every handle is gone.
    fn run_blocking(
        mut rx: mpsc::Receiver<Message>,
        append: &dyn BlockingAuditAppend,
        chain: &ChainKey,
        mut signer: Signer,
    ) {
        while let Some(first) = rx.blocking_recv() {
            let batch = Batch::gather(first, &mut rx);
            let appended = append.append(&batch.entries, chain);
            batch.finish(appended, &mut signer, rx.is_empty());
        }
        signer.sign();
    }

    /// The writer as a task, for a store whose append awaits the network.
    async fn run_async(
        mut rx: mpsc::Receiver<Message>,
        store: Arc<dyn AuditStore>,
        chain: ChainKey,
        mut signer: Signer,
    ) {
        while let Some(first) = rx.recv().await {
            let batch = Batch::gather(first, &mut rx);
            let appended = if batch.entries.is_empty() {
                Ok(Vec::new())
            } else {
                store.append_audit(&batch.entries, &chain).await
            };
            batch.finish(appended, &mut signer, rx.is_empty());
        }
        signer.sign();
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
