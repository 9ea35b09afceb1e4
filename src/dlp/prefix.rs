//! The fixed start of a pattern, checked in code before its anchored regex
//! runs: `SK[0-9a-fA-F]{32}` needs `SK` and then 32 hex digits right at the
//! trigger. A regex-lite call costs a few hundred nanoseconds however soon it
//! fails, so a run of triggers that cannot start a token (`SK-SK-…`,
//! `hvs.hvs.…`) cost one call per trigger; this check reads a few bytes.
//!
//! Only what every match must start with is taken, so the check never turns
//! away a match: literal bytes and character classes with their minimum
//! count, up to the first construct this reader does not follow (a group, an
//! alternation, an escape class, a flag). A pattern with a top-level `|` has
//! no common start and gets no check.

/// One element of a pattern's fixed start.
#[derive(Debug)]
enum Item {
    Byte(u8),
    /// `(?:ab|cd)`: one of these literals.
    Alt(Vec<Vec<u8>>),
    /// `min` bytes of the class.
    Class(Box<[bool; 256]>, usize),
}

/// The fixed start of a pattern (empty: no check).
#[derive(Debug, Default)]
pub struct Prefix(Vec<Item>);

impl Prefix {
    pub fn of(pattern: &str) -> Prefix {
        if has_top_level_alternation(pattern) {
            return Prefix::default();
        }
        let p = pattern.as_bytes();
        let mut items = Vec::new();
        let mut i = 0;
        while let Some(&c) = p.get(i) {
            // One element: a literal byte, an escaped punctuation byte or a class.
            let (item, next) = match c {
                b'(' => match alternatives(p, i) {
                    Some((alts, end)) => (Item::Alt(alts), end),
                    None => break,
                },
                b'[' => match class(p, i + 1) {
                    Some((set, end)) => (Item::Class(set, 1), end),
                    None => break,
                },
                b'\\' => match p.get(i + 1) {
                    Some(&e) if e.is_ascii_punctuation() => (Item::Byte(e), i + 2),
                    _ => break,
                },
                b')' | b'{' | b'}' | b'*' | b'+' | b'?' | b'|' | b'^' | b'$' | b'.' => break,
                c if c.is_ascii() && !c.is_ascii_control() => (Item::Byte(c), i + 1),
                _ => break,
            };
            // Its quantifier: a count keeps going, a range keeps its minimum and stops.
            match p.get(next) {
                Some(b'?') | Some(b'*') => break,
                // A quantified group: too much for this reader.
                Some(_)
                    if matches!(item, Item::Alt(_))
                        && matches!(p.get(next), Some(b'+') | Some(b'{')) =>
                {
                    break
                }
                Some(b'+') => {
                    items.push(repeat(item, 1));
                    break;
                }
                Some(b'{') => {
                    let Some((min, max, end)) = counted(p, next + 1) else {
                        break;
                    };
                    items.push(repeat(item, min));
                    if max != Some(min) {
                        break;
                    }
                    i = end;
                }
                _ => {
                    items.push(item);
                    i = next;
                }
            }
        }
        Prefix(items)
    }

    /// Whether the text at `pos` can start a match (false: it cannot).
    pub fn admits(&self, bytes: &[u8], pos: usize) -> bool {
        admits_from(&self.0, bytes, pos)
    }
}

fn admits_from(items: &[Item], bytes: &[u8], pos: usize) -> bool {
    let mut j = pos;
    for (k, item) in items.iter().enumerate() {
        match item {
            Item::Alt(alts) => {
                let rest = items.get(k + 1..).unwrap_or(&[]);
                return alts.iter().any(|a| {
                    bytes.get(j..j + a.len()) == Some(a.as_slice())
                        && admits_from(rest, bytes, j + a.len())
                });
            }
            Item::Byte(b) => {
                if bytes.get(j) != Some(b) {
                    return false;
                }
                j += 1;
            }
            Item::Class(set, min) => {
                for _ in 0..*min {
                    match bytes.get(j) {
                        Some(&b) if set[usize::from(b)] => j += 1,
                        _ => return false,
                    }
                }
            }
        }
    }
    true
}

/// `(?:lit|lit|…)` at `i` with plain literal alternatives: them and the
/// index after `)`. None for anything else (a capture group, a flag, nesting).
fn alternatives(p: &[u8], i: usize) -> Option<(Vec<Vec<u8>>, usize)> {
    if p.get(i..i + 3) != Some(b"(?:".as_slice()) {
        return None;
    }
    let close = i + p.get(i..)?.iter().position(|&b| b == b')')?;
    let body = p.get(i + 3..close)?;
    if body.is_empty()
        || !body
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'|' || *b == b'_')
    {
        return None;
    }
    let alts: Vec<Vec<u8>> = body.split(|&b| b == b'|').map(<[u8]>::to_vec).collect();
    if alts.iter().any(Vec::is_empty) {
        return None;
    }
    Some((alts, close + 1))
}

