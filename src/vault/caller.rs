//! Who is calling the vault: the principal whose grants apply, plus attribution for the audit
//! trail (which agent, which MCP client, which tool). Produced by the identity layer.

use crate::model::PrincipalKind;

/// Who is calling: a kind and an id such as `local` or `https://idp.example.com#alice` (users),
/// an agent's name, a group's name. Grants belong to one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    kind: PrincipalKind,
    id: String,
    display: String,
}

impl Principal {
    /// A user principal.
    pub fn new(id: impl Into<String>, display: impl Into<String>) -> Self {
        Self::of_kind(PrincipalKind::User, id, display)
    }

    pub fn of_kind(kind: PrincipalKind, id: impl Into<String>, display: impl Into<String>) -> Self {
        Principal {
            kind,
            id: id.into(),
            display: display.into(),
        }
    }

    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }

    /// (kind, id): how grants name their owner.
    pub fn owner(&self) -> (PrincipalKind, &str) {
        (self.kind, &self.id)
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

/// A user's IdP groups, read by the identity layer from the request's token (empty for agents
/// and the local user). Travels beside the `Principal` in an HTTP request's extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups(pub Vec<String>);

/// The full calling context of one vault operation.
#[derive(Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The user's current IdP groups (from the access token of this very request; empty for
    /// agents and the local user). Never cached: a token without the group loses its grants.
    pub groups: Vec<String>,
    /// MCP client name from `initialize` (e.g. "claude-ai"), when known.
    pub client: Option<String>,
    /// Agent label the client or operator attached (attribution only, never access), or the
    /// name of the agent when the principal is one.
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
            .field("groups", &self.groups)
            .field("client", &self.client)
            .field("agent", &self.agent)
            .field("tool", &self.tool)
            .field("approver", &self.approver.is_some())
            .finish()
    }
}

impl Caller {
    pub fn new(principal: Principal, tool: impl Into<String>) -> Self {
        let agent = (principal.kind() == PrincipalKind::Agent).then(|| principal.display.clone());
        Caller {
            principal,
            groups: Vec::new(),
            client: None,
            agent,
            tool: tool.into(),
            approver: None,
        }
    }

    /// With the groups the identity layer read from the token.
    pub fn with_groups(mut self, groups: Vec<String>) -> Self {
        self.groups = groups;
        self
    }

    pub fn is_agent(&self) -> bool {
        self.principal.kind() == PrincipalKind::Agent
    }
}
