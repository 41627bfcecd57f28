//! Calls held for a person's approval on behalf of a caller that cannot wait on the line (the
//! SDK's proxy mode answers 202 and polls): the request is kept (never a credential or a user
//! token), run once when the approval is given — through `request`, so the approval is consumed
//! there, bound to exactly that call — and its scrubbed answer kept for the caller to read.

use super::{Caller, Principal, Vault, VaultError, now};
use crate::{model::HeldStatus, store::HeldCallRow};

impl Vault {
    /// Keep a held call (`request`: JSON the caller's own layer can replay).
    pub async fn hold_call(
        &self,
        approval_id: &str,
        caller: &Caller,
        request: String,
    ) -> Result<(), VaultError> {
        let t = now();
        let who = serde_json::json!({
            "display": caller.principal.display(),
            "groups": caller.groups,
            "label": caller.agent,
        });
        self.inner
            .stores
            .approvals
            .insert_held_call(&HeldCallRow {
                approval_id: approval_id.to_owned(),
                principal_kind: caller.principal.kind(),
                principal: caller.principal.id().to_owned(),
                caller: who.to_string(),
                request,
                status: HeldStatus::Held,
                result: None,
                error: None,
                created_at: t,
                updated_at: t,
            })
            .await?;
        Ok(())
    }

    pub async fn held_call(&self, approval_id: &str) -> Result<Option<HeldCallRow>, VaultError> {
        Ok(self
            .inner
            .stores
            .approvals
            .get_held_call(approval_id)
            .await?)
    }

    /// Take a held call to run it: `Some(caller)` the first time, `None` if another poll did.
    pub async fn claim_held_call(
        &self,
        h: &HeldCallRow,
        tool: &str,
    ) -> Result<Option<Caller>, VaultError> {
        if !self
            .inner
            .stores
            .approvals
            .claim_held_call(&h.approval_id, now())
            .await?
        {
            return Ok(None);
        }
        let who: serde_json::Value = serde_json::from_str(&h.caller).unwrap_or_default();
        let display = who["display"].as_str().unwrap_or(&h.principal).to_owned();
        let groups = who["groups"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut caller = Caller::new(
            Principal::of_kind(h.principal_kind, h.principal.clone(), display),
            tool,
        )
        .with_groups(groups);
        if let Some(l) = who["label"].as_str() {
            caller.agent = Some(l.to_owned());
        }
        Ok(Some(caller))
    }

    pub async fn finish_held_call(
        &self,
        approval_id: &str,
        outcome: Result<String, String>,
    ) -> Result<(), VaultError> {
        let (status, result, error) = match &outcome {
            Ok(r) => (HeldStatus::Executed, Some(r.as_str()), None),
            Err(e) => (HeldStatus::Failed, None, Some(e.as_str())),
        };
        self.inner
            .stores
            .approvals
            .finish_held_call(approval_id, status, result, error, now())
            .await?;
        Ok(())
    }
}
