//! Fuzz targets for the code that reads untrusted input: URL templates and the destination
//! check, the scrubber, policy matching, tool arguments, tool packs and the two wire framings
//! (legacy SSE, stdio).
//!
//! Each `pub fn <target>(data: &[u8])` turns arbitrary bytes into a call of the real code and
//! checks the properties that must hold for every input. It never panics unless one of them
//! is violated (or the code under test panics), so a panic is always a finding.
//!
//! The functions live in the library, not in `fuzz/`, so that one definition serves both
//! runners: `fuzz/fuzz_targets/<target>.rs` (cargo-fuzz and libFuzzer, the long runs of
//! `scripts/fuzz.sh`) and `tests/fuzz_corpus.rs` (the committed corpus plus proptest inputs,
//! part of `cargo test` on stable Rust). Input layouts are described on each function; the
//! hand-written seeds in `fuzz/corpus/<target>/` follow them.

use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock},
};

use base64::Engine;
use serde_json::Value;
use url::Url;

use crate::{
    mcp::{
        args::{ListGrantsArgs, ListProvidersArgs, StartConnectArgs, VaultRequestArgs},
        packs::{self, PackTool},
        tools,
    },
    providers::{HostPattern, Provider},
    transport::{http::sse, stdio_frames},
    vault::{
        GrantSelector,
        canonical::CanonicalUrl,
        outbound::{Outbound, Purpose},
        policy::{Decision, PolicyInput, PolicySet},
        scrub::{REDACTED, Scrubber},
        template,
    },
};

/// The hosts the destination target allows.
const ALLOWED_HOSTS: &[&str] = &["api.github.com", "*.example.com", "127.0.0.1:9100"];

fn destination_fixture() -> &'static (Outbound, Provider) {
    static F: OnceLock<(Outbound, Provider)> = OnceLock::new();
    F.get_or_init(|| {
        let mut p = Provider::custom_api_key("fuzz");
        p.host_patterns = ALLOWED_HOSTS
            .iter()
            .map(|h| HostPattern::parse(h).expect("fixed host pattern"))
            .collect();
        (Outbound::new(true).expect("HTTP client"), p)
    })
}

/// What a templated value must never change: scheme, user info, host and port.
fn origin(u: &Url) -> (String, String, Option<String>, Option<String>, Option<u16>) {
    (
        u.scheme().to_owned(),
        u.username().to_owned(),
        u.password().map(str::to_owned),
        u.host_str().map(str::to_owned),
        u.port_or_known_default(),
    )
}

/// Input: the URL template on the first line, then `name=value` lines (path params).
///
/// Properties: path params never change the origin (rendering the same template with every
/// value replaced by a neutral one gives the same scheme, user info, host and port); a URL the
/// destination check passes for [`ALLOWED_HOSTS`] is https (or http to loopback), carries no
/// user info, and its host and port are allowed.
pub fn template_and_destination(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let tpl = lines.next().unwrap_or_default();
    let params: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let Ok(rendered) = template::render(tpl, &params) else {
        return;
    };
    let neutral = params
        .keys()
        .map(|k| (k.clone(), "n0".to_owned()))
        .collect();
    // (A value can make the URL unparseable, and then the template is not checked further.)
    let other = template::render(tpl, &neutral).unwrap_or_default();
    if let (Ok(a), Ok(b)) = (Url::parse(&rendered), Url::parse(&other)) {
        assert_eq!(
            origin(&a),
            origin(&b),
            "path params changed the origin: {tpl:?} -> {rendered:?} / {other:?}"
        );
    }
    let Ok(url) = CanonicalUrl::parse(&rendered) else {
        return;
    };
    let (out, provider) = destination_fixture();
    if out.check(&url, provider, Purpose::Api).is_err() {
        return;
    }
    let u = url.url();
    let (host, port) = (url.host(), url.port());
    assert!(
        u.username().is_empty() && u.password().is_none(),
        "user info passed: {u}"
    );
    assert!(
        u.scheme() == "https" || (u.scheme() == "http" && host == "127.0.0.1"),
        "scheme passed: {u}"
    );
    let allowed = (host == "api.github.com" && port == 443)
        || (host.len() > ".example.com".len() && host.ends_with(".example.com") && port == 443)
        || (host == "127.0.0.1" && port == 9100);
    assert!(
        allowed,
        "destination passed: {u} (host {host}, port {port})"
    );
}

