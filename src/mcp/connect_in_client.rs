//! Connect inside the user's client, for clients on protocols before 2026-07-28 that declared
//! URL-mode elicitation: when a call needs a grant, the client is asked to open the Connect
//! link (`elicitation/create`, mode `url`); once the person accepts, the call waits (bounded by
//! `[connect] wait_in_client_secs`) for the Connect flow to end, tells the client with
//! `notifications/elicitation/complete`, and runs the original call again, so one tool call
//! returns the provider's data. Decline, cancel, a timeout or a client without URL mode: the
//! result is the `authorization_required` answer with the link, exactly as before.

use std::time::Duration;

use rmcp::{
    ErrorData, RoleServer,
    model::{CallToolResult, CustomNotification, ElicitationAction, ErrorCode, ServerNotification},
    service::RequestContext,
};
use serde_json::json;

use super::{
    InFlight,
    interaction::{Channel, Offer},
};
use crate::{
    model::SessionStatus,
    vault::{Caller, Vault},
};

/// JSON-RPC error code: the request needs the user to visit a URL first (MCP 2025-11-25).
pub const URL_ELICITATION_REQUIRED: i32 = -32042;

/// How often a waiting call looks at the Connect session (a store read; works across instances):
/// soon at first, then less often.
const POLL_FIRST: Duration = Duration::from_millis(250);
const POLL_MAX: Duration = Duration::from_secs(2);

/// What became of the Connect flow a call waited for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Waited {
    /// The flow ended (connected, denied at the provider, expired, failed): run the call again.
    Ended,
    /// Still going at the deadline.
    StillPending,
    /// The session is gone or not the caller's, or the call was cancelled.
    Abandoned,
}

/// Wait until the caller's Connect session `session_id` leaves `pending`, or `deadline`.
pub(super) async fn wait_for_connect(
    vault: &Vault,
    caller: &Caller,
    session_id: &str,
    deadline: tokio::time::Instant,
    ctx: &RequestContext<RoleServer>,
) -> Waited {
    let mut poll = POLL_FIRST;
    loop {
        match vault.connect_status(caller, session_id).await {
            Ok(Some(s)) if s.status != SessionStatus::Pending => return Waited::Ended,
            Ok(Some(s)) if s.expires_at <= crate::vault::now() => return Waited::Ended,
            Ok(Some(_)) => {}
            Ok(None) => return Waited::Abandoned,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the Connect session a call waits for");
                return Waited::Abandoned;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Waited::StillPending;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = ctx.ct.cancelled() => return Waited::Abandoned,
        }
        poll = (poll * 3 / 2).min(POLL_MAX);
    }
}

/// The URL-elicitation-required error for a client that declared URL mode but cannot be asked
/// during this call (stateless HTTP).
pub(super) fn url_required_error(offer: &Offer) -> ErrorData {
    ErrorData::new(
        ErrorCode(URL_ELICITATION_REQUIRED),
        format!(
            "authorization required: the user must connect their account at {} and then the call can be retried",
            offer.connect_url
        ),
        Some(json!({
            "elicitations": [{
                "mode": "url",
                "elicitationId": offer.session_id,
                "url": offer.connect_url,
                "message": offer.message(false),
            }]
        })),
    )
}

/// Outcome of offering Connect in the client.
pub(super) enum Followed {
    /// Nothing to do or the person did not connect: answer with the first result.
    Keep(CallToolResult),
    /// Connect ended: the caller runs the call again and answers with that.
    Retry,
    /// Answer with this JSON-RPC error.
    Error(ErrorData),
}

/// Offer Connect in the client for a result that asks for it, when this channel allows it.
pub(super) async fn follow(
    vault: &Vault,
    caller: &Caller,
    channel: Channel,
    result: CallToolResult,
    inflight: &InFlight,
    ctx: &RequestContext<RoleServer>,
) -> Followed {
    let Some(offer) = Offer::in_result(&result) else {
        return Followed::Keep(result);
    };
    match channel {
        Channel::Live { url: true } => {}
        Channel::Closed { url: true } => return Followed::Error(url_required_error(&offer)),
        _ => return Followed::Keep(result),
    }
    let Ok(link) = url::Url::parse(&offer.connect_url) else {
        return Followed::Keep(result);
    };
    let Some(_slot) = inflight.wait_slot(caller.principal.id()) else {
        tracing::debug!(
            "this caller already has the most calls waiting for Connect; answering with the link"
        );
        return Followed::Keep(result);
    };
    let wait = Duration::from_secs(vault.settings().connect.wait_in_client_secs);
    let deadline = tokio::time::Instant::now() + wait;
    let asked = tokio::select! {
        r = ctx.peer.elicit_url_with_timeout(offer.message(true), link, offer.session_id.clone(), Some(wait)) => r,
        _ = ctx.ct.cancelled() => return Followed::Keep(result),
    };
    match asked {
        Ok(ElicitationAction::Accept) => {}
        Ok(other) => {
            tracing::debug!(action = ?other, "the user did not open the Connect link in their client");
            return Followed::Keep(result);
        }
        Err(e) => {
            tracing::debug!(error = %e, "could not show the Connect link in the client");
            return Followed::Keep(result);
        }
    }
    match wait_for_connect(vault, caller, &offer.session_id, deadline, ctx).await {
        Waited::Ended => {
            let done = CustomNotification::new(
                "notifications/elicitation/complete",
                Some(json!({ "elicitationId": offer.session_id })),
            );
            if let Err(e) = ctx
                .peer
                .send_notification(ServerNotification::CustomNotification(done))
                .await
            {
                tracing::debug!(error = %e, "could not tell the client Connect finished");
            }
            Followed::Retry
        }
        Waited::StillPending | Waited::Abandoned => Followed::Keep(result),
    }
}
