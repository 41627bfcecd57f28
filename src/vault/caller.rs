//! Who is calling the vault: the principal whose grants apply, plus attribution for the audit
//! trail (which agent, which MCP client, which tool). Produced by the identity layer.

/// A principal id such as `local` or `oidc:https://idp.example.com|alice`. Grants belong to one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    id: String,
    display: String,
}

impl Principal {
    pub fn new(id: impl Into<String>, display: impl Into<String>) -> Self {
        Principal {
            id: id.into(),
            display: display.into(),
        }
    }

    /// The local user of a stdio/CLI session.
    pub fn local(name: &str) -> Self {
        Principal::new(name, name)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A name a person recognizes (email, username), for pages and messages.
    pub fn display(&self) -> &str {
        &self.display
    }
}

/// The full calling context of one vault operation.
#[derive(Clone)]
pub struct Caller {
    pub principal: Principal,
    /// MCP client name from `initialize` (e.g. "claude-ai"), when known.
    pub client: Option<String>,
    /// Agent label the client or operator attached, when known.
    pub agent: Option<String>,
    /// The entry point: an MCP tool name or a CLI command.
    pub tool: String,
    /// Who can approve a call on the spot (the MCP client through elicitation), if anyone.
    pub approver: Option<super::approval::SharedApprover>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("principal", &self.principal)
            .field("client", &self.client)
            .field("agent", &self.agent)
            .field("tool", &self.tool)
            .field("approver", &self.approver.is_some())
            .finish()
    }
}

impl Caller {
    pub fn new(principal: Principal, tool: impl Into<String>) -> Self {
        Caller {
            principal,
            client: None,
            agent: None,
            tool: tool.into(),
            approver: None,
        }
    }
}
