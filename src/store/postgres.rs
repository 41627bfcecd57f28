//! The PostgreSQL backend, for many vault-mcp instances on one database. The shared SQL comes
//! from `store::sql`; what is PostgreSQL's own is here: the pool (size, statement timeout,
//! TLS through `sslmode` in the URL), migrations (`migrations/postgres`, applied under sqlx's
//! advisory lock, so instances starting together migrate once), and the audit append, which
//! serializes writers on every instance through one locked head row.

use std::time::Duration;

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use super::{Anchor, AuditEntry, AuditStore, chain_records};
use crate::crypto::ChainKey;

/// Pool settings (`[database]` in the config).
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub max_connections: u32,
    /// Longest a statement may run before PostgreSQL cancels it (a clear error, not a hang).
    pub statement_timeout: Duration,
    /// Longest a call waits for a pooled connection (e.g. while the database is down).
    pub acquire_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            statement_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

pub struct PgStore {
    pool: PgPool,
    location: String,
    changes: tokio::sync::broadcast::Sender<super::GrantChange>,
}

impl PgStore {
    /// One multi-row INSERT storing `records`.
    fn insert_records(records: &[AuditRecord]) -> sqlx::QueryBuilder<'static, sqlx::Postgres> {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO audit_log (seq, id, ts_ms, event, principal, agent, client, tool, grant_id, \
             provider, method, host, path, status, latency_ms, outcome, decision, reason, detail, \
             principal_kind, grant_owner, delegation, context, prev_hash, hash) ",
        );
        q.push_values(records.iter().cloned(), |mut b, r| {
            let e = r.entry;
            b.push_bind(r.seq)
                .push_bind(e.id)
                .push_bind(e.ts_ms)
                .push_bind(e.event)
                .push_bind(e.principal)
                .push_bind(e.agent)
                .push_bind(e.client)
                .push_bind(e.tool)
                .push_bind(e.grant_id)
                .push_bind(e.provider)
                .push_bind(e.method)
                .push_bind(e.host)
                .push_bind(e.path)
                .push_bind(e.status)
                .push_bind(e.latency_ms)
                .push_bind(e.outcome)
                .push_bind(e.decision)
                .push_bind(e.reason)
                .push_bind(e.detail)
                .push_bind(e.principal_kind)
                .push_bind(e.grant_owner)
                .push_bind(e.delegation)
                .push_bind(e.context)
                .push_bind(r.prev_hash)
                .push_bind(r.hash);
        });
        q
    }
}

impl PgStore {
    /// Nothing to fold back at exit, and the change listener holds a pooled connection that a
    /// pool close would wait for: the server sees the connections end with the process.
    async fn close_connections(&self) {}

    pub async fn open(url: &str, opts: &PgOptions) -> StoreResult<Self> {
        let location = crate::config::redact_url(url);
        let open_err = |message: String| StoreError::Open {
            location: location.clone(),
            message,
        };
        let connect: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| open_err(format!("not a PostgreSQL URL: {e}")))?;
        let connect = connect.options([(
            "statement_timeout",
            format!("{}ms", opts.statement_timeout.as_millis()),
        )]);
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .min_connections(1)
            .acquire_timeout(opts.acquire_timeout)
            // A connection the server dropped (restart) is found out before use.
            .test_before_acquire(true)
            .connect_with(connect)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| {
                open_err(format!(
                    "{e}; this database may come from a newer vault-mcp version"
                ))
            })?;
        let (changes, _) = tokio::sync::broadcast::channel(1024);
        spawn_listener(pool.clone(), changes.clone());
        Ok(PgStore {
            pool,
            location,
            changes,
        })
    }

    fn change_feed(&self) -> Option<tokio::sync::broadcast::Receiver<super::GrantChange>> {
        Some(self.changes.subscribe())
    }

    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'_, sqlx::Postgres>> {
        self.pool.begin().await.map_err(StoreError::db)
    }
}

super::sql::shared_sql_store!(
    PgStore,
    sqlx::Postgres,
    context_match = "(CAST(context AS jsonb) ->> {k}) = {v}"
);

/// Forward `vault_grants` notifications (see the migration's trigger). When the connection drops,
/// what happened meanwhile is unknown: everyone is told to forget everything.
fn spawn_listener(pool: PgPool, tx: tokio::sync::broadcast::Sender<super::GrantChange>) {
    use super::GrantChange;
    tokio::spawn(async move {
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, "grant change feed: cannot connect; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if listener.listen("vault_grants").await.is_err() {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            // Changes made while we were not listening are unknown.
            let _ = tx.send(GrantChange::All);
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => {
                        let _ = tx.send(GrantChange::Grant(n.payload().to_owned()));
                    }
                    Ok(None) => {
                        // Connection lost; `try_recv` reconnects on the next call.
                        let _ = tx.send(GrantChange::All);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "grant change feed lost; reconnecting");
                        let _ = tx.send(GrantChange::All);
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

#[async_trait::async_trait]
impl AuditStore for PgStore {
    async fn append_audit(
        &self,
        entries: &[AuditEntry],
        chain: &ChainKey,
    ) -> StoreResult<Vec<AuditRecord>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        // The head row lock orders writers across instances: one batch at a time extends the
        // chain, and the commit (one WAL flush) makes the whole batch durable.
        let mut tx = self.begin_write().await?;
        let (seq, hash): (i64, String) =
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::db)?;
        let records = chain_records(chain, (seq, hash), entries);
        Self::insert_records(&records)
            .build()
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db)?;
        let last = records.last().expect("non-empty");
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(last.seq)
            .bind(&last.hash)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db)?;
        tx.commit().await.map_err(StoreError::db)?;
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
        // Hold the head so no append runs while the start of the chain moves.
        let (head_seq, head_hash): (i64, String) =
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::db)?;
        let keep: Option<(i64, String)> = sqlx::query_as(
            "SELECT seq, prev_hash FROM audit_log WHERE ts_ms >= $1 ORDER BY seq ASC LIMIT 1",
        )
        .bind(before_ms)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db)?;
        let (cut, anchor) = match keep {
            Some((seq, prev)) => (seq, Anchor::sealed(chain, seq - 1, prev)),
            None if head_seq == 0 => return Ok(0),
            None => (head_seq + 1, Anchor::sealed(chain, head_seq, head_hash)),
        };
        let r = sqlx::query("DELETE FROM audit_log WHERE seq < $1")
            .bind(cut)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db)?;
        sqlx::query(
            "INSERT INTO vault_meta (key, value) VALUES ('audit_anchor', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(anchor.to_text())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db)?;
        tx.commit().await.map_err(StoreError::db)?;
        Ok(r.rows_affected())
    }
}
