//! Questions for 2026-07-28 clients, which forbid server-to-client requests: the call answers
//! with an `InputRequiredResult` (an approval form, or the Connect link in URL mode) and a
//! sealed `requestState`; the client asks the person, then retries the same call with the
//! answers and the state echoed back.
//!
//! The state is untrusted on its way back, so it is sealed (HMAC-SHA256 under a key derived
//! from the master key, rmcp's `RequestStateCodec`) and bound, as associated data, to the
//! caller, the tool and a hash of the call's arguments; it expires (the approval timeout, or
//! `[connect] wait_in_client_secs`) and works once (a nonce used up in the shared counters, so
//! on every instance). An approval answer is further bound to the hash of the exact request
//! the person saw (method, URL, body): a different call cannot consume it. Every refusal is
//! the same error, so a prober learns nothing about why.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use rmcp::{
    ErrorData, RoleServer,
    model::{
        CallToolResponse, ElicitRequest, ElicitRequestParams, ElicitationSchema, InputRequest,
        InputRequiredResult, InputResponses, RequestStateCodec, SealOptions,
    },
    service::RequestContext,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    InFlight,
    approval::ApprovalForm,
    connect_in_client::{Waited, wait_for_connect},
    interaction::Offer,
    tools::{self, ToolKind},
};
use crate::model::AuditOutcome;
use crate::vault::{
    Caller, Vault,
    approval::{ApprovalAnswer, ApprovalQuestion, Approver},
    new_token, now, sha256_hex,
};

/// Keys of the input requests this server sends.
const APPROVAL: &str = "approval";
const CONNECT: &str = "connect";

/// A retry holds the request at most this long waiting for Connect, then hands back a fresh
/// state for the client to retry with (keeps HTTP requests short behind proxies).
const HOLD: Duration = Duration::from_secs(20);

#[derive(Debug, Serialize, Deserialize)]
struct State {
    /// Single use: spent when the state comes back.
    nonce: String,
    /// Unix seconds after which the state is refused (also enforced by the codec's TTL).
    until: i64,
    #[serde(flatten)]
    step: Step,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
enum Step {
    /// The person was asked to approve the request whose hash is `call_hash`, on grant `grant_id`.
    Approval { call_hash: String, grant_id: String },
    /// The person was asked to finish Connect session `session_id`.
    Connect { session_id: String },
}

/// What the channel supports, from the client's declared capabilities.
#[derive(Debug, Clone, Copy)]
pub(super) struct Abilities {
    pub form: bool,
    pub url: bool,
}

/// The refusal for any state that does not open, belongs elsewhere, expired or was used.
fn refused() -> ErrorData {
    ErrorData::invalid_params(
        "requestState is not valid for this call (altered, expired, already used, or issued for another call or user); call the tool again without it",
        Some(serde_json::json!({ "error": "invalid_request_state" })),
    )
}

fn codec(vault: &Vault) -> RequestStateCodec {
    RequestStateCodec::try_new(vault.derived_key("mcp-request-state").to_vec())
        .expect("a derived key is 32 bytes, the codec's minimum")
}

/// JSON with object keys sorted at every level, so the same arguments hash the same however
/// the client orders them.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), canonical(v)))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// What the state is bound to: who calls, which tool, with which arguments.
fn binding(caller: &Caller, tool: &str, args: &Value) -> Vec<u8> {
    let (kind, id) = caller.principal.owner();
    let args_hash = sha256_hex(&canonical(args).to_string());
    format!("vault-mcp request-state v1\0{kind}\0{id}\0{tool}\0{args_hash}").into_bytes()
}

fn seal(vault: &Vault, ad: &[u8], step: Step, until: i64) -> String {
    let state = State {
        nonce: new_token(),
        until,
        step,
    };
    let ttl = Duration::from_secs((until - now()).max(1) as u64);
    codec(vault)
        .seal_json_with(&state, &SealOptions::new().associated_data(ad).ttl(ttl))
        .expect("the state serializes")
}

/// Open a state that came back, and use it up. A refusal is audited (probing shows up there).
async fn open(vault: &Vault, caller: &Caller, ad: &[u8], sealed: &str) -> Result<State, ErrorData> {
    let why = match codec(vault).open_json_with::<State>(sealed, ad) {
        Err(e) => e.to_string(),
        Ok(state) if state.until < now() => "expired".into(),
        Ok(state) => {
            let ttl = state.until - now() + 60;
            match vault
                .use_once("once:request-state", &state.nonce, ttl)
                .await
            {
                Ok(true) => return Ok(state),
                Ok(false) => "already used".into(),
                Err(e) => {
                    return Err(ErrorData::internal_error(
                        format!("could not check the requestState: {e}"),
                        None,
                    ));
                }
            }
        }
    };
    tracing::debug!(reason = %why, "refused a requestState");
    vault
        .audit_refusal(
            caller,
            "request_state",
            AuditOutcome::InvalidState,
            format!("requestState refused: {why}"),
        )
        .await
        .map_err(|e| ErrorData::internal_error(format!("audit: {e}"), None))?;
    Err(refused())
}

/// Did the person accept, and (for forms) say yes?
fn accepted<'a>(responses: &'a Option<InputResponses>, key: &str) -> Option<&'a Value> {
    let r = responses.as_ref()?.get(key)?;
    (r.get("action")?.as_str()? == "accept").then_some(r)
}

