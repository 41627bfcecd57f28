//! The tool list and the dispatch of each tool to the vault.

use std::{collections::BTreeMap, sync::Arc};

use rmcp::{
    ErrorData,
    handler::server::common::{schema_for_input, schema_for_output},
    model::{CallToolResult, Tool, ToolAnnotations},
};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    args::{
        ListGrantsArgs, ListProvidersArgs, QueryValue, ReleaseDelegationArgs, ScopesArg,
        StartConnectArgs, UndelegateArgs, VaultRequestArgs,
    },
    output::{
        self, DelegationOutput, ListGrantsOutput, ListProvidersOutput, StartConnectOutput,
        VaultRequestOutput,
    },
};
use crate::vault::{
    ApiRequest, Caller, GrantSelector, RequestBody, StartConnect, Vault, VaultError,
};

/// What a tool does when called.
#[derive(Clone, Debug)]
pub enum ToolKind {
    /// `read_only`: only GET, HEAD and OPTIONS (`serve --read-only`).
    VaultRequest {
        read_only: bool,
    },
    ListGrants,
    ListProviders,
    StartConnect,
    UndelegateGrant,
    ReleaseDelegation,
    /// A tool from a tool pack.
    Pack(std::sync::Arc<super::packs::PackTool>),
}

#[derive(Clone, Debug)]
pub struct ToolEntry {
    pub tool: Tool,
    pub kind: ToolKind,
    /// True when calling the tool can change something at a provider.
    pub writes: bool,
}

/// The tools one server offers, in listing order.
#[derive(Clone, Debug, Default)]
pub struct ToolSet {
    entries: Vec<ToolEntry>,
}

impl ToolSet {
    pub fn new(entries: Vec<ToolEntry>) -> Self {
        ToolSet { entries }
    }

    pub fn list(&self) -> Vec<Tool> {
        self.entries.iter().map(|e| e.tool.clone()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&ToolEntry> {
        self.entries.iter().find(|e| e.tool.name == name)
    }

    pub fn push(&mut self, e: ToolEntry) {
        self.entries.retain(|x| x.tool.name != e.tool.name);
        self.entries.push(e);
    }

    pub fn into_arc(self) -> Arc<Self> {
        Arc::new(self)
    }

    /// Built-in tools plus every pack tool that loaded (see `packs::load`).
    pub fn with_packs(read_only: bool, loaded: &super::packs::Loaded) -> Self {
        let mut set = core_tools(read_only);
        let out = clean(schema_for_output::<VaultRequestOutput>());
        for p in &loaded.tools {
            set.push(ToolEntry {
                tool: super::packs::tool(p, out.clone()),
                kind: ToolKind::Pack(p.clone()),
                writes: p.writes,
            });
        }
        set
    }
}

/// schemars marks integers with formats such as `uint64` that JSON Schema does not define;
/// validators warn about them and models gain nothing from them, so they are dropped.
fn strip_int_formats(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| f.starts_with("uint") || f.starts_with("int"))
            {
                m.remove("format");
            }
            m.values_mut().for_each(strip_int_formats);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_int_formats),
        _ => {}
    }
}

fn clean(
    schema: std::sync::Arc<rmcp::model::JsonObject>,
) -> std::sync::Arc<rmcp::model::JsonObject> {
    let mut v = Value::Object((*schema).clone());
    strip_int_formats(&mut v);
    match v {
        Value::Object(m) => std::sync::Arc::new(m),
        _ => unreachable!("an object stays an object"),
    }
}

fn tool<I: JsonSchema + 'static, O: JsonSchema + 'static>(
    name: &'static str,
    title: &str,
    description: &str,
    ann: ToolAnnotations,
) -> Tool {
    let mut t = Tool::new(
        name,
        description.to_owned(),
        clean(schema_for_input::<I>().unwrap_or_else(|e| panic!("input schema of {name}: {e}"))),
    );
    t.title = Some(title.to_owned());
    t.output_schema = Some(clean(schema_for_output::<O>()));
    t.annotations = Some(ann);
    t
}

