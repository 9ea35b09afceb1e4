//! Canonicalisation of the strings attackers dress up: resource URIs, filesystem
//! paths and URL hosts.
//!
//! Every function here either returns one canonical form or refuses with a
//! reason. Where two well-known parsers (RFC 3986, the WHATWG URL Standard, a
//! POSIX filesystem) would read the same input differently, we refuse rather
//! than guess which one the MCP server uses: a refusal becomes a condition
//! *error*, which fails closed (POLICY.md, "Conditions").

// ---------------------------------------------------------------------------
// Percent-encoding helpers (RFC 3986 §2)
// ---------------------------------------------------------------------------

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte encoded by a `%HH` escape starting at `at`, if there is a valid one.
fn escape_at(bytes: &[u8], at: usize) -> Option<u8> {
    if bytes.get(at) != Some(&b'%') {
        return None;
    }
    let hi = hex_value(*bytes.get(at + 1)?)?;
    let lo = hex_value(*bytes.get(at + 2)?)?;
    Some(hi << 4 | lo)
}

/// RFC 3986 §2.3: characters that mean the same encoded or not.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §2.2.
fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// C0 controls and DEL (ASCII), plus the C1 controls U+0080..=U+009F.
fn is_control(c: char) -> bool {
    c.is_control()
}

fn push_escape(out: &mut String, b: u8) {
    out.push('%');
    out.push(char::from(UPPER_HEX[usize::from(b >> 4)]));
    out.push(char::from(UPPER_HEX[usize::from(b & 0xf)]));
}

fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let v = escape_at(bytes, i)
                .ok_or_else(|| format!("'%' at byte {i} does not start a %HH escape"))?;
            out.push(v);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

fn contains_escape(s: &str) -> bool {
    let bytes = s.as_bytes();
    (0..bytes.len()).any(|i| escape_at(bytes, i).is_some())
}

// ---------------------------------------------------------------------------
// Resource URIs (POLICY.md "Decision": resource URIs are normalised)
// ---------------------------------------------------------------------------

/// The parts of a URI a component may hold unencoded (RFC 3986 §3.2.2, §3.3,
/// §3.4, §3.5; userinfo is refused, see [`normalize_authority`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum UriPart {
    Host,
    Path,
    Query,
    Fragment,
}

fn allowed_raw(part: UriPart, b: u8) -> bool {
    is_unreserved(b)
        || is_sub_delim(b)
        || match part {
            UriPart::Host => false,
            UriPart::Path => matches!(b, b':' | b'@' | b'/'),
            UriPart::Query | UriPart::Fragment => matches!(b, b':' | b'@' | b'/' | b'?'),
        }
}

/// RFC 3986 §6.2.2: decode escapes of unreserved characters (§6.2.2.2), write
/// the escapes that stay in upper-case hex (§6.2.2.1), and percent-encode raw
/// characters the component may not hold (spaces, non-ASCII as UTF-8), so that
/// `a b`, `a%20b` and `a%20b` all give one string. Refuses what POLICY.md
/// refuses anywhere in a resource URI: an encoded `/` (`%2F`), a backslash raw
/// or encoded, NUL and every other control character raw or encoded; and, our
/// addition, an encoded `%` (`%25`, double encoding), as `path_under` does.
fn normalize_part(s: &str, part: UriPart) -> Result<String, String> {
    let lower = part == UriPart::Host;
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let v = escape_at(bytes, i)
                .ok_or_else(|| format!("'%' at byte {i} does not start a %HH escape"))?;
            match v {
                b'/' => return Err("holds an encoded '/' (%2F)".into()),
                // An encoded '%' means double encoding (`%252e%252e`): a
                // server that decodes twice would see what we did not decide on.
                b'%' => return Err("holds an encoded '%' (%25): double encoding".into()),
                b'\\' => return Err("holds an encoded backslash (%5C)".into()),
                0 => return Err("holds an encoded NUL (%00)".into()),
                v if v < 0x20 || v == 0x7f => {
                    return Err(format!("holds an encoded control character (%{v:02X})"))
                }
                v if is_unreserved(v) && lower => out.push(char::from(v.to_ascii_lowercase())),
                v if is_unreserved(v) => out.push(char::from(v)),
                v => push_escape(&mut out, v),
            }
            i += 3;
            continue;
        }
        let c = s
            .get(i..)
            .and_then(|rest| rest.chars().next())
            .unwrap_or('\u{fffd}');
        if c == '\\' {
            return Err("holds a backslash".into());
        }
        if is_control(c) {
            return Err(format!(
                "holds a control character (U+{:04X})",
                u32::from(c)
            ));
        }
        if c.is_ascii() && allowed_raw(part, b) {
            out.push(if lower { c.to_ascii_lowercase() } else { c });
        } else {
            let mut buf = [0u8; 4];
            for &e in c.encode_utf8(&mut buf).as_bytes() {
                push_escape(&mut out, e);
            }
        }
        i += c.len_utf8();
    }
    Ok(out)
}

