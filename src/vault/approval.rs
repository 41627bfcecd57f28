//! Approvals for calls a policy marks `approve`. Three ways to get one, tried in order: a
//! one-time approval a person already granted for exactly this call (CLI or approval page); the
//! caller's `Approver` (the MCP layer asks the user in their client through elicitation); else
//! the call is refused with an approval id and link, and the retry goes through once approved.
//! An approval is bound to a hash of the exact call the person saw (method, URL with its
//! query, body): no other call can consume it. Every step is audited.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use super::{Caller, Vault, VaultError, audit_entry, new_id, new_token, now, rfc3339, sha256_hex};
use crate::{
    model::{ApprovalStatus, AuditOutcome},
    store::{ApprovalRow, GrantRow},
};

const PENDING_TTL: i64 = 3600;

/// What the person is asked.
#[derive(Debug, Clone)]
pub struct ApprovalQuestion {
    /// The grant the call would use: an answer given for one account never runs on another.
    pub grant_id: String,
    pub provider: String,
    pub account: String,
    pub method: String,
    /// `https`, or `http` for a loopback development upstream.
    pub scheme: String,
    pub host: String,
    /// Canonical path, with the query when there is one.
    pub path: String,
    /// The start of the body, for the person to see what is sent (ends with `…` when cut).
    pub body_preview: Option<String>,
    pub reason: Option<String>,
    pub rule: String,
    /// SHA-256 over method, URL and body: what an approval is bound to.
    pub call_hash: String,
}

impl ApprovalQuestion {
    /// The question as the person reads it. Text the agent chose (the reason, the body) is put on
    /// one line with control characters escaped, so it cannot fake the lines that follow it.
    pub fn text(&self) -> String {
        let body = self.body_preview.as_deref().map(|b| {
            let cut = if b.ends_with('…') {
                " (first 500 characters; the approval covers the whole body)"
            } else {
                ""
            };
            format!("\nBody{cut}: {}", one_line(b))
        });
        format!(
            "Approve this API call by your agent?\n\n{} {}://{}{}{}\nProvider: {} (account {})\nPolicy rule: {}\nReason the agent gave: {}",
            self.method,
            self.scheme,
            self.host,
            self.path,
            body.unwrap_or_default(),
            self.provider,
            self.account,
            self.rule,
            self.reason
                .as_deref()
                .map(one_line)
                .unwrap_or_else(|| "(none)".into()),
        )
    }
}

/// Control characters (newlines included) escaped, so agent-chosen text stays on its line.
fn one_line(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalAnswer {
    Approved,
    Declined,
    TimedOut,
    /// The client cannot ask (no elicitation support); the reason is logged.
    Unavailable(String),
    /// The client will ask, but not within this call: the question went back to the client with
    /// the call's result (MCP 2026-07-28 input requests) and the call is retried with the answer.
    Deferred,
}

/// Asks a person, from wherever the call came from. Implemented by the MCP layer.
#[async_trait]
pub trait Approver: Send + Sync {
    async fn ask(&self, q: &ApprovalQuestion) -> ApprovalAnswer;
    /// How the person was asked, for the audit record.
    fn channel(&self) -> &'static str;
}

pub type SharedApprover = Arc<dyn Approver>;

/// An approval as shown to people.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalView {
    pub id: String,
    pub status: String,
    pub provider: String,
    pub method: String,
    pub host: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub rule: String,
    pub principal: String,
    pub created_at: String,
    pub expires_at: String,
}

impl From<&ApprovalRow> for ApprovalView {
    fn from(a: &ApprovalRow) -> Self {
        ApprovalView {
            id: a.id.clone(),
            status: if a.status == ApprovalStatus::Pending && a.expires_at <= now() {
                "expired".into()
            } else {
                a.status.to_string()
            },
            provider: a.provider.clone(),
            method: a.method.clone(),
            host: a.host.clone(),
            path: a.path.clone(),
            reason: a.reason.clone(),
            rule: a.rule.clone(),
            principal: a.principal.clone(),
            created_at: rfc3339(a.created_at),
            expires_at: rfc3339(a.expires_at),
        }
    }
}

