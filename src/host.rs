//! The only door from the core to the proxy host. The wasm glue implements it
//! with proxy-wasm hostcalls; tests implement it in memory (`FakeHost`).

use crate::audit::EventFacts;
use crate::policy::CompiledPolicy;
use crate::reply::LocalReply;
use crate::store::SharedStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// Envoy stats the filter keeps (exported as `wasmcustom.mcp_firewall.*`).
/// Names are fixed here: no caller-controlled or secret text ever becomes part
/// of a stat name, and their number is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Counter {
    DecisionAllow,
    DecisionDeny,
    DecisionApproval,
    DryRunUnenforced,
    RefusedIdentity,
    RefusedProtocol,
    RefusedHeaderMismatch,
    RefusedTooLarge,
    RefusedMediaType,
    RefusedHttpMethod,
    RefusedKillSwitch,
    RefusedSessionBinding,
    RefusedAuditUnavailable,
    RefusedHostWrite,
    ListEntriesRemoved,
    ResponseUnfilterable,
    SessionUnboundAtIssuance,
    SessionRefusedAtIssuance,
    AuditSent,
    AuditRetried,
    AuditDropped,
    AuditAppendFailed,
    ApprovalRequested,
    ApprovalGranted,
    ApprovalRefused,
    ApprovalUnavailable,
    PinRefused,
    PinRemoved,
    PinWarned,
    PinRememberFailed,
    CatalogueRemoved,
    CatalogueFlagged,
    CatalogueRefused,
    CatalogueResultsBlocked,
    CatalogueResultsWrapped,
    CatalogueResultsFlagged,
    CatalogueRememberFailed,
    IntentsRememberFailed,
    SchemasRefused,
    SchemasWarned,
    SchemasResultsBlocked,
    SchemasResultsWarned,
    SchemasUnverifiable,
    SchemasRememberFailed,
    ResultCapRefused,
}

