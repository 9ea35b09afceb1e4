//! The strict configuration reader every policy section is compiled with:
//! walk the raw JSON with a path, collecting every error instead of stopping
//! at the first, and refusing unknown fields.
//!
//! We walk `serde_json::Value` by hand rather than `#[derive(Deserialize)]`
//! because serde stops at the first error and does not report the JSON path;
//! platform teams need every mistake named at once (`$.rules[3].effect`).

use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// One configuration mistake, with the JSON path where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.msg)
    }
}

/// Accumulates errors during compilation.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<ConfigError>);

impl Errors {
    pub fn push(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            msg: msg.into(),
        });
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub fn child(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A config enum: a closed set of words. Implemented by [`keywords!`], whose
/// one table gives the enum its `as_str`, its `FromStr` and this trait, so the
/// word read and the word written cannot drift apart.
pub trait Keyword: Copy + FromStr<Err = UnknownKeyword> + 'static {
    /// Every value, in the order an error message lists them.
    const ALL: &'static [Self];
    /// The word for `self` (the enum's `as_str`).
    fn word(self) -> &'static str;
}

/// A string that is none of an enum's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownKeyword;

impl fmt::Display for UnknownKeyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a known word")
    }
}

/// `K::ALL` as the words `a, b, c`.
pub(crate) fn keyword_list<K: Keyword>() -> String {
    K::ALL
        .iter()
        .map(|k| k.word())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `s` read as one of `K`'s words, or an error at `path` listing them.
pub(crate) fn keyword_at<K: Keyword>(s: &str, path: &str, errs: &mut Errors) -> Option<K> {
    match s.parse::<K>() {
        Ok(k) => Some(k),
        Err(UnknownKeyword) => {
            errs.push(path, format!("{s:?} is not one of {}", keyword_list::<K>()));
            None
        }
    }
}

/// Gives a config enum its one table of words:
/// `keywords!(Mode { Enforce => "enforce", DryRun => "dry_run" });`
/// implements `Mode::as_str`, `FromStr for Mode` (an unknown word is an
/// [`UnknownKeyword`] error, never a fallback value) and [`Keyword`], whose
/// `ALL` lists the variants in the order given.
macro_rules! keywords {
    ($ty:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $ty {
            /// The word the policy spells this value with.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $word,)+
                }
            }
        }
        impl ::std::str::FromStr for $ty {
            type Err = $crate::config::UnknownKeyword;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($word => Ok($ty::$variant),)+
                    _ => Err($crate::config::UnknownKeyword),
                }
            }
        }
        impl $crate::config::Keyword for $ty {
            const ALL: &'static [Self] = &[$($ty::$variant),+];
            fn word(self) -> &'static str {
                self.as_str()
            }
        }
    };
}
pub(crate) use keywords;

/// Reads the fields of one JSON object; `finish` reports any field never asked for.
pub struct ObjReader<'a> {
    map: &'a Map<String, Value>,
    path: String,
    seen: Vec<&'static str>,
}

impl<'a> ObjReader<'a> {
    /// `None` (with an error recorded) when `v` is not an object.
    pub fn new(v: &'a Value, path: &str, errs: &mut Errors) -> Option<Self> {
        match v {
            Value::Object(map) => Some(ObjReader {
                map,
                path: path.to_owned(),
                seen: Vec::new(),
            }),
            other => {
                errs.push(
                    path,
                    format!("expected an object, found {}", type_name(other)),
                );
                None
            }
        }
    }

    pub fn field_path(&self, key: &str) -> String {
        child(&self.path, key)
    }