fn ann(
    title: &str,
    read_only: bool,
    destructive: bool,
    idempotent: bool,
    open_world: bool,
) -> ToolAnnotations {
    ToolAnnotations::from_raw(
        Some(title.to_owned()),
        Some(read_only),
        Some(destructive),
        Some(idempotent),
        Some(open_world),
    )
}

const VAULT_REQUEST_DESCRIPTION: &str = "Make an HTTP request to a third-party API (GitHub, Google, Slack, Stripe, ...) as the user. \
The vault picks the user's grant for `provider` (or `grant_id`), injects the credential, and returns the \
response (status, headers, body). You never see or need the credential. If the result has error \
`authorization_required` or `scope_reauth_required`, show the user `connect_url` and retry after they finish.";

/// The built-in tools; with `read_only`, `vault_request` accepts only GET, HEAD and OPTIONS.
pub fn core_tools(read_only: bool) -> ToolSet {
    let vr_description = if read_only {
        format!(
            "{VAULT_REQUEST_DESCRIPTION} This server is read-only: only GET, HEAD and OPTIONS requests are allowed."
        )
    } else {
        VAULT_REQUEST_DESCRIPTION.to_owned()
    };
    ToolSet::new(vec![
        ToolEntry {
            tool: tool::<VaultRequestArgs, VaultRequestOutput>(
                "vault_request",
                "Call an API as the user",
                &vr_description,
                ann(
                    "Call an API as the user",
                    read_only,
                    !read_only,
                    read_only,
                    true,
                ),
            ),
            kind: ToolKind::VaultRequest { read_only },
            writes: !read_only,
        },
        ToolEntry {
            tool: tool::<ListGrantsArgs, ListGrantsOutput>(
                "list_grants",
                "List connected accounts",
                "List the user's grants (connected accounts and stored API keys): id, provider, account, scopes, \
status. Use a grant's id as `grant_id` in vault_request. Never returns credentials.",
                ann("List connected accounts", true, false, true, false),
            ),
            kind: ToolKind::ListGrants,
            writes: false,
        },
        ToolEntry {
            tool: tool::<ListProvidersArgs, ListProvidersOutput>(
                "list_providers",
                "List providers",
                "List the providers the vault knows: id, name, API hosts a credential may be sent to, default \
scopes, and whether each can be connected now.",
                ann("List providers", true, false, true, false),
            ),
            kind: ToolKind::ListProviders,
            writes: false,
        },
        ToolEntry {
            tool: tool::<StartConnectArgs, StartConnectOutput>(
                "start_connect",
                "Connect an account",
                "Create a Connect link for one or more providers (optionally with extra scopes). Show the user \
`connect_url`; they authorize in their browser, and the new grant is then usable by vault_request.",
                ann("Connect an account", false, false, false, false),
            ),
            kind: ToolKind::StartConnect,
            writes: false,
        },
        ToolEntry {
            tool: tool::<UndelegateArgs, DelegationOutput>(
                "undelegate_grant",
                "Take a grant back from an agent",
                "Stop a named agent from using one of your grants (list_grants shows `delegated_to`). The grant \
itself stays connected. Doing it twice is harmless.",
                ann("Take a grant back from an agent", false, false, true, false),
            ),
            kind: ToolKind::UndelegateGrant,
            writes: false,
        },
        ToolEntry {
            tool: tool::<ReleaseDelegationArgs, DelegationOutput>(
                "release_delegation",
                "Give up a delegated grant",
                "For an agent: give up a grant a user delegated to you (list_grants shows `access: delegated`) once \
the work is done. The user's grant stays connected. Doing it twice is harmless.",
                ann("Give up a delegated grant", false, false, true, false),
            ),
            kind: ToolKind::ReleaseDelegation,
            writes: false,
        },
    ])
}

