//! proxy-wasm adapters: a few lines per callback, no policy logic.
//!
//! The SDK's hostcall wrappers panic on statuses they do not expect (for
//! example reading request headers from a body callback answers BadArgument),
//! and a panic kills the VM. The core therefore reads headers only in the
//! headers callback, and every hostcall result is handled, never unwrapped.

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
use std::rc::Rc;

thread_local! {
    /// Envoy metric ids, indexed like `Counter::ALL`; defined once per VM.
    static METRICS: RefCell<Vec<Option<u32>>> = const { RefCell::new(Vec::new()) };
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
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(WasmLogLevel::Info);
    // A panic aborts the VM (panic = "abort"); say why before it happens, at
    // critical, so the operator sees it next to Envoy's failure_policy action.
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(WasmLogLevel::Critical, &format!("mcp-firewall: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FirewallRoot { policy: None }) });
}}

struct FirewallRoot {
    policy: Option<Rc<CompiledPolicy>>,
}

impl Context for FirewallRoot {}

impl RootContext for FirewallRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        define_metrics();
        let Some(text) = self.get_plugin_configuration() else {
            log(
                LogLevel::Error,
                "mcp-firewall: invalid policy: $: the plugin configuration is empty",
            );
            return false;
        };
        match compile_str(&text) {
            Ok(policy) => {
                log(
                    LogLevel::Info,
                    &format!(
                        "mcp-firewall: policy loaded: {} rules, mode {:?}, sha256 {}",
                        policy.rules.len(),
                        policy.mode,
                        policy.sha256
                    ),
                );
                self.policy = Some(Rc::new(policy));
                true
            }
            Err(errors) => {
                // Returning false makes Envoy refuse the configuration (and
                // `envoy --mode validate` fail); each error names its JSON path.
                for e in &errors {
                    log(
                        LogLevel::Error,
                        &format!("mcp-firewall: invalid policy: {e}"),
                    );
                }
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FirewallHttp {
            filter: self.policy.clone().map(RequestFilter::new),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct FirewallHttp {
    /// `None` only if Envoy created a stream without a loaded policy: fail closed.
    filter: Option<RequestFilter>,
}

impl Context for FirewallHttp {}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl HttpContext for FirewallHttp {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let mut host = WasmHost;
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
        match self.filter.as_mut() {
            Some(f) => action(f.on_request_body(&mut WasmHost, body_size, end_of_stream)),
            None => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        match self.filter.as_mut() {
            Some(f) => action(f.on_response_headers(&mut WasmHost)),
            None => Action::Continue,
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.filter.as_mut() {
            Some(f) => action(f.on_response_body(&mut WasmHost, body_size, end_of_stream)),
            None => Action::Continue,
        }
    }
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

/// Hostcalls of the current HTTP context (the host tracks which one is current).
struct WasmHost;

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
    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
    fn request_header(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
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
        hostcalls::get_map_value(MapType::HttpResponseHeaders, name)
            .ok()
            .flatten()
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value);
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