impl Counter {
    pub const ALL: [Counter; 45] = [
        Counter::DecisionAllow,
        Counter::DecisionDeny,
        Counter::DecisionApproval,
        Counter::DryRunUnenforced,
        Counter::RefusedIdentity,
        Counter::RefusedProtocol,
        Counter::RefusedHeaderMismatch,
        Counter::RefusedTooLarge,
        Counter::RefusedMediaType,
        Counter::RefusedHttpMethod,
        Counter::RefusedKillSwitch,
        Counter::RefusedSessionBinding,
        Counter::RefusedAuditUnavailable,
        Counter::RefusedHostWrite,
        Counter::ListEntriesRemoved,
        Counter::ResponseUnfilterable,
        Counter::SessionUnboundAtIssuance,
        Counter::SessionRefusedAtIssuance,
        Counter::AuditSent,
        Counter::AuditRetried,
        Counter::AuditDropped,
        Counter::AuditAppendFailed,
        Counter::ApprovalRequested,
        Counter::ApprovalGranted,
        Counter::ApprovalRefused,
        Counter::ApprovalUnavailable,
        Counter::PinRefused,
        Counter::PinRemoved,
        Counter::PinWarned,
        Counter::PinRememberFailed,
        Counter::CatalogueRemoved,
        Counter::CatalogueFlagged,
        Counter::CatalogueRefused,
        Counter::CatalogueResultsBlocked,
        Counter::CatalogueResultsWrapped,
        Counter::CatalogueResultsFlagged,
        Counter::CatalogueRememberFailed,
        Counter::IntentsRememberFailed,
        Counter::SchemasRefused,
        Counter::SchemasWarned,
        Counter::SchemasResultsBlocked,
        Counter::SchemasResultsWarned,
        Counter::SchemasUnverifiable,
        Counter::SchemasRememberFailed,
        Counter::ResultCapRefused,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::DecisionAllow => "mcp_firewall.decisions.allow",
            Counter::DecisionDeny => "mcp_firewall.decisions.deny",
            Counter::DecisionApproval => "mcp_firewall.decisions.approval",
            Counter::DryRunUnenforced => "mcp_firewall.dry_run.unenforced",
            Counter::RefusedIdentity => "mcp_firewall.refused.identity",
            Counter::RefusedProtocol => "mcp_firewall.refused.protocol",
            Counter::RefusedHeaderMismatch => "mcp_firewall.refused.header_mismatch",
            Counter::RefusedTooLarge => "mcp_firewall.refused.too_large",
            Counter::RefusedMediaType => "mcp_firewall.refused.media_type",
            Counter::RefusedHttpMethod => "mcp_firewall.refused.http_method",
            Counter::RefusedKillSwitch => "mcp_firewall.refused.kill_switch",
            Counter::RefusedSessionBinding => "mcp_firewall.refused.session_binding",
            Counter::RefusedAuditUnavailable => "mcp_firewall.refused.audit_unavailable",
            Counter::RefusedHostWrite => "mcp_firewall.refused.host_write",
            Counter::ListEntriesRemoved => "mcp_firewall.lists.entries_removed",
            Counter::ResponseUnfilterable => "mcp_firewall.responses.unfilterable",
            Counter::SessionUnboundAtIssuance => "mcp_firewall.sessions.unbound_at_issuance",
            Counter::SessionRefusedAtIssuance => "mcp_firewall.sessions.refused_at_issuance",
            Counter::AuditSent => "mcp_firewall.audit.sent",
            Counter::AuditRetried => "mcp_firewall.audit.retried",
            Counter::AuditDropped => "mcp_firewall.audit.dropped",
            Counter::AuditAppendFailed => "mcp_firewall.audit.append_failed",
            Counter::ApprovalRequested => "mcp_firewall.approval.requested",
            Counter::ApprovalGranted => "mcp_firewall.approval.granted",
            Counter::ApprovalRefused => "mcp_firewall.approval.refused",
            Counter::ApprovalUnavailable => "mcp_firewall.approval.unavailable",
            // Per tool would put a server's text in stat names: the audit
            // events name the tools.
            Counter::PinRefused => "mcp_firewall.pins.refused",
            Counter::PinRemoved => "mcp_firewall.pins.removed",
            Counter::PinWarned => "mcp_firewall.pins.warned",
            Counter::PinRememberFailed => "mcp_firewall.pins.remember_failed",
            // Tools of list answers (per page), calls, results; per check
            // the audit events say (a fixed, small set of names either way).
            Counter::CatalogueRemoved => "mcp_firewall.catalogue.removed",
            Counter::CatalogueFlagged => "mcp_firewall.catalogue.flagged",
            Counter::CatalogueRefused => "mcp_firewall.catalogue.refused",
            Counter::CatalogueResultsBlocked => "mcp_firewall.catalogue.results_blocked",
            Counter::CatalogueResultsWrapped => "mcp_firewall.catalogue.results_wrapped",
            Counter::CatalogueResultsFlagged => "mcp_firewall.catalogue.results_flagged",
            Counter::CatalogueRememberFailed => "mcp_firewall.catalogue.remember_failed",
            Counter::IntentsRememberFailed => "mcp_firewall.intents.remember_failed",
            // Calls refused / forwarded unchecked or invalid, results
            // replaced / forwarded invalid, listed tools whose schemas hold
            // a keyword the validator cannot check (per page).
            Counter::SchemasRefused => "mcp_firewall.schemas.refused",
            Counter::SchemasWarned => "mcp_firewall.schemas.warned",
            Counter::SchemasResultsBlocked => "mcp_firewall.schemas.results_blocked",
            Counter::SchemasResultsWarned => "mcp_firewall.schemas.results_warned",
            Counter::SchemasUnverifiable => "mcp_firewall.schemas.unverifiable",
            Counter::SchemasRememberFailed => "mcp_firewall.schemas.remember_failed",
            // Answers over their size cap: replaced, or (dry run) what
            // enforcement would have replaced.
            Counter::ResultCapRefused => "mcp_firewall.result_caps.refused",
        }
    }
}

/// The response's headers or its trailers (HTTP/2 and chunked HTTP/1 carry
/// header lines after the body too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsePart {
    Headers,
    Trailers,
}