fn parse<T: DeserializeOwned>(tool: &str, args: Value) -> Result<T, ErrorData> {
    serde_path_to_error::deserialize(args).map_err(|e| {
        let path = e.path().to_string();
        let msg = if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        };
        ErrorData::invalid_params(
            format!("arguments of {tool}: {msg}"),
            Some(serde_json::json!({ "error": "invalid_request" })),
        )
    })
}

fn invalid(field: &str, message: &str) -> ErrorData {
    output::error_result(&VaultError::invalid(field, message), |p| p)
        .expect_err("invalid_request is a JSON-RPC error")
}

/// Arguments of vault_request → the vault's request type.
pub fn to_api_request(a: VaultRequestArgs) -> Result<ApiRequest, ErrorData> {
    let json = a.json.filter(|v| !v.is_null());
    let body = match (json, a.body) {
        (Some(_), Some(_)) => {
            return Err(invalid("json", "give either `json` or `body`, not both"));
        }
        (Some(j), None) => RequestBody::Json(j),
        (None, Some(b)) => RequestBody::Text(b),
        (None, None) => RequestBody::None,
    };
    let grant = match (
        a.grant_id.filter(|s| !s.is_empty()),
        a.provider.filter(|s| !s.is_empty()),
    ) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "grant_id",
                "give either `grant_id` or `provider`, not both",
            ));
        }
        (Some(id), None) => {
            if a.account.is_some() {
                return Err(invalid(
                    "account",
                    "`account` selects among a provider's grants; use it with `provider`, not `grant_id`",
                ));
            }
            GrantSelector::Id(id)
        }
        (None, Some(p)) => GrantSelector::Provider {
            provider: p.trim().to_ascii_lowercase(),
            account: a.account.filter(|s| !s.is_empty()),
        },
        (None, None) => {
            return Err(invalid(
                "provider",
                "say which grant to use: `provider` (e.g. \"github\") or `grant_id`",
            ));
        }
    };
    let mut query_params = Vec::new();
    for (k, v) in a.query_params {
        match v {
            QueryValue::One(s) => query_params.push((k, s.to_text())),
            QueryValue::Many(list) => {
                query_params.extend(list.iter().map(|s| (k.clone(), s.to_text())))
            }
        }
    }
    Ok(ApiRequest {
        method: a.method,
        url: a.url,
        path_params: a.path_params,
        query_params,
        headers: a.headers,
        body,
        grant,
        reason: a.reason.filter(|s| !s.trim().is_empty()),
        required_scopes: a.required_scopes,
        read_only: false,
        context: a.context.into_iter().map(|(k, v)| (k, v.0)).collect(),
    })
}

