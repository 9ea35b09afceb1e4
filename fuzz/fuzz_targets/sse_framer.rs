//! The incremental text/event-stream framer, fed the same stream in different
//! chunkings (Envoy delivers whatever the server flushed).
//!
//! Input layout, chosen so seeds are easy to write by hand: byte 0 holds the
//! number of cut points (low 4 bits), then two bytes per cut point
//! (little-endian, taken modulo the stream length), then the stream itself. A
//! seed with byte 0 = 0x00 is just "0x00 + an SSE stream".
//!
//! Invariants, for the chunked feed, a one-chunk feed and a byte-at-a-time feed:
//! * the emitted events followed by `finish()` are exactly the input bytes
//!   but for one leading UTF-8 BOM, which the framer drops as clients do:
//!   nothing lost, duplicated or reordered (a lost byte is an unscanned byte);
//! * all three feeds emit the same events and leave the same remainder;
//! * every event ends with a blank line (LF, CR or CRLF terminating an empty
//!   line), so it is complete, and `parse_event` never panics on it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_firewall::sse::{parse_event, SseFramer};

const CAP: usize = 1 << 16;

/// Events and remainder, or None if the framer refused an oversized event
/// (inputs are far below the cap, but an unfinished event split over chunks is
/// measured per chunk, so the chunkings may legitimately differ there).
fn feed<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Option<(Vec<Vec<u8>>, Vec<u8>)> {
    let mut framer = SseFramer::new(CAP);
    let mut events = Vec::new();
    for c in chunks {
        events.extend(framer.push(c).ok()?);
    }
    Some((events, framer.finish()))
}

fn ends_with_blank_line(e: &[u8]) -> bool {
    // The final terminator, then the one before it (which ends the last
    // non-empty line) — or the event is only a terminator (an empty event).
    let strip = |s: &[u8]| -> Option<usize> {
        if s.ends_with(b"\r\n") {
            Some(s.len() - 2)
        } else if s.ends_with(b"\n") || s.ends_with(b"\r") {
            Some(s.len() - 1)
        } else {
            None
        }
    };
    match strip(e) {
        None => false,
        Some(0) => true,
        Some(n) => e.get(..n).and_then(strip).is_some(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let n_cuts = usize::from(head & 0x0f);
    let Some((cut_bytes, stream)) = rest.split_at_checked(n_cuts * 2) else {
        return;
    };
    let mut cuts: Vec<usize> = cut_bytes
        .chunks_exact(2)
        .map(|p| usize::from(u16::from_le_bytes([p[0], p[1]])) % (stream.len() + 1))
        .collect();
    cuts.push(0);
    cuts.push(stream.len());
    cuts.sort_unstable();
    let chunked = cuts.windows(2).map(|w| &stream[w[0]..w[1]]);

    let Some((events, remainder)) = feed(chunked) else {
        return;
    };
    let mut joined: Vec<u8> = events.concat();
    joined.extend_from_slice(&remainder);
    // One UTF-8 BOM at the stream's start is dropped, as clients drop it
    // (WHATWG "Server-sent events", 9.2.5): every other byte comes out.
    let expected = stream.strip_prefix(b"\xef\xbb\xbf").unwrap_or(stream);
    assert_eq!(joined, expected, "events + remainder differ from the input");
    for e in &events {
        assert!(
            ends_with_blank_line(e),
            "event not ended by a blank line: {e:?}"
        );
        let _ = parse_event(e);
    }

    if let Some(whole) = feed(std::iter::once(stream)) {
        assert_eq!(
            whole,
            (events.clone(), remainder.clone()),
            "one chunk vs chunked"
        );
    }
    if let Some(bytewise) = feed(stream.chunks(1)) {
        assert_eq!(bytewise, (events, remainder), "byte at a time vs chunked");
    }
});
