//! The audit write path. Every call and vault event becomes one [`AuditEntry`]; concurrent
//! entries are committed together in one transaction (group commit), so many calls share one
//! fsync, and each caller waits until its entry is durable before returning.
//!
//! When the store's append is local work (SQLite), whoever holds the writer's seat appends: a
//! caller that finds the seat free appends its own entry, and whatever is queued, on its own
//! thread (leader/follower), and callers that find it taken queue their entries for the writer
//! thread, which appends them as one batch once the seat is free. A lone caller so pays no
//! hand-off to another thread and back. When the append is a network round trip (PostgreSQL), a
//! writer task appends every batch.
//!
//! The writer also signs the new head of the chain into a checkpoint file outside the database —
//! at most every `CHECKPOINT_EVERY` while entries keep coming, and once they pause for `QUIET` —
//! so `audit verify` notices records cut from the end. No caller waits for that file.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
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

enum Message {
    /// Boxed: an entry is large, and the other messages are a pointer or nothing.
    Entry(Box<AuditEntry>, Ack),
    /// Answered once everything before it is committed and the checkpoint names it.
    Flush(Ack),
    /// A caller appended in the seat: the writer thread looks at the checkpoint again.
    Wake,
}

/// Handle to the audit writer.
#[derive(Clone)]
pub struct AuditSink {
    tx: flume::Sender<Message>,
    /// Present when the store's append is local work a caller may do itself.
    seat: Option<Arc<Seat>>,
}

/// What the one appending at a time holds: the blocking append, and the checkpoint signer (its
/// lock is the seat).
struct Seat {
    append: Arc<dyn BlockingAuditAppend>,
    chain: ChainKey,
    rx: flume::Receiver<Message>,
    signer: Mutex<Signer>,
}

impl Seat {
    fn take(&self) -> MutexGuard<'_, Signer> {
        // A panic in an append leaves the signer as it was: still usable.
        self.signer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn try_take(&self) -> Option<MutexGuard<'_, Signer>> {
        match self.signer.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Append `first` and whatever is queued behind it, and answer their callers.
    fn commit(&self, first: Message, signer: &mut Signer) {
        let batch = Batch::gather(first, &self.rx);
        let appended = if batch.entries.is_empty() {
            Ok(Vec::new())
        } else {
            self.append.append(&batch.entries, &self.chain)
        };
        batch.finish(appended, signer);
    }
}

