//! `mcp-firewall approvals serve`: the approval service. An HTTP API for the
//! filter (ask for an approval, wait for it, use it once) and a web page for
//! approvers (pending requests, approve / deny with a reason, history).
//! The contract is docs/approvals.md.
//!
//! Like the collector: hyper on a one-thread tokio runtime. State is in
//! SQLite or PostgreSQL (`store`), so it survives a restart and, on
//! PostgreSQL, is shared by several replicas; every transition is one
//! conditional UPDATE, so "used once" holds across replicas.

mod config;
mod page;
pub mod store;

use clap::{Args, Subcommand};
use config::{Config, Storage};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, HOST, LOCATION,
    ORIGIN, SET_COOKIE, WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use mcp_firewall::json::{sha256_hex, sha256_of};
use serde::Deserialize;
use serde_json::{json, Value};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io::{self, Write};
use std::path::PathBuf;
use std::pin::pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::{Approval, Binding, Consumed, Decided, NewApproval, Session, State, Store};
use tokio::sync::{Notify, Semaphore};

/// Largest request body (a create carries the call's arguments when the
/// policy lets approvers see them).
const MAX_BODY_BYTES: usize = 256 * 1024;
/// Longest long poll; the filter's callout timeout must be a little longer.
pub const MAX_WAIT_MS: u64 = 120_000;
/// A waiting long poll re-reads the database this often, to see decisions
/// made by another replica (decisions made here wake it at once).
const RECHECK: Duration = Duration::from_millis(250);
/// Expired requests are recorded (state and event) this often.
const SWEEP: Duration = Duration::from_secs(1);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_CONNECTIONS: usize = 1024;
/// A connection is closed after this long whatever it does (longer than the
/// longest long poll), so idle keep-alive clients cannot hold every slot.
const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(300);
/// Pending requests shown on the page, oldest first; history rows, newest first.
const PAGE_PENDING: i64 = 2000;
const PAGE_HISTORY: i64 = 100;
const MAX_REASON_CHARS: usize = 500;
const SESSION_COOKIE: &str = "mcpfw_session";
const LOGIN_COOKIE: &str = "mcpfw_login";

#[derive(Subcommand)]
pub enum ApprovalsCmd {
    /// Serve the approval API for the filter and the approvers' page.
    Serve(ServeArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// The service's JSON config (docs/approvals.md).
    #[arg(long)]
    config: PathBuf,
    /// Address to listen on, instead of the config's; port 0 picks a free
    /// port (printed at start).
    #[arg(long)]
    listen: Option<String>,
}

pub fn run(cmd: ApprovalsCmd) -> ExitCode {
    match cmd {
        ApprovalsCmd::Serve(args) => serve_cmd(args),
    }
}

fn serve_cmd(args: ServeArgs) -> ExitCode {
    let text = match std::fs::read_to_string(&args.config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.config.display());
            return ExitCode::from(2);
        }
    };
    let config = match Config::parse(&text) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors {
                eprintln!("{}: {e}", args.config.display());
            }
            return ExitCode::from(2);
        }
    };
    let listen = args.listen.unwrap_or_else(|| config.listen.clone());
    let listener = match std::net::TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(listener, config, std::future::pending()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: approval service stopped: {e}");
            ExitCode::from(2)
        }
    }
}

/// Counters of refusals, shown at `/v1/stats`.
#[derive(Default)]
struct Stats {
    created: Cell<u64>,
    used: Cell<u64>,
    unknown_ids: Cell<u64>,
    use_refused: Cell<u64>,
    unauthenticated: Cell<u64>,
    csrf_refused: Cell<u64>,
    storage_errors: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get().saturating_add(1));
}

struct App {
    store: Store,
    config: Config,
    /// Woken on every state change made by this process.
    changed: Notify,
    stats: Stats,
}

