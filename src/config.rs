//! The strict configuration reader every policy section is compiled with:
//! walk the raw JSON with a path, collecting every error instead of stopping
//! at the first, and refusing unknown fields.
//!
//! We walk `serde_json::Value` by hand rather than `#[derive(Deserialize)]`
//! because serde stops at the first error and does not report the JSON path;
//! platform teams need every mistake named at once (`$.rules[3].effect`).

use serde_json::{Map, Value};
use std::fmt;

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

    pub fn path(&self) -> &str {
        &self.path
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

    /// One of a fixed set of string values.
    pub fn choice(
        &mut self,
        key: &'static str,
        allowed: &[&'static str],
        errs: &mut Errors,
    ) -> Option<&'static str> {
        let p = self.field_path(key);
        let s = self.string(key, errs)?;
        match allowed.iter().find(|a| **a == s) {
            Some(a) => Some(a),
            None => {
                errs.push(p, format!("{s:?} is not one of {}", allowed.join(", ")));
                None
            }
        }
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
