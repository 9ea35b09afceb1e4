//! The server's response head (and trailers): what of it a client may read.
//!
//! Both SDKs put a redirect's target and an unexpected `Content-Type` in the
//! error their caller gets, the TypeScript SDK keeps any session id an answer
//! carries, and every line reaches a raw reader (helpers' attacks in a real
//! Envoy, twelfth session). Pure: the filter hands the lines over and writes
//! back what [`screen`] says.

use crate::dlp::{Scanner, JWT_KIND};

/// What to write back: per name, the lines that stay (none: the name goes).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Screened {
    pub rewrites: Vec<(String, Vec<String>)>,
    /// DLP kinds found (counted and logged by kind, never the text).
    pub kinds: Vec<String>,
    /// Lines dropped because a client reads their bytes otherwise.
    pub unreadable: usize,
}

/// Credentials a server issues to its client on purpose, where a JWT is the
/// usual form: the MCP specification names a JWT as a session id, and session
/// cookies are often one. Other findings there still remove the line.
const ISSUED: [&str; 2] = ["mcp-session-id", "set-cookie"];

/// Screen `lines` (name lower case, value as the host read it): a line whose
/// name or value DLP finds sensitive data in goes, so does one that is not
/// visible ASCII (a byte the host could not read as UTF-8 reached us as
/// U+FFFD, while clients read header bytes as Latin-1: `\xAD` is an invisible
/// soft hyphen inside a token to them), and every line of a name whose
/// lines, joined with ", " as clients read a repeated field, hold a finding
/// none of them holds alone. Pseudo-headers are not the server's text.
pub fn screen(scanner: &Scanner, lines: &[(&str, &str)]) -> Screened {
    let mut out = Screened::default();
    let mut bad = vec![false; lines.len()];
    // One text, one scan: a scan's fixed cost per line was most of the check.
    // Each line alone first, then the joined value of each repeated name.
    let mut text = String::with_capacity(lines.iter().map(|(n, v)| n.len() + v.len() + 3).sum());
    let mut regions: Vec<(usize, Region)> = Vec::new();
    for (i, (name, value)) in lines.iter().enumerate() {
        if name.starts_with(':') {
            continue;
        }
        if !visible_ascii(name) || !visible_ascii(value) {
            if let Some(b) = bad.get_mut(i) {
                *b = true;
            }
            out.unreadable += 1;
            continue;
        }
        push_line(&mut text, name, value);
        regions.push((text.len(), Region::Line(i)));
    }
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in lines.iter().filter(|(n, _)| !n.starts_with(':')) {
        if names.contains(name) {
            continue;
        }
        // Most names come once: nothing is collected for them.
        if lines.iter().filter(|(n, _)| n == name).nth(1).is_some() {
            let values: Vec<&str> = lines
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .collect();
            push_line(&mut text, name, &values.join(", "));
            regions.push((text.len(), Region::Joined(names.len())));
        }
        names.push(name);
    }
    for m in scanner.scan_recurring(&text) {
        let first = regions.partition_point(|(end, _)| *end <= m.start);
        let last = regions.partition_point(|(end, _)| *end < m.end);
        let mut counted = false;
        for (_, region) in regions.get(first..=last).unwrap_or_default() {
            let hit: Vec<usize> = match region {
                Region::Line(i) => vec![*i],
                Region::Joined(k) => {
                    let name = names.get(*k).copied().unwrap_or_default();
                    let of_name = |i: &usize| lines.get(*i).is_some_and(|(n, _)| *n == name);
                    // A match a line holds that was found on that line alone
                    // (line regions come first in the text, so theirs are
                    // already marked): that line goes, the others stay.
                    // Otherwise the lines say it only together: all go.
                    let matched = text.get(m.start..m.end).unwrap_or_default();
                    let alone = (0..lines.len()).filter(of_name).any(|i| {
                        bad.get(i) == Some(&true)
                            && lines.get(i).is_some_and(|(_, v)| v.contains(matched))
                    });
                    match alone {
                        true => Vec::new(),
                        false => (0..lines.len()).filter(of_name).collect(),
                    }
                }
            };
            for i in hit {
                let issued = lines
                    .get(i)
                    .is_some_and(|(n, _)| ISSUED.contains(n) && m.kind == JWT_KIND);
                if issued {
                    continue;
                }
                if let Some(b) = bad.get_mut(i) {
                    *b = true;
                }
                if !counted {
                    out.kinds.push(m.kind.clone());
                    counted = true;
                }
            }
        }
    }
    for name in names {
        let of_name = || lines.iter().zip(&bad).filter(move |((n, _), _)| *n == name);
        if of_name().any(|(_, b)| *b) {
            let kept = of_name()
                .filter(|(_, b)| !**b)
                .map(|((_, v), _)| (*v).to_owned())
                .collect();
            out.rewrites.push((name.to_owned(), kept));
        }
    }
    out
}

