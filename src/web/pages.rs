//! HTML for the Connect pages: plain, accessible, self-contained (no external assets, no
//! scripts). Every dynamic value goes through [`esc`].

use crate::connect::{CallbackOutcome, ConnectView};

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

pub fn connect_page(view: &ConnectView, token: &str) -> (u16, String) {
    match view {
        ConnectView::Pending {
            user,
            providers,
            expires_at,
            ..
        } => {
            let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
            let title = format!("Connect {}", names.join(" and "));
            let mut body = format!(
                "<p>Your AI agent asks to use <strong>{}</strong> on your behalf{}. \
The vault keeps the credential; the agent never sees it, and you can revoke access at any time.</p>",
                esc(&names.join(", ")),
                if user == "local" {
                    String::new()
                } else {
                    format!(" (signed in as <strong>{}</strong>)", esc(user))
                }
            );
            for p in providers {
                body.push_str(&format!("<section class=\"card\" aria-labelledby=\"p-{id}\"><h2 id=\"p-{id}\">{name}</h2>", id = esc(&p.id), name = esc(&p.name)));
                if let Some(acct) = &p.connected {
                    body.push_str(&format!(
                        "<p class=\"ok\" id=\"connected-{}\">Connected as {}.</p></section>",
                        esc(&p.id),
                        esc(acct)
                    ));
                    continue;
                }
                if p.scopes.is_empty() {
                    body.push_str("<p>No extra permissions are requested beyond basic access.</p>");
                } else {
                    body.push_str("<p>It will be able to:</p><ul class=\"scopes\" id=\"scopes\">");
                    for (scope, words) in &p.scopes {
                        if words == scope {
                            body.push_str(&format!("<li><code>{}</code></li>", esc(scope)));
                        } else {
                            body.push_str(&format!(
                                "<li>{} <code>{}</code></li>",
                                esc(words),
                                esc(scope)
                            ));
                        }
                    }
                    body.push_str("</ul>");
                }
                body.push_str(&format!(
                    "<div class=\"actions\"><form method=\"post\" action=\"{tok}/authorize\">\
<input type=\"hidden\" name=\"provider\" value=\"{id}\">\
<button class=\"primary\" id=\"continue-{id}\" type=\"submit\">Continue to {name}</button></form></div></section>",
                    tok = esc(token),
                    id = esc(&p.id),
                    name = esc(&p.name)
                ));
            }
            body.push_str(&format!(
                "<div class=\"actions\"><form method=\"post\" action=\"{}/cancel\"><button class=\"secondary\" id=\"cancel\" type=\"submit\">Cancel</button></form></div>\
<p class=\"fine\">This link works once and expires at {} (UTC). If you did not ask your agent for this, cancel.</p>",
                esc(token),
                esc(&expires_at.replace('T', " ").replace('Z', ""))
            ));
            (200, page(&title, "", &body))
        }
        ConnectView::Expired => (
            410,
            page(
                "This link has expired",
                "bad",
                "<p>Connect links are short-lived for your safety. Ask your agent to try again; it will give you a fresh link.</p>",
            ),
        ),
        ConnectView::Invalid => (
            404,
            page(
                "This link is not valid",
                "bad",
                "<p>The link is incomplete, was already used, or never existed. Ask your agent for a new one.</p>",
            ),
        ),
        ConnectView::Finished { status, error } => {
            let (title, text) = match status.as_str() {
                "completed" => (
                    "Already connected",
                    "This link was already used to connect. You can return to your agent.",
                ),
                "denied" => (
                    "Access was not granted",
                    "This request was declined. Ask your agent again if you change your mind.",
                ),
                "expired" => (
                    "This link has expired",
                    "Ask your agent to try again; it will give you a fresh link.",
                ),
                _ => (
                    "Connecting failed",
                    "Something went wrong with this link. Ask your agent to try again.",
                ),
            };
            let detail = error
                .as_ref()
                .filter(|_| status == "error")
                .map(|e| format!("<p class=\"card\" id=\"detail\">{}</p>", esc(e)))
                .unwrap_or_default();
            (
                410,
                page(
                    title,
                    if status == "completed" { "ok" } else { "bad" },
                    &format!("<p>{text}</p>{detail}"),
                ),
            )
        }
    }
}