impl App {
    /// The caller identities an approver's own calls are made under
    /// (`caller_subjects` in the config), beside the approver's subject.
    fn aliases(&self, approver: &str) -> &[String] {
        self.config
            .approvers
            .iter()
            .find(|a| a.subject == approver)
            .map_or(&[], |a| a.caller_subjects.as_slice())
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Open the storage, then serve until `shutdown` completes.
pub fn serve(
    listener: std::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let store = match &config.storage {
            Storage::Sqlite(path) => Store::open_sqlite(path),
            Storage::Postgres(url) => Store::open_postgres(url).await,
        }
        .map_err(|e| io::Error::other(e.to_string()))?;
        let addr = listener.local_addr()?;
        let storage = match &config.storage {
            Storage::Sqlite(p) => format!("sqlite:{}", p.display()),
            // The URL may hold a password: name only the engine.
            Storage::Postgres(_) => "postgres".to_string(),
        };
        println!("mcp-firewall approvals listening on http://{addr} (storage {storage})");
        // Scripts wait for this line to learn the port.
        let _ = io::stdout().flush();
        let app = Rc::new(App {
            store,
            config,
            changed: Notify::new(),
            stats: Stats::default(),
        });
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let sweeper = Rc::clone(&app);
        tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(SWEEP).await;
                match sweeper.store.expire_due(now_ms()).await {
                    Ok(0) => {}
                    Ok(_) => sweeper.changed.notify_waiters(),
                    Err(e) => {
                        bump(&sweeper.stats.storage_errors);
                        eprintln!("warning: expiry sweep failed: {e}");
                    }
                }
            }
        });
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let accept_loop = async {
            loop {
                let Ok(slot) = Arc::clone(&connections).acquire_owned().await else {
                    return;
                };
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        eprintln!("warning: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = Rc::clone(&app);
                tokio::task::spawn_local(async move {
                    let service = service_fn(move |request| {
                        let app = Rc::clone(&app);
                        async move { Ok::<_, Infallible>(handle(&app, request).await) }
                    });
                    let connection = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(MAX_CONNECTION_LIFE, connection).await;
                    drop(slot);
                });
            }
        };
        let (mut accept_loop, mut shutdown) = (pin!(accept_loop), pin!(shutdown));
        poll_fn(|cx| match shutdown.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => accept_loop.as_mut().poll(cx),
        })
        .await;
        Ok(())
    })
}

type Answer = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_answer(status: StatusCode, body: &Value) -> Answer {
    respond(status, "application/json", body.to_string())
}

fn error(status: StatusCode, message: &str) -> Answer {
    json_answer(status, &json!({ "error": message }))
}

