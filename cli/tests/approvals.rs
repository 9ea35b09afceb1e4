//! `mcp-firewall approvals serve` as the filter and approvers use it: the real
//! binary over HTTP, on SQLite, and on a real PostgreSQL (started and stopped
//! by the test) with two service instances racing on one database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FILTER: &str = "filter-token-1";
const ALICE: &str = "alice-token-1";
const BOB: &str = "bob-token-1";

fn sha(s: &str) -> String {
    mcp_firewall::json::sha256_hex(s.as_bytes())
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let mut buf = [0u8; 8];
        getrandom::fill(&mut buf).unwrap();
        let name: String = buf.iter().map(|b| format!("{b:02x}")).collect();
        let p = std::env::temp_dir().join(format!("mcpfw-{tag}-{name}"));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One running service; stopped when dropped.
struct Service {
    child: Child,
    addr: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, storage: &str, extra: Value) -> PathBuf {
    let mut config = json!({
        "storage": storage,
        "filter_tokens_sha256": [sha(FILTER)],
        "approvers": [
            {"subject": "alice", "token_sha256": sha(ALICE)},
            {"subject": "bob", "token_sha256": sha(BOB)},
        ],
        "cookie_secure": false,
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let path = dir.join(format!("config-{}.json", sha(storage)));
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn start(config: &Path) -> Service {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-firewall"))
        .args(["approvals", "serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Service { child, addr }
}

struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTP/1.1 exchange with hyper's client half.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    })
}

fn binding(subject: &str, args: &str) -> Value {
    json!({"subject": subject, "tenant": "acme", "tool": "create_refund",
           "args_sha256": sha(args), "policy_sha256": sha("policy")})
}

fn auth(token: &str) -> String {
    format!("Bearer {token}")
}

fn create(s: &Service, binding: &Value, extra: Value) -> Answer {
    let mut body = json!({"binding": binding, "rule": "big-refund",
        "summary": {"method": "tools/call", "target": "create_refund", "arguments": {"amount": 120}}});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    http(
        &s.addr,
        "POST",
        "/v1/approvals",
        &[("authorization", &auth(FILTER))],
        &body.to_string(),
    )
}

fn state(s: &Service, id: &str) -> String {
    let a = http(
        &s.addr,
        "GET",
        &format!("/v1/approvals/{id}"),
        &[("authorization", &auth(FILTER))],
        "",
    );
    a.json()["state"].as_str().unwrap_or("?").to_string()
}

fn decide(s: &Service, token: &str, id: &str, approve: bool, reason: &str) -> Answer {
    http(
        &s.addr,
        "POST",
        &format!("/v1/approvals/{id}/decision"),
        &[("authorization", &auth(token))],
        &json!({"approve": approve, "reason": reason}).to_string(),
    )
}

fn use_it(s: &Service, id: &str, binding: &Value) -> Answer {
    http(
        &s.addr,
        "POST",
        &format!("/v1/approvals/{id}/use"),
        &[("authorization", &auth(FILTER))],
        &json!({"binding": binding}).to_string(),
    )
}

fn id_of(a: &Answer) -> String {
    a.json()["approval_id"].as_str().unwrap().to_string()
}

fn kinds(s: &Service, id: &str) -> Vec<String> {
    let a = http(
        &s.addr,
        "GET",
        &format!("/v1/approvals/{id}/events"),
        &[("authorization", &auth(FILTER))],
        "",
    );
    a.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

fn sqlite_service() -> (TempDir, Service) {
    let dir = TempDir::new("approvals");
    let cfg = write_config(
        &dir.0,
        &format!("sqlite:{}", dir.0.join("a.db").display()),
        json!({}),
    );
    let s = start(&cfg);
    (dir, s)
}

#[test]
fn approved_call_passes_exactly_once_then_needs_a_new_approval() {
    let (_dir, s) = sqlite_service();
    let b = binding("carol", "{\"amount\":120}");
    let first = create(&s, &b, json!({}));
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.json()["state"], "pending");
    let id = id_of(&first);
    assert!(id.starts_with("apr_") && id.len() == 36);
    // The same call asked again finds the same request.
    let again = create(&s, &b, json!({}));
    assert_eq!((again.status, id_of(&again)), (200, id.clone()));
    // Not usable while pending.
    assert_eq!(use_it(&s, &id, &b).status, 409);
    assert_eq!(
        decide(&s, ALICE, &id, true, "ok, under the cap").status,
        200
    );
    assert_eq!(state(&s, &id), "approved");
    // A retry of the same call finds it approved, unused.
    let retry = create(&s, &b, json!({}));
    assert_eq!(
        (retry.status, retry.json()["state"].clone()),
        (200, json!("approved"))
    );
    assert_eq!(retry.json()["decided_by"], "alice");
    let used = use_it(&s, &id, &b);
    assert_eq!(used.status, 200, "{}", used.body);
    assert_eq!(used.json()["consumed"], true);
    // Replay: refused.
    let replay = use_it(&s, &id, &b);
    assert_eq!(
        (replay.status, replay.json()["state"].clone()),
        (409, json!("used"))
    );
    // The same call once more is a new request.
    let next = create(&s, &b, json!({}));
    assert_eq!(next.status, 201);
    assert_ne!(id_of(&next), id);
    assert_eq!(
        kinds(&s, &id),
        [
            "requested",
            "use_refused",
            "approved",
            "used",
            "use_refused"
        ]
    );
}

#[test]
fn an_approval_is_refused_for_other_arguments() {
    let (_dir, s) = sqlite_service();
    let b = binding("carol", "{\"amount\":120}");
    let id = id_of(&create(&s, &b, json!({})));
    assert_eq!(decide(&s, BOB, &id, true, "").status, 200);
    let other = binding("carol", "{\"amount\":99999}");
    let refused = use_it(&s, &id, &other);
    assert_eq!(refused.status, 409);
    assert_eq!(refused.json()["error"], "approval is for another call");
    // Another subject with the id: also another call.
    assert_eq!(
        use_it(&s, &id, &binding("mallory", "{\"amount\":120}")).status,
        409
    );
    // Other arguments make a new request, not a reuse.
    let new = create(&s, &other, json!({}));
    assert_eq!(
        (new.status, new.json()["state"].clone()),
        (201, json!("pending"))
    );
    // The right call still passes once.
    assert_eq!(use_it(&s, &id, &b).status, 200);
}

#[test]
fn a_denied_call_stays_denied_and_cannot_be_used() {
    let (_dir, s) = sqlite_service();
    let b = binding("carol", "{\"amount\":120}");
    let id = id_of(&create(&s, &b, json!({})));
    // A denial needs a reason.
    assert_eq!(decide(&s, ALICE, &id, false, "  ").status, 400);
    assert_eq!(decide(&s, ALICE, &id, false, "over budget").status, 200);
    let u = use_it(&s, &id, &b);
    assert_eq!(
        (u.status, u.json()["state"].clone()),
        (409, json!("denied"))
    );
    let retry = create(&s, &b, json!({}));
    assert_eq!((retry.status, id_of(&retry)), (200, id.clone()));
    assert_eq!(retry.json()["state"], "denied");
    assert_eq!(retry.json()["reason"], "over budget");
    // Decided once: a second decision is refused.
    assert_eq!(decide(&s, BOB, &id, true, "").status, 409);
}

#[test]
fn an_expired_request_cannot_be_approved_or_used() {
    let (_dir, s) = sqlite_service();
    let b = binding("carol", "{\"amount\":120}");
    let id = id_of(&create(&s, &b, json!({"ttl_ms": 300})));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(state(&s, &id), "expired");
    assert_eq!(decide(&s, ALICE, &id, true, "").status, 409);
    assert_eq!(use_it(&s, &id, &b).status, 409);
    let k = kinds(&s, &id);
    assert!(k.contains(&"expired".to_string()), "{k:?}");
    // Asked again: a new request.
    assert_eq!(create(&s, &b, json!({})).status, 201);
}

#[test]
fn an_approver_cannot_approve_their_own_call() {
    let (_dir, s) = sqlite_service();
    let b = binding("alice", "{\"amount\":120}");
    let id = id_of(&create(&s, &b, json!({})));
    let own = decide(&s, ALICE, &id, true, "mine");
    assert_eq!(own.status, 403, "{}", own.body);
    assert_eq!(state(&s, &id), "pending");
    assert_eq!(decide(&s, BOB, &id, true, "").status, 200);
    assert_eq!(
        kinds(&s, &id),
        ["requested", "decision_refused", "approved"]
    );
}

#[test]
fn forged_and_malformed_ids_are_unknown() {
    let (_dir, s) = sqlite_service();
    let b = binding("carol", "{}");
    for id in [
        "apr_0123456789abcdef0123456789abcdef",
        "apr_nothex",
        "1%27%20OR%201=1",
        "",
    ] {
        let path = format!("/v1/approvals/{id}/use");
        let a = http(
            &s.addr,
            "POST",
            &path,
            &[("authorization", &auth(FILTER))],
            &json!({"binding": b}).to_string(),
        );
        assert!(matches!(a.status, 404 | 405), "{id}: {}", a.status);
        assert_eq!(decide(&s, ALICE, id, true, "").status, 404, "{id}");
    }
    let stats = http(
        &s.addr,
        "GET",
        "/v1/stats",
        &[("authorization", &auth(FILTER))],
        "",
    );
    assert!(
        stats.json()["unknown_ids"].as_u64().unwrap() >= 6,
        "{}",
        stats.body
    );
}

#[test]
fn the_api_needs_the_right_token() {
    let (_dir, s) = sqlite_service();
    let body = json!({"binding": binding("carol", "{}"), "rule": "r",
                      "summary": {"method": "tools/call", "target": "t"}})
    .to_string();
    for token in ["", "Bearer nope", &auth(ALICE)] {
        let a = http(
            &s.addr,
            "POST",
            "/v1/approvals",
            &[("authorization", token)],
            &body,
        );
        assert_eq!(a.status, 401, "{token}");
    }
    // The filter's token is no approver's.
    assert_eq!(
        decide(&s, FILTER, "apr_0123456789abcdef0123456789abcdef", true, "").status,
        401
    );
    // Garbage and unknown members are refused.
    for bad in [
        "not json".to_string(),
        json!({"binding": binding("carol", "{}"), "rule": "r", "summary": {"method": "m", "target": "t"}, "extra": 1}).to_string(),
        json!({"binding": {"subject": "c", "tenant": "", "tool": "t", "args_sha256": "XYZ", "policy_sha256": sha("p")},
               "rule": "r", "summary": {"method": "m", "target": "t"}}).to_string(),
    ] {
        let a = http(&s.addr, "POST", "/v1/approvals", &[("authorization", &auth(FILTER))], &bad);
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
    }
}

#[test]
fn hold_mode_one_callout_waits_and_consumes() {
    let (_dir, s) = sqlite_service();
    let b = binding("carol", "{\"amount\":120}");
    let id = id_of(&create(&s, &b, json!({})));
    let addr = s.addr.clone();
    let b2 = b.clone();
    let started = Instant::now();
    let waiter = std::thread::spawn(move || {
        let body = json!({"binding": b2, "rule": "big-refund",
            "summary": {"method": "tools/call", "target": "create_refund"},
            "wait_ms": 10000, "consume": true});
        http(
            &addr,
            "POST",
            "/v1/approvals",
            &[("authorization", &auth(FILTER))],
            &body.to_string(),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(decide(&s, BOB, &id, true, "fine").status, 200);
    let answer = waiter.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(answer.json()["consumed"], true, "{}", answer.body);
    assert_eq!(answer.json()["state"], "used");
    assert_eq!(use_it(&s, &id, &b).status, 409);
}

#[test]
fn long_poll_answers_when_decided_or_when_the_wait_ends() {
    let (_dir, s) = sqlite_service();
    let b = binding("carol", "{}");
    let id = id_of(&create(&s, &b, json!({})));
    let t = Instant::now();
    let path = format!("/v1/approvals/{id}?wait_ms=400");
    let a = http(
        &s.addr,
        "GET",
        &path,
        &[("authorization", &auth(FILTER))],
        "",
    );
    assert_eq!(a.json()["state"], "pending");
    assert!(
        t.elapsed() >= Duration::from_millis(380),
        "{:?}",
        t.elapsed()
    );
    let (addr, id2) = (s.addr.clone(), id.clone());
    let waiter = std::thread::spawn(move || {
        let path = format!("/v1/approvals/{id2}?wait_ms=20000");
        http(&addr, "GET", &path, &[("authorization", &auth(FILTER))], "")
    });
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(decide(&s, ALICE, &id, false, "no").status, 200);
    let a = waiter.join().unwrap();
    assert_eq!(a.json()["state"], "denied");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn state_survives_a_restart() {
    let dir = TempDir::new("approvals-restart");
    let cfg = write_config(
        &dir.0,
        &format!("sqlite:{}", dir.0.join("a.db").display()),
        json!({}),
    );
    let b = binding("carol", "{}");
    let id = {
        let s = start(&cfg);
        let id = id_of(&create(&s, &b, json!({})));
        assert_eq!(decide(&s, ALICE, &id, true, "").status, 200);
        id
    };
    let s = start(&cfg);
    assert_eq!(state(&s, &id), "approved");
    assert_eq!(use_it(&s, &id, &b).status, 200);
}

/// The page's login and forms: the login form's own CSRF cookie, the
/// session's CSRF token on every form, Origin checked.
#[test]
fn page_forms_refuse_missing_or_wrong_csrf_tokens() {
    let (_dir, s) = sqlite_service();
    let b = binding("carol", "{}");
    let id = id_of(&create(&s, &b, json!({})));
    assert_eq!(http(&s.addr, "GET", "/", &[], "").status, 303);
    let form = http(&s.addr, "GET", "/login", &[], "");
    let set = form.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let login_csrf = set
        .split(';')
        .next()
        .unwrap()
        .split('=')
        .nth(1)
        .unwrap()
        .to_string();
    assert!(form.body.contains(&login_csrf));
    let cookie = format!("mcpfw_login={login_csrf}");
    let ct = ("content-type", "application/x-www-form-urlencoded");
    // Wrong login CSRF.
    let bad = http(
        &s.addr,
        "POST",
        "/login",
        &[ct, ("cookie", &cookie)],
        &format!("token={ALICE}&login_csrf=0000"),
    );
    assert_eq!(bad.status, 403);
    let ok = http(
        &s.addr,
        "POST",
        "/login",
        &[ct, ("cookie", &cookie)],
        &format!("token={ALICE}&login_csrf={login_csrf}"),
    );
    assert_eq!(ok.status, 303, "{}", ok.body);
    let session = ok
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("mcpfw_session="))
        .unwrap();
    let session = session.split(';').next().unwrap().to_string();
    let page = http(&s.addr, "GET", "/", &[("cookie", &session)], "");
    assert_eq!(page.status, 200);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let approve = format!("/approvals/{id}/approve");
    for (headers, body) in [
        (
            vec![ct, ("cookie", session.as_str())],
            "reason=x".to_string(),
        ),
        (
            vec![ct, ("cookie", session.as_str())],
            "csrf=deadbeef&reason=x".to_string(),
        ),
        (
            vec![
                ct,
                ("cookie", session.as_str()),
                ("origin", "http://evil.example"),
            ],
            format!("csrf={csrf}"),
        ),
        (
            vec![
                ct,
                ("cookie", session.as_str()),
                ("sec-fetch-site", "cross-site"),
            ],
            format!("csrf={csrf}"),
        ),
    ] {
        let a = http(&s.addr, "POST", &approve, &headers, &body);
        assert_eq!(a.status, 403, "{body}");
        assert_eq!(state(&s, &id), "pending");
    }
    // Without a session: back to the login.
    assert_eq!(
        http(&s.addr, "POST", &approve, &[ct], &format!("csrf={csrf}")).status,
        303
    );
    assert_eq!(state(&s, &id), "pending");
    let a = http(
        &s.addr,
        "POST",
        &approve,
        &[ct, ("cookie", &session)],
        &format!("csrf={csrf}&reason=ok"),
    );
    assert_eq!(a.status, 303);
    assert_eq!(state(&s, &id), "approved");
    let stats = http(
        &s.addr,
        "GET",
        "/v1/stats",
        &[("authorization", &auth(FILTER))],
        "",
    );
    assert!(
        stats.json()["csrf_refused"].as_u64().unwrap() >= 4,
        "{}",
        stats.body
    );
}

// ---------------------------------------------------------------- PostgreSQL

/// A PostgreSQL cluster of its own in a temp dir, on a free port; stopped
/// and removed when dropped. As root, it runs as `nobody` (PostgreSQL
/// refuses to run as root).
struct Postgres {
    dir: TempDir,
    port: u16,
    as_nobody: bool,
}

fn pg_command(as_nobody: bool, program: &str) -> Command {
    if as_nobody {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    fn start() -> Option<Postgres> {
        if Command::new("initdb").arg("--version").output().is_err() {
            return None;
        }
        let dir = TempDir::new("pg");
        // SAFETY: getuid has no preconditions.
        let as_nobody = unsafe { libc::getuid() } == 0;
        if as_nobody {
            std::os::unix::fs::chown(&dir.0, Some(65534), Some(65534)).unwrap();
        }
        let data = dir.0.join("data");
        let out = pg_command(as_nobody, "initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            dir.0.display()
        );
        let out = pg_command(as_nobody, "pg_ctl")
            .args(["-w", "-l"])
            .arg(dir.0.join("log"))
            .args(["-o", &opts, "-D"])
            .arg(&data)
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Postgres {
            dir,
            port,
            as_nobody,
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = pg_command(self.as_nobody, "pg_ctl")
            .args(["-w", "-m", "fast", "-D"])
            .arg(self.dir.0.join("data"))
            .arg("stop")
            .output();
    }
}

#[test]
fn postgres_two_replicas_share_state_and_exactly_one_use_wins() {
    let Some(pg) = Postgres::start() else {
        eprintln!("SKIPPED: no initdb on this machine");
        return;
    };
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
    let cfg = write_config(&pg.dir.0, &url, json!({}));
    let (a, b) = (start(&cfg), start(&cfg));
    let call = binding("carol", "{\"amount\":120}");
    // Both replicas find the one request for a binding.
    let created = create(&a, &call, json!({}));
    assert_eq!(created.status, 201, "{}", created.body);
    let id = id_of(&created);
    let found = create(&b, &call, json!({}));
    assert_eq!((found.status, id_of(&found)), (200, id.clone()));
    // A long poll on A sees a decision made on B.
    let (addr, id2) = (a.addr.clone(), id.clone());
    let waiter = std::thread::spawn(move || {
        let path = format!("/v1/approvals/{id2}?wait_ms=20000");
        http(&addr, "GET", &path, &[("authorization", &auth(FILTER))], "")
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(decide(&b, ALICE, &id, true, "ok").status, 200);
    assert_eq!(waiter.join().unwrap().json()["state"], "approved");
    // Sixteen uses at once, half on each replica: exactly one wins.
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let addr = if i % 2 == 0 {
                a.addr.clone()
            } else {
                b.addr.clone()
            };
            let (id, call) = (id.clone(), call.clone());
            std::thread::spawn(move || {
                http(
                    &addr,
                    "POST",
                    &format!("/v1/approvals/{id}/use"),
                    &[("authorization", &auth(FILTER))],
                    &json!({"binding": call}).to_string(),
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        15,
        "{statuses:?}"
    );
    let k = kinds(&a, &id);
    assert_eq!(k.iter().filter(|k| *k == "used").count(), 1, "{k:?}");
    // Self-approval and expiry on PostgreSQL too.
    let own = id_of(&create(&a, &binding("bob", "{}"), json!({"ttl_ms": 300})));
    assert_eq!(decide(&b, BOB, &own, true, "").status, 403);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(state(&b, &own), "expired");
    assert_eq!(decide(&a, ALICE, &own, true, "").status, 409);
    // A restart of both keeps the state.
    drop((a, b));
    let c = start(&cfg);
    assert_eq!(state(&c, &id), "used");
}
