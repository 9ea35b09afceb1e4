//! Durable approval state: SQLite (one replica) or PostgreSQL (several
//! replicas on one database), behind one set of operations.
//!
//! Every transition is one conditional `UPDATE … WHERE state = …` (or an
//! `INSERT` guarded by a partial unique index), so two replicas racing on the
//! same row cannot both win: PostgreSQL re-checks the `WHERE` of the second
//! `UPDATE` after the first commits (READ COMMITTED), SQLite has one writer at
//! a time. Expiry never depends on the sweep having run: every condition
//! compares `expires_ms` with the time of the call; the sweep only records
//! the `expired` state and its event.

use mcp_firewall::json::{digest_from_hex, sha256_hex};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cell::RefCell;
use std::fmt;
use std::path::Path;

/// What an approval is for: the exact call. An approval is good only for a
/// call whose binding is equal, field by field.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub subject: String,
    pub tenant: String,
    pub tool: String,
    pub args_sha256: String,
    pub policy_sha256: String,
}

/// Longest subject, tenant or tool name accepted (the filter clips its own
/// caller-controlled strings well below this).
pub const MAX_NAME_BYTES: usize = 1024;

impl Binding {
    /// `None` when every field is acceptable, else what is wrong.
    pub fn problem(&self) -> Option<String> {
        for (name, value) in [
            ("subject", &self.subject),
            ("tenant", &self.tenant),
            ("tool", &self.tool),
        ] {
            if value.len() > MAX_NAME_BYTES {
                return Some(format!(
                    "binding.{name}: longer than {MAX_NAME_BYTES} bytes"
                ));
            }
        }
        if self.subject.is_empty() {
            return Some("binding.subject: empty (an anonymous caller cannot be approved)".into());
        }
        for (name, value) in [
            ("args_sha256", &self.args_sha256),
            ("policy_sha256", &self.policy_sha256),
        ] {
            if !is_lower_hex_digest(value) {
                return Some(format!("binding.{name}: not 64 lower-case hex digits"));
            }
        }
        None
    }

    /// One string that is equal for equal bindings and differs otherwise:
    /// SHA-256 of the JSON array of the five fields (JSON, so no separator
    /// inside a field can make two bindings collide).
    pub fn key(&self) -> String {
        let fields = serde_json::json!([
            self.subject,
            self.tenant,
            self.tool,
            self.args_sha256,
            self.policy_sha256
        ]);
        sha256_hex(fields.to_string().as_bytes())
    }
}

pub fn is_lower_hex_digest(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && digest_from_hex(s.as_bytes()).is_some()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Pending,
    Approved,
    Denied,
    Expired,
    Used,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
            State::Used => "used",
        }
    }

    fn parse(s: &str) -> Result<State> {
        Ok(match s {
            "pending" => State::Pending,
            "approved" => State::Approved,
            "denied" => State::Denied,
            "expired" => State::Expired,
            "used" => State::Used,
            other => {
                return Err(StoreError(format!(
                    "unknown state {other:?} in the database"
                )))
            }
        })
    }
}

/// One approval request as stored.
#[derive(Clone, Debug)]
pub struct Approval {
    pub id: String,
    pub binding: Binding,
    pub rule: String,
    /// The summary the filter sent, as JSON text (shown on the page as is).
    pub summary: String,
    /// As stored; see [`Approval::state_at`] for the state at a given time.
    pub state: State,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub decided_ms: Option<i64>,
    pub used_ms: Option<i64>,
}

impl Approval {
    /// The state at `now`: pending and approved approvals past their expiry
    /// are expired whether or not the sweep has recorded it yet.
    pub fn state_at(&self, now: i64) -> State {
        match self.state {
            State::Pending | State::Approved if self.expires_ms <= now => State::Expired,
            s => s,
        }
    }

    pub fn summary_value(&self) -> Value {
        serde_json::from_str(&self.summary).unwrap_or(Value::Null)
    }
}

/// One step in an approval's life, recorded with it.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub seq: i64,
    pub approval_id: String,
    pub ts_ms: i64,
    /// requested | approved | denied | used | expired | use_refused | decision_refused
    pub kind: String,
    pub actor: Option<String>,
    pub detail: Option<String>,
}