/// Every page answer: no framing, no script, no outside resource, forms post
/// only here, nothing cached.
fn html(status: StatusCode, body: String) -> Answer {
    let mut r = respond(status, "text/html; charset=utf-8", body);
    let h = r.headers_mut();
    h.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    );
    // same-origin, not no-referrer: under no-referrer browsers send
    // `Origin: null` with the page's own form posts, which `same_origin`
    // (rightly) refuses.
    h.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn redirect(to: &str) -> Answer {
    let mut r = respond(StatusCode::SEE_OTHER, "text/plain", "");
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

async fn handle(app: &App, request: Request<Incoming>) -> Answer {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => json_answer(StatusCode::OK, &json!({"ok": true})),
        (&Method::GET, [""]) => page_index(app, &request).await,
        (&Method::GET, ["style.css"]) => respond(StatusCode::OK, "text/css", page::STYLE),
        (&Method::GET, ["login"]) => page_login_form(app, None),
        (&Method::POST, ["login"]) => page_login(app, request).await,
        (&Method::POST, ["logout"]) => page_logout(app, request).await,
        (&Method::POST, ["approvals", id, verb @ ("approve" | "deny")]) => {
            let (id, approve) = (id.to_string(), *verb == "approve");
            page_decide(app, request, &id, approve).await
        }
        (&Method::POST, ["v1", "approvals"]) => api_create(app, request).await,
        (&Method::GET, ["v1", "approvals", id]) => {
            let id = id.to_string();
            api_get(app, &request, &id).await
        }
        (&Method::POST, ["v1", "approvals", id, "use"]) => {
            let id = id.to_string();
            api_use(app, request, &id).await
        }
        (&Method::GET, ["v1", "approvals", id, "events"]) => {
            let id = id.to_string();
            api_events(app, &request, &id).await
        }
        (&Method::POST, ["v1", "approvals", id, "decision"]) => {
            let id = id.to_string();
            api_decide(app, request, &id).await
        }
        (&Method::GET, ["v1", "stats"]) => api_stats(app, &request),
        (_, ["" | "healthz" | "style.css" | "login" | "logout"])
        | (_, ["approvals", ..])
        | (_, ["v1", ..]) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

// ---------------------------------------------------------------- helpers

fn bearer<B>(request: &Request<B>) -> Option<[u8; 32]> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?;
    (!token.is_empty()).then(|| sha256_of(&[token.as_bytes()]))
}

/// Whether the request carries a filter token.
fn filter_authenticated<B>(app: &App, request: &Request<B>) -> bool {
    bearer(request).is_some_and(|h| app.config.filter_tokens.contains(&h))
}

fn unauthenticated(app: &App) -> Answer {
    bump(&app.stats.unauthenticated);
    let mut r = error(StatusCode::UNAUTHORIZED, "missing or unknown bearer token");
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn approver_by_token(app: &App, digest: &[u8; 32]) -> Option<String> {
    app.config
        .approvers
        .iter()
        .find(|a| &a.token_sha256 == digest)
        .map(|a| a.subject.clone())
}

fn cookie<B>(request: &Request<B>, name: &str) -> Option<String> {
    request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The approver behind a page request: a session cookie, or an approver's
/// bearer token (for scripts; a bearer token is never sent by a browser on
/// its own, so it needs no CSRF token).
enum Approver {
    Session(Session),
    Bearer(String),
}

impl Approver {
    fn subject(&self) -> &str {
        match self {
            Approver::Session(s) => &s.subject,
            Approver::Bearer(s) => s,
        }
    }
}

async fn approver<B>(app: &App, request: &Request<B>) -> Result<Option<Approver>, Answer> {
    if let Some(digest) = bearer(request) {
        return Ok(approver_by_token(app, &digest).map(Approver::Bearer));
    }
    let Some(id) = cookie(request, SESSION_COOKIE) else {
        return Ok(None);
    };
    match app
        .store
        .session(&sha256_hex(id.as_bytes()), now_ms())
        .await
    {
        // The approver may have been removed from the config since login.
        Ok(Some(s)) if app.config.approvers.iter().any(|a| a.subject == s.subject) => {
            Ok(Some(Approver::Session(s)))
        }
        Ok(_) => Ok(None),
        Err(e) => Err(storage_error(app, &e)),
    }
}

fn storage_error(app: &App, e: &store::StoreError) -> Answer {
    bump(&app.stats.storage_errors);
    eprintln!("error: storage: {e}");
    error(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
}

fn random_hex(bytes: usize) -> Option<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).ok()?;
    Some(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Ids are `apr_` and 32 hex digits (128 random bits); anything else is
/// refused before the database is asked.
fn well_formed_id(id: &str) -> bool {
    id.len() == 36
        && id.starts_with("apr_")
        && id[4..]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, Answer> {
    match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body too large or cut off",
        )),
    }
}

// The error is the answer itself, sent at once by the caller: boxing it
// would only move it to the heap on the refusal path.
#[allow(clippy::result_large_err)]
fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Answer> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("bad request: {e}")))
}

fn approval_json(a: &Approval, now: i64, consumed: bool) -> Value {
    json!({
        "approval_id": a.id,
        "state": a.state_at(now).as_str(),
        "consumed": consumed,
        "rule": a.rule,
        "created_at_ms": a.created_ms,
        "expires_at_ms": a.expires_ms,
        "decided_by": a.decided_by,
        "decided_at_ms": a.decided_ms,
        "reason": a.reason,
        "used_at_ms": a.used_ms,
    })
}

