//! A JSON Schema validator for the subset MCP servers declare in a tool's
//! `inputSchema` and `outputSchema` (issue #16 item 6).
//!
//! Why our own: the well-kept crates do not fit a filter that must stay
//! small. Measured with a probe export that compiles and validates a schema
//! (`cargo build --release --target wasm32-wasip1`, base 1,359,785 bytes):
//! `jsonschema` 0.33 with `default-features = false` made the module
//! 3,790,052 bytes (+2.43 MB: `regex`, `fancy-regex`, `idna`, `referencing`,
//! ...), `boon` 0.6 2,948,413 (+1.59 MB). This module reuses `regex-lite`
//! and `serde_json`, already linked.
//!
//! What it understands (JSON Schema 2020-12, with the draft-04..07
//! spellings SDKs still emit): `type` (one or several, `integer` being a
//! number with no fraction), `enum`, `const`, `minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum` (number, or draft-04's boolean),
//! `multipleOf`, `minLength`, `maxLength` (code points), `pattern`
//! (regex-lite, unanchored as the spec says), `properties`, `required`,
//! `additionalProperties`, `patternProperties`, `propertyNames`,
//! `minProperties`, `maxProperties`, `dependentRequired`,
//! `dependentSchemas`, `dependencies`, `items` (schema, or draft-07's
//! array), `prefixItems`, `additionalItems`, `contains`, `minContains`,
//! `maxContains`, `minItems`, `maxItems`, `uniqueItems`, `allOf`, `anyOf`,
//! `oneOf`, `not`, `if`/`then`/`else`, and `$ref` to a pointer inside the
//! same document (`#`, `#/$defs/..`, `#/definitions/..`, any `#/..`).
//!
//! Keywords that only annotate (`title`, `description`, `default`,
//! `examples`, `format`, `$comment`, `deprecated`, `readOnly`, `writeOnly`,
//! `content*`, `$schema`, `$anchor`, `$defs`...) assert nothing, and
//! member names no JSON Schema vocabulary defines (`x-order`, OpenAPI's
//! `nullable`) are ignored as the specification says. Keywords a
//! vocabulary *does* define as assertions but this module does not
//! implement (`unevaluatedProperties`, `unevaluatedItems`, `$dynamicRef`,
//! `$recursiveRef`, a `$ref` outside the document, a nested `$id`, a
//! `pattern` regex-lite cannot compile, a keyword whose value is malformed)
//! are listed in [`Schema::unsupported`]: the caller decides what a schema it
//! cannot fully check is worth (`schemas.rs`: refused under `enforce`).
//!
//! Bounded: a call's check stops after [`MAX_STEPS`] schema nodes (a
//! `oneOf` of `oneOf`s over a large array) or [`MAX_DEPTH`] nested
//! schemas (a `$ref` to itself), and that is a violation, never a pass.
//! Reasons never hold a value of the instance (it may be a secret): only
//! the JSON pointer to it and what the schema expected.

use regex_lite::Regex;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Steps one check may take: schema nodes visited, and the work charged
/// beside them (members, names, lengths, comparisons, uniqueness, failures,
/// each by its bytes). A million cheap steps: a ~700 KB call of 8,000 rows
/// takes ~200,000.
pub const MAX_STEPS: u32 = 1_000_000;
/// Regular-expression work the checks of one body may do, in state visits
/// ([`pattern_cost`]): the twenty-sixth review measured 2-5.7 ns per charged
/// visit under V8 on the worst patterns it found, 0.06-0.17 s at the bound.
/// 470 KB of text against a pattern of the smallest class, 29 KB against one
/// of 16 KiB (3,000 eight-byte names against `^[a-z0-9-]{1,64}$`). Earlier
/// models charged live threads only: 200,000 units of bytes x class let
/// `a{0,16}(?:b|$)` read 3.2 MB for 1.27 s (twenty-fourth review), and
/// bytes x threads let `(?:a?){3500}b`, whose start state is re-entered at
/// every byte, hold a call 35 s and a result 67 s (twenty-fifth review).
const MAX_REGEX_WORK: u64 = 30_000_000;
/// Nested schemas one check may enter.
pub const MAX_DEPTH: u32 = 128;
/// Compiled size of a `pattern` (regex-lite's limit): a schema's regex
/// cannot take the VM's memory.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// The size classes a pattern is compiled in, smallest first, as regex-lite
/// counts a program (`^[a-z0-9-]{1,64}$` is ~16 KiB, `a{0,9000}b` ~650 KiB):
/// its weight is its class in KiB (a match costs about the text's length
/// times the program's states, so a check is charged that product).
const REGEX_CLASSES: [usize; 5] = [1024, 4096, 16 * 1024, 64 * 1024, REGEX_SIZE_LIMIT];
/// The weight of every pattern of one schema together: past it the schema
/// cannot be checked, and no further pattern of it is compiled (1,650
/// patterns of ~650 KiB each took a VM's memory: the fifteenth review;
/// compiling 1,700 of ~200 KiB took 0.75 s per list and per call: the
/// nineteenth). 1 MiB of programs at most.
const MAX_REGEX_WEIGHT: u32 = 1024;
/// Groups a pattern may have, the whole match counted (see `Compiler::regex`).
const MAX_GROUPS: usize = 8;
/// Nodes one schema may compile to: past it the schema cannot be checked.
/// Each document location is compiled once (a `$ref` to it, or into it,
/// reuses the node), so a 64 KiB stored form, which holds at most ~22,000
/// schemas, stays below it; the bound holds whatever else goes wrong
/// (twentieth review H2: before locations were remembered, references into
/// one nested subtree compiled it 100 times, 1.57 million nodes, ~745 MiB
/// and ~1 s per list; two such tools took the VM).
pub const MAX_NODES: usize = 32 * 1024;
/// Bytes one schema's compiled form may hold (estimated: its nodes and the
/// values and names copied into them). Each location is compiled once, but
/// a `$ref` into an `enum` or `const` copies the part of it it points at, so
/// copies of nested values add up with depth: past this bound the schema
/// cannot be checked (the twenty-first review copied one 15,000-item `enum`
/// 850 times, +294 MB per tool).
const MAX_COMPILED_BYTES: usize = 8 << 20;
/// Entries of [`Schema::unsupported`] kept: one is enough to make a schema
/// unverifiable, and the list is read for each entry `ignore_keywords`
/// names; past it one more entry says the rest were dropped (a keyword no
/// policy can ignore).
const MAX_UNSUPPORTED: usize = 64;

/// Why a schema past [`MAX_NODES`] or [`MAX_COMPILED_BYTES`] cannot be checked.
const TOO_MANY_NODES: &str =
    "the schema compiles to more than 32,768 nodes or 8 MiB (it is not checked further)";
/// The entry that stands for those past [`MAX_UNSUPPORTED`].
const TOO_MANY_UNSUPPORTED: &str = "more than 64 places of the schema cannot be checked";

/// A keyword this module cannot check, where it is in the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// JSON pointer into the schema (`/properties/q/unevaluatedProperties`).
    pub pointer: String,
    pub keyword: String,
    /// Why, when it is not simply unimplemented (a regex that does not compile).
    pub why: &'static str,
}

/// Why an instance does not validate: the first violation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the instance (`/items/2/name`, `""` for the whole).
    pub pointer: String,
    /// The keyword that failed (`required`, `type`, `additionalProperties`…).
    pub keyword: &'static str,
    /// What the schema expected, never the value found.
    pub message: String,
}

const T_NULL: u8 = 1;
const T_BOOL: u8 = 2;
const T_OBJECT: u8 = 4;
const T_ARRAY: u8 = 8;
const T_NUMBER: u8 = 16;
const T_STRING: u8 = 32;
const T_INTEGER: u8 = 64;

const TYPE_NAMES: [(&str, u8); 7] = [
    ("null", T_NULL),
    ("boolean", T_BOOL),
    ("object", T_OBJECT),
    ("array", T_ARRAY),
    ("number", T_NUMBER),
    ("string", T_STRING),
    ("integer", T_INTEGER),
];

/// Keywords that assert nothing: skipped without a word.
#[cfg(test)]
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$comment",
    "$anchor",
    "$dynamicAnchor",
    "$recursiveAnchor",
    "$vocabulary",
    "$defs",
    "definitions",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "format",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
];

/// Keywords a JSON Schema vocabulary defines as assertions or applicators
/// that this module does not implement.
const UNIMPLEMENTED: &[&str] = &[
    "unevaluatedProperties",
    "unevaluatedItems",
    "$dynamicRef",
    "$recursiveRef",
];

type NodeId = usize;

#[derive(Debug)]
enum Node {
    Bool(bool),
    Obj(Box<Obj>),
    /// A `$ref` target being compiled (a cycle closes on it); never left
    /// in a finished schema.
    Pending,
}

#[derive(Debug, Default)]
struct Obj {
    types: Option<u8>,
    enum_: Option<Vec<Value>>,
    /// Steps an `enum` test costs: its entries' canonical bytes / 64 (a
    /// comparison reads the whole value: the fifteenth review compared a
    /// 28,000-element `const` 40,000 times for one step each).
    enum_cost: usize,
    const_: Option<Value>,
    const_cost: usize,
    /// Bounds as written: an integer bound past 2^53 is not rounded to a
    /// double (`maximum: 9007199254740995` read as ...996 let ...996 pass:
    /// twenty-eighth review).
    minimum: Option<serde_json::Number>,
    maximum: Option<serde_json::Number>,
    exclusive_minimum: Option<serde_json::Number>,
    exclusive_maximum: Option<serde_json::Number>,
    multiple_of: Option<f64>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    /// The pattern and its weight ([`regex_weight`]).
    pattern: Option<(Regex, u32)>,
    properties: Vec<(String, NodeId)>,
    required: Vec<String>,
    additional_properties: Option<NodeId>,
    pattern_properties: Vec<(Regex, u32, NodeId)>,
    property_names: Option<NodeId>,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    dependent_required: Vec<(String, Vec<String>)>,
    dependent_schemas: Vec<(String, NodeId)>,
    prefix_items: Vec<NodeId>,
    items: Option<NodeId>,
    contains: Option<NodeId>,
    min_contains: Option<u64>,
    max_contains: Option<u64>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    unique_items: bool,
    all_of: Vec<NodeId>,
    any_of: Vec<NodeId>,
    one_of: Vec<NodeId>,
    not: Option<NodeId>,
    if_: Option<NodeId>,
    then_: Option<NodeId>,
    else_: Option<NodeId>,
    ref_: Option<NodeId>,
    /// Steps every visit of this node costs beside the node itself: the
    /// lists it walks on each visit (names, properties, dependents,
    /// patterns, branches), one per 16 entries ([`Obj::list_cost`]).
    visit_cost: usize,
    /// The bytes of the names a visit of an object looks up among its
    /// members (`required`, `dependentRequired`, `dependentSchemas`), each
    /// plus 16: a lookup compares the name with several members, each
    /// comparison reading up to the name's length ([`lookup_steps`]).
    lookup_bytes: usize,
}

impl Obj {
    /// One step per 16 entries of every list a visit may walk: work that
    /// grows with the schema, not with the value (eighteenth review H1: 4,500
    /// `dependentSchemas` names looked up on each of 100,000 visits).
    fn list_cost(&self) -> usize {
        let dependents: usize = self
            .dependent_required
            .iter()
            .map(|(_, needed)| needed.len() + 1)
            .sum();
        let entries = self.required.len()
            + self.properties.len()
            + self.pattern_properties.len()
            + self.dependent_schemas.len()
            + dependents
            + self.prefix_items.len()
            + self.all_of.len()
            + self.any_of.len()
            + self.one_of.len()
            + self.enum_.as_ref().map_or(0, Vec::len);
        entries / 16
    }

    /// See [`Obj::lookup_bytes`].
    fn lookup_bytes(&self) -> usize {
        let name = |n: &String| n.len() + 16;
        let required: usize = self.required.iter().map(name).sum();
        let dependents: usize = self
            .dependent_required
            .iter()
            .map(|(n, needed)| name(n) + needed.iter().map(name).sum::<usize>())
            .sum();
        let schemas: usize = self.dependent_schemas.iter().map(|(n, _)| name(n)).sum();
        required + dependents + schemas
    }
}

/// Steps for looking up names of `bytes` (each plus 16) among `members`
/// members: a `serde_json` map is a B-tree, whose search compares a name
/// with up to 11 keys per level, about log2(members) / 2.6 levels; each
/// comparison reads up to the name's length. Charged at 256 bytes read per
/// step (twentieth review H1: 1,500 absent 32-byte names sharing 28 bytes
/// with every member, looked up on 8,500 visits for one step per 16 names,
/// held a worker 2.8 s and passed).
fn lookup_steps(bytes: usize, members: usize) -> usize {
    let comparisons = 12 + 2 * (members + 1).ilog2() as usize;
    bytes.saturating_mul(comparisons) / 256
}

