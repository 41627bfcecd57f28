//! The MCP surface: tool definitions (schemas, annotations) and the `ServerHandler` that turns
//! `tools/call` into `Vault` calls. Knows the `Vault` API and `Principal`, nothing of storage,
//! crypto or transports. Who is calling comes from above: a fixed principal (stdio) or the
//! principal the HTTP identity layer put in the request's extensions.

mod approval;
pub mod args;
mod connect_in_client;
mod inflight;
mod interaction;
pub mod output;
pub mod packs;
mod rounds;
pub mod tools;

use std::sync::Arc;

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
        PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
};

pub use inflight::InFlight;
pub use tools::{ToolKind, ToolSet, core_tools};

use crate::vault::{Caller, Principal, Vault};

/// How the server learns who is calling.
#[derive(Clone, Debug)]
pub enum IdentitySource {
    /// One principal for the whole connection (stdio: the local user).
    Fixed(Principal),
    /// The principal the HTTP identity layer attached to each request.
    PerRequest,
}

/// The MCP server: one per connection (stdio) or per session (HTTP); cheap to clone.
#[derive(Clone)]
pub struct VaultMcp {
    vault: Vault,
    identity: IdentitySource,
    tools: Arc<ToolSet>,
    /// Whether the server may send requests (elicitation) to the client on this connection.
    elicitation: bool,
    /// Calls in progress, shared by every connection of a server (graceful shutdown waits on it).
    inflight: InFlight,
}

pub const INSTRUCTIONS: &str = "vault-mcp calls third-party APIs (GitHub, Google, Slack, Stripe, ...) as the user \
without showing you any credential. Use vault_request with the provider's real API URL and `provider` \
(see list_providers) or a `grant_id` (see list_grants); the vault injects the credential. If a result has \
error `authorization_required` or `scope_reauth_required`, show the user `connect_url`, wait until they say \
they are done, then retry the same call. Never ask the user for tokens or API keys.";

impl VaultMcp {
    pub fn new(vault: Vault, identity: IdentitySource, tools: Arc<ToolSet>) -> Self {
        VaultMcp {
            vault,
            identity,
            tools,
            elicitation: true,
            inflight: InFlight::default(),
        }
    }

    /// Count this server's calls in `inflight` (shared across connections).
    pub fn with_inflight(mut self, inflight: InFlight) -> Self {
        self.inflight = inflight;
        self
    }

    /// For connections where the server cannot send requests to the client (stateless HTTP).
    pub fn without_elicitation(mut self) -> Self {
        self.elicitation = false;
        self
    }

    fn caller(&self, ctx: &RequestContext<RoleServer>, tool: &str) -> Result<Caller, ErrorData> {
        let principal = match &self.identity {
            IdentitySource::Fixed(p) => p.clone(),
            IdentitySource::PerRequest => ctx
                .extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<Principal>())
                .cloned()
                // The identity layer rejects unauthenticated requests before they get here;
                // reaching this means a wiring bug, so fail closed.
                .ok_or_else(|| {
                    ErrorData::internal_error("no authenticated principal on this request", None)
                })?,
        };
        let groups = ctx
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<crate::vault::Groups>())
            .map(|g| g.0.clone())
            .unwrap_or_default();
        let mut caller = Caller::new(principal, tool).with_groups(groups);
        caller.client = ctx.client_info().map(|i| i.name);
        // An agent is named by its identity; a label only attributes a user's call.
        if !caller.is_agent() {
            caller.agent = agent_label(ctx);
        }
        // Nobody sits behind an agent's client to answer; an operator may keep approvals on the page.
        if self.elicitation && !caller.is_agent() && self.vault.settings().approvals.in_client {
            caller.approver = Some(Arc::new(approval::ElicitApprover {
                peer: ctx.peer.clone(),
                timeout: self.vault.policy().approval_timeout(),
            }));
        }
        Ok(caller)
    }
}

/// The agent label a client attaches to a call, for the audit trail: `_meta["io.vault-mcp/agent"]`
/// on the request, else the `X-Vault-Agent` header over HTTP. Printable ASCII, at most 100 characters.
fn agent_label(ctx: &RequestContext<RoleServer>) -> Option<String> {
    let from_meta = ctx
        .meta
        .get("io.vault-mcp/agent")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let from_header = || {
        ctx.extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.headers.get("x-vault-agent"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    from_meta
        .or_else(from_header)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s.len() <= 100 && s.bytes().all(|b| (0x20..0x7f).contains(&b)))
}

impl ServerHandler for VaultMcp {
    fn get_info(&self) -> ServerConfig {
        let mut info = Implementation::new("vault-mcp", env!("CARGO_PKG_VERSION"));
        info.title = Some("Vault MCP".into());
        info.description =
            Some("Authenticated API access for agents; credentials never reach the model".into());
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(info)
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.list()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.get(name).map(|e| e.tool.clone())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        let entry = self.tools.get(&name).ok_or_else(|| {
            ErrorData::invalid_params(
                format!("unknown tool `{name}`; call tools/list for the available tools"),
                None,
            )
        })?;
        let caller = self.caller(&context, &name)?;
        if let Err(e) = self.vault.check_label(&caller).await {
            return tools::vault_error(e);
        }
        let args = serde_json::Value::Object(request.arguments.unwrap_or_default());
        let _running = self.inflight.enter();
        let channel = interaction::Channel::of(&context, self.elicitation);
        if let interaction::Channel::Rounds { form, url } = channel {
            return rounds::call(
                &self.vault,
                caller,
                &entry.kind,
                &name,
                args,
                request.input_responses,
                request.request_state,
                rounds::Abilities { form, url },
                &self.inflight,
                &context,
            )
            .await;
        }
        if request.request_state.is_some() {
            return Err(ErrorData::invalid_params(
                "requestState is only used with protocol 2026-07-28; call the tool again without it",
                None,
            ));
        }
        let first = tools::dispatch(&self.vault, &caller, &entry.kind, &name, args.clone()).await?;
        match connect_in_client::follow(
            &self.vault,
            &caller,
            channel,
            first,
            &self.inflight,
            &context,
        )
        .await
        {
            connect_in_client::Followed::Keep(r) => Ok(r.into()),
            connect_in_client::Followed::Error(e) => Err(e),
            // Connect ended: the original call once more; whatever it answers is the answer
            // (never a second prompt in the same call).
            connect_in_client::Followed::Retry => {
                tools::dispatch(&self.vault, &caller, &entry.kind, &name, args)
                    .await
                    .map(CallToolResponse::from)
            }
        }
    }
}
