//! Reading the audit trail: search, export, retention, and verification of the hash chain.
//! `verify` names the first record that is wrong: edited (its hash no longer matches its
//! contents), deleted (a gap in the sequence), or reordered (a link to the wrong predecessor).

use serde::Serialize;

use super::{Vault, VaultError, audit::Checkpoint, now_ms, rfc3339_ms};
use crate::store::{AUDIT_GENESIS, Anchor, AuditFilter, AuditRecord, audit_hash};

/// Result of `vault-mcp audit verify`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerifyReport {
    pub checked: u64,
    /// `None` when the chain is intact.
    pub problem: Option<String>,
    /// seq and hash of the newest record, to compare with a copy kept elsewhere.
    pub head: Option<(i64, String)>,
    /// What the signed checkpoint outside the database says about the head.
    pub checkpoint: String,
}

const PAGE: i64 = 10_000;

impl Vault {
    pub async fn search_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, VaultError> {
        Ok(self.inner.stores.audit.query_audit(filter).await?)
    }

    /// Walk the whole chain from its anchor (the genesis, or where retention pruning cut it),
    /// then hold its head against the signed checkpoint kept outside the database.
    pub async fn verify_audit(&self) -> Result<VerifyReport, VaultError> {
        let chain = &self.inner.chain;
        let anchor = Anchor::parse(
            self.inner
                .stores
                .meta
                .get_meta("audit_anchor")
                .await?
                .as_deref(),
        );
        let fail = |checked: u64, problem: String| VerifyReport {
            checked,
            problem: Some(problem),
            head: None,
            checkpoint: String::new(),
        };
        if anchor.seq > 0 {
            let sealed_ok = anchor
                .mac
                .as_deref()
                .is_some_and(|m| chain.check_point("anchor", anchor.seq, &anchor.hash, m));
            // Anchors written before the chain was keyed carry no seal.
            if !sealed_ok && (anchor.mac.is_some() || anchor.seq + 1 >= chain.keyed_from()) {
                return Ok(fail(
                    0,
                    format!(
                        "the retention anchor (record {}) was modified: the start of the log cannot be trusted",
                        anchor.seq
                    ),
                ));
            }
        }
        let checkpoint_path = self.inner.settings.audit_checkpoint.clone();
        let checkpoint = match &checkpoint_path {
            Some(p) => Checkpoint::read(p).map_err(|e| {
                VaultError::Internal(format!("audit checkpoint {}: {e}", p.display()))
            })?,
            None => None,
        };
        if let Some(c) = &checkpoint
            && !chain.check_point("checkpoint", c.seq, &c.hash, &c.mac)
        {
            return Ok(fail(
                0,
                "the audit checkpoint file was modified (its signature does not match)".into(),
            ));
        }
        let (mut prev_seq, mut prev_hash) = (anchor.seq, anchor.hash.clone());
        let mut checked = 0u64;
        let mut at_checkpoint: Option<String> = None;
        // Walk by seq from the anchor (paging by seq keeps the primary-key order).
        let mut after = Some(prev_seq);
        loop {
            let page = self
                .inner
                .stores
                .audit
                .query_audit(&AuditFilter {
                    after_seq: after,
                    limit: Some(PAGE),
                    ..Default::default()
                })
                .await?;
            if page.is_empty() {
                break;
            }
            for r in &page {
                if r.seq != prev_seq + 1 {
                    let problem = if r.seq > prev_seq + 1 {
                        format!(
                            "record {} is missing (deleted): the chain jumps from record {prev_seq} to record {}",
                            prev_seq + 1,
                            r.seq
                        )
                    } else {
                        format!(
                            "record {} is out of sequence after record {prev_seq}",
                            r.seq
                        )
                    };
                    return Ok(fail(checked, problem));
                }
                if r.prev_hash != prev_hash {
                    return Ok(fail(
                        checked,
                        format!(
                            "record {} (id {}) does not link to record {prev_seq}: records were deleted, moved or reordered here",
                            r.seq, r.entry.id
                        ),
                    ));
                }
                if audit_hash(chain, r.seq, &r.prev_hash, &r.entry) != r.hash {
                    return Ok(fail(
                        checked,
                        format!(
                            "record {} (id {}) was modified: its contents no longer match its hash",
                            r.seq, r.entry.id
                        ),
                    ));
                }
                if checkpoint.as_ref().is_some_and(|c| c.seq == r.seq) {
                    at_checkpoint = Some(r.hash.clone());
                }
                checked += 1;
                prev_seq = r.seq;
                prev_hash = r.hash.clone();
            }
            after = Some(prev_seq);
        }
        let checkpoint = match (&checkpoint, &checkpoint_path) {
            (Some(c), _) if c.seq > prev_seq => {
                return Ok(fail(
                    checked,
                    format!(
                        "the log ends at record {prev_seq}, but the checkpoint written at {} names record {}: records were cut from the end",
                        rfc3339_ms(c.ts_ms),
                        c.seq
                    ),
                ));
            }
            (Some(c), _)
                if c.seq > anchor.seq && at_checkpoint.as_deref() != Some(c.hash.as_str()) =>
            {
                return Ok(fail(
                    checked,
                    format!(
                        "record {} differs from the checkpoint written at {}: the log was rewritten",
                        c.seq,
                        rfc3339_ms(c.ts_ms)
                    ),
                ));
            }
            (Some(c), Some(p)) => format!(
                "record {} matches the checkpoint in {} (written {})",
                c.seq,
                p.display(),
                rfc3339_ms(c.ts_ms)
            ),
            (None, Some(p)) => format!(
                "no checkpoint file at {}: truncation of the end of the log cannot be detected",
                p.display()
            ),
            _ => "no checkpoint file configured".into(),
        };
        Ok(VerifyReport {
            checked,
            problem: None,
            head: (prev_hash != AUDIT_GENESIS).then_some((prev_seq, prev_hash)),
            checkpoint,
        })
    }

    /// Drop records older than `days` (the chain stays verifiable from the oldest kept record).
    pub async fn prune_audit(&self, days: u32) -> Result<u64, VaultError> {
        let cutoff = now_ms() - days as i64 * 86_400_000;
        Ok(self
            .inner
            .stores
            .audit
            .prune_audit(cutoff, &self.inner.chain)
            .await?)
    }
}