/// Characters of the secrets the scrubber target makes (token-like).
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

/// The secret in one of the shapes providers echo it in; `true` when the shape is found
/// wherever it sits (not only on its own: a decoded form can be spoiled by the text before it,
/// e.g. `\` before `\u0061…`, and then it is no longer the secret either).
fn encode_secret(how: u8, s: &str) -> (String, bool) {
    let b64 = &base64::engine::general_purpose::STANDARD;
    match how % 10 {
        0 => (s.to_owned(), true),
        1 => (s.to_ascii_uppercase(), true),
        2 => (b64.encode(s), true),
        3 => (
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s),
            true,
        ),
        4 => (hex::encode(s), true),
        5 => (s.bytes().map(|b| format!("%{b:02X}")).collect(), false),
        6 => (s.bytes().map(|b| format!("%25{b:02x}")).collect(), false),
        7 => (s.bytes().map(|b| format!("\\u{b:04x}")).collect(), false),
        8 => (b64.encode(format!("user:{s}")), false),
        _ => (s.bytes().map(|b| format!("&#{b};")).collect(), false),
    }
}

/// Scrubbed output must hold no form of the secret. The placeholder is replaced by a space
/// first, so that a secret spelling `redacted` does not match the placeholder itself.
fn assert_scrubbed(s: &Scrubber, secret: &str, out: &str, what: &str) {
    let probe = out.replace(REDACTED, " ");
    assert!(
        !probe
            .to_ascii_lowercase()
            .contains(&secret.to_ascii_lowercase()),
        "{what}: the raw secret {secret:?} survived: {out:?}"
    );
    assert!(
        !s.contains(&probe),
        "{what}: a form of {secret:?} survived: {out:?}"
    );
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Input: byte 0 picks the encoding, byte 1 the secret's length (8..=40), byte 2 where it is
/// inserted, byte 3 where the text is cut for `text_truncated`; then the secret's bytes (mapped
/// onto a token alphabet), then the text.
///
/// Properties: the encoded secret is found; `text` and `text_truncated` leave neither the raw
/// secret (any case) nor any form `contains` recognizes; `json` never panics and scrubs the
/// secret out of a JSON string.
pub fn scrubber(data: &[u8]) {
    let [how, len, pos, cut, rest @ ..] = data else {
        return;
    };
    let n = 8 + usize::from(*len) % 33;
    if rest.len() < n {
        return;
    }
    let (secret_bytes, text) = rest.split_at(n);
    let secret: String = secret_bytes
        .iter()
        .map(|b| char::from(SECRET_ALPHABET[usize::from(*b) % SECRET_ALPHABET.len()]))
        .collect();
    let text = String::from_utf8_lossy(text);
    let s = Scrubber::new([secret.as_str()]);
    let (encoded, context_free) = encode_secret(*how, &secret);
    assert!(
        s.contains(&encoded),
        "encoding {} of {secret:?} not found: {encoded:?}",
        how % 10
    );
    let at = floor_char_boundary(&text, usize::from(*pos) * text.len() / 255);
    let input = format!("{}{encoded}{}", &text[..at], &text[at..]);
    if context_free {
        assert!(
            s.contains(&input),
            "encoding {} of {secret:?} not found in {input:?}",
            how % 10
        );
    }
    assert_scrubbed(&s, &secret, &s.text(&input), "text");
    let cut = floor_char_boundary(&input, usize::from(*cut) * input.len() / 255);
    assert_scrubbed(
        &s,
        &secret,
        &s.text_truncated(&input[..cut]),
        "text_truncated",
    );
    if let Ok(mut v) = serde_json::from_str::<Value>(&text) {
        s.json(&mut v);
    }
    let mut m = serde_json::Map::new();
    m.insert("k".into(), Value::Array(vec![Value::String(input.clone())]));
    m.insert(input, Value::Bool(true));
    let mut v = Value::Object(m);
    s.json(&mut v);
    // Each string on its own: escapes of the serialized form (`\u001a` + `aaa…`) can spell
    // a secret that is in no string.
    let keys = v.as_object().into_iter().flat_map(|m| m.keys());
    for text in keys.map(String::as_str).chain(v["k"][0].as_str()) {
        assert_scrubbed(&s, &secret, text, "json");
    }
}

/// A policy with a deny rule on `/admin/**` (and others, like the policy-bypass corpus in
/// `tests/security_corpus.rs`).
const FIXED_POLICY: &str = r#"
[[policy.rules]]
id = "no-admin"
paths = ["/admin/**"]
effect = "deny"

[[policy.rules]]
id = "reads"
methods = ["GET"]
effect = "allow"

[[policy.rules]]
id = "budget"
paths = ["/search/**"]
rate_limit = { requests = 5, per_secs = 60 }
"#;

fn fixed_policy() -> &'static PolicySet {
    static P: OnceLock<PolicySet> = OnceLock::new();
    P.get_or_init(|| policy_from_toml(FIXED_POLICY).expect("the fixed policy parses"))
}

