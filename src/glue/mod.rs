//! proxy-wasm adapters: a few lines per callback, no policy logic.
//!
//! The SDK's hostcall wrappers panic on statuses they do not expect (for
//! example reading request headers from a body callback answers BadArgument),
//! and a panic kills the VM. The core therefore reads headers only in the
//! headers callback, and every hostcall result is handled, never unwrapped.

use crate::audit::{AuditRoot, EventFacts, Handover};
use crate::filter::RequestFilter;
use crate::host::{
    Callout, Counter, Flow, Gauge, Host, HostError, InForce, LogLevel, RefusalLogGate,
    ResponsePart, RootHost,
};
use crate::in_force::PolicyRegistry;
use crate::policy::{compile_str, CompiledPolicy};
use crate::reply::LocalReply;
use crate::store::{SharedStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{
    Action, BufferType, ContextType, LogLevel as WasmLogLevel, MapType, MetricType,
};
use std::cell::RefCell;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::time::Duration;

thread_local! {
    /// Envoy metric ids, indexed like `Counter::ALL`; defined once per VM.
    static METRICS: RefCell<Vec<Option<u32>>> = const { RefCell::new(Vec::new()) };
    static BUFFERED_GAUGE: RefCell<Option<u32>> = const { RefCell::new(None) };
    /// Counters named at run time (DLP findings by kind, refusals by rate
    /// limit), by full metric name, defined on first use. Bounded: the names
    /// are built-in detector names and policy ids, never caller text.
    static NAMED_METRICS: RefCell<std::collections::BTreeMap<String, Option<u32>>> =
        const { RefCell::new(std::collections::BTreeMap::new()) };
    /// The newest policy each filter of this VM was configured with, by the
    /// filter's plugin name and root id. A hot reload (ECDS) starts a new root
    /// context in the same VM while the old one lives on for the streams it
    /// created; those streams decide with the entry here (`policy_in_force`).
    /// Bounded by the number of filters configured in this VM.
    static POLICY_IN_FORCE: RefCell<PolicyRegistry> = RefCell::new(PolicyRegistry::default());
    /// Serial numbers of this VM's root contexts (see `PolicyRegistry`).
    static ROOT_SERIAL: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static REFUSAL_LOG: RefCell<RefusalLogGate> = RefCell::new(RefusalLogGate::default());
}

/// Which filter a root context configures: the same name and root id across
/// reloads of one filter (Envoy's `config.name`, Istio's WasmPlugin name).
fn filter_key() -> String {
    let read = |name: &str| {
        hostcalls::get_property(vec![name])
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    format!("{}\u{0}{}", read("plugin_name"), read("plugin_root_id"))
}

/// Where a stream came from: its filter, its root context and that root's
/// policy, when.
#[derive(Clone, Default)]
struct StreamOrigin {
    /// `None` only for a stream of a root that never configured.
    root: Option<Rc<RootMark>>,
    created_ms: u64,
}

/// What a root context is to the registry, fixed when it is configured and
/// shared by its streams (no per-request hashing or copying).
struct RootMark {
    /// See `filter_key`.
    key: String,
    /// This root's serial number in the VM (see `PolicyRegistry`).
    serial: u64,
    /// Its policy's `sha256`.
    sha: String,
    /// The shared-data key of the filter's generation record (see `in_force`).
    generation_key: String,
}

fn define_metrics() {
    METRICS.with(|m| {
        let mut m = m.borrow_mut();
        if m.is_empty() {
            *m = Counter::ALL
                .iter()
                .map(|c| hostcalls::define_metric(MetricType::Counter, c.name()).ok())
                .collect();
        }
    });
    BUFFERED_GAUGE.with(|g| {
        let mut g = g.borrow_mut();
        if g.is_none() {
            *g = hostcalls::define_metric(MetricType::Gauge, Gauge::AuditBuffered.name()).ok();
        }
    });
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(WasmLogLevel::Info);
    // A panic aborts the VM (panic = "abort"); say why before it happens, at
    // critical, so the operator sees it next to Envoy's failure_policy action.
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(WasmLogLevel::Critical, &format!("mcp-firewall: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(FirewallRoot { policy: None, audit: None, mark: None })
    });
}}

/// The root context's audit delivery, reached by the VM's HTTP contexts too
/// (same thread, so no queue is needed between them).
type SharedAudit = Rc<RefCell<AuditRoot>>;

thread_local! {
    /// What root contexts of this VM that went away still held (a policy
    /// swap: Envoy keeps the VM, makes a root context for the new policy and
    /// ends the old one), waiting for a root context with audit on to adopt
    /// it. One VM runs on one thread, so a thread-local is VM-wide.
    static HANDOVERS: RefCell<Vec<Handover>> = const { RefCell::new(Vec::new()) };
}

/// Retire `audit` and queue what it held for the next root that adopts.
fn retire(audit: &SharedAudit) {
    let handover = audit.borrow_mut().retire(&mut WasmRootHost);
    if !handover.is_empty() {
        HANDOVERS.with(|q| q.borrow_mut().push(handover));
    }
}

/// Adopt whatever retired roots of this VM left, if anything.
fn adopt_handovers(audit: &SharedAudit) {
    let waiting = HANDOVERS.with(|q| std::mem::take(&mut *q.borrow_mut()));
    for handover in waiting {
        audit.borrow_mut().adopt(&mut WasmRootHost, handover);
    }
}

struct FirewallRoot {
    policy: Option<Rc<CompiledPolicy>>,
    audit: Option<SharedAudit>,
    /// Set by a successful configuration.
    mark: Option<Rc<RootMark>>,
}

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Entropy for the boot id: std's RandomState is seeded from WASI random_get.
fn entropy() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(now_ms())
}

