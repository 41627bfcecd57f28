//! Getting a usable credential for a grant: decrypt, and refresh OAuth tokens that expire
//! within the skew. Refresh is single-flight: one refresh per grant at a time in this process
//! (a per-grant mutex) and across processes (a lease row in the store); everyone else waits and
//! uses the new token. Rotated refresh tokens are persisted before the new token is used.

use crate::model::{AuditOutcome, GrantKind, GrantStatus};
use std::{sync::Arc, time::Duration};

use super::{Caller, Vault, VaultError, audit, new_id, now, outbound::oauth};
use crate::{
    providers::Provider,
    secret::Credential,
    store::{CredentialUpdate, GrantRow},
};

impl Vault {
    fn decrypt(&self, g: &GrantRow) -> Result<Credential, VaultError> {
        let plain = self.inner.open(&g.id, &g.sealed)?;
        Credential::from_sealing_bytes(&plain).ok_or_else(|| {
            VaultError::Internal(format!("grant {} holds an unreadable credential", g.id))
        })
    }

    pub(crate) fn needs_refresh(&self, g: &GrantRow) -> bool {
        let skew = self.inner.settings.connect.refresh_skew_secs as i64;
        g.token_expires_at.is_some_and(|t| t - skew <= now())
    }

    /// The error a grant's stored status means, if it cannot be used.
    pub(crate) fn status_error(&self, g: &GrantRow) -> Option<VaultError> {
        match g.status.as_str() {
            "active" => None,
            "credential_revoked" => Some(VaultError::CredentialRevoked {
                grant_id: g.id.to_string(),
                provider: g.provider.clone(),
                connect: None,
            }),
            _ => Some(VaultError::GrantRevoked {
                grant_id: g.id.to_string(),
                provider: g.provider.clone(),
                connect: None,
            }),
        }
    }

    /// A credential ready to inject. `force` refreshes even if the token looks fresh (after the
    /// provider answered 401). Returns the (possibly updated) grant row too.
    pub(crate) async fn usable_credential(
        &self,
        caller: &Caller,
        grant: &GrantRow,
        provider: &Provider,
        force: bool,
    ) -> Result<(Credential, GrantRow), VaultError> {
        let cred = self.decrypt(grant)?;
        if grant.kind != GrantKind::OAuth || !(force || self.needs_refresh(grant)) {
            return Ok((cred, grant.clone()));
        }
        if cred.refresh_token.is_none() {
            if grant.token_expires_at.is_some_and(|t| t <= now()) {
                let mut message = String::new();
                let connect = self
                    .offer_connect(
                        caller,
                        &grant.provider,
                        &grant.scopes,
                        Some(&grant.id),
                        &mut message,
                    )
                    .await?;
                return Err(VaultError::GrantExpired {
                    grant_id: grant.id.to_string(),
                    provider: grant.provider.clone(),
                    connect: connect.map(Box::new),
                });
            }
            return Ok((cred, grant.clone()));
        }
        self.refresh_single_flight(caller, grant, provider, force)
            .await
    }

    fn grant_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.inner.refresh_locks.lock().expect("refresh lock map");
        if let Some(l) = map.get(id).and_then(std::sync::Weak::upgrade) {
            return l;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let l = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(id.to_owned(), Arc::downgrade(&l));
        l
    }

    async fn reload(&self, id: &str) -> Result<GrantRow, VaultError> {
        self.inner
            .stores
            .grants
            .get_grant(id)
            .await?
            .ok_or_else(|| VaultError::GrantNotFound {
                grant_id: id.to_owned(),
            })
    }

