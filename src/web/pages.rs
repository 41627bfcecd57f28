//! HTML for the Connect and approval pages: plain, accessible, self-contained (no external
//! assets, no scripts). Built with `maud`, which escapes every interpolated value. Forms carry a
//! CSRF token (`crate::csrf`) the handlers check.

use maud::{Markup, html};

pub use crate::html::{message_page, page};
use crate::{
    model::SessionStatus,
    store::ApprovalRow,
    vault::{CallbackOutcome, ConnectView, approval::ApprovalView},
};

fn when(rfc3339: &str) -> String {
    rfc3339.replace('T', " ").replace('Z', "")
}

/// The Connect page for a link; `csrf` authorizes its forms.
pub fn connect_page(view: &ConnectView, token: &str, csrf: &str) -> (u16, Markup) {
    match view {
        ConnectView::Pending {
            user,
            providers,
            expires_at,
            delegate_agent,
            grant_ttl,
            ..
        } => {
            let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
            let title = format!("Connect {}", names.join(" and "));
            let body = html! {
                p {
                    "Your AI agent asks to use " strong { (names.join(", ")) } " on your behalf"
                    @if user != "local" { " (signed in as " strong { (user) } ")" }
                    ". The vault keeps the credential; the agent never sees it, and you can revoke access at any time."
                }
                @if let Some(ttl) = grant_ttl {
                    p id="grant-ttl" { "Access ends on its own " strong { (ttl) } " after you connect." }
                }
                @for p in providers {
                    section.card aria-labelledby={ "p-" (p.id) } {
                        h2 id={ "p-" (p.id) } { (p.name) }
                        @if let Some(acct) = &p.connected {
                            p.ok id={ "connected-" (p.id) } { "Connected as " (acct) "." }
                        } @else {
                            @if p.scopes.is_empty() {
                                p { "No extra permissions are requested beyond basic access." }
                            } @else {
                                p { "It will be able to:" }
                                ul.scopes id="scopes" {
                                    @for (scope, words) in &p.scopes {
                                        @if words == scope {
                                            li { code { (scope) } }
                                        } @else {
                                            li { (words) " " code { (scope) } }
                                        }
                                    }
                                }
                            }
                            @if p.key_entry {
                                div.actions {
                                    form method="post" action={ (token) "/key" } autocomplete="off" {
                                        input type="hidden" name="provider" value=(p.id);
                                        input type="hidden" name="csrf" value=(csrf);
                                        p {
                                            label for={ "secret-" (p.id) } { "Your " (p.name) " API key" }
                                            br;
                                            input type="password" name="secret" id={ "secret-" (p.id) } required autocomplete="off" spellcheck="false";
                                        }
                                        @if let Some(h) = &p.hint { p.fine { (h) } }
                                        @if let Some(agent) = delegate_agent {
                                            p.delegate {
                                                label {
                                                    input type="checkbox" name="delegate" value="1" id={ "delegate-" (p.id) };
                                                    " Let agent " strong { (agent) } " use this key without me"
                                                }
                                            }
                                        }
                                        p.fine { "The key is stored encrypted in the vault; your agent never sees it." }
                                        button.primary id={ "continue-" (p.id) } type="submit" { "Save key" }
                                    }
                                }
                            } @else {
                            div.actions {
                                form method="post" action={ (token) "/authorize" } {
                                    input type="hidden" name="provider" value=(p.id);
                                    input type="hidden" name="csrf" value=(csrf);
                                    @if let Some(agent) = delegate_agent {
                                        // Unchecked by default: only a person's tick lends the grant.
                                        p.delegate {
                                            label {
                                                input type="checkbox" name="delegate" value="1" id={ "delegate-" (p.id) };
                                                " Let agent " strong { (agent) } " use this grant without me"
                                            }
                                        }
                                        p.fine { "It can act with this account while you are away, until you take it back (undelegate) or revoke the grant." }
                                    }
                                    button.primary id={ "continue-" (p.id) } type="submit" { "Continue to " (p.name) }
                                }
                            }
                            }
                        }
                    }
                }
                div.actions {
                    form method="post" action={ (token) "/cancel" } {
                        input type="hidden" name="csrf" value=(csrf);
                        button.secondary id="cancel" type="submit" { "Cancel" }
                    }
                }
                p.fine {
                    "This link works once and expires at " (when(expires_at))
                    " (UTC). If you did not ask your agent for this, cancel."
                }
            };
            (200, page(&title, "", body))
        }
        ConnectView::Expired => (
            410,
            message_page(
                "This link has expired",
                "bad",
                "Connect links are short-lived for your safety. Ask your agent to try again; it will give you a fresh link.",
            ),
        ),
        ConnectView::Invalid => (
            404,
            message_page(
                "This link is not valid",
                "bad",
                "The link is incomplete, was already used, or never existed. Ask your agent for a new one.",
            ),
        ),
        ConnectView::Finished { status, error } => {
            let (title, text) = match status {
                SessionStatus::Completed => (
                    "Already connected",
                    "This link was already used to connect. You can return to your agent.",
                ),
                SessionStatus::Denied => (
                    "Access was not granted",
                    "This request was declined. Ask your agent again if you change your mind.",
                ),
                SessionStatus::Expired => (
                    "This link has expired",
                    "Ask your agent to try again; it will give you a fresh link.",
                ),
                SessionStatus::Pending | SessionStatus::Error => (
                    "Connecting failed",
                    "Something went wrong with this link. Ask your agent to try again.",
                ),
            };
            let body = html! {
                p { (text) }
                @if *status == SessionStatus::Error {
                    @if let Some(e) = error { p.card id="detail" { (e) } }
                }
            };
            let class = if *status == SessionStatus::Completed {
                "ok"
            } else {
                "bad"
            };
            (410, page(title, class, body))
        }
    }
}

