//! Small HTML helpers shared by every page vault-mcp serves (Connect pages, sign-in, consent):
//! escaping, one page layout with inline styles, and the response headers pages need.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#1a1a1a;--bg:#fff;--muted:#555;--accent:#0b57d0;--ok:#0a7a33;--bad:#b3261e;--card:#f4f5f7}\
@media (prefers-color-scheme:dark){:root{--fg:#eee;--bg:#111;--muted:#aaa;--accent:#8ab4f8;--ok:#6dd58c;--bad:#f2b8b5;--card:#1d1f23}}\
body{font:16px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);background:var(--bg);margin:0}\
main{max-width:34rem;margin:3rem auto;padding:0 1.25rem}\
h1{font-size:1.6rem;margin:.2rem 0 1rem}h2{font-size:1.05rem;margin:1.5rem 0 .5rem}\
.brand{color:var(--muted);font-size:.9rem;letter-spacing:.02em}\
.card{background:var(--card);border-radius:10px;padding:1rem 1.25rem;margin:1rem 0}\
ul.scopes{padding-left:1.2rem}ul.scopes li{margin:.35rem 0}code{font-size:.85em;color:var(--muted)}\
button{font:inherit;font-weight:600;border-radius:8px;padding:.65rem 1.2rem;border:2px solid var(--accent);cursor:pointer}\
button.primary{background:var(--accent);color:var(--bg)}button.secondary{background:transparent;color:var(--accent)}\
button:focus-visible,a:focus-visible{outline:3px solid var(--fg);outline-offset:2px}\
.actions{display:flex;gap:.75rem;flex-wrap:wrap;margin-top:1.25rem}form{margin:0}\
.ok{color:var(--ok)}.bad{color:var(--bad)}.fine{color:var(--muted);font-size:.9rem}a{color:var(--accent)}";

/// A whole page. `title` goes in <title> and the <h1>.
pub fn page(title: &str, status_class: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"referrer\" content=\"no-referrer\"><title>{t} · vault-mcp</title><style>{STYLE}</style></head>\
<body><main id=\"main\"><p class=\"brand\">vault-mcp</p><h1 class=\"{status_class}\" id=\"title\">{t}</h1>{body}</main></body></html>",
        t = esc(title)
    )
}

/// An HTML answer with headers that keep the link token and the page to ourselves.
pub fn html(status: u16, body: String) -> Response {
    let mut r = (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The Connect token is in our URL: never send it to the provider as a Referer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'"),
    );
    r
}
