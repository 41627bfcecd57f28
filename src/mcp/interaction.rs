//! How this call can reach the person behind the client, decided once per `tools/call` from
//! the protocol version and the capabilities the client declared:
//!
//! - 2026-07-28 and later: no server-to-client requests; questions go back in the result as
//!   input requests and the client retries the call with the answers (`rounds`).
//! - Older protocols on a connection that carries server requests (stdio, stateful HTTP,
//!   legacy SSE): elicitation during the call (`connect_in_client`, `approval`).
//! - Older protocols where the server cannot send requests (stateless HTTP): nothing to ask
//!   with; a client that declared URL mode gets the URL-elicitation-required error.
//!
//! Also: finding the Connect offer in a tool result, which every path shares.

use rmcp::{
    RoleServer,
    model::{CallToolResult, ProtocolVersion},
    service::RequestContext,
};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Channel {
    /// 2026-07-28+: input requests in results; which kinds the client can answer.
    Rounds { form: bool, url: bool },
    /// Server-to-client requests during the call.
    Live { url: bool },
    /// No way to ask during the call; `url` when the client declared URL mode anyway.
    Closed { url: bool },
}

impl Channel {
    pub(super) fn of(ctx: &RequestContext<RoleServer>, can_send_requests: bool) -> Channel {
        let (form, url) = ctx
            .client_capabilities()
            .and_then(|c| c.elicitation)
            .map(|e| {
                // An empty `elicitation: {}` means form only (2025-06-18 clients).
                let neither = e.form.is_none() && e.url.is_none();
                (neither || e.form.is_some(), e.url.is_some())
            })
            .unwrap_or((false, false));
        let modern = ctx
            .protocol_version()
            .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28);
        if modern {
            Channel::Rounds { form, url }
        } else if can_send_requests {
            Channel::Live { url }
        } else {
            Channel::Closed { url }
        }
    }
}

/// A Connect link a tool result offers the person (missing grant, missing scopes, a grant
/// that expired or was revoked).
#[derive(Debug, Clone)]
pub(super) struct Offer {
    pub connect_url: String,
    pub session_id: String,
    pub provider: Option<String>,
}

impl Offer {
    /// The offer in a result, if the call failed for want of a grant the person can give.
    pub(super) fn in_result(result: &CallToolResult) -> Option<Offer> {
        let s = result.structured_content.as_ref()?;
        s.get("error")?;
        let text = |k: &str| s.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(Offer {
            connect_url: text("connect_url")?,
            session_id: text("session_id")?,
            provider: text("provider"),
        })
    }

    /// What the client shows next to the link. `waits`: the call continues by itself once the
    /// person is done (else the client retries it).
    pub(super) fn message(&self, waits: bool) -> String {
        let then = if waits {
            "The call continues when you are done."
        } else {
            "Retry the call when you are done."
        };
        match &self.provider {
            Some(p) => format!(
                "Your agent needs access to your {p} account. Open the link to connect it through vault-mcp; your agent never sees the credential. {then}"
            ),
            None => format!("Your agent needs you to connect an account through vault-mcp. {then}"),
        }
    }
}
