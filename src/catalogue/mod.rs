//! Tool catalogues: what a server lists and returns, checked before a caller
//! (and its model) reads it. Pure: no host, no clock; shared data is reached
//! through [`crate::store::SharedStore`].
//!
//! - [`pins`]: pins of tool definitions, and what each upstream listed.
//! - [`listed`]: the names each upstream listed and the tools removed for
//!   poisoning (the other servers' tools for `shadowing`; the calls refused).
//! - `poison`: deterministic checks for poisoned tool definitions and
//!   injected tool results (issue #16 items 4 and 7), with `fold` (how text is
//!   read) and `markers` (the phrases); `config`: the `$.catalogue` section.
//! - [`schema`]: a JSON Schema validator for the subset MCP servers declare;
//!   [`schemas`]: the `$.schemas` section, the declared schemas per upstream,
//!   and the checks of calls and results against them (issue #16 item 6).
//! - [`intents`]: intent classes of tools (read, write, destructive,
//!   open-world) from names and annotations, riskier only (issue #16 item 5).

pub mod config;
pub mod fold;
pub mod intents;
pub mod listed;
mod markers;
pub mod pins;
pub mod poison;
pub mod schema;
pub mod schemas;

/// What the lists of one upstream are remembered under: the Envoy cluster,
/// and the route's name when it has one. NUL parts them. Both names are the
/// operator's, so two keys could only collide by configuration, never by
/// what a caller sends; the key is hashed or compared, never shown.
pub fn upstream_key(cluster: &str, route: &str) -> String {
    if route.is_empty() {
        cluster.to_owned()
    } else {
        format!("{cluster}\u{0}{route}")
    }
}

pub use config::{compile, CataloguePolicy, DescriptionAction, ResultAction, UnlistedCalls};
pub use poison::{content_texts, wrap_text, Check, Finding, HostPattern, Inspector, OtherTools};