impl Vault {
    async fn audit_approval(
        &self,
        caller: &Caller,
        q: &ApprovalQuestion,
        grant: &str,
        outcome: AuditOutcome,
        detail: String,
    ) -> Result<(), VaultError> {
        let mut e = audit_entry(caller, "approval");
        e.grant_id = Some(grant.to_owned());
        e.provider = Some(q.provider.clone());
        e.method = Some(q.method.clone());
        e.host = Some(q.host.clone());
        e.path = Some(q.path.clone());
        e.reason = q.reason.clone();
        e.decision = Some(q.rule.clone());
        e.outcome = outcome;
        e.detail = Some(detail);
        self.inner.audit.write(e).await
    }

    /// Get an approval for a call, or the error that explains how to get one. Returns how it
    /// was approved, for the call's audit record.
    pub(crate) async fn obtain_approval(
        &self,
        caller: &Caller,
        grant: &GrantRow,
        q: ApprovalQuestion,
        message: &str,
    ) -> Result<String, VaultError> {
        let store = &self.inner.stores.approvals;
        let t = now();
        if let Some(a) = store
            .consume_approval(caller.principal.id(), &grant.id, &q.call_hash, t)
            .await?
        {
            self.audit_approval(
                caller,
                &q,
                &grant.id,
                AuditOutcome::Used,
                format!("one-time approval {}", a.id),
            )
            .await?;
            return Ok(format!("approved:{}", a.id));
        }
        if let Some(approver) = &caller.approver {
            match approver.ask(&q).await {
                ApprovalAnswer::Approved => {
                    self.audit_approval(
                        caller,
                        &q,
                        &grant.id,
                        AuditOutcome::Approved,
                        format!("approved in the client ({})", approver.channel()),
                    )
                    .await?;
                    return Ok("approved:client".into());
                }
                ApprovalAnswer::Declined => {
                    self.audit_approval(
                        caller,
                        &q,
                        &grant.id,
                        AuditOutcome::Declined,
                        format!("declined in the client ({})", approver.channel()),
                    )
                    .await?;
                    return Err(VaultError::ApprovalDenied {
                        rule: q.rule.clone(),
                        message: format!(
                            "the user declined {} {}{}; do not retry unless they ask you to",
                            q.method, q.host, q.path
                        ),
                    });
                }
                ApprovalAnswer::TimedOut => {
                    self.audit_approval(
                        caller,
                        &q,
                        &grant.id,
                        AuditOutcome::Timeout,
                        "no answer in the client".into(),
                    )
                    .await?;
                    return Err(VaultError::ApprovalDenied {
                        rule: q.rule.clone(),
                        message: "nobody approved the call in time; ask the user, then retry"
                            .into(),
                    });
                }
                ApprovalAnswer::Deferred => {
                    self.audit_approval(
                        caller,
                        &q,
                        &grant.id,
                        AuditOutcome::Pending,
                        format!("asked in the client ({})", approver.channel()),
                    )
                    .await?;
                    return Err(VaultError::ApprovalRequired {
                        rule: q.rule.clone(),
                        message: format!("{message}. The user is asked in their client"),
                        approval_id: None,
                        approval_url: None,
                    });
                }
                ApprovalAnswer::Unavailable(why) => {
                    tracing::debug!(reason = %why, "client cannot ask for approval; falling back to a one-time approval");
                }
            }
        }
        let token = new_token();
        let row = ApprovalRow {
            id: new_id("apr"),
            token_hash: sha256_hex(&token),
            principal: caller.principal.id().to_owned(),
            grant_id: grant.id.to_string(),
            provider: q.provider.clone(),
            method: q.method.clone(),
            host: q.host.clone(),
            path: q.path.clone(),
            call_hash: q.call_hash.clone(),
            body_preview: q.body_preview.clone(),
            reason: q.reason.clone(),
            rule: q.rule.clone(),
            status: ApprovalStatus::Pending,
            created_at: t,
            expires_at: t + PENDING_TTL,
            decided_at: None,
            decided_by: None,
        };
        store.insert_approval(&row).await?;
        self.audit_approval(
            caller,
            &q,
            &grant.id,
            AuditOutcome::Pending,
            format!("approval {}", row.id),
        )
        .await?;
        let url = self
            .inner
            .settings
            .connect
            .public_url
            .join(&format!("approvals/{token}"))
            .expect("joinable")
            .to_string();
        let delivery = &self.inner.settings.approvals;
        if delivery.links_in_results {
            // Hosted: the page answers only to the user's own signed-in browser session.
            return Err(VaultError::ApprovalRequired {
                rule: q.rule.clone(),
                message: format!(
                    "{message}. Ask the user to approve it at {url} (they sign in there), then retry the same call (the approval works once, for an hour)"
                ),
                approval_id: Some(row.id),
                approval_url: Some(url),
            });
        }
        // Local: the link never goes into the result, where an agent able to fetch it could
        // approve its own call. The person gets it on channels the model does not read.
        tracing::warn!(approval = %row.id, url = %url, "a call waits for your approval: open the link or run `vault-mcp approvals approve {}`", row.id);
        let opened = delivery.open_browser && webbrowser::open(&url).is_ok();
        Err(VaultError::ApprovalRequired {
            rule: q.rule.clone(),
            message: format!(
                "{message}. Your client cannot ask the user directly, so ask them to approve it — {} or they run `vault-mcp approvals approve {}` — then retry the same call (the approval works once, for an hour)",
                if opened {
                    "an approval page opened in their browser"
                } else {
                    "the approval link is in vault-mcp's log"
                },
                row.id
            ),
            approval_id: Some(row.id),
            approval_url: None,
        })
    }

