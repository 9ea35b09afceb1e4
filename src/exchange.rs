//! One HTTP exchange driven through [`RequestFilter`] on the in-memory host,
//! the way Envoy drives a proxy-wasm HTTP filter. The filter's unit tests, the
//! `filter_request` fuzz target, the CLI's agreement test and the profiling
//! example all run exchanges with it, so they exercise the same callback order.
//!
//! ```text
//! request headers ─▶ request body in chunks ─▶ [request trailers]
//!   ─▶ response headers ─▶ response body in chunks ─▶ [response trailers] ─▶ done
//! ```
//!
//! What Envoy does, and so what the driver does:
//! * the request-headers callback learns whether the headers end the stream;
//!   when a body follows, the filter must `Pause` (with
//!   `allow_on_headers_stop_iteration` the router opens no upstream request
//!   until it continues), and the driver asserts it did; a policy that says
//!   the host lacks that flag must `Continue` instead (Envoy would never call
//!   the body callbacks), and the driver asserts that;
//! * once body callbacks start, request headers can no longer be read or
//!   written (Envoy answers BadArgument): the host is told so;
//! * a body callback that answers `Pause` leaves its bytes buffered and the
//!   next callback sees the whole buffer; `Continue` releases the buffer (the
//!   request body upstream, the response body downstream to the client);
//! * trailers end a stream without an end-of-stream body callback;
//! * after a local reply no further request callback comes; `on_done` (the
//!   log phase) always does.
//!
//! One thing it does stricter than Envoy: after the filter resets the stream
//! the callbacks go on, so a test sees that the filter holds the bytes itself
//! rather than relying on the reset.
//!
//! Only with `cargo test` or the `fake-host` feature; never in the wasm.

use crate::filter::RequestFilter;
use crate::host::fake::FakeHost;
use crate::host::Flow;
use crate::policy::CompiledPolicy;
use crate::reply::LocalReply;
use std::rc::Rc;

/// The client's side: a request body and how it arrives.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    body: &'a [u8],
    chunk: usize,
    trailers: bool,
    open_headers: bool,
}

impl<'a> Request<'a> {
    /// The body arrives whole, in one end-of-stream callback (none if empty).
    pub fn new(body: &'a [u8]) -> Self {
        Request {
            body,
            ..Default::default()
        }
    }
    /// Feed the body in chunks of `n` bytes (0 = all at once).
    pub fn chunk(mut self, n: usize) -> Self {
        self.chunk = n;
        self
    }
    /// End the stream with trailers instead of an end-of-stream body callback.
    pub fn trailers(mut self) -> Self {
        self.trailers = true;
        self
    }
    /// The headers do not end the stream even when the body is empty: one
    /// (empty) body callback follows, as when an HTTP/2 client ends a GET in
    /// an empty DATA frame.
    pub fn headers_leave_stream_open(mut self) -> Self {
        self.open_headers = true;
        self
    }
}

/// The upstream's side: response headers, a body and how it arrives.
#[derive(Debug, Clone, Default)]
pub struct Response<'a> {
    headers: Vec<(String, String)>,
    body: &'a [u8],
    chunk: usize,
    trailers: bool,
}

impl<'a> Response<'a> {
    /// A response carrying `body` with its `content-length`; no `:status` and
    /// no `content-type` until they are given.
    pub fn new(body: &'a [u8]) -> Self {
        Response {
            headers: vec![("content-length".into(), body.len().to_string())],
            body,
            ..Default::default()
        }
    }
    pub fn status(self, status: &str) -> Self {
        self.header(":status", status)
    }
    pub fn content_type(self, content_type: &str) -> Self {
        self.header("content-type", content_type)
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }
    /// Feed the body in chunks of `n` bytes (0 = all at once).
    pub fn chunk(mut self, n: usize) -> Self {
        self.chunk = n;
        self
    }
    /// End the stream with trailers instead of an end-of-stream body callback.
    pub fn trailers(mut self) -> Self {
        self.trailers = true;
        self
    }
}

/// What each callback answered, in order (`None` = not called).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flows {
    pub request_headers: Option<Flow>,
    pub request_body: Vec<Flow>,
    pub request_trailers: Option<Flow>,
    pub response_headers: Option<Flow>,
    pub response_body: Vec<Flow>,
    pub response_trailers: Option<Flow>,
}

impl Flows {
    /// The last request callback's answer: `Continue` lets the request go
    /// upstream. `Pause` when the request side has not run.
    pub fn request(&self) -> Flow {
        self.request_trailers
            .or(self.request_body.last().copied())
            .or(self.request_headers)
            .unwrap_or(Flow::Pause)
    }
    /// The last response callback's answer: `Continue` releases what Envoy
    /// still holds. `Pause` when the response side has not run.
    pub fn response(&self) -> Flow {
        self.response_trailers
            .or(self.response_body.last().copied())
            .or(self.response_headers)
            .unwrap_or(Flow::Pause)
    }
}