/// RFC 3986 §3.1: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"`.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then_some((scheme, rest))
}

/// Splits `s` before the first character in `stops` (the whole string if none).
fn split_before<'a>(s: &'a str, stops: &[char]) -> (&'a str, &'a str) {
    match s.find(stops) {
        Some(i) => s.split_at_checked(i).unwrap_or((s, "")),
        None => (s, ""),
    }
}

/// RFC 3986 §5.2.4 on a path already normalised by [`normalize_part`] (so
/// `%2E%2e` is `..` by now, as §6.2.2.3 asks). Refuses a `..` with nothing left
/// to remove ("climbs above its root"), and a `..` that would remove an empty
/// segment: RFC 3986 reads `/a//..` as `/a/` but a filesystem reads it as `/`,
/// so `file:///srv/docs////../../../etc` would look inside `/srv/docs` to us and
/// be `/etc` to the server.
fn remove_dot_segments(path: &str) -> Result<String, String> {
    let (root, body) = match path.strip_prefix('/') {
        Some(body) => ("/", body),
        None => ("", path),
    };
    if body.is_empty() {
        return Ok(path.to_owned());
    }
    let segments: Vec<&str> = body.split('/').collect();
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    let mut ends_in_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => ends_in_slash = last,
            ".." => {
                match kept.pop() {
                    None => return Err("path climbs above its root".into()),
                    Some("") => {
                        return Err("'..' after an empty segment ('//') is read differently by \
                                    RFC 3986 and by filesystems"
                            .into())
                    }
                    Some(_) => {}
                }
                ends_in_slash = last;
            }
            other => kept.push(other),
        }
    }
    let mut out = String::from(root);
    out.push_str(&kept.join("/"));
    if ends_in_slash && !kept.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// RFC 3986 §3.2.2: an IP-literal host is `[` IPv6address / IPvFuture `]`;
/// compared lower-case (§6.2.2.1).
fn normalize_ip_literal(host: &str) -> Result<String, String> {
    let inner = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .ok_or("unterminated IP literal")?;
    if inner.is_empty()
        || !inner
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V'))
    {
        return Err(format!("invalid IP literal [{inner}]"));
    }
    Ok(format!("[{}]", inner.to_ascii_lowercase()))
}

/// Why a request path (`:path`, query and all) is not one Envoy's route
/// match and every server read alike, or `None`. Envoy matches routes on the
/// path as sent (unless told to normalise it); servers decode escapes,
/// resolve dot segments, merge slashes, strip `;` parameters or treat `\`
/// as `/` before they dispatch, so `/%6coose/mcp` matches Envoy's `/` route
/// and reaches the server mounted at `/loose/`. The query is not read: no
/// server dispatches on it.
pub fn route_path_problem(path: &str) -> Option<&'static str> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return Some("does not start with /");
    }
    if let Some(b) = path.bytes().find(|b| !(0x21..0x7f).contains(b)) {
        return Some(match b {
            b' ' => "holds a space",
            _ => "holds a byte outside printable ASCII",
        });
    }
    for (c, why) in [
        ('%', "holds a percent-escape"),
        ('\\', "holds a backslash"),
        (';', "holds a ';' (a parameter some servers strip)"),
    ] {
        if path.contains(c) {
            return Some(why);
        }
    }
    if path.contains("//") {
        return Some("holds an empty segment (//)");
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Some("holds a dot segment");
    }
    None
}

