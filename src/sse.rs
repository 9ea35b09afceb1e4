//! Incremental `text/event-stream` framing (WHATWG HTML §9.2 "Server-sent events").
//!
//! Envoy hands us the body in whatever chunks the server flushed, so one event
//! can be split anywhere, even between the CR and LF of a line ending. We keep
//! the unfinished tail and only ever process whole events.

/// The framer refused an event larger than its cap: the caller fails closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTooLarge(pub usize);

#[derive(Debug)]
pub struct SseFramer {
    /// Bytes of the event not yet complete.
    pending: Vec<u8>,
    /// Where scanning resumes inside `pending` (everything before was seen).
    scan_from: usize,
    /// Whether the line being scanned has no characters so far.
    line_empty: bool,
    cap: usize,
    /// Whether the stream's first bytes were seen (and a BOM dropped).
    started: bool,
}

/// UTF-8's byte order mark. An event stream's decoder drops one at the start
/// (HTML §9.2.6), so `\u{feff}data: {...}` is an event with data to every
/// client: it must be one to us too, not a line with an unknown field.
const BOM: &[u8] = b"\xef\xbb\xbf";

impl SseFramer {
    pub fn new(cap: usize) -> Self {
        SseFramer {
            pending: Vec::new(),
            scan_from: 0,
            line_empty: true,
            cap,
            started: false,
        }
    }

    /// Feed a chunk; returns every event completed by it (each with its terminator).
    /// An event ends with an empty line; a line ends with CRLF, LF or CR.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, EventTooLarge> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        if !self.started {
            if self.pending.len() < BOM.len() && BOM.starts_with(&self.pending) {
                // Maybe the start of a BOM split across chunks: wait for more.
                return Ok(events);
            }
            if self.pending.starts_with(BOM) {
                self.pending.drain(..BOM.len());
            }
            self.started = true;
        }
        let mut start = 0usize;
        let mut i = self.scan_from;
        while let Some(&b) = self.pending.get(i) {
            let term_len = match b {
                b'\n' => 1,
                b'\r' => match self.pending.get(i + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A CR at the end of the data may be half of a CRLF: wait.
                    None => break,
                },
                _ => {
                    self.line_empty = false;
                    i += 1;
                    continue;
                }
            };
            let end = i + term_len;
            if self.line_empty {
                events.push(
                    self.pending
                        .get(start..end)
                        .map(<[u8]>::to_vec)
                        .unwrap_or_default(),
                );
                start = end;
            }
            self.line_empty = true;
            i = end;
        }
        self.pending.drain(..start);
        self.scan_from = i - start;
        if self.pending.len() > self.cap {
            return Err(EventTooLarge(self.cap));
        }
        Ok(events)
    }

    /// What is left when the stream ends (an unterminated final event).
    pub fn finish(&mut self) -> Vec<u8> {
        self.scan_from = 0;
        self.line_empty = true;
        std::mem::take(&mut self.pending)
    }
}

/// One SSE event split into fields, keeping everything but `data` verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Non-data lines (`event:`, `id:`, `retry:`, comments) in order.
    pub other_lines: Vec<String>,
    /// The data lines joined with `\n`, or None when the event has none.
    pub data: Option<String>,
}

impl Event {
    /// Whether clients read the event's data as a message: its type (the
    /// last `event:` field) is `message` or empty, or it has none. The SDKs
    /// read no other (TS: `!event.event || event.event === 'message'`;
    /// Python: `sse.event == "message"`, its default).
    pub fn read_as_message(&self) -> bool {
        let kind = self.other_lines.iter().rev().find_map(|line| {
            let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            (field == "event").then(|| value.strip_prefix(' ').unwrap_or(value))
        });
        matches!(kind, None | Some("" | "message"))
    }
}

/// Parse a complete raw event. `None` if it is not UTF-8 (the caller fails closed).
pub fn parse_event(raw: &[u8]) -> Option<Event> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut other_lines = Vec::new();
    let mut data: Option<String> = None;
    for line in split_lines(text) {
        if line.is_empty() {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        } else {
            other_lines.push(line.to_owned());
        }
    }
    Some(Event { other_lines, data })
}

fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n').flat_map(|l| l.split('\r'))
}

impl Event {
    /// Serialise with `data` as one line per `\n` in it, LF line endings.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        for l in &self.other_lines {
            out.push_str(l);
            out.push('\n');
        }
        if let Some(d) = &self.data {
            for l in d.split('\n') {
                out.push_str("data: ");
                out.push_str(l);
                out.push('\n');
            }
        }
        out.push('\n');
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut f = SseFramer::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(f.push(c).unwrap_or_default());
        }
        let rest = f.finish();
        (out, rest)
    }

    #[test]
    fn framing_table() {
        let whole: &[u8] = b"event: message\ndata: {\"a\":1}\n\nid: 2\ndata: x\n\n";
        let cases: Vec<(&str, Vec<&[u8]>, usize)> = vec![
            ("two_events_in_one_chunk", vec![whole], 2),
            ("split_mid_line", vec![&whole[..10], &whole[10..]], 2),
            (
                "split_between_terminators",
                vec![&whole[..27], &whole[27..]],
                2,
            ),
            (
                "crlf_split_between_cr_and_lf",
                vec![b"data: a\r\n\r", b"\ndata: b\r\n\r\n"],
                2,
            ),
            (
                "lone_cr_terminators",
                vec![b"data: a\r\rdata: b\r\r", b":"],
                2,
            ),
            // A trailing CR might be the first half of CRLF: the event waits.
            ("trailing_cr_waits_for_next_byte", vec![b"data: a\r\r"], 0),
            ("unterminated_event_is_not_emitted", vec![b"data: a\n"], 0),
        ];
        for (name, chunks, n) in cases {
            let (events, _) = feed_all(&chunks);
            assert_eq!(events.len(), n, "{name}: {events:?}");
        }
        // Byte-at-a-time feeding finds the same events as one chunk.
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        let (one_by_one, rest) = feed_all(&bytes);
        let (at_once, _) = feed_all(&[whole]);
        assert_eq!(one_by_one, at_once);
        assert!(rest.is_empty());
    }

    #[test]
    fn a_leading_bom_is_dropped_as_clients_drop_it() {
        /// (case, chunks as the server flushed them, the events' bytes)
        type Case<'a> = (&'a str, Vec<&'a [u8]>, &'a [u8]);
        let cases: Vec<Case> = vec![
            (
                "bom_then_event",
                vec![b"\xef\xbb\xbfdata: x\n\n"],
                b"data: x\n\n",
            ),
            (
                "bom_split_across_chunks",
                vec![b"\xef", b"\xbb", b"\xbfdata: x\n\n"],
                b"data: x\n\n",
            ),
            // Only the stream's first BOM: a later one is part of a field name
            // that every client ignores, so the event is left as it is.
            (
                "later_bom_is_kept",
                vec![b"data: a\n\n\xef\xbb\xbfdata: x\n\n"],
                b"data: a\n\n\xef\xbb\xbfdata: x\n\n",
            ),
        ];
        for (name, chunks, want) in cases {
            let (events, _) = feed_all(&chunks);
            assert_eq!(events.concat(), want.to_vec(), "{name}");
        }
        let e = parse_event(b"data: x\n\n");
        assert_eq!(e.and_then(|e| e.data), Some("x".into()));
    }

    #[test]
    fn parse_joins_data_lines_and_keeps_other_fields() {
        let e = parse_event(b"event: message\nid: 7\ndata: {\"a\":\ndata: 1}\n\n");
        assert_eq!(
            e,
            Some(Event {
                other_lines: vec!["event: message".into(), "id: 7".into()],
                data: Some("{\"a\":\n1}".into()),
            })
        );
    }

    #[test]
    fn oversized_event_is_refused() {
        let mut f = SseFramer::new(8);
        assert_eq!(f.push(b"data: 0123456789"), Err(EventTooLarge(8)));
    }

    #[test]
    fn rewritten_event_round_trips() {
        let e = Event {
            other_lines: vec!["event: message".into()],
            data: Some("{}".into()),
        };
        assert_eq!(e.to_bytes(), b"event: message\ndata: {}\n\n".to_vec());
        assert_eq!(parse_event(&e.to_bytes()), Some(e));
    }
}