fn policy_from_toml(text: &str) -> Option<PolicySet> {
    let v: toml::Value = toml::from_str(text).ok()?;
    Some(PolicySet::from_config(v.get("policy")))
}

/// Input: the first line is the request, `METHOD URL [key=value …]` with keys `kind`
/// (`oauth`/`secret`), `age` (grant age in seconds), `now` (unix seconds), `scopes`
/// (comma-separated), `reason`; the rest is a TOML config whose `[policy]` is compiled.
///
/// Properties: compiling and evaluating (`check`, `slots`, `rules`) never panics; every rate
/// limit window holds `now`; and under a fixed policy denying `/admin/**`, every URL whose
/// canonical path is `/admin` or below it, in any letter case, is denied.
pub fn policy(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (first, config) = text.split_once('\n').unwrap_or((&text, ""));
    let mut words = first.split(' ');
    let method = words.next().unwrap_or_default();
    let Ok(url) = CanonicalUrl::parse(words.next().unwrap_or_default()) else {
        return;
    };
    let (mut kind, mut age, mut now, mut scopes, mut reason) =
        ("oauth", 0i64, 1_764_000_000i64, Vec::new(), None);
    for w in words {
        match w.split_once('=') {
            Some(("kind", v)) => kind = v,
            Some(("age", v)) => age = v.parse().unwrap_or(age),
            Some(("now", v)) => now = v.parse().unwrap_or(now),
            Some(("scopes", v)) => scopes = v.split(',').map(str::to_owned).collect(),
            Some(("reason", v)) => reason = Some(v),
            _ => {}
        }
    }
    let Ok(now) = jiff::Timestamp::from_second(now) else {
        return;
    };
    let host = url.host_label();
    let input = PolicyInput {
        principal: "fuzz",
        caller: Default::default(),
        provider: "github",
        grant_id: "grt_fuzz",
        grant_kind: kind,
        grant_scopes: &scopes,
        grant_age_secs: age,
        method,
        host: &host,
        path: url.path(),
        reason,
        now,
    };
    if let Some(p) = policy_from_toml(config) {
        let _ = p.check(&input);
        let _ = (
            p.rules(),
            p.error(),
            p.approval_timeout(),
            p.default_allow(),
        );
        for slot in p.slots(&input) {
            let t = now.as_second();
            assert!(
                slot.window_start <= t && t < slot.window_end,
                "rate-limit window {slot:?} does not hold {t}"
            );
        }
    }
    let path = url.path().to_ascii_lowercase();
    if path == "/admin" || path.starts_with("/admin/") {
        let d = fixed_policy().check(&input);
        assert!(
            matches!(&d, Decision::Deny { rule, .. } if rule == "no-admin"),
            "{method} {} (path {}) was not denied: {d:?}",
            url.url(),
            url.path()
        );
    }
}

