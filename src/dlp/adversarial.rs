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
        // Each context matcher's value nested in the one before it: every
        // value reads on to the end of the run unless it ends where the
        // next trigger begins.
        ("assignment:token", "token="),
        ("assignment:key", "key="),
        ("assignment:colon", "secret:"),
        ("assignment:rejected", "password=example"),
        ("assignment:rejected-token", "api_key=EXAMPLEtoken="),
        ("assignment:quoted-escaped", "\\\"password\\\": \\\""),
        ("assignment:quotes-mixed", "pass='x\"pass=\"y'"),
        ("assignment:identifier-words", "secret_token_key_pass_"),
        // Many secret words in one identifier that does end in an operator
        // within reach (eighth review F3: each word read the identifier and
        // value again).
        (
            "assignment:long-identifier",
            "pass_pass_pass_pass_pass_pass_pass_pass_pass_pass_pass_pass_pass_pass_pass_pass=",
        ),
        // What the second reading decodes, dense (each text is read twice).
        ("reading:json-escape", "\\u0070assword=\\u0022"),
        ("reading:html-reference", "&lt;password&gt;&#65;&quot;"),
        ("reading:fullwidth-digits", "４１１１－"),
        ("reading:no-break-space", "4111\u{a0}"),
        ("reading:zero-width-space", "4\u{200b}"),
        ("reading:soft-hyphen-token", "ghp_\u{ad}"),
        // What only the wide readings decode (twenty-second session): every
        // character mapped, each kind of digit beside another, so the text
        // is read four times (as is, wide, wide apart, and narrow where the
        // unit has what it decodes).
        ("reading:styled-digit-mix", "\u{96a}\u{b2}a\u{2460}\u{a0}"),
        ("reading:superscript-after-digit", "1\u{b2}"),
        ("reading:ideographic-stop-run", "a\u{3002}\u{200b}\u{200b}\u{200b}\u{200b}"),
        ("reading:escaped-reference", "\\u0026it;"),
        ("reading:combining-marks", "a\u{301}\u{301}"),
        ("reading:mathematical-letters", "\u{1d41a}\u{1d7d2}\u{210e}"),
        ("reading:named-references", "&sup2;&ndash;"),
        // A styled digit after something only the wide reading decodes.
        ("reading:footnote-after-wide", "&ndash;1\u{b2}"),
        ("reading:mark-before-escaped", "x\u{b9}\\u0026#52;"),
        ("assignment:long-identifier-colon", "pwd_pwd_pwd_pwd_pwd_pwd_pwd_pwd_pwd_pwd_pwd_pwd_pwd:= "),
        ("auth:no-blank", "Authorization:"),
        ("auth:equals", "authorization=bearer+"),
        ("auth:basic", "Authorization: Basic "),
        ("prose:password-is", "password is "),
        ("curl:quoted", " -u 'a:"),
        ("curl:long-option", " --user="),
        ("url:scheme-run", "a://"),
        ("url:userinfo-colon", "https://user:"),
        ("xml:value", "\" value=\""),
        ("xml:key-value", "<add key=\"password\" value=\""),
        ("mysql:flag", "mysql -p"),
        ("mysql:no-flag", "mysql "),
        ("sumo:access", "sumo_access_id="),
        (
            "private_key:short-body",
            "-----BEGIN PRIVATE KEY-----\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n-----END",
        ),
        ("jwt:segments", "eyJ.eyJ."),
        ("jwt:header-run", "eyJhbGciOiJub25lIn0"),
        // Prefixes after the bytes a boundary check reads, and a prefix
        // glued to the token bytes of the one before.
        ("token:after-underscore", "x_ghp_"),
        ("token:after-dash", "srv-ghp_"),
        (
            "token:prefix-glued",
            "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
        ),
        ("token:openai-marker", "sk-T3BlbkFJ"),
        ("token:slack-segments", "xoxb-1-"),
        // One prefix and the longest tail its regex counts, then a blank:
        // a regex call per unit whose counted repetition (`{20,300}`) makes
        // every byte dear.
        ("token:gitlab-longest-tail", "glpat-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA "),
        ("token:pypi-longest-tail", "pypi-AgEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA "),
        // Long runs of base64-ish bytes and a run broken by `.`/`=`.
        ("base64:run", "A1b2C3d4E5f6G7h8"),
        ("base64:padded", "QUJD+/=="),
        ("base64:dotted", "MTk4NjIyNDgzNDcxOTI1MjQ4Cl2F."),
        // Near misses of the personal-data formats.
        ("card:luhn-fail", "4111111111111112 "),
        ("card:grouped-fail", "4111 1111 1111 1112 "),
        ("card:cluster", "1 2-3.4/5(6)"),
        ("phone:e164", "+14155550132 "),
        ("ssn:dashed", "078-05-1120 "),
        ("iban:mod97-fail", "DE89370400440532013001 "),
        ("iban:letters", "GB82WEST"),
        ("email:labels", "a@b.c."),
        ("email:local-run", "first.last+tag@"),
        ("email:machine", "x@a.gserviceaccount.com "),
        ("telegram:id", "123456789:AA"),
        ("facebook:id", "123456789012345|"),
        ("mailchimp:hex", "0123456789abcdef0123456789abcdef-us1"),
        ("azure:q-tilde", "abc1Q~"),
        ("terraform:run", "abcdefghijklmn.atlasv1."),
        // Name/value pairs as text (twelfth attack pass, finding 2): each
        // name reads on to its value, or back to one, over members between.
        ("pair:json", "{\"Name\":\"DB_PASSWORD\",\"Value\":\""),
        ("pair:json-value-first", "\"Value\":\"x\",\"Name\":\"DB_PASSWORD\","),
        (
            "pair:json-members-between",
            "\"name\":\"password\",\"t\":\"1\",\"t\":\"1\",\"t\":\"1\",\"t\":\"1\",",
        ),
        (
            "pair:json-members-before",
            "\"t\":\"1\",\"t\":\"1\",\"t\":\"1\",\"t\":\"1\",\"name\":\"password\",",
        ),
        ("pair:json-escaped-before", "\"value\":\"\\\\\\\",\"name\":\"token\","),
        ("pair:json-path-name", "\"Name\":\"/a/b/c/d/e/f/g/password\","),
        ("pair:yaml", "- name: DB_PASSWORD\n  value: "),
        ("pair:yaml-members-between", "- name: password\n  t: x\n  t: x\n  t: x\n  t: x\n"),
        ("pair:yaml-name-only", "name: password\n"),
        ("pair:yaml-flow", "{name: password, value: "),
        // Command lines and directives (finding 7): each command's words
        // are read up to the next command of its name.
        ("command:docker-login", "docker login -u a -p "),
        ("command:redis-cli", "redis-cli -a "),
        ("command:sshpass-options", "sshpass -e -v -e -v "),
        ("command:secure-string-piped", "\"x\" | ConvertTo-SecureString -AsPlainText "),
        ("command:requirepass-line", "requirepass x\n"),
        // Twenty-third session: prose words that name commands, a prompt,
        // a pipe read backwards, continued lines, grouped options.
        ("command:redis-prompt", "127.0.0.1:6379> AUTH "),
        ("command:net-user", "net user a "),
        ("command:zip-options", "zip -P -P "),
        ("command:password-stdin", "echo x | docker login --password-stdin "),
        ("command:continued-lines", "docker login -u a \\\n"),
        ("command:ldap-grouped", "ldappasswd -xWa -xs "),
        ("command:login-anywhere", "xlogin login -p "),
        ("command:net-use-user", "net use * /user:a "),
        ("command:here-string", "docker login --password-stdin <<< "),
        ("assignment:subscript", "['password'] = "),
        ("assignment:psk", "psk=\""),
    ] {
        push(name.to_owned(), unit.to_owned());
    }
    out
}

/// `unit` repeated to at least `size` bytes.
pub fn payload(unit: &str, size: usize) -> String {
    unit.repeat(size / unit.len().max(1) + 1)
}
