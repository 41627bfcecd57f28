//! The audit write path. Every call and vault event becomes one [`AuditEntry`]; a single
//! writer batches concurrent entries into one transaction (group commit), so many calls share
//! one fsync, and each caller waits until its entry is durable before returning. The writer is
//! an OS thread when the store's append is local work (SQLite: the append runs right there, no
//! further hand-off) and a task when it is a network round trip (PostgreSQL). It signs the new
//! head of the chain into a checkpoint file outside the database — at most every
//! `CHECKPOINT_EVERY` while entries keep coming, and once they pause for `QUIET` — so `audit
//! verify` notices records cut from the end.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

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
    tx: flume::Sender<Message>,
}

/// How often, at most, a busy writer signs the head of the chain into the checkpoint file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// A pause this long after the last entry counts as quiet: the head is signed then. Not "the
/// queue is empty" — a writer that keeps up finds it empty after nearly every batch, and a
/// rename per batch (which makes ext4 write the new file out) cost a loaded server about a
/// fifth of the audit thread's time.
const QUIET: Duration = Duration::from_millis(25);

/// SQLite allows 32766 bound values; 21 columns × 1000 rows stays well below.
const MAX_BATCH: usize = 1000;

/// At most this many entries wait for the writer; a caller beyond it waits to send (back
/// pressure instead of unbounded memory).
const QUEUE: usize = 4096;

/// Signs the head of the chain into the checkpoint file: at most every `CHECKPOINT_EVERY` while
/// entries keep coming, after a `QUIET` pause otherwise, and always after the callers of a batch
/// have their answers (no result waits for a rename).
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

    /// Entries keep coming and the last signature is old enough.
    fn due(&self) -> bool {
        self.unsigned.is_some() && self.at.is_none_or(|t| t.elapsed() >= CHECKPOINT_EVERY)
    }

    /// How long the writer may wait for the next entry before signing what it has.
    fn patience(&self) -> Option<Duration> {
        self.unsigned.as_ref().map(|_| QUIET)
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
    fn gather(first: Message, rx: &flume::Receiver<Message>) -> Self {
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
    fn finish(self, appended: crate::store::StoreResult<Vec<AuditRecord>>, signer: &mut Signer) {
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
        if signer.due() {
            signer.sign();
        }
    }
}

impl AuditSink {
    pub fn start(store: Arc<dyn AuditStore>, chain: ChainKey, checkpoint: Option<PathBuf>) -> Self {
        if let Some(append) = store.blocking_append() {
            let (tx, rx) = flume::bounded(QUEUE);
            let signer = Signer::new(checkpoint.clone(), chain.clone());
            let chain = chain.clone();
            let thread = std::thread::Builder::new().name("vault-audit".into());
            match thread.spawn(move || Self::run_blocking(rx, append.as_ref(), &chain, signer)) {
                Ok(_) => return AuditSink { tx },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the audit writer thread; writing from a task instead");
                }
            }
        }
        let (tx, rx) = flume::bounded(QUEUE);
        let signer = Signer::new(checkpoint, chain.clone());
        tokio::spawn(Self::run_async(rx, store, chain, signer));
        AuditSink { tx }
    }

    /// The writer as an OS thread: the append blocks it, never a runtime thread. Ends when
    /// every handle is gone.
    fn run_blocking(
        rx: flume::Receiver<Message>,
        append: &dyn BlockingAuditAppend,
        chain: &ChainKey,
        mut signer: Signer,
    ) {
        loop {
            let first = match signer.patience() {
                Some(wait) => match rx.recv_timeout(wait) {
                    Ok(m) => m,
                    Err(flume::RecvTimeoutError::Timeout) => {
                        signer.sign();
                        continue;
                    }
                    Err(flume::RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            let batch = Batch::gather(first, &rx);
            let appended = append.append(&batch.entries, chain);
            batch.finish(appended, &mut signer);
        }
        signer.sign();
    }

    /// The writer as a task, for a store whose append awaits the network.
    async fn run_async(
        rx: flume::Receiver<Message>,
        store: Arc<dyn AuditStore>,
        chain: ChainKey,
        mut signer: Signer,
    ) {
        loop {
            let first = match signer.patience() {
                Some(wait) => match tokio::time::timeout(wait, rx.recv_async()).await {
                    Ok(Ok(m)) => m,
                    Ok(Err(_)) => break,
                    Err(_) => {
                        signer.sign();
                        continue;
                    }
                },
                None => match rx.recv_async().await {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            let batch = Batch::gather(first, &rx);
            let appended = if batch.entries.is_empty() {
                Ok(Vec::new())
            } else {
                store.append_audit(&batch.entries, &chain).await
            };
            batch.finish(appended, &mut signer);
        }
        signer.sign();
    }

    /// Wait until every entry sent before is committed and named by the checkpoint (a server
    /// that is stopping calls this, so a clean stop never leaves the checkpoint behind).
    pub async fn flush(&self) -> Result<(), VaultError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send_async((None, ack))
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
            .send_async((Some(entry), ack))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, Stores};

    fn probe(id: &str) -> AuditEntry {
        AuditEntry {
            id: id.into(),
            event: "probe".into(),
            ..Default::default()
        }
    }

    /// The checkpoint is not rewritten for every batch, yet catches up by itself once entries
    /// pause, and a flush brings it to the head at once.
    #[tokio::test]
    async fn checkpoint_follows_the_head_after_a_pause_and_on_flush() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::sqlite(SqliteStore::open(&dir.path().join("v.db")).await.unwrap());
        let chain = ChainKey::generate(1);
        let path = dir.path().join("checkpoint.json");
        let sink = AuditSink::start(stores.audit.clone(), chain.clone(), Some(path.clone()));
        let seq = || Checkpoint::read(&path).unwrap().map(|c| c.seq);

        // Two entries back to back: the first is signed at once (nothing signed yet), the
        // second waits for a pause.
        sink.write(probe("a")).await.unwrap();
        sink.write(probe("b")).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while seq() != Some(2) {
            assert!(
                std::time::Instant::now() < deadline,
                "the checkpoint stayed at {:?} after the writes paused",
                seq()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let c = Checkpoint::read(&path).unwrap().unwrap();
        assert!(chain.check_point("checkpoint", c.seq, &c.hash, &c.mac));

        sink.write(probe("c")).await.unwrap();
        sink.flush().await.unwrap();
        assert_eq!(seq(), Some(3), "a flush signs the head before it returns");
    }
}