fn repeat(item: Item, n: usize) -> Item {
    match item {
        Item::Class(set, _) => Item::Class(set, n),
        // A byte repeated: only its first occurrence is kept.
        Item::Byte(b) if n >= 1 => Item::Byte(b),
        Item::Byte(_) => Item::Class(Box::new([true; 256]), 0),
        Item::Alt(_) => Item::Class(Box::new([true; 256]), 0),
    }
}

/// `[...]` from after the `[`: the set and the index after `]`. None for a
/// negated class or anything but plain bytes, ranges and escaped punctuation.
fn class(p: &[u8], mut i: usize) -> Option<(Box<[bool; 256]>, usize)> {
    let mut set = Box::new([false; 256]);
    if p.get(i) == Some(&b'^') {
        return None;
    }
    let mut first = true;
    loop {
        let c = *p.get(i)?;
        if c == b']' && !first {
            return Some((set, i + 1));
        }
        first = false;
        let (lo, next) = match c {
            b'\\' => match p.get(i + 1) {
                Some(&e) if e.is_ascii_punctuation() => (e, i + 2),
                _ => return None,
            },
            b'[' => return None,
            c if c.is_ascii() => (c, i + 1),
            _ => return None,
        };
        if p.get(next) == Some(&b'-') && p.get(next + 1).is_some_and(|&h| h != b']') {
            let hi = *p.get(next + 1)?;
            if hi == b'\\' || !hi.is_ascii() || hi < lo {
                return None;
            }
            for b in lo..=hi {
                set[usize::from(b)] = true;
            }
            i = next + 2;
        } else {
            set[usize::from(lo)] = true;
            i = next;
        }
    }
}

/// `{m}`, `{m,}` or `{m,n}` from after the `{`: (m, n, index after `}`).
fn counted(p: &[u8], i: usize) -> Option<(usize, Option<usize>, usize)> {
    let close = i + p.get(i..)?.iter().position(|&b| b == b'}')?;
    let body = std::str::from_utf8(p.get(i..close)?).ok()?;
    let (min, max) = match body.split_once(',') {
        None => {
            let m = body.parse().ok()?;
            (m, Some(m))
        }
        Some((a, "")) => (a.parse().ok()?, None),
        Some((a, b)) => (a.parse().ok()?, Some(b.parse().ok()?)),
    };
    Some((min, max, close + 1))
}

/// A `|` outside any group and class: the pattern has no common start.
fn has_top_level_alternation(pattern: &str) -> bool {
    let p = pattern.as_bytes();
    let (mut depth, mut in_class, mut i) = (0usize, false, 0);
    while let Some(&c) = p.get(i) {
        match c {
            b'\\' => i += 1,
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'(' if !in_class => depth += 1,
            b')' if !in_class => depth = depth.saturating_sub(1),
            b'|' if !in_class && depth == 0 => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_admits_only_what_can_start_a_match() {
        for (pattern, text, admitted) in [
            (
                r"SK[0-9a-fA-F]{32}",
                "SK0123456789abcdef0123456789abcdef",
                true,
            ),
            (r"SK[0-9a-fA-F]{32}", "SK-SK-SK-", false),
            (
                r"SK[0-9a-fA-F]{32}",
                "sk0123456789abcdef0123456789abcdef",
                false,
            ),
            (r"hv[sbr]\.[A-Za-z0-9_-]{90,400}", "hvs.hvs.hvs.", false),
            (r"s\.[A-Za-z0-9]{24}", "s.AbCdEfGhIjKlMnOpQrStUvWx", true),
            (r"s\.[A-Za-z0-9]{24}", "s.s.s.s.", false),
            // What the reader does not follow is not checked, never refused.
            (r"(?i)mysql[^\n]{0,120}?", "MYSQL x", true),
            (r"dp\.(?:pt|st)\.[A-Za-z0-9]{40}", "dp.xx", false),
            (r"dp\.(?:pt|st)\.[A-Za-z0-9]{40}", "dp.ct.dp.ct.", false),
            (r"dp\.(?:pt|st|scim)\.[A-Za-z0-9]{3}", "dp.scim.abc", true),
            (r"dp\.(?:pt|st|scim)\.[A-Za-z0-9]{3}", "dp.st.abc", true),
            (r"x(?:ab|cd)?y", "xy", true),
            (r"x(a|b)y", "xcy", true),
            (r"dp\.(?:pt|st)\.[A-Za-z0-9]{40}", "dq.st", false),
            (r"ab|cd", "cd", true),
            (r"a?b[xy]+c", "b", true),
            (r"x[a-c]{2,}y", "xab", true),
            (r"x[a-c]{2,}y", "xa-", false),
        ] {
            assert_eq!(
                Prefix::of(pattern).admits(text.as_bytes(), 0),
                admitted,
                "{pattern} on {text}"
            );
        }
    }
}