/// One exchange: the filter, the host it runs on, and what happened so far.
pub struct Exchange {
    pub filter: RequestFilter,
    /// Counters, audit events, logs, replies, resets, headers as rewritten.
    pub host: FakeHost,
    pub flows: Flows,
    /// The request body bytes released upstream (what the server reads).
    upstream: Vec<u8>,
    /// Whether the policy says the host honours a headers `Pause`.
    hold_headers: bool,
}

impl Exchange {
    pub fn new(policy: Rc<CompiledPolicy>, host: FakeHost) -> Self {
        Exchange {
            hold_headers: policy.hold_headers,
            filter: RequestFilter::new(policy),
            host,
            flows: Flows::default(),
            upstream: Vec::new(),
        }
    }

    /// The request side: headers, the body in chunks, trailers if asked.
    /// Stops at a local reply.
    pub fn request(&mut self, r: Request<'_>) -> &mut Self {
        let open = !r.body.is_empty() || r.trailers || r.open_headers;
        let flow = self.filter.on_request_headers(&mut self.host, !open);
        self.flows.request_headers = Some(flow);
        self.host.headers_readable = false;
        if !open || self.replied() {
            return self;
        }
        match self.hold_headers {
            true => assert_eq!(flow, Flow::Pause, "headers must wait for the body"),
            // Envoy without allow_on_headers_stop_iteration would hang on a Pause.
            false => assert_eq!(flow, Flow::Continue, "only the body may be held"),
        }
        let mut pieces = chunks(r.body, r.chunk);
        if pieces.is_empty() && r.open_headers {
            pieces.push(&[]);
        }
        let n = pieces.len();
        for (i, piece) in pieces.into_iter().enumerate() {
            self.host.request_body.extend_from_slice(piece);
            let size = self.host.request_body.len();
            let end = i + 1 == n && !r.trailers;
            let flow = self.filter.on_request_body(&mut self.host, size, end);
            self.flows.request_body.push(flow);
            if self.replied() {
                return self;
            }
            if flow == Flow::Continue {
                self.upstream.append(&mut self.host.request_body);
            }
        }
        if r.trailers {
            let flow = self.filter.on_request_trailers(&mut self.host);
            self.flows.request_trailers = Some(flow);
            if flow == Flow::Continue && !self.replied() {
                self.upstream.append(&mut self.host.request_body);
            }
        }
        self
    }

    /// The response side: headers, the body in chunks (what Envoy releases
    /// reaches the client), trailers if asked.
    pub fn respond(&mut self, r: Response<'_>) -> &mut Self {
        for (name, value) in r.headers {
            self.host.response_headers.insert(name, value);
        }
        // Headers end the stream when neither a body nor trailers follow.
        let end = r.body.is_empty() && !r.trailers;
        let flow = self.filter.on_response_headers(&mut self.host, end);
        self.flows.response_headers = Some(flow);
        let pieces = chunks(r.body, r.chunk);
        let n = pieces.len();
        for (i, piece) in pieces.into_iter().enumerate() {
            self.host.response_chunk.extend_from_slice(piece);
            let size = self.host.response_chunk.len();
            let end = i + 1 == n && !r.trailers;
            let flow = self.filter.on_response_body(&mut self.host, size, end);
            self.flows.response_body.push(flow);
            if flow == Flow::Continue {
                self.host.downstream.append(&mut self.host.response_chunk);
            }
        }
        if r.trailers {
            let flow = self.filter.on_response_trailers(&mut self.host);
            self.flows.response_trailers = Some(flow);
            // After trailers Envoy sends whatever it still holds.
            if flow == Flow::Continue {
                self.host.downstream.append(&mut self.host.response_chunk);
            }
        }
        self
    }

    /// The approval service answers the stream's last callout (`status`:
    /// its `:status`, `None` for no answer at all); a request the filter
    /// then lets go goes upstream.
    pub fn answer_approval(&mut self, status: Option<u16>, body: &[u8]) -> &mut Self {
        let Some(id) = self.host.callouts.last().map(|c| c.id) else {
            return self;
        };
        let resumed = self.host.resumed;
        let body = (!body.is_empty()).then_some(body);
        self.filter
            .on_approval_answer(&mut self.host, id, status, body);
        if self.host.resumed > resumed && !self.replied() {
            self.upstream.append(&mut self.host.request_body);
            self.flows.request_body.push(Flow::Continue);
        }
        self
    }

    /// The log phase: the exchange is over.
    pub fn done(&mut self) -> &mut Self {
        self.filter.on_done(&mut self.host);
        self
    }

    /// The filter's local reply, if it sent one.
    pub fn reply(&self) -> Option<&LocalReply> {
        self.host.replies.first()
    }