/// May this thread block in place? Only a worker of a multi-thread runtime can hand its other
/// tasks to another thread first (`block_in_place` panics on a current-thread runtime).
fn may_block_in_place() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
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
    /// When the checkpoint was last signed.
    signed_at: Option<Instant>,
    /// When the last batch was committed.
    appended_at: Instant,
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
            signed_at: None,
            appended_at: Instant::now(),
            failed: false,
            unsigned: None,
        }
    }

    fn committed(&mut self, seq: i64, hash: String) {
        self.unsigned = Some((seq, hash));
        self.appended_at = Instant::now();
    }

    /// Entries keep coming and the last signature is old enough.
    fn due(&self) -> bool {
        self.unsigned.is_some()
            && self
                .signed_at
                .is_none_or(|t| t.elapsed() >= CHECKPOINT_EVERY)
    }

    /// How long the writer may wait for the next entry before it should look again: until the
    /// entries have paused for `QUIET`, or the signature is due, whichever comes first.
    fn patience(&self) -> Option<Duration> {
        self.unsigned.as_ref()?;
        let quiet = QUIET.saturating_sub(self.appended_at.elapsed());
        let due = self.signed_at.map_or(Duration::ZERO, |t| {
            CHECKPOINT_EVERY.saturating_sub(t.elapsed())
        });
        Some(quiet.min(due))
    }

    /// Sign if the signature is due or the entries have paused.
    fn sign_if_ready(&mut self) {
        if self.due() || (self.unsigned.is_some() && self.appended_at.elapsed() >= QUIET) {
            self.sign();
        }
    }

    fn sign(&mut self) {
        let (Some(path), Some((seq, hash))) = (&self.path, self.unsigned.take()) else {
            return;
        };
        self.signed_at = Some(Instant::now());
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
        let mut batch = Batch {
            entries: Vec::new(),
            acks: Vec::new(),
            flush: false,
        };
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Entry(entry, ack) => {
                    batch.entries.push(*entry);
                    batch.acks.push(ack);
                }
                Message::Flush(ack) => {
                    batch.flush = true;
                    batch.acks.push(ack);
                }
                Message::Wake => {}
            }
            if batch.acks.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        batch
    }

    /// Answer every caller of the batch with the append's result, signing the checkpoint
    /// first for a flush.
    fn finish(self, appended: crate::store::StoreResult<Vec<AuditRecord>>, signer: &mut Signer) {
        let result = match appended {
            Ok(records) => {
                if let Some(last) = records.last() {
                    signer.committed(last.seq, last.hash.clone());
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
    }
}

fn stopped() -> VaultError {
    VaultError::AuditUnavailable("audit writer stopped".into())
}

impl AuditSink {
    pub fn start(store: Arc<dyn AuditStore>, chain: ChainKey, checkpoint: Option<PathBuf>) -> Self {
        if let Some(append) = store.blocking_append() {
            match Self::start_seat(append, chain.clone(), checkpoint.clone()) {
                Ok(sink) => return sink,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the audit writer thread; writing from a task instead");
                }
            }
        }
        let (tx, rx) = flume::bounded(QUEUE);
        let signer = Signer::new(checkpoint, chain.clone());
        tokio::spawn(Self::run_async(rx, store, chain, signer));
        AuditSink { tx, seat: None }
    }

    /// A sink whose callers append in a seat, with a writer thread for those who find it taken.
    fn start_seat(
        append: Arc<dyn BlockingAuditAppend>,
        chain: ChainKey,
        checkpoint: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = flume::bounded(QUEUE);
        let seat = Arc::new(Seat {
            append,
            chain: chain.clone(),
            rx,
            signer: Mutex::new(Signer::new(checkpoint, chain)),
        });
        let writer = seat.clone();
        std::thread::Builder::new()
            .name("vault-audit".into())
            .spawn(move || Self::run_blocking(&writer))?;
        Ok(AuditSink {
            tx,
            seat: Some(seat),
        })
    }

    /// The writer thread of a blocking append: takes the seat for what callers queued while it
    /// was taken, and signs the checkpoint when it is due. Ends when every handle is gone.
    fn run_blocking(seat: &Seat) {
        loop {
            let patience = seat.take().patience();
            let first = match patience {
                Some(wait) => match seat.rx.recv_timeout(wait) {
                    Ok(m) => Some(m),
                    Err(flume::RecvTimeoutError::Timeout) => None,
                    Err(flume::RecvTimeoutError::Disconnected) => break,
                },
                None => match seat.rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                },
            };
            let mut signer = seat.take();
            if let Some(first) = first {
                seat.commit(first, &mut signer);
            }
            signer.sign_if_ready();
        }
        seat.take().sign();
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
                    Ok(Ok(m)) => Some(m),
                    Ok(Err(_)) => break,
                    Err(_) => None,
                },
                None => match rx.recv_async().await {
                    Ok(m) => Some(m),
                    Err(_) => break,
                },
            };
            if let Some(first) = first {
                let batch = Batch::gather(first, &rx);
                let appended = if batch.entries.is_empty() {
                    Ok(Vec::new())
                } else {
                    store.append_audit(&batch.entries, &chain).await
                };
                batch.finish(appended, &mut signer);
            }
            signer.sign_if_ready();
        }
        signer.sign();
    }

    /// Wait until every entry sent before is committed and named by the checkpoint (a server
    /// that is stopping calls this, so a clean stop never leaves the checkpoint behind).
    pub async fn flush(&self) -> Result<(), VaultError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send_async(Message::Flush(ack))
            .await
            .map_err(|_| stopped())?;
        done.await
            .map_err(|_| stopped())?
            .map_err(VaultError::AuditUnavailable)
    }

    /// Write one entry and wait until it is committed.
    pub async fn write(&self, entry: AuditEntry) -> Result<(), VaultError> {
        let (ack, mut done) = oneshot::channel();
        let message = Message::Entry(Box::new(entry), ack);
        let message = match self.lead(message) {
            Ok(()) => {
                return done
                    .try_recv()
                    .map_err(|_| stopped())?
                    .map_err(VaultError::AuditUnavailable);
            }
            Err(message) => message,
        };
        self.tx.send_async(message).await.map_err(|_| stopped())?;
        done.await
            .map_err(|_| stopped())?
            .map_err(VaultError::AuditUnavailable)
    }

    /// Commit `message` on this thread if the seat is free (handing this worker's other tasks
    /// to another thread while the append blocks); give it back otherwise.
    fn lead(&self, message: Message) -> Result<(), Message> {
        let Some(seat) = &self.seat else {
            return Err(message);
        };
        if !may_block_in_place() {
            return Err(message);
        }
        let Some(mut signer) = seat.try_take() else {
            return Err(message);
        };
        let was_signed = signer.unsigned.is_none();
        tokio::task::block_in_place(|| seat.commit(message, &mut signer));
        let wake = was_signed || signer.due();
        drop(signer);
        // The writer thread may be asleep without a deadline; it signs, not this caller.
        if wake {
            let _ = self.tx.try_send(Message::Wake);
        }
        Ok(())
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
    /// pause, and a flush brings it to the head at once. On a multi-thread runtime the writes
    /// below are appended by their callers in the seat, so the writer thread learns of them only
    /// from the wake-up they send.
    async fn checkpoint_follows_the_head_after_a_pause_and_on_flush() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::sqlite(SqliteStore::open(&dir.path().join("v.db")).await.unwrap());
        let chain = ChainKey::generate(1);
        let path = dir.path().join("checkpoint.json");
        let sink = AuditSink::start(stores.audit.clone(), chain.clone(), Some(path.clone()));
        let seq = || Checkpoint::read(&path).unwrap().map(|c| c.seq);
        // Let the writer thread fall asleep with nothing to sign (no deadline), as a server
        // does between calls: only a wake-up from a caller in the seat gets it going again.
        sink.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;

        // Two entries back to back: the first is signed at once (nothing signed yet), the
        // second waits for a pause.
        sink.write(probe("a")).await.unwrap();
        sink.write(probe("b")).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seq() != Some(2) {
            assert!(
                Instant::now() < deadline,
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

    #[tokio::test]
    async fn checkpoint_follows_through_the_writer_thread() {
        checkpoint_follows_the_head_after_a_pause_and_on_flush().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoint_follows_callers_in_the_seat() {
        checkpoint_follows_the_head_after_a_pause_and_on_flush().await;
    }

    /// Records which thread ran each append.
    struct Recording {
        inner: Arc<dyn BlockingAuditAppend>,
        threads: Mutex<Vec<String>>,
    }

    impl BlockingAuditAppend for Recording {
        fn append(
            &self,
            entries: &[AuditEntry],
            chain: &ChainKey,
        ) -> crate::store::StoreResult<Vec<AuditRecord>> {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            self.threads.lock().unwrap().push(name);
            self.inner.append(entries, chain)
        }
    }

    /// A caller that finds the seat free appends on its own thread; one that finds it taken
    /// waits for the writer thread to append its entry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(
        clippy::await_holding_lock,
        reason = "the test holds the seat while a write waits"
    )]
    async fn a_caller_appends_in_a_free_seat_and_queues_at_a_taken_one() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::sqlite(SqliteStore::open(&dir.path().join("v.db")).await.unwrap());
        let chain = ChainKey::generate(1);
        let recording = Arc::new(Recording {
            inner: stores
                .audit
                .blocking_append()
                .expect("SQLite appends in place"),
            threads: Mutex::new(Vec::new()),
        });
        let sink = AuditSink::start_seat(recording.clone(), chain.clone(), None).unwrap();
        let threads = || recording.threads.lock().unwrap().clone();

        sink.write(probe("led")).await.unwrap();
        let led = threads();
        assert_eq!(led.len(), 1);
        assert_ne!(led[0], "vault-audit", "a lone caller appends itself");

        let held = sink.seat.as_ref().unwrap().take();
        let queued = tokio::spawn({
            let sink = sink.clone();
            async move { sink.write(probe("queued")).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !queued.is_finished(),
            "a write waits while the seat is taken"
        );
        drop(held);
        queued.await.unwrap().unwrap();
        assert_eq!(threads()[1..], ["vault-audit".to_owned()]);
        crate::store::contract::assert_one_chain(stores.audit.as_ref(), &chain, 2).await;
    }

    /// Callers racing for the seat, some appending themselves and some queued for the writer
    /// thread, still make one chain with every entry in it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_racing_for_the_seat_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::sqlite(SqliteStore::open(&dir.path().join("v.db")).await.unwrap());
        let chain = ChainKey::generate(1);
        let sink = AuditSink::start(stores.audit.clone(), chain.clone(), None);
        let writes = (0..200).map(|i| {
            let sink = sink.clone();
            tokio::spawn(async move { sink.write(probe(&format!("e{i}"))).await })
        });
        for w in writes.collect::<Vec<_>>() {
            w.await.unwrap().unwrap();
        }
        crate::store::contract::assert_one_chain(stores.audit.as_ref(), &chain, 200).await;
    }
}
