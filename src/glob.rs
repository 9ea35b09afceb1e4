//! Glob patterns for rule targets, matched case-sensitively against the exact
//! decoded string (never raw bytes).
//!
//! Two readings, chosen by what a rule targets:
//! * **names** (tools, prompts, methods, DLP `exempt_tools`): `*` matches any
//!   run of characters (also none), `?` exactly one character;
//! * **resource URIs**: `*` and `?` stay inside one URI segment — they never
//!   match `/`, `?` or `#` — and `**` matches any run, separators included. A
//!   `*` that crossed them let `https://*.example.com/*` match
//!   `https://169.254.169.254/?.example.com/` (issue #12).
//!
//! The text is walked once per pattern without being copied or collected (a
//! megabyte name against hundreds of patterns used to be decoded into a
//! `Vec<char>` for every one of them), and only the pattern positions still
//! alive are kept: O(len(text) * live positions), no recursion, no
//! backtracking blow-up.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobKind {
    /// Tool, prompt and method names.
    Name,
    /// Normalised resource URIs (`canon::normalize_resource_uri`).
    Uri,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`: one character (in a URI, not a separator).
    One,
    /// `*` in a URI: a run of non-separators.
    Segment,
    /// `*` in a name, `**` in a URI: any run.
    Any,
}

/// RFC 3986 §3: the characters that end a path segment, the path or the query.
fn is_uri_separator(c: char) -> bool {
    matches!(c, '/' | '?' | '#')
}

/// What a pattern's tokens amount to, worked out once: most patterns are a
/// name (`create_refund`), a family (`get_*`) or everything (`*`), and
/// matching one of those needs no walk over the text (a rule set and the
/// rate limits ask once per rule and request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Literals only: the text is the pattern.
    Exact,
    /// Literals then one `Any`: the text starts with the pattern's first
    /// `len` bytes (the literals, as written).
    Prefix(usize),
    /// Anything else: walk the text.
    Walk,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    toks: Vec<Tok>,
    kind: GlobKind,
    shape: Shape,
    source: String,
}

impl Glob {
    /// A name pattern (tools, prompts, methods).
    pub fn new(pattern: &str) -> Self {
        Self::of_kind(pattern, GlobKind::Name)
    }

    pub fn of_kind(pattern: &str, kind: GlobKind) -> Self {
        let mut toks = Vec::with_capacity(pattern.len());
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let tok = match (c, kind) {
                ('*', GlobKind::Name) => Tok::Any,
                ('*', GlobKind::Uri) if chars.peek() == Some(&'*') => {
                    chars.next();
                    Tok::Any
                }
                ('*', GlobKind::Uri) => Tok::Segment,
                ('?', _) => Tok::One,
                (c, _) => Tok::Lit(c),
            };
            // `**` in a name or `***` in a URI mean what one `Any` means.
            if !(tok == Tok::Any && toks.last() == Some(&Tok::Any)) {
                toks.push(tok);
            }
        }
        let literals = toks.iter().take_while(|t| matches!(t, Tok::Lit(_))).count();
        let shape = match toks.get(literals..) {
            Some([]) => Shape::Exact,
            // Runs of `Any` were merged above, so one `Any` last is a prefix.
            Some([Tok::Any]) => Shape::Prefix(
                pattern
                    .char_indices()
                    .nth(literals)
                    .map_or(pattern.len(), |(i, _)| i),
            ),
            _ => Shape::Walk,
        };
        Glob {
            toks,
            kind,
            shape,
            source: pattern.to_owned(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, text: &str) -> bool {
        match self.shape {
            Shape::Exact => self.source == text,
            Shape::Prefix(len) => self
                .source
                .get(..len)
                .is_some_and(|literals| text.starts_with(literals)),
            Shape::Walk => self.walks_to_the_end(text),
        }
    }

    /// The general match: the pattern's last position is alive after the text.
    fn walks_to_the_end(&self, text: &str) -> bool {
        self.live_after(text).contains(&self.toks.len())
    }

    /// Whether some text starting with `prefix` matches (a URI template's
    /// expansions all start with its text before the first `{`).
    pub fn matches_some_extension_of(&self, prefix: &str) -> bool {
        // Every live position can be completed: literals are written, `?` is
        // any non-separator, stars match nothing.
        !self.live_after(prefix).is_empty()
    }

    /// Whether every text starting with `prefix` matches: the pattern matches
    /// the prefix with only `Any` stars left over.
    pub fn matches_every_extension_of(&self, prefix: &str) -> bool {
        self.live_after(prefix).iter().any(|&p| {
            self.toks
                .get(p..)
                .is_some_and(|rest| !rest.is_empty() && rest.iter().all(|t| *t == Tok::Any))
        })
    }

    /// The pattern positions still alive after reading `text`.
    fn live_after(&self, text: &str) -> Vec<usize> {
        let toks = &self.toks;
        let n = toks.len();
        // `seen[p] == generation` marks position p as live for this step.
        let mut seen: Vec<usize> = vec![0; n + 1];
        let mut live: Vec<usize> = Vec::with_capacity(4);
        let mut next: Vec<usize> = Vec::with_capacity(4);
        let mut generation = 1usize;
        add(toks, &mut seen, generation, &mut live, 0);
        for c in text.chars() {
            generation += 1;
            next.clear();
            for &p in &live {
                match toks.get(p) {
                    Some(Tok::Lit(l)) if *l == c => {
                        add(toks, &mut seen, generation, &mut next, p + 1)
                    }
                    Some(Tok::One) if !(self.kind == GlobKind::Uri && is_uri_separator(c)) => {
                        add(toks, &mut seen, generation, &mut next, p + 1)
                    }
                    Some(Tok::Segment) if !is_uri_separator(c) => {
                        add(toks, &mut seen, generation, &mut next, p)
                    }
                    Some(Tok::Any) => add(toks, &mut seen, generation, &mut next, p),
                    _ => {}
                }
            }
            std::mem::swap(&mut live, &mut next);
            if live.is_empty() {
                break;
            }
        }
        live
    }
}

/// Marks position `p` live, and the positions after any stars from there on
/// (a star may match nothing).
fn add(toks: &[Tok], seen: &mut [usize], generation: usize, live: &mut Vec<usize>, mut p: usize) {
    loop {
        match seen.get_mut(p) {
            Some(mark) if *mark != generation => {
                *mark = generation;
                live.push(p);
            }
            _ => return,
        }
        match toks.get(p) {
            Some(Tok::Segment | Tok::Any) => p += 1,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        let cases = [
            ("exact_name_matches", "echo", "echo", true),
            ("exact_name_is_case_sensitive", "echo", "Echo", false),
            ("star_matches_suffix", "get_*", "get_issue", true),
            ("star_matches_empty", "get_*", "get_", true),
            (
                "star_does_not_match_other_prefix",
                "get_*",
                "delete_issue",
                false,
            ),
            ("question_mark_matches_one_char", "get_?", "get_a", true),
            ("question_mark_needs_a_char", "get_?", "get_", false),
            (
                "star_crosses_slashes",
                "file:///srv/docs/*",
                "file:///srv/docs/a/b.md",
                true,
            ),
            ("inner_star_backtracks", "a*b*c", "aXbYbZc", true),
            ("trailing_literal_must_match", "a*b", "aXbYc", false),
            (
                "lookalike_cyrillic_e_does_not_match",
                "echo",
                "\u{0435}cho",
                false,
            ),
            (
                "literal_glob_chars_in_name_only_match_star",
                "echo",
                "ech*",
                false,
            ),
            ("empty_pattern_matches_only_empty", "", "", true),
        ];
        for (name, pat, text, want) in cases {
            assert_eq!(Glob::new(pat).matches(text), want, "{name}");
        }
    }

    #[test]
    fn uri_glob_extension_table() {
        // (name, pattern, prefix, some extension matches, every extension matches)
        let cases = [
            (
                "template_under_allowed_star",
                "demo://resource/dynamic/text/*",
                "demo://resource/dynamic/text/",
                true,
                false,
            ),
            (
                "template_under_allowed_double_star",
                "demo://resource/**",
                "demo://resource/dynamic/text/",
                true,
                true,
            ),
            (
                "template_elsewhere",
                "demo://resource/static/*",
                "demo://resource/dynamic/text/",
                false,
                false,
            ),
            (
                "template_prefix_shorter_than_pattern",
                "demo://resource/dynamic/text/1",
                "demo://resource/",
                true,
                false,
            ),
            (
                "exact_pattern_is_not_every_extension",
                "demo://a",
                "demo://a",
                true,
                false,
            ),
        ];
        for (name, pat, prefix, some, every) in cases {
            let g = Glob::of_kind(pat, GlobKind::Uri);
            assert_eq!(g.matches_some_extension_of(prefix), some, "{name}: some");
            assert_eq!(g.matches_every_extension_of(prefix), every, "{name}: every");
        }
    }

    #[test]
    fn uri_glob_table() {
        let cases = [
            (
                "star_stays_in_one_segment",
                "file:///srv/docs/*",
                "file:///srv/docs/a.md",
                true,
            ),
            (
                "star_does_not_cross_slash",
                "file:///srv/docs/*",
                "file:///srv/docs/a/b.md",
                false,
            ),
            (
                "double_star_crosses_slashes",
                "file:///srv/docs/**",
                "file:///srv/docs/a/b.md",
                true,
            ),
            (
                "double_star_crosses_query",
                "https://internal.example.com/**",
                "https://internal.example.com/a?x=1",
                true,
            ),
            (
                "host_star_does_not_cross_into_the_path",
                "https://*.example.com/*",
                "https://169.254.169.254/?.example.com/",
                false,
            ),
            (
                "host_star_matches_a_subdomain",
                "https://*.example.com/*",
                "https://api.example.com/v1",
                true,
            ),
            (
                "star_does_not_cross_query",
                "https://api.example.com/*",
                "https://api.example.com/v1?evil",
                false,
            ),
            (
                "question_mark_is_not_a_separator",
                "file:///srv/a?b",
                "file:///srv/a/b",
                false,
            ),
            (
                "question_mark_matches_one_char",
                "file:///srv/a?b",
                "file:///srv/axb",
                true,
            ),
            (
                "segment_star_inside_path",
                "postgres://db/*/schema",
                "postgres://db/main/schema",
                true,
            ),
            (
                "segment_star_inside_path_not_two_segments",
                "postgres://db/*/schema",
                "postgres://db/a/b/schema",
                false,
            ),
            (
                "star_then_double_star",
                "https://*.example.com/**",
                "https://a.example.com/x/y?z",
                true,
            ),
            ("literal_without_wildcards", "mem:x", "mem:x", true),
        ];
        for (name, pat, text, want) in cases {
            assert_eq!(
                Glob::of_kind(pat, GlobKind::Uri).matches(text),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn the_shortcuts_match_what_walking_the_text_matches() {
        // Every pattern made of up to four pieces from these, both readings,
        // against texts that hit and miss each shortcut's edges (empty text,
        // the bare prefix, a separator after it, multi-byte characters).
        let pieces = ["a", "é", "*", "**", "?", "/", "b", "ab"];
        let texts = [
            "", "a", "é", "ab", "aé", "éa", "a/b", "a/", "/a", "abab", "aXb", "éé/ab", "a?b", "a*",
            "b", "ba", "abé", "a#b",
        ];
        let mut patterns = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = patterns
                .iter()
                .flat_map(|p| pieces.iter().map(move |x| format!("{p}{x}")))
                .collect();
            patterns.extend(longer);
        }
        patterns.sort();
        patterns.dedup();
        let mut shortcuts = 0;
        for p in &patterns {
            for kind in [GlobKind::Name, GlobKind::Uri] {
                let g = Glob::of_kind(p, kind);
                shortcuts += usize::from(g.shape != Shape::Walk);
                for t in texts {
                    assert_eq!(
                        g.matches(t),
                        g.walks_to_the_end(t),
                        "pattern {p:?} ({kind:?}) against {t:?}"
                    );
                }
            }
        }
        // The grid reaches both shortcuts, not only the walk.
        assert!(shortcuts > 1000, "{shortcuts}");
    }
}