    /// The request went upstream: its last callback continued, with no
    /// local reply and no reset.
    pub fn forwarded(&self) -> bool {
        self.flows.request() == Flow::Continue && !self.replied() && self.host.resets == 0
    }

    /// The request body as the server received it.
    pub fn upstream(&self) -> &[u8] {
        &self.upstream
    }

    /// The response body as the client received it.
    pub fn downstream(&self) -> &[u8] {
        &self.host.downstream
    }

    fn replied(&self) -> bool {
        !self.host.replies.is_empty()
    }
}

/// `body` in pieces of `n` bytes (0 = one piece); none for an empty body.
fn chunks(body: &[u8], n: usize) -> Vec<&[u8]> {
    match n {
        0 if body.is_empty() => Vec::new(),
        0 => vec![body],
        n => body.chunks(n).collect(),
    }
}

#[cfg(test)]
mod tests {
    //! The driver's own shape: which callbacks run, with what, and what each
    //! side releases. The filter's behaviour is tested in `filter::tests`.
    use super::*;
    use crate::policy::compile_str;

    const CALL: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}"#;
    const ANSWER: &[u8] =
        br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}]}}"#;

    fn exchange(method: &str) -> Exchange {
        let policy = match compile_str(include_bytes!("../policies/demo.json")) {
            Ok(p) => Rc::new(p),
            Err(e) => panic!("{e:?}"),
        };
        let host = FakeHost::new()
            .header(":method", method)
            .header("content-type", "application/json")
            .header("authorization", "Bearer demo-reader-key");
        Exchange::new(policy, host)
    }

    struct Case {
        name: &'static str,
        method: &'static str,
        request: Request<'static>,
        /// The request callbacks that ran and what they answered.
        want: Flows,
        upstream: &'static [u8],
    }

    fn flows(headers: Flow, body: Vec<Flow>, trailers: Option<Flow>) -> Flows {
        Flows {
            request_headers: Some(headers),
            request_body: body,
            request_trailers: trailers,
            ..Flows::default()
        }
    }

    #[test]
    fn request_callbacks_follow_the_stream() {
        use Flow::{Continue, Pause};
        let mut chunked = vec![Pause; CALL.len().div_ceil(7) - 1];
        chunked.push(Continue);
        let cases = [
            Case {
                name: "whole_body_in_one_callback",
                method: "POST",
                request: Request::new(CALL),
                want: flows(Pause, vec![Continue], None),
                upstream: CALL,
            },
            Case {
                name: "chunks_of_7_bytes",
                method: "POST",
                request: Request::new(CALL).chunk(7),
                want: flows(Pause, chunked, None),
                upstream: CALL,
            },
            Case {
                name: "trailers_end_the_stream",
                method: "POST",
                request: Request::new(CALL).trailers(),
                want: flows(Pause, vec![Pause], Some(Pause)),
                upstream: b"",
            },
            Case {
                name: "empty_get_ends_in_headers",
                method: "GET",
                request: Request::new(b""),
                want: flows(Continue, vec![], None),
                upstream: b"",
            },
            Case {
                name: "get_ending_in_an_empty_data_frame",
                method: "GET",
                request: Request::new(b"").headers_leave_stream_open(),
                want: flows(Pause, vec![Continue], None),
                upstream: b"",
            },
            Case {
                name: "get_ending_in_trailers",
                method: "GET",
                request: Request::new(b"").trailers(),
                want: flows(Pause, vec![], Some(Pause)),
                upstream: b"",
            },
        ];
        for c in cases {
            let mut x = exchange(c.method);
            x.request(c.request);
            assert_eq!(x.flows, c.want, "{}", c.name);
            assert_eq!(x.upstream(), c.upstream, "{}", c.name);
            let forwarded = c.want.request() == Continue && x.reply().is_none();
            assert_eq!(x.forwarded(), forwarded, "{}", c.name);
        }
    }

    #[test]
    fn response_chunks_reach_the_client_when_released() {
        for chunk in [0, 1, 10] {
            let mut x = exchange("POST");
            x.request(Request::new(CALL));
            x.respond(
                Response::new(ANSWER)
                    .status("200")
                    .content_type("application/json")
                    .chunk(chunk),
            );
            x.done();
            let calls = if chunk == 0 {
                1
            } else {
                ANSWER.len().div_ceil(chunk)
            };
            // A JSON answer to a scanned call is read whole: its headers are
            // held with it, so no client sees a head whose body is cut off.
            assert_eq!(x.flows.response_headers, Some(Flow::Pause), "chunk {chunk}");
            assert_eq!(x.flows.response_body.len(), calls, "chunk {chunk}");
            assert_eq!(x.flows.response(), Flow::Continue, "chunk {chunk}");
            assert_eq!(x.downstream(), ANSWER, "chunk {chunk}");
            assert!(
                x.host.response_chunk.is_empty(),
                "chunk {chunk}: nothing left held"
            );
        }
    }
}
