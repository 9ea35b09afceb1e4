//! proxy-wasm adapters: a few lines per callback, no policy logic.
//!
//! The SDK's hostcall wrappers panic on statuses they do not expect (for
//! example reading request headers from a body callback answers BadArgument),
//! and a panic kills the VM. The core therefore reads headers only in the
//! headers callback, and every hostcall result is handled, never unwrapped.

use crate::audit::{AuditSink, EventFacts, Recorded};
use crate::filter::RequestFilter;
use crate::host::{Counter, Flow, Host, LogLevel};
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
    /// DLP finding counters by kind, defined on first use. Bounded: kinds are
    /// built-in detector names and policy ids, never scanned text.
    static FINDING_METRICS: RefCell<std::collections::BTreeMap<String, Option<u32>>> =
        const { RefCell::new(std::collections::BTreeMap::new()) };
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
            *g = hostcalls::define_metric(MetricType::Gauge, "mcp_firewall.audit.buffered").ok();
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
        Box::new(FirewallRoot { policy: None, sink: None, exported: [0; 4], buffered_reported: 0 })
    });
}}

type SharedSink = Rc<RefCell<AuditSink>>;

struct FirewallRoot {
    policy: Option<Rc<CompiledPolicy>>,
    sink: Option<SharedSink>,
    /// Audit counters already exported to Envoy: sent, retried, dropped, append failures.
    exported: [u64; 4],
    /// This VM's share of the `audit.buffered` gauge.
    buffered_reported: u64,
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
    fn on_http_call_response(
        &mut self,
        call_id: u32,
        _headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        let Some(sink) = &self.sink else { return };
        // A failed or timed-out callout has no :status (or Envoy's 504): both retry.
        let status = self
            .get_http_call_response_header(":status")
            .and_then(|s| s.parse::<u16>().ok());
        {
            let mut sink = sink.borrow_mut();
            if let Some(token) = sink.token_for(call_id) {
                sink.answered(Some(call_id), token, status, now_ms());
            }
        }
        // Chain the next batch now rather than waiting for the tick: under load
        // one batch per tick would cap delivery at max_batch per flush_ms.
        let sink = sink.clone();
        flush_audit(&sink);
    }
}

