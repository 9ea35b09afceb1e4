//! Adversarial inputs for the scanner: each detector's trigger repeated back
//! to back, the worst case for a scanner that starts work at every trigger.
//! Used by the linearity tests, `mcp-firewall bench-dlp --adversarial` and
//! the fuzz corpus, so all three measure the same inputs.

use super::rules;

/// The units an adversarial payload repeats, named by what they trigger:
/// every built-in secret rule's trigger literals (lower case and upper case,
/// since formats differ: `akia` vs `AKIA`), a few that open each rule's token
/// (`ghp_` + token bytes), and the anchors of the personal-data pass (digit
/// runs and clusters, `@`, IBAN country codes, phone shapes).
pub fn units() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut push = |name: String, unit: String| {
        if !out.iter().any(|(_, u)| *u == unit) {
            out.push((name, unit));
        }
    };
    for spec in rules::SECRET_RULES {
        for t in spec.triggers {
            push(format!("{}:{t}", spec.kind), (*t).to_owned());
            push(
                format!("{}:{}", spec.kind, t.to_ascii_uppercase()),
                t.to_ascii_uppercase(),
            );
            // The trigger followed by token bytes: a token that never ends
            // unless the next trigger ends it.
            push(format!("{}:{t}+token", spec.kind), format!("{t}A1b2C3d4"));
        }
    }
    for (name, unit) in [
        ("discord:token-run", "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ."),
        ("jwt:header", "eyJhbGciOiJIUzI1NiJ9."),
        ("private_key:marker", "-----BEGIN RSA PRIVATE KEY-----\n"),
        ("url:userinfo", "https://u:p@"),
        ("assignment:password", "password="),
        ("assignment:quoted", "\"secret\": \""),
        ("auth:bearer", "Authorization: Bearer "),
        ("curl:-u", " -u a:b"),
        ("card:digits", "4"),
        ("card:grouped", "4111 "),
        ("card:dashed", "4111-"),
        ("card:valid", "4111111111111111 "),
        ("ssn:shape", "123-45-6789 "),
        ("phone:plus", "+1 "),
        ("phone:paren", "(415) "),
        ("phone:nanp", "415-555-0132 "),
        ("email:at", "@"),
        ("email:local", "a@"),
        ("email:bang", "!a@"),
        ("email:domain", "a@b."),
        ("email:address", "x@example.com "),
        ("iban:country", "DE"),
        ("iban:check", "DE89"),
        ("iban:grouped", "DE89 3704 "),
    ] {
        push(name.to_owned(), unit.to_owned());
    }
    out
}

/// `unit` repeated to at least `size` bytes.
pub fn payload(unit: &str, size: usize) -> String {
    unit.repeat(size / unit.len().max(1) + 1)
}
