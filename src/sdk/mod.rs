//! The Alter SDK's backend protocol (`/sdk/*`) on the same vault: the official Python SDK
//! (`alter-sdk`, its FastAPI dependency, MCP decorator and LangChain wrapper) talks to a
//! self-hosted vault-mcp unchanged. This layer sits beside the MCP surface: it authenticates a
//! request (API key + HMAC signature + timestamp + single-use nonce), turns it into a `Caller`,
//! calls the same `Vault` methods the MCP tools call, and renders the SDK's JSON shapes and
//! error codes. Grants and agents appear under stable UUIDs (`model::sdk_uuid`).
//!
//! `docs/sdk.md` lists the endpoints served; anything else under `/sdk/` answers 501
//! `not_implemented` naming it.

mod auth;
mod connect;
mod credentials;
mod error;
mod grants;
mod manage;
pub mod sign;

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{any, delete, get, post},
};
use serde_json::Value;

pub use auth::SdkCtx;
pub use error::SdkError;

use crate::{auth::jwt::JwtValidator, model::sdk_uuid, store::GrantRow, vault::Vault};

/// How user tokens (`user_token`) are checked: the IdP's JWTs, for this audience.
#[derive(Clone)]
pub struct UserTokens {
    pub validator: Arc<JwtValidator>,
    pub audience: String,
    pub groups_claim: Option<String>,
}

#[derive(Clone)]
pub struct SdkState {
    pub vault: Vault,
    pub users: Option<UserTokens>,
    /// Accepted distance between a request's timestamp and the server clock.
    pub max_skew_secs: i64,
    /// The server's public URL (for links in answers).
    pub public_url: url::Url,
}

type SdkResult = Result<Response, SdkError>;

/// The `/sdk/*` routes.
pub fn router(st: SdkState) -> Router {
    Router::new()
        .route("/sdk/token", post(credentials::token))
        .route("/sdk/proxy", post(credentials::proxy))
        .route(
            "/sdk/oauth/audit/api-call",
            post(credentials::audit_api_call),
        )
        .route(
            "/sdk/grants/{grant_id}/report-scope-mismatch",
            post(credentials::report_scope_mismatch),
        )
        .route("/sdk/grants/list", post(grants::list))
        .route("/sdk/oauth/grants/{grant_id}/revoke", post(grants::revoke))
        .route(
            "/sdk/grants/{grant_id}/delegations/{agent}",
            delete(grants::undelegate),
        )
        .route("/sdk/oauth/connect/session", post(connect::create))
        .route("/sdk/oauth/connect/session/poll", post(connect::poll))
        .route(
            "/sdk/managed-secrets/connect/session",
            post(connect::secret_session),
        )
        .route("/sdk/approvals/{id}", get(manage::approval_status))
        .route("/sdk/approvals/{id}/result", get(manage::approval_result))
        .route("/sdk/identity/resolve", post(manage::identity_resolve))
        .route("/sdk/auth/verify-token", post(manage::verify_token))
        .route(
            "/sdk/agents",
            post(manage::agent_create).get(manage::agent_list),
        )
        .route("/sdk/agents/me", get(manage::agent_me))
        .route(
            "/sdk/agents/{id}",
            get(manage::agent_get)
                .patch(manage::agent_patch)
                .delete(manage::agent_delete),
        )
        .route("/sdk/keys/{id}/rotate", post(manage::key_rotate))
        .route("/sdk/keys/{id}", delete(manage::key_revoke))
        .route("/sdk/oauth/provider-catalog", get(manage::provider_catalog))
        .route("/sdk/scopes", get(manage::scopes))
        .route("/sdk/{*rest}", any(not_implemented))
        .with_state(st)
}

/// Everything else under `/sdk/` (authenticated first, so it reveals nothing to strangers).
async fn not_implemented(
    State(st): State<SdkState>,
    uri: Uri,
    ctx: Result<SdkCtx, SdkError>,
) -> SdkResult {
    let ctx = ctx?;
    let e = SdkError::not_implemented(uri.path());
    ctx.audit_refusal(&st, uri.path(), &e).await;
    Err(e)
}

/// The grant a request names by UUID (or, for convenience, by our own `grt_` id).
pub(crate) async fn grant_by_sdk_id(st: &SdkState, id: &str) -> Result<GrantRow, SdkError> {
    let found = if id.starts_with("grt_") {
        st.vault.operator_grant(id).await?
    } else {
        st.vault.grant_by_sdk_id(id).await?
    };
    found.ok_or_else(|| {
        SdkError::new(
            StatusCode::NOT_FOUND,
            "grant_not_found",
            format!("no grant `{id}` is visible to you"),
        )
    })
}

/// A JSON request context (`X-Alter-Context`) as the vault takes it.
pub(crate) type Context = BTreeMap<String, Value>;

/// `200` with a JSON body.
pub(crate) fn ok(v: impl serde::Serialize) -> SdkResult {
    Ok(axum::Json(v).into_response())
}

/// The UUID the SDK names a grant by.
pub(crate) fn gid(g: &str) -> String {
    sdk_uuid(g)
}