    async fn refresh_single_flight(
        &self,
        caller: &Caller,
        seen: &GrantRow,
        provider: &Provider,
        force: bool,
    ) -> Result<(Credential, GrantRow), VaultError> {
        let lock = self.grant_lock(&seen.id);
        let _held = lock.lock().await;
        // Someone may have refreshed while we waited for the lock.
        let mut cur = self.reload(&seen.id).await?;
        if let Some(e) = self.status_error(&cur) {
            return Err(self.with_repair_link(caller, e, &cur).await?);
        }
        if cur.version != seen.version && (force || !self.needs_refresh(&cur)) {
            return Ok((self.decrypt(&cur)?, cur));
        }
        // Cross-process lease: another vault-mcp process (another stdio client, another
        // instance) may be refreshing the same grant.
        let owner = &self.inner.instance;
        let lease = self.inner.settings.connect.refresh_lease_secs as i64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(lease as u64 + 5);
        loop {
            let t = now();
            if self
                .inner
                .stores
                .counters
                .acquire_refresh_lease(&cur.id, owner, t, t + lease)
                .await?
            {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(VaultError::TokenRefreshFailed {
                    grant_id: cur.id.to_string(),
                    provider: cur.provider.clone(),
                    message: "another process held the refresh lease too long".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let again = self.reload(&cur.id).await?;
            if again.version != cur.version && !self.needs_refresh(&again) {
                return Ok((self.decrypt(&again)?, again));
            }
            cur = again;
        }
        // Holding the lease, read the row once more: the previous holder may have finished
        // between our last read and our taking the lease, and its refresh token is then the only
        // valid one (providers that rotate revoke the whole grant when an old one is reused).
        let cur = match self.reload(&cur.id).await {
            Ok(f) => f,
            Err(e) => {
                self.release_lease(&cur.id).await;
                return Err(e);
            }
        };
        if let Some(e) = self.status_error(&cur) {
            self.release_lease(&cur.id).await;
            return Err(self.with_repair_link(caller, e, &cur).await?);
        }
        if cur.version != seen.version && (force || !self.needs_refresh(&cur)) {
            self.release_lease(&cur.id).await;
            return Ok((self.decrypt(&cur)?, cur));
        }
        let result = self.refresh_now(caller, &cur, provider).await;
        self.release_lease(&cur.id).await;
        result
    }

    async fn release_lease(&self, id: &str) {
        if let Err(e) = self
            .inner
            .stores
            .counters
            .release_refresh_lease(id, &self.inner.instance)
            .await
        {
            // It expires on its own; another process waits at most the lease time.
            tracing::warn!(grant = %id, error = %e, "could not release a refresh lease");
        }
    }

    async fn refresh_now(
        &self,
        caller: &Caller,
        cur: &GrantRow,
        provider: &Provider,
    ) -> Result<(Credential, GrantRow), VaultError> {
        let inner = &self.inner;
        let old = self.decrypt(cur)?;
        let rt = old.refresh_token.clone().expect("checked by caller");
        let mut ev = audit::entry(caller, "refresh", &new_id("evt"));
        ev.grant_id = Some(cur.id.to_string());
        ev.provider = Some(cur.provider.clone());
        let started = std::time::Instant::now();
        let outcome = oauth::refresh(&inner.outbound, provider, &rt).await;
        ev.latency_ms = Some(started.elapsed().as_millis() as i64);
        match outcome {
            Ok(tokens) => {
                let t = now();
                let expires = tokens.expires_in.map(|d| t + d.as_secs() as i64);
                let scopes = tokens
                    .scopes
                    .clone()
                    .map(Into::into)
                    .unwrap_or_else(|| cur.scopes.clone());
                let cred = tokens.into_credential(Some(&rt));
                let sealed = inner.seal(&cur.id, &cred.to_sealing_bytes());
                let update = CredentialUpdate {
                    sealed,
                    scopes,
                    token_expires_at: expires,
                    account_display: None,
                    now: t,
                };
                let updated = inner
                    .stores
                    .grants
                    .update_grant_credential(&cur.id, cur.version, &update)
                    .await?;
                inner.cache.invalidate(&cur.id);
                if !updated {
                    // Changed under us (revoked or re-authorized): use what is stored now.
                    let now_row = self.reload(&cur.id).await?;
                    if let Some(e) = self.status_error(&now_row) {
                        return Err(e);
                    }
                    return Ok((self.decrypt(&now_row)?, now_row));
                }
                inner.audit.write(ev).await?;
                let row = self.reload(&cur.id).await?;
                Ok((cred, row))
            }
            Err(e) if e.is_invalid_grant() => {
                inner
                    .stores
                    .grants
                    .set_grant_status(&cur.id, GrantStatus::CredentialRevoked, now())
                    .await?;
                inner.cache.invalidate(&cur.id);
                ev.outcome = AuditOutcome::CredentialRevoked;
                ev.reason = Some(e.to_string());
                inner.audit.write(ev).await?;
                let err = VaultError::CredentialRevoked {
                    grant_id: cur.id.to_string(),
                    provider: cur.provider.clone(),
                    connect: None,
                };
                Err(self.with_repair_link(caller, err, cur).await?)
            }
            Err(e) => {
                ev.outcome = AuditOutcome::TokenRefreshFailed;
                ev.reason = Some(e.to_string());
                inner.audit.write(ev).await?;
                // The old token may still have a little life left: use it rather than fail.
                if cur.token_expires_at.is_some_and(|t| t > now() + 1) {
                    tracing::warn!(grant = %cur.id, error = %e, "token refresh failed; using the current token until it expires");
                    return Ok((old, cur.clone()));
                }
                Err(VaultError::TokenRefreshFailed {
                    grant_id: cur.id.to_string(),
                    provider: cur.provider.clone(),
                    message: e.to_string(),
                })
            }
        }
    }

    /// Attach a Connect link that repairs `grant` in place to a dead-grant error.
    pub(crate) async fn with_repair_link(
        &self,
        caller: &Caller,
        err: VaultError,
        grant: &GrantRow,
    ) -> Result<VaultError, VaultError> {
        // Only the grant's owner can renew it, in a browser: not an agent, not a group member
        // (whose reconnect would become a grant of their own).
        let renewable = !caller.is_agent()
            && grant.principal_kind == caller.principal.kind()
            && grant.principal == caller.principal.id();
        let mut message = String::new();
        let offer = if renewable {
            self.offer_connect(
                caller,
                &grant.provider,
                &grant.scopes,
                Some(&grant.id),
                &mut message,
            )
            .await?
            .map(Box::new)
        } else {
            None
        };
        Ok(match err {
            VaultError::CredentialRevoked {
                grant_id, provider, ..
            } => VaultError::CredentialRevoked {
                grant_id,
                provider,
                connect: offer,
            },
            VaultError::GrantRevoked {
                grant_id, provider, ..
            } => VaultError::GrantRevoked {
                grant_id,
                provider,
                connect: offer,
            },
            VaultError::GrantExpired {
                grant_id, provider, ..
            } => VaultError::GrantExpired {
                grant_id,
                provider,
                connect: offer,
            },
            other => other,
        })
    }
}
