//! The tool-pack file format (`tools/*.toml`), parsed with line-accurate errors.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ParamIn {
    Path,
    #[default]
    Query,
    Body,
    Header,
}

/// One argument of a pack tool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ParamType,
    pub description: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default, rename = "in")]
    pub location: ParamIn,
    /// Name on the wire when it differs (query key, header name, body key).
    #[serde(default)]
    pub wire_name: Option<String>,
    #[serde(default, rename = "enum")]
    pub choices: Option<Vec<Value>>,
    #[serde(default)]
    pub default: Option<Value>,
    #[serde(default)]
    pub minimum: Option<f64>,
    #[serde(default)]
    pub maximum: Option<f64>,
    /// Item type of an array parameter.
    #[serde(default)]
    pub items: Option<ParamType>,
}

/// One tool of a pack.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolDef {
    pub name: String,
    #[serde(default)]
    pub title: Option<String>,
    pub description: String,
    pub method: String,
    pub url: String,
    /// Whether the tool can change something at the provider (default: method is not GET/HEAD).
    #[serde(default)]
    pub writes: Option<bool>,
    #[serde(default)]
    pub params: Vec<Param>,
    /// JSON body template: string values `"{{param}}"` are replaced by the argument's value
    /// (keys of omitted optional arguments are dropped). Without it, `in = "body"` arguments
    /// form the body.
    #[serde(default)]
    pub body: Option<toml::Table>,
    /// Fixed extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Scopes the call needs (passed as `required_scopes`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Take this field of the response first (e.g. `items` of a search answer).
    #[serde(default)]
    pub result_path: Option<String>,
    /// Fields to keep from the answer (applied to each element of an array): `a.b`, `labels[].name`.
    #[serde(default)]
    pub result: Vec<String>,
}

/// A pack file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackFile {
    #[serde(default)]
    pub id: Option<String>,
    pub provider: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tools: Vec<ToolDef>,
}

/// A pack that failed to load: which file, where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for PackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Line of the `[[tools]]` entry named `name`, for errors found after parsing.
pub fn line_of_tool(text: &str, name: &str) -> Option<usize> {
    let needle = format!("\"{name}\"");
    text.find(&needle).map(|o| line_of(text, o))
}

pub fn parse(file: &str, text: &str) -> Result<PackFile, PackError> {
    toml::from_str::<PackFile>(text).map_err(|e| PackError {
        file: file.to_owned(),
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().trim().to_owned(),
    })
}