pub fn cancelled_page() -> String {
    page(
        "Cancelled",
        "bad",
        "<p>Nothing was connected. Your agent will tell you that access was not granted.</p>",
    )
}

pub fn callback_page(o: &CallbackOutcome) -> (u16, String) {
    match o {
        CallbackOutcome::Connected {
            provider_name,
            account,
            display,
            scopes,
            remaining,
            return_url,
            ..
        } => {
            let who = match display {
                Some(d) if d != account => format!("{} ({})", esc(d), esc(account)),
                _ => esc(account),
            };
            let mut body = format!(
                "<p id=\"result\">vault-mcp can now use {} as <strong id=\"account\">{}</strong>.</p>",
                esc(provider_name),
                who
            );
            if !scopes.is_empty() {
                body.push_str(&format!(
                    "<p class=\"fine\">Granted: {}</p>",
                    scopes
                        .iter()
                        .map(|s| format!("<code>{}</code>", esc(s)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if remaining.is_empty() {
                body.push_str("<p><strong>Return to your agent</strong> and tell it you are done; it can retry now. You can close this tab.</p>");
            } else {
                body.push_str(&format!(
                    "<p>Still to connect: {}. Open the Connect link again to continue.</p>",
                    esc(&remaining.join(", "))
                ));
            }
            if let Some(r) = return_url {
                body.push_str(&format!(
                    "<p><a href=\"{}\" rel=\"noreferrer\">Back to where you came from</a></p>",
                    esc(r)
                ));
            }
            (
                200,
                page(
                    &format!("Connected as {}", display.as_deref().unwrap_or(account)),
                    "ok",
                    &body,
                ),
            )
        }
        CallbackOutcome::Denied { provider_name } => (
            200,
            page(
                "Access was not granted",
                "bad",
                &format!(
                    "<p id=\"result\">You declined at {}. Nothing was stored. Return to your agent; ask it again if you change your mind.</p>",
                    esc(provider_name)
                ),
            ),
        ),
        CallbackOutcome::Expired { provider_name } => (
            410,
            page(
                "This link has expired",
                "bad",
                &format!(
                    "<p id=\"result\">The sign-in with {} took longer than the link allows. Ask your agent to try again for a fresh link.</p>",
                    esc(provider_name)
                ),
            ),
        ),
        CallbackOutcome::InvalidState => (
            400,
            page(
                "This sign-in cannot be completed",
                "bad",
                "<p id=\"result\">The response does not belong to a Connect link that is waiting, or it was already used. \
Nothing was stored. Ask your agent for a new link.</p>",
            ),
        ),
        CallbackOutcome::WrongUser => (
            403,
            page(
                "This link belongs to someone else",
                "bad",
                "<p id=\"result\">Connect links only work for the person whose agent created them. Nothing was stored.</p>",
            ),
        ),
        CallbackOutcome::Failed {
            provider_name,
            message,
        } => (
            502,
            page(
                &format!("Connecting {provider_name} failed"),
                "bad",
                &format!(
                    "<p id=\"result\">Nothing was stored. Tell your agent or the vault's operator:</p><p class=\"card\" id=\"detail\">{}</p>",
                    esc(message)
                ),
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_dynamic() {
        assert_eq!(
            esc("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
        let (_, html) = callback_page(&CallbackOutcome::Failed {
            provider_name: "<script>".into(),
            message: "<img src=x onerror=alert(1)>".into(),
        });
        assert!(!html.contains("<script>") && !html.contains("<img"));
    }
}