pub fn approval_page(a: &ApprovalRow, token: &str, csrf: &str) -> Markup {
    let v = ApprovalView::from(a);
    let body = html! {
        p { "Your agent wants to make this call, which a policy holds for your approval:" }
        section.card {
            p { strong id="request" { (v.method) " " (v.host) (v.path) } }
            p {
                "Provider: " (v.provider) br;
                "Reason given: " (v.reason.as_deref().unwrap_or("(none)")) br;
                "Rule: " code { (v.rule) }
            }
        }
        @if v.status == "pending" {
            div.actions {
                form method="post" action=(token) {
                    input type="hidden" name="decision" value="approve";
                    input type="hidden" name="csrf" value=(csrf);
                    button.primary id="approve" type="submit" { "Approve once" }
                }
                form method="post" action=(token) {
                    input type="hidden" name="decision" value="deny";
                    input type="hidden" name="csrf" value=(csrf);
                    button.secondary id="deny" type="submit" { "Deny" }
                }
            }
        }
        p.fine {
            "Status: " span id="status" { (v.status) }
            ". An approval lets exactly this call through once, until " (when(&v.expires_at)) " (UTC)."
        }
    };
    page("Approve an API call?", "", body)
}

pub fn approval_done(a: &ApprovalView) -> Markup {
    if a.status == "approved" {
        page(
            "Approved",
            "ok",
            html! {
                p id="result" {
                    (a.method) " " (a.host) (a.path)
                    " may go through once. You can return to your client; the call continues there (or tell your agent to retry)."
                }
            },
        )
    } else {
        message_page(
            "Denied",
            "bad",
            "The call will not be made. You can return to your client.",
        )
    }
}

pub fn cancelled_page() -> Markup {
    message_page(
        "Cancelled",
        "bad",
        "Nothing was connected. Your agent will tell you that access was not granted.",
    )
}

