//! HTML for the Connect pages: plain, accessible, self-contained (no external assets, no
//! scripts). Every dynamic value goes through [`esc`].

use crate::vault::{CallbackOutcome, ConnectView};

pub use crate::html::{esc, page};

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

pub fn approval_page(a: &crate::store::ApprovalRow, token: &str) -> String {
    let v = crate::vault::approval::ApprovalView::from(a);
    let body = format!(
        "<p>Your agent wants to make this call, which a policy holds for your approval:</p>\
<section class=\"card\"><p><strong id=\"request\">{method} {host}{path}</strong></p>\
<p>Provider: {provider}<br>Reason given: {reason}<br>Rule: <code>{rule}</code></p></section>\
{actions}<p class=\"fine\">Status: <span id=\"status\">{status}</span>. An approval lets exactly this call through once, until {expires} (UTC).</p>",
        method = esc(&v.method),
        host = esc(&v.host),
        path = esc(&v.path),
        provider = esc(&v.provider),
        reason = esc(v.reason.as_deref().unwrap_or("(none)")),
        rule = esc(&v.rule),
        status = esc(&v.status),
        expires = esc(&v.expires_at.replace('T', " ").replace('Z', "")),
        actions = if v.status == "pending" {
            format!(
                "<div class=\"actions\"><form method=\"post\" action=\"{t}\"><input type=\"hidden\" name=\"decision\" value=\"approve\">\
<button class=\"primary\" id=\"approve\" type=\"submit\">Approve once</button></form>\
<form method=\"post\" action=\"{t}\"><input type=\"hidden\" name=\"decision\" value=\"deny\">\
<button class=\"secondary\" id=\"deny\" type=\"submit\">Deny</button></form></div>",
                t = esc(token)
            )
        } else {
            String::new()
        }
    );
    page("Approve an API call?", "", &body)
}

pub fn approval_done(a: &crate::vault::approval::ApprovalView) -> String {
    if a.status == "approved" {
        page(
            "Approved",
            "ok",
            &format!(
                "<p id=\"result\">{} {}{} may go through once. Tell your agent to retry.</p>",
                esc(&a.method),
                esc(&a.host),
                esc(&a.path)
            ),
        )
    } else {
        page(
            "Denied",
            "bad",
            "<p id=\"result\">The call will not be made. Tell your agent.</p>",
        )
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
