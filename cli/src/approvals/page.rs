//! The approvers' page: askama templates (cli/templates/approvals/), compiled
//! with the binary. Every `{{ }}` in an `.html` template is HTML-escaped by
//! askama, so tool names, subjects, reasons and arguments — all caller- or
//! approver-controlled — are shown as text, never as markup. No script.

use super::store::{Approval, State};
use askama::Template;

pub const STYLE: &str = include_str!("../../templates/approvals/style.css");

/// One request as a row of the page.
pub struct Row {
    pub id: String,
    pub subject: String,
    pub tenant: String,
    pub tool: String,
    pub rule: String,
    pub method: String,
    /// Pretty-printed arguments, only when the filter sent them.
    pub arguments: Option<String>,
    pub args_sha256: String,
    pub findings: Vec<String>,
    pub asked: String,
    pub expires: String,
    /// The approver looking at the page made this call: no buttons.
    pub own: bool,
    pub state: &'static str,
    pub decided_by: String,
    pub reason: String,
}

fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// Caller-controlled text as an approver must read it: bidi overrides and
/// isolates, zero-width and other invisible format characters shown as
/// `<U+202E>`, so a tool name or argument cannot display as something it is
/// not (sixth review L5). HTML escaping is the template's.
fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let hidden = matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}' | '\u{FEFF}' | '\u{00AD}' | '\u{061C}');
        if hidden || (c.is_control() && c != '\n' && c != '\t') {
            out.push_str(&format!("<U+{:04X}>", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn row(a: &Approval, viewer: &str, aliases: &[String], now: i64) -> Row {
    let summary = a.summary_value();
    let arguments = summary
        .get("arguments")
        .map(|v| visible(&serde_json::to_string_pretty(v).unwrap_or_default()));
    let findings = summary
        .get("findings")
        .and_then(|f| f.as_array())
        .map(|f| {
            f.iter()
                .map(|x| {
                    format!(
                        "{} at {}",
                        x.get("kind").and_then(|v| v.as_str()).unwrap_or("?"),
                        x.get("path").and_then(|v| v.as_str()).unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let state = a.state_at(now);
    Row {
        id: a.id.clone(),
        subject: visible(&a.binding.subject),
        tenant: visible(&a.binding.tenant),
        tool: visible(&a.binding.tool),
        rule: visible(&a.rule),
        method: summary
            .get("method")
            .and_then(|v| v.as_str())
            .map(visible)
            .unwrap_or_default(),
        arguments,
        args_sha256: a.binding.args_sha256.clone(),
        findings,
        asked: ago(now - a.created_ms),
        expires: if a.expires_ms > now {
            format!("in {}", ago(a.expires_ms - now))
        } else {
            format!("{} ago", ago(now - a.expires_ms))
        },
        own: super::config::is_own_call(&a.binding.subject, viewer, aliases),
        state: state.as_str(),
        decided_by: visible(a.decided_by.as_deref().unwrap_or_default()),
        reason: visible(a.reason.as_deref().unwrap_or_default()),
    }
}

#[derive(Template)]
#[template(path = "approvals/index.html")]
struct Index<'a> {
    viewer: &'a str,
    csrf: &'a str,
    pending: Vec<Row>,
    history: Vec<Row>,
}

#[derive(Template)]
#[template(path = "approvals/login.html")]
struct Login<'a> {
    login_csrf: &'a str,
    message: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "approvals/message.html")]
struct Message<'a> {
    title: &'a str,
    text: &'a str,
}

pub fn index(
    viewer: &str,
    aliases: &[String],
    csrf: &str,
    pending: &[Approval],
    history: &[Approval],
    now: i64,
) -> Result<String, askama::Error> {
    Index {
        viewer,
        csrf,
        pending: pending
            .iter()
            .filter(|a| a.state_at(now) == State::Pending)
            .map(|a| row(a, viewer, aliases, now))
            .collect(),
        history: history
            .iter()
            .map(|a| row(a, viewer, aliases, now))
            .collect(),
    }
    .render()
}

pub fn login(login_csrf: &str, message: Option<&str>) -> String {
    Login {
        login_csrf,
        message,
    }
    .render()
    .unwrap_or_else(|_| "login page failed to render".into())
}

pub fn message(title: &str, text: &str) -> String {
    Message { title, text }
        .render()
        .unwrap_or_else(|_| "page failed to render".into())
}

#[cfg(test)]
mod tests {
    use super::visible;

    #[test]
    fn invisible_and_bidi_characters_are_shown_as_code_points() {
        // (behaviour, caller text, what the approver reads)
        let cases = [
            ("plain_text_unchanged", "create_refund", "create_refund"),
            (
                "right_to_left_override",
                "refund\u{202E}evil",
                "refund<U+202E>evil",
            ),
            (
                "isolate_and_zero_width",
                "a\u{2066}b\u{200B}c",
                "a<U+2066>b<U+200B>c",
            ),
            ("escape_character", "x\u{1b}[31m", "x<U+001B>[31m"),
            (
                "newlines_kept_in_arguments",
                "{\n  \"a\": 1\n}",
                "{\n  \"a\": 1\n}",
            ),
        ];
        for (name, text, shown) in cases {
            assert_eq!(visible(text), shown, "{name}");
        }
    }
}