/// Wait until the approval leaves `pending` or `wait_ms` has passed; answers
/// it as it is then (`None` if it vanished).
async fn wait_for_decision(
    app: &App,
    id: &str,
    wait_ms: u64,
) -> Result<Option<Approval>, store::StoreError> {
    let wait = i64::try_from(wait_ms.min(MAX_WAIT_MS)).unwrap_or(0);
    let deadline = now_ms().saturating_add(wait);
    loop {
        // Registered before reading, so a change between the read and the
        // wait still wakes us.
        let changed = app.changed.notified();
        let mut changed = pin!(changed);
        changed.as_mut().enable();
        let Some(a) = app.store.get(id).await? else {
            return Ok(None);
        };
        let now = now_ms();
        if a.state_at(now) != State::Pending || now >= deadline {
            return Ok(Some(a));
        }
        let until = deadline.min(a.expires_ms);
        let nap = Duration::from_millis(u64::try_from(until - now).unwrap_or(0)).min(RECHECK);
        let _ = tokio::time::timeout(nap, changed).await;
    }
}

// ---------------------------------------------------------------- filter API

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    binding: Binding,
    rule: String,
    summary: Summary,
    #[serde(default)]
    ttl_ms: Option<u64>,
    #[serde(default)]
    wait_ms: Option<u64>,
    #[serde(default)]
    consume: bool,
}

/// What approvers see of the call. `arguments` only when the policy lets
/// approvers see them; `findings` are DLP findings (kind and path, never a value).
#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Summary {
    method: String,
    target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    arguments: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    findings: Vec<Finding>,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Finding {
    kind: String,
    path: String,
}

async fn api_create(app: &App, request: Request<Incoming>) -> Answer {
    if !filter_authenticated(app, &request) {
        return unauthenticated(app);
    }
    let body = match read_body(request).await {
        Ok(b) => b,
        Err(a) => return a,
    };
    let body: CreateBody = match parse_json(&body) {
        Ok(b) => b,
        Err(a) => return a,
    };
    if let Some(problem) = body.binding.problem() {
        return error(StatusCode::BAD_REQUEST, &problem);
    }
    if body.rule.is_empty() || body.rule.len() > store::MAX_NAME_BYTES {
        return error(StatusCode::BAD_REQUEST, "rule: empty or too long");
    }
    let ttl = body
        .ttl_ms
        .map_or(app.config.default_ttl_ms, |t| {
            i64::try_from(t).unwrap_or(i64::MAX)
        })
        .clamp(1, app.config.max_ttl_ms);
    let Some(id) = random_hex(16).map(|h| format!("apr_{h}")) else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no randomness for an id");
    };
    let new = NewApproval {
        id,
        binding: body.binding.clone(),
        rule: body.rule,
        summary: serde_json::to_string(&body.summary).unwrap_or_default(),
        ttl_ms: ttl,
    };
    let (mut approval, created) = match app.store.create_or_find(&new, now_ms()).await {
        Ok(r) => r,
        Err(e) => return storage_error(app, &e),
    };
    if created {
        bump(&app.stats.created);
        app.changed.notify_waiters();
    }
    if let Some(wait) = body.wait_ms.filter(|w| *w > 0) {
        match wait_for_decision(app, &approval.id, wait).await {
            Ok(Some(a)) => approval = a,
            Ok(None) => return error(StatusCode::SERVICE_UNAVAILABLE, "request vanished"),
            Err(e) => return storage_error(app, &e),
        }
    }
    let mut consumed = false;
    if body.consume && approval.state_at(now_ms()) == State::Approved {
        match app
            .store
            .consume(&approval.id, &body.binding, now_ms())
            .await
        {
            Ok(Consumed::Used) => {
                consumed = true;
                bump(&app.stats.used);
                app.changed.notify_waiters();
            }
            Ok(_) => bump(&app.stats.use_refused),
            Err(e) => return storage_error(app, &e),
        }
        match app.store.get(&approval.id).await {
            Ok(Some(a)) => approval = a,
            Ok(None) => {}
            Err(e) => return storage_error(app, &e),
        }
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json_answer(status, &approval_json(&approval, now_ms(), consumed))
}

#[derive(Deserialize)]
struct WaitQuery {
    #[serde(default)]
    wait_ms: u64,
}

