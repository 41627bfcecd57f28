//! The SQLite backend, the embedded default: WAL journal, a small connection pool, versioned
//! migrations (`migrations/sqlite`). The shared SQL comes from `store::sql`; what is SQLite's
//! own is here: opening the file and `BEGIN IMMEDIATE` for writes that read first. The audit
//! append has a connection of its own, driven on the audit writer's thread
//! (`store::sqlite_audit`).

use std::{path::Path, sync::Arc, time::Duration};

use sqlx::{
    SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{Anchor, AuditEntry, AuditStore, BlockingAuditAppend, sqlite_audit::SqliteAuditWriter};
use crate::crypto::ChainKey;

pub struct SqliteStore {
    pool: SqlitePool,
    /// The audit append's own connection (`synchronous = FULL`): its commits reach the disk
    /// before tool results return, without slowing every other write.
    audit: Arc<SqliteAuditWriter>,
    location: String,
}

impl SqliteStore {
    /// Open (creating if missing) the database file and apply pending migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with(path, true).await
    }

    /// `audit_fsync`: audit commits wait for the disk (survive power loss) when true; when false
    /// they survive a crash of the process but not of the machine (SQLite WAL, synchronous=NORMAL).
    ///
    /// Start-up opens one connection to switch the file to WAL and apply migrations, then the
    /// audit connection. The pool for everything else connects on first use, so a stdio server
    /// answers `initialize` without waiting for it.
    pub async fn open_with(path: &Path, audit_fsync: bool) -> StoreResult<Self> {
        use sqlx::Connection;
        let location = path.display().to_string();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                location: location.clone(),
                message: format!("cannot create directory {}: {e}", dir.display()),
            })?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // WAL + NORMAL is durable against process crashes; the audit connection uses FULL
            // for its own commits (see append_audit).
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // Switch to WAL on this first connection, before any pool exists: the journal mode is
        // stored in the file, and switching it needs the database to itself (concurrent
        // connections racing to switch it fail with "database is locked").
        let mut first = sqlx::SqliteConnection::connect_with(
            &opts.clone().journal_mode(SqliteJournalMode::Wal),
        )
        .await
        .map_err(|e| classify_open(e, &location))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut first)
            .await
            .map_err(|e| match e {
                sqlx::migrate::MigrateError::Execute(inner) => classify_open(inner, &location),
                other => StoreError::Open {
                    location: location.clone(),
                    message: format!(
                        "{other}; this database may come from a newer vault-mcp version"
                    ),
                },
            })?;
        // Opened while `first` still holds the file, so closing `first` is not the last close
        // (which would fold the log back into the file on every start). Dropped, not closed:
        // sqlx's worker closes it in the background instead of holding up the start.
        let audit = Arc::new(SqliteAuditWriter::open(path, audit_fsync)?);
        drop(first);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // Connections open on first use and then stay (no idle timeout): nothing to wait
            // for at start-up, nothing to reopen later.
            .min_connections(0)
            .idle_timeout(None)
            .max_lifetime(None)
            // A connection to a local file does not go stale: the ping sqlx would send before
            // every use is a wasted round trip to its worker thread.
            .test_before_acquire(false)
            .connect_lazy_with(opts);
        Ok(SqliteStore {
            pool,
            audit,
            location,
        })
    }
}

fn classify_open(e: sqlx::Error, location: &str) -> StoreError {
    let msg = e.to_string();
    if msg.contains("file is not a database")
        || msg.contains("malformed")
        || msg.contains("corrupt")
    {
        StoreError::Corrupt {
            location: location.to_owned(),
            message: msg,
        }
    } else {
        StoreError::Open {
            location: location.to_owned(),
            message: msg,
        }
    }
}

impl SqliteStore {
    /// SQLite cannot announce other processes' changes: caches rely on their short TTL.
    fn change_feed(&self) -> Option<tokio::sync::broadcast::Receiver<super::GrantChange>> {
        None
    }

    /// Bounded: a connection still checked out somewhere must not hold up the exit (SQLite
    /// then replays the log at the next start instead).
    async fn close_connections(&self) {
        let audit = self.audit.clone();
        let close = async {
            self.pool.close().await;
            let _ = tokio::task::spawn_blocking(move || audit.close()).await;
        };
        if tokio::time::timeout(Duration::from_secs(2), close)
            .await
            .is_err()
        {
            tracing::debug!("database connections still busy at exit; closing without waiting");
        }
    }

    /// A write transaction that takes the database lock up front (no upgrade deadlocks).
    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'_, sqlx::Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::db)
    }
}

super::sql::shared_sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    context_match = "json_extract(context, '$.\"' || {k} || '\"') = {v}"
);