pub trait Host: SharedStore {
    /// Seal and queue one audit event (the glue ignores it when audit is off).
    fn audit(&mut self, facts: EventFacts);
    /// True while `audit.on_failure: closed` must refuse new MCP requests.
    fn audit_refuses(&self) -> bool;
    /// Wall-clock milliseconds since the Unix epoch (the host's clock).
    fn now_ms(&self) -> u64;
    /// Add to one of the filter's Envoy counters.
    fn count(&mut self, counter: Counter, by: u64);
    /// Count a DLP finding by kind (`mcp_firewall.dlp.findings.<kind>`). Kinds
    /// are detector names or policy ids, never scanned text.
    fn count_finding(&mut self, kind: &str);
    /// Count a call refused by a rate limit or budget, by its rule id
    /// (`mcp_firewall.rate_limited.<rule>`).
    fn count_limited(&mut self, rule: &str);
    /// Set (`Some`) or remove (`None`) a request header; headers callback only.
    /// Every write can fail: the filter never forwards what it meant to change.
    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError>;
    /// Set or remove a request header from a body callback, while the headers
    /// callback's `Pause` still holds them: Envoy keeps the header map
    /// writable until the filter continues (only reads were measured to fail
    /// from body callbacks, on headers already let go), and the filters after
    /// this one see the headers only then.
    fn set_held_request_header(&mut self, name: &str, value: Option<&str>)
        -> Result<(), HostError>;
    /// Replace the buffered request body (`size` bytes) with `body`.
    fn set_request_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError>;
    /// A request header; only valid during the request-headers callback
    /// (Envoy answers BadArgument from body callbacks, so we read headers once).
    fn request_header(&self, name: &str) -> Option<String>;
    /// On how many lines the client sent request header `name` (0 = absent);
    /// headers callback only. `request_header` returns their combination.
    fn request_header_lines(&self, name: &str) -> usize;
    /// A header of `among` the client sent on more than one line (the glue
    /// finds it in one pass over the headers).
    fn repeated_request_header(&self, among: &[&str]) -> Option<String> {
        among
            .iter()
            .find(|name| self.request_header_lines(name) > 1)
            .map(|name| (*name).to_owned())
    }
    /// Every request header line whose (lower-case) name starts with
    /// `prefix`, as (name, value), one per line; headers callback only.
    fn request_headers_with_prefix(&self, prefix: &str) -> Vec<(String, String)>;
    /// A host property such as `["connection", "uri_san_peer_certificate"]`.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// The buffered request body (`size` bytes from the start).
    fn request_body(&self, size: usize) -> Option<Vec<u8>>;
    fn response_header(&self, name: &str) -> Option<String>;
    /// Every line of the response's headers or trailers, name (lower case)
    /// and value, in order; pseudo-headers (`:status`) too.
    fn for_each_response_line(&self, part: ResponsePart, visit: &mut dyn FnMut(&str, &str));
    /// Replace every line named `name` in the response's headers or
    /// trailers with one line per value, in order (none: the name is gone).
    fn set_response_lines(
        &mut self,
        part: ResponsePart,
        name: &str,
        values: &[&str],
    ) -> Result<(), HostError>;
    /// Set (`Some`) or remove (`None`) a response header.
    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError>;
    /// The response body bytes Envoy currently holds for us.
    fn response_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Replace the `size` bytes Envoy currently holds with `body`.
    fn set_response_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError>;
    /// Send an HTTP callout from this stream (the approval service); its
    /// answer comes back to this stream under the returned id
    /// ([`crate::filter::RequestFilter::on_approval_answer`]).
    fn dispatch_callout(&mut self, callout: &Callout<'_>) -> Result<u32, HostError>;
    /// Let a request the filter held after its whole body (an approval's
    /// wait) go on upstream.
    fn resume_request(&mut self) -> Result<(), HostError>;
    /// Answer the client ourselves; nothing reaches the upstream.
    fn send_reply(&mut self, reply: &LocalReply) -> Result<(), HostError>;
    /// Last resort when a write the decision requires failed: reset the
    /// stream, so the client gets an error rather than what was not checked.
    fn reset_stream(&mut self);
    fn log(&self, level: LogLevel, msg: &str);
    /// The policy in force now for this filter, when Envoy configured a newer
    /// one since the stream began (a hot reload); `None` = the stream's own.
    /// A stream holds the policy it started with, and Envoy keeps the old
    /// configuration alive for as long as such a stream lasts: without this,
    /// a caller who holds a body open would be decided under a revoked policy.
    fn policy_in_force(&self) -> InForce {
        InForce::Own
    }
    /// One info line for a refusal (rule id and subject, never a secret),
    /// through the VM's [`RefusalLogGate`].
    fn log_refusal(&mut self, line: &str);
}

/// What [`Host::policy_in_force`] found.
#[derive(Debug, Clone)]
pub enum InForce {
    /// The stream's own policy is the newest of its filter.
    Own,
    /// A newer policy of the filter, in this VM: the request adopts it.
    Newer(std::rc::Rc<CompiledPolicy>),
    /// A newer policy of the filter was configured in another VM (a reload
    /// that brought a new Wasm module): it cannot be decided under it here.
    Elsewhere,
}

/// Refusal log lines are rate-limited per VM: a flood of refused requests
/// must not become a flood of log lines (Envoy's log is synchronous I/O on
/// the worker). At most `PER_SECOND` lines a second; the next line admitted
/// says how many were left out.
#[derive(Debug, Default)]
pub struct RefusalLogGate {
    second: u64,
    in_second: u32,
    left_out: u64,
}

impl RefusalLogGate {
    pub const PER_SECOND: u32 = 10;