fn unknown_id(app: &App, id: &str) -> Answer {
    bump(&app.stats.unknown_ids);
    eprintln!(
        "warning: unknown approval id asked for ({} bytes)",
        id.len()
    );
    error(StatusCode::NOT_FOUND, "unknown approval id")
}

async fn api_get(app: &App, request: &Request<Incoming>, id: &str) -> Answer {
    if !filter_authenticated(app, request) {
        return unauthenticated(app);
    }
    let query: WaitQuery = match serde_urlencoded::from_str(request.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad query: {e}")),
    };
    if !well_formed_id(id) {
        return unknown_id(app, id);
    }
    match wait_for_decision(app, id, query.wait_ms).await {
        Ok(Some(a)) => json_answer(StatusCode::OK, &approval_json(&a, now_ms(), false)),
        Ok(None) => unknown_id(app, id),
        Err(e) => storage_error(app, &e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UseBody {
    binding: Binding,
}

async fn api_use(app: &App, request: Request<Incoming>, id: &str) -> Answer {
    if !filter_authenticated(app, &request) {
        return unauthenticated(app);
    }
    let body = match read_body(request).await {
        Ok(b) => b,
        Err(a) => return a,
    };
    let body: UseBody = match parse_json(&body) {
        Ok(b) => b,
        Err(a) => return a,
    };
    if !well_formed_id(id) {
        return unknown_id(app, id);
    }
    match app.store.consume(id, &body.binding, now_ms()).await {
        Ok(Consumed::Used) => {
            bump(&app.stats.used);
            app.changed.notify_waiters();
            json_answer(
                StatusCode::OK,
                &json!({"approval_id": id, "state": "used", "consumed": true}),
            )
        }
        Ok(Consumed::NotFound) => unknown_id(app, id),
        Ok(Consumed::OtherBinding) => {
            bump(&app.stats.use_refused);
            json_answer(
                StatusCode::CONFLICT,
                &json!({"approval_id": id, "consumed": false, "error": "approval is for another call"}),
            )
        }
        Ok(Consumed::NotApproved(state)) => {
            bump(&app.stats.use_refused);
            json_answer(
                StatusCode::CONFLICT,
                &json!({"approval_id": id, "state": state.as_str(), "consumed": false,
                        "error": format!("approval is {}", state.as_str())}),
            )
        }
        Err(e) => storage_error(app, &e),
    }
}

async fn api_events(app: &App, request: &Request<Incoming>, id: &str) -> Answer {
    let allowed =
        filter_authenticated(app, request) || matches!(approver(app, request).await, Ok(Some(_)));
    if !allowed {
        return unauthenticated(app);
    }
    if !well_formed_id(id) {
        return unknown_id(app, id);
    }
    match app.store.events(id).await {
        Ok(events) if events.is_empty() => unknown_id(app, id),
        Ok(events) => json_answer(
            StatusCode::OK,
            &json!({"approval_id": id, "events": events}),
        ),
        Err(e) => storage_error(app, &e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    approve: bool,
    #[serde(default)]
    reason: String,
}

/// Approve or deny as an approver with a bearer token (scripts, tests).
async fn api_decide(app: &App, request: Request<Incoming>, id: &str) -> Answer {
    let Some(subject) = bearer(&request).and_then(|d| approver_by_token(app, &d)) else {
        return unauthenticated(app);
    };
    let body = match read_body(request).await {
        Ok(b) => b,
        Err(a) => return a,
    };
    let body: DecisionBody = match parse_json(&body) {
        Ok(b) => b,
        Err(a) => return a,
    };
    match decide(app, id, &subject, body.approve, &body.reason).await {
        Ok(()) => json_answer(StatusCode::OK, &json!({"approval_id": id, "decided": true})),
        Err((status, message)) => error(status, &message),
    }
}

fn api_stats<B>(app: &App, request: &Request<B>) -> Answer {
    if !filter_authenticated(app, request) {
        return unauthenticated(app);
    }
    let s = &app.stats;
    json_answer(
        StatusCode::OK,
        &json!({
            "created": s.created.get(), "used": s.used.get(), "unknown_ids": s.unknown_ids.get(),
            "use_refused": s.use_refused.get(), "unauthenticated": s.unauthenticated.get(),
            "csrf_refused": s.csrf_refused.get(), "storage_errors": s.storage_errors.get(),
        }),
    )
}

/// The one way a decision is made, from the page or the API.
async fn decide(
    app: &App,
    id: &str,
    approver: &str,
    approve: bool,
    reason: &str,
) -> Result<(), (StatusCode, String)> {
    let reason = reason.trim();
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("reason longer than {MAX_REASON_CHARS} characters"),
        ));
    }
    if !approve && reason.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "a denial needs a reason".into()));
    }
    if !well_formed_id(id) {
        bump(&app.stats.unknown_ids);
        return Err((StatusCode::NOT_FOUND, "unknown approval id".into()));
    }
    // Only a configured approver decides (a session outlives no config change).
    let Some(known) = app.config.approvers.iter().find(|a| a.subject == approver) else {
        return Err((StatusCode::FORBIDDEN, "not an approver".into()));
    };
    let outcome = app
        .store
        .decide(
            id,
            known,
            approve,
            reason,
            now_ms(),
            app.config.approved_ttl_ms,
        )
        .await;
    match outcome {
        Ok(Decided::Done) => {
            app.changed.notify_waiters();
            Ok(())
        }
        Ok(Decided::NotFound) => {
            bump(&app.stats.unknown_ids);
            Err((StatusCode::NOT_FOUND, "unknown approval id".into()))
        }
        Ok(Decided::OwnCall) => Err((
            StatusCode::FORBIDDEN,
            "you cannot decide your own call: another approver must".into(),
        )),
        Ok(Decided::NotPending(s)) => Err((
            StatusCode::CONFLICT,
            format!("no longer pending: it is {}", s.as_str()),
        )),
        Err(e) => {
            bump(&app.stats.storage_errors);
            eprintln!("error: storage: {e}");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable".into(),
            ))
        }
    }
}