/// A compiled schema: compile once (per list), validate per call.
#[derive(Debug)]
pub struct Schema {
    nodes: Vec<Node>,
    root: NodeId,
    /// What could not be checked, in schema order.
    pub unsupported: Vec<Unsupported>,
    /// Every member name the schema mentions anywhere (`properties`,
    /// `required`, `dependent*`), by its case-folded form: a member of the
    /// instance that folds to one of them without being it is refused.
    names: HashMap<String, Vec<String>>,
    /// The weight of its patterns ([`MAX_REGEX_WEIGHT`]).
    regex_weight: u32,
    /// Bytes its nodes hold, estimated (what a VM's cache is bounded by).
    heap_bytes: usize,
}

struct Compiler<'a> {
    doc: &'a Value,
    nodes: Vec<Node>,
    /// Every schema object compiled so far, by its location: the address of
    /// its value in `doc`, the same however a `$ref` spells its pointer
    /// (`a~b` and `a~0b` name one key; keyed by the spelling, each of 850
    /// spellings compiled the target again: twenty-first review). Inline or
    /// as a `$ref` target, a location is compiled once.
    locations: HashMap<usize, NodeId>,
    /// Bytes compiled so far, estimated ([`MAX_COMPILED_BYTES`]).
    heap: usize,
    /// Past [`MAX_NODES`] or [`MAX_COMPILED_BYTES`]: nothing more is compiled.
    full: bool,
    unsupported: Vec<Unsupported>,
    names: HashMap<String, Vec<String>>,
    /// Every name in `names`, as spelt: a name is added once (2,400 case
    /// variants of one name, each compared with the others, were
    /// quadratic: twenty-first review F1).
    spelt: std::collections::HashSet<String>,
    regex_weight: u32,
    /// Draft-04..07: a `$ref` replaces its siblings.
    ref_overrides: bool,
}

impl Schema {
    /// Compile `doc` (a schema object or boolean). Never fails: what cannot
    /// be checked is listed in `unsupported` (a schema that is not an object
    /// or a boolean is one such entry).
    pub fn compile(doc: &Value) -> Schema {
        let legacy = doc.get("$schema").and_then(Value::as_str).is_some_and(|s| {
            ["draft-04", "draft-06", "draft-07"]
                .iter()
                .any(|d| s.contains(d))
        });
        let mut c = Compiler {
            doc,
            nodes: Vec::new(),
            locations: HashMap::new(),
            heap: 0,
            full: false,
            unsupported: Vec::new(),
            names: HashMap::new(),
            spelt: std::collections::HashSet::new(),
            regex_weight: 0,
            ref_overrides: legacy,
        };
        let root = c.node(doc, String::new(), true);
        let heap_bytes = c.nodes.len() * std::mem::size_of::<Node>() + c.heap;
        Schema {
            nodes: c.nodes,
            root,
            unsupported: c.unsupported,
            names: c.names,
            regex_weight: c.regex_weight,
            heap_bytes,
        }
    }

    /// Bytes its compiled nodes hold, estimated: each node, each schema
    /// object, the values and names copied into them.
    pub fn heap_bytes(&self) -> usize {
        self.heap_bytes
    }

    /// Nodes it compiled to ([`MAX_NODES`]).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The weight of its compiled patterns, in KiB of program
    /// (what a VM's cache of compiled schemas is bounded by).
    pub fn regex_weight(&self) -> u32 {
        self.regex_weight
    }

    /// Check `instance`; the first violation found.
    pub fn validate(&self, instance: &Value) -> Result<(), Violation> {
        self.validate_within(instance, &mut CheckBudget::default())
    }

    /// Check `instance` within what is left of `budget`, and spend it.
    pub fn validate_within(
        &self,
        instance: &Value,
        budget: &mut CheckBudget,
    ) -> Result<(), Violation> {
        let mut ctx = Ctx {
            schema: self,
            steps: budget.steps,
            regex_work: budget.regex_work,
            touched: budget.touched,
            sizes: HashMap::new(),
        };
        let result = ctx.run(instance);
        *budget = CheckBudget {
            steps: ctx.steps,
            regex_work: ctx.regex_work,
            touched: ctx.touched,
        };
        result
    }
}

/// What checks that share one budget have spent (the calls of one request
/// body, the results of one response): the bounds of one check hold for
/// all of them together. Each check had its own, and a batch of 500 calls,
/// or one stream of 1,000 copies of a result, each just within it, held a
/// worker 45 s and was forwarded (twenty-sixth review).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckBudget {
    steps: u32,
    regex_work: u64,
    touched: u64,
}

impl Ctx<'_> {
    fn run(&mut self, instance: &Value) -> Result<(), Violation> {
        let mut path = Vec::new();
        self.case_variants(instance, &mut path)?;
        self.check(self.schema.root, instance, &mut path, 0)?;
        // Work charged after the last node was entered (a long enum, a
        // uniqueness test) counts too: over the budget is never a pass.
        if self.steps > MAX_STEPS {
            return self.too_costly(&[]);
        }
        Ok(())
    }
}

impl<'a> Compiler<'a> {
    fn push(&mut self, n: Node) -> NodeId {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    /// Remember a member name the schema mentions.
    fn name(&mut self, name: &str) {
        if self.spelt.contains(name) {
            return;
        }
        self.spelt.insert(name.to_owned());
        let key = crate::json::fold_key(name);
        self.heap += 2 * name.len() + key.len() + 3 * 24;
        self.names.entry(key).or_default().push(name.to_owned());
    }

    fn unsupported(&mut self, at: &str, keyword: &str, why: &'static str) {
        self.unverifiable(Unsupported {
            pointer: location(at, &[keyword]),
            keyword: keyword.to_owned(),
            why,
        });
    }

    /// Record what cannot be checked, up to [`MAX_UNSUPPORTED`] entries.
    fn unverifiable(&mut self, u: Unsupported) {
        self.heap += u.pointer.len() + u.keyword.len() + 64;
        match self.unsupported.len() {
            n if n < MAX_UNSUPPORTED => self.unsupported.push(u),
            n if n == MAX_UNSUPPORTED => self.unsupported.push(Unsupported {
                pointer: u.pointer,
                keyword: String::new(),
                why: TOO_MANY_UNSUPPORTED,
            }),
            _ => {}
        }
    }

    fn node(&mut self, v: &'a Value, at: String, root: bool) -> NodeId {
        if !self.full && (self.nodes.len() >= MAX_NODES || self.heap > MAX_COMPILED_BYTES) {
            self.full = true;
            self.unverifiable(Unsupported {
                pointer: at.clone(),
                keyword: String::new(),
                why: TOO_MANY_NODES,
            });
        }
        if self.full {
            // Never what decides: the entry above makes the schema
            // unverifiable. One node per value met past the bound, no deeper.
            return self.push(Node::Bool(true));
        }
        match v {
            Value::Bool(b) => self.push(Node::Bool(*b)),
            // `{}` asserts nothing: `true`, without a boxed node.
            Value::Object(o) if o.is_empty() => self.push(Node::Bool(true)),
            Value::Object(o) => {
                let location = v as *const Value as usize;
                if let Some(id) = self.locations.get(&location) {
                    return *id;
                }
                // Entered before it is compiled: a `$ref` inside it to
                // itself (a cycle) closes on this id.
                let id = self.push(Node::Pending);
                self.locations.insert(location, id);
                self.heap += std::mem::size_of::<Obj>() + 48;
                let obj = self.obj(o, &at, root);
                if let Some(slot) = self.nodes.get_mut(id) {
                    *slot = Node::Obj(Box::new(obj));
                }
                id
            }
            _ => {
                self.unverifiable(Unsupported {
                    pointer: at,
                    keyword: String::new(),
                    why: "a schema must be an object or a boolean",
                });
                self.push(Node::Bool(true))
            }
        }
    }

    /// The target of a local `$ref`, compiled once however many refer to it.
    fn reference(&mut self, r: &str, at: &str) -> Option<NodeId> {
        let fragment = r.strip_prefix('#')?;
        if !fragment.is_empty() && !fragment.starts_with('/') {
            return None;
        }
        let pointer = percent_decode(fragment)?;
        let doc = self.doc;
        let target = doc.pointer(&pointer)?;
        if points_into_data(doc, &pointer) {
            self.unsupported(
                at,
                "$ref",
                "it points into an enum or const value, not a schema",
            );
            return Some(self.push(Node::Bool(true)));
        }
        match target {
            Value::Bool(_) | Value::Object(_) => {
                let root = pointer.is_empty();
                Some(self.node(target, location(&pointer, &[]), root))
            }
            _ => {
                self.unsupported(at, "$ref", "it points at something that is not a schema");
                Some(self.push(Node::Bool(true)))
            }
        }
    }

    fn sub(&mut self, o: &'a Map<String, Value>, key: &str, at: &str) -> Option<NodeId> {
        let v = o.get(key)?;
        Some(self.node(v, location(at, &[key]), false))
    }

    fn subs(&mut self, o: &'a Map<String, Value>, key: &str, at: &str) -> Vec<NodeId> {
        match o.get(key) {
            None => Vec::new(),
            Some(Value::Array(list)) if !list.is_empty() => list
                .iter()
                .enumerate()
                .map(|(i, v)| self.node(v, location(at, &[key, &i.to_string()]), false))
                .collect(),
            Some(_) => {
                self.unsupported(at, key, "expected a non-empty array of schemas");
                Vec::new()
            }
        }
    }

    fn bound(&mut self, o: &Map<String, Value>, key: &str, at: &str) -> Option<serde_json::Number> {
        match o.get(key)? {
            Value::Number(n) => Some(n.clone()),
            _ => {
                self.unsupported(at, key, "expected a number");
                None
            }
        }
    }

    fn number(&mut self, o: &Map<String, Value>, key: &str, at: &str) -> Option<f64> {
        match o.get(key)? {
            Value::Number(n) => n.as_f64(),
            _ => {
                self.unsupported(at, key, "expected a number");
                None
            }
        }
    }

    fn count(&mut self, o: &Map<String, Value>, key: &str, at: &str) -> Option<u64> {
        let v = o.get(key)?;
        match v.as_u64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1e18)
                .map(|f| f as u64)
        }) {
            Some(n) => Some(n),
            None => {
                self.unsupported(at, key, "expected a non-negative integer");
                None
            }
        }
    }

    fn regex(&mut self, pattern: &str, at: &str, key: &str) -> Option<(Regex, u32)> {
        let build = |limit: usize| {
            regex_lite::RegexBuilder::new(pattern)
                .size_limit(limit)
                .nest_limit(64)
                .build()
        };
        if self.regex_weight >= MAX_REGEX_WEIGHT {
            self.unsupported(
                at,
                key,
                "the schema's patterns together are too large to check (over 1 MiB of program)",
            );
            return None;
        }
        // Smallest class first: a compile past its limit stops there, so
        // finding the class costs about twice the program's own size, and
        // no class larger than what is left of the schema's weight is tried.
        let left = (MAX_REGEX_WEIGHT - self.regex_weight) as usize * REGEX_CLASSES[0];
        let classes = || {
            REGEX_CLASSES
                .iter()
                .filter(move |&&limit| limit <= left.max(REGEX_CLASSES[0]))
        };
        let Some((re, limit)) =
            classes().find_map(|&limit| build(limit).ok().map(|re| (re, limit)))
        else {
            // Every class tried cost up to its size before it failed: the
            // failures count against the schema's weight too (3,000
            // `a{0,9000}b` patterns, each failing at every class, took 0.84 s
            // to compile natively and added nothing: twenty-second review,
            // found after it).
            let tried: usize = classes().map(|&limit| limit / REGEX_CLASSES[0]).sum();
            self.regex_weight = self
                .regex_weight
                .saturating_add(u32::try_from(tried).unwrap_or(u32::MAX));
            self.unsupported(
                at,
                key,
                "the pattern is not one regex-lite compiles within 256 KiB of program (or within what is left of the schema's 1 MiB)",
            );
            return None;
        };
        let class = u32::try_from(limit / REGEX_CLASSES[0]).unwrap_or(u32::MAX);
        // regex-lite's matcher sets aside two slots per state and group on a
        // pattern's first match, whatever is asked of it: 3,000 empty groups
        // in one 256 KiB pattern took ~450 MB there, and two such patterns a
        // VM (twenty-fifth review M1). A few groups are ordinary; their slots
        // count in the pattern's weight (what a VM's cache holds).
        let groups = re.captures_len();
        if groups > MAX_GROUPS {
            self.regex_weight = self.regex_weight.saturating_add(class);
            self.unsupported(
                at,
                key,
                "the pattern has more than 7 capture groups (write (?:...) for a group that captures nothing)",
            );
            return None;
        }
        let weight = class.saturating_mul(u32::try_from(groups.max(2) / 2).unwrap_or(u32::MAX));
        self.regex_weight = self.regex_weight.saturating_add(weight);
        Some((re, class))
    }

    fn strings(&mut self, v: &Value, at: &str, key: &str) -> Vec<String> {
        match v {
            Value::Array(list) if list.iter().all(Value::is_string) => list
                .iter()
                .filter_map(Value::as_str)
                .map(|t| {
                    self.heap += t.len() + 24;
                    t.to_owned()
                })
                .collect(),
            _ => {
                self.unsupported(at, key, "expected an array of strings");
                Vec::new()
            }
        }
    }

    fn obj(&mut self, o: &'a Map<String, Value>, at: &str, root: bool) -> Obj {
        let mut s = Obj::default();
        if let Some(r) = o.get("$ref") {
            match r.as_str().and_then(|r| self.reference(r, at)) {
                Some(id) => s.ref_ = Some(id),
                None => self.unsupported(
                    at,
                    "$ref",
                    "only a pointer inside the same schema (#/...) is followed",
                ),
            }
            if self.ref_overrides {
                return s;
            }
        }
        for key in o.keys() {
            let k = key.as_str();
            if UNIMPLEMENTED.contains(&k) {
                self.unsupported(at, k, "");
            } else if k == "$id" && !root {
                self.unsupported(at, k, "a nested $id changes what references mean");
            }
        }
        if let Some(t) = o.get("type") {
            let names: Vec<&Value> = match t {
                Value::Array(list) => list.iter().collect(),
                one => vec![one],
            };
            let mut mask = 0u8;
            for n in names {
                match TYPE_NAMES
                    .iter()
                    .find(|(name, _)| Some(*name) == n.as_str())
                {
                    Some((_, bit)) => mask |= bit,
                    None => {
                        self.unsupported(at, "type", "not a JSON Schema type name");
                        mask = 0xff;
                        break;
                    }
                }
            }
            s.types = Some(mask);
        }
        match o.get("enum") {
            Some(Value::Array(list)) => {
                s.enum_cost = list.iter().map(canonical_cost).sum();
                self.heap += list.iter().map(value_heap).sum::<usize>();
                s.enum_ = Some(list.clone());
            }
            Some(_) => self.unsupported(at, "enum", "expected an array"),
            None => {}
        }
        s.const_ = o.get("const").cloned();
        self.heap += s.const_.as_ref().map_or(0, value_heap);
        s.const_cost = s.const_.as_ref().map_or(0, canonical_cost);
        s.minimum = self.bound(o, "minimum", at);
        s.maximum = self.bound(o, "maximum", at);
        // Draft-04: a boolean that makes minimum/maximum exclusive.
        match o.get("exclusiveMinimum") {
            Some(Value::Bool(true)) => s.exclusive_minimum = s.minimum.take(),
            Some(Value::Bool(false)) => {}
            _ => s.exclusive_minimum = self.bound(o, "exclusiveMinimum", at),
        }
        match o.get("exclusiveMaximum") {
            Some(Value::Bool(true)) => s.exclusive_maximum = s.maximum.take(),
            Some(Value::Bool(false)) => {}
            _ => s.exclusive_maximum = self.bound(o, "exclusiveMaximum", at),
        }
        s.multiple_of = self.number(o, "multipleOf", at);
        if s.multiple_of.is_some_and(|m| m <= 0.0 || !m.is_finite()) {
            self.unsupported(at, "multipleOf", "expected a number above 0");
            s.multiple_of = None;
        }
        s.min_length = self.count(o, "minLength", at);
        s.max_length = self.count(o, "maxLength", at);
        match o.get("pattern") {
            Some(Value::String(p)) => s.pattern = self.regex(p, at, "pattern"),
            Some(_) => self.unsupported(at, "pattern", "expected a string"),
            None => {}
        }
        match o.get("properties") {
            Some(Value::Object(props)) => {
                for (name, sub) in props {
                    let p = location(at, &["properties", name]);
                    let id = self.node(sub, p, false);
                    self.name(name);
                    self.heap += name.len() + 32;
                    s.properties.push((name.clone(), id));
                }
                // Looked up by binary search on every member of every visit.
                crate::sort::sort_by(&mut s.properties, |a, b| a.0 < b.0);
            }
            Some(_) => self.unsupported(at, "properties", "expected an object"),
            None => {}
        }
        if let Some(r) = o.get("required") {
            s.required = self.strings(r, at, "required");
            for name in s.required.clone() {
                self.name(&name);
            }
        }
        s.additional_properties = self.sub(o, "additionalProperties", at);
        match o.get("patternProperties") {
            Some(Value::Object(props)) => {
                for (pattern, sub) in props {
                    let p = location(at, &["patternProperties", pattern]);
                    if let Some((re, weight)) = self.regex(pattern, at, "patternProperties") {
                        let id = self.node(sub, p, false);
                        s.pattern_properties.push((re, weight, id));
                    }
                }
            }
            Some(_) => self.unsupported(at, "patternProperties", "expected an object"),
            None => {}
        }
        s.property_names = self.sub(o, "propertyNames", at);
        s.min_properties = self.count(o, "minProperties", at);
        s.max_properties = self.count(o, "maxProperties", at);
        for key in ["dependentRequired", "dependentSchemas", "dependencies"] {
            match o.get(key) {
                Some(Value::Object(deps)) => {
                    for (name, dep) in deps {
                        match dep {
                            Value::Array(_) if key != "dependentSchemas" => {
                                let names = self.strings(dep, at, key);
                                self.name(name);
                                for n in &names {
                                    self.name(n);
                                }
                                self.heap += name.len() + 48;
                                s.dependent_required.push((name.clone(), names));
                            }
                            Value::Object(_) | Value::Bool(_) if key != "dependentRequired" => {
                                let p = location(at, &[key, name]);
                                let id = self.node(dep, p, false);
                                self.name(name);
                                self.heap += name.len() + 32;
                                s.dependent_schemas.push((name.clone(), id));
                            }
                            _ => self.unsupported(at, key, "malformed"),
                        }
                    }
                }
                Some(_) => self.unsupported(at, key, "expected an object"),
                None => {}
            }
        }
        match o.get("items") {
            // Draft-07's tuple form: `items` is `prefixItems`, and
            // `additionalItems` what `items` is now.
            Some(Value::Array(_)) => {
                s.prefix_items = self.subs(o, "items", at);
                s.items = self.sub(o, "additionalItems", at);
            }
            Some(_) => {
                s.prefix_items = self.subs(o, "prefixItems", at);
                s.items = self.sub(o, "items", at);
            }
            None => s.prefix_items = self.subs(o, "prefixItems", at),
        }
        s.contains = self.sub(o, "contains", at);
        s.min_contains = self.count(o, "minContains", at);
        s.max_contains = self.count(o, "maxContains", at);
        s.min_items = self.count(o, "minItems", at);
        s.max_items = self.count(o, "maxItems", at);
        match o.get("uniqueItems") {
            Some(Value::Bool(b)) => s.unique_items = *b,
            Some(_) => self.unsupported(at, "uniqueItems", "expected a boolean"),
            None => {}
        }
        s.all_of = self.subs(o, "allOf", at);
        s.any_of = self.subs(o, "anyOf", at);
        s.one_of = self.subs(o, "oneOf", at);
        s.not = self.sub(o, "not", at);
        s.if_ = self.sub(o, "if", at);
        s.then_ = self.sub(o, "then", at);
        s.else_ = self.sub(o, "else", at);
        s.visit_cost = s.list_cost();
        s.lookup_bytes = s.lookup_bytes();
        s
    }
}