impl RootContext for FirewallRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        define_metrics();
        if cfg!(feature = "bench-noop") {
            // Loud on purpose: this build forwards every request unchecked.
            let _ = hostcalls::log(
                WasmLogLevel::Critical,
                "mcp-firewall: built with feature bench-noop: every request passes UNCHECKED (benchmark floor only, never deploy)",
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
        self.sink = policy.audit.clone().map(|cfg| {
            let node = hostcalls::get_property(vec!["node", "id"])
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "envoy".to_owned());
            let flush = cfg.flush_ms;
            let mut sink = AuditSink::new(cfg, &node);
            if let Err(e) = sink.start(&WasmHost::default(), now_ms(), entropy()) {
                log(
                    LogLevel::Warn,
                    &format!("mcp-firewall: audit chain not started yet: {e}"),
                );
            }
            // The tick drives batching (callouts must leave from the root context).
            let _ = hostcalls::set_tick_period(tick_period(flush));
            Rc::new(RefCell::new(sink))
        });
        self.policy = Some(Rc::new(policy));
        true
    }

    fn on_tick(&mut self) {
        let Some(sink) = self.sink.clone() else {
            return;
        };
        flush_audit(&sink);
        let mut s = sink.borrow_mut();
        if s.prompt_tick_fired() {
            let _ = hostcalls::set_tick_period(tick_period(s.cfg.flush_ms));
        }
        if let Some(report) = s.delivery().take_drop_report() {
            let ranges: Vec<String> = report
                .ranges
                .iter()
                .map(|r| format!("{}-{}", r.first, r.last))
                .collect();
            log(
                LogLevel::Warn,
                &format!(
                    "mcp-firewall: {} audit events dropped (seq {}{})",
                    report.count,
                    ranges.join(", "),
                    if report.exact { "" } else { ", approximate" }
                ),
            );
        }
        let c = s.delivery().counters();
        let now = [c.sent, c.retried, c.dropped, s.append_failures];
        let mut host = WasmHost::default();
        for (i, counter) in [
            Counter::AuditSent,
            Counter::AuditRetried,
            Counter::AuditDropped,
            Counter::AuditAppendFailed,
        ]
        .into_iter()
        .enumerate()
        {
            let before = self.exported.get(i).copied().unwrap_or(0);
            let value = now.get(i).copied().unwrap_or(0);
            host.count(counter, value.saturating_sub(before));
        }
        self.exported = now;
        // One gauge, several worker VMs: each adds the change of its own
        // buffer, so the gauge reads the sum (record_metric would show
        // whichever VM ticked last).
        let delta = i64::try_from(c.buffered).unwrap_or(i64::MAX)
            - i64::try_from(self.buffered_reported).unwrap_or(i64::MAX);
        if delta != 0 {
            BUFFERED_GAUGE.with(|g| {
                if let Some(id) = *g.borrow() {
                    let _ = hostcalls::increment_metric(id, delta);
                }
            });
            self.buffered_reported = c.buffered;
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        if cfg!(feature = "bench-noop") {
            return Some(Box::new(NoopHttp));
        }
        Some(Box::new(FirewallHttp {
            filter: self.policy.clone().map(RequestFilter::new),
            sink: self.sink.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The root context's regular tick: it sends partial batches after `flush_ms`.
fn tick_period(flush_ms: u64) -> Duration {
    Duration::from_millis(flush_ms.max(10))
}

/// A tick brought forward to send a full batch at once (see `wants_prompt_tick`).
const PROMPT_TICK: Duration = Duration::from_millis(1);

/// Send the due batch, if any (at most one in flight per VM).
fn flush_audit(sink: &SharedSink) {
    let mut s = sink.borrow_mut();
    let now = now_ms();
    let Some(batch) = s.due_batch(now) else {
        return;
    };
    let (cluster, path, authority, timeout) = (
        s.cfg.cluster.clone(),
        s.cfg.path.clone(),
        s.cfg.authority.clone(),
        s.cfg.timeout_ms,
    );
    let headers = vec![
        (":method", "POST"),
        (":path", path.as_str()),
        (":authority", authority.as_str()),
        ("content-type", "application/x-ndjson"),
    ];
    match hostcalls::dispatch_http_call(
        &cluster,
        headers,
        Some(batch.body.as_bytes()),
        vec![],
        Duration::from_millis(timeout),
    ) {
        Ok(call_id) => s.dispatched(call_id, batch.token),
        Err(status) => {
            log(
                LogLevel::Warn,
                &format!("mcp-firewall: audit callout to {cluster:?} not dispatched: {status:?}"),
            );
            s.answered(None, batch.token, None, now);
        }
    }
}

struct FirewallHttp {
    /// `None` only if Envoy created a stream without a loaded policy: fail closed.
    filter: Option<RequestFilter>,
    sink: Option<SharedSink>,
}

impl Context for FirewallHttp {}

/// The `bench-noop` build's HTTP context: every callback is the SDK's default
/// (continue), so Envoy still creates a context and calls into the VM for each
/// event of the stream, and the firewall decides nothing.
struct NoopHttp;

impl Context for NoopHttp {}
impl HttpContext for NoopHttp {}

impl FirewallHttp {
    /// The host for a callback that reads no header map up front.
    fn host(&self) -> WasmHost {
        WasmHost {
            sink: self.sink.clone(),
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
            sink: self.sink.clone(),
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
                host.send_reply(&LocalReply::json(503, &body, None));
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

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        // As for the request: one hostcall for the whole map. Each hostcall that
        // returns bytes also calls back into the VM to allocate them, and the
        // filter reads three to four response headers.
        let mut host = WasmHost {
            sink: self.sink.clone(),
            request_headers: None,
            response_headers: header_map(MapType::HttpResponseHeaders),
        };
        match self.filter.as_mut() {
            Some(f) => action(f.on_response_headers(&mut host)),
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
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
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
            .map(|v| String::from_utf8_lossy(&v).into_owned()),
    }
}

/// Set or remove a header in Envoy, keeping the fetched map (if any) in step.
fn set_header(
    cached: &mut Option<Vec<(String, String)>>,
    map: MapType,
    name: &str,
    value: Option<&str>,
) {
    if let Some(all) = cached.as_mut() {
        all.retain(|(k, _)| k != name);
        if let Some(v) = value {
            all.push((name.to_owned(), v.to_owned()));
        }
    }
    let _ = hostcalls::set_map_value(map, name, value);
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
    sink: Option<SharedSink>,
    /// All request headers, fetched once in the request-headers callback.
    request_headers: Option<Vec<(String, String)>>,
    /// All response headers, fetched once in the response-headers callback.
    response_headers: Option<Vec<(String, String)>>,
}

impl SharedStore for WasmHost {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        hostcalls::get_shared_data(key).map_err(|s| StoreError::Host(format!("{s:?}")))
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(proxy_wasm::types::Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(s) => Err(StoreError::Host(format!("{s:?}"))),
        }
    }
}

impl Host for WasmHost {
    fn audit(&mut self, facts: EventFacts) {
        let Some(sink) = self.sink.clone() else {
            return;
        };
        // The event's own timestamp is "now": one clock hostcall per event, not two.
        let now = facts.ts_ms;
        let recorded = sink.borrow_mut().record(&*self, facts, now, entropy);
        match recorded {
            // Batches leave from the root context only: Envoy delivers a
            // callout's answer to the context that dispatched it, and an HTTP
            // context may be gone by then. When a full batch waits with no
            // callout in flight, the root's tick is brought forward (the host
            // sets the tick of the calling context's root).
            // A dropped event (counted by Delivery, reported with its seq
            // range on the next tick) means a full buffer: exactly when a
            // batch should not wait for the regular tick once backoff is over.
            Recorded::Buffered | Recorded::Dropped => {
                if sink.borrow_mut().wants_prompt_tick(now) {
                    let _ = hostcalls::set_tick_period(PROMPT_TICK);
                }
            }
            Recorded::Failed(e) => log(
                LogLevel::Error,
                &format!("mcp-firewall: audit event not sealed: {e}"),
            ),
        }
    }
    fn audit_refuses(&self) -> bool {
        self.sink
            .as_ref()
            .is_some_and(|s| s.borrow().refuses_traffic())
    }
    fn now_ms(&self) -> u64 {
        now_ms()
    }
    fn count(&mut self, counter: Counter, by: u64) {
        if by == 0 {
            return;
        }
        let Some(pos) = Counter::ALL.iter().position(|c| *c == counter) else {
            return;
        };
        let id = METRICS.with(|m| m.borrow().get(pos).copied().flatten());
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }
    fn count_finding(&mut self, kind: &str) {
        let id = FINDING_METRICS.with(|m| {
            *m.borrow_mut().entry(kind.to_owned()).or_insert_with(|| {
                let safe: String = kind
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
                hostcalls::define_metric(
                    MetricType::Counter,
                    &format!("mcp_firewall.dlp.findings.{safe}"),
                )
                .ok()
            })
        });
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        set_header(
            &mut self.request_headers,
            MapType::HttpRequestHeaders,
            name,
            value,
        );
    }
    fn set_request_body(&mut self, size: usize, body: &[u8]) {
        let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, size, body);
    }
    fn request_header(&self, name: &str) -> Option<String> {
        header(
            self.request_headers.as_deref(),
            MapType::HttpRequestHeaders,
            name,
        )
    }
    fn request_header_lines(&self, name: &str) -> usize {
        self.request_headers
            .as_deref()
            .map_or(0, |all| all.iter().filter(|(k, _)| k == name).count())
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
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        set_header(
            &mut self.response_headers,
            MapType::HttpResponseHeaders,
            name,
            value,
        );
    }
    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size)
            .ok()
            .flatten()
    }
    fn set_response_body(&mut self, size: usize, body: &[u8]) {
        let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, size, body);
    }
    fn send_reply(&mut self, reply: &LocalReply) {
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if !reply.body.is_empty() {
            headers.push(("content-type", "application/json"));
        }
        if let Some(rule) = reply.rule.as_deref() {
            headers.push(("x-mcp-firewall-rule", rule));
        }
        let body = (!reply.body.is_empty()).then_some(reply.body.as_slice());
        let _ = hostcalls::send_http_response(reply.status, headers, body);
    }
    fn log(&self, level: LogLevel, msg: &str) {
        log(level, msg);
    }
}
