//! Glob patterns for rule targets: `*` matches any run of characters (also
//! none, also `/`), `?` exactly one character; everything else is literal and
//! case-sensitive. Matching works on the decoded string, never on raw bytes.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Vec<char>,
    source: String,
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Glob {
            pattern: pattern.chars().collect(),
            source: pattern.to_owned(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Iterative matcher with single-star backtracking: O(len(p) * len(s)) at
    /// worst, no recursion, so a hostile pattern or name cannot blow the stack.
    pub fn matches(&self, text: &str) -> bool {
        let p = &self.pattern;
        let s: Vec<char> = text.chars().collect();
        let (mut pi, mut si) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            match p.get(pi) {
                Some('*') => {
                    star = Some((pi, si));
                    pi += 1;
                }
                Some(c) if *c == '?' || Some(c) == s.get(si) => {
                    pi += 1;
                    si += 1;
                }
                _ => match star {
                    Some((sp, ss)) => {
                        pi = sp + 1;
                        si = ss + 1;
                        star = Some((sp, ss + 1));
                    }
                    None => return false,
                },
            }
        }
        while p.get(pi) == Some(&'*') {
            pi += 1;
        }
        pi == p.len()
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
}
