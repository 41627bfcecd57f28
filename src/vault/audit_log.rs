//! Reading the audit trail: search, export, retention, and verification of the hash chain.
//! `verify` names the first record that is wrong: edited (its hash no longer matches its
//! contents), deleted (a gap in the sequence), or reordered (a link to the wrong predecessor).

use serde::Serialize;

use super::{Vault, VaultError, now_ms};
use crate::store::{AUDIT_GENESIS, AuditFilter, AuditRecord, audit_hash};

/// Result of `vault-mcp audit verify`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerifyReport {
    pub checked: u64,
    /// `None` when the chain is intact.
    pub problem: Option<String>,
    /// seq and hash of the newest record, to compare with a copy kept elsewhere.
    pub head: Option<(i64, String)>,
}

const PAGE: i64 = 10_000;

impl Vault {
    pub async fn search_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, VaultError> {
        Ok(self.inner.store.query_audit(filter).await?)
    }

    /// Walk the whole chain from its anchor (the genesis, or where retention pruning cut it).
    pub async fn verify_audit(&self) -> Result<VerifyReport, VaultError> {
        let anchor = self.inner.store.get_meta("audit_anchor").await?;
        let (mut prev_seq, mut prev_hash) = crate::store::parse_anchor(anchor.as_deref());
        let mut checked = 0u64;
        // Walk by seq from the anchor (paging by seq keeps the primary-key order).
        let mut after = Some(prev_seq);
        loop {
            let page = self
                .inner
                .store
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
                    return Ok(VerifyReport {
                        checked,
                        problem: Some(problem),
                        head: None,
                    });
                }
                if r.prev_hash != prev_hash {
                    return Ok(VerifyReport {
                        checked,
                        problem: Some(format!(
                            "record {} (id {}) does not link to record {prev_seq}: records were deleted, moved or reordered here",
                            r.seq, r.entry.id
                        )),
                        head: None,
                    });
                }
                if audit_hash(&r.prev_hash, &r.entry) != r.hash {
                    return Ok(VerifyReport {
                        checked,
                        problem: Some(format!(
                            "record {} (id {}) was modified: its contents no longer match its hash",
                            r.seq, r.entry.id
                        )),
                        head: None,
                    });
                }
                checked += 1;
                prev_seq = r.seq;
                prev_hash = r.hash.clone();
            }
            after = Some(prev_seq);
        }
        Ok(VerifyReport {
            checked,
            problem: None,
            head: (prev_hash != AUDIT_GENESIS).then_some((prev_seq, prev_hash)),
        })
    }

    /// Drop records older than `days` (the chain stays verifiable from the oldest kept record).
    pub async fn prune_audit(&self, days: u32) -> Result<u64, VaultError> {
        let cutoff = now_ms() - days as i64 * 86_400_000;
        Ok(self.inner.store.prune_audit(cutoff).await?)
    }
}