    /// The raw value of a field, marking it as known.
    pub fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.push(key);
        self.map.get(key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn required(&mut self, key: &'static str, errs: &mut Errors) -> Option<&'a Value> {
        let v = self.get(key);
        if v.is_none() {
            errs.push(self.field_path(key), "required field is missing");
        }
        v
    }

    pub fn string(&mut self, key: &'static str, errs: &mut Errors) -> Option<&'a str> {
        let p = self.field_path(key);
        match self.get(key)? {
            Value::String(s) => Some(s.as_str()),
            other => {
                errs.push(p, format!("expected a string, found {}", type_name(other)));
                None
            }
        }
    }

    pub fn boolean(&mut self, key: &'static str, errs: &mut Errors) -> Option<bool> {
        let p = self.field_path(key);
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                errs.push(
                    p,
                    format!("expected true or false, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// A non-negative integer within `[min, max]`.
    pub fn uint(
        &mut self,
        key: &'static str,
        min: u64,
        max: u64,
        errs: &mut Errors,
    ) -> Option<u64> {
        let p = self.field_path(key);
        let v = self.get(key)?;
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                errs.push(p, format!("{n} is out of range {min}..={max}"));
                None
            }
            None => {
                errs.push(
                    p,
                    format!("expected a whole number, found {}", type_name(v)),
                );
                None
            }
        }
    }

    /// An array of strings (each element checked).
    pub fn strings(&mut self, key: &'static str, errs: &mut Errors) -> Option<Vec<String>> {
        let p = self.field_path(key);
        string_list(self.get(key)?, &p, errs)
    }

    /// One of the words of a [`Keyword`] enum. Any other string is an error
    /// (`"x" is not one of a, b`), never a default.
    pub fn keyword<K: Keyword>(&mut self, key: &'static str, errs: &mut Errors) -> Option<K> {
        let p = self.field_path(key);
        let s = self.string(key, errs)?;
        keyword_at(s, &p, errs)
    }

    /// Report every field the compiler never asked for.
    pub fn finish(self, errs: &mut Errors) {
        for key in self.map.keys() {
            if !self.seen.iter().any(|s| s == key) {
                errs.push(child(&self.path, key), "unknown field");
            }
        }
    }
}

/// Cluster, path and authority end up in HTTP/2 pseudo-headers of a callout:
/// Envoy rejects (or worse, splits) values with whitespace or control characters,
/// and an empty cluster name only fails at the first callout, long after configure.
pub fn header_safe(value: &str, path: &str, errs: &mut Errors) {
    if value.is_empty() {
        errs.push(path, "must not be empty");
    } else if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        errs.push(path, "must not contain whitespace or control characters");
    }
}

/// Where an HTTP callout goes (`audit`, `approval`): the Envoy `cluster`
/// (required), the request `path` (absolute, `default_path` when absent) and
/// an optional `authority`.
pub fn callout_target(
    r: &mut ObjReader,
    default_path: &str,
    errs: &mut Errors,
) -> (Option<String>, String, Option<String>) {
    let cluster = r
        .required("cluster", errs)
        .and(r.string("cluster", errs))
        .map(str::to_owned);
    if let Some(c) = &cluster {
        header_safe(c, &r.field_path("cluster"), errs);
    }
    let path = r.string("path", errs).unwrap_or(default_path).to_owned();
    if r.has("path") {
        let p = r.field_path("path");
        if !path.starts_with('/') {
            errs.push(p.clone(), "must start with \"/\"");
        }
        header_safe(&path, &p, errs);
    }
    let authority = r.string("authority", errs).map(str::to_owned);
    if let Some(a) = &authority {
        header_safe(a, &r.field_path("authority"), errs);
    }
    (cluster, path, authority)
}

pub fn string_list(v: &Value, path: &str, errs: &mut Errors) -> Option<Vec<String>> {
    let Value::Array(items) = v else {
        errs.push(
            path,
            format!("expected an array of strings, found {}", type_name(v)),
        );
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) => out.push(s.clone()),
            other => {
                errs.push(
                    index(path, i),
                    format!("expected a string, found {}", type_name(other)),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Colour {
        Red,
        DarkBlue,
    }

    keywords!(Colour {
        Red => "red",
        DarkBlue => "dark_blue",
    });

    #[test]
    fn keyword_words_round_trip_and_nothing_else_parses() {
        for &c in Colour::ALL {
            assert_eq!(c.as_str().parse::<Colour>(), Ok(c));
            assert_eq!(c.word(), c.as_str());
        }
        for other in ["", "Red", "RED", " red", "red ", "blue", "dark-blue"] {
            assert_eq!(other.parse::<Colour>(), Err(UnknownKeyword), "{other:?}");
        }
        assert_eq!(keyword_list::<Colour>(), "red, dark_blue");
    }

    #[test]
    fn reader_reports_an_unknown_word_at_its_path_and_never_defaults() {
        let doc = json!({"a": "dark_blue", "b": "green", "c": 7});
        let mut errs = Errors::default();
        let Some(mut r) = ObjReader::new(&doc, "$.x", &mut errs) else {
            panic!("an object");
        };
        assert_eq!(r.keyword::<Colour>("a", &mut errs), Some(Colour::DarkBlue));
        assert_eq!(r.keyword::<Colour>("b", &mut errs), None);
        assert_eq!(r.keyword::<Colour>("c", &mut errs), None);
        assert_eq!(r.keyword::<Colour>("absent", &mut errs), None);
        r.finish(&mut errs);
        let got: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            vec![
                "$.x.b: \"green\" is not one of red, dark_blue",
                "$.x.c: expected a string, found a number",
            ]
        );
    }
}