impl Context for FirewallRoot {
    /// The root context ends (its policy was replaced, or the filter
    /// removed): its buffered audit events go to the root that replaces it,
    /// not down with it. Done at once: waiting here for the collector would
    /// hold a replaced policy's context for up to `timeout_ms`, and the
    /// events are not lost meanwhile.
    fn on_done(&mut self) -> bool {
        if let Some(audit) = self.audit.take() {
            retire(&audit);
        }
        if let Some(m) = &self.mark {
            POLICY_IN_FORCE.with(|r| r.borrow_mut().retired(&m.key, m.serial));
        }
        true
    }

    fn on_http_call_response(
        &mut self,
        call_id: u32,
        _headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        if let Some(audit) = &self.audit {
            audit
                .borrow_mut()
                .on_callout_answer(&mut WasmRootHost, call_id);
        }
    }
}

impl RootContext for FirewallRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        define_metrics();
        if cfg!(any(feature = "bench-noop", feature = "bench-flow")) {
            // Loud on purpose: this build forwards every request unchecked.
            let _ = hostcalls::log(
                WasmLogLevel::Critical,
                "mcp-firewall: built with feature bench-noop or bench-flow: every request passes UNCHECKED (benchmark floor only, never deploy)",
            );
        }
        let Some(text) = self.get_plugin_configuration() else {
            log(
                LogLevel::Error,
                "mcp-firewall: invalid policy: $: the plugin configuration is empty",
            );
            return false;
        };
        let policy = match compile_str(&text) {
            Ok(p) => p,
            Err(errors) => {
                // Returning false makes Envoy refuse the configuration (and
                // `envoy --mode validate` fail); each error names its JSON path.
                for e in &errors {
                    log(
                        LogLevel::Error,
                        &format!("mcp-firewall: invalid policy: {e}"),
                    );
                }
                return false;
            }
        };
        log(
            LogLevel::Info,
            &format!(
                "mcp-firewall: policy loaded: {} rules, mode {:?}, sha256 {}",
                policy.rules.len(),
                policy.mode,
                policy.sha256
            ),
        );
        // A host that configures the same root context again: the previous
        // policy's buffer is handed over like a replaced root's.
        if let Some(old) = self.audit.take() {
            retire(&old);
        }
        self.audit = policy
            .audit
            .clone()
            .map(|cfg| Rc::new(RefCell::new(AuditRoot::configure(cfg, &mut WasmRootHost))));
        if let Some(audit) = &self.audit {
            adopt_handovers(audit);
        }
        let policy = Rc::new(policy);
        let key = filter_key();
        let digest = crate::json::sha256_hex(key.as_bytes());
        let mark = Rc::new(RootMark {
            generation_key: crate::in_force::generation_key(digest.get(..16).unwrap_or(&digest)),
            serial: ROOT_SERIAL.with(|c| {
                c.set(c.get() + 1);
                c.get()
            }),
            sha: policy.sha256.clone(),
            key,
        });
        let now = now_ms();
        POLICY_IN_FORCE.with(|r| {
            r.borrow_mut()
                .configured(&mark.key, mark.serial, policy.clone(), now)
        });
        // For the VMs of an older module with this vm_id: losing this write
        // only loses the refusal of their held requests, as before it.
        let record = crate::in_force::generation_record(now, &policy.sha256);
        let _ = shared_set(&mark.generation_key, record.as_bytes(), None);
        self.mark = Some(mark);
        self.policy = Some(policy);
        true
    }

    fn on_tick(&mut self) {
        if let Some(audit) = &self.audit {
            adopt_handovers(audit);
            audit.borrow_mut().on_tick(&mut WasmRootHost);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        if cfg!(feature = "bench-noop") {
            return Some(Box::new(NoopHttp));
        }
        if cfg!(feature = "bench-flow") {
            return Some(Box::new(FlowHttp));
        }
        let now = now_ms();
        let second_filter = self.mark.as_ref().is_some_and(|m| {
            POLICY_IN_FORCE.with(|r| r.borrow_mut().stream_created(&m.key, m.serial, now))
        });
        if second_filter {
            log(
                LogLevel::Error,
                "mcp-firewall: two firewall filters of this Envoy share one plugin name and root_id \
                 (a filter configured before any traffic serves while another of its name is in \
                 force): give each its own `name` (mcp-firewall envoy-config --name); until then \
                 a request held across a hot reload is decided under the policy it started with",
            );
        }
        Some(Box::new(FirewallHttp {
            filter: self.policy.clone().map(RequestFilter::new),
            audit: self.audit.clone(),
            origin: StreamOrigin {
                root: self.mark.clone(),
                created_ms: now,
            },
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct FirewallHttp {
    /// `None` only if Envoy created a stream without a loaded policy: fail closed.
    filter: Option<RequestFilter>,
    audit: Option<SharedAudit>,
    origin: StreamOrigin,
}

impl Context for FirewallHttp {
    /// The approval service answered (or Envoy gave up on it: no `:status`,
    /// or its own 504). Read here, decided by the filter.
    fn on_http_call_response(
        &mut self,
        call_id: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse::<u16>().ok());
        let body = match body_size {
            0 => None,
            n => hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, n)
                .ok()
                .flatten(),
        };
        let mut host = self.host();
        if let Some(f) = self.filter.as_mut() {
            f.on_approval_answer(&mut host, call_id, status, body.as_deref());
        }
    }
}

/// The `bench-noop` build's HTTP context: every callback is the SDK's default
/// (continue), so Envoy still creates a context and calls into the VM for each
/// event of the stream, and the firewall decides nothing.
struct NoopHttp;

impl Context for NoopHttp {}
impl HttpContext for NoopHttp {}

/// The `bench-flow` build's HTTP context: the hostcalls and the holding the
/// firewall does on an allowed call, with nothing parsed or decided.
struct FlowHttp;

impl Context for FlowHttp {}
impl HttpContext for FlowHttp {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let _ = header_map(MapType::HttpRequestHeaders);
        let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "authorization");
        match end_of_stream {
            true => Action::Continue,
            false => Action::Pause,
        }
    }
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let _ = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size);
        let _ = hostcalls::increment_metric(0, 1);
        Action::Continue
    }
    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let _ = header_map(MapType::HttpResponseHeaders);
        let _ = hostcalls::remove_map_value(MapType::HttpResponseHeaders, "content-length");
        match end_of_stream {
            true => Action::Continue,
            false => Action::Pause,
        }
    }
    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let _ = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size);
        Action::Continue
    }
}

