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
    /// One connection with `synchronous = FULL`, used only by the audit writer: its commits
    /// reach the disk before tool results return, without slowing every other write.
    audit_pool: SqlitePool,
    /// (seq, hash) of the newest audit record this process wrote, if known.
    audit_tail: std::sync::Mutex<Option<(i64, String)>>,
    location: String,
}

impl SqliteStore {
    /// Open (creating if missing) the database file and apply pending migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with(path, true).await
    }

    /// `audit_fsync`: audit commits wait for the disk (survive power loss) when true; when false
    /// they survive a crash of the process but not of the machine (SQLite WAL, synchronous=NORMAL).
    pub async fn open_with(path: &Path, audit_fsync: bool) -> StoreResult<Self> {
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
        // Switch to WAL once, on one connection, before any pool exists: the journal mode is
        // stored in the file, and switching it needs the database to itself (concurrent
        // connections racing to switch it fail with "database is locked").
        {
            use sqlx::Connection;
            let boot = sqlx::SqliteConnection::connect_with(
                &opts.clone().journal_mode(SqliteJournalMode::Wal),
            )
            .await
            .map_err(|e| classify_open(e, &location))?;
            let _ = boot.close().await;
        }
        Self::connect(opts, location, audit_fsync).await
    }

    async fn connect(
        opts: SqliteConnectOptions,
        location: String,
        audit_fsync: bool,
    ) -> StoreResult<Self> {
        let audit_opts = opts.clone().synchronous(if audit_fsync {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        });
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await
            .map_err(|e| classify_open(e, &location))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
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
        let audit_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(audit_opts)
            .await
            .map_err(|e| classify_open(e, &location))?;
        Ok(SqliteStore {
            pool,
            audit_pool,
            audit_tail: std::sync::Mutex::new(None),
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
        let mut conn = self.audit_pool.acquire().await.map_err(StoreError::db)?;
        // Fast path: we know the chain's tail from our last append, so the whole batch is one
        // multi-row INSERT in autocommit (one statement, one commit). If another process appended
        // meanwhile, our explicit `seq` collides with its row, nothing is written, and the slow
        // path re-reads the tail inside a write transaction.
        let cached = self.audit_tail.lock().expect("audit tail lock").clone();
        if let Some(tail) = cached {
            let records = chain_records(chain_key, tail, entries);
            match Self::insert_records(&records)
                .build()
                .execute(&mut *conn)
                .await
            {
                Ok(_) => {
                    let last = records.last().expect("non-empty");
                    *self.audit_tail.lock().expect("audit tail lock") =
                        Some((last.seq, last.hash.clone()));
                    return Ok(records);
                }
                Err(e) if is_constraint(&e) => {}
                Err(e) => return Err(StoreError::db(e)),
            }
        }
        *self.audit_tail.lock().expect("audit tail lock") = None;
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
        *self.audit_tail.lock().expect("audit tail lock") = Some((last.seq, last.hash.clone()));
        Ok(records)
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
        *self.audit_tail.lock().expect("audit tail lock") = None;
        Ok(r.rows_affected())
    }
}

fn is_constraint(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation() || d.message().contains("constraint"))
}