/// Input: JSON, the `arguments` of a `tools/call`.
///
/// Properties: arguments go through the MCP layer's path for `vault_request`
/// (`serde_path_to_error` into [`VaultRequestArgs`], then [`tools::to_api_request`], then the
/// pipeline's first step: the URL template and canonical URL) and the other built-in tools'
/// argument types without a panic; an accepted request keeps the method, URL and path params
/// and names exactly one grant selector.
pub fn tool_arguments(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(args) = serde_path_to_error::deserialize::<_, VaultRequestArgs>(v.clone()) {
        let (method, url, params) = (
            args.method.clone(),
            args.url.clone(),
            args.path_params.clone(),
        );
        if let Ok(req) = tools::to_api_request(args) {
            assert!(req.method == method && req.url == url && req.path_params == params);
            match &req.grant {
                GrantSelector::Id(id) => assert!(!id.is_empty()),
                GrantSelector::Provider { provider, .. } => {
                    assert_eq!(*provider, provider.trim().to_ascii_lowercase())
                }
            }
            if let Ok(rendered) = template::render(&req.url, &req.path_params) {
                let _ = CanonicalUrl::parse(&rendered);
            }
        }
    }
    let _ = serde_path_to_error::deserialize::<_, ListGrantsArgs>(v.clone());
    let _ = serde_path_to_error::deserialize::<_, ListProvidersArgs>(v.clone());
    let _ = serde_path_to_error::deserialize::<_, StartConnectArgs>(v);
}

/// Input: the text of a tool pack (`tools/*.toml`).
///
/// Properties: parsing, the checks `packs::load` applies, and building each tool's MCP
/// definition and input schema never panic; a parse error's line is within the text.
pub fn pack_loading(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = packs::model::parse("fuzz.toml", &text)
        && let Some(line) = e.line
    {
        assert!(
            line >= 1 && line <= text.split('\n').count(),
            "error line {line} is outside the text: {e}"
        );
    }
    let Ok(pack) = packs::check_pack_text("fuzz.toml", &text) else {
        return;
    };
    for def in pack.tools {
        let schema = Value::Object(packs::input_schema(&def));
        assert!(serde_json::to_string(&schema).is_ok());
        let t = PackTool {
            pack: "fuzz".into(),
            provider: pack.provider.clone(),
            writes: def.writes.unwrap_or(true),
            def,
        };
        let _ = packs::tool(&t, Arc::default());
    }
}

/// Input: a POST body of the legacy SSE transport (also read as a server message, and as the
/// POST's query string).
///
/// Properties: parsing a client message never panics; a server message becomes exactly one
/// `data:` line (no CR or LF in it) that reads back as JSON.
pub fn sse_framing(data: &[u8]) {
    let _ = sse::parse_message(data);
    if let Ok(msg) = serde_json::from_slice::<rmcp::model::ServerJsonRpcMessage>(data) {
        let line = sse::message_data(&msg);
        assert!(!line.contains(['\r', '\n']), "{line:?}");
        assert!(serde_json::from_str::<Value>(&line).is_ok(), "{line:?}");
        let _ = axum::response::sse::Event::default()
            .event("message")
            .data(line);
    }
    if let Ok(uri) = format!("/message?{}", String::from_utf8_lossy(data)).parse::<http::Uri>() {
        let _ = axum::extract::Query::<sse::MessageQuery>::try_from_uri(&uri);
    }
}

/// Input: stdin bytes, split into lines like the stdio filter does.
///
/// Properties: every reply `check_line` produces is a JSON-RPC 2.0 error object whose `id` is
/// null or the line's own `id`; every line it passes on is a JSON object or array.
pub fn stdio_framing(data: &[u8]) {
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let parsed = serde_json::from_slice::<Value>(line).ok();
        match stdio_frames::check_line(line) {
            Some(reply) => {
                let r: Value = serde_json::from_str(&reply).expect("the reply is JSON");
                assert_eq!(r["jsonrpc"], "2.0", "{reply}");
                assert!(r["error"]["code"].is_i64() && r["error"]["message"].is_string());
                // The message's id as it reads back after one more trip through serde_json,
                // like the reply's: serde_json parses floats fast, not exactly (`5.3e+50` reads
                // as 5.299999999999999e50), so a float id can differ in its last bit otherwise.
                let own = parsed.as_ref().and_then(|p| p.get("id")).map(|i| {
                    serde_json::from_str::<Value>(&i.to_string()).expect("a value reads back")
                });
                let id = &r["id"];
                assert!(
                    id.is_null() || own.as_ref() == Some(id),
                    "reply id {id} is not the message's: {reply}"
                );
            }
            None => assert!(
                parsed.is_some_and(|p| p.is_object() || p.is_array()),
                "passed on: {:?}",
                String::from_utf8_lossy(line)
            ),
        }
    }
}