impl FirewallHttp {
    /// The host for a callback that reads no header map up front.
    fn host(&self) -> WasmHost {
        WasmHost {
            audit: self.audit.clone(),
            origin: self.origin.clone(),
            ..WasmHost::default()
        }
    }
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl HttpContext for FirewallHttp {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        // One hostcall for all request headers instead of one per lookup: the
        // filter reads about ten of them on every request.
        let mut host = WasmHost {
            audit: self.audit.clone(),
            origin: self.origin.clone(),
            request_headers: header_map(MapType::HttpRequestHeaders),
            response_headers: None,
        };
        match self.filter.as_mut() {
            Some(f) => action(f.on_request_headers(&mut host, end_of_stream)),
            None => {
                let body = crate::reply::error_object(
                    None,
                    crate::reply::DENIED,
                    "mcp-firewall has no policy loaded",
                    None,
                );
                if host
                    .send_reply(&LocalReply::json(503, &body, None))
                    .is_err()
                {
                    host.reset_stream();
                }
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let mut host = self.host();
        match self.filter.as_mut() {
            Some(f) => action(f.on_request_body(&mut host, body_size, end_of_stream)),
            None => Action::Pause,
        }
    }

    fn on_http_request_trailers(&mut self, _n: usize) -> Action {
        let mut host = self.host();
        match self.filter.as_mut() {
            Some(f) => action(f.on_request_trailers(&mut host)),
            None => Action::Pause,
        }
    }

    fn on_http_response_trailers(&mut self, _n: usize) -> Action {
        let mut host = self.host();
        match self.filter.as_mut() {
            Some(f) => action(f.on_response_trailers(&mut host)),
            None => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        // As for the request: one hostcall for the whole map. Each hostcall that
        // returns bytes also calls back into the VM to allocate them, and the
        // filter reads three to four response headers.
        let mut host = WasmHost {
            audit: self.audit.clone(),
            origin: self.origin.clone(),
            request_headers: None,
            response_headers: header_map(MapType::HttpResponseHeaders),
        };
        match self.filter.as_mut() {
            Some(f) => action(f.on_response_headers(&mut host, end_of_stream)),
            None => Action::Continue,
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let mut host = self.host();
        match self.filter.as_mut() {
            Some(f) => action(f.on_response_body(&mut host, body_size, end_of_stream)),
            None => Action::Continue,
        }
    }

    fn on_log(&mut self) {
        let mut host = self.host();
        if let Some(f) = self.filter.as_mut() {
            f.on_done(&mut host);
        }
    }
}

/// All headers of `map`. The SDK's `get_map` unwraps `String::from_utf8` on
/// every value, and Envoy lets any byte but NUL, CR and LF through in a value
/// (`x-note: caf\xe9` from a client or a server), so one such header anywhere
/// would panic and kill the VM. A value that is not UTF-8 is kept with U+FFFD
/// in place of its bad bytes: it is present (a copy a server could read) and
/// matches nothing the filter accepts (no media type, no key, no name).
/// Names are HTTP tokens, ASCII by the codecs.
fn header_map(map: MapType) -> Option<Vec<(String, String)>> {
    let pairs = hostcalls::get_map_bytes(map).ok()?;
    Some(
        pairs
            .into_iter()
            .map(|(k, v)| (k, utf8_or_replaced(v)))
            .collect(),
    )
}

/// One header from the map fetched for this callback. A field sent on several
/// lines is read as their combination, joined with ", " (RFC 9110 §5.3):
/// Envoy's own `get_map_value` hands over only the first line, while a server
/// may read the last or all of them, so a disagreeing copy must be visible to
/// every check (it then matches no media type, key or name, and is refused).
/// Envoy hands header names over lower-cased; callers ask in lower case.
fn header(cached: Option<&[(String, String)]>, map: MapType, name: &str) -> Option<String> {
    match cached {
        Some(all) => {
            let mut lines = all.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
            let first = lines.next()?.clone();
            Some(lines.fold(first, |mut joined, v| {
                joined.push_str(", ");
                joined.push_str(v);
                joined
            }))
        }
        // Only reached outside the headers callbacks, where every map is fetched.
        None => hostcalls::get_map_value_bytes(map, name)
            .ok()
            .flatten()
            .map(utf8_or_replaced),
    }
}

/// The value as it came when it is UTF-8 (no copy), else with U+FFFD in
/// place of the bad bytes.
fn utf8_or_replaced(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Set or remove a header in Envoy, keeping the fetched map (if any) in step.
fn set_header(
    cached: &mut Option<Vec<(String, String)>>,
    map: MapType,
    name: &str,
    value: Option<&str>,
) -> Result<(), HostError> {
    hostcalls::set_map_value(map, name, value).map_err(host_error)?;
    if let Some(all) = cached.as_mut() {
        all.retain(|(k, _)| k != name);
        if let Some(v) = value {
            all.push((name.to_owned(), v.to_owned()));
        }
    }
    Ok(())
}

fn log(level: LogLevel, msg: &str) {
    let level = match level {
        LogLevel::Debug => WasmLogLevel::Debug,
        LogLevel::Info => WasmLogLevel::Info,
        LogLevel::Warn => WasmLogLevel::Warn,
        LogLevel::Error => WasmLogLevel::Error,
    };
    let _ = hostcalls::log(level, msg);
}

/// Hostcalls of the current context (the host tracks which one is current).
#[derive(Default)]
struct WasmHost {
    audit: Option<SharedAudit>,
    /// The stream's filter and root (see `PolicyRegistry`).
    origin: StreamOrigin,
    /// All request headers, fetched once in the request-headers callback.
    request_headers: Option<Vec<(String, String)>>,
    /// All response headers, fetched once in the response-headers callback.
    response_headers: Option<Vec<(String, String)>>,
}

fn shared_get(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
    hostcalls::get_shared_data(key).map_err(|s| StoreError::Host(format!("{s:?}")))
}

fn shared_set(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
    match hostcalls::set_shared_data(key, Some(value), cas) {
        Ok(()) => Ok(()),
        Err(proxy_wasm::types::Status::CasMismatch) => Err(StoreError::CasMismatch),
        Err(s) => Err(StoreError::Host(format!("{s:?}"))),
    }
}

fn host_error(status: proxy_wasm::types::Status) -> HostError {
    HostError(format!("{status:?}"))
}

/// Add `by` to `counter` in Envoy.
fn increment(counter: Counter, by: u64) -> Result<(), HostError> {
    let id = Counter::ALL
        .iter()
        .position(|c| *c == counter)
        .and_then(|pos| METRICS.with(|m| m.borrow().get(pos).copied().flatten()))
        .ok_or_else(|| HostError(format!("{} not defined", counter.name())))?;
    hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX)).map_err(host_error)
}

impl SharedStore for WasmHost {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        shared_get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        shared_set(key, value, cas)
    }
}

/// Hostcalls of the root side. A unit: proxy-wasm hostcalls act on the
/// context the host is calling, so HTTP contexts use it for the audit events
/// they record too (a tick period set from there is their root's).
struct WasmRootHost;

impl SharedStore for WasmRootHost {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        shared_get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        shared_set(key, value, cas)
    }
}

impl RootHost for WasmRootHost {
    fn now_ms(&self) -> u64 {
        now_ms()
    }
    fn entropy(&self) -> u64 {
        entropy()
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }
    fn log(&self, level: LogLevel, msg: &str) {
        log(level, msg);
    }
    fn set_tick_period(&mut self, period: Duration) -> Result<(), HostError> {
        hostcalls::set_tick_period(period).map_err(host_error)
    }
    fn dispatch(&mut self, callout: &Callout<'_>) -> Result<u32, HostError> {
        hostcalls::dispatch_http_call(
            callout.cluster,
            callout.headers.clone(),
            Some(callout.body),
            vec![],
            callout.timeout,
        )
        .map_err(host_error)
    }
    fn callout_header(&self, name: &str) -> Option<String> {
        // Not the SDK's `get_http_call_response_header`: it unwraps, and a
        // value that is not UTF-8 would panic the VM.
        hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }
    fn count(&mut self, counter: Counter, by: u64) -> Result<(), HostError> {
        increment(counter, by)
    }
    fn add_to_gauge(&mut self, gauge: Gauge, delta: i64) -> Result<(), HostError> {
        let id = match gauge {
            Gauge::AuditBuffered => BUFFERED_GAUGE.with(|g| *g.borrow()),
        }
        .ok_or_else(|| HostError(format!("{} not defined", gauge.name())))?;
        hostcalls::increment_metric(id, delta).map_err(host_error)
    }
}

impl Host for WasmHost {
    fn policy_in_force(&self) -> InForce {
        let Some(m) = self.origin.root.as_deref() else {
            return InForce::Own;
        };
        let record = shared_get(&m.generation_key)
            .ok()
            .and_then(|(v, _)| v)
            .and_then(|v| String::from_utf8(v).ok());
        POLICY_IN_FORCE.with(|r| {
            r.borrow().decide(
                &m.key,
                m.serial,
                &m.sha,
                self.origin.created_ms,
                now_ms(),
                record.as_deref(),
            )
        })
    }
    fn log_refusal(&mut self, line: &str) {
        let now = now_ms();
        if let Some(line) = REFUSAL_LOG.with(|g| g.borrow_mut().admit(now, line)) {
            log(LogLevel::Info, &line);
        }
    }