pub(crate) async fn dispatch(
    vault: &Vault,
    caller: &Caller,
    kind: &ToolKind,
    name: &str,
    args: Value,
) -> Result<CallToolResult, ErrorData> {
    match kind {
        ToolKind::Pack(pack_tool) => super::packs::call(vault, caller, pack_tool, args).await,
        ToolKind::VaultRequest { read_only } => {
            let mut req = to_api_request(parse::<VaultRequestArgs>(name, args)?)?;
            // The vault refuses (and audits) anything but reads on a read-only server.
            req.read_only = *read_only;
            output::request_result(vault.request(caller, req).await)
        }
        ToolKind::ListGrants => {
            let a: ListGrantsArgs = parse(name, args)?;
            let limit = a.limit.unwrap_or(50);
            if !(1..=200).contains(&limit) {
                return Err(invalid("limit", "must be between 1 and 200"));
            }
            let offset: usize = match a.cursor.as_deref().filter(|c| !c.is_empty()) {
                None => 0,
                Some(c) => c.parse().map_err(|_| {
                    invalid(
                        "cursor",
                        "pass the `next_cursor` value of the previous page unchanged",
                    )
                })?,
            };
            match vault.list_grants(caller, a.provider.as_deref()).await {
                Ok(all) => {
                    let total = all.len();
                    let page: Vec<_> = all.into_iter().skip(offset).take(limit as usize).collect();
                    let next =
                        (offset + page.len() < total).then(|| (offset + page.len()).to_string());
                    Ok(output::ok_result(&ListGrantsOutput {
                        grants: page,
                        next_cursor: next,
                        total,
                        problem: Default::default(),
                    }))
                }
                Err(e) => output::error_result(&e, |problem| ListGrantsOutput {
                    problem,
                    ..Default::default()
                }),
            }
        }
        ToolKind::ListProviders => {
            let a: ListProvidersArgs = parse(name, args)?;
            let mut providers = vault.list_providers();
            if a.configured_only.unwrap_or(false) {
                providers.retain(|p| p.configured);
            }
            Ok(output::ok_result(&ListProvidersOutput { providers }))
        }
        ToolKind::StartConnect => {
            let a: StartConnectArgs = parse(name, args)?;
            let providers: Vec<String> = a
                .providers
                .iter()
                .map(|p| p.trim().to_ascii_lowercase())
                .collect();
            let scopes: BTreeMap<String, Vec<String>> = match a.scopes {
                None => BTreeMap::new(),
                Some(ScopesArg::PerProvider(m)) => m,
                Some(ScopesArg::List(list)) => {
                    if providers.len() != 1 {
                        return Err(invalid(
                            "scopes",
                            "with several providers, give scopes as {\"provider\": [\"scope\", ...]}",
                        ));
                    }
                    BTreeMap::from([(providers[0].clone(), list)])
                }
            };
            let req = StartConnect {
                providers,
                scopes,
                repair_grant_id: None,
                return_url: a.return_url,
                agent: a.agent.filter(|s| !s.trim().is_empty()),
                ttl_secs: a.ttl_seconds,
                account_label: None,
            };
            match vault.start_connect(caller, req).await {
                Ok(s) => Ok(output::ok_result(&StartConnectOutput {
                    connect_url: Some(s.connect_url.clone()),
                    expires_at: Some(s.expires_at),
                    session_id: Some(s.session_id),
                    providers: Some(s.providers),
                    scopes: Some(s.scopes),
                    agent: s.agent,
                    ttl_seconds: s.grant_ttl_secs,
                    problem: output::Problem {
                        message: Some(format!(
                            "Ask the user to open {} and authorize; then continue.",
                            s.connect_url
                        )),
                        ..Default::default()
                    },
                })),
                Err(e) => output::error_result(&e, |problem| StartConnectOutput {
                    problem,
                    ..Default::default()
                }),
            }
        }
        ToolKind::UndelegateGrant => {
            let a: UndelegateArgs = parse(name, args)?;
            let r = vault
                .undelegate_grant(caller, &a.grant_id, &a.agent, false)
                .await;
            delegation_result(r, a.grant_id, Some(a.agent))
        }
        ToolKind::ReleaseDelegation => {
            let a: ReleaseDelegationArgs = parse(name, args)?;
            let r = vault.release_delegation(caller, &a.grant_id).await;
            delegation_result(r, a.grant_id, caller.agent.clone())
        }
    }
}

/// A vault error before any tool ran (a refused label): a JSON-RPC error or a result.
pub(crate) fn vault_error(e: VaultError) -> Result<rmcp::model::CallToolResponse, ErrorData> {
    output::error_result(&e, |problem| DelegationOutput {
        problem,
        ..Default::default()
    })
    .map(rmcp::model::CallToolResponse::from)
}

fn delegation_result(
    r: Result<bool, VaultError>,
    grant_id: String,
    agent: Option<String>,
) -> Result<CallToolResult, ErrorData> {
    match r {
        Ok(changed) => Ok(output::ok_result(&DelegationOutput {
            grant_id: Some(grant_id),
            agent,
            changed: Some(changed),
            problem: output::Problem {
                message: Some(if changed {
                    "Done: the agent can no longer use this grant; the grant itself stays connected.".into()
                } else {
                    "Nothing to do: there was no such delegation.".into()
                }),
                ..Default::default()
            },
        })),
        Err(e) => output::error_result(&e, |problem| DelegationOutput {
            problem,
            ..Default::default()
        }),
    }
}
