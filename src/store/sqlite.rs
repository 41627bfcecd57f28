//! SQLite implementation of [`Store`]: WAL journal, a small connection pool, versioned
//! migrations. Audit appends run in `BEGIN IMMEDIATE` transactions so several processes sharing
//! one database (several stdio clients) still produce one unbroken hash chain.

use std::{path::Path, time::Duration};

use async_trait::async_trait;
use sqlx::{
    Row, SqlitePool,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
    },
};

use super::*;

pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection with `synchronous = FULL`, used only by the audit writer: its commits
    /// reach the disk before tool results return, without slowing every other write.
    audit_pool: SqlitePool,
    /// (seq, hash) of the newest audit record this process wrote, if known.
    audit_tail: std::sync::Mutex<Option<(i64, String)>>,
    location: String,
}

fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Db(e.to_string())
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

fn json_list(s: Option<String>) -> StoreResult<Vec<String>> {
    match s {
        None => Ok(Vec::new()),
        Some(t) => serde_json::from_str(&t).map_err(|e| StoreError::Invalid(e.to_string())),
    }
}

fn grant_from_row(r: &SqliteRow) -> StoreResult<GrantRow> {
    let hosts: Option<String> = r.get("hosts");
    Ok(GrantRow {
        id: r.get("id"),
        principal: r.get("principal"),
        provider: r.get("provider"),
        kind: r.get("kind"),
        account: r.get("account"),
        account_display: r.get("account_display"),
        scopes: split_scopes(r.get::<&str, _>("scopes")),
        status: r.get("status"),
        scope_mismatch: r
            .get::<Option<&str>, _>("scope_mismatch")
            .map(split_scopes)
            .unwrap_or_default(),
        injection: r.get("injection"),
        hosts: match hosts {
            Some(h) => Some(json_list(Some(h))?),
            None => None,
        },
        sealed: Sealed {
            key_id: r.get("key_id"),
            text: r.get("sealed"),
        },
        token_expires_at: r.get("token_expires_at"),
        grant_expires_at: r.get("grant_expires_at"),
        version: r.get("version"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        last_used_at: r.get("last_used_at"),
    })
}

fn session_from_row(r: &SqliteRow) -> StoreResult<ConnectSessionRow> {
    Ok(ConnectSessionRow {
        id: r.get("id"),
        public_id: r.get("public_id"),
        principal: r.get("principal"),
        providers: json_list(r.get("providers"))?,
        scopes: serde_json::from_str(r.get::<&str, _>("scopes"))
            .map_err(|e| StoreError::Invalid(e.to_string()))?,
        repair_grant_id: r.get("repair_grant_id"),
        return_url: r.get("return_url"),
        status: r.get("status"),
        error: r.get("error"),
        result_grants: json_list(r.get("result_grants"))?,
        created_at: r.get("created_at"),
        expires_at: r.get("expires_at"),
        completed_at: r.get("completed_at"),
    })
}

fn attempt_from_row(r: &SqliteRow) -> ConnectAttemptRow {
    ConnectAttemptRow {
        state_hash: r.get("state_hash"),
        session_id: r.get("session_id"),
        provider: r.get("provider"),
        scopes: split_scopes(r.get::<&str, _>("scopes")),
        redirect_uri: r.get("redirect_uri"),
        sealed: Sealed {
            key_id: r.get("key_id"),
            text: r.get("sealed"),
        },
        created_at: r.get("created_at"),
        expires_at: r.get("expires_at"),
        used_at: r.get("used_at"),
    }
}

fn oauth_request_from_row(r: &SqliteRow) -> OAuthRequestRow {
    OAuthRequestRow {
        id: r.get("id"),
        client_id: r.get("client_id"),
        redirect_uri: r.get("redirect_uri"),
        state: r.get("state"),
        scope: r.get("scope"),
        resource: r.get("resource"),
        code_challenge: r.get("code_challenge"),
        created_at: r.get("created_at"),
        expires_at: r.get("expires_at"),
    }
}

fn oauth_code_from_row(r: &SqliteRow) -> OAuthCodeRow {
    OAuthCodeRow {
        code_hash: r.get("code_hash"),
        client_id: r.get("client_id"),
        redirect_uri: r.get("redirect_uri"),
        code_challenge: r.get("code_challenge"),
        principal: r.get("principal"),
        principal_display: r.get("principal_display"),
        scope: r.get("scope"),
        resource: r.get("resource"),
        created_at: r.get("created_at"),
        expires_at: r.get("expires_at"),
        used_at: r.get("used_at"),
    }
}

fn approval_from_row(r: &SqliteRow) -> ApprovalRow {
    ApprovalRow {
        id: r.get("id"),
        token_hash: r.get("token_hash"),
        principal: r.get("principal"),
        grant_id: r.get("grant_id"),
        provider: r.get("provider"),
        method: r.get("method"),
        host: r.get("host"),
        path: r.get("path"),
        reason: r.get("reason"),
        rule: r.get("rule"),
        status: r.get("status"),
        created_at: r.get("created_at"),
        expires_at: r.get("expires_at"),
        decided_at: r.get("decided_at"),
        decided_by: r.get("decided_by"),
    }
}

fn audit_from_row(r: &SqliteRow) -> AuditRecord {
    AuditRecord {
        seq: r.get("seq"),
        entry: AuditEntry {
            id: r.get("id"),
            ts_ms: r.get("ts_ms"),
            event: r.get("event"),
            principal: r.get("principal"),
            agent: r.get("agent"),
            client: r.get("client"),
            tool: r.get("tool"),
            grant_id: r.get("grant_id"),
            provider: r.get("provider"),
            method: r.get("method"),
            host: r.get("host"),
            path: r.get("path"),
            status: r.get("status"),
            latency_ms: r.get("latency_ms"),
            outcome: r.get("outcome"),
            decision: r.get("decision"),
            reason: r.get("reason"),
            detail: r.get("detail"),
        },
        prev_hash: r.get("prev_hash"),
        hash: r.get("hash"),
    }
}

const GRANT_COLS: &str = "id, principal, provider, kind, account, account_display, scopes, status, \
    scope_mismatch, injection, hosts, key_id, sealed, token_expires_at, grant_expires_at, version, \
    created_at, updated_at, last_used_at";

#[async_trait]
impl Store for SqliteStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT value FROM vault_meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn insert_meta_if_absent(&self, key: &str, value: &str) -> StoreResult<bool> {
        let r = sqlx::query(
            "INSERT INTO vault_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn put_meta(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO vault_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn insert_grant(&self, g: &GrantRow) -> StoreResult<()> {
        let hosts = g
            .hosts
            .as_ref()
            .map(|h| serde_json::to_string(h).expect("hosts serialize"));
        sqlx::query(&format!(
            "INSERT INTO grants ({GRANT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
        ))
        .bind(&g.id)
        .bind(&g.principal)
        .bind(&g.provider)
        .bind(&g.kind)
        .bind(&g.account)
        .bind(&g.account_display)
        .bind(g.scopes.join(" "))
        .bind(&g.status)
        .bind((!g.scope_mismatch.is_empty()).then(|| g.scope_mismatch.join(" ")))
        .bind(&g.injection)
        .bind(hosts)
        .bind(&g.sealed.key_id)
        .bind(&g.sealed.text)
        .bind(g.token_expires_at)
        .bind(g.grant_expires_at)
        .bind(g.version)
        .bind(g.created_at)
        .bind(g.updated_at)
        .bind(g.last_used_at)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn get_grant(&self, id: &str) -> StoreResult<Option<GrantRow>> {
        let row = sqlx::query(&format!("SELECT {GRANT_COLS} FROM grants WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(grant_from_row).transpose()
    }

    async fn list_grants(
        &self,
        principal: Option<&str>,
        provider: Option<&str>,
    ) -> StoreResult<Vec<GrantRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {GRANT_COLS} FROM grants WHERE (?1 IS NULL OR principal = ?1) \
             AND (?2 IS NULL OR provider = ?2) ORDER BY provider, account, created_at"
        ))
        .bind(principal)
        .bind(provider)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(grant_from_row).collect()
    }

    async fn find_grant_by_account(
        &self,
        principal: &str,
        provider: &str,
        account: &str,
    ) -> StoreResult<Option<GrantRow>> {
        let row = sqlx::query(&format!(
            "SELECT {GRANT_COLS} FROM grants WHERE principal = ? AND provider = ? AND account = ?"
        ))
        .bind(principal)
        .bind(provider)
        .bind(account)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.as_ref().map(grant_from_row).transpose()
    }

    async fn update_grant_credential(
        &self,
        id: &str,
        expected_version: i64,
        u: &CredentialUpdate,
    ) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE grants SET key_id = ?, sealed = ?, scopes = ?, token_expires_at = ?, \
             account_display = COALESCE(?, account_display), updated_at = ?, version = version + 1 \
             WHERE id = ? AND version = ?",
        )
        .bind(&u.sealed.key_id)
        .bind(&u.sealed.text)
        .bind(u.scopes.join(" "))
        .bind(u.token_expires_at)
        .bind(&u.account_display)
        .bind(u.now)
        .bind(id)
        .bind(expected_version)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn reauthorize_grant(&self, id: &str, u: &CredentialUpdate) -> StoreResult<()> {
        sqlx::query(
            "UPDATE grants SET key_id = ?, sealed = ?, scopes = ?, token_expires_at = ?, \
             account_display = COALESCE(?, account_display), updated_at = ?, version = version + 1, \
             status = 'active', scope_mismatch = NULL WHERE id = ?",
        )
        .bind(&u.sealed.key_id)
        .bind(&u.sealed.text)
        .bind(u.scopes.join(" "))
        .bind(u.token_expires_at)
        .bind(&u.account_display)
        .bind(u.now)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn set_grant_status(&self, id: &str, status: &str, now: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE grants SET status = ?, updated_at = ?, version = version + 1 WHERE id = ?",
        )
        .bind(status)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn set_scope_mismatch(&self, id: &str, missing: &[String], now: i64) -> StoreResult<()> {
        sqlx::query("UPDATE grants SET scope_mismatch = ?, updated_at = ? WHERE id = ?")
            .bind((!missing.is_empty()).then(|| missing.join(" ")))
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn touch_grant(&self, id: &str, now: i64) -> StoreResult<()> {
        // Coarse on purpose: one write per grant per minute at most keeps the hot path cheap.
        sqlx::query(
            "UPDATE grants SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ? - 60)",
        )
        .bind(now)
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn delete_grant(&self, id: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM grants WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn acquire_refresh_lease(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE grants SET refresh_lease_owner = ?, refresh_lease_until = ? WHERE id = ? \
             AND (refresh_lease_until IS NULL OR refresh_lease_until < ? OR refresh_lease_owner = ?)",
        )
        .bind(owner)
        .bind(until)
        .bind(id)
        .bind(now)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn release_refresh_lease(&self, id: &str, owner: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE grants SET refresh_lease_owner = NULL, refresh_lease_until = NULL WHERE id = ? AND refresh_lease_owner = ?",
        )
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn list_sealed(&self) -> StoreResult<Vec<SealedRef>> {
        let mut out = Vec::new();
        for (table, sql) in [
            (SealedTable::Grants, "SELECT id, key_id, sealed FROM grants"),
            (
                SealedTable::ConnectAttempts,
                "SELECT state_hash AS id, key_id, sealed FROM connect_attempts",
            ),
        ] {
            for r in sqlx::query(sql)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?
            {
                out.push(SealedRef {
                    table,
                    id: r.get("id"),
                    sealed: Sealed {
                        key_id: r.get("key_id"),
                        text: r.get("sealed"),
                    },
                });
            }
        }
        for meta in SEALED_META {
            if let Some(text) = self.get_meta(meta).await? {
                let key_id = text.split('.').nth(1).unwrap_or_default().to_owned();
                out.push(SealedRef {
                    table: SealedTable::Meta,
                    id: (*meta).into(),
                    sealed: Sealed { key_id, text },
                });
            }
        }
        Ok(out)
    }

    async fn replace_sealed(&self, items: &[SealedRef]) -> StoreResult<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        for it in items {
            let q = match it.table {
                SealedTable::Grants => sqlx::query(
                    "UPDATE grants SET key_id = ?, sealed = ?, version = version + 1 WHERE id = ?",
                )
                .bind(&it.sealed.key_id)
                .bind(&it.sealed.text)
                .bind(&it.id),
                SealedTable::ConnectAttempts => sqlx::query(
                    "UPDATE connect_attempts SET key_id = ?, sealed = ? WHERE state_hash = ?",
                )
                .bind(&it.sealed.key_id)
                .bind(&it.sealed.text)
                .bind(&it.id),
                SealedTable::Meta => sqlx::query("UPDATE vault_meta SET value = ? WHERE key = ?")
                    .bind(&it.sealed.text)
                    .bind(&it.id),
            };
            q.execute(&mut *tx).await.map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn insert_connect_session(&self, s: &ConnectSessionRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO connect_sessions (id, public_id, principal, providers, scopes, repair_grant_id, \
             return_url, status, error, result_grants, created_at, expires_at, completed_at) \
             VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        )
        .bind(&s.id)
        .bind(&s.public_id)
        .bind(&s.principal)
        .bind(serde_json::to_string(&s.providers).expect("serialize"))
        .bind(serde_json::to_string(&s.scopes).expect("serialize"))
        .bind(&s.repair_grant_id)
        .bind(&s.return_url)
        .bind(&s.status)
        .bind(&s.error)
        .bind(serde_json::to_string(&s.result_grants).expect("serialize"))
        .bind(s.created_at)
        .bind(s.expires_at)
        .bind(s.completed_at)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn get_connect_session(&self, id: &str) -> StoreResult<Option<ConnectSessionRow>> {
        let row = sqlx::query("SELECT * FROM connect_sessions WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn get_connect_session_by_public_id(
        &self,
        public_id: &str,
    ) -> StoreResult<Option<ConnectSessionRow>> {
        let row = sqlx::query("SELECT * FROM connect_sessions WHERE public_id = ?")
            .bind(public_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn finish_connect_session(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
        result_grants: &[String],
        now: i64,
    ) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE connect_sessions SET status = ?, error = ?, result_grants = ?, completed_at = ? \
             WHERE id = ? AND status = 'pending'",
        )
        .bind(status)
        .bind(error)
        .bind(serde_json::to_string(result_grants).expect("serialize"))
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn update_connect_results(
        &self,
        id: &str,
        result_grants: &[String],
    ) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE connect_sessions SET result_grants = ? WHERE id = ? AND status = 'pending'",
        )
        .bind(serde_json::to_string(result_grants).expect("serialize"))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn insert_connect_attempt(&self, a: &ConnectAttemptRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO connect_attempts (state_hash, session_id, provider, scopes, redirect_uri, key_id, \
             sealed, created_at, expires_at, used_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        )
        .bind(&a.state_hash)
        .bind(&a.session_id)
        .bind(&a.provider)
        .bind(a.scopes.join(" "))
        .bind(&a.redirect_uri)
        .bind(&a.sealed.key_id)
        .bind(&a.sealed.text)
        .bind(a.created_at)
        .bind(a.expires_at)
        .bind(a.used_at)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn take_connect_attempt(
        &self,
        state_hash: &str,
        now: i64,
    ) -> StoreResult<Option<ConnectAttemptRow>> {
        let row = sqlx::query(
            "UPDATE connect_attempts SET used_at = ? WHERE state_hash = ? AND used_at IS NULL RETURNING *",
        )
        .bind(now)
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(row.as_ref().map(attempt_from_row))
    }

    async fn purge_connect(&self, before: i64) -> StoreResult<u64> {
        let a = sqlx::query("DELETE FROM connect_attempts WHERE expires_at < ?")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        let s = sqlx::query("DELETE FROM connect_sessions WHERE expires_at < ?")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(a.rows_affected() + s.rows_affected())
    }

    async fn insert_oauth_client(&self, c: &OAuthClientRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO oauth_clients (client_id, secret_hash, client_name, redirect_uris, metadata, created_at) VALUES (?,?,?,?,?,?)",
        )
        .bind(&c.client_id)
        .bind(&c.secret_hash)
        .bind(&c.client_name)
        .bind(serde_json::to_string(&c.redirect_uris).expect("serialize"))
        .bind(&c.metadata)
        .bind(c.created_at)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn get_oauth_client(&self, client_id: &str) -> StoreResult<Option<OAuthClientRow>> {
        let row = sqlx::query("SELECT * FROM oauth_clients WHERE client_id = ?")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(|r| {
            Ok(OAuthClientRow {
                client_id: r.get("client_id"),
                secret_hash: r.get("secret_hash"),
                client_name: r.get("client_name"),
                redirect_uris: json_list(r.get("redirect_uris"))?,
                metadata: r.get("metadata"),
                created_at: r.get("created_at"),
            })
        })
        .transpose()
    }

    async fn count_oauth_clients(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM oauth_clients")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn insert_oauth_request(&self, r: &OAuthRequestRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO oauth_requests (id, client_id, redirect_uri, state, scope, resource, code_challenge, created_at, expires_at) \
             VALUES (?,?,?,?,?,?,?,?,?)",
        )
        .bind(&r.id)
        .bind(&r.client_id)
        .bind(&r.redirect_uri)
        .bind(&r.state)
        .bind(&r.scope)
        .bind(&r.resource)
        .bind(&r.code_challenge)
        .bind(r.created_at)
        .bind(r.expires_at)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn take_oauth_request(&self, id: &str) -> StoreResult<Option<OAuthRequestRow>> {
        let row = sqlx::query("DELETE FROM oauth_requests WHERE id = ? RETURNING *")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row.as_ref().map(oauth_request_from_row))
    }

    async fn get_oauth_request(&self, id: &str) -> StoreResult<Option<OAuthRequestRow>> {
        let row = sqlx::query("SELECT * FROM oauth_requests WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row.as_ref().map(oauth_request_from_row))
    }

    async fn insert_oauth_code(&self, c: &OAuthCodeRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO oauth_codes (code_hash, client_id, redirect_uri, code_challenge, principal, principal_display, \
             scope, resource, created_at, expires_at, used_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        )
        .bind(&c.code_hash)
        .bind(&c.client_id)
        .bind(&c.redirect_uri)
        .bind(&c.code_challenge)
        .bind(&c.principal)
        .bind(&c.principal_display)
        .bind(&c.scope)
        .bind(&c.resource)
        .bind(c.created_at)
        .bind(c.expires_at)
        .bind(c.used_at)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn use_oauth_code(&self, code_hash: &str, now: i64) -> StoreResult<Option<OAuthCodeRow>> {
        let fresh = sqlx::query("UPDATE oauth_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL RETURNING *")
            .bind(now)
            .bind(code_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        if let Some(r) = fresh {
            let mut c = oauth_code_from_row(&r);
            c.used_at = None;
            return Ok(Some(c));
        }
        let old = sqlx::query("SELECT * FROM oauth_codes WHERE code_hash = ?")
            .bind(code_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(old.as_ref().map(oauth_code_from_row))
    }

    async fn insert_oauth_token(&self, t: &OAuthTokenRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO oauth_tokens (token_hash, kind, family, client_id, principal, principal_display, scope, resource, \
             created_at, expires_at, revoked_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        )
        .bind(&t.token_hash)
        .bind(&t.kind)
        .bind(&t.family)
        .bind(&t.client_id)
        .bind(&t.principal)
        .bind(&t.principal_display)
        .bind(&t.scope)
        .bind(&t.resource)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.revoked_at)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn get_oauth_token(&self, token_hash: &str) -> StoreResult<Option<OAuthTokenRow>> {
        let row = sqlx::query("SELECT * FROM oauth_tokens WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| OAuthTokenRow {
            token_hash: r.get("token_hash"),
            kind: r.get("kind"),
            family: r.get("family"),
            client_id: r.get("client_id"),
            principal: r.get("principal"),
            principal_display: r.get("principal_display"),
            scope: r.get("scope"),
            resource: r.get("resource"),
            created_at: r.get("created_at"),
            expires_at: r.get("expires_at"),
            revoked_at: r.get("revoked_at"),
        }))
    }

    async fn revoke_oauth_token(&self, token_hash: &str, now: i64) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE oauth_tokens SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(token_hash)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn revoke_oauth_family(&self, family: &str, now: i64) -> StoreResult<u64> {
        let r = sqlx::query(
            "UPDATE oauth_tokens SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(family)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected())
    }

    async fn purge_oauth(&self, now: i64) -> StoreResult<u64> {
        let mut n = 0;
        for sql in [
            "DELETE FROM oauth_requests WHERE expires_at < ?",
            "DELETE FROM oauth_codes WHERE expires_at < ? - 86400",
            "DELETE FROM oauth_tokens WHERE expires_at < ? - 86400",
        ] {
            n += sqlx::query(sql)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(db_err)?
                .rows_affected();
        }
        Ok(n)
    }

    async fn insert_approval(&self, a: &ApprovalRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO approvals (id, token_hash, principal, grant_id, provider, method, host, path, reason, rule, \
             status, created_at, expires_at, decided_at, decided_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        )
        .bind(&a.id)
        .bind(&a.token_hash)
        .bind(&a.principal)
        .bind(&a.grant_id)
        .bind(&a.provider)
        .bind(&a.method)
        .bind(&a.host)
        .bind(&a.path)
        .bind(&a.reason)
        .bind(&a.rule)
        .bind(&a.status)
        .bind(a.created_at)
        .bind(a.expires_at)
        .bind(a.decided_at)
        .bind(&a.decided_by)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn get_approval(&self, id: &str) -> StoreResult<Option<ApprovalRow>> {
        let row = sqlx::query("SELECT * FROM approvals WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row.as_ref().map(approval_from_row))
    }

    async fn get_approval_by_token(&self, token_hash: &str) -> StoreResult<Option<ApprovalRow>> {
        let row = sqlx::query("SELECT * FROM approvals WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row.as_ref().map(approval_from_row))
    }

    async fn list_approvals(
        &self,
        principal: Option<&str>,
        status: Option<&str>,
    ) -> StoreResult<Vec<ApprovalRow>> {
        let rows = sqlx::query(
            "SELECT * FROM approvals WHERE (?1 IS NULL OR principal = ?1) AND (?2 IS NULL OR status = ?2) \
             ORDER BY created_at DESC LIMIT 500",
        )
        .bind(principal)
        .bind(status)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(rows.iter().map(approval_from_row).collect())
    }

    async fn decide_approval(
        &self,
        id: &str,
        status: &str,
        by: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ? WHERE id = ? AND status = 'pending' AND expires_at > ?",
        )
        .bind(status)
        .bind(now)
        .bind(by)
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn consume_approval(
        &self,
        principal: &str,
        grant_id: &str,
        method: &str,
        host: &str,
        path: &str,
        now: i64,
    ) -> StoreResult<Option<ApprovalRow>> {
        let row = sqlx::query(
            "UPDATE approvals SET status = 'used' WHERE id = (SELECT id FROM approvals WHERE principal = ? AND grant_id = ? \
             AND method = ? AND host = ? AND path = ? AND status = 'approved' AND expires_at > ? ORDER BY created_at LIMIT 1) \
             AND status = 'approved' RETURNING *",
        )
        .bind(principal)
        .bind(grant_id)
        .bind(method)
        .bind(host)
        .bind(path)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(row.as_ref().map(approval_from_row))
    }

    async fn append_audit(
        &self,
        entries: &[AuditEntry],
        chain_key: &ChainKey,
    ) -> StoreResult<Vec<AuditRecord>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.audit_pool.acquire().await.map_err(db_err)?;
        // Fast path: we know the chain's tail from our last append, so the whole batch is one
        // multi-row INSERT in autocommit (one statement, one commit). If another process appended
        // meanwhile, our explicit `seq` collides with its row, nothing is written, and the slow
        // path re-reads the tail inside a write transaction.
        let cached = self.audit_tail.lock().expect("audit tail lock").clone();
        if let Some(tail) = cached {
            let (records, mut q) = chain(chain_key, tail, entries);
            match q.build().execute(&mut *conn).await {
                Ok(_) => {
                    let last = records.last().expect("non-empty");
                    *self.audit_tail.lock().expect("audit tail lock") =
                        Some((last.seq, last.hash.clone()));
                    return Ok(records);
                }
                Err(e) if is_constraint(&e) => {}
                Err(e) => return Err(db_err(e)),
            }
        }
        *self.audit_tail.lock().expect("audit tail lock") = None;
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let last: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        let tail = match last {
            Some(l) => l,
            None => {
                let anchor: Option<String> =
                    sqlx::query_scalar("SELECT value FROM vault_meta WHERE key = 'audit_anchor'")
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                let a = Anchor::parse(anchor.as_deref());
                (a.seq, a.hash)
            }
        };
        let (records, mut q) = chain(chain_key, tail, entries);
        q.build().execute(&mut *tx).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        let last = records.last().expect("non-empty");
        *self.audit_tail.lock().expect("audit tail lock") = Some((last.seq, last.hash.clone()));
        Ok(records)
    }

    async fn query_audit(&self, f: &AuditFilter) -> StoreResult<Vec<AuditRecord>> {
        // Only the conditions actually given go into the SQL, so SQLite can use the
        // (principal|provider|grant_id, ts_ms) indexes; `x IS NULL OR` patterns defeat them.
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT * FROM audit_log WHERE 1 = 1");
        if let Some(v) = &f.principal {
            q.push(" AND principal = ").push_bind(v.clone());
        }
        if let Some(v) = &f.provider {
            q.push(" AND provider = ").push_bind(v.clone());
        }
        if let Some(v) = &f.grant_id {
            q.push(" AND grant_id = ").push_bind(v.clone());
        }
        if let Some(v) = &f.outcome {
            q.push(" AND outcome = ").push_bind(v.clone());
        }
        if let Some(v) = f.since_ms {
            q.push(" AND ts_ms >= ").push_bind(v);
        }
        if let Some(v) = f.until_ms {
            q.push(" AND ts_ms < ").push_bind(v);
        }
        if let Some(v) = f.after_seq {
            q.push(" AND seq > ").push_bind(v);
        }
        let dir = if f.newest_first { "DESC" } else { "ASC" };
        // Paging by seq (export, verify, follow) walks the primary key; searches read by time.
        if f.after_seq.is_some() {
            q.push(format!(" ORDER BY seq {dir}"));
        } else {
            q.push(format!(" ORDER BY ts_ms {dir}, seq {dir}"));
        }
        q.push(" LIMIT ").push_bind(f.limit.unwrap_or(-1));
        let rows = q.build().fetch_all(&self.pool).await.map_err(db_err)?;
        Ok(rows.iter().map(audit_from_row).collect())
    }

    async fn count_audit(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn prune_audit(&self, before_ms: i64, chain: &ChainKey) -> StoreResult<u64> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let keep: Option<(i64, String)> = sqlx::query_as(
            "SELECT seq, prev_hash FROM audit_log WHERE ts_ms >= ? ORDER BY seq ASC LIMIT 1",
        )
        .bind(before_ms)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let (cut, anchor) = match keep {
            Some((seq, prev)) => (seq, Anchor::sealed(chain, seq - 1, prev)),
            None => {
                let last: Option<(i64, String)> =
                    sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
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
            .map_err(db_err)?;
        sqlx::query("INSERT INTO vault_meta (key, value) VALUES ('audit_anchor', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(anchor.to_text())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        *self.audit_tail.lock().expect("audit tail lock") = None;
        Ok(r.rows_affected())
    }
}

fn is_constraint(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation() || d.message().contains("constraint"))
}

/// The records that follow `tail` in the chain, and one multi-row INSERT that stores them.
fn chain(
    key: &ChainKey,
    tail: (i64, String),
    entries: &[AuditEntry],
) -> (Vec<AuditRecord>, sqlx::QueryBuilder<'static, sqlx::Sqlite>) {
    let (mut seq, mut prev) = tail;
    let mut records = Vec::with_capacity(entries.len());
    for e in entries {
        seq += 1;
        let hash = audit_hash(key, seq, &prev, e);
        records.push(AuditRecord {
            seq,
            entry: e.clone(),
            prev_hash: std::mem::replace(&mut prev, hash.clone()),
            hash,
        });
    }
    let mut q = sqlx::QueryBuilder::new(
        "INSERT INTO audit_log (seq, id, ts_ms, event, principal, agent, client, tool, grant_id, \
         provider, method, host, path, status, latency_ms, outcome, decision, reason, detail, \
         prev_hash, hash) ",
    );
    q.push_values(records.clone(), |mut b, r| {
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
            .push_bind(r.prev_hash)
            .push_bind(r.hash);
    });
    (records, q)
}