    pub async fn list_approvals(
        &self,
        caller: Option<&Caller>,
        pending_only: bool,
    ) -> Result<Vec<ApprovalView>, VaultError> {
        let rows = self
            .inner
            .stores
            .approvals
            .list_approvals(
                caller.map(|c| c.principal.id()),
                pending_only.then_some(ApprovalStatus::Pending),
            )
            .await?;
        Ok(rows.iter().map(ApprovalView::from).collect())
    }

    /// Approve or deny by id (CLI). Only the principal the approval belongs to may decide.
    pub async fn decide_approval(
        &self,
        caller: &Caller,
        id: &str,
        approve: bool,
    ) -> Result<ApprovalView, VaultError> {
        let store = &self.inner.stores.approvals;
        let a = store
            .get_approval(id)
            .await?
            .filter(|a| a.principal == caller.principal.id())
            .ok_or_else(|| {
                VaultError::invalid(
                    "approval",
                    format!("no approval `{id}` of yours; see `vault-mcp approvals list`"),
                )
            })?;
        self.decide(caller, &a, approve).await
    }

    async fn decide(
        &self,
        caller: &Caller,
        a: &ApprovalRow,
        approve: bool,
    ) -> Result<ApprovalView, VaultError> {
        let (status, outcome) = if approve {
            (ApprovalStatus::Approved, AuditOutcome::Approved)
        } else {
            (ApprovalStatus::Denied, AuditOutcome::Denied)
        };
        if !self
            .inner
            .stores
            .approvals
            .decide_approval(&a.id, status, &caller.tool, now())
            .await?
        {
            return Err(VaultError::invalid(
                "approval",
                format!(
                    "approval {} is {} and can no longer be decided",
                    a.id,
                    ApprovalView::from(a).status
                ),
            ));
        }
        let mut e = audit_entry(caller, "approval");
        e.grant_id = Some(a.grant_id.clone());
        e.provider = Some(a.provider.clone());
        e.method = Some(a.method.clone());
        e.host = Some(a.host.clone());
        e.path = Some(a.path.clone());
        e.decision = Some(a.rule.clone());
        e.outcome = outcome;
        e.detail = Some(format!("approval {} decided via {}", a.id, caller.tool));
        self.inner.audit.write(e).await?;
        let now_row = self
            .inner
            .stores
            .approvals
            .get_approval(&a.id)
            .await?
            .unwrap_or_else(|| a.clone());
        Ok(ApprovalView::from(&now_row))
    }

    /// The approval behind a link token (approval page).
    pub async fn approval_by_token(&self, token: &str) -> Result<Option<ApprovalRow>, VaultError> {
        if token.len() > 100 {
            return Ok(None);
        }
        Ok(self
            .inner
            .stores
            .approvals
            .get_approval_by_token(&sha256_hex(token))
            .await?)
    }

    /// Decide from the approval page. `viewer` is the signed-in user in hosted mode.
    pub async fn decide_by_token(
        &self,
        token: &str,
        approve: bool,
        viewer: Option<&str>,
    ) -> Result<Option<ApprovalView>, VaultError> {
        let Some(a) = self.approval_by_token(token).await? else {
            return Ok(None);
        };
        if viewer.is_some_and(|v| v != a.principal) {
            return Ok(None);
        }
        let caller = Caller::new(
            super::Principal::new(a.principal.clone(), a.principal.clone()),
            "approval page",
        );
        self.decide(&caller, &a, approve).await.map(Some)
    }
}