// ---------------------------------------------------------------- page

fn cookie_header(app: &App, name: &str, value: &str, max_age_s: i64) -> Option<HeaderValue> {
    let secure = if app.config.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .ok()
}

/// A form post must come from our own page: `Sec-Fetch-Site` (Fetch
/// Metadata, sent by current browsers), when present, must be `same-origin`,
/// and `Origin`, when present, must name the host the request was sent to.
/// The CSRF token is the real check; these and SameSite=Strict are the
/// second line. Clients that send neither header (scripts) are not browsers
/// and still need the session cookie and the CSRF token.
fn same_origin<B>(request: &Request<B>) -> bool {
    let site = request.headers().get("sec-fetch-site");
    if site.is_some_and(|s| s.as_bytes() != b"same-origin") {
        return false;
    }
    let Some(origin) = request.headers().get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = request.headers().get(HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let bare = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    bare == Some(host)
}

/// Equal without an early exit on the first differing byte.
fn same_secret(a: &str, b: &str) -> bool {
    sha256_of(&[a.as_bytes()]) == sha256_of(&[b.as_bytes()])
}

fn page_login_form(app: &App, message: Option<&str>) -> Answer {
    let Some(login_csrf) = random_hex(16) else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no randomness");
    };
    let status = if message.is_some() {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::OK
    };
    let mut r = html(status, page::login(&login_csrf, message));
    if let Some(c) = cookie_header(app, LOGIN_COOKIE, &login_csrf, 600) {
        r.headers_mut().insert(SET_COOKIE, c);
    }
    r
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    login_csrf: String,
}