/// The approver for a 2026-07-28 call: answers from a sealed earlier round when it is about
/// the same request, otherwise defers the question to an input request.
struct RoundsApprover {
    form: bool,
    /// (call hash, grant id, approved) from the sealed earlier round.
    answered: Option<(String, String, bool)>,
    asked: std::sync::Mutex<Option<ApprovalQuestion>>,
}

#[async_trait]
impl Approver for RoundsApprover {
    async fn ask(&self, q: &ApprovalQuestion) -> ApprovalAnswer {
        // The answer counts only for the very request and grant the person was shown.
        if let Some((hash, grant, yes)) = &self.answered
            && *hash == q.call_hash
            && *grant == q.grant_id
        {
            return if *yes {
                ApprovalAnswer::Approved
            } else {
                ApprovalAnswer::Declined
            };
        }
        if !self.form {
            return ApprovalAnswer::Unavailable(
                "the client did not declare form elicitation".into(),
            );
        }
        *self.asked.lock().expect("approver lock") = Some(q.clone());
        ApprovalAnswer::Deferred
    }

    fn channel(&self) -> &'static str {
        "2026-07-28 input request"
    }
}

fn input_required(key: &str, params: ElicitRequestParams, state: String) -> CallToolResponse {
    let requests = BTreeMap::from([(
        key.to_owned(),
        InputRequest::Elicitation(ElicitRequest::new(params)),
    )]);
    InputRequiredResult::new(Some(requests), Some(state)).into()
}

/// Run one `tools/call` from a 2026-07-28 client.
#[allow(clippy::too_many_arguments)]
pub(super) async fn call(
    vault: &Vault,
    mut caller: Caller,
    kind: &ToolKind,
    name: &str,
    args: Value,
    responses: Option<InputResponses>,
    request_state: Option<String>,
    can: Abilities,
    inflight: &InFlight,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResponse, ErrorData> {
    let ad = binding(&caller, name, &args);
    let mut answered = None;
    let mut offer_connect = can.url;
    if let Some(sealed) = request_state {
        let state = open(vault, &caller, &ad, &sealed).await?;
        match state.step {
            Step::Approval {
                call_hash,
                grant_id,
            } => {
                let yes = accepted(&responses, APPROVAL)
                    .and_then(|r| r.get("content")?.get("approve")?.as_bool())
                    .unwrap_or(false);
                answered = Some((call_hash, grant_id, yes));
            }
            Step::Connect { session_id } => {
                // Whatever happens next answers with a result, never the same link again.
                offer_connect = false;
                // A caller with too many calls already waiting is answered without holding.
                let slot = inflight.wait_slot(caller.principal.id());
                if accepted(&responses, CONNECT).is_some() && slot.is_some() {
                    let until = tokio::time::Instant::now()
                        + HOLD.min(Duration::from_secs((state.until - now()).max(0) as u64));
                    if wait_for_connect(vault, &caller, &session_id, until, ctx).await
                        == Waited::StillPending
                        && state.until > now()
                    {
                        // Keep waiting on the next retry, with a fresh single-use state.
                        let next = seal(vault, &ad, Step::Connect { session_id }, state.until);
                        let mut r = InputRequiredResult::from_request_state(next);
                        r.input_requests = None;
                        return Ok(r.into());
                    }
                }
            }
        }
    }
    let approver = Arc::new(RoundsApprover {
        form: can.form,
        answered,
        asked: Default::default(),
    });
    // Nobody sits behind an agent's client to answer; an operator may keep approvals on the page.
    if !caller.is_agent() && vault.settings().approvals.in_client {
        caller.approver = Some(approver.clone());
    }
    let result = tools::dispatch(vault, &caller, kind, name, args).await?;
    if let Some(q) = approver.asked.lock().expect("approver lock").take() {
        let until = now() + vault.policy().approval_timeout().as_secs() as i64;
        let params = ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: q.text(),
            requested_schema: ElicitationSchema::from_type::<ApprovalForm>()
                .map_err(|e| ErrorData::internal_error(format!("approval form: {e}"), None))?,
        };
        let state = seal(
            vault,
            &ad,
            Step::Approval {
                call_hash: q.call_hash,
                grant_id: q.grant_id,
            },
            until,
        );
        return Ok(input_required(APPROVAL, params, state));
    }
    if offer_connect && let Some(offer) = Offer::in_result(&result) {
        let until = now() + vault.settings().connect.wait_in_client_secs as i64;
        let params = ElicitRequestParams::UrlElicitationParams {
            meta: None,
            message: offer.message(true),
            url: offer.connect_url.clone(),
            elicitation_id: offer.session_id.clone(),
        };
        let state = seal(
            vault,
            &ad,
            Step::Connect {
                session_id: offer.session_id,
            },
            until,
        );
        return Ok(input_required(CONNECT, params, state));
    }
    Ok(result.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ignores_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"d":2,"c":3}],"x":null}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":null,"y":[1,{"c":3,"d":2}]},"b":1}"#).unwrap();
        assert_eq!(canonical(&a).to_string(), canonical(&b).to_string());
        let c: Value =
            serde_json::from_str(r#"{"a":{"x":null,"y":[{"c":3,"d":2},1]},"b":1}"#).unwrap();
        assert_ne!(canonical(&a).to_string(), canonical(&c).to_string());
    }
}