/// One segment of the instance path, kept until a violation names it.
enum Seg<'v> {
    Key(&'v str),
    Index(usize),
}

/// The instance pointer of `path`, cut as [`location`] cuts: a refusal
/// shows at most 256 bytes of it, and writing it whole copied every key on
/// the path (a 4 MB member name, its pointer written on each of 8,000
/// failures under `not`, held a call 12.6 s: twenty-third review).
fn pointer(path: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        if out.len() > MAX_LOCATION {
            break;
        }
        let index;
        let segment = match seg {
            Seg::Key(k) => *k,
            Seg::Index(i) => {
                index = i.to_string();
                index.as_str()
            }
        };
        out = location(&out, &[segment]);
    }
    out
}

/// Whether `pointer` leads through the `enum` or `const` value of a schema
/// object: data, not a schema. Each such value is copied once, into the
/// schema it belongs to; compiled as a schema too, every value nested in it
/// was copied again per level (a 28-deep nest of 9,600-item enums, one
/// `$ref` per level: ~4 MB per schema, and a list of 125 such tools took a
/// VM: twenty-third review). Tokens are read as `serde_json` reads them.
fn points_into_data(doc: &Value, pointer: &str) -> bool {
    /// What the next token names.
    enum Next {
        /// A keyword of a schema object.
        Keyword,
        /// A member name or an index: the value is a schema.
        Member,
    }
    let mut next = Next::Keyword;
    let mut at = Some(doc);
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let value = at.and_then(|v| match v {
            Value::Object(o) => o.get(&token),
            Value::Array(a) => token.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        });
        next = match next {
            Next::Member => Next::Keyword,
            Next::Keyword => match token.as_str() {
                "enum" | "const" => return true,
                "properties" | "patternProperties" | "$defs" | "definitions"
                | "dependentSchemas" | "dependencies" => Next::Member,
                _ if value.is_some_and(Value::is_array) => Next::Member,
                _ => Next::Keyword,
            },
        };
        at = value;
    }
    false
}

/// Bytes of a location kept while compiling ([`location`]).
const MAX_LOCATION: usize = 256;

/// Where a part of the schema is, for what cannot be checked: `at` and the
/// escaped `segments` as a JSON pointer, cut at [`MAX_LOCATION`] bytes and
/// then ending in `…`. Every child's location is built from its parent's,
/// so uncut they cost the schema's size squared: one 32,000-byte name held
/// a list's compile 2.5 s, and 65 such locations kept per schema filled a
/// VM (twenty-second review).
fn location(at: &str, segments: &[&str]) -> String {
    let mut out = String::with_capacity(MAX_LOCATION + 8);
    out.push_str(prefix(at, MAX_LOCATION + 1));
    for seg in segments {
        if out.len() > MAX_LOCATION {
            break;
        }
        out.push('/');
        // A segment is escaped only as far as it can be kept.
        let room = (MAX_LOCATION + 1).saturating_sub(out.len());
        out.push_str(&escape(prefix(seg, room)));
    }
    if out.len() > MAX_LOCATION {
        let kept = prefix(&out, MAX_LOCATION).len();
        out.truncate(kept);
        out.push('…');
    }
    out
}

/// The longest prefix of `s` of at most `n` bytes that ends on a character.
fn prefix(s: &str, n: usize) -> &str {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// RFC 6901: `~` is `~0`, `/` is `~1`.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A `$ref` fragment is a URI fragment: `%25` is `%`, and so on.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn type_of(v: &Value) -> u8 {
    match v {
        Value::Null => T_NULL,
        Value::Bool(_) => T_BOOL,
        Value::Object(_) => T_OBJECT,
        Value::Array(_) => T_ARRAY,
        Value::Number(n) if is_integer(n) => T_NUMBER | T_INTEGER,
        Value::Number(_) => T_NUMBER,
        Value::String(_) => T_STRING,
    }
}

fn is_integer(n: &serde_json::Number) -> bool {
    n.is_i64()
        || n.is_u64()
        || n.as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}

fn type_words(mask: u8) -> String {
    let words: Vec<&str> = TYPE_NAMES
        .iter()
        .filter(|(_, bit)| mask & bit != 0)
        // `integer` is inside `number`: say `number` only.
        .filter(|(name, _)| !(*name == "integer" && mask & T_NUMBER != 0))
        .map(|(name, _)| *name)
        .collect();
    words.join(" or ")
}

fn found(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Object(_) => "an object",
        Value::Array(_) => "an array",
        Value::Number(n) if is_integer(n) => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
    }
}

/// JSON equality: numbers by value (`1` is `1.0`), objects whatever the order.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(i), Some(j), _, _) => i == j,
                (_, _, Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

struct Ctx<'s> {
    schema: &'s Schema,
    steps: u32,
    /// Regular-expression work so far ([`MAX_REGEX_WORK`]).
    regex_work: u64,
    /// Bytes of the values checked so far, one value counted once per
    /// visit ([`MAX_TOUCHED_BYTES`]).
    touched: u64,
    /// Each value's size in bytes, by its address, computed once.
    sizes: HashMap<usize, u64>,
}

/// Bytes of values the visits of one check may add up to: whatever a
/// keyword does with the value it is applied to (count characters, copy a
/// name, walk items, write a pointer) is at most proportional to its size,
/// so this bounds the work no step charge foresaw. 64 MiB: a 1 MiB argument
/// visited 64 times; a fan-out of `$ref`s over a large value fails at once
/// (the fourteenth to seventeenth reviews each found one such keyword).
const MAX_TOUCHED_BYTES: u64 = 64 << 20;