    fn audit(&mut self, facts: EventFacts) {
        if let Some(audit) = &self.audit {
            audit.borrow_mut().record(&mut WasmRootHost, facts);
            // An exchange that outlived its root context (a policy swap while
            // it was in flight): its event follows the rest to the new root.
            if audit.borrow().is_retired() {
                retire(audit);
            }
        }
    }
    fn audit_refuses(&self) -> bool {
        self.audit
            .as_ref()
            .is_some_and(|a| a.borrow().refuses_traffic())
    }
    fn now_ms(&self) -> u64 {
        now_ms()
    }
    fn count(&mut self, counter: Counter, by: u64) {
        if by == 0 {
            return;
        }
        // `Host` writes are infallible for now; a stat the host refuses is lost.
        let _ = increment(counter, by);
    }
    fn count_finding(&mut self, kind: &str) {
        count_named("mcp_firewall.dlp.findings", kind);
    }
    fn count_limited(&mut self, rule: &str) {
        count_named("mcp_firewall.rate_limited", rule);
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError> {
        set_header(
            &mut self.request_headers,
            MapType::HttpRequestHeaders,
            name,
            value,
        )
    }
    fn set_held_request_header(
        &mut self,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), HostError> {
        // The same hostcall: Envoy answers BadArgument once the headers went on.
        set_header(
            &mut self.request_headers,
            MapType::HttpRequestHeaders,
            name,
            value,
        )
    }
    fn set_request_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError> {
        hostcalls::set_buffer(BufferType::HttpRequestBody, 0, size, body).map_err(host_error)
    }
    fn request_header(&self, name: &str) -> Option<String> {
        header(
            self.request_headers.as_deref(),
            MapType::HttpRequestHeaders,
            name,
        )
    }
    fn request_headers_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        // Envoy hands header names over in lower case (HTTP/2 requires it,
        // and its HTTP/1 codec lower-cases them).
        self.request_headers.as_deref().map_or(Vec::new(), |all| {
            all.iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .cloned()
                .collect()
        })
    }
    fn request_header_lines(&self, name: &str) -> usize {
        self.request_headers
            .as_deref()
            .map_or(0, |all| all.iter().filter(|(k, _)| k == name).count())
    }
    fn repeated_request_header(&self, among: &[&str]) -> Option<String> {
        // One pass over the headers instead of one per name.
        let all = self.request_headers.as_deref()?;
        let mut seen: Vec<&str> = Vec::new();
        for (k, _) in all {
            if among.contains(&k.as_str()) {
                if seen.contains(&k.as_str()) {
                    return Some(k.clone());
                }
                seen.push(k);
            }
        }
        None
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
            .ok()
            .flatten()
    }
    fn response_header(&self, name: &str) -> Option<String> {
        header(
            self.response_headers.as_deref(),
            MapType::HttpResponseHeaders,
            name,
        )
    }
    fn for_each_response_line(&self, part: ResponsePart, visit: &mut dyn FnMut(&str, &str)) {
        // The headers fetched for this callback; otherwise fetched now.
        let fetched;
        let all = match (part, self.response_headers.as_deref()) {
            (ResponsePart::Headers, Some(all)) => all,
            (ResponsePart::Headers, None) => {
                fetched = header_map(MapType::HttpResponseHeaders).unwrap_or_default();
                &fetched
            }
            (ResponsePart::Trailers, _) => {
                fetched = header_map(MapType::HttpResponseTrailers).unwrap_or_default();
                &fetched
            }
        };
        for (k, v) in all {
            visit(k, v);
        }
    }
    fn set_response_lines(
        &mut self,
        part: ResponsePart,
        name: &str,
        values: &[&str],
    ) -> Result<(), HostError> {
        let map = match part {
            ResponsePart::Headers => MapType::HttpResponseHeaders,
            ResponsePart::Trailers => MapType::HttpResponseTrailers,
        };
        hostcalls::set_map_value(map, name, None).map_err(host_error)?;
        for v in values {
            hostcalls::add_map_value(map, name, v).map_err(host_error)?;
        }
        if let (ResponsePart::Headers, Some(all)) = (part, self.response_headers.as_mut()) {
            all.retain(|(k, _)| k != name);
            all.extend(values.iter().map(|v| (name.to_owned(), (*v).to_owned())));
        }
        Ok(())
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError> {
        set_header(
            &mut self.response_headers,
            MapType::HttpResponseHeaders,
            name,
            value,
        )
    }
    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size)
            .ok()
            .flatten()
    }
    fn set_response_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError> {
        hostcalls::set_buffer(BufferType::HttpResponseBody, 0, size, body).map_err(host_error)
    }
    fn reset_stream(&mut self) {
        // Either call ends the whole HTTP stream in Envoy; one may be refused
        // in the phase we are in, so both are tried.
        if hostcalls::reset_http_response().is_err() {
            let _ = hostcalls::reset_http_request();
        }
    }
    fn dispatch_callout(&mut self, callout: &Callout<'_>) -> Result<u32, HostError> {
        // From the HTTP context: Envoy hands the answer to this stream.
        hostcalls::dispatch_http_call(
            callout.cluster,
            callout.headers.clone(),
            Some(callout.body),
            vec![],
            callout.timeout,
        )
        .map_err(host_error)
    }
    fn resume_request(&mut self) -> Result<(), HostError> {
        hostcalls::resume_http_request().map_err(host_error)
    }
    fn send_reply(&mut self, reply: &LocalReply) -> Result<(), HostError> {
        let headers = reply.headers();
        let body = (!reply.body.is_empty()).then_some(reply.body.as_slice());
        hostcalls::send_http_response(reply.status, headers, body).map_err(host_error)
    }
    fn log(&self, level: LogLevel, msg: &str) {
        log(level, msg);
    }
}

/// Increment counter `<family>.<name>`, defining it on first use; `name` is
/// reduced to the characters stat names keep.
fn count_named(family: &str, name: &str) {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let metric = format!("{family}.{safe}");
    let id = NAMED_METRICS.with(|m| {
        *m.borrow_mut()
            .entry(metric.clone())
            .or_insert_with(|| hostcalls::define_metric(MetricType::Counter, &metric).ok())
    });
    if let Some(id) = id {
        // A stat the host refuses is lost; counters are informational.
        let _ = hostcalls::increment_metric(id, 1);
    }
}
