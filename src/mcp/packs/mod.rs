//! Tool packs: provider-specific tools declared in TOML (`tools/*.toml`) that compile to the
//! same vault request pipeline as `vault_request` (grant resolution, policy, audit, Connect
//! links). Packs ship inside the binary; users add or override packs in their config directory,
//! switch packs or single tools off, and `--read-only` drops tools that write. A broken pack is
//! reported with file and line and the others still load.

mod exec;
pub mod model;

use std::{collections::BTreeMap, path::Path, sync::Arc};

use rmcp::model::{Tool, ToolAnnotations};
use serde_json::{Map, Value, json};

pub use exec::call;
pub use model::{PackError, ParamIn, ParamType, ToolDef};

/// Packs built into the binary: (file name, contents).
pub const BUILTIN: &[(&str, &str)] = &[
    ("github.toml", include_str!("../../../tools/github.toml")),
    ("google.toml", include_str!("../../../tools/google.toml")),
    ("slack.toml", include_str!("../../../tools/slack.toml")),
    ("linear.toml", include_str!("../../../tools/linear.toml")),
    ("notion.toml", include_str!("../../../tools/notion.toml")),
    ("stripe.toml", include_str!("../../../tools/stripe.toml")),
    ("hubspot.toml", include_str!("../../../tools/hubspot.toml")),
    ("gitlab.toml", include_str!("../../../tools/gitlab.toml")),
    (
        "microsoft.toml",
        include_str!("../../../tools/microsoft.toml"),
    ),
    ("asana.toml", include_str!("../../../tools/asana.toml")),
];

/// A loaded pack tool, ready to list and call.
#[derive(Debug, Clone)]
pub struct PackTool {
    pub pack: String,
    pub provider: String,
    pub def: ToolDef,
    pub writes: bool,
}

/// Result of loading every pack.
#[derive(Debug, Default)]
pub struct Loaded {
    pub tools: Vec<Arc<PackTool>>,
    pub errors: Vec<PackError>,
    pub packs: Vec<PackInfo>,
}

/// A pack as listed by `vault-mcp tools list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PackInfo {
    pub id: String,
    pub source: String,
    pub description: String,
    pub disabled: bool,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

const CORE_NAMES: &[&str] = &[
    "vault_request",
    "list_grants",
    "list_providers",
    "start_connect",
];

