//! The SQLite backend, the embedded default: WAL journal, a small connection pool, versioned
//! migrations (`migrations/sqlite`). The shared SQL comes from `store::sql`; what is SQLite's
//! own is here: opening the file, `BEGIN IMMEDIATE` for writes that read first, and the audit
//! append, which keeps the chain's tail in memory and falls back to a locked re-read when
//! another process (another stdio client on the same data directory) appended meanwhile.

use std::{path::Path, time::Duration};

use sqlx::{
    SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{Anchor, AuditEntry, AuditStore, chain_records};
use crate::crypto::ChainKey;

pub struct SqliteStore {
    pool: SqlitePool,
    /// The audit writer's own connection and the chain tail it last wrote; see [`AuditConn`].
    audit: tokio::sync::Mutex<AuditConn>,
    location: String,
}

/// One connection with `synchronous = FULL`, used only for audit appends: its commits reach the
/// disk before tool results return, without slowing every other write. Held directly rather
/// than in a pool because a pooled connection costs two extra round trips to sqlx's worker
/// thread per use (a ping on acquire, another on release), which measured as much as the
/// append itself.
struct AuditConn {
    /// `None` after an error that may have broken it: the next append opens a fresh one.
    conn: Option<sqlx::SqliteConnection>,
    opts: SqliteConnectOptions,
    /// (seq, hash) of the newest audit record this process wrote, if known.
    tail: Option<(i64, String)>,
}

impl AuditConn {
    async fn conn(&mut self) -> StoreResult<&mut sqlx::SqliteConnection> {
        use sqlx::Connection;
        if self.conn.is_none() {
            let c = sqlx::SqliteConnection::connect_with(&self.opts)
                .await
                .map_err(StoreError::db)?;
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("just opened"))
    }
}

impl SqliteStore {
    /// Open (creating if missing) the database file and apply pending migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with(path, true).await
    }

    /// `audit_fsync`: audit commits wait for the disk (survive power loss) when true; when false
    /// they survive a crash of the process but not of the machine (SQLite WAL, synchronous=NORMAL).
    ///
    /// Start-up opens one connection: it switches the file to WAL, applies migrations and stays
    /// as the audit connection. The pool for everything else connects on first use, so a stdio
    /// server answers `initialize` without waiting for it.
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
        let audit_opts = opts.clone().synchronous(if audit_fsync {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        });
        // Switch to WAL on this first connection, before any pool exists: the journal mode is
        // stored in the file, and switching it needs the database to itself (concurrent
        // connections racing to switch it fail with "database is locked").
        let mut first = sqlx::SqliteConnection::connect_with(
            &audit_opts.clone().journal_mode(SqliteJournalMode::Wal),
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
            audit: tokio::sync::Mutex::new(AuditConn {
                conn: Some(first),
                opts: audit_opts,
                tail: None,
            }),
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
        let close = async {
            self.pool.close().await;
            if let Some(c) = self.audit.lock().await.conn.take() {
                let _ = sqlx::Connection::close(c).await;
            }
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
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut audit = self.audit.lock().await;
        let result = Self::append_on(&mut audit, entries, chain_key).await;
        if result.is_err() {
            // The connection may be the problem (a failed disk, a worker that died): start the
            // next append on a fresh one rather than failing every call from now on.
            audit.conn = None;
            audit.tail = None;
        }
        result
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
        self.audit.lock().await.tail = None;
        Ok(r.rows_affected())
    }
}

impl SqliteStore {
    /// Fast path: we know the chain's tail from our last append, so the whole batch is one
    /// multi-row INSERT in autocommit (one statement, one commit). If another process appended
    /// meanwhile, our explicit `seq` collides with its row, nothing is written, and the slow
    /// path re-reads the tail inside a write transaction.
    async fn append_on(
        audit: &mut AuditConn,
        entries: &[AuditEntry],
        chain_key: &ChainKey,
    ) -> StoreResult<Vec<AuditRecord>> {
        let cached = audit.tail.take();
        let conn = audit.conn().await?;
        if let Some(tail) = cached {
            let records = chain_records(chain_key, tail, entries);
            match Self::insert_records(&records)
                .build()
                .execute(&mut *conn)
                .await
            {
                Ok(_) => {
                    let last = records.last().expect("non-empty");
                    audit.tail = Some((last.seq, last.hash.clone()));
                    return Ok(records);
                }
                Err(e) if is_constraint(&e) => {}
                Err(e) => return Err(StoreError::db(e)),
            }
        }
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::db)?;
        let last: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::db)?;
        let tail = match last {
            Some(l) => l,
            None => {
                let anchor: Option<String> =
                    sqlx::query_scalar("SELECT value FROM vault_meta WHERE key = 'audit_anchor'")
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(StoreError::db)?;
                let a = Anchor::parse(anchor.as_deref());
                (a.seq, a.hash)
            }
        };
        let records = chain_records(chain_key, tail, entries);
        Self::insert_records(&records)
            .build()
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db)?;
        tx.commit().await.map_err(StoreError::db)?;
        let last = records.last().expect("non-empty");
        audit.tail = Some((last.seq, last.hash.clone()));
        Ok(records)
    }
}

fn is_constraint(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation() || d.message().contains("constraint"))
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
}