pub fn callback_page(o: &CallbackOutcome) -> (u16, Markup) {
    match o {
        CallbackOutcome::Connected {
            provider_name,
            account,
            display,
            scopes,
            remaining,
            return_url,
            delegated_to,
            ..
        } => {
            let body = html! {
                p id="result" {
                    "vault-mcp can now use " (provider_name) " as "
                    strong id="account" {
                        @match display {
                            Some(d) if d != account => { (d) " (" (account) ")" }
                            _ => { (account) }
                        }
                    }
                    "."
                }
                @if !scopes.is_empty() {
                    p.fine {
                        "Granted: "
                        @for (i, s) in scopes.iter().enumerate() {
                            @if i > 0 { ", " }
                            code { (s) }
                        }
                    }
                }
                @if let Some(agent) = delegated_to {
                    p id="delegated" { "Agent " strong { (agent) } " may use this grant without you until you take it back." }
                }
                @if remaining.is_empty() {
                    p {
                        strong { "You can return to your client." }
                        " The agent continues on its own (or tell it you are done and it retries). You can close this tab."
                    }
                } @else {
                    p { "Still to connect: " (remaining.join(", ")) ". Open the Connect link again to continue." }
                }
                @if let Some(r) = return_url {
                    p { a href=(r) rel="noreferrer" { "Back to where you came from" } }
                }
            };
            (
                200,
                page(
                    &format!("Connected as {}", display.as_deref().unwrap_or(account)),
                    "ok",
                    body,
                ),
            )
        }
        CallbackOutcome::Denied { provider_name } => (
            200,
            message_page(
                "Access was not granted",
                "bad",
                &format!(
                    "You declined at {provider_name}. Nothing was stored. Return to your agent; ask it again if you change your mind."
                ),
            ),
        ),
        CallbackOutcome::Expired { provider_name } => (
            410,
            message_page(
                "This link has expired",
                "bad",
                &format!(
                    "The sign-in with {provider_name} took longer than the link allows. Ask your agent to try again for a fresh link."
                ),
            ),
        ),
        CallbackOutcome::InvalidState => (
            400,
            message_page(
                "This sign-in cannot be completed",
                "bad",
                "The response does not belong to a Connect link that is waiting, or it was already used. Nothing was stored. Ask your agent for a new link.",
            ),
        ),
        CallbackOutcome::WrongUser => (
            403,
            message_page(
                "This link belongs to someone else",
                "bad",
                "Connect links only work for the person whose agent created them. Nothing was stored.",
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
                html! {
                    p id="result" { "Nothing was stored. Tell your agent or the vault's operator:" }
                    p.card id="detail" { (message) }
                },
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_dynamic() {
        let (_, html) = callback_page(&CallbackOutcome::Failed {
            provider_name: "<script>".into(),
            message: "<img src=x onerror=alert(1)>".into(),
        });
        let html = html.into_string();
        assert!(
            !html.contains("<script>") && !html.contains("<img"),
            "{html}"
        );
        let (_, html) = connect_page(
            &ConnectView::Pending {
                session_id: "cs_1".into(),
                user: "\"><b>x</b>".into(),
                providers: vec![crate::vault::ProviderItem {
                    id: "p\"><i>".into(),
                    name: "<u>n</u>".into(),
                    scopes: vec![("<s>".into(), "<em>w</em>".into())],
                    connected: None,
                    key_entry: true,
                    hint: Some("<script>h</script>".into()),
                }],
                expires_at: "2026-01-01T00:00:00Z".into(),
                delegate_agent: Some("<q>bot</q>".into()),
                grant_ttl: Some("<kbd>2 days</kbd>".into()),
            },
            "tok\"><a>",
            "csrf\"'",
        );
        let html = html.into_string();
        assert!(
            html.contains("id=\"delegate-"),
            "the delegation checkbox is offered"
        );
        assert!(!html.contains("checked"), "and not ticked for the person");
        for bad in [
            "<b>", "<i>", "<u>", "<s>", "<em>", "<a>", "<q>", "<kbd>", "csrf\"'",
        ] {
            assert!(!html.contains(bad), "{bad} in {html}");
        }
    }
}