fn check(file: &str, text: &str, pack: &model::PackFile) -> Result<(), PackError> {
    let err = |line: Option<usize>, message: String| PackError {
        file: file.to_owned(),
        line,
        message,
    };
    for t in &pack.tools {
        let line = model::line_of_tool(text, &t.name);
        if !valid_name(&t.name) {
            return Err(err(
                line,
                format!(
                    "tools.name `{}`: use lower-case letters, digits and `_`",
                    t.name
                ),
            ));
        }
        if CORE_NAMES.contains(&t.name.as_str()) {
            return Err(err(
                line,
                format!("tools.name `{}` is a built-in tool", t.name),
            ));
        }
        let m = t.method.to_ascii_uppercase();
        if !crate::vault::request::METHODS.contains(&m.as_str()) {
            return Err(err(
                line,
                format!("tool `{}`: method `{}` is not allowed", t.name, t.method),
            ));
        }
        if !t.url.starts_with("https://") && !t.url.starts_with("http://") {
            return Err(err(
                line,
                format!("tool `{}`: url must be absolute (https://...)", t.name),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &t.params {
            if !seen.insert(p.name.as_str()) {
                return Err(err(
                    line,
                    format!("tool `{}`: params.name `{}` appears twice", t.name, p.name),
                ));
            }
            if ["account", "reason"].contains(&p.name.as_str()) {
                return Err(err(
                    line,
                    format!(
                        "tool `{}`: params.name `{}` is reserved (every pack tool has it)",
                        t.name, p.name
                    ),
                ));
            }
            if p.location == ParamIn::Path && !t.url.contains(&format!("{{{}}}", p.name)) {
                return Err(err(
                    line,
                    format!(
                        "tool `{}`: path parameter `{}` has no {{{}}} in the url",
                        t.name, p.name, p.name
                    ),
                ));
            }
            if p.location == ParamIn::Path && !p.required {
                return Err(err(
                    line,
                    format!(
                        "tool `{}`: path parameter `{}` must be required",
                        t.name, p.name
                    ),
                ));
            }
            if p.ty == ParamType::Array && p.items.is_none() {
                return Err(err(
                    line,
                    format!(
                        "tool `{}`: array parameter `{}` needs `items`",
                        t.name, p.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Parse one pack file and apply the checks `load` applies before a pack's tools are used.
/// `file` only labels errors.
pub fn check_pack_text(file: &str, text: &str) -> Result<model::PackFile, PackError> {
    let pack = model::parse(file, text)?;
    check(file, text, &pack)?;
    Ok(pack)
}

/// Load built-in packs, then user packs from `dir` (a user file with the same name replaces the
/// built-in one), then drop disabled packs/tools and, in read-only mode, tools that write.
pub fn load(user_dir: Option<&Path>, disabled: &[String], read_only: bool) -> Loaded {
    let mut sources: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (name, text) in BUILTIN {
        sources.insert(
            (*name).to_owned(),
            (format!("built-in tools/{name}"), (*text).to_owned()),
        );
    }
    let mut out = Loaded::default();
    if let Some(dir) = user_dir
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        let mut files: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for path in files {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    sources.insert(name, (path.display().to_string(), text));
                }
                Err(e) => out.errors.push(PackError {
                    file: path.display().to_string(),
                    line: None,
                    message: e.to_string(),
                }),
            }
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for (fname, (label, text)) in sources {
        let pack = match check_pack_text(&label, &text) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "tool pack not loaded");
                out.errors.push(e);
                continue;
            }
        };
        let id = pack
            .id
            .clone()
            .unwrap_or_else(|| fname.trim_end_matches(".toml").to_owned());
        out.packs.push(PackInfo {
            id: id.clone(),
            source: label.clone(),
            description: pack.description.clone().unwrap_or_default(),
            disabled: disabled.contains(&id),
        });
        if disabled.contains(&id) {
            continue;
        }
        for def in pack.tools {
            if disabled.contains(&def.name) {
                continue;
            }
            let writes = def.writes.unwrap_or(!matches!(
                def.method.to_ascii_uppercase().as_str(),
                "GET" | "HEAD" | "OPTIONS"
            ));
            if read_only && writes {
                continue;
            }
            if !names.insert(def.name.clone()) {
                out.errors.push(PackError {
                    file: label.clone(),
                    line: model::line_of_tool(&text, &def.name),
                    message: format!("tool `{}` is already defined by another pack", def.name),
                });
                continue;
            }
            out.tools.push(Arc::new(PackTool {
                pack: id.clone(),
                provider: pack.provider.clone(),
                def,
                writes,
            }));
        }
    }
    out
}

fn type_name(t: ParamType) -> &'static str {
    match t {
        ParamType::String => "string",
        ParamType::Integer => "integer",
        ParamType::Number => "number",
        ParamType::Boolean => "boolean",
        ParamType::Array => "array",
    }
}

/// The tool's input schema: its params plus `account` and `reason`.
pub fn input_schema(def: &ToolDef) -> Map<String, Value> {
    let mut props = Map::new();
    let mut required = Vec::new();
    for p in &def.params {
        let mut s = json!({ "type": type_name(p.ty), "description": p.description });
        if let Some(c) = &p.choices {
            s["enum"] = Value::Array(c.clone());
        }
        if let Some(d) = &p.default {
            s["default"] = d.clone();
        }
        if let Some(m) = p.minimum {
            s["minimum"] = json!(m);
        }
        if let Some(m) = p.maximum {
            s["maximum"] = json!(m);
        }
        if let Some(i) = p.items {
            s["items"] = json!({ "type": type_name(i) });
        }
        props.insert(p.name.clone(), s);
        if p.required {
            required.push(Value::String(p.name.clone()));
        }
    }
    props.insert(
        "account".into(),
        json!({"type": "string", "description": "Which connected account to use when the user has several (login or email)."}),
    );
    props.insert(
        "reason".into(),
        json!({"type": "string", "description": "One sentence on why this call is made; recorded in the audit log and shown when a person must approve."}),
    );
    let mut schema = Map::new();
    schema.insert("type".into(), json!("object"));
    schema.insert("properties".into(), Value::Object(props));
    schema.insert("required".into(), Value::Array(required));
    schema.insert("additionalProperties".into(), json!(false));
    schema
}

/// The MCP tool definition of a pack tool. Results have `vault_request`'s output shape.
pub fn tool(p: &PackTool, output_schema: Arc<rmcp::model::JsonObject>) -> Tool {
    let mut t = Tool::new(
        p.def.name.clone(),
        p.def.description.clone(),
        Arc::new(input_schema(&p.def)),
    );
    let title = p
        .def
        .title
        .clone()
        .unwrap_or_else(|| p.def.name.replace('_', " "));
    t.title = Some(title.clone());
    t.output_schema = Some(output_schema);
    t.annotations = Some(ToolAnnotations::from_raw(
        Some(title),
        Some(!p.writes),
        Some(p.writes && p.def.method.eq_ignore_ascii_case("DELETE")),
        Some(!p.writes || p.def.method.eq_ignore_ascii_case("PUT")),
        Some(true),
    ));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_packs_load_cleanly() {
        let l = load(None, &[], false);
        assert!(l.errors.is_empty(), "{:?}", l.errors);
        for pack in ["github", "google", "slack", "linear", "notion"] {
            assert!(
                l.tools.iter().any(|t| t.pack == pack),
                "{pack} has no tools"
            );
        }
        assert!(l.tools.iter().any(|t| t.writes), "some shipped tools write");
        let ro = load(None, &[], true);
        assert!(ro.tools.iter().all(|t| !t.writes));
        assert!(ro.tools.len() < l.tools.len());
        let off = load(None, &["slack".into(), "github_create_issue".into()], false);
        assert!(
            off.tools
                .iter()
                .all(|t| t.pack != "slack" && t.def.name != "github_create_issue")
        );
    }

    #[test]
    fn broken_pack_names_file_and_line_and_others_still_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("broken.toml"),
            "provider = \"github\"\n\n[[tools]]\nname = \"x_tool\"\ndescription = \"d\"\nmethod = \"GET\"\nurl = \"https://api.github.com/x\"\nbogus_field = 1\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("badpath.toml"),
            "provider = \"github\"\n[[tools]]\nname = \"y_tool\"\ndescription = \"d\"\nmethod = \"GET\"\nurl = \"https://api.github.com/y\"\n[[tools.params]]\nname = \"id\"\ntype = \"string\"\ndescription = \"d\"\nin = \"path\"\nrequired = true\n",
        )
        .unwrap();
        let l = load(Some(dir.path()), &[], false);
        let broken = l
            .errors
            .iter()
            .find(|e| e.file.ends_with("broken.toml"))
            .expect("broken.toml reported");
        assert_eq!(broken.line, Some(8), "{broken}");
        assert!(broken.message.contains("bogus_field"), "{broken}");
        let badpath = l
            .errors
            .iter()
            .find(|e| e.file.ends_with("badpath.toml"))
            .expect("badpath reported");
        assert!(badpath.message.contains("{id}"), "{badpath}");
        assert!(
            l.tools.iter().any(|t| t.pack == "github"),
            "built-in packs still load"
        );
    }

    #[test]
    fn user_pack_overrides_builtin_by_file_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("slack.toml"),
            "provider = \"slack\"\n[[tools]]\nname = \"slack_only_mine\"\ndescription = \"d\"\nmethod = \"GET\"\nurl = \"https://slack.com/api/auth.test\"\n",
        )
        .unwrap();
        let l = load(Some(dir.path()), &[], false);
        let slack: Vec<_> = l
            .tools
            .iter()
            .filter(|t| t.pack == "slack")
            .map(|t| t.def.name.clone())
            .collect();
        assert_eq!(slack, vec!["slack_only_mine"]);
    }
}