/// A new request, as the filter asked for it.
pub struct NewApproval {
    pub id: String,
    pub binding: Binding,
    pub rule: String,
    pub summary: String,
    pub ttl_ms: i64,
}

/// What [`Store::decide`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Decided {
    Done,
    NotFound,
    /// The approver is the caller who asked.
    OwnCall,
    /// No longer pending (decided, used or expired): carries the state now.
    NotPending(State),
}

/// What [`Store::consume`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Consumed {
    /// This call used the approval: forward the call, once.
    Used,
    NotFound,
    OtherBinding,
    /// Not approved and unused: carries the state now.
    NotApproved(State),
}

#[derive(Debug)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(format!("sqlite: {e}"))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError(format!("postgres: {e}"))
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// The schema, written once for both engines; `{SEQ}` is the event counter's
/// type, which is the one thing they spell differently.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    binding_key TEXT NOT NULL,
    subject TEXT NOT NULL,
    tenant TEXT NOT NULL,
    tool TEXT NOT NULL,
    args_sha256 TEXT NOT NULL,
    policy_sha256 TEXT NOT NULL,
    rule TEXT NOT NULL,
    summary TEXT NOT NULL,
    state TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    decided_by TEXT,
    reason TEXT,
    decided_ms BIGINT,
    used_ms BIGINT
);
CREATE UNIQUE INDEX IF NOT EXISTS approvals_open_binding
    ON approvals (binding_key) WHERE state IN ('pending', 'approved');
