//! The SQLite audit append: one connection of its own, driven directly through SQLite's C API
//! (rusqlite) on the calling thread: the caller in the audit writer's seat, or its OS thread
//! (`vault/audit.rs`), so a batch costs no hand-off per statement through sqlx's worker thread
//! (a one-row append without fsync: 88 µs through sqlx, 44 µs here;
//! `components/audit_store_append_*`).
//!
//! Each append is one `BEGIN IMMEDIATE` transaction that reads the chain's tail and inserts the
//! batch behind it, so another process appending to the same file (a second stdio client on one
//! data directory) is always chained correctly: the write lock is taken before the tail is read.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Anchor, AuditEntry, AuditRecord, BlockingAuditAppend, StoreError, StoreResult};
use crate::crypto::ChainKey;

const INSERT: &str = "INSERT INTO audit_log (seq, id, ts_ms, event, principal, agent, client, tool, \
     grant_id, provider, method, host, path, status, latency_ms, outcome, decision, reason, detail, \
     principal_kind, grant_owner, delegation, context, prev_hash, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
     ?20, ?21, ?22, ?23, ?24, ?25)";
const TAIL: &str = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1";
const ANCHOR: &str = "SELECT value FROM vault_meta WHERE key = 'audit_anchor'";

/// The audit connection. `None` after an error that may have broken it (a failed disk, a file
/// moved away): the next append opens a fresh one rather than failing every call from then on.
pub(super) struct SqliteAuditWriter {
    conn: Mutex<Option<Connection>>,
    path: PathBuf,
    fsync: bool,
}

impl SqliteAuditWriter {
    /// Opens the connection now: the store opens it while its start-up connection still holds
    /// the file, so closing that one is not the last close (which would fold the log back).
    pub(super) fn open(path: &Path, fsync: bool) -> StoreResult<Self> {
        let conn = Self::connect(path, fsync)?;
        Ok(SqliteAuditWriter {
            conn: Mutex::new(Some(conn)),
            path: path.to_owned(),
            fsync,
        })
    }

    fn connect(path: &Path, fsync: bool) -> StoreResult<Connection> {
        let open = || -> rusqlite::Result<Connection> {
            let c = Connection::open(path)?;
            // FULL: a commit returns once the log is on the disk, so an answered call's record
            // survives power loss. NORMAL (`[audit] fsync = false`) survives a crash of the
            // process only. The file is already in WAL mode (the store's start-up set it).
            c.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })?;
            c.busy_timeout(Duration::from_secs(10))?;
            Ok(c)
        };
        open().map_err(|e| StoreError::Open {
            location: path.display().to_string(),
            message: format!("audit connection: {e}"),
        })
    }

    fn slot(&self) -> MutexGuard<'_, Option<Connection>> {
        // A panic while holding the lock leaves at worst a connection mid-transaction, which
        // SQLite rolls back on the next BEGIN: the slot stays usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Close the connection (a clean exit: the last connection to close folds SQLite's log
    /// back into the database file). A later append reopens it.
    pub(super) fn close(&self) {
        if let Some(c) = self.slot().take()
            && let Err((_, e)) = c.close()
        {
            tracing::debug!(error = %e, "audit connection did not close cleanly");
        }
    }
}

impl BlockingAuditAppend for SqliteAuditWriter {
    fn append(&self, entries: &[AuditEntry], chain: &ChainKey) -> StoreResult<Vec<AuditRecord>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut slot = self.slot();
        let conn = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(Self::connect(&self.path, self.fsync)?),
        };
        let result = append_on(conn, entries, chain);
        if result.is_err() {
            *slot = None;
        }
        result.map_err(classify)
    }
}

fn append_on(
    conn: &mut Connection,
    entries: &[AuditEntry],
    chain: &ChainKey,
) -> rusqlite::Result<Vec<AuditRecord>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let tail: Option<(i64, String)> = tx
        .prepare_cached(TAIL)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let tail = match tail {
        Some(t) => t,
        None => {
            let anchor: Option<String> = tx
                .prepare_cached(ANCHOR)?
                .query_row([], |r| r.get(0))
                .optional()?;
            let a = Anchor::parse(anchor.as_deref());
            (a.seq, a.hash)
        }
    };
    let records = super::chain_records(chain, tail, entries);
    {
        let mut insert = tx.prepare_cached(INSERT)?;
        for r in &records {
            let e = &r.entry;
            insert.execute(params![
                r.seq,
                e.id,
                e.ts_ms,
                e.event,
                e.principal,
                e.agent,
                e.client,
                e.tool,
                e.grant_id,
                e.provider,
                e.method,
                e.host,
                e.path,
                e.status,
                e.latency_ms,
                e.outcome.as_str(),
                e.decision,
                e.reason,
                e.detail,
                e.principal_kind.map(|k| k.as_str()),
                e.grant_owner,
                e.delegation,
                e.context,
                r.prev_hash,
                r.hash,
            ])?;
        }
    }
    tx.commit()?;
    Ok(records)
}

/// The same classes as [`StoreError::db`]: a busy or unreachable file is worth retrying.
fn classify(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DatabaseBusy | C::DatabaseLocked | C::CannotOpen | C::SystemIoFailure) => {
            StoreError::Unavailable(e.to_string())
        }
        Some(C::ConstraintViolation) => StoreError::Conflict(e.to_string()),
        _ => StoreError::Db(e.to_string()),
    }
}
