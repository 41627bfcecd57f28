//! Calling a pack tool: check the arguments against the declared params, build the request,
//! run it through the vault exactly like `vault_request`, and keep only the declared result
//! fields.

use std::collections::BTreeMap;

use rmcp::{ErrorData, model::CallToolResult};
use serde_json::{Map, Value};

use super::{PackTool, ParamIn, ParamType};
use crate::{
    mcp::output,
    vault::{ApiRequest, Caller, GrantSelector, RequestBody, Vault},
};

fn invalid(tool: &str, field: &str, msg: &str) -> ErrorData {
    ErrorData::invalid_params(
        format!("arguments of {tool}: {field}: {msg}"),
        Some(serde_json::json!({ "error": "invalid_request", "field": field })),
    )
}

fn type_ok(t: ParamType, v: &Value) -> bool {
    match t {
        ParamType::String => v.is_string(),
        ParamType::Integer => v.is_i64() || v.is_u64(),
        ParamType::Number => v.is_number(),
        ParamType::Boolean => v.is_boolean(),
        ParamType::Array => v.is_array(),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Replace `"{{name}}"` strings in a body template by argument values; drop keys whose
/// argument was not given.
fn fill(template: &Value, args: &Map<String, Value>) -> Option<Value> {
    match template {
        Value::String(s) if s.starts_with("{{") && s.ends_with("}}") => {
            args.get(s[2..s.len() - 2].trim()).cloned()
        }
        Value::Object(m) => Some(Value::Object(
            m.iter()
                .filter_map(|(k, v)| fill(v, args).map(|x| (k.clone(), x)))
                .collect(),
        )),
        Value::Array(a) => Some(Value::Array(
            a.iter().filter_map(|v| fill(v, args)).collect(),
        )),
        other => Some(other.clone()),
    }
}

/// Pick one dotted path (`a.b`, `labels[].name`) out of `v`, keeping its nesting.
fn pick(v: &Value, path: &[&str]) -> Option<Value> {
    let Some((head, rest)) = path.split_first() else {
        return Some(v.clone());
    };
    let (key, each) = match head.strip_suffix("[]") {
        Some(k) => (k, true),
        None => (*head, false),
    };
    let inner = v.get(key)?;
    let picked = if each {
        Value::Array(
            inner
                .as_array()?
                .iter()
                .filter_map(|e| pick(e, rest))
                .collect(),
        )
    } else {
        pick(inner, rest)?
    };
    let mut m = Map::new();
    m.insert(key.to_owned(), picked);
    Some(Value::Object(m))
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, v) in b.into_iter().enumerate() {
                match a.get_mut(i) {
                    Some(existing) => merge(existing, v),
                    None => a.push(v),
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn project_one(v: &Value, fields: &[String]) -> Value {
    let mut out = Value::Object(Map::new());
    for f in fields {
        let segs: Vec<&str> = f.split('.').collect();
        if let Some(p) = pick(v, &segs) {
            merge(&mut out, p);
        }
    }
    out
}

/// Apply `result_path` and `result` to a JSON body.
pub fn shape(body: Value, result_path: Option<&str>, fields: &[String]) -> Value {
    let body = match result_path {
        Some(p) => p
            .split('.')
            .try_fold(&body, |v, k| v.get(k))
            .cloned()
            .unwrap_or(body),
        None => body,
    };
    if fields.is_empty() {
        return body;
    }
    match body {
        Value::Array(items) => Value::Array(items.iter().map(|i| project_one(i, fields)).collect()),
        other => project_one(&other, fields),
    }
}

pub async fn call(
    vault: &Vault,
    caller: &Caller,
    tool: &PackTool,
    args: Value,
) -> Result<CallToolResult, ErrorData> {
    let name = tool.def.name.as_str();
    let Value::Object(args) = args else {
        return Err(invalid(name, "arguments", "must be an object"));
    };
    for k in args.keys() {
        if k != "account" && k != "reason" && !tool.def.params.iter().any(|p| &p.name == k) {
            return Err(invalid(
                name,
                k,
                "unknown argument; see the tool's input schema",
            ));
        }
    }
    let mut path_params = BTreeMap::new();
    let mut query_params = Vec::new();
    let mut headers = tool.def.headers.clone();
    let mut body_fields = Map::new();
    for p in &tool.def.params {
        let Some(v) = args.get(&p.name).filter(|v| !v.is_null()) else {
            if p.required {
                return Err(invalid(name, &p.name, "is required"));
            }
            continue;
        };
        if !type_ok(p.ty, v) {
            return Err(invalid(
                name,
                &p.name,
                &format!("must be of type {:?}", p.ty).to_lowercase(),
            ));
        }
        if let (Some(items), Value::Array(a)) = (p.items, v)
            && !a.iter().all(|x| type_ok(items, x))
        {
            return Err(invalid(
                name,
                &p.name,
                &format!("items must be of type {items:?}").to_lowercase(),
            ));
        }
        if let Some(choices) = &p.choices
            && !choices.contains(v)
        {
            let list: Vec<String> = choices.iter().map(text).collect();
            return Err(invalid(
                name,
                &p.name,
                &format!("must be one of {}", list.join(", ")),
            ));
        }
        if let Some(n) = v.as_f64()
            && (p.minimum.is_some_and(|m| n < m) || p.maximum.is_some_and(|m| n > m))
        {
            return Err(invalid(
                name,
                &p.name,
                &format!(
                    "must be between {} and {}",
                    p.minimum.unwrap_or(f64::MIN),
                    p.maximum.unwrap_or(f64::MAX)
                ),
            ));
        }
        let wire = p.wire_name.clone().unwrap_or_else(|| p.name.clone());
        match p.location {
            ParamIn::Path => {
                path_params.insert(p.name.clone(), text(v));
            }
            ParamIn::Query => match v {
                Value::Array(a) => query_params.extend(a.iter().map(|x| (wire.clone(), text(x)))),
                other => query_params.push((wire, text(other))),
            },
            ParamIn::Header => {
                headers.insert(wire, text(v));
            }
            ParamIn::Body => {
                body_fields.insert(wire, v.clone());
            }
        }
    }
    let body = match &tool.def.body {
        Some(template) => {
            let t = serde_json::to_value(template).expect("TOML tables are JSON");
            RequestBody::Json(fill(&t, &args).unwrap_or(Value::Object(Map::new())))
        }
        None if !body_fields.is_empty() => RequestBody::Json(Value::Object(body_fields)),
        None => RequestBody::None,
    };
    let req = ApiRequest {
        method: tool.def.method.clone(),
        url: tool.def.url.clone(),
        path_params,
        query_params,
        headers,
        body,
        grant: GrantSelector::Provider {
            provider: tool.provider.clone(),
            account: args
                .get("account")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        },
        reason: args
            .get("reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
        required_scopes: tool.def.scopes.clone(),
        // Read-only servers load only packs' reading tools (see `packs::load`).
        read_only: false,
        context: Default::default(),
    };
    let result = vault.request(caller, req).await.map(|mut resp| {
        if resp.ok && resp.body_encoding == "json" {
            resp.body = shape(resp.body, tool.def.result_path.as_deref(), &tool.def.result);
        }
        resp
    });
    output::request_result(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn projection_keeps_nesting_and_maps_arrays() {
        let body = json!([
            {"number": 1, "title": "a", "user": {"login": "x", "id": 9}, "labels": [{"name": "bug", "color": "red"}], "extra": true},
            {"number": 2, "title": "b", "user": {"login": "y"}, "labels": []}
        ]);
        let out = shape(
            body,
            None,
            &["number".into(), "user.login".into(), "labels[].name".into()],
        );
        assert_eq!(
            out,
            json!([
                {"number": 1, "user": {"login": "x"}, "labels": [{"name": "bug"}]},
                {"number": 2, "user": {"login": "y"}, "labels": []}
            ])
        );
        let search = json!({"total_count": 1, "items": [{"id": 5, "body": "long"}]});
        assert_eq!(
            shape(search, Some("items"), &["id".into()]),
            json!([{"id": 5}])
        );
    }

    #[test]
    fn body_template_fills_and_drops_missing() {
        let t = json!({"query": "q", "variables": {"first": "{{first}}", "after": "{{after}}"}});
        let mut args = Map::new();
        args.insert("first".into(), json!(10));
        assert_eq!(
            fill(&t, &args),
            Some(json!({"query": "q", "variables": {"first": 10}}))
        );
    }
}