/// Normalise a resource URI as POLICY.md describes, or say why it is refused.
///
/// * scheme and host lower-cased (RFC 3986 §6.2.2.1), escapes of unreserved
///   characters decoded (§6.2.2.2) and remaining escapes written `%HH` upper
///   case; raw characters a URI may not hold (space, non-ASCII) are
///   percent-encoded as UTF-8, so both spellings compare equal;
/// * `.` and `..` removed from the path (§5.2.4, §6.2.2.3), for hierarchical
///   (`file:///srv/a`, `db://x/y`) and rootless (`mem:notes/1`) paths alike;
/// * an empty or default port is dropped and an empty http(s)/ws(s) path
///   becomes `/` (§6.2.3, scheme-based);
/// * `file:` URIs (RFC 8089 §2): `file:/p`, `file:.//p` and
///   `file://localhost/p` become `file:///p`, a relative path is refused, and
///   a path holding `//` is refused, since a filesystem reads it as `/` and it
///   would slip past a deny rule;
/// * `http`, `https`, `ws`, `wss` and `ftp`: the host as WHATWG clients
///   read it (one trailing dot dropped, IPv4 in any of its number forms
///   written dotted, an IPv4-mapped IPv6 address as IPv4), and a URI of
///   these schemes without `//` and a host is refused;
/// * refused: no scheme, userinfo (`user@host`), under other schemes a host
///   ending in `.`, a path that climbs above its root, `..` after `//`,
///   a path without authority that would start with `//`,
///   and anywhere in the URI an encoded `/`, a backslash (raw or `%5C`), NUL
///   or any other control character (raw or encoded), or a bad `%` escape.
pub fn normalize_resource_uri(uri: &str) -> Result<String, String> {
    // WHATWG parsers strip leading and trailing spaces and C0 controls before
    // reading a URL; other parsers keep them (a helper's attack: Node opened
    // `/srv/secret.txt` for `file:///srv/secret.txt `, decided as `…%20`).
    if uri.starts_with(|c: char| c <= ' ') || uri.ends_with(|c: char| c <= ' ') {
        return Err("the URI starts or ends with a space or a control character".into());
    }
    let (scheme, rest) =
        split_scheme(uri).ok_or("not an absolute URI (no scheme, RFC 3986 §3.1)")?;
    let scheme = scheme.to_ascii_lowercase();
    let (before_fragment, fragment) = match rest.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (rest, None),
    };
    let (hier, query) = match before_fragment.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (before_fragment, None),
    };

    let mut out = scheme.clone();
    out.push(':');
    let is_file = scheme == "file";
    let (authority, path) = match hier.strip_prefix("//") {
        Some(after) => {
            let (authority, path) = split_before(after, &['/']);
            (Some(normalize_authority(authority, &scheme)?), path)
        }
        // RFC 8089 §2: `file:/etc/x` is the same file as `file:///etc/x`.
        None if is_file && hier.starts_with('/') => (Some(String::new()), hier),
        // A WHATWG parser (Node's `fetch`, browsers) reads `https:evil.com/x`
        // and `https:/evil.com/x` as host `evil.com`; RFC 3986 as a path.
        None if reads_host_as_whatwg(&scheme) => {
            return Err(format!("a {scheme} URI without '//' before its host"));
        }
        None => (None, hier),
    };
    let path = remove_dot_segments(&normalize_part(path, UriPart::Path)?)?;
    // `file:.//etc/passwd` has no authority, and its path is `/etc/passwd`
    // once its `.` is gone: the file `file:///etc/passwd` names (clients read
    // the leading `.//` as a path to it), so it is written in that form or a
    // deny on `file:///etc/**` would not see it. A path still relative names
    // no file (RFC 8089 §2: a file URI's path is absolute).
    let authority = match authority {
        None if is_file && path.starts_with('/') => Some(String::new()),
        None if is_file => return Err("a file URI whose path is not absolute".into()),
        a => a,
    };
    if is_file && path.contains("//") {
        // A filesystem reads `//` as `/`, so `file:////etc/passwd` or
        // `file:///etc//passwd` would slip past a deny rule on `file:///etc/passwd`.
        return Err("file URI path holds an empty segment ('//')".into());
    }
    match authority {
        // RFC 8089 §2: the host "localhost" means the local machine, like no host.
        Some(a) => {
            out.push_str("//");
            if !(is_file && a == "localhost") {
                out.push_str(&a);
            }
            if path.is_empty() && matches!(scheme.as_str(), "http" | "https" | "ws" | "wss") {
                out.push('/');
            }
        }
        // Without an authority a path may not start with `//` (RFC 3986 §3.3):
        // `mem:/.//x` must not come out as `mem://x`, which has authority `x`.
        None if path.starts_with("//") => {
            return Err("path without authority would start with '//'".into());
        }
        None => {}
    }
    out.push_str(&path);
    if let Some(q) = query {
        if is_file {
            // RFC 8089 gives `file:` URIs no query: a server reading
            // `file:///etc/passwd?x` opens `/etc/passwd` (or a file named
            // `passwd?x`), and an exact deny on the plain URI would not match.
            return Err("a file URI holds a query ('?'), which RFC 8089 does not define".into());
        }
        out.push('?');
        out.push_str(&normalize_part(q, UriPart::Query)?);
    }
    if let Some(f) = fragment {
        // RFC 3986 §3.5: the fragment is the client's business and names the
        // same resource as the URI without it, so `file:///etc/passwd#x` is
        // decided as `file:///etc/passwd`. It is still checked for what is
        // refused anywhere (controls, backslashes, bad escapes).
        normalize_part(f, UriPart::Fragment)?;
    }
    Ok(out)
}

