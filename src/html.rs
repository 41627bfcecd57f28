//! What every page vault-mcp serves shares (Connect pages, sign-in, consent, approvals): one
//! layout with inline styles, built with `maud`, which escapes every interpolated value by
//! construction; and the response headers pages need.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use maud::{DOCTYPE, Markup, PreEscaped, html as markup};

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
label{display:flex;gap:.5rem;align-items:center;margin:.75rem 0}select{font:inherit}\
.ok{color:var(--ok)}.bad{color:var(--bad)}.fine{color:var(--muted);font-size:.9rem}a{color:var(--accent)}";

/// A whole page. `title` goes in `<title>` and the `<h1>`; `class` colours the heading.
pub fn page(title: &str, class: &str, body: Markup) -> Markup {
    markup! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · vault-mcp" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                main id="main" {
                    p.brand { "vault-mcp" }
                    h1 class=(class) id="title" { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page with one message paragraph (`id="result"`), for errors and short answers.
pub fn message_page(title: &str, class: &str, message: &str) -> Markup {
    page(title, class, markup! { p id="result" { (message) } })
}

/// An HTML answer with headers that keep the link token and the page to ourselves.
pub fn html(status: u16, body: Markup) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        body.into_string(),
    )
        .into_response();
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
        // No `form-action`: browsers apply it to the redirect to the provider after a form post.
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolated_text_is_escaped() {
        let out =
            message_page("<script>", "bad", "<img src=x onerror=alert(1)> & \"'").into_string();
        assert!(!out.contains("<script>") && !out.contains("<img"), "{out}");
        assert!(out.contains("&lt;img") && out.contains("&amp;"), "{out}");
    }
}
