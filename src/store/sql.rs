//! The SQL both backends share, written once. SQLite (through sqlx, which reads `$N` as the
//! N-th argument) and PostgreSQL accept the same text for everything here: `$N` placeholders,
//! `ON CONFLICT`, `RETURNING`, `CAST(… AS TEXT)` for possibly-NULL arguments. The macro stamps
//! the aggregate traits out for a store type with a `pool` field of its database and a
//! `begin_write()` method (SQLite takes the write lock up front with `BEGIN IMMEDIATE`).
//! What differs — opening, migrations, the audit append — lives in each backend's module.

macro_rules! shared_sql_store {
    // `$context_match`: the SQL for "the audit record's context JSON has key ($1) = value ($2)",
    // written with `{k}` / `{v}` where the bind placeholders go (JSON functions differ).
    ($store:ty, $db:ty, context_match = $context_match:expr) => {
        use sqlx::Row as _;

        use $crate::model::{ApprovalStatus, GrantStatus, PrincipalKind, SessionStatus};
        use $crate::store::{
            AgentRow, AgentStore, ApiKeyRow, DelegationRow, HeldCallRow, KeyStore, Lifetime,
            ApprovalRow, ApprovalStore, AuditFilter, AuditRecord, ConnectAttemptRow,
            ConnectSessionRow, ConnectStore, CounterStore, CredentialUpdate, GrantFilter,
            GrantRow, GrantStore, MetaStore, OAuthClientRow, OAuthCodeRow, OAuthRequestRow,
            OAuthServerStore, OAuthTokenRow, SEALED_META, SealedRef, SealedTable, StoreError,
            StoreResult,
        };

        const GRANT_COLS: &str = "id, principal_kind, principal, provider, kind, account, \
            account_display, scopes, status, scope_mismatch, injection, hosts, key_id, sealed, \
            token_expires_at, grant_expires_at, ttl_secs, version, created_at, updated_at, last_used_at";

        const AGENT_COLS: &str = "id, name, description, key_prefix, key_hash, previous_key_prefix, \
            previous_key_hash, previous_key_expires_at, key_id, sealed, jwt_subject, access, \
            idempotency_key, status, created_at, updated_at, last_used_at";

        const KEY_COLS: &str = "id, name, key_prefix, key_hash, previous_key_prefix, previous_key_hash, \
            previous_key_expires_at, scopes, status, created_at, updated_at, expires_at, last_used_at";

        impl $store {
            /// Audit search: only the conditions actually given go into the SQL, so the
            /// (principal|provider|grant_id, ts_ms) indexes serve it.
            async fn shared_query_audit(&self, f: &AuditFilter) -> StoreResult<Vec<AuditRecord>> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM audit_log WHERE 1 = 1");
                if let Some(v) = &f.principal {
                    q.push(" AND principal = ").push_bind(v.clone());
                }
                if let Some(v) = &f.provider {
                    q.push(" AND provider = ").push_bind(v.clone());
                }
                if let Some(v) = &f.grant_id {
                    q.push(" AND grant_id = ").push_bind(v.clone());
                }
                if let Some(v) = f.outcome {
                    q.push(" AND outcome = ").push_bind(v);
                }
                if let Some(v) = f.principal_kind {
                    q.push(" AND principal_kind = ").push_bind(v);
                }
                if let Some(v) = &f.agent {
                    q.push(" AND agent = ").push_bind(v.clone());
                }
                for (k, v) in &f.context {
                    let (before, rest) = $context_match.split_once("{k}").expect("{k}");
                    let (middle, after) = rest.split_once("{v}").expect("{v}");
                    q.push(" AND ")
                        .push(before)
                        .push_bind(k.clone())
                        .push(middle)
                        .push_bind(v.clone())
                        .push(after);
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
                // Paging by seq (export, verify, follow) walks the primary key; searches by time.
                if f.after_seq.is_some() {
                    q.push(format!(" ORDER BY seq {dir}"));
                } else {
                    q.push(format!(" ORDER BY ts_ms {dir}, seq {dir}"));
                }
                if let Some(l) = f.limit {
                    q.push(" LIMIT ").push_bind(l);
                }
                q.build_query_as::<AuditRecord>()
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn shared_count_audit(&self) -> StoreResult<i64> {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_log")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }
        }

        #[async_trait::async_trait]
        impl MetaStore for $store {
            fn location(&self) -> String {
                self.location.clone()
            }

            async fn close(&self) {
                self.close_connections().await
            }

            async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
                sqlx::query_scalar("SELECT value FROM vault_meta WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn put_meta(&self, key: &str, value: &str) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO vault_meta (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(key)
                .bind(value)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn insert_meta_if_absent(&self, key: &str, value: &str) -> StoreResult<bool> {
                let r = sqlx::query(
                    "INSERT INTO vault_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(value)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(r.rows_affected() == 1)
            }

            async fn list_sealed(&self) -> StoreResult<Vec<SealedRef>> {
                let mut out = Vec::new();
                for (table, sql) in [
                    (SealedTable::Grants, "SELECT id, key_id, sealed FROM grants"),
                    (
                        SealedTable::ConnectAttempts,
                        "SELECT state_hash AS id, key_id, sealed FROM connect_attempts",
                    ),
                    (
                        SealedTable::Agents,
                        "SELECT id, key_id, sealed FROM agents WHERE sealed IS NOT NULL",
                    ),
                ] {
                    for r in sqlx::query(sql)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(StoreError::db)?
                    {
                        out.push(SealedRef {
                            table,
                            id: r.try_get("id").map_err(StoreError::db)?,
                            sealed: <$crate::crypto::Sealed as sqlx::FromRow<_>>::from_row(&r)
                                .map_err(StoreError::db)?,
                        });
                    }
                }
                for meta in SEALED_META {
                    if let Some(text) = self.get_meta(meta).await? {
                        let key_id = text.split('.').nth(1).unwrap_or_default().to_owned();
                        out.push(SealedRef {
                            table: SealedTable::Meta,
                            id: (*meta).into(),
                            sealed: $crate::crypto::Sealed { key_id, text },
                        });
                    }
                }
                Ok(out)
            }

            async fn replace_sealed(&self, items: &[SealedRef]) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
                for it in items {
                    let q = match it.table {
                        SealedTable::Grants => sqlx::query(
                            "UPDATE grants SET key_id = $1, sealed = $2, version = version + 1 WHERE id = $3",
                        )
                        .bind(&it.sealed.key_id)
                        .bind(&it.sealed.text)
                        .bind(&it.id),
                        SealedTable::ConnectAttempts => sqlx::query(
                            "UPDATE connect_attempts SET key_id = $1, sealed = $2 WHERE state_hash = $3",
                        )
                        .bind(&it.sealed.key_id)
                        .bind(&it.sealed.text)
                        .bind(&it.id),
                        SealedTable::Agents => sqlx::query(
                            "UPDATE agents SET key_id = $1, sealed = $2 WHERE id = $3",
                        )
                        .bind(&it.sealed.key_id)
                        .bind(&it.sealed.text)
                        .bind(&it.id),
                        SealedTable::Meta => sqlx::query("UPDATE vault_meta SET value = $1 WHERE key = $2")
                            .bind(&it.sealed.text)
                            .bind(&it.id),
                    };
                    q.execute(&mut *tx).await.map_err(StoreError::db)?;
                }
                tx.commit().await.map_err(StoreError::db)
            }
        }

        #[async_trait::async_trait]
        impl GrantStore for $store {
            async fn insert_grant(&self, g: &GrantRow) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO grants ({GRANT_COLS}, sdk_id) VALUES \
                     ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22)"
                ))
                .bind(&g.id)
                .bind(g.principal_kind)
                .bind(&g.principal)
                .bind(&g.provider)
                .bind(g.kind)
                .bind(&g.account)
                .bind(&g.account_display)
                .bind(&g.scopes)
                .bind(g.status)
                .bind(g.scope_mismatch.as_ref().filter(|s| !s.is_empty()))
                .bind(&g.injection)
                .bind(g.hosts.as_ref().map(sqlx::types::Json))
                .bind(&g.sealed.key_id)
                .bind(&g.sealed.text)
                .bind(g.token_expires_at)
                .bind(g.grant_expires_at)
                .bind(g.ttl_secs)
                .bind(g.version)
                .bind(g.created_at)
                .bind(g.updated_at)
                .bind(g.last_used_at)
                .bind($crate::model::sdk_uuid(&g.id))
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn get_grant(&self, id: &str) -> StoreResult<Option<GrantRow>> {
                sqlx::query_as(&format!("SELECT {GRANT_COLS} FROM grants WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn list_grants(&self, f: &GrantFilter<'_>) -> StoreResult<Vec<GrantRow>> {
                let mut q = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {GRANT_COLS} FROM grants WHERE 1 = 1"
                ));
                if !f.owners.is_empty() || !f.ids.is_empty() {
                    q.push(" AND (");
                    let mut sep = "";
                    for (kind, id) in f.owners {
                        q.push(sep)
                            .push("(principal_kind = ")
                            .push_bind(*kind)
                            .push(" AND principal = ")
                            .push_bind(id.clone())
                            .push(")");
                        sep = " OR ";
                    }
                    if !f.ids.is_empty() {
                        q.push(sep).push("id IN (");
                        let mut list = q.separated(", ");
                        for id in f.ids {
                            list.push_bind(id.clone());
                        }
                        list.push_unseparated(")");
                    }
                    q.push(")");
                }
                if let Some(p) = f.provider {
                    q.push(" AND provider = ").push_bind(p.to_owned());
                }
                q.push(" ORDER BY provider, account, created_at");
                q.build_query_as::<GrantRow>()
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn find_grant_by_account(
                &self,
                owner: (PrincipalKind, &str),
                provider: &str,
                account: &str,
            ) -> StoreResult<Option<GrantRow>> {
                sqlx::query_as(&format!(
                    "SELECT {GRANT_COLS} FROM grants WHERE principal_kind = $1 AND principal = $2 \
                     AND provider = $3 AND account = $4"
                ))
                .bind(owner.0)
                .bind(owner.1)
                .bind(provider)
                .bind(account)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db)
            }

            async fn update_grant_credential(
                &self,
                id: &str,
                expected_version: i64,
                u: &CredentialUpdate,
            ) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE grants SET key_id = $1, sealed = $2, scopes = $3, token_expires_at = $4, \
                     account_display = COALESCE($5, account_display), updated_at = $6, version = version + 1 \
                     WHERE id = $7 AND version = $8",
                )
                .bind(&u.sealed.key_id)
                .bind(&u.sealed.text)
                .bind(&u.scopes)
                .bind(u.token_expires_at)
                .bind(&u.account_display)
                .bind(u.now)
                .bind(id)
                .bind(expected_version)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(r.rows_affected() == 1)
            }

            async fn reauthorize_grant(
                &self,
                id: &str,
                u: &CredentialUpdate,
                life: Lifetime,
            ) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE grants SET key_id = $1, sealed = $2, scopes = $3, token_expires_at = $4, \
                     account_display = COALESCE($5, account_display), updated_at = $6, version = version + 1, \
                     status = 'active', scope_mismatch = NULL, ttl_secs = $8, grant_expires_at = $9 \
                     WHERE id = $7",
                )
                .bind(&u.sealed.key_id)
                .bind(&u.sealed.text)
                .bind(&u.scopes)
                .bind(u.token_expires_at)
                .bind(&u.account_display)
                .bind(u.now)
                .bind(id)
                .bind(life.ttl_secs)
                .bind(life.expires_at)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn set_grant_status(
                &self,
                id: &str,
                status: GrantStatus,
                now: i64,
            ) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE grants SET status = $1, updated_at = $2, version = version + 1 WHERE id = $3",
                )
                .bind(status)
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn set_scope_mismatch(
                &self,
                id: &str,
                missing: &[String],
                now: i64,
            ) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE grants SET scope_mismatch = $1, updated_at = $2, version = version + 1 WHERE id = $3",
                )
                .bind((!missing.is_empty()).then(|| missing.join(" ")))
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn touch_grant(&self, id: &str, now: i64) -> StoreResult<()> {
                // Coarse on purpose: one write per grant per minute at most keeps the hot path
                // cheap. Not a version change: nothing a cache holds is affected.
                sqlx::query(
                    "UPDATE grants SET last_used_at = $1 WHERE id = $2 \
                     AND (last_used_at IS NULL OR last_used_at < $1 - 60)",
                )
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn delete_grant(&self, id: &str) -> StoreResult<bool> {
                let r = sqlx::query("DELETE FROM grants WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::db)?;
                Ok(r.rows_affected() == 1)
            }

            fn changes(
                &self,
            ) -> Option<tokio::sync::broadcast::Receiver<$crate::store::GrantChange>> {
                self.change_feed()
            }

            async fn get_grant_by_sdk_id(&self, sdk_id: &str) -> StoreResult<Option<GrantRow>> {
                sqlx::query_as(&format!("SELECT {GRANT_COLS} FROM grants WHERE sdk_id = $1"))
                    .bind(sdk_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn backfill_sdk_ids(&self) -> StoreResult<u64> {
                let mut n = 0;
                for table in ["grants", "agents"] {
                    let ids: Vec<String> =
                        sqlx::query_scalar(&format!("SELECT id FROM {table} WHERE sdk_id IS NULL"))
                            .fetch_all(&self.pool)
                            .await
                            .map_err(StoreError::db)?;
                    for id in ids {
                        n += sqlx::query(&format!(
                            "UPDATE {table} SET sdk_id = $1 WHERE id = $2 AND sdk_id IS NULL"
                        ))
                        .bind($crate::model::sdk_uuid(&id))
                        .bind(&id)
                        .execute(&self.pool)
                        .await
                        .map_err(StoreError::db)?
                        .rows_affected();
                    }
                }
                Ok(n)
            }

            async fn grant_version(&self, id: &str) -> StoreResult<Option<i64>> {
                sqlx::query_scalar("SELECT version FROM grants WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }
        }

        #[async_trait::async_trait]
        impl CounterStore for $store {
            async fn acquire_refresh_lease(
                &self,
                id: &str,
                owner: &str,
                now: i64,
                until: i64,
            ) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE grants SET refresh_lease_owner = $1, refresh_lease_until = $2 WHERE id = $3 \
                     AND (refresh_lease_until IS NULL OR refresh_lease_until < $4 OR refresh_lease_owner = $1)",
                )
                .bind(owner)
                .bind(until)
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(r.rows_affected() == 1)
            }

            async fn release_refresh_lease(&self, id: &str, owner: &str) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE grants SET refresh_lease_owner = NULL, refresh_lease_until = NULL \
                     WHERE id = $1 AND refresh_lease_owner = $2",
                )
                .bind(id)
                .bind(owner)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn take_slot(
                &self,
                key: &str,
                window_start: i64,
                limit: i64,
                expires_at: i64,
            ) -> StoreResult<Option<i64>> {
                // One statement: the increment and the limit check are atomic on both engines.
                sqlx::query_scalar(
                    "INSERT INTO counters (key, window_start, count, expires_at) VALUES ($1, $2, 1, $4) \
                     ON CONFLICT (key, window_start) DO UPDATE SET count = counters.count + 1 \
                     WHERE counters.count < $3 RETURNING count",
                )
                .bind(key)
                .bind(window_start)
                .bind(limit)
                .bind(expires_at)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db)
            }

            async fn purge_counters(&self, now: i64) -> StoreResult<u64> {
                Ok(sqlx::query("DELETE FROM counters WHERE expires_at < $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::db)?
                    .rows_affected())
            }
        }

        #[async_trait::async_trait]
        impl ConnectStore for $store {
            async fn insert_connect_session(&self, s: &ConnectSessionRow) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO connect_sessions (id, public_id, principal, providers, scopes, \
                     repair_grant_id, return_url, status, error, result_grants, created_at, expires_at, \
                     completed_at, delegate_agent, grant_ttl_secs, account_label) \
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)",
                )
                .bind(&s.id)
                .bind(&s.public_id)
                .bind(&s.principal)
                .bind(sqlx::types::Json(&s.providers))
                .bind(sqlx::types::Json(&s.scopes))
                .bind(&s.repair_grant_id)
                .bind(&s.return_url)
                .bind(s.status)
                .bind(&s.error)
                .bind(sqlx::types::Json(&s.result_grants))
                .bind(s.created_at)
                .bind(s.expires_at)
                .bind(s.completed_at)
                .bind(&s.delegate_agent)
                .bind(s.grant_ttl_secs)
                .bind(&s.account_label)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn get_connect_session(&self, id: &str) -> StoreResult<Option<ConnectSessionRow>> {
                sqlx::query_as("SELECT * FROM connect_sessions WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn get_connect_session_by_public_id(
                &self,
                public_id: &str,
            ) -> StoreResult<Option<ConnectSessionRow>> {
                sqlx::query_as("SELECT * FROM connect_sessions WHERE public_id = $1")
                    .bind(public_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn finish_connect_session(
                &self,
                id: &str,
                status: SessionStatus,
                error: Option<&str>,
                result_grants: &[String],
                now: i64,
            ) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE connect_sessions SET status = $1, error = $2, result_grants = $3, completed_at = $4 \
                     WHERE id = $5 AND status = 'pending'",
                )
                .bind(status)
                .bind(error)
                .bind(sqlx::types::Json(result_grants))
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(r.rows_affected() == 1)
            }

            async fn update_connect_results(
                &self,
                id: &str,
                result_grants: &[String],
            ) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE connect_sessions SET result_grants = $1 WHERE id = $2 AND status = 'pending'",
                )
                .bind(sqlx::types::Json(result_grants))
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(r.rows_affected() == 1)
            }

            async fn insert_connect_attempt(&self, a: &ConnectAttemptRow) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO connect_attempts (state_hash, session_id, provider, scopes, redirect_uri, \
                     key_id, sealed, created_at, expires_at, used_at, delegate_agent) \
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                )
                .bind(&a.state_hash)
                .bind(&a.session_id)
                .bind(&a.provider)
                .bind(&a.scopes)
                .bind(&a.redirect_uri)
                .bind(&a.sealed.key_id)
                .bind(&a.sealed.text)
                .bind(a.created_at)
                .bind(a.expires_at)
                .bind(a.used_at)
                .bind(&a.delegate_agent)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn take_connect_attempt(
                &self,
                state_hash: &str,
                now: i64,
            ) -> StoreResult<Option<ConnectAttemptRow>> {
                sqlx::query_as(
                    "UPDATE connect_attempts SET used_at = $1 WHERE state_hash = $2 AND used_at IS NULL RETURNING *",
                )
                .bind(now)
                .bind(state_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db)
            }

            async fn purge_connect(&self, before: i64) -> StoreResult<u64> {
                let a = sqlx::query("DELETE FROM connect_attempts WHERE expires_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::db)?;
                let s = sqlx::query("DELETE FROM connect_sessions WHERE expires_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::db)?;
                Ok(a.rows_affected() + s.rows_affected())
            }
        }

        #[async_trait::async_trait]
        impl OAuthServerStore for $store {
            async fn insert_oauth_client(&self, c: &OAuthClientRow) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO oauth_clients (client_id, secret_hash, client_name, redirect_uris, metadata, \
                     created_at) VALUES ($1,$2,$3,$4,$5,$6)",
                )
                .bind(&c.client_id)
                .bind(&c.secret_hash)
                .bind(&c.client_name)
                .bind(sqlx::types::Json(&c.redirect_uris))
                .bind(&c.metadata)
                .bind(c.created_at)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn get_oauth_client(&self, client_id: &str) -> StoreResult<Option<OAuthClientRow>> {
                sqlx::query_as("SELECT * FROM oauth_clients WHERE client_id = $1")
                    .bind(client_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn count_oauth_clients(&self) -> StoreResult<i64> {
                sqlx::query_scalar("SELECT COUNT(*) FROM oauth_clients")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn insert_oauth_request(&self, r: &OAuthRequestRow) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO oauth_requests (id, client_id, redirect_uri, state, scope, resource, \
                     code_challenge, binding, created_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
                )
                .bind(&r.id)
                .bind(&r.client_id)
                .bind(&r.redirect_uri)
                .bind(&r.state)
                .bind(&r.scope)
                .bind(&r.resource)
                .bind(&r.code_challenge)
                .bind(&r.binding)
                .bind(r.created_at)
                .bind(r.expires_at)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn take_oauth_request(&self, id: &str) -> StoreResult<Option<OAuthRequestRow>> {
                sqlx::query_as("DELETE FROM oauth_requests WHERE id = $1 RETURNING *")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn get_oauth_request(&self, id: &str) -> StoreResult<Option<OAuthRequestRow>> {
                sqlx::query_as("SELECT * FROM oauth_requests WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn insert_oauth_code(&self, c: &OAuthCodeRow) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO oauth_codes (code_hash, client_id, redirect_uri, code_challenge, principal, \
                     principal_display, scope, resource, created_at, expires_at, used_at) \
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
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
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn use_oauth_code(
                &self,
                code_hash: &str,
                now: i64,
            ) -> StoreResult<Option<OAuthCodeRow>> {
                let fresh: Option<OAuthCodeRow> = sqlx::query_as(
                    "UPDATE oauth_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL RETURNING *",
                )
                .bind(now)
                .bind(code_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db)?;
                if let Some(mut c) = fresh {
                    c.used_at = None;
                    return Ok(Some(c));
                }
                sqlx::query_as("SELECT * FROM oauth_codes WHERE code_hash = $1")
                    .bind(code_hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn insert_oauth_token(&self, t: &OAuthTokenRow) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO oauth_tokens (token_hash, kind, family, client_id, principal, \
                     principal_display, scope, resource, created_at, expires_at, revoked_at) \
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                )
                .bind(&t.token_hash)
                .bind(t.kind)
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
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn get_oauth_token(&self, token_hash: &str) -> StoreResult<Option<OAuthTokenRow>> {
                sqlx::query_as("SELECT * FROM oauth_tokens WHERE token_hash = $1")
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn revoke_oauth_token(&self, token_hash: &str, now: i64) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE oauth_tokens SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(token_hash)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(r.rows_affected() == 1)
            }

            async fn revoke_oauth_family(&self, family: &str, now: i64) -> StoreResult<u64> {
                let r = sqlx::query(
                    "UPDATE oauth_tokens SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(family)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(r.rows_affected())
            }

            async fn purge_oauth(&self, now: i64) -> StoreResult<u64> {
                let mut n = 0;
                for sql in [
                    "DELETE FROM oauth_requests WHERE expires_at < $1",
                    "DELETE FROM oauth_codes WHERE expires_at < $1 - 86400",
                    "DELETE FROM oauth_tokens WHERE expires_at < $1 - 86400",
                ] {
                    n += sqlx::query(sql)
                        .bind(now)
                        .execute(&self.pool)
                        .await
                        .map_err(StoreError::db)?
                        .rows_affected();
                }
                Ok(n)
            }
        }

        #[async_trait::async_trait]
        impl AgentStore for $store {
            async fn insert_agent(&self, a: &AgentRow) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO agents ({AGENT_COLS}, sdk_id) VALUES \
                     ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18)"
                ))
                .bind(&a.id)
                .bind(&a.name)
                .bind(&a.description)
                .bind(&a.key_prefix)
                .bind(&a.key_hash)
                .bind(&a.previous_key_prefix)
                .bind(&a.previous_key_hash)
                .bind(a.previous_key_expires_at)
                .bind(&a.sealed.key_id)
                .bind(&a.sealed.text)
                .bind(&a.jwt_subject)
                .bind(sqlx::types::Json(&a.access))
                .bind(&a.idempotency_key)
                .bind(a.status)
                .bind(a.created_at)
                .bind(a.updated_at)
                .bind(a.last_used_at)
                .bind($crate::model::sdk_uuid(&a.id))
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn get_agent(&self, id: &str) -> StoreResult<Option<AgentRow>> {
                sqlx::query_as(&format!("SELECT {AGENT_COLS} FROM agents WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn get_agent_by_name(&self, name: &str) -> StoreResult<Option<AgentRow>> {
                sqlx::query_as(&format!("SELECT {AGENT_COLS} FROM agents WHERE name = $1"))
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn get_agent_by_key_prefix(&self, prefix: &str) -> StoreResult<Option<AgentRow>> {
                sqlx::query_as(&format!(
                    "SELECT {AGENT_COLS} FROM agents WHERE key_prefix = $1 OR previous_key_prefix = $1 \
                     ORDER BY (key_prefix = $1) DESC LIMIT 1"
                ))
                .bind(prefix)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db)
            }

            async fn get_agent_by_jwt_subject(&self, subject: &str) -> StoreResult<Option<AgentRow>> {
                sqlx::query_as(&format!("SELECT {AGENT_COLS} FROM agents WHERE jwt_subject = $1"))
                    .bind(subject)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn get_agent_by_idempotency_key(&self, key: &str) -> StoreResult<Option<AgentRow>> {
                sqlx::query_as(&format!(
                    "SELECT {AGENT_COLS} FROM agents WHERE idempotency_key = $1"
                ))
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db)
            }

            async fn list_agents(&self) -> StoreResult<Vec<AgentRow>> {
                sqlx::query_as(&format!("SELECT {AGENT_COLS} FROM agents ORDER BY name"))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn update_agent(&self, a: &AgentRow) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE agents SET name = $1, description = $2, key_prefix = $3, key_hash = $4, \
                     previous_key_prefix = $5, previous_key_hash = $6, previous_key_expires_at = $7, \
                     key_id = $8, sealed = $9, jwt_subject = $10, access = $11, status = $12, \
                     updated_at = $13 WHERE id = $14",
                )
                .bind(&a.name)
                .bind(&a.description)
                .bind(&a.key_prefix)
                .bind(&a.key_hash)
                .bind(&a.previous_key_prefix)
                .bind(&a.previous_key_hash)
                .bind(a.previous_key_expires_at)
                .bind(&a.sealed.key_id)
                .bind(&a.sealed.text)
                .bind(&a.jwt_subject)
                .bind(sqlx::types::Json(&a.access))
                .bind(a.status)
                .bind(a.updated_at)
                .bind(&a.id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(r.rows_affected() == 1)
            }

            async fn delete_agent(&self, id: &str) -> StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                sqlx::query("DELETE FROM delegations WHERE agent_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db)?;
                let r = sqlx::query("DELETE FROM agents WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db)?;
                tx.commit().await.map_err(StoreError::db)?;
                Ok(r.rows_affected() == 1)
            }

            async fn touch_agent(&self, id: &str, now: i64) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE agents SET last_used_at = $1 WHERE id = $2 \
                     AND (last_used_at IS NULL OR last_used_at < $1 - 60)",
                )
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn delegate(&self, d: &DelegationRow) -> StoreResult<bool> {
                let r = sqlx::query(
                    "INSERT INTO delegations (grant_id, agent_id, delegated_by, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (grant_id, agent_id) DO NOTHING",
                )
                .bind(&d.grant_id)
                .bind(&d.agent_id)
                .bind(&d.delegated_by)
                .bind(d.created_at)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(r.rows_affected() == 1)
            }

            async fn undelegate(&self, grant_id: &str, agent_id: &str) -> StoreResult<bool> {
                let r = sqlx::query("DELETE FROM delegations WHERE grant_id = $1 AND agent_id = $2")
                    .bind(grant_id)
                    .bind(agent_id)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::db)?;
                Ok(r.rows_affected() == 1)
            }

            async fn delegations_of_agent(&self, agent_id: &str) -> StoreResult<Vec<DelegationRow>> {
                sqlx::query_as(
                    "SELECT grant_id, agent_id, delegated_by, created_at FROM delegations \
                     WHERE agent_id = $1 ORDER BY created_at",
                )
                .bind(agent_id)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db)
            }

            async fn get_agent_by_sdk_id(&self, sdk_id: &str) -> StoreResult<Option<AgentRow>> {
                sqlx::query_as(&format!("SELECT {AGENT_COLS} FROM agents WHERE sdk_id = $1"))
                    .bind(sdk_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn delegations_of_grant(&self, grant_id: &str) -> StoreResult<Vec<DelegationRow>> {
                sqlx::query_as(
                    "SELECT grant_id, agent_id, delegated_by, created_at FROM delegations \
                     WHERE grant_id = $1 ORDER BY created_at",
                )
                .bind(grant_id)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db)
            }
        }

        #[async_trait::async_trait]
        impl KeyStore for $store {
            async fn insert_api_key(&self, k: &ApiKeyRow) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO api_keys ({KEY_COLS}) VALUES \
                     ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)"
                ))
                .bind(&k.id)
                .bind(&k.name)
                .bind(&k.key_prefix)
                .bind(&k.key_hash)
                .bind(&k.previous_key_prefix)
                .bind(&k.previous_key_hash)
                .bind(k.previous_key_expires_at)
                .bind(sqlx::types::Json(&k.scopes))
                .bind(k.status)
                .bind(k.created_at)
                .bind(k.updated_at)
                .bind(k.expires_at)
                .bind(k.last_used_at)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRow>> {
                sqlx::query_as(&format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn get_api_key_by_prefix(&self, prefix: &str) -> StoreResult<Option<ApiKeyRow>> {
                sqlx::query_as(&format!(
                    "SELECT {KEY_COLS} FROM api_keys WHERE key_prefix = $1 OR previous_key_prefix = $1 \
                     ORDER BY (key_prefix = $1) DESC LIMIT 1"
                ))
                .bind(prefix)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db)
            }

            async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRow>> {
                sqlx::query_as(&format!("SELECT {KEY_COLS} FROM api_keys ORDER BY created_at, name"))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn update_api_key(&self, k: &ApiKeyRow) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE api_keys SET name = $1, key_prefix = $2, key_hash = $3, \
                     previous_key_prefix = $4, previous_key_hash = $5, previous_key_expires_at = $6, \
                     scopes = $7, status = $8, updated_at = $9, expires_at = $10 WHERE id = $11",
                )
                .bind(&k.name)
                .bind(&k.key_prefix)
                .bind(&k.key_hash)
                .bind(&k.previous_key_prefix)
                .bind(&k.previous_key_hash)
                .bind(k.previous_key_expires_at)
                .bind(sqlx::types::Json(&k.scopes))
                .bind(k.status)
                .bind(k.updated_at)
                .bind(k.expires_at)
                .bind(&k.id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(r.rows_affected() == 1)
            }

            async fn touch_api_key(&self, id: &str, now: i64) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 \
                     AND (last_used_at IS NULL OR last_used_at < $1 - 60)",
                )
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl ApprovalStore for $store {
            async fn insert_held_call(&self, h: &HeldCallRow) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO held_calls (approval_id, principal_kind, principal, caller, request, \
                     status, result, error, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
                )
                .bind(&h.approval_id)
                .bind(h.principal_kind)
                .bind(&h.principal)
                .bind(&h.caller)
                .bind(&h.request)
                .bind(h.status)
                .bind(&h.result)
                .bind(&h.error)
                .bind(h.created_at)
                .bind(h.updated_at)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn get_held_call(&self, approval_id: &str) -> StoreResult<Option<HeldCallRow>> {
                sqlx::query_as("SELECT * FROM held_calls WHERE approval_id = $1")
                    .bind(approval_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn claim_held_call(&self, approval_id: &str, now: i64) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE held_calls SET status = 'executing', updated_at = $1 \
                     WHERE approval_id = $2 AND status = 'held'",
                )
                .bind(now)
                .bind(approval_id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(r.rows_affected() == 1)
            }

            async fn finish_held_call(
                &self,
                approval_id: &str,
                status: $crate::model::HeldStatus,
                result: Option<&str>,
                error: Option<&str>,
                now: i64,
            ) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE held_calls SET status = $1, result = $2, error = $3, updated_at = $4 \
                     WHERE approval_id = $5",
                )
                .bind(status)
                .bind(result)
                .bind(error)
                .bind(now)
                .bind(approval_id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn insert_approval(&self, a: &ApprovalRow) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO approvals (id, token_hash, principal, grant_id, provider, method, host, path, \
                     call_hash, body_preview, reason, rule, status, created_at, expires_at, decided_at, \
                     decided_by) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)",
                )
                .bind(&a.id)
                .bind(&a.token_hash)
                .bind(&a.principal)
                .bind(&a.grant_id)
                .bind(&a.provider)
                .bind(&a.method)
                .bind(&a.host)
                .bind(&a.path)
                .bind(&a.call_hash)
                .bind(&a.body_preview)
                .bind(&a.reason)
                .bind(&a.rule)
                .bind(a.status)
                .bind(a.created_at)
                .bind(a.expires_at)
                .bind(a.decided_at)
                .bind(&a.decided_by)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(())
            }

            async fn get_approval(&self, id: &str) -> StoreResult<Option<ApprovalRow>> {
                sqlx::query_as("SELECT * FROM approvals WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn get_approval_by_token(
                &self,
                token_hash: &str,
            ) -> StoreResult<Option<ApprovalRow>> {
                sqlx::query_as("SELECT * FROM approvals WHERE token_hash = $1")
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db)
            }

            async fn list_approvals(
                &self,
                principal: Option<&str>,
                status: Option<ApprovalStatus>,
            ) -> StoreResult<Vec<ApprovalRow>> {
                sqlx::query_as(
                    "SELECT * FROM approvals WHERE (CAST($1 AS TEXT) IS NULL OR principal = $1) \
                     AND (CAST($2 AS TEXT) IS NULL OR status = $2) ORDER BY created_at DESC LIMIT 500",
                )
                .bind(principal)
                .bind(status)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db)
            }

            async fn decide_approval(
                &self,
                id: &str,
                status: ApprovalStatus,
                by: &str,
                now: i64,
            ) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE approvals SET status = $1, decided_at = $2, decided_by = $3 \
                     WHERE id = $4 AND status = 'pending' AND expires_at > $2",
                )
                .bind(status)
                .bind(now)
                .bind(by)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db)?;
                Ok(r.rows_affected() == 1)
            }

            async fn consume_approval(
                &self,
                principal: &str,
                grant_id: &str,
                call_hash: &str,
                now: i64,
            ) -> StoreResult<Option<ApprovalRow>> {
                // The status re-check in the outer WHERE makes two concurrent consumers of one
                // approval race for the row: exactly one sees it still `approved`.
                sqlx::query_as(
                    "UPDATE approvals SET status = 'used' WHERE id = (SELECT id FROM approvals \
                     WHERE principal = $1 AND grant_id = $2 AND call_hash = $3 AND status = 'approved' \
                     AND expires_at > $4 ORDER BY created_at LIMIT 1) AND status = 'approved' RETURNING *",
                )
                .bind(principal)
                .bind(grant_id)
                .bind(call_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db)
            }
        }
    };
}

pub(crate) use shared_sql_store;