/// Why a `resources` pattern of a rule can never match as written, if it
/// cannot: patterns are compared with request URIs after
/// [`normalize_resource_uri`], so a pattern must already be in that form
/// (`https://Internal.Example.com/*`, `file:///srv/%7Eadmin/*` or a raw space
/// never matched, and `check` accepted them). `*` and `?` are kept as
/// wildcards; a pattern of stars alone matches any URI's text and is fine.
pub fn resource_pattern_problem(pattern: &str) -> Option<String> {
    if pattern.contains('#') {
        return Some(
            "holds a '#': request URIs are decided without their fragment (RFC 3986 §3.5), \
             so it never matches"
                .into(),
        );
    }
    if pattern.chars().all(|c| c == '*') {
        return None;
    }
    // In a pattern `?` is a wildcard, not the start of a query: stand it in by
    // a sub-delimiter the pattern does not use, which normalisation keeps as
    // written in every component (RFC 3986 §2.2).
    let stand_in = ['!', '$', '\'', '(', ')', '+', ',', ';', '=']
        .into_iter()
        .find(|c| !pattern.contains(*c));
    let Some(stand_in) = stand_in else {
        return Some("uses too many different punctuation characters to be checked".into());
    };
    let probe = pattern.replace('?', &stand_in.to_string());
    match normalize_resource_uri(&probe) {
        Err(e) => Some(format!("is not a URI pattern the filter can match: {e}")),
        Ok(normal) if normal == probe => None,
        Ok(normal) => Some(format!(
            "is not in the normal form request URIs are compared in, so it never matches: \
             write {:?}",
            normal.replace(stand_in, "?")
        )),
    }
}

/// The schemes whose clients read the host as the WHATWG URL Standard does
/// (its "special" schemes but `file`, which RFC 8089 rules here): a Node or
/// browser client connects to that host, so rules compare it.
fn reads_host_as_whatwg(scheme: &str) -> bool {
    matches!(scheme, "http" | "https" | "ws" | "wss" | "ftp")
}