    /// The line to write now, or `None` when this second's lines are spent.
    pub fn admit(&mut self, now_ms: u64, line: &str) -> Option<String> {
        let second = now_ms / 1000;
        if second != self.second {
            self.second = second;
            self.in_second = 0;
        }
        if self.in_second >= Self::PER_SECOND {
            self.left_out += 1;
            return None;
        }
        self.in_second += 1;
        Some(match std::mem::take(&mut self.left_out) {
            0 => line.to_owned(),
            n => format!("{line} ({n} earlier refusals not logged: rate limit)"),
        })
    }
}

/// What a callback tells the host to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Headers: stop until the body decides (needs `allow_on_headers_stop_iteration`).
    /// Body: keep buffering.
    Pause,
}

/// The root context's side: audit callouts, the tick, stats.
pub mod root;
pub use root::{Callout, Gauge, HostError, RootHost};

#[cfg(any(test, feature = "fake-host"))]
pub mod fake {
    //! In-memory host for natively testing the request state machine.
    use super::*;
    use crate::store::{MemoryStore, StoreError};
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    #[derive(Debug, Default)]
    pub struct FakeHost {
        pub request_headers: BTreeMap<String, String>,
        pub properties: BTreeMap<String, Vec<u8>>,
        /// Property reads, each a hostcall in Envoy.
        pub properties_read: std::cell::Cell<usize>,
        pub request_body: Vec<u8>,
        pub response_headers: BTreeMap<String, String>,
        pub response_trailers: BTreeMap<String, String>,
        /// What Envoy currently holds of the response body.
        pub response_chunk: Vec<u8>,
        /// What the client received downstream, in order.
        pub downstream: Vec<u8>,
        pub replies: Vec<LocalReply>,
        pub counters: BTreeMap<Counter, u64>,
        pub store: std::rc::Rc<MemoryStore>,
        pub now_ms: u64,
        pub audited: Vec<EventFacts>,
        pub findings: BTreeMap<String, u64>,
        pub limited: BTreeMap<String, u64>,
        pub audit_down: bool,
        pub logs: RefCell<Vec<(LogLevel, String)>>,
        /// Once body callbacks start, header reads fail as in Envoy.
        pub headers_readable: bool,
        /// Request headers the client sent on two lines (their value in
        /// `request_headers` is the combination, as the glue reads it).
        pub repeated_request_headers: std::collections::BTreeSet<String>,
        /// Writes this host refuses (nothing is changed, an error is returned).
        pub refused_writes: std::collections::BTreeSet<Write>,
        /// Streams reset by the filter.
        pub resets: usize,
        /// A policy configured since the stream began (a hot reload).
        pub policy_in_force: Option<std::rc::Rc<CompiledPolicy>>,
        /// A newer policy was configured in another VM.
        pub policy_elsewhere: bool,
        pub refusal_log: RefusalLogGate,
        /// Callouts the filter sent from this stream.
        pub callouts: Vec<root::fake::SentCallout>,
        /// Times the filter let a held request go on.
        pub resumed: usize,
    }