enum Region {
    /// Line `i` of the input alone.
    Line(usize),
    /// The joined value of the `k`th distinct name.
    Joined(usize),
}

fn push_line(text: &mut String, name: &str, value: &str) {
    text.push_str(name);
    text.push_str(": ");
    text.push_str(value);
    text.push('\n');
}

/// Visible ASCII, space and tab: what a field may hold that every reader
/// reads as the same text.
fn visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Whether a redirect's `location` keeps the client on the origin it asked
/// (`scheme`, `authority` of the request): a path, or an absolute URL of
/// the same scheme and authority. A client following it comes back through
/// this Envoy and this filter (Starlette's `/mcp` -> `/mcp/` redirect is
/// common); anything else would take it elsewhere, past the filter.
pub fn same_origin(location: &str, scheme: Option<&str>, authority: Option<&str>) -> bool {
    let location = location.trim();
    if let Some(rest) = location.strip_prefix("//") {
        return authority_of(rest).eq_ignore_ascii_case(authority.unwrap_or_default())
            && authority.is_some();
    }
    if location.starts_with('/') {
        // Not `/\host`: some clients read a backslash as a slash.
        return !location.starts_with("/\\");
    }
    match location.split_once("://") {
        Some((s, rest)) => {
            scheme.is_some_and(|want| s.eq_ignore_ascii_case(want))
                && authority.is_some_and(|want| authority_of(rest).eq_ignore_ascii_case(want))
        }
        // A relative path (`mcp/`), unless it names a scheme (`javascript:`).
        None => !location.contains(':') && !location.contains('\\'),
    }
}