/// RFC 3986 §3.2: `[ userinfo "@" ] host [ ":" port ]`.
///
/// Userinfo is refused: a rule names a host, and `https://x@internal/` is
/// another string to it while every client connects to `internal` (RFC 9110
/// §4.2.4 makes userinfo an error in http(s) URIs). For the schemes of
/// [`reads_host_as_whatwg`] the host is what those clients connect to
/// ([`domain_or_ipv4_host`], [`ipv6_host`]): one trailing dot dropped,
/// `2130706433` and `0x7f.1` read as `127.0.0.1`, `[::ffff:127.0.0.1]` as
/// `127.0.0.1`, an empty host refused. Elsewhere a host ending in `.` is
/// refused: whether it names the host without the dot is the server's
/// reading, not one we can know.
fn normalize_authority(authority: &str, scheme: &str) -> Result<String, String> {
    if authority.contains('@') {
        return Err(
            "the authority holds userinfo ('…@'): rules compare hosts, and the host \
             behind userinfo would be another string to them"
                .into(),
        );
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(literal) => {
            let (inner, after) = literal.split_once(']').ok_or("unterminated IP literal")?;
            let port = match after {
                "" => "",
                a => a
                    .strip_prefix(':')
                    .ok_or("unexpected text after the IP literal")?,
            };
            (format!("[{inner}]"), port)
        }
        None => {
            let (h, p) = authority.split_once(':').unwrap_or((authority, ""));
            (h.to_owned(), p)
        }
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {port:?} is not a number"));
    }
    let mut out = String::new();
    // A port is a number: `:080` is port 80 to every client (WHATWG, Python,
    // Go's dialer), so it is written without its leading zeros, and then
    // dropped when it is the scheme's default (a helper's attack: `:080`
    // kept as written passed a deny on the host). Digits only, checked above.
    let port = match port.trim_start_matches('0') {
        "" if port.is_empty() => String::new(),
        "" => "0".to_owned(),
        // Digits only: a number that does not parse is over 65535.
        digits if digits.parse::<u16>().is_err() => {
            return Err(format!("port {port:?} is over 65535"))
        }
        digits => digits.to_owned(),
    };
    if reads_host_as_whatwg(scheme) {
        let canonical = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(inner) => ipv6_host(inner)?,
            None if host.is_empty() => return Err(format!("a {scheme} URI without a host")),
            None => domain_or_ipv4_host(&host)?,
        };
        out.push_str(&canonical);
    } else if host.starts_with('[') {
        out.push_str(&normalize_ip_literal(&host)?);
    } else {
        // Checked once escapes are decoded: `vault%2e` is `vault.` too.
        let normal = normalize_part(&host, UriPart::Host)?;
        if normal.ends_with('.') {
            return Err(format!(
                "host {host:?} ends in '.': whether the server reads it without the dot cannot be known"
            ));
        }
        out.push_str(&normal);
    }
    // RFC 3986 §6.2.3: an empty port, or the scheme's default port, is omitted
    // (WHATWG's default ports).
    let default_port = match scheme {
        "http" | "ws" => "80",
        "https" | "wss" => "443",
        "ftp" => "21",
        _ => "",
    };
    if !port.is_empty() && port != default_port {
        out.push(':');
        out.push_str(&port);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Filesystem paths (`path_under`)
// ---------------------------------------------------------------------------

/// The canonical absolute form of a filesystem path given as an argument, or
/// why it is refused.
///
/// Percent-escapes are decoded exactly once (a server may decode them, and a
/// literal `%2e%2e` directory name is rare enough to refuse); if the decoded
/// text still holds a `%HH` escape, the value was encoded twice and is refused
/// rather than decoded again, since we cannot know how many times the server
/// decodes. Then refused: invalid UTF-8, backslashes (a separator on Windows),
/// NUL and other control characters, relative paths (we do not know the
/// server's working directory), and `..` that climbs above `/`. `.` segments
/// and empty segments (`//`) are dropped and `..` removes the previous
/// segment, as a POSIX filesystem does for real directories (symlinks are the
/// server's business).
pub fn canonical_path(value: &str) -> Result<String, String> {
    let decoded = String::from_utf8(percent_decode(value)?)
        .map_err(|_| "percent-decoded path is not UTF-8".to_owned())?;
    if contains_escape(&decoded) {
        return Err("path is percent-encoded more than once".into());
    }
    if let Some(c) = decoded.chars().find(|c| *c == '\\' || is_control(*c)) {
        return Err(match c {
            '\\' => "path holds a backslash".to_owned(),
            '\0' => "path holds NUL".to_owned(),
            c => format!("path holds a control character (U+{:04X})", u32::from(c)),
        });
    }
    let body = decoded
        .strip_prefix('/')
        .ok_or("relative path (the server's working directory is unknown)")?;
    let mut kept: Vec<&str> = Vec::new();
    for segment in body.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if kept.pop().is_none() {
                    return Err("path climbs above '/'".into());
                }
            }
            other => kept.push(other),
        }
    }
    Ok(format!("/{}", kept.join("/")))
}