    /// The kinds of write a [`FakeHost`] can be told to refuse.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    pub enum Write {
        RequestHeader,
        /// A request header written from a body callback (held headers).
        HeldRequestHeader,
        RequestBody,
        ResponseHeader,
        ResponseBody,
        Reply,
        /// A callout (the approval service).
        Callout,
        /// Letting a held request go on.
        Resume,
    }

    impl FakeHost {
        fn refuses(&self, w: Write) -> Result<(), HostError> {
            match self.refused_writes.contains(&w) {
                true => Err(HostError(format!("{w:?} refused by the test host"))),
                false => Ok(()),
            }
        }
    }

    impl FakeHost {
        pub fn new() -> Self {
            FakeHost {
                headers_readable: true,
                ..Default::default()
            }
        }
        pub fn header(mut self, k: &str, v: &str) -> Self {
            self.request_headers
                .insert(k.to_ascii_lowercase(), v.to_owned());
            self
        }
        /// A header sent on two lines, as Envoy would hand it over.
        pub fn repeated_header(mut self, k: &str, first: &str, second: &str) -> Self {
            let k = k.to_ascii_lowercase();
            self.request_headers
                .insert(k.clone(), format!("{first}, {second}"));
            self.repeated_request_headers.insert(k);
            self
        }
    }

    impl SharedStore for FakeHost {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
            self.store.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.store.set(key, value, cas)
        }
    }

    /// Set (`Some`) or remove (`None`) a header of a fake header map, by
    /// its lower-case name as Envoy keys them.
    fn write_header(map: &mut BTreeMap<String, String>, name: &str, value: Option<&str>) {
        match value {
            Some(v) => map.insert(name.to_ascii_lowercase(), v.to_owned()),
            None => map.remove(&name.to_ascii_lowercase()),
        };
    }

    impl Host for FakeHost {
        fn count_finding(&mut self, kind: &str) {
            *self.findings.entry(kind.to_owned()).or_default() += 1;
        }
        fn count_limited(&mut self, rule: &str) {
            *self.limited.entry(rule.to_owned()).or_default() += 1;
        }
        fn set_request_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError> {
            assert!(
                self.headers_readable,
                "request headers written outside the headers callback"
            );
            self.refuses(Write::RequestHeader)?;
            write_header(&mut self.request_headers, name, value);
            Ok(())
        }
        fn set_held_request_header(
            &mut self,
            name: &str,
            value: Option<&str>,
        ) -> Result<(), HostError> {
            self.refuses(Write::HeldRequestHeader)?;
            write_header(&mut self.request_headers, name, value);
            Ok(())
        }
        fn set_request_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError> {
            self.refuses(Write::RequestBody)?;
            let rest = self
                .request_body
                .split_off(size.min(self.request_body.len()));
            self.request_body = body.to_vec();
            self.request_body.extend(rest);
            Ok(())
        }
        fn audit(&mut self, facts: EventFacts) {
            self.audited.push(facts);
        }
        fn audit_refuses(&self) -> bool {
            self.audit_down
        }
        fn now_ms(&self) -> u64 {
            self.now_ms
        }
        fn count(&mut self, counter: Counter, by: u64) {
            *self.counters.entry(counter).or_default() += by;
        }
        fn request_header(&self, name: &str) -> Option<String> {
            assert!(
                self.headers_readable,
                "request headers read outside the headers callback"
            );
            self.request_headers
                .get(&name.to_ascii_lowercase())
                .cloned()
        }
        fn request_headers_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
            assert!(
                self.headers_readable,
                "request headers read outside the headers callback"
            );
            let mut out = Vec::new();
            for (k, v) in self.request_headers.range(prefix.to_owned()..) {
                if !k.starts_with(prefix) {
                    break;
                }
                out.push((k.clone(), v.clone()));
                if self.repeated_request_headers.contains(k) {
                    out.push((k.clone(), v.clone()));
                }
            }
            out
        }
        fn request_header_lines(&self, name: &str) -> usize {
            let name = name.to_ascii_lowercase();
            if self.repeated_request_headers.contains(&name) {
                2
            } else {
                usize::from(self.request_headers.contains_key(&name))
            }
        }
        fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
            self.properties_read.set(self.properties_read.get() + 1);
            self.properties.get(&path.join(".")).cloned()
        }
        fn request_body(&self, size: usize) -> Option<Vec<u8>> {
            self.request_body.get(..size).map(<[u8]>::to_vec)
        }
        fn response_header(&self, name: &str) -> Option<String> {
            self.response_headers
                .get(&name.to_ascii_lowercase())
                .cloned()
        }
        fn for_each_response_line(&self, part: ResponsePart, visit: &mut dyn FnMut(&str, &str)) {
            let map = match part {
                ResponsePart::Headers => &self.response_headers,
                ResponsePart::Trailers => &self.response_trailers,
            };
            for (k, v) in map {
                visit(k, v);
            }
        }
        fn set_response_lines(
            &mut self,
            part: ResponsePart,
            name: &str,
            values: &[&str],
        ) -> Result<(), HostError> {
            self.refuses(Write::ResponseHeader)?;
            let map = match part {
                ResponsePart::Headers => &mut self.response_headers,
                ResponsePart::Trailers => &mut self.response_trailers,
            };
            // One value per name here: lines that stay are kept joined, as
            // a client reading the field whole sees them.
            let joined = values.join(", ");
            write_header(map, name, (!values.is_empty()).then_some(joined.as_str()));
            Ok(())
        }
        fn set_response_header(
            &mut self,
            name: &str,
            value: Option<&str>,
        ) -> Result<(), HostError> {
            self.refuses(Write::ResponseHeader)?;
            write_header(&mut self.response_headers, name, value);
            Ok(())
        }
        fn response_body(&self, size: usize) -> Option<Vec<u8>> {
            self.response_chunk.get(..size).map(<[u8]>::to_vec)
        }
        fn set_response_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError> {
            self.refuses(Write::ResponseBody)?;
            let rest = self
                .response_chunk
                .split_off(size.min(self.response_chunk.len()));
            self.response_chunk = body.to_vec();
            self.response_chunk.extend(rest);
            Ok(())
        }
        fn send_reply(&mut self, reply: &LocalReply) -> Result<(), HostError> {
            self.refuses(Write::Reply)?;
            self.replies.push(reply.clone());
            Ok(())
        }
        fn reset_stream(&mut self) {
            self.resets += 1;
        }
        fn dispatch_callout(&mut self, callout: &Callout<'_>) -> Result<u32, HostError> {
            self.refuses(Write::Callout)?;
            let id = 100 + self.callouts.len() as u32;
            self.callouts.push(root::fake::SentCallout::of(id, callout));
            Ok(id)
        }
        fn resume_request(&mut self) -> Result<(), HostError> {
            self.refuses(Write::Resume)?;
            self.resumed += 1;
            Ok(())
        }
        fn policy_in_force(&self) -> InForce {
            match (&self.policy_in_force, self.policy_elsewhere) {
                (Some(p), _) => InForce::Newer(p.clone()),
                (None, true) => InForce::Elsewhere,
                (None, false) => InForce::Own,
            }
        }
        fn log_refusal(&mut self, line: &str) {
            if let Some(line) = self.refusal_log.admit(self.now_ms, line) {
                self.log(LogLevel::Info, &line);
            }
        }
        fn log(&self, level: LogLevel, msg: &str) {
            self.logs.borrow_mut().push((level, msg.to_owned()));
        }
    }
}
