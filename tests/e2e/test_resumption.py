"""SSE resumption cannot carry an answer around the firewall.

server-everything keeps an event store: a GET that names a ``Last-Event-ID`` makes
it replay every later event of the session, answers to earlier POSTs included,
exactly as the server first wrote them: the whole catalogue a caller's filtered
``tools/list`` hid, the unredacted tool result. The TypeScript client sends such a
GET on its own when a POST stream drops. Through the firewall, an answer on a GET
stream is one whose plan belongs to another exchange: it is replaced by the
documented ``response-unfilterable`` refusal (under the replayed request's id, so
the client's pending request ends), while notifications keep flowing.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from conftest import READER_KEY
from mcp_raw import ACCEPT, open_session, rpc

HIDDEN = "get-env"  # denied to everyone by the e2e policy's rule no-env


def events(text: str) -> list[tuple[str | None, Any]]:
    """(id, parsed data) of each SSE event with data."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        ev_id = None
        data = []
        for line in block.split("\n"):
            if line.startswith("id:"):
                ev_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        if data and "".join(data).strip():
            out.append((ev_id, json.loads("\n".join(data))))
        elif ev_id is not None:
            out.append((ev_id, None))
    return out


def list_then_replay(url: str) -> tuple[list[tuple[str | None, Any]], list[tuple[str | None, Any]]]:
    """POST tools/list (id 7) on a fresh session, then GET with the Last-Event-ID of
    the stream's first event; returns the POST's events and what the GET replayed."""
    session = open_session(url, READER_KEY)
    base = {"Accept": ACCEPT, "Authorization": f"Bearer {READER_KEY}", **session}
    with httpx.Client(timeout=30) as c:
        r = c.post(url, content=json.dumps(rpc("tools/list", id=7)),
                   headers={**base, "Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        posted = events(r.text)
        first_id = next(i for i, _ in posted if i)
        replayed: list[tuple[str | None, Any]] = []
        text = ""
        with c.stream("GET", url, headers={**base, "Accept": "text/event-stream", "Last-Event-ID": first_id}) as g:
            assert g.status_code == 200, g.read()
            deadline = time.monotonic() + 10
            for chunk in g.iter_text():
                text += chunk
                replayed = events(text)
                if any(isinstance(d, dict) and d.get("id") == 7 for _, d in replayed):
                    break
                if time.monotonic() > deadline:
                    break
    return posted, replayed


def answer_to_7(evs: list[tuple[str | None, Any]]) -> dict[str, Any]:
    found = [d for _, d in evs if isinstance(d, dict) and d.get("id") == 7]
    assert len(found) == 1, evs
    return found[0]


def test_server_everything_replays_the_whole_catalogue(mcp_server: Any) -> None:
    """Control, no firewall: the replayed answer is the server's own, unfiltered."""
    _, replayed = list_then_replay(mcp_server.url)
    names = {t["name"] for t in answer_to_7(replayed)["result"]["tools"]}
    assert HIDDEN in names


def test_a_replayed_answer_is_refused_not_passed_unfiltered(envoy: Any) -> None:
    before = envoy.stat("wasmcustom.mcp_firewall.responses.unfilterable")
    posted, replayed = list_then_replay(envoy.url)
    # The POST's own answer was filtered as usual.
    assert HIDDEN not in {t["name"] for t in answer_to_7(posted)["result"]["tools"]}
    # The replay of the same answer on the GET stream is refused under its id.
    again = answer_to_7(replayed)
    assert "result" not in again, again
    assert again["error"]["data"]["rule"] == "response-unfilterable"
    assert HIDDEN not in json.dumps([d for _, d in replayed])
    assert envoy.stat("wasmcustom.mcp_firewall.responses.unfilterable") == before + 1