async fn page_login(app: &App, request: Request<Incoming>) -> Answer {
    let expected = cookie(&request, LOGIN_COOKIE);
    if !same_origin(&request) {
        bump(&app.stats.csrf_refused);
        return page_login_form(app, Some("This form was posted from another site."));
    }
    let body = match read_body(request).await {
        Ok(b) => b,
        Err(a) => return a,
    };
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return page_login_form(app, Some("Incomplete form."));
    };
    if !expected.is_some_and(|e| same_secret(&e, &form.login_csrf)) {
        bump(&app.stats.csrf_refused);
        return page_login_form(app, Some("The form expired; try again."));
    }
    let digest = sha256_of(&[form.token.trim().as_bytes()]);
    let Some(subject) = approver_by_token(app, &digest) else {
        bump(&app.stats.unauthenticated);
        return page_login_form(app, Some("Unknown token."));
    };
    let (Some(id), Some(csrf)) = (random_hex(32), random_hex(32)) else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no randomness");
    };
    let now = now_ms();
    let session = Session { subject, csrf };
    let expires = now.saturating_add(app.config.session_ttl_ms);
    if let Err(e) = app
        .store
        .create_session(&sha256_hex(id.as_bytes()), &session, now, expires)
        .await
    {
        return storage_error(app, &e);
    }
    let mut r = redirect("/");
    let h = r.headers_mut();
    if let Some(c) = cookie_header(app, SESSION_COOKIE, &id, app.config.session_ttl_ms / 1000) {
        h.append(SET_COOKIE, c);
    }
    if let Some(c) = cookie_header(app, LOGIN_COOKIE, "", 0) {
        h.append(SET_COOKIE, c);
    }
    r
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// The session and form of a page POST, after the CSRF checks.
async fn checked_form(
    app: &App,
    request: Request<Incoming>,
) -> Result<(Session, CsrfForm), Answer> {
    let refused = |app: &App, why: &str| {
        bump(&app.stats.csrf_refused);
        html(StatusCode::FORBIDDEN, page::message("Refused", why))
    };
    if !same_origin(&request) {
        return Err(refused(app, "This form was posted from another site."));
    }
    // Only a session: a page form never carries a bearer token.
    let session = match approver(app, &request).await? {
        Some(Approver::Session(s)) => s,
        _ => return Err(redirect("/login")),
    };
    let body = read_body(request).await?;
    let Ok(form) = serde_urlencoded::from_bytes::<CsrfForm>(&body) else {
        return Err(refused(app, "Incomplete form."));
    };
    if !same_secret(&form.csrf, &session.csrf) {
        return Err(refused(
            app,
            "The form's CSRF token is wrong; reload the page.",
        ));
    }
    Ok((session, form))
}

async fn page_decide(app: &App, request: Request<Incoming>, id: &str, approve: bool) -> Answer {
    let (session, form) = match checked_form(app, request).await {
        Ok(x) => x,
        Err(a) => return a,
    };
    match decide(app, id, &session.subject, approve, &form.reason).await {
        Ok(()) => redirect("/"),
        Err((status, message)) => html(status, page::message("Not decided", &message)),
    }
}

async fn page_logout(app: &App, request: Request<Incoming>) -> Answer {
    let id = cookie(&request, SESSION_COOKIE);
    if let Err(a) = checked_form(app, request).await {
        return a;
    }
    if let Some(id) = id {
        if let Err(e) = app
            .store
            .delete_session(&sha256_hex(id.as_bytes()), now_ms())
            .await
        {
            return storage_error(app, &e);
        }
    }
    let mut r = redirect("/login");
    if let Some(c) = cookie_header(app, SESSION_COOKIE, "", 0) {
        r.headers_mut().insert(SET_COOKIE, c);
    }
    r
}

async fn page_index(app: &App, request: &Request<Incoming>) -> Answer {
    let approver = match approver(app, request).await {
        Ok(Some(a)) => a,
        Ok(None) => return redirect("/login"),
        Err(a) => return a,
    };
    let now = now_ms();
    let pending = match app.store.pending(now, PAGE_PENDING).await {
        Ok(p) => p,
        Err(e) => return storage_error(app, &e),
    };
    let history = match app.store.history(now, PAGE_HISTORY).await {
        Ok(h) => h,
        Err(e) => return storage_error(app, &e),
    };
    let csrf = match &approver {
        Approver::Session(s) => s.csrf.as_str(),
        // A bearer client sees the page but has no forms to post.
        Approver::Bearer(_) => "",
    };
    let aliases = app.aliases(approver.subject());
    match page::index(approver.subject(), aliases, csrf, &pending, &history, now) {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => {
            eprintln!("error: rendering the page: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "rendering failed")
        }
    }
}
