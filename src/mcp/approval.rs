//! Asking the user to approve a call in their own MCP client, through form elicitation. Clients
//! without elicitation (and stateless HTTP, where the server cannot send requests) get
//! `Unavailable`, and the vault falls back to a one-time approval link.

use std::time::Duration;

use async_trait::async_trait;
use rmcp::{
    Peer, RoleServer,
    service::{ElicitationError, ElicitationMode},
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::vault::approval::{ApprovalAnswer, ApprovalQuestion, Approver};

/// The form the user sees.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ApprovalForm {
    /// Allow this one call?
    pub approve: bool,
}

rmcp::elicit_safe!(ApprovalForm);

pub struct ElicitApprover {
    pub peer: Peer<RoleServer>,
    pub timeout: Duration,
}

#[async_trait]
impl Approver for ElicitApprover {
    async fn ask(&self, q: &ApprovalQuestion) -> ApprovalAnswer {
        if !self
            .peer
            .supported_elicitation_modes()
            .contains(&ElicitationMode::Form)
        {
            return ApprovalAnswer::Unavailable(
                "the client did not declare form elicitation".into(),
            );
        }
        match self
            .peer
            .elicit_with_timeout::<ApprovalForm>(q.text(), Some(self.timeout))
            .await
        {
            Ok(Some(ApprovalForm { approve: true })) => ApprovalAnswer::Approved,
            Ok(_) | Err(ElicitationError::UserDeclined) | Err(ElicitationError::UserCancelled) => {
                ApprovalAnswer::Declined
            }
            Err(ElicitationError::Service(rmcp::ServiceError::Timeout { .. })) => {
                ApprovalAnswer::TimedOut
            }
            Err(ElicitationError::CapabilityNotSupported) => {
                ApprovalAnswer::Unavailable("the client does not support elicitation".into())
            }
            Err(e) => ApprovalAnswer::Unavailable(e.to_string()),
        }
    }

    fn channel(&self) -> &'static str {
        "form elicitation"
    }
}