/// Whether canonical path `path` is `dir` or lies below it, comparing whole
/// segments (so `/srv/workspace-evil` is not under `/srv/work`). Both must
/// come from [`canonical_path`].
pub fn canonical_path_under(path: &str, dir: &str) -> bool {
    if dir == "/" {
        return true;
    }
    match path.strip_prefix(dir) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Whether `value`, taken as a filesystem path, is `dir` or lies below it after
/// canonicalisation ([`canonical_path`]); `Err` when either is refused.
pub fn path_under(value: &str, dir: &str) -> Result<bool, String> {
    let dir = canonical_path(dir).map_err(|e| format!("directory {dir:?}: {e}"))?;
    let path = canonical_path(value)?;
    Ok(canonical_path_under(&path, &dir))
}

// ---------------------------------------------------------------------------
// Hosts (`host_in`), following the WHATWG URL Standard's host parser
// ---------------------------------------------------------------------------

/// WHATWG URL §3.5 "forbidden domain code point" (ASCII part; non-ASCII is
/// refused before this is asked).
fn is_forbidden_domain_byte(b: u8) -> bool {
    b <= 0x20
        || b == 0x7f
        || matches!(
            b,
            b'#' | b'%'
                | b'/'
                | b':'
                | b'<'
                | b'>'
                | b'?'
                | b'@'
                | b'['
                | b'\\'
                | b']'
                | b'^'
                | b'|'
        )
}

/// The canonical host of a URL `scheme://[userinfo@]host[:port]/...`, or why
/// it is refused. Hosts are canonicalised by [`canonical_host`].
///
/// Where the WHATWG parser (browsers, Node's `URL`) and RFC 3986 parsers
/// (curl, Python's `urllib`, Go's `net/url`) disagree about which part is the
/// host, we refuse:
/// * any backslash (`https://evil.com\@good.com` is host `evil.com` to WHATWG,
///   which treats `\` as `/` in special schemes, and `good.com` to RFC 3986);
/// * whitespace and control characters (WHATWG silently strips tab and
///   newline: `https://ev\til.com` is `evil.com` to a browser);
/// * anything but exactly `//` after the scheme (`https:evil.com`,
///   `https:///evil.com` and `https:\\evil.com` all reach `evil.com` in WHATWG);
/// * more than one `@` (WHATWG takes the last, some parsers the first).
///
/// The userinfo is skipped (`https://good.com@evil.com/` is `evil.com`) and
/// the port ignored (but must be a number up to 65535).
pub fn url_host(url: &str) -> Result<String, String> {
    if let Some(c) = url.chars().find(|c| c.is_whitespace() || is_control(*c)) {
        return Err(format!(
            "URL holds whitespace or a control character (U+{:04X})",
            u32::from(c)
        ));
    }
    if url.contains('\\') {
        return Err("URL holds a backslash (browsers read it as '/', other parsers do not)".into());
    }
    let (_scheme, rest) = split_scheme(url).ok_or("not an absolute URL (no scheme)")?;
    let after = rest
        .strip_prefix("//")
        .ok_or("URL has no '//' authority after its scheme")?;
    if after.starts_with('/') {
        return Err("URL has more than two slashes after its scheme".into());
    }
    let (authority, _) = split_before(after, &['/', '?', '#']);
    let host_port = match authority.rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains('@') => {
            return Err("URL authority holds more than one '@'".into());
        }
        Some((_, host_port)) => host_port,
        None => authority,
    };
    let (host, port, bracketed) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (inner, after) = v6.split_once(']').ok_or("unterminated IPv6 literal")?;
            let port = match after {
                "" => "",
                a => a
                    .strip_prefix(':')
                    .ok_or("unexpected text after the IPv6 literal")?,
            };
            (inner, port, true)
        }
        None => {
            // WHATWG URL §4.4 "host state": outside brackets the first ':' ends the host.
            let (h, p) = host_port.split_once(':').unwrap_or((host_port, ""));
            (h, p, false)
        }
    };
    // WHATWG URL §4.4 "port state": digits only, at most 65535; empty is fine.
    if !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u64>().is_ok_and(|p| p > 65535) {
        return Err(format!("port {port:?} is not a number up to 65535"));
    }
    if host.is_empty() {
        return Err("URL has no host".into());
    }
    if bracketed {
        ipv6_host(host)
    } else {
        domain_or_ipv4_host(host)
    }
}

/// Canonical form of a host name or IP address as written in configuration:
/// `Example.COM.` → `example.com`, `127.1` → `127.0.0.1`, `::1` or `[0:0::1]`
/// → `[::1]`, `::ffff:127.0.0.1` → `127.0.0.1`.
pub fn canonical_host(host: &str) -> Result<String, String> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("unterminated IPv6 literal")?;
        ipv6_host(inner)
    } else if host.contains(':') {
        ipv6_host(host)
    } else if host.is_empty() {
        Err("empty host".into())
    } else {
        domain_or_ipv4_host(host)
    }
}

/// Whether `value`, taken as a URL, has one of `hosts` ([`url_host`] against
/// each [`canonical_host`]); `Err` when the URL or a configured host is refused.
pub fn host_in(value: &str, hosts: &[String]) -> Result<bool, String> {
    let host = url_host(value)?;
    for h in hosts {
        let wanted = canonical_host(h).map_err(|e| format!("configured host {h:?}: {e}"))?;
        if wanted == host {
            return Ok(true);
        }
    }
    Ok(false)
}

/// WHATWG URL §3.5 "host parsing" for special schemes, minus IDNA: percent
/// decode, refuse non-ASCII (we compare punycode `xn--` labels as written,
/// lower-cased, and do not implement UTS #46), lower-case, refuse forbidden
/// code points, then read it as IPv4 if its last label is a number.
/// One trailing dot is dropped (`evil.com.` is the same DNS name).
fn domain_or_ipv4_host(host: &str) -> Result<String, String> {
    let decoded = percent_decode(host)?;
    if !decoded.is_ascii() {
        return Err("non-ASCII host (write it as punycode, xn--…)".into());
    }
    let mut domain = String::from_utf8(decoded)
        .map_err(|_| "host is not UTF-8".to_owned())?
        .to_ascii_lowercase();
    if let Some(b) = domain.bytes().find(|b| is_forbidden_domain_byte(*b)) {
        return Err(format!(
            "host holds a forbidden character {:?}",
            char::from(b)
        ));
    }
    if domain.ends_with('.') {
        domain.pop();
    }
    if domain.is_empty() || domain.split('.').any(str::is_empty) {
        return Err("host has an empty label".into());
    }
    if ends_in_number(&domain) {
        let address = parse_ipv4(&domain)?;
        return Ok(format_ipv4(address));
    }
    Ok(domain)
}