impl<'s> Ctx<'s> {
    /// A violation at `path`, as [`Ctx::violation`] writes it.
    fn fail(
        &mut self,
        path: &[Seg<'_>],
        keyword: &'static str,
        message: String,
    ) -> Result<(), Violation> {
        Err(self.violation(path, keyword, message))
    }

    /// A violation at `path`. Writing its pointer reads the path, and a
    /// failure under `anyOf`/`not`/`if` may be thrown away for the next
    /// branch: charged by the path's bytes (a 900 KB key failed 41,000
    /// times held a worker 13.7 s: seventeenth review H1); past the budget
    /// the violation is the check's being too costly.
    fn violation(&mut self, path: &[Seg<'_>], keyword: &'static str, message: String) -> Violation {
        let bytes: usize = path
            .iter()
            .map(|seg| match seg {
                Seg::Key(k) => k.len(),
                Seg::Index(_) => 8,
            })
            .sum();
        self.steps = self
            .steps
            .saturating_add(u32::try_from(bytes / 64 + 1).unwrap_or(u32::MAX));
        if self.steps > MAX_STEPS {
            return self.costly();
        }
        Violation {
            pointer: pointer(path),
            keyword,
            message,
        }
    }

    /// Refuse, before anything else, a member anywhere in the instance that
    /// spells a name the schema mentions in another case: Go's
    /// encoding/json reads it as that name, while every keyword here
    /// (`required`, `if`, `not`, `dependent*`) tests exact names, so under
    /// a `not` or in an `if` its refusal would turn into a pass (fifteenth
    /// review M1).
    fn case_variants<'v>(
        &mut self,
        v: &'v Value,
        path: &mut Vec<Seg<'v>>,
    ) -> Result<(), Violation> {
        match v {
            Value::Object(members) => {
                self.charge(members.len() / 16, path)?;
                let schema = self.schema;
                for (name, item) in members {
                    if !schema.names.is_empty() {
                        let key = crate::json::fold_key(name);
                        let spellings = schema.names.get(&key);
                        // The spellings of one folded name are compared one
                        // by one (4,096 of `abcdefghijkl` fit in a schema):
                        // charged by their number.
                        self.charge(spellings.map_or(0, |n| n.len() / 16), path)?;
                        if let Some(declared) = spellings
                            .filter(|names| !names.iter().any(|n| n == name))
                            .and_then(|names| names.first())
                        {
                            path.push(Seg::Key(name));
                            let r = self.fail(
                                path,
                                "properties",
                                format!(
                                    "member is the property {} spelt in another case (a case-insensitive server reads it as that property, unchecked)",
                                    Value::String(declared.clone())
                                ),
                            );
                            path.pop();
                            return r;
                        }
                    }
                    path.push(Seg::Key(name));
                    let r = self.case_variants(item, path);
                    path.pop();
                    r?;
                }
                Ok(())
            }
            Value::Array(items) => {
                self.charge(items.len() / 16, path)?;
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    let r = self.case_variants(item, path);
                    path.pop();
                    r?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The size of `v` in bytes (strings and names by their length, other
    /// scalars as 8), each value computed once per check (by address: the
    /// instance is not changed while it is checked).
    fn size_of(&mut self, v: &Value) -> u64 {
        let at = v as *const Value as usize;
        if let Some(&n) = self.sizes.get(&at) {
            return n;
        }
        let n = match v {
            Value::String(s) => s.len() as u64 + 2,
            Value::Array(items) => items.iter().map(|i| self.size_of(i)).sum::<u64>() + 2,
            Value::Object(members) => {
                members
                    .iter()
                    .map(|(k, i)| k.len() as u64 + 3 + self.size_of(i))
                    .sum::<u64>()
                    + 2
            }
            _ => 8,
        };
        self.sizes.insert(at, n);
        n
    }

    /// Add regular-expression work ([`pattern_cost`]); over its budget fails.
    fn charge_regex(&mut self, units: usize, path: &[Seg<'_>]) -> Result<(), Violation> {
        self.regex_work = self.regex_work.saturating_add(units as u64);
        match self.regex_work > MAX_REGEX_WORK {
            true => self.too_costly(path),
            false => Ok(()),
        }
    }

    /// Add `steps` of work done outside [`Ctx::check`]; over the budget fails.
    fn charge(&mut self, steps: usize, path: &[Seg<'_>]) -> Result<(), Violation> {
        self.steps = self
            .steps
            .saturating_add(u32::try_from(steps).unwrap_or(u32::MAX));
        match self.steps > MAX_STEPS {
            true => self.too_costly(path),
            false => Ok(()),
        }
    }

    /// Over the budget: reported at the arguments (or result) as a whole,
    /// without writing the path that led there.
    fn too_costly(&self, _path: &[Seg<'_>]) -> Result<(), Violation> {
        Err(self.costly())
    }

    fn costly(&self) -> Violation {
        Violation {
            pointer: String::new(),
            keyword: "$schema",
            message: format!(
                "too costly to check (more than {MAX_STEPS} steps, {MAX_REGEX_WORK} steps of pattern matching, 64 MiB of values visited or {MAX_DEPTH} nested schemas)"
            ),
        }
    }

    fn check<'v>(
        &mut self,
        id: NodeId,
        v: &'v Value,
        path: &mut Vec<Seg<'v>>,
        depth: u32,
    ) -> Result<(), Violation> {
        self.steps += 1;
        if self.steps > MAX_STEPS || depth > MAX_DEPTH {
            return self.too_costly(path);
        }
        let size = self.size_of(v);
        self.touched = self.touched.saturating_add(size);
        if self.touched > MAX_TOUCHED_BYTES {
            return self.too_costly(path);
        }
        let s = match self.schema.nodes.get(id) {
            Some(Node::Obj(s)) => {
                self.charge(s.visit_cost, path)?;
                s
            }
            Some(Node::Bool(true)) => return Ok(()),
            Some(Node::Bool(false)) => {
                return self.fail(
                    path,
                    "false",
                    "no value is allowed here (schema false)".into(),
                )
            }
            // Unreachable for a compiled schema; never a pass.
            Some(Node::Pending) | None => {
                return self.fail(path, "$ref", "a reference that was not compiled".into())
            }
        };
        if let Some(r) = s.ref_ {
            self.check(r, v, path, depth + 1)?;
        }
        let t = type_of(v);
        if let Some(mask) = s.types {
            if mask & t == 0 {
                return self.fail(
                    path,
                    "type",
                    format!("expected {}, found {}", type_words(mask), found(v)),
                );
            }
        }
        if let Some(c) = &s.const_ {
            self.charge(s.const_cost, path)?;
            if !json_eq(c, v) {
                return self.fail(
                    path,
                    "const",
                    "not the value the schema's const requires".into(),
                );
            }
        }
        if let Some(list) = &s.enum_ {
            // Charged whether or not a value matches (a match on the last of
            // 9,000 entries, 99,000 times, was free: fourteenth review H1).
            self.charge(s.enum_cost, path)?;
            if !list.iter().any(|e| json_eq(e, v)) {
                return self.fail(
                    path,
                    "enum",
                    format!(
                        "not one of the {} values the schema's enum allows",
                        list.len()
                    ),
                );
            }
        }
        match v {
            Value::Number(n) => self.number(s, n, path)?,
            Value::String(text) => self.string(s, text, path)?,
            Value::Array(items) => self.array(s, items, path, depth)?,
            Value::Object(members) => self.object(s, v, members, path, depth)?,
            _ => {}
        }
        for &sub in &s.all_of {
            self.check(sub, v, path, depth + 1)?;
        }
        if !s.any_of.is_empty() {
            let mut deepest: Option<Violation> = None;
            let mut matched = false;
            for &sub in &s.any_of {
                match self.check(sub, v, path, depth + 1) {
                    Ok(()) => {
                        matched = true;
                        break;
                    }
                    Err(e) if e.keyword == "$schema" => return Err(e),
                    Err(e) => keep_deepest(&mut deepest, e),
                }
            }
            if !matched {
                return Err(self.alternatives(path, "anyOf", deepest));
            }
        }
        if !s.one_of.is_empty() {
            let mut deepest: Option<Violation> = None;
            let mut matches = 0;
            for &sub in &s.one_of {
                match self.check(sub, v, path, depth + 1) {
                    Ok(()) => matches += 1,
                    Err(e) if e.keyword == "$schema" => return Err(e),
                    Err(e) => keep_deepest(&mut deepest, e),
                }
            }
            match matches {
                1 => {}
                0 => return Err(self.alternatives(path, "oneOf", deepest)),
                n => {
                    return self.fail(
                        path,
                        "oneOf",
                        format!("matches {n} of the oneOf alternatives; exactly one must match"),
                    )
                }
            }
        }
        if let Some(not) = s.not {
            match self.check(not, v, path, depth + 1) {
                Ok(()) => return self.fail(path, "not", "matches the schema under not".into()),
                // A budget exhausted under `not` is not a "no".
                Err(e) if e.keyword == "$schema" => return Err(e),
                Err(_) => {}
            }
        }
        if let Some(cond) = s.if_ {
            let branch = match self.check(cond, v, path, depth + 1) {
                Ok(()) => s.then_,
                // A budget exhausted inside `if` is not a "no".
                Err(e) if e.keyword == "$schema" => return Err(e),
                Err(_) => s.else_,
            };
            if let Some(b) = branch {
                self.check(b, v, path, depth + 1)?;
            }
        }
        Ok(())
    }

    /// No alternative matched: the deepest violation among them when it is
    /// below this value (it says where the instance went wrong), else one
    /// line for the combinator.
    fn alternatives(
        &mut self,
        path: &[Seg<'_>],
        keyword: &'static str,
        deepest: Option<Violation>,
    ) -> Violation {
        // Deeper: more segments than this value's path (each segment starts
        // with `/`, a `/` inside a name is written `~1`).
        let below = |e: &Violation| e.pointer.bytes().filter(|b| *b == b'/').count() > path.len();
        match deepest {
            Some(e) if e.keyword == "$schema" => e,
            Some(e) if below(&e) => e,
            // Written (and charged) as any failure: a chain of `anyOf`s
            // wrote it once per level, uncharged (twenty-third review).
            _ => self.violation(
                path,
                keyword,
                format!("matches none of the {keyword} alternatives"),
            ),
        }
    }

    fn number(
        &mut self,
        s: &Obj,
        n: &serde_json::Number,
        path: &[Seg<'_>],
    ) -> Result<(), Violation> {
        let Some(x) = n.as_f64() else { return Ok(()) };
        use std::cmp::Ordering::{Greater, Less};
        // Each bound as the number compares with it (`None`: no bound).
        let vs = |bound: &Option<serde_json::Number>| bound.as_ref().map(|b| compare(n, b));
        let checks: [(&Option<serde_json::Number>, bool, &'static str, &str); 4] = [
            (
                &s.minimum,
                vs(&s.minimum) != Some(Some(Less)),
                "minimum",
                "at least",
            ),
            (
                &s.maximum,
                vs(&s.maximum) != Some(Some(Greater)),
                "maximum",
                "at most",
            ),
            (
                &s.exclusive_minimum,
                s.exclusive_minimum.is_none() || vs(&s.exclusive_minimum) == Some(Some(Greater)),
                "exclusiveMinimum",
                "above",
            ),
            (
                &s.exclusive_maximum,
                s.exclusive_maximum.is_none() || vs(&s.exclusive_maximum) == Some(Some(Less)),
                "exclusiveMaximum",
                "below",
            ),
        ];
        for (bound, ok, keyword, word) in checks {
            if let (Some(b), false) = (bound, ok) {
                return self.fail(path, keyword, format!("expected a number {word} {b}"));
            }
        }
        if let Some(m) = s.multiple_of {
            // In decimal, as the numbers are written: 19.99 is a multiple of
            // 0.01 (1999 of them), as pydantic and zod read it, though
            // 19.99 / 0.01 in binary floating point is 1998.9999999999998
            // (twenty-first review: ordinary prices refused). Exact, no
            // tolerance (thirteenth review L1: a tolerance let 5000000000.5
            // pass `multipleOf: 1`). Binary division only where a number is
            // beyond 38 digits at the common scale.
            let whole = match (decimal(&n.to_string()), decimal(&m.to_string())) {
                (Some(v), Some(step)) => decimal_multiple(v, step),
                _ => None,
            }
            .unwrap_or_else(|| {
                let q = x / m;
                q.is_finite() && q.fract() == 0.0
            });
            if !whole {
                return self.fail(path, "multipleOf", format!("expected a multiple of {m}"));
            }
        }
        Ok(())
    }

    fn string(&mut self, s: &Obj, text: &str, path: &[Seg<'_>]) -> Result<(), Violation> {
        if s.min_length.is_some() || s.max_length.is_some() {
            // Counting characters reads the whole text: charged by its bytes
            // (a 100,000-character string met 60,000 times through `$ref`s
            // held a worker a second per call: sixteenth review H1).
            self.charge(text.len() / 64 + 1, path)?;
            let len = text.chars().count() as u64;
            if let Some(min) = s.min_length.filter(|m| len < *m) {
                return self.fail(
                    path,
                    "minLength",
                    format!("expected at least {min} characters"),
                );
            }
            if let Some(max) = s.max_length.filter(|m| len > *m) {
                return self.fail(
                    path,
                    "maxLength",
                    format!("expected at most {max} characters"),
                );
            }
        }
        if let Some((re, weight)) = &s.pattern {
            self.charge_regex(pattern_cost(text, *weight), path)?;
            if !re.is_match(text) {
                return self.fail(
                    path,
                    "pattern",
                    "does not match the schema's pattern".into(),
                );
            }
        }
        Ok(())
    }

    fn array<'v>(
        &mut self,
        s: &Obj,
        items: &'v [Value],
        path: &mut Vec<Seg<'v>>,
        depth: u32,
    ) -> Result<(), Violation> {
        let len = items.len() as u64;
        if let Some(min) = s.min_items.filter(|m| len < *m) {
            return self.fail(path, "minItems", format!("expected at least {min} items"));
        }
        if let Some(max) = s.max_items.filter(|m| len > *m) {
            return self.fail(path, "maxItems", format!("expected at most {max} items"));
        }
        // Only when some item has a schema: walking the items for nothing,
        // on every visit of the node, was uncharged (seventeenth review H2).
        let itemized = if s.prefix_items.is_empty() && s.items.is_none() {
            &items[..0]
        } else {
            items
        };
        for (i, item) in itemized.iter().enumerate() {
            let sub = match s.prefix_items.get(i) {
                Some(p) => Some(*p),
                None => s.items,
            };
            if let Some(sub) = sub {
                path.push(Seg::Index(i));
                let r = self.check(sub, item, path, depth + 1);
                path.pop();
                r?;
            }
        }
        if s.unique_items {
            // Each item by its canonical JSON (whole-number floats as
            // integers, as `json_eq` compares them): linear in the items'
            // bytes. Comparing every pair was quadratic, and 90,000 distinct
            // strings held a worker for 20 s (thirteenth review H1).
            self.steps = self.steps.saturating_add((items.len() / 16) as u32);
            if self.steps > MAX_STEPS {
                return self.too_costly(path);
            }
            let mut seen: std::collections::HashMap<String, usize> =
                std::collections::HashMap::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let key = crate::json::canonical(&crate::json::integral_numbers(item));
                // Writing each item reads all of it: charged by its bytes
                // (fifteen items of 20 KB each cost nothing before).
                self.charge(key.len() / 64, path)?;
                if let Some(first) = seen.insert(key, i) {
                    path.push(Seg::Index(i));
                    let r = self.fail(
                        path,
                        "uniqueItems",
                        format!("repeats item {first} (uniqueItems)"),
                    );
                    path.pop();
                    return r;
                }
            }
        }
        if let Some(c) = s.contains {
            let mut n = 0u64;
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                let r = self.check(c, item, path, depth + 1);
                path.pop();
                match r {
                    Ok(()) => n += 1,
                    Err(e) if e.keyword == "$schema" => return Err(e),
                    Err(_) => {}
                }
            }
            let min = s.min_contains.unwrap_or(1);
            if n < min {
                return self.fail(
                    path,
                    "contains",
                    format!("expected at least {min} items matching contains"),
                );
            }
            if let Some(max) = s.max_contains.filter(|m| n > *m) {
                return self.fail(
                    path,
                    "maxContains",
                    format!("expected at most {max} items matching contains"),
                );
            }
        }
        Ok(())
    }

    fn object<'v>(
        &mut self,
        s: &Obj,
        whole: &'v Value,
        members: &'v Map<String, Value>,
        path: &mut Vec<Seg<'v>>,
        depth: u32,
    ) -> Result<(), Violation> {
        self.charge(lookup_steps(s.lookup_bytes, members.len()), path)?;
        for name in &s.required {
            if !members.contains_key(name) {
                return self.fail(
                    path,
                    "required",
                    format!("missing required member {}", Value::String(name.clone())),
                );
            }
        }
        let len = members.len() as u64;
        if let Some(min) = s.min_properties.filter(|m| len < *m) {
            return self.fail(
                path,
                "minProperties",
                format!("expected at least {min} members"),
            );
        }
        if let Some(max) = s.max_properties.filter(|m| len > *m) {
            return self.fail(
                path,
                "maxProperties",
                format!("expected at most {max} members"),
            );
        }
        for (name, needed) in &s.dependent_required {
            if members.contains_key(name) {
                if let Some(missing) = needed.iter().find(|n| !members.contains_key(*n)) {
                    return self.fail(
                        path,
                        "dependentRequired",
                        format!(
                            "member {} requires member {}",
                            Value::String(name.clone()),
                            Value::String(missing.clone())
                        ),
                    );
                }
            }
        }
        for (name, sub) in &s.dependent_schemas {
            if members.contains_key(name) {
                self.check(*sub, whole, path, depth + 1)?;
            }
        }
        for (name, value) in members {
            path.push(Seg::Key(name));
            let r = self.member(s, name, value, path, depth);
            path.pop();
            r?;
        }
        Ok(())
    }

    fn member<'v>(
        &mut self,
        s: &Obj,
        name: &'v str,
        value: &'v Value,
        path: &mut Vec<Seg<'v>>,
        depth: u32,
    ) -> Result<(), Violation> {
        // A member's name is compared with the declared ones and copied for
        // `propertyNames`: charged by its bytes on every visit.
        self.charge(name.len() / 64, path)?;
        if let Some(names) = s.property_names {
            let key = Value::String(name.to_owned());
            // The name is not a member's value: checked on a path of its own.
            let checked = self.check(names, &key, &mut Vec::new(), depth + 1);
            // `key` lives on this frame only: its address will hold the next
            // member's name, whose size must not be read from the cache.
            self.sizes.remove(&(&key as *const Value as usize));
            if let Err(e) = checked {
                return Err(match e.keyword {
                    "$schema" => e,
                    // Charged as any failure (under `not` it is thrown away
                    // and the next is written: twenty-third review H1).
                    _ => self.violation(
                        path,
                        "propertyNames",
                        format!("member name does not match propertyNames: {}", e.message),
                    ),
                });
            }
        }
        // Every member costs a look through the declared properties and a
        // try of every pattern: charged, so that thousands of members
        // against thousands of patterns fail the budget instead of holding
        // a worker (fourteenth review H1: 7.5 MB of members, 120 s).
        let patterns: usize = s
            .pattern_properties
            .iter()
            .map(|(_, weight, _)| pattern_cost(name, *weight))
            .sum();
        self.charge_regex(patterns, path)?;
        // A binary search: about log2(properties) comparisons, each reading
        // up to the name's length (a linear search compared 120 declared
        // 512-byte names with each of 1,900 members on 20 visits: 0.83 s,
        // twentieth review).
        let comparisons = (s.properties.len() + 1).ilog2() as usize + 1;
        self.charge(1 + (name.len() + 16) * comparisons / 256, path)?;
        // A member spelling a declared property in another case never gets
        // here: `Ctx::case_variants` refused it before the check began.
        let mut matched = false;
        if let Ok(at) = s.properties.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            if let Some((_, sub)) = s.properties.get(at) {
                matched = true;
                self.check(*sub, value, path, depth + 1)?;
            }
        }
        for (re, _, sub) in &s.pattern_properties {
            if re.is_match(name) {
                matched = true;
                self.check(*sub, value, path, depth + 1)?;
            }
        }
        if matched {
            return Ok(());
        }
        match s.additional_properties {
            None => Ok(()),
            Some(sub) => match self.schema.nodes.get(sub) {
                Some(Node::Bool(false)) => self.fail(
                    path,
                    "additionalProperties",
                    "unexpected member: the schema allows no members but those it names (additionalProperties: false)".into(),
                ),
                _ => self.check(sub, value, path, depth + 1),
            },
        }
    }
}

/// `n` against a bound, exactly: an integer (on either side) past 2^53 is
/// not rounded to a double first (9007199254740993 is above `maximum:
/// 9007199254740992` as a server reading integers reads it; as doubles they
/// were equal, and the call passed: twenty-third review).
fn compare(n: &serde_json::Number, bound: &serde_json::Number) -> Option<std::cmp::Ordering> {
    let integer = |x: &serde_json::Number| {
        x.as_i64()
            .map(i128::from)
            .or_else(|| x.as_u64().map(i128::from))
    };
    match (integer(n), integer(bound)) {
        (Some(i), Some(b)) => Some(i.cmp(&b)),
        (Some(i), None) => integer_against(i, bound.as_f64()?),
        (None, Some(b)) => integer_against(b, n.as_f64()?).map(std::cmp::Ordering::reverse),
        (None, None) => n.as_f64()?.partial_cmp(&bound.as_f64()?),
    }
}

/// An integer (below 2^64 in size) against a double, exactly.
fn integer_against(i: i128, bound: f64) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    if bound.is_nan() {
        return None;
    }
    // Every integer held here is below 2^64 in size.
    if bound >= 1e30 {
        return Some(Less);
    }
    if bound <= -1e30 {
        return Some(Greater);
    }
    let floor = bound.floor();
    // Exact: a whole double below 1e30 in size is an i128.
    let whole = floor as i128;
    Some(match i.cmp(&whole) {
        Equal if floor < bound => Less,
        other => other,
    })
}

/// A number's text (`19.99`, `-1.5e-7`, `12`) as `digits × 10^exponent`,
/// `None` past 38 digits or when it is not a number's text.
fn decimal(text: &str) -> Option<(u128, i32)> {
    let (digits, exponent) = crate::json::decimal_value(text)?;
    let digits = match digits.is_empty() {
        true => 0,
        false => digits.parse::<u128>().ok()?,
    };
    Some((digits, i32::try_from(exponent).ok()?))
}

/// Whether `value` is a whole multiple of `step` (both from [`decimal`]),
/// scaled to a common exponent; `None` if that overflows.
fn decimal_multiple(value: (u128, i32), step: (u128, i32)) -> Option<bool> {
    let low = value.1.min(step.1);
    let scaled = |(digits, exponent): (u128, i32)| {
        let shift = u32::try_from(exponent.checked_sub(low)?).ok()?;
        digits.checked_mul(10u128.checked_pow(shift)?)
    };
    let (v, s) = (scaled(value)?, scaled(step)?);
    (s != 0).then(|| v % s == 0)
}

/// Bytes a copy of `v` holds, estimated: a `Value` each, strings and names
/// by their length, a map's entry overhead.
fn value_heap(v: &Value) -> usize {
    std::mem::size_of::<Value>()
        + match v {
            Value::String(t) => t.len(),
            Value::Array(items) => items.iter().map(value_heap).sum(),
            Value::Object(members) => members
                .iter()
                .map(|(k, x)| k.len() + 48 + value_heap(x))
                .sum(),
            _ => 0,
        }
}

/// Steps a comparison with `v` costs: its canonical bytes / 64, at least one.
fn canonical_cost(v: &Value) -> usize {
    crate::json::canonical(v).len() / 64 + 1
}

/// Steps matching `text` against a pattern of `weight` costs: regex-lite
/// reads every byte against the program, so bytes times its size class (in
/// KiB) / 16, at least one. 50,000 bytes against `a{0,5000}b` took 5 s for
/// one step before (fifteenth review H1); the budget now holds about 25 KB
/// of text against a 64 KiB program, and 1.6 MB against a 1 KiB one.
/// regex-lite's matcher may visit every state of the program at every
/// position of the text, the end included: an unanchored search enters the
/// start state's closure again at each byte (all of `(?:a?){3500}b`'s
/// ~7,000 states, for a one-byte text), and live threads add the rest. A
/// state takes 16 bytes of program at least, so a size class of `weight`
/// KiB holds at most `weight` x 64 states: charged (bytes + 1) x that. An
/// upper bound: anchored patterns usually cost far less (`^[a-z0-9-]{1,64}$`
/// over eight bytes: 0.4 µs natively, charged 9,216).
fn pattern_cost(text: &str, weight: u32) -> usize {
    let states = (weight as usize).saturating_mul(1024 / 16);
    (text.len() + 1).saturating_mul(states)
}

fn keep_deepest(deepest: &mut Option<Violation>, e: Violation) {
    match deepest {
        Some(d) if d.keyword == "$schema" => {}
        Some(d) if d.pointer.len() >= e.pointer.len() && e.keyword != "$schema" => {}
        _ => *deepest = Some(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `Ok` or the (pointer, keyword) of the violation.
    type Want = Result<(), (&'static str, &'static str)>;
    /// (pointer, keyword) of each unsupported keyword.
    type Places = Vec<(&'static str, &'static str)>;

    /// A schema as the Python SDK (pydantic) writes one: `$defs`, `$ref`,
    /// `anyOf` with null for an optional member, `additionalProperties`.
    fn order_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "customer": {"type": "string", "minLength": 1, "maxLength": 8, "pattern": "^[a-z]+$"},
                "items": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"$ref": "#/$defs/Item"}},
                "priority": {"enum": ["low", "high"]},
                "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": null},
                "count": {"type": "integer", "minimum": 1, "exclusiveMaximum": 10}
            },
            "required": ["customer", "items"],
            "additionalProperties": false,
            "$defs": {
                "Item": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "qty": {"type": "number", "multipleOf": 0.5}},
                    "required": ["name"],
                    "additionalProperties": false
                }
            }
        })
    }

    fn outcome(schema: &Value, instance: Value) -> Result<(), (String, &'static str)> {
        let s = Schema::compile(schema);
        assert!(s.unsupported.is_empty(), "{:?}", s.unsupported);
        s.validate(&instance).map_err(|v| (v.pointer, v.keyword))
    }

    #[test]
    fn arguments_are_checked_against_the_declared_schema() {
        let good = || json!({"customer": "acme", "items": [{"name": "a", "qty": 1.5}]});
        let with = |k: &str, v: Value| {
            let mut g = good();
            g[k] = v;
            g
        };
        let cases: Vec<(&str, Value, Want)> = vec![
            ("valid_arguments_pass", good(), Ok(())),
            (
                "valid_with_optional_members_pass",
                with("note", Value::Null),
                Ok(()),
            ),
            (
                "integer_written_with_a_fraction_is_an_integer",
                with("count", json!(3.0)),
                Ok(()),
            ),
            (
                "missing_required_member_fails_at_the_top",
                json!({"items": [{"name": "a"}]}),
                Err(("", "required")),
            ),
            (
                "wrong_type_fails_at_its_member",
                with("customer", json!(7)),
                Err(("/customer", "type")),
            ),
            (
                "extra_member_under_additional_properties_false",
                with("extra", json!(1)),
                Err(("/extra", "additionalProperties")),
            ),
            (
                "nested_pointer_through_items_and_ref",
                json!({"customer": "acme", "items": [{"name": "a"}, {"name": "b"}, {"name": 5}]}),
                Err(("/items/2/name", "type")),
            ),
            (
                "extra_member_in_a_referenced_definition",
                json!({"customer": "acme", "items": [{"name": "a", "colour": "red"}]}),
                Err(("/items/0/colour", "additionalProperties")),
            ),
            (
                "enum_outside_its_values",
                with("priority", json!("urgent")),
                Err(("/priority", "enum")),
            ),
            (
                "string_too_long",
                with("customer", json!("abcdefghi")),
                Err(("/customer", "maxLength")),
            ),
            (
                "string_too_short",
                with("customer", json!("")),
                Err(("/customer", "minLength")),
            ),
            (
                "pattern_not_matched",
                with("customer", json!("ACME")),
                Err(("/customer", "pattern")),
            ),
            (
                "too_many_items",
                with(
                    "items",
                    json!([{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]),
                ),
                Err(("/items", "maxItems")),
            ),
            (
                "too_few_items",
                with("items", json!([])),
                Err(("/items", "minItems")),
            ),
            (
                "integer_required",
                with("count", json!(2.5)),
                Err(("/count", "type")),
            ),
            (
                "below_minimum",
                with("count", json!(0)),
                Err(("/count", "minimum")),
            ),
            (
                "exclusive_maximum_reached",
                with("count", json!(10)),
                Err(("/count", "exclusiveMaximum")),
            ),
            (
                "not_a_multiple",
                json!({"customer": "a", "items": [{"name": "a", "qty": 0.3}]}),
                Err(("/items/0/qty", "multipleOf")),
            ),
            (
                "optional_member_of_neither_alternative",
                with("note", json!(5)),
                Err(("/note", "anyOf")),
            ),
            ("not_an_object_at_all", json!([1]), Err(("", "type"))),
        ];
        let schema = order_schema();
        for (name, instance, want) in cases {
            let got = outcome(&schema, instance);
            let want = want.map_err(|(p, k)| (p.to_owned(), k));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn combinators_refs_and_draft_spellings_work_as_specified() {
        let cases: Vec<(&str, Value, Value, Want)> = vec![
            (
                "one_of_exactly_one",
                json!({"oneOf": [{"type": "integer"}, {"type": "string"}]}),
                json!(1),
                Ok(()),
            ),
            (
                "one_of_two_match",
                json!({"oneOf": [{"type": "integer"}, {"type": "number"}]}),
                json!(1),
                Err(("", "oneOf")),
            ),
            (
                "all_of_each",
                json!({"allOf": [{"minimum": 1}, {"maximum": 2}]}),
                json!(3),
                Err(("", "maximum")),
            ),
            (
                "not_matches",
                json!({"not": {"type": "null"}}),
                Value::Null,
                Err(("", "not")),
            ),
            ("const_by_value", json!({"const": 1}), json!(1.0), Ok(())),
            (
                "const_differs",
                json!({"const": {"a": [1]}}),
                json!({"a": [2]}),
                Err(("", "const")),
            ),
            (
                "type_list",
                json!({"type": ["string", "null"]}),
                Value::Null,
                Ok(()),
            ),
            (
                "type_list_miss",
                json!({"type": ["string", "null"]}),
                json!(1),
                Err(("", "type")),
            ),
            (
                "recursive_ref_to_root",
                json!({"type": "object", "properties": {"child": {"$ref": "#"}}, "additionalProperties": false}),
                json!({"child": {"child": {"x": 1}}}),
                Err(("/child/child/x", "additionalProperties")),
            ),
            (
                "draft07_definitions",
                json!({"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"n": {"type": "number"}}, "properties": {"a": {"$ref": "#/definitions/n"}}}),
                json!({"a": "x"}),
                Err(("/a", "type")),
            ),
            (
                "draft07_tuple_items",
                json!({"items": [{"type": "string"}], "additionalItems": false}),
                json!(["a", 1]),
                Err(("/1", "false")),
            ),
            (
                "prefix_items",
                json!({"prefixItems": [{"type": "string"}], "items": {"type": "integer"}}),
                json!(["a", 1, "b"]),
                Err(("/2", "type")),
            ),
            (
                "draft04_exclusive_boolean",
                json!({"maximum": 5, "exclusiveMaximum": true}),
                json!(5),
                Err(("", "exclusiveMaximum")),
            ),
            (
                "pattern_properties",
                json!({"patternProperties": {"^x_": {"type": "integer"}}, "additionalProperties": false}),
                json!({"x_a": 1, "y": 2}),
                Err(("/y", "additionalProperties")),
            ),
            (
                "property_names",
                json!({"propertyNames": {"maxLength": 3}}),
                json!({"abcd": 1}),
                Err(("/abcd", "propertyNames")),
            ),
            (
                "dependent_required",
                json!({"dependentRequired": {"a": ["b"]}}),
                json!({"a": 1}),
                Err(("", "dependentRequired")),
            ),
            (
                "a_declared_property_in_another_case",
                json!({"properties": {"dir": {"enum": ["public", "docs"]}}}),
                json!({"DIR": "../../../root/.ssh"}),
                Err(("/DIR", "properties")),
            ),
            (
                "a_declared_property_in_another_case_matching_a_pattern",
                json!({"properties": {"dir": {"type": "string", "pattern": "^/safe"}},
                       "patternProperties": {"^[A-Z]+$": {"type": "string"}}}),
                json!({"DIR": "/etc"}),
                Err(("/DIR", "properties")),
            ),
            (
                "a_case_variant_under_not",
                json!({"properties": {"path": {"type": "string"}},
                       "not": {"properties": {"recursive": {"const": true}}, "required": ["recursive"]}}),
                json!({"path": "/data", "RECURSIVE": true}),
                Err(("/RECURSIVE", "properties")),
            ),
            (
                "a_case_variant_of_a_name_only_if_requires",
                json!({"if": {"required": ["recursive"]},
                       "then": {"properties": {"recursive": {"const": false}}}}),
                json!({"Recursive": true}),
                Err(("/Recursive", "properties")),
            ),
            (
                "a_case_variant_nested_in_items",
                json!({"items": {"properties": {"dir": {"enum": ["docs"]}}}}),
                json!([{"dir": "docs"}, {"DIR": "/etc"}]),
                Err(("/1/DIR", "properties")),
            ),
            (
                "a_declared_property_with_a_long_s",
                json!({"properties": {"sort": {"enum": ["asc"]}}}),
                json!({"ſort": "x"}),
                Err(("/ſort", "properties")),
            ),
            (
                "unique_items",
                json!({"uniqueItems": true}),
                json!([1, 2, 1.0]),
                Err(("/2", "uniqueItems")),
            ),
            (
                "contains",
                json!({"contains": {"type": "string"}}),
                json!([1, 2]),
                Err(("", "contains")),
            ),
            (
                "if_then_else",
                json!({"if": {"properties": {"k": {"const": "a"}}}, "then": {"required": ["x"]}, "else": {"required": ["y"]}}),
                json!({"k": "b"}),
                Err(("", "required")),
            ),
            (
                "escaped_pointer_members",
                json!({"additionalProperties": false}),
                json!({"a/b~c": 1}),
                Err(("/a~1b~0c", "additionalProperties")),
            ),
            (
                "annotations_and_vendor_keywords_assert_nothing",
                json!({"title": "t", "format": "email", "x-order": 1, "nullable": true, "type": "string"}),
                json!("not an email"),
                Ok(()),
            ),
            ("false_schema", json!(false), json!(1), Err(("", "false"))),
            ("true_schema", json!(true), json!({"anything": 1}), Ok(())),
        ];
        for (name, schema, instance, want) in cases {
            let got = outcome(&schema, instance);
            let want = want.map_err(|(p, k)| (p.to_owned(), k));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn keywords_it_cannot_check_are_listed_with_their_place() {
        let cases: Vec<(&str, Value, Places)> = vec![
            (
                "unevaluated_properties",
                json!({"properties": {"a": {"unevaluatedProperties": false}}}),
                vec![(
                    "/properties/a/unevaluatedProperties",
                    "unevaluatedProperties",
                )],
            ),
            (
                "remote_ref",
                json!({"$ref": "https://example.com/s.json"}),
                vec![("/$ref", "$ref")],
            ),
            (
                "anchor_ref",
                json!({"$ref": "#thing"}),
                vec![("/$ref", "$ref")],
            ),
            (
                "dangling_ref",
                json!({"$ref": "#/$defs/missing"}),
                vec![("/$ref", "$ref")],
            ),
            (
                "nested_id",
                json!({"properties": {"a": {"$id": "urn:x"}}}),
                vec![("/properties/a/$id", "$id")],
            ),
            (
                "regex_lite_cannot_compile",
                json!({"pattern": "(?<=a)b"}),
                vec![("/pattern", "pattern")],
            ),
            (
                "malformed_minimum",
                json!({"minimum": "1"}),
                vec![("/minimum", "minimum")],
            ),
            (
                "unknown_type_name",
                json!({"type": "int"}),
                vec![("/type", "type")],
            ),
            (
                "every_annotation_is_fine",
                json!(ANNOTATIONS
                    .iter()
                    .map(|k| (k.to_string(), json!({})))
                    .collect::<Map<String, Value>>()),
                vec![],
            ),
        ];
        for (name, schema, want) in cases {
            let got: Vec<(String, String)> = Schema::compile(&schema)
                .unsupported
                .into_iter()
                .map(|u| (u.pointer, u.keyword))
                .collect();
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(p, k)| (p.to_owned(), k.to_owned()))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_location_is_compiled_once_and_the_nodes_are_bounded() {
        // `$ref`s into one nested subtree (#/$defs/x, #/$defs/x/if, ...) reuse
        // the nodes compiled for it: 100 copies made 1.57 million nodes
        // (twentieth review H2).
        let mut x = json!({"prefixItems": vec![json!({"type": "null"}); 2000]});
        for _ in 0..100 {
            x = json!({"if": x});
        }
        let refs: Vec<Value> = (0..100)
            .map(|j| json!({"$ref": format!("#/$defs/x{}", "/if".repeat(j))}))
            .collect();
        let s = Schema::compile(&json!({
            "type": "object", "properties": {"q": {"type": "string"}},
            "prefixItems": refs, "$defs": {"x": x}
        }));
        assert!(s.unsupported.is_empty(), "{:?}", s.unsupported);
        assert!(s.node_count() < 2300, "{} nodes", s.node_count());
        assert_eq!(s.validate(&json!({"q": "hi"})), Ok(()));
        assert!(s.validate(&json!({"q": 1})).is_err());
        // The same location spelt many ways (`~` unescaped reads as `~`) is
        // one location: compiled once (each spelling compiled it again, and
        // copied its 15,000-item enum: twenty-first review).
        let key = "~~~~~~~~~~";
        let spellings: Vec<Value> = (0..1024u32)
            .map(|bits| {
                let spelt: String = (0..10)
                    .map(|i| if bits & (1 << i) != 0 { "~0" } else { "~" })
                    .collect();
                json!({"$ref": format!("#/$defs/{spelt}")})
            })
            .collect();
        let wide = json!({"allOf": vec![json!({"type": "string"}); 100], "enum": vec![0; 15_000]});
        let s = Schema::compile(&json!({"anyOf": spellings, "$defs": {key: wide}}));
        assert!(s.unsupported.is_empty(), "{:?}", s.unsupported.first());
        assert!(s.node_count() < 1300, "{} nodes", s.node_count());
        assert!(s.heap_bytes() < 2 << 20, "{} bytes", s.heap_bytes());
        assert!(s.validate(&json!(0)).is_err());
        // Past the node bound the schema is unverifiable, never compiled on.
        let many = Schema::compile(&json!({"prefixItems": vec![json!({"type": "null"}); 40_000]}));
        assert!(
            many.unsupported.iter().any(|u| u.why == TOO_MANY_NODES),
            "{:?}",
            many.unsupported.first()
        );
        assert!(many.node_count() <= 40_001, "{} nodes", many.node_count());
        // A `$ref` into an `enum` or `const` points at data: compiled as a
        // schema, the values nested in it were copied again per level.
        let mut nested = json!(vec!["x"; 100_000]);
        let mut refs = Vec::new();
        for depth in 0..12 {
            nested = json!({"const": nested});
            refs.push(json!({"$ref": format!("#/$defs/n{}", "/const".repeat(depth))}));
        }
        refs.push(json!({"$ref": "#/$defs/e/enum/0"}));
        let copies = Schema::compile(&json!({
            "anyOf": refs,
            "$defs": {"n": nested, "e": {"enum": [{"type": "string"}]}, "enum": {"type": "null"}},
            "properties": {"const": {"$ref": "#/$defs/enum"}}
        }));
        let into_data = copies
            .unsupported
            .iter()
            .filter(|u| u.why.contains("into an enum or const"))
            .count();
        assert_eq!(into_data, 12, "{:?}", copies.unsupported);
        assert!(copies.heap_bytes() < 4 << 20, "{}", copies.heap_bytes());
        // Past 8 MiB compiled (here: large values in many places) the
        // schema is unverifiable.
        let places: serde_json::Map<String, Value> = (0..12)
            .map(|i| (format!("p{i}"), json!({"const": vec!["x"; 100_000]})))
            .collect();
        let heavy = Schema::compile(&json!({"properties": places}));
        assert!(
            heavy.unsupported.iter().any(|u| u.why == TOO_MANY_NODES),
            "{:?}",
            heavy.unsupported.first()
        );
        assert!(
            heavy.heap_bytes() < MAX_COMPILED_BYTES + (6 << 20),
            "{}",
            heavy.heap_bytes()
        );
        // What cannot be checked is listed up to 64 places, then one entry
        // no policy can ignore says there is more.
        let malformed: serde_json::Map<String, Value> =
            (0..2500).map(|i| (format!("{i:x}"), json!(1))).collect();
        let listed = Schema::compile(&json!({"dependentRequired": malformed}));
        assert_eq!(listed.unsupported.len(), MAX_UNSUPPORTED + 1);
        assert_eq!(
            listed
                .unsupported
                .last()
                .map(|u| (u.keyword.as_str(), u.why)),
            Some(("", TOO_MANY_UNSUPPORTED))
        );
        // `{}` asserts nothing and costs no boxed node.
        let s = Schema::compile(&json!({"prefixItems": vec![json!({}); 1000]}));
        assert!(s.heap_bytes() < 1000 * std::mem::size_of::<Obj>());
    }

    #[test]
    fn locations_are_cut_and_what_is_kept_is_counted() {
        // A 32,000-byte name made every child's location 64 KB: building them
        // was the schema's size squared, and keeping 65 of them per schema
        // filled a VM (twenty-second review).
        let name = "~".repeat(32_000);
        let s = Schema::compile(&json!({"properties": {name: {"allOf": vec![json!(1); 2000]}}}));
        assert_eq!(s.unsupported.len(), MAX_UNSUPPORTED + 1);
        for u in &s.unsupported {
            assert!(u.pointer.len() <= MAX_LOCATION + 3, "{}", u.pointer.len());
        }
        assert!(
            s.unsupported.first().is_some_and(
                |u| u.pointer.starts_with("/properties/~0~0") && u.pointer.ends_with('…')
            ),
            "{:?}",
            s.unsupported.first().map(|u| u.pointer.get(..40))
        );
        // Short locations are whole JSON pointers.
        assert_eq!(
            location("/a", &["properties", "x/y~z"]),
            "/a/properties/x~1y~0z"
        );
        assert_eq!(location("", &[]), "");
    }

    #[test]
    fn costly_checks_stop_and_fail_closed() {
        // A reference to itself that never descends: the depth bound ends it.
        let s =
            Schema::compile(&json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}));
        let e = s.validate(&json!(1)).err().map(|v| v.keyword);
        assert_eq!(e, Some("$schema"));
        // Nested oneOf over a long array: the step budget ends it.
        let mut schema = json!({"type": "integer"});
        for _ in 0..12 {
            // Each level checks the one below twice and matches once.
            schema = json!({"oneOf": [schema.clone(), {"allOf": [schema, false]}]});
        }
        let s = Schema::compile(&json!({"items": schema}));
        let big: Vec<Value> = (0..2000).map(|i| json!(i)).collect();
        let e = s.validate(&Value::Array(big)).err().map(|v| v.keyword);
        assert_eq!(e, Some("$schema"));
        // Uniqueness of many distinct items is linear (it was quadratic: 90,000
        // strings held a worker 20 s), and past the budget it fails closed
        // instead of passing the last node it charged.
        let unique = Schema::compile(&json!({"type": "array", "uniqueItems": true}));
        let distinct: Vec<Value> = (0..20_000).map(|i| json!(format!("tag-{i}"))).collect();
        let start = std::time::Instant::now();
        assert_eq!(unique.validate(&Value::Array(distinct)), Ok(()));
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
        // (Uniqueness of a few large items under a fan-out fails: below.)
        // Members against many patterns, and values matching the last entry
        // of a long enum, are charged: over the budget fails, fast.
        let patterns: serde_json::Map<String, Value> = (0..3800)
            .map(|i| (format!("^p{i}$"), json!({"type": "string"})))
            .collect();
        let pp = Schema::compile(&json!({"type": "object", "patternProperties": patterns}));
        let members: serde_json::Map<String, Value> =
            (0..30_000).map(|i| (format!("m{i}"), json!(1))).collect();
        let start = std::time::Instant::now();
        let e = pp
            .validate(&Value::Object(members))
            .err()
            .map(|v| v.keyword);
        assert_eq!(e, Some("$schema"));
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
        // Names looked up among the members are charged by the bytes
        // compared: 1,500 absent names sharing 28 bytes with every member,
        // on 8,500 visits, held a worker 2.8 s and passed (twentieth review H1).
        let pre = "a".repeat(28);
        let dep: serde_json::Map<String, Value> = (0..1500)
            .map(|i| (format!("{pre}Z{i:03}"), json!({})))
            .collect();
        let lookups = Schema::compile(&json!({
            "type": "object",
            "$defs": {"o": {"dependentSchemas": dep},
                      "f": {"allOf": vec![json!({"$ref": "#/$defs/o"}); 100]}},
            "properties": {"rows": {"type": "array", "items": {"$ref": "#/$defs/f"}}}
        }));
        assert!(lookups.unsupported.is_empty(), "{:?}", lookups.unsupported);
        let row: serde_json::Map<String, Value> = (0..11)
            .map(|i| (format!("{pre}M{i:03}"), json!(i)))
            .collect();
        let e = lookups
            .validate(&json!({"rows": vec![Value::Object(row); 85]}))
            .err()
            .map(|v| v.keyword);
        assert_eq!(e, Some("$schema"));
        // Violations rewritten on the way up (a `propertyNames` failure
        // under `not`, a chain of one-branch `anyOf`s) are charged as any
        // failure by the path's bytes: under a 1 MB member name they were
        // written uncharged, 8,192 and 56 times, and the call passed after
        // seconds (twenty-third review).
        let mut defs = serde_json::Map::new();
        defs.insert("P".into(), json!({"not": {"propertyNames": false}}));
        defs.insert("A0".into(), json!({"type": "string"}));
        for i in 1..57 {
            defs.insert(
                format!("A{i}"),
                json!({"anyOf": [{"$ref": format!("#/$defs/A{}", i - 1)}]}),
            );
        }
        defs.insert("Q".into(), json!({"not": {"$ref": "#/$defs/A56"}}));
        defs.insert(
            "N0".into(),
            json!({"allOf": [{"$ref": "#/$defs/P"}, {"$ref": "#/$defs/Q"}]}),
        );
        for i in 1..13 {
            let below = format!("#/$defs/N{}", i - 1);
            defs.insert(
                format!("N{i}"),
                json!({"allOf": [{"$ref": below}, {"$ref": below}]}),
            );
        }
        let rewritten = Schema::compile(&json!({
            "type": "object", "additionalProperties": {"$ref": "#/$defs/N12"}, "$defs": defs
        }));
        assert!(
            rewritten.unsupported.is_empty(),
            "{:?}",
            rewritten.unsupported
        );
        let mut long = serde_json::Map::new();
        long.insert("k".repeat(1_000_000), json!({"a": 1}));
        let e = rewritten
            .validate(&Value::Object(long))
            .err()
            .map(|v| v.keyword);
        assert_eq!(e, Some("$schema"));
        // Matching is charged by live threads: `a{0,16}(?:b|$)` keeps 17
        // alive over a run of `a`s (3.2 MB read for 1.27 s in Envoy and
        // passed: twenty-fourth review); 100 KB of it still passes.
        let live = Schema::compile(&json!({"properties": {"p": {"pattern": "a{0,16}(?:b|$)"}}}));
        assert!(live.unsupported.is_empty(), "{:?}", live.unsupported);
        let e = live
            .validate(&json!({"p": "a".repeat(3_190_000)}))
            .err()
            .map(|v| v.keyword);
        assert_eq!(e, Some("$schema"));
        assert_eq!(live.validate(&json!({"p": "a".repeat(100_000)})), Ok(()));
        // The start state's closure is charged at every byte: a one-byte text
        // against `(?:a?){3500}b` cost ~7,000 state visits for 3 units (a call
        // of 80,000 such strings held a worker 35 s: twenty-fifth review).
        let closure = Schema::compile(&json!({"items": {"pattern": "(?:a?){1000}b"}}));
        assert!(closure.unsupported.is_empty(), "{:?}", closure.unsupported);
        let e = closure
            .validate(&json!(vec!["cccccccb"; 2_000]))
            .err()
            .map(|v| v.keyword);
        assert_eq!(e, Some("$schema"));
        assert_eq!(closure.validate(&json!(["b", "cb"])), Ok(()));
        // Capture groups cost slots per state on a pattern's first match:
        // past seven the pattern is not compiled (3,000 took ~450 MB).
        let groups = Schema::compile(&json!({"pattern": format!("{}b", "()".repeat(300))}));
        assert!(
            groups
                .unsupported
                .iter()
                .any(|u| u.why.contains("capture groups")),
            "{:?}",
            groups.unsupported
        );
        let few = Schema::compile(&json!({"pattern": "^(\\d{4})-(\\d{2})-(\\d{2})$"}));
        assert!(few.unsupported.is_empty(), "{:?}", few.unsupported);
        assert_eq!(few.validate(&json!("2026-12-05")), Ok(()));
        // A long text against a large pattern, under `not` so that no
        // match would pass: charged by bytes times program size.
        let any: Vec<Value> = (0..8).map(|_| json!({"pattern": "a{0,900}b"})).collect();
        let pat = Schema::compile(
            &json!({"properties": {"s": {"type": "string", "not": {"anyOf": any}}}}),
        );
        assert!(pat.unsupported.is_empty(), "{:?}", pat.unsupported);
        let start = std::time::Instant::now();
        let e = pat
            .validate(&json!({"s": "a".repeat(50_000)}))
            .err()
            .map(|v| v.keyword);
        assert_eq!(e, Some("$schema"));
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
        // A large `const` compared under many branches (by reference, as
        // the review built it): charged by its bytes.
        let big = json!((0..28_000).map(|_| 0).collect::<Vec<_>>());
        let refs = |to: &str| -> Vec<Value> { (0..200).map(|_| json!({"$ref": to})).collect() };
        let c = Schema::compile(&json!({
            "$defs": {"c": {"const": big}, "b": {"anyOf": refs("#/$defs/c")}},
            "not": {"anyOf": refs("#/$defs/b")}
        }));
        let mut near: Vec<Value> = (0..27_999).map(|_| json!(0)).collect();
        near.push(json!(1));
        let start = std::time::Instant::now();
        let e = c.validate(&Value::Array(near)).err().map(|v| v.keyword);
        assert_eq!(e, Some("$schema"));
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
        // Lengths of a long string, and uniqueness of a few large items,
        // tested under many branches by reference: charged by their bytes.
        let alts = |to: &str, last: Value| -> Value {
            let mut any: Vec<Value> = (0..240).map(|_| json!({"$ref": to})).collect();
            any.push(last);
            json!({"anyOf": any})
        };
        let len = Schema::compile(&json!({
            "$defs": {"l": {"maxLength": 1, "minLength": 2}, "m": alts("#/$defs/l", json!(false))},
            "anyOf": [alts("#/$defs/m", json!(false)), {"type": "string"}]
        }));
        let start = std::time::Instant::now();
        let e = len
            .validate(&json!("x".repeat(100_000)))
            .err()
            .map(|v| v.keyword);
        assert_eq!(e, Some("$schema"));
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
        let uniq = Schema::compile(&json!({
            "$defs": {"u": {"uniqueItems": true, "contains": false}, "v": alts("#/$defs/u", json!(false))},
            "anyOf": [alts("#/$defs/v", json!(false)), {"type": "array"}]
        }));
        let items: Vec<Value> = (0..15)
            .map(|i| json!(format!("{i}{}", "y".repeat(20_000))))
            .collect();
        let start = std::time::Instant::now();
        let e = uniq.validate(&Value::Array(items)).err().map(|v| v.keyword);
        assert_eq!(e, Some("$schema"));
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
        // Failures thrown away under `anyOf`, each writing a long key's
        // pointer; and arrays walked for nothing on every visit: both charged.
        let doubling = |leaf: Value, levels: usize| -> Value {
            let mut defs = serde_json::Map::new();
            defs.insert("n0".into(), leaf);
            for i in 1..=levels {
                let prev = json!({"$ref": format!("#/$defs/n{}", i - 1)});
                defs.insert(format!("n{i}"), json!({"allOf": [prev.clone(), prev]}));
            }
            Value::Object(defs)
        };
        let mut any: Vec<Value> = (0..40).map(|_| json!(false)).collect();
        any.push(json!(true));
        let fails = Schema::compile(&json!({
            "$defs": doubling(json!({"anyOf": any}), 10),
            "additionalProperties": {"$ref": "#/$defs/n10"}
        }));
        let start = std::time::Instant::now();
        let e = fails
            .validate(&json!({"K".repeat(500_000): 0}))
            .err()
            .map(|v| v.keyword);
        assert_eq!(e, Some("$schema"));
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
        // A large ordinary call passes: ~270 KB of rows, each an optional
        // `anyOf` member and a pattern-checked name, as pydantic writes them.
        let rows = Schema::compile(&json!({
            "type": "object",
            "properties": {"rows": {"type": "array", "items": {"$ref": "#/$defs/Row"}}},
            "$defs": {"Row": {"type": "object", "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9-]{1,64}$", "maxLength": 64},
                "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "qty": {"type": "integer", "minimum": 0}}, "required": ["name"]}}
        }));
        let many: Vec<Value> = (0..3_000)
            .map(|i| json!({"name": format!("row-{i}"), "note": "x".repeat(60), "qty": i}))
            .collect();
        assert_eq!(rows.validate(&json!({"rows": many})), Ok(()));
        // A value visited more often than its bytes allow fails, whatever
        // keyword visits it: 64 MiB of visited bytes per check.
        let fan = Schema::compile(&json!({
            "$defs": doubling(json!(true), 12),
            "properties": {"s": {"$ref": "#/$defs/n12"}}
        }));
        let e = fan
            .validate(&json!({"s": "z".repeat(20_000)}))
            .err()
            .map(|v| v.keyword);
        assert_eq!(e, Some("$schema"));
        assert_eq!(fan.validate(&json!({"s": "z"})), Ok(()));
        let walks = Schema::compile(&json!({
            "$defs": doubling(json!({"minItems": 0}), 13),
            "properties": {"a": {"$ref": "#/$defs/n13"}}
        }));
        let start = std::time::Instant::now();
        let zeros: Vec<Value> = (0..100_000).map(|_| json!(0)).collect();
        let e = walks
            .validate(&json!({"a": zeros}))
            .err()
            .map(|v| v.keyword);
        assert_eq!(e, Some("$schema"));
        assert_eq!(walks.validate(&json!({"a": [0, 1]})), Ok(()));
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
        // A node walking a long list of its own on every visit (here 4,500
        // `dependentSchemas` names, 100,000 visits by fan-out): charged by
        // the list, whatever the value.
        let deps: serde_json::Map<String, Value> = (0..4500)
            .map(|i| (format!("k{i:04}"), json!(true)))
            .collect();
        let mut defs = serde_json::Map::new();
        defs.insert("L5".into(), json!({"dependentSchemas": deps}));
        for i in (0..5).rev() {
            let next = json!({"$ref": format!("#/$defs/L{}", i + 1)});
            defs.insert(format!("L{i}"), json!({"allOf": vec![next; 10]}));
        }
        let lists =
            Schema::compile(&json!({"type": "object", "$ref": "#/$defs/L0", "$defs": defs}));
        let start = std::time::Instant::now();
        let e = lists.validate(&json!({"a": 0})).err().map(|v| v.keyword);
        assert_eq!(e, Some("$schema"));
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
        let en = Schema::compile(&json!({"items": {"enum": (0..9000).collect::<Vec<_>>()}}));
        let last: Vec<Value> = (0..99_000).map(|_| json!(8999)).collect();
        let e = en.validate(&Value::Array(last)).err().map(|v| v.keyword);
        assert_eq!(e, Some("$schema"));
    }

    #[test]
    fn patterns_too_large_to_hold_are_listed_as_unverifiable() {
        // One pattern past 32 KiB of program, and many whose programs
        // together pass 256 KiB (1,650 of them took a VM's memory).
        let huge = Schema::compile(&json!({"pattern": "a{0,9000}b"}));
        assert!(
            huge.unsupported.iter().any(|u| u.keyword == "pattern"),
            "{:?}",
            huge.unsupported
        );
        let props: serde_json::Map<String, Value> = (0..400)
            .map(|i| {
                (
                    format!("p{i}"),
                    json!({"pattern": format!("a{{0,400}}{i}")}),
                )
            })
            .collect();
        let many = Schema::compile(&json!({"properties": props}));
        assert!(
            many.unsupported.iter().any(|u| u.why.contains("together")),
            "{:?}",
            many.unsupported.len()
        );
        assert!(
            many.regex_weight() <= MAX_REGEX_WEIGHT,
            "{}",
            many.regex_weight()
        );
        // Compiling stops at the schema's weight: 1,700 large patterns (the
        // nineteenth review's list) compile in a fraction of a second.
        let heavy: serde_json::Map<String, Value> = (0..1700)
            .map(|i| (format!("p{i}"), json!({"pattern": "a{0,3000}"})))
            .collect();
        let start = std::time::Instant::now();
        let h = Schema::compile(&json!({"properties": heavy}));
        assert!(!h.unsupported.is_empty());
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
        // A pattern that fails at every class cost each class's work: the
        // failures count, so thousands of them are not each compiled five
        // times (3,000 took 0.84 s natively).
        let failing: serde_json::Map<String, Value> = (0..3000)
            .map(|i| (format!("p{i}"), json!({"pattern": "a{0,9000}b"})))
            .collect();
        let f = Schema::compile(&json!({"properties": failing}));
        let compiled_and_failed = f
            .unsupported
            .iter()
            .filter(|u| u.why.contains("not one regex-lite compiles"))
            .count();
        assert!(compiled_and_failed <= 4, "{compiled_and_failed}");
        assert!(f.unsupported.iter().any(|u| u.why.contains("together")));
        // Ordinary patterns weigh little and are checked.
        let small =
            Schema::compile(&json!({"properties": {"id": {"pattern": "^[a-z0-9-]{1,64}$"}}}));
        assert!(small.unsupported.is_empty());
        assert!(small.regex_weight() <= 16, "{}", small.regex_weight());
        let fifty: serde_json::Map<String, Value> = (0..50)
            .map(|i| (format!("p{i}"), json!({"pattern": "^[a-z0-9-]{1,64}$"})))
            .collect();
        assert!(Schema::compile(&json!({"properties": fifty}))
            .unsupported
            .is_empty());
    }

    #[test]
    fn checks_sharing_a_budget_share_its_bounds() {
        // Each check just within the budget alone; together past it (a batch
        // of 500 such calls held a worker 45 s: twenty-sixth review).
        let s = Schema::compile(&json!({"pattern": "(?:a?){1000}b"}));
        let text = json!(format!("{}b", "a".repeat(1829)));
        assert_eq!(s.validate(&text), Ok(()));
        let mut budget = CheckBudget::default();
        let outcomes: Vec<bool> = (0..10)
            .map(|_| s.validate_within(&text, &mut budget).is_ok())
            .collect();
        let passed = outcomes.iter().filter(|ok| **ok).count();
        assert!((1..10).contains(&passed), "{outcomes:?}");
        // Once spent, every later check is refused.
        assert!(outcomes.iter().skip(passed).all(|ok| !ok), "{outcomes:?}");
    }

    #[test]
    fn integer_bounds_are_compared_exactly() {
        // (case, bound keyword, bound, value, passes): as doubles the two
        // sides of the first cases are one number.
        let cases = [
            (
                "one_past_a_maximum_of_2_53",
                "maximum",
                json!(9007199254740992_u64),
                json!(9007199254740993_u64),
                false,
            ),
            (
                "a_maximum_of_2_53_itself",
                "maximum",
                json!(9007199254740992_u64),
                json!(9007199254740992_u64),
                true,
            ),
            (
                "one_below_a_minimum",
                "minimum",
                json!(-9007199254740992_i64),
                json!(-9007199254740993_i64),
                false,
            ),
            (
                "the_largest_u64_below_2_64",
                "exclusiveMaximum",
                json!(18446744073709551616.0_f64),
                json!(u64::MAX),
                true,
            ),
            (
                "an_integer_against_a_fraction",
                "maximum",
                json!(2.5),
                json!(3),
                false,
            ),
            (
                "an_integer_below_a_fraction",
                "exclusiveMaximum",
                json!(2.5),
                json!(2),
                true,
            ),
            (
                "an_integer_above_a_fractional_minimum",
                "exclusiveMinimum",
                json!(-2.5),
                json!(-2),
                true,
            ),
            (
                "equal_is_not_above",
                "exclusiveMinimum",
                json!(7),
                json!(7),
                false,
            ),
            (
                "a_double_as_before",
                "maximum",
                json!(1.5),
                json!(1.25),
                true,
            ),
            // The bound as written, too (twenty-eighth review: ...995 read as
            // the double ...996 let ...996 pass).
            (
                "a_bound_past_2_53_as_written",
                "maximum",
                json!(9007199254740995_u64),
                json!(9007199254740996_u64),
                false,
            ),
            (
                "the_bound_itself",
                "maximum",
                json!(9007199254740995_u64),
                json!(9007199254740995_u64),
                true,
            ),
            (
                "a_double_above_an_integer_bound",
                "maximum",
                json!(10),
                json!(10.5),
                false,
            ),
            (
                "a_double_below_an_integer_minimum",
                "minimum",
                json!(-3),
                json!(-3.25),
                false,
            ),
        ];
        for (case, keyword, bound, value, passes) in cases {
            let s = Schema::compile(&json!({ keyword: bound }));
            assert_eq!(s.validate(&value).is_ok(), passes, "{case}");
        }
    }

    #[test]
    fn multiple_of_needs_a_whole_quotient() {
        // (name, multipleOf, value, passes)
        let cases = [
            ("integer_multiple", json!(3), json!(12), true),
            ("integer_not_multiple", json!(3), json!(10), false),
            (
                "half_past_a_large_integer",
                json!(1),
                json!(5000000000.5_f64),
                false,
            ),
            (
                "a_thousandth_off_a_cent",
                json!(0.01),
                json!(10000000.001_f64),
                false,
            ),
            ("halves", json!(0.5), json!(7.5), true),
            ("float_multiple", json!(2.5), json!(7.5), true),
            ("whole_float_of_integer_step", json!(2), json!(8.0), true),
            // In decimal, as pydantic and zod read them (binary division
            // gives 1998.9999999999998 and 2.9999999999999996).
            ("cents", json!(0.01), json!(19.99), true),
            ("tenths", json!(0.1), json!(0.3), true),
            ("negative_cents", json!(0.01), json!(-0.07), true),
            ("a_tenth_of_a_cent_off", json!(0.01), json!(19.991), false),
            ("exponents", json!(1e-7), json!(3e-7), true),
            (
                "a_large_multiple_of_a_fraction",
                json!(0.5),
                json!(1.5e20),
                true,
            ),
            (
                "an_integer_step_and_a_fraction",
                json!(3),
                json!(7.5),
                false,
            ),
        ];
        for (name, m, v, passes) in cases {
            let s = Schema::compile(&json!({"multipleOf": m}));
            assert_eq!(s.validate(&v).is_ok(), passes, "{name}");
        }
    }

    #[test]
    fn reasons_never_carry_the_value() {
        let s = Schema::compile(&order_schema());
        let secret = "sk_live_0123456789abcdef";
        for instance in [
            json!({"customer": secret, "items": [{"name": "a"}]}),
            json!({"customer": "a", "items": [{"name": "a"}], "priority": secret}),
            json!({"customer": "a", "items": [{"name": secret, "qty": secret}]}),
        ] {
            let v = s.validate(&instance).err();
            assert!(v.is_some());
            assert!(!format!("{v:?}").contains(secret), "{v:?}");
        }
    }
}