#[async_trait::async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(
        &self,
        entries: &[AuditEntry],
        chain_key: &ChainKey,
    ) -> StoreResult<Vec<AuditRecord>> {
        // Off the async threads: the append blocks on the disk. The audit writer itself does
        // not come here; it calls the same append directly on its own thread.
        let (audit, entries, chain) = (self.audit.clone(), entries.to_vec(), chain_key.clone());
        tokio::task::spawn_blocking(move || audit.append(&entries, &chain))
            .await
            .map_err(|e| StoreError::Db(format!("audit append stopped: {e}")))?
    }

    fn blocking_append(&self) -> Option<Arc<dyn BlockingAuditAppend>> {
        Some(self.audit.clone())
    }

    async fn query_audit(&self, f: &AuditFilter) -> StoreResult<Vec<AuditRecord>> {
        self.shared_query_audit(f).await
    }

    async fn count_audit(&self) -> StoreResult<i64> {
        self.shared_count_audit().await
    }

    async fn prune_audit(&self, before_ms: i64, chain: &ChainKey) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let keep: Option<(i64, String)> = sqlx::query_as(
            "SELECT seq, prev_hash FROM audit_log WHERE ts_ms >= ? ORDER BY seq ASC LIMIT 1",
        )
        .bind(before_ms)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db)?;
        let (cut, anchor) = match keep {
            Some((seq, prev)) => (seq, Anchor::sealed(chain, seq - 1, prev)),
            None => {
                let last: Option<(i64, String)> =
                    sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(StoreError::db)?;
                match last {
                    Some((seq, hash)) => (seq + 1, Anchor::sealed(chain, seq, hash)),
                    None => return Ok(0),
                }
            }
        };
        let r = sqlx::query("DELETE FROM audit_log WHERE seq < ?")
            .bind(cut)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db)?;
        sqlx::query("INSERT INTO vault_meta (key, value) VALUES ('audit_anchor', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(anchor.to_text())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db)?;
        tx.commit().await.map_err(StoreError::db)?;
        Ok(r.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MetaStore;

    /// A clean exit folds the write-ahead log into the database file (the next start has
    /// nothing to replay), and what was written is there after reopening.
    #[tokio::test]
    async fn close_folds_the_log_and_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        let s = SqliteStore::open(&path).await.unwrap();
        s.put_meta("probe", "kept").await.unwrap();
        let chain = ChainKey::generate(1);
        let e = AuditEntry {
            id: "a1".into(),
            event: "probe".into(),
            ..Default::default()
        };
        s.append_audit(std::slice::from_ref(&e), &chain)
            .await
            .unwrap();
        assert!(
            dir.path().join("vault.db-wal").exists(),
            "WAL mode writes a log"
        );
        s.close().await;
        assert!(
            !dir.path().join("vault.db-wal").exists(),
            "the log was not folded back at close"
        );
        let s = SqliteStore::open(&path).await.unwrap();
        assert_eq!(s.get_meta("probe").await.unwrap().as_deref(), Some("kept"));
        assert_eq!(s.count_audit().await.unwrap(), 1);
    }

    fn probe(i: usize) -> AuditEntry {
        AuditEntry {
            id: format!("a{i}"),
            event: "probe".into(),
            ..Default::default()
        }
    }

    /// Two stores on one file — two stdio servers sharing a data directory — append at the
    /// same time from their audit threads: one chain.
    #[tokio::test]
    async fn two_processes_on_one_file_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        let a = SqliteStore::open(&path).await.unwrap();
        let b = SqliteStore::open(&path).await.unwrap();
        let chain = ChainKey::generate(1);
        std::thread::scope(|scope| {
            for (w, s) in [&a, &b].into_iter().enumerate() {
                let append = s
                    .blocking_append()
                    .expect("SQLite appends on its own thread");
                let chain = &chain;
                scope.spawn(move || {
                    for i in 0..40 {
                        let batch = [probe(w * 1000 + i), probe(w * 1000 + 500 + i)];
                        append.append(&batch, chain).unwrap();
                    }
                });
            }
        });
        crate::store::contract::assert_one_chain(&a, &chain, 160).await;
    }

    /// An append after the audit connection was dropped (as after an error, or a close at
    /// exit) opens a fresh one and continues the chain.
    #[tokio::test]
    async fn append_after_the_connection_is_gone_reopens_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("vault.db"))
            .await
            .unwrap();
        let chain = ChainKey::generate(1);
        let first = s.append_audit(&[probe(1)], &chain).await.unwrap();
        s.audit.close();
        let second = s.append_audit(&[probe(2)], &chain).await.unwrap();
        assert_eq!(second[0].seq, 2);
        assert_eq!(second[0].prev_hash, first[0].hash);
    }
}