/// WHATWG URL §3.5 "ends in a number checker" (the trailing dot is gone).
fn ends_in_number(domain: &str) -> bool {
    let last = domain.rsplit('.').next().unwrap_or(domain);
    !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit()) || parse_ipv4_number(last).is_some())
}

/// WHATWG URL §3.5 "IPv4 number parser": `0x` prefix = hex, a leading `0` =
/// octal, else decimal; `0x` alone is 0. `None` on failure.
fn parse_ipv4_number(part: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(h) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (h, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (part.get(1..).unwrap_or(""), 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        return if part.is_empty() { None } else { Some(0) };
    }
    let mut value: u64 = 0;
    for c in digits.chars() {
        let d = u64::from(c.to_digit(radix)?);
        value = value.checked_mul(u64::from(radix))?.checked_add(d)?;
    }
    Some(value)
}

/// WHATWG URL §3.5 "IPv4 parser": one to four parts, every part but the last
/// at most 255, the last filling the remaining bytes (`127.1`, `2130706433`).
fn parse_ipv4(domain: &str) -> Result<u32, String> {
    let parts: Vec<&str> = domain.split('.').collect();
    if parts.len() > 4 {
        return Err("host ends in a number but has more than four parts".into());
    }
    let mut numbers = Vec::with_capacity(parts.len());
    for part in &parts {
        numbers
            .push(parse_ipv4_number(part).ok_or_else(|| {
                format!("host ends in a number but {part:?} is not an IPv4 part")
            })?);
    }
    let (last, leading) = numbers.split_last().ok_or("empty IPv4 address")?;
    if leading.iter().any(|n| *n > 255) {
        return Err("IPv4 part over 255".into());
    }
    let room = 8 * (5 - parts.len() as u32);
    if *last >= 1u64 << room {
        return Err("IPv4 address out of range".into());
    }
    let mut address = *last;
    for (i, n) in leading.iter().enumerate() {
        address += n << (8 * (3 - i as u32));
    }
    u32::try_from(address).map_err(|_| "IPv4 address out of range".to_owned())
}

fn format_ipv4(a: u32) -> String {
    let [b0, b1, b2, b3] = a.to_be_bytes();
    format!("{b0}.{b1}.{b2}.{b3}")
}

/// Canonical text of an IPv6 literal (without brackets on input, with on
/// output), or the dotted IPv4 address for an IPv4-mapped one
/// (`::ffff:127.0.0.1` reaches 127.0.0.1 on a dual-stack socket, so a deny
/// list of IPv4 addresses must catch it; WHATWG would print `[::ffff:7f00:1]`).
fn ipv6_host(inner: &str) -> Result<String, String> {
    let pieces = parse_ipv6(inner).ok_or_else(|| format!("invalid IPv6 address [{inner}]"))?;
    if let [0, 0, 0, 0, 0, 0xffff, hi, lo] = pieces {
        return Ok(format_ipv4(u32::from(hi) << 16 | u32::from(lo)));
    }
    Ok(format!("[{}]", format_ipv6(&pieces)))
}

/// WHATWG URL §3.5 "IPv6 parser": hex pieces, one `::`, an optional dotted
/// IPv4 tail (decimal only, no leading zeros). Zone ids (`%25eth0`) fail.
fn parse_ipv6(input: &str) -> Option<[u16; 8]> {
    let c: Vec<u8> = input.bytes().collect();
    let at = |p: usize| c.get(p).copied();
    let mut address = [0u16; 8];
    let mut piece = 0usize;
    let mut compress: Option<usize> = None;
    let mut p = 0usize;
    if at(0) == Some(b':') {
        if at(1) != Some(b':') {
            return None;
        }
        p = 2;
        piece = 1;
        compress = Some(1);
    }
    while at(p).is_some() {
        if piece == 8 {
            return None;
        }
        if at(p) == Some(b':') {
            if compress.is_some() {
                return None;
            }
            p += 1;
            piece += 1;
            compress = Some(piece);
            continue;
        }
        let mut value: u16 = 0;
        let mut length = 0;
        while length < 4 {
            match at(p).and_then(hex_value) {
                Some(d) => {
                    value = value * 16 + u16::from(d);
                    p += 1;
                    length += 1;
                }
                None => break,
            }
        }
        if at(p) == Some(b'.') {
            if length == 0 || piece > 6 {
                return None;
            }
            p -= length;
            let mut numbers_seen = 0;
            while at(p).is_some() {
                if numbers_seen > 0 {
                    if at(p) == Some(b'.') && numbers_seen < 4 {
                        p += 1;
                    } else {
                        return None;
                    }
                }
                let mut ipv4_piece: Option<u16> = None;
                while let Some(d @ b'0'..=b'9') = at(p) {
                    let n = u16::from(d - b'0');
                    ipv4_piece = match ipv4_piece {
                        None => Some(n),
                        Some(0) => return None,
                        Some(v) => Some(v * 10 + n),
                    };
                    if ipv4_piece.is_some_and(|v| v > 255) {
                        return None;
                    }
                    p += 1;
                }
                let byte = ipv4_piece?;
                let slot = address.get_mut(piece)?;
                *slot = *slot * 0x100 + byte;
                numbers_seen += 1;
                if numbers_seen == 2 || numbers_seen == 4 {
                    piece += 1;
                }
            }
            if numbers_seen != 4 {
                return None;
            }
            break;
        } else if at(p) == Some(b':') {
            p += 1;
            at(p)?;
        } else if at(p).is_some() {
            return None;
        }
        *address.get_mut(piece)? = value;
        piece += 1;
    }
    match compress {
        Some(start) => {
            // Move the pieces after `::` to the end of the address.
            let tail = piece.checked_sub(start)?;
            let mut moved = [0u16; 8];
            let head = address.get(..start)?;
            moved.get_mut(..start)?.copy_from_slice(head);
            let src = address.get(start..start + tail)?;
            moved.get_mut(8 - tail..)?.copy_from_slice(src);
            Some(moved)
        }
        None if piece == 8 => Some(address),
        None => None,
    }
}

/// WHATWG URL §3.6 "IPv6 serializer" (RFC 5952): lower-case hex without
/// leading zeros, the first longest run of two or more zero pieces as `::`.
fn format_ipv6(pieces: &[u16; 8]) -> String {
    let mut best: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < 8 {
        if pieces.get(i) == Some(&0) {
            let start = i;
            while pieces.get(i) == Some(&0) {
                i += 1;
            }
            let len = i - start;
            if len >= 2 && best.is_none_or(|(_, l)| len > l) {
                best = Some((start, len));
            }
        } else {
            i += 1;
        }
    }
    let mut out = String::new();
    let mut i = 0;
    while i < 8 {
        if let Some((start, len)) = best {
            if i == start {
                out.push_str(if i == 0 { "::" } else { ":" });
                i += len;
                continue;
            }
        }
        out.push_str(&format!("{:x}", pieces.get(i).copied().unwrap_or(0)));
        if i < 7 {
            out.push(':');
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::route_path_problem;

    #[test]
    fn request_paths_servers_could_read_otherwise_than_the_route_match() {
        let cases = [
            ("plain_endpoint", "/mcp", None),
            ("nested_endpoint", "/servers/orders/mcp", None),
            ("query_is_not_read", "/mcp?x=%2F..//;", None),
            (
                "escaped_letter",
                "/%6coose/mcp",
                Some("holds a percent-escape"),
            ),
            (
                "escaped_slash",
                "/loose%2Fmcp",
                Some("holds a percent-escape"),
            ),
            ("backslash", "/loose\\mcp", Some("holds a backslash")),
            (
                "parameter",
                "/loose;x/mcp",
                Some("holds a ';' (a parameter some servers strip)"),
            ),
            (
                "double_slash",
                "//loose/mcp",
                Some("holds an empty segment (//)"),
            ),
            (
                "dot_segment",
                "/x/../loose/mcp",
                Some("holds a dot segment"),
            ),
            ("dot_at_end", "/loose/.", Some("holds a dot segment")),
            ("space", "/loose mcp", Some("holds a space")),
            (
                "non_ascii",
                "/lo\u{f6}se/mcp",
                Some("holds a byte outside printable ASCII"),
            ),
            ("asterisk_form", "*", Some("does not start with /")),
            ("fragment_is_not_read", "/mcp#/../x", None),
        ];
        for (name, path, want) in cases {
            assert_eq!(route_path_problem(path), want, "{name}");
        }
    }
}