fn authority_of(rest: &str) -> &str {
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    rest.get(..end).unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A";
    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzaWQiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";

    fn scanner() -> Scanner {
        match Scanner::builtin(true, true) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn lines_that_carry_or_hide_text_go_and_the_rest_stay() {
        let key = "-----BEGIN RSA PRIVATE KEY-----";
        let end = "-----END RSA PRIVATE KEY-----";
        let body = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ0iT9wCS0DRTXu269V264Vf/3jvredZiKRkgwlL9xNAwxXFg0x/XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC+9aGVd+Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw";
        let cookie = format!("t={SECRET}");
        let session_cookie = format!("__Secure-next-auth.session-token={JWT}; HttpOnly");
        // (name, lines, the names rewritten with what stays, DLP kinds found)
        type Case<'a> = (
            &'a str,
            Vec<(&'a str, &'a str)>,
            Vec<(&'a str, Vec<&'a str>)>,
            usize,
        );
        let cases: Vec<Case> = vec![
            (
                "a_plain_head_stays",
                vec![
                    (":status", "200"),
                    ("content-type", "application/json"),
                    ("date", "Sun, 06 Dec 2026 10:00:00 GMT"),
                    ("mcp-session-id", "3f2a9c1e5b7d4e8fa0c6b2d4e1f3a5c7"),
                ],
                vec![],
                0,
            ),
            (
                "a_secret_value_goes",
                vec![("x-note", SECRET), ("server", "uvicorn")],
                vec![("x-note", vec![])],
                1,
            ),
            (
                "a_secret_name_goes",
                vec![(SECRET, "1")],
                vec![(SECRET, vec![])],
                1,
            ),
            (
                "only_the_line_that_carries_it_goes",
                vec![
                    ("set-cookie", "AWSALB=abc123; Path=/"),
                    ("set-cookie", &cookie),
                ],
                vec![("set-cookie", vec!["AWSALB=abc123; Path=/"])],
                1,
            ),
            (
                "a_pair_split_over_two_session_id_lines_goes_whole",
                vec![
                    ("mcp-session-id", "{name: DB_PASSWORD"),
                    ("mcp-session-id", "value: Xq7#mP2$vL9!wR4z}"),
                ],
                vec![("mcp-session-id", vec![])],
                1,
            ),
            (
                "a_value_split_over_lines_of_one_name_goes_whole",
                vec![
                    ("x-note", key),
                    ("x-note", &body[..200]),
                    ("x-note", &body[200..]),
                    ("x-note", end),
                    ("server", "s"),
                ],
                vec![("x-note", vec![])],
                1,
            ),
            (
                "a_byte_read_otherwise_goes",
                vec![(
                    "content-type",
                    "text/plain; n=ghp_aB3dE5fG7hJ9\u{FFFD}kL1mN3pQ5rS7tU9vW1xY3z5A",
                )],
                vec![("content-type", vec![])],
                0,
            ),
            (
                "non_ascii_goes",
                vec![("x-note", "4111\u{a0}1111\u{a0}1111\u{a0}1111")],
                vec![("x-note", vec![])],
                0,
            ),
            (
                "a_jwt_session_id_stays",
                vec![("mcp-session-id", JWT)],
                vec![],
                0,
            ),
            (
                "a_jwt_session_cookie_stays",
                vec![("set-cookie", &session_cookie)],
                vec![],
                0,
            ),
            (
                "a_jwt_elsewhere_goes",
                vec![("x-debug", JWT)],
                vec![("x-debug", vec![])],
                1,
            ),
            (
                "another_secret_as_session_id_goes",
                vec![("mcp-session-id", SECRET)],
                vec![("mcp-session-id", vec![])],
                1,
            ),
        ];
        let scanner = scanner();
        // Twice: the second time with every clean head remembered.
        for round in ["first", "again"] {
            for (name, head, want, kinds) in &cases {
                let got = screen(&scanner, head);
                let want: Vec<(String, Vec<String>)> = want
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), v.iter().map(|l| (*l).to_owned()).collect()))
                    .collect();
                assert_eq!(got.rewrites, want, "{name} ({round})");
                assert_eq!(got.kinds.len(), *kinds, "{name} ({round}): {:?}", got.kinds);
            }
        }
    }

    #[test]
    fn a_remembered_clean_head_passes_only_byte_for_byte() {
        let clean = [
            ("content-type", "application/json"),
            ("date", "Sun, 06 Dec 2026 10:00:00 GMT"),
        ];
        let note = format!("n={SECRET}");
        let dated = format!("{} {SECRET}", clean[1].1);
        // (case, head, DLP kinds found)
        type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, usize);
        let cases: [Case; 4] = [
            ("the_clean_head", clean.to_vec(), 0),
            (
                "the_same_head_with_a_secret_line",
                vec![clean[0], clean[1], ("x-note", &note)],
                1,
            ),
            (
                "the_clean_head_with_a_secret_in_its_date",
                vec![clean[0], ("date", &dated)],
                1,
            ),
            ("the_clean_head_again", clean.to_vec(), 0),
        ];
        let scanner = scanner();
        for _ in 0..2 {
            for (name, head, kinds) in &cases {
                assert_eq!(screen(&scanner, head).kinds.len(), *kinds, "{name}");
            }
        }
    }

    #[test]
    fn a_redirect_may_only_stay_on_the_requests_origin() {
        let (s, a) = (Some("http"), Some("gw.example:8080"));
        let cases = [
            ("a_path", "/mcp/", true),
            ("a_relative_path", "mcp/", true),
            ("the_same_origin", "http://GW.example:8080/mcp/", true),
            ("another_host", "http://leak.invalid/x", false),
            ("another_port", "http://gw.example:9090/mcp/", false),
            ("another_scheme", "https://gw.example:8080/mcp/", false),
            ("scheme_relative_elsewhere", "//leak.invalid/mcp", false),
            ("scheme_relative_here", "//gw.example:8080/mcp", true),
            ("a_backslash_path", "/\\leak.invalid", false),
            (
                "userinfo_trick",
                "http://gw.example:8080@leak.invalid/",
                false,
            ),
            ("a_script", "javascript:alert(1)", false),
        ];
        for (name, location, want) in cases {
            assert_eq!(same_origin(location, s, a), want, "{name}");
        }
    }
}