CREATE INDEX IF NOT EXISTS approvals_state_expires ON approvals (state, expires_ms);
CREATE INDEX IF NOT EXISTS approvals_created ON approvals (created_ms);
CREATE TABLE IF NOT EXISTS approval_events (
    seq {SEQ},
    approval_id TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS approval_events_id ON approval_events (approval_id, seq);
CREATE TABLE IF NOT EXISTS approver_sessions (
    id_sha256 TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    csrf TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
";

const COLUMNS: &str =
    "id, subject, tenant, tool, args_sha256, policy_sha256, rule, summary, state, \
     created_ms, expires_ms, decided_by, reason, decided_ms, used_ms";

// The statements, in PostgreSQL's `$n` placeholders; SQLite reads the same
// text with `?n` (see `lite`).
const EXPIRE_DUE: &str = "UPDATE approvals SET state = 'expired' \
     WHERE state IN ('pending', 'approved') AND expires_ms <= $1 RETURNING id";
const FIND_OPEN: &str = "SELECT {COLUMNS} FROM approvals \
     WHERE binding_key = $1 AND state IN ('pending', 'approved', 'denied') AND expires_ms > $2 \
     ORDER BY created_ms DESC LIMIT 1";
const INSERT: &str = "INSERT INTO approvals (id, binding_key, subject, tenant, tool, args_sha256, \
     policy_sha256, rule, summary, state, created_ms, expires_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11) ON CONFLICT DO NOTHING";
const GET: &str = "SELECT {COLUMNS} FROM approvals WHERE id = $1";
const DECIDE: &str = "UPDATE approvals SET state = $2, decided_by = $3, reason = $4, \
     decided_ms = $5, expires_ms = $6 \
     WHERE id = $1 AND state = 'pending' AND expires_ms > $5 AND subject <> $3";
const CONSUME: &str = "UPDATE approvals SET state = 'used', used_ms = $3 \
     WHERE id = $1 AND binding_key = $2 AND state = 'approved' AND expires_ms > $3";
const PENDING: &str =
    "SELECT {COLUMNS} FROM approvals WHERE state = 'pending' AND expires_ms > $1 \
     ORDER BY created_ms, id LIMIT $2";
const HISTORY: &str =
    "SELECT {COLUMNS} FROM approvals WHERE state <> 'pending' OR expires_ms <= $1 \
     ORDER BY created_ms DESC, id LIMIT $2";
const EVENT: &str =
    "INSERT INTO approval_events (approval_id, ts_ms, kind, actor, detail) VALUES ($1, $2, $3, $4, $5)";
const EVENTS: &str = "SELECT seq, approval_id, ts_ms, kind, actor, detail FROM approval_events \
     WHERE approval_id = $1 ORDER BY seq";
const SESSION_INSERT: &str =
    "INSERT INTO approver_sessions (id_sha256, subject, csrf, expires_ms) VALUES ($1, $2, $3, $4)";
const SESSION_GET: &str =
    "SELECT subject, csrf FROM approver_sessions WHERE id_sha256 = $1 AND expires_ms > $2";
const SESSION_DELETE: &str =
    "DELETE FROM approver_sessions WHERE id_sha256 = $1 OR expires_ms <= $2";

fn with_columns(sql: &str) -> String {
    sql.replace("{COLUMNS}", COLUMNS)
}

/// An approver's session: who, and the CSRF token of their forms.
pub struct Session {
    pub subject: String,
    pub csrf: String,
}

pub enum Store {
    Sqlite(RefCell<rusqlite::Connection>),
    Postgres(tokio::sync::Mutex<tokio_postgres::Client>),
}

impl Store {
    /// Open (creating if missing) the SQLite database at `path`.
    pub fn open_sqlite(path: &Path) -> Result<Store> {
        let conn = rusqlite::Connection::open(path)?;
        // WAL: readers (the page) do not wait for the writer; FULL sync: an
        // answered decision survives a power loss. busy_timeout: another
        // process on the same file (a second `serve` by mistake, a backup)
        // makes us wait, not fail at once.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(&SCHEMA.replace("{SEQ}", "INTEGER PRIMARY KEY AUTOINCREMENT"))?;
        Ok(Store::Sqlite(RefCell::new(conn)))
    }

    /// Connect to PostgreSQL (`postgres://user@host:port/db`) and create the
    /// tables if missing. The connection is driven by a task on the current
    /// (one-thread) runtime, so this must run inside a `LocalSet`.
    pub async fn open_postgres(url: &str) -> Result<Store> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::task::spawn_local(async move {
            if let Err(e) = connection.await {
                eprintln!("error: postgres connection lost: {e}");
            }
        });
        // Two replicas starting at once may both try to create the tables:
        // an advisory lock makes one wait for the other.
        client
            .batch_execute(&format!(
                "SELECT pg_advisory_lock(7262031); {} SELECT pg_advisory_unlock(7262031);",
                SCHEMA.replace("{SEQ}", "BIGSERIAL PRIMARY KEY")
            ))
            .await?;
        Ok(Store::Postgres(tokio::sync::Mutex::new(client)))
    }

    /// Find the open request for this exact binding (pending, approved and
    /// unused, or denied, and not expired), else create one. The bool says
    /// whether it was created by this call.
    pub async fn create_or_find(&self, new: &NewApproval, now: i64) -> Result<(Approval, bool)> {
        let key = new.binding.key();
        let b = &new.binding;
        let expires = now.saturating_add(new.ttl_ms);
        match self {
            Store::Sqlite(conn) => {
                let mut conn = conn.borrow_mut();
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                lite::expire_due(&tx, now)?;
                if let Some(found) = lite::one(&tx, &with_columns(FIND_OPEN), (&key, now))? {
                    tx.commit()?;
                    return Ok((found, false));
                }
                let inserted = tx.execute(
                    &lite::sql(INSERT),
                    rusqlite::params![
                        new.id,
                        key,
                        b.subject,
                        b.tenant,
                        b.tool,
                        b.args_sha256,
                        b.policy_sha256,
                        new.rule,
                        new.summary,
                        now,
                        expires
                    ],
                )?;
                if inserted == 1 {
                    lite::event(
                        &tx,
                        &new.id,
                        now,
                        "requested",
                        Some(&b.subject),
                        Some(&new.rule),
                    )?;
                }
                let found = lite::one(&tx, &with_columns(FIND_OPEN), (&key, now))?;
                tx.commit()?;
                found
                    .map(|a| (a, inserted == 1))
                    .ok_or_else(|| StoreError("request vanished after insert".into()))
            }
            Store::Postgres(client) => {
                let mut client = client.lock().await;
                let tx = client.transaction().await?;
                pg::expire_due(&tx, now).await?;
                let find = with_columns(FIND_OPEN);
                if let Some(found) = pg::one(&tx, &find, &[&key, &now]).await? {
                    tx.commit().await?;
                    return Ok((found, false));
                }
                // ON CONFLICT DO NOTHING: a replica that inserted the same
                // binding first wins; this one then finds its row.
                let inserted = tx
                    .execute(
                        INSERT,
                        &[
                            &new.id,
                            &key,
                            &b.subject,
                            &b.tenant,
                            &b.tool,
                            &b.args_sha256,
                            &b.policy_sha256,
                            &new.rule,
                            &new.summary,
                            &now,
                            &expires,
                        ],
                    )
                    .await?;
                if inserted == 1 {
                    pg::event(
                        &tx,
                        &new.id,
                        now,
                        "requested",
                        Some(&b.subject),
                        Some(&new.rule),
                    )
                    .await?;
                }
                let found = pg::one(&tx, &find, &[&key, &now]).await?;
                tx.commit().await?;
                found
                    .map(|a| (a, inserted == 1))
                    .ok_or_else(|| StoreError("request vanished after insert".into()))
            }
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Approval>> {
        let sql = with_columns(GET);
        match self {
            Store::Sqlite(conn) => lite::one(&conn.borrow(), &sql, [id]),
            Store::Postgres(client) => pg::one(&*client.lock().await, &sql, &[&id]).await,
        }
    }

    /// Approve or deny a pending request as `approver`. An approved request
    /// may then be used until `now + approved_ttl_ms`; a denied one keeps its
    /// expiry, so the same call asked again before then is answered denied.
    pub async fn decide(
        &self,
        id: &str,
        approver: &super::config::Approver,
        approve: bool,
        reason: &str,
        now: i64,
        approved_ttl_ms: i64,
    ) -> Result<Decided> {
        let Some(current) = self.get(id).await? else {
            return Ok(Decided::NotFound);
        };
        let (state, kind) = if approve {
            (State::Approved, "approved")
        } else {
            (State::Denied, "denied")
        };
        let expires = if approve {
            now.saturating_add(approved_ttl_ms)
        } else {
            current.expires_ms
        };
        let refused = |outcome: Decided| -> (Decided, String) {
            let detail = match &outcome {
                Decided::OwnCall => "own call".to_string(),
                Decided::NotPending(s) => format!("state {}", s.as_str()),
                _ => String::new(),
            };
            (outcome, detail)
        };
        let own = approver.is_caller(&current.binding.subject);
        let approver = approver.subject.as_str();
        let pre = if own {
            Some(refused(Decided::OwnCall))
        } else {
            None
        };
        match self {
            Store::Sqlite(conn) => {
                let mut conn = conn.borrow_mut();
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let outcome = match pre {
                    Some(p) => p,
                    None => {
                        let n = tx.execute(
                            &lite::sql(DECIDE),
                            rusqlite::params![id, state.as_str(), approver, reason, now, expires],
                        )?;
                        if n == 1 {
                            lite::event(&tx, id, now, kind, Some(approver), Some(reason))?;
                            (Decided::Done, String::new())
                        } else {
                            let s = lite::one(&tx, &with_columns(GET), [id])?
                                .map_or(State::Expired, |a| a.state_at(now));
                            refused(Decided::NotPending(s))
                        }
                    }
                };
                if outcome.0 != Decided::Done {
                    lite::event(
                        &tx,
                        id,
                        now,
                        "decision_refused",
                        Some(approver),
                        Some(&outcome.1),
                    )?;
                }
                tx.commit()?;
                Ok(outcome.0)
            }
            Store::Postgres(client) => {
                let mut client = client.lock().await;
                let tx = client.transaction().await?;
                let outcome = match pre {
                    Some(p) => p,
                    None => {
                        let n = tx
                            .execute(
                                DECIDE,
                                &[&id, &state.as_str(), &approver, &reason, &now, &expires],
                            )
                            .await?;
                        if n == 1 {
                            pg::event(&tx, id, now, kind, Some(approver), Some(reason)).await?;
                            (Decided::Done, String::new())
                        } else {
                            let s = pg::one(&tx, &with_columns(GET), &[&id])
                                .await?
                                .map_or(State::Expired, |a| a.state_at(now));
                            refused(Decided::NotPending(s))
                        }
                    }
                };
                if outcome.0 != Decided::Done {
                    pg::event(
                        &tx,
                        id,
                        now,
                        "decision_refused",
                        Some(approver),
                        Some(&outcome.1),
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(outcome.0)
            }
        }
    }

    /// Use an approved, unexpired approval for a call with this binding:
    /// [`Consumed::Used`] for exactly one caller, ever.
    pub async fn consume(&self, id: &str, binding: &Binding, now: i64) -> Result<Consumed> {
        let key = binding.key();
        match self {
            Store::Sqlite(conn) => {
                let mut conn = conn.borrow_mut();
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let n = tx.execute(&lite::sql(CONSUME), rusqlite::params![id, key, now])?;
                let outcome = if n == 1 {
                    lite::event(&tx, id, now, "used", Some(&binding.subject), None)?;
                    Consumed::Used
                } else {
                    match lite::one(&tx, &with_columns(GET), [id])? {
                        None => Consumed::NotFound,
                        Some(a) => refused_use(&a, &key, now),
                    }
                };
                if let Some(detail) = use_refusal_detail(&outcome) {
                    lite::event(
                        &tx,
                        id,
                        now,
                        "use_refused",
                        Some(&binding.subject),
                        Some(&detail),
                    )?;
                }
                tx.commit()?;
                Ok(outcome)
            }
            Store::Postgres(client) => {
                let mut client = client.lock().await;
                let tx = client.transaction().await?;
                let n = tx.execute(CONSUME, &[&id, &key, &now]).await?;
                let outcome = if n == 1 {
                    pg::event(&tx, id, now, "used", Some(&binding.subject), None).await?;
                    Consumed::Used
                } else {
                    match pg::one(&tx, &with_columns(GET), &[&id]).await? {
                        None => Consumed::NotFound,
                        Some(a) => refused_use(&a, &key, now),
                    }
                };
                if let Some(detail) = use_refusal_detail(&outcome) {
                    pg::event(
                        &tx,
                        id,
                        now,
                        "use_refused",
                        Some(&binding.subject),
                        Some(&detail),
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(outcome)
            }
        }
    }

    /// Record `expired` for every pending or approved request past its
    /// expiry; answers how many.
    pub async fn expire_due(&self, now: i64) -> Result<usize> {
        match self {
            Store::Sqlite(conn) => {
                let mut conn = conn.borrow_mut();
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let n = lite::expire_due(&tx, now)?;
                tx.commit()?;
                Ok(n)
            }
            Store::Postgres(client) => {
                let mut client = client.lock().await;
                let tx = client.transaction().await?;
                let n = pg::expire_due(&tx, now).await?;
                tx.commit().await?;
                Ok(n)
            }
        }
    }

    /// Pending requests, oldest first.
    pub async fn pending(&self, now: i64, limit: i64) -> Result<Vec<Approval>> {
        let sql = with_columns(PENDING);
        match self {
            Store::Sqlite(conn) => lite::all(&conn.borrow(), &sql, (now, limit)),
            Store::Postgres(client) => pg::all(&*client.lock().await, &sql, &[&now, &limit]).await,
        }
    }

    /// Everything no longer pending, newest first.
    pub async fn history(&self, now: i64, limit: i64) -> Result<Vec<Approval>> {
        let sql = with_columns(HISTORY);
        match self {
            Store::Sqlite(conn) => lite::all(&conn.borrow(), &sql, (now, limit)),
            Store::Postgres(client) => pg::all(&*client.lock().await, &sql, &[&now, &limit]).await,
        }
    }

    pub async fn events(&self, id: &str) -> Result<Vec<Event>> {
        match self {
            Store::Sqlite(conn) => {
                let conn = conn.borrow();
                let mut stmt = conn.prepare_cached(&lite::sql(EVENTS))?;
                let rows = stmt.query_map([id], |r| {
                    Ok(Event {
                        seq: r.get(0)?,
                        approval_id: r.get(1)?,
                        ts_ms: r.get(2)?,
                        kind: r.get(3)?,
                        actor: r.get(4)?,
                        detail: r.get(5)?,
                    })
                })?;
                Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
            }
            Store::Postgres(client) => {
                let rows = client.lock().await.query(EVENTS, &[&id]).await?;
                rows.iter()
                    .map(|r| {
                        Ok(Event {
                            seq: r.try_get(0)?,
                            approval_id: r.try_get(1)?,
                            ts_ms: r.try_get(2)?,
                            kind: r.try_get(3)?,
                            actor: r.try_get(4)?,
                            detail: r.try_get(5)?,
                        })
                    })
                    .collect()
            }
        }
    }

    /// Store a session by the SHA-256 of its id (a copy of the database does
    /// not give anyone a session), dropping expired ones on the way.
    pub async fn create_session(
        &self,
        id_sha256: &str,
        session: &Session,
        now: i64,
        expires_ms: i64,
    ) -> Result<()> {
        match self {
            Store::Sqlite(conn) => {
                let conn = conn.borrow();
                conn.execute(
                    &lite::sql(SESSION_DELETE),
                    rusqlite::params![id_sha256, now],
                )?;
                conn.execute(
                    &lite::sql(SESSION_INSERT),
                    rusqlite::params![id_sha256, session.subject, session.csrf, expires_ms],
                )?;
            }
            Store::Postgres(client) => {
                let client = client.lock().await;
                client.execute(SESSION_DELETE, &[&id_sha256, &now]).await?;
                client
                    .execute(
                        SESSION_INSERT,
                        &[&id_sha256, &session.subject, &session.csrf, &expires_ms],
                    )
                    .await?;
            }
        }
        Ok(())
    }

    pub async fn session(&self, id_sha256: &str, now: i64) -> Result<Option<Session>> {
        match self {
            Store::Sqlite(conn) => {
                let conn = conn.borrow();
                let mut stmt = conn.prepare_cached(&lite::sql(SESSION_GET))?;
                let mut rows = stmt.query(rusqlite::params![id_sha256, now])?;
                match rows.next()? {
                    Some(r) => Ok(Some(Session {
                        subject: r.get(0)?,
                        csrf: r.get(1)?,
                    })),
                    None => Ok(None),
                }
            }
            Store::Postgres(client) => {
                let rows = client
                    .lock()
                    .await
                    .query(SESSION_GET, &[&id_sha256, &now])
                    .await?;
                match rows.first() {
                    Some(r) => Ok(Some(Session {
                        subject: r.try_get(0)?,
                        csrf: r.try_get(1)?,
                    })),
                    None => Ok(None),
                }
            }
        }
    }

    pub async fn delete_session(&self, id_sha256: &str, now: i64) -> Result<()> {
        match self {
            Store::Sqlite(conn) => {
                conn.borrow().execute(
                    &lite::sql(SESSION_DELETE),
                    rusqlite::params![id_sha256, now],
                )?;
            }
            Store::Postgres(client) => {
                client
                    .lock()
                    .await
                    .execute(SESSION_DELETE, &[&id_sha256, &now])
                    .await?;
            }
        }
        Ok(())
    }
}

fn refused_use(a: &Approval, key: &str, now: i64) -> Consumed {
    // The binding is checked first: whoever holds an id but not the call it
    // was approved for learns nothing about its state.
    if a.binding.key() != key {
        Consumed::OtherBinding
    } else {
        Consumed::NotApproved(a.state_at(now))
    }
}

fn use_refusal_detail(c: &Consumed) -> Option<String> {
    match c {
        Consumed::Used | Consumed::NotFound => None,
        Consumed::OtherBinding => Some("other binding".into()),
        Consumed::NotApproved(s) => Some(format!("state {}", s.as_str())),
    }
}

/// SQLite's side: the shared statements with `?n` placeholders.
mod lite {
    use super::{Approval, Binding, Result, State, EVENT, EXPIRE_DUE};
    use rusqlite::{Connection, Params, Row};

    pub fn sql(pg: &str) -> String {
        pg.replace('$', "?")
    }

    fn approval(r: &Row<'_>) -> rusqlite::Result<(Approval, String)> {
        let state: String = r.get(8)?;
        Ok((
            Approval {
                id: r.get(0)?,
                binding: Binding {
                    subject: r.get(1)?,
                    tenant: r.get(2)?,
                    tool: r.get(3)?,
                    args_sha256: r.get(4)?,
                    policy_sha256: r.get(5)?,
                },
                rule: r.get(6)?,
                summary: r.get(7)?,
                state: State::Pending,
                created_ms: r.get(9)?,
                expires_ms: r.get(10)?,
                decided_by: r.get(11)?,
                reason: r.get(12)?,
                decided_ms: r.get(13)?,
                used_ms: r.get(14)?,
            },
            state,
        ))
    }

    pub fn all(conn: &Connection, pg_sql: &str, params: impl Params) -> Result<Vec<Approval>> {
        let mut stmt = conn.prepare_cached(&sql(pg_sql))?;
        let rows = stmt.query_map(params, approval)?;
        let mut out = Vec::new();
        for row in rows {
            let (mut a, state) = row?;
            a.state = State::parse(&state)?;
            out.push(a);
        }
        Ok(out)
    }

    pub fn one(conn: &Connection, pg_sql: &str, params: impl Params) -> Result<Option<Approval>> {
        Ok(all(conn, pg_sql, params)?.into_iter().next())
    }

    pub fn event(
        conn: &Connection,
        id: &str,
        now: i64,
        kind: &str,
        actor: Option<&str>,
        detail: Option<&str>,
    ) -> Result<()> {
        conn.execute(&sql(EVENT), rusqlite::params![id, now, kind, actor, detail])?;
        Ok(())
    }

    pub fn expire_due(conn: &Connection, now: i64) -> Result<usize> {
        let ids: Vec<String> = {
            let mut stmt = conn.prepare_cached(&sql(EXPIRE_DUE))?;
            let rows = stmt.query_map([now], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for id in &ids {
            event(conn, id, now, "expired", None, None)?;
        }
        Ok(ids.len())
    }
}

/// PostgreSQL's side.
mod pg {
    use super::{Approval, Binding, Result, State, EVENT, EXPIRE_DUE};
    use tokio_postgres::types::ToSql;
    use tokio_postgres::{GenericClient, Row};

    fn approval(r: &Row) -> Result<Approval> {
        let state: String = r.try_get(8)?;
        Ok(Approval {
            id: r.try_get(0)?,
            binding: Binding {
                subject: r.try_get(1)?,
                tenant: r.try_get(2)?,
                tool: r.try_get(3)?,
                args_sha256: r.try_get(4)?,
                policy_sha256: r.try_get(5)?,
            },
            rule: r.try_get(6)?,
            summary: r.try_get(7)?,
            state: State::parse(&state)?,
            created_ms: r.try_get(9)?,
            expires_ms: r.try_get(10)?,
            decided_by: r.try_get(11)?,
            reason: r.try_get(12)?,
            decided_ms: r.try_get(13)?,
            used_ms: r.try_get(14)?,
        })
    }

    pub async fn all(
        c: &impl GenericClient,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Approval>> {
        c.query(sql, params).await?.iter().map(approval).collect()
    }

    pub async fn one(
        c: &impl GenericClient,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Approval>> {
        Ok(all(c, sql, params).await?.into_iter().next())
    }

    pub async fn event(
        c: &impl GenericClient,
        id: &str,
        now: i64,
        kind: &str,
        actor: Option<&str>,
        detail: Option<&str>,
    ) -> Result<()> {
        c.execute(EVENT, &[&id, &now, &kind, &actor, &detail])
            .await?;
        Ok(())
    }

    pub async fn expire_due(c: &impl GenericClient, now: i64) -> Result<usize> {
        let rows = c.query(EXPIRE_DUE, &[&now]).await?;
        for r in &rows {
            let id: String = r.try_get(0)?;
            event(c, &id, now, "expired", None, None).await?;
        }
        Ok(rows.len())
    }
}
