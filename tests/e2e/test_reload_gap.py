"""Hot reload without a gap (ECDS from a watched file, as test_reload_more.py).

A request is decided under the policy in force when it is decided, not the one
its stream started under: a caller who sends the headers and part of a body,
then holds the rest back past a reload, meets the kill switch, a `disabled`
entry or the removal of their key. Envoy's idle timeout resets on every byte,
so without this the window is as long as the caller likes.
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlparse

import pytest
from conftest import READER_KEY, base_policy
from mcp_raw import call, open_session
from test_reload_more import hot  # noqa: F401 - the fixture

HELD_BACK = 16  # bytes of the body sent only after the reload


class HeldRequest:
    """A POST whose headers and most of its body are sent, the rest held back."""

    def __init__(self, url: str, token: str, body: bytes, extra: dict[str, str]):
        u = urlparse(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
        self.conn.putrequest("POST", u.path or "/")
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                   "authorization": f"Bearer {token}", "content-length": str(len(body)), **extra}
        for k, v in headers.items():
            self.conn.putheader(k, v)
        self.conn.endheaders()
        self.body = body
        self.conn.send(body[:-HELD_BACK])

    def finish(self) -> tuple[int, Any]:
        self.conn.send(self.body[-HELD_BACK:])
        r = self.conn.getresponse()
        raw = r.read()
        self.conn.close()
        text = raw.decode("utf-8", "replace")
        if r.getheader("content-type", "").startswith("text/event-stream"):
            datas = [ln[5:].strip() for ln in text.splitlines() if ln.startswith("data:")]
            return r.status, json.loads(datas[-1]) if datas else None
        return r.status, json.loads(text) if text.strip() else None


def _held_echo(h: Any) -> HeldRequest:
    sess = open_session(h.url, READER_KEY)
    body = json.dumps(call("echo", {"message": "held " + " " * 2048}, id=7)).encode()
    return HeldRequest(h.url, READER_KEY, body, sess)


def _killed() -> dict[str, Any]:
    p = base_policy()
    p["kill_switch"] = True
    return p


def _reader_disabled() -> dict[str, Any]:
    p = base_policy()
    p["disabled"] = ["e2e-reader"]
    return p


def _reader_key_removed() -> dict[str, Any]:
    p = base_policy()
    p["identity"]["api_keys"] = [k for k in p["identity"]["api_keys"] if k["subject"] != "e2e-reader"]
    return p


@pytest.mark.parametrize("swap,want_status,want_rule", [
    pytest.param(None, 200, None, id="control_no_reload_reaches_the_server"),
    pytest.param(_killed, 200, "kill-switch", id="kill_switch_applies_to_a_held_body"),
    pytest.param(_reader_disabled, 200, "kill-switch", id="disabled_subject_applies_to_a_held_body"),
    pytest.param(_reader_key_removed, 401, None, id="revoked_key_applies_to_a_held_body"),
])
def test_a_request_held_mid_body_is_decided_by_the_policy_in_force(hot: Any, swap: Any, want_status: int,
                                                                    want_rule: str | None) -> None:
    start = base_policy()
    assert any(k["subject"] == "e2e-reader" for k in start["identity"]["api_keys"]), "fixture changed"
    h = hot(start)
    held = _held_echo(h)
    before = h.upstream_posts()
    if swap is not None:
        h.swap(swap())  # waits until Envoy reports the reload
    status, msg = held.finish()
    assert status == want_status, (status, msg)
    if want_rule is None and want_status == 200:
        assert msg and msg["result"]["content"][0]["text"].startswith("Echo: held"), msg
        assert h.upstream_posts() == before + 1
        return
    assert h.upstream_posts() == before, "a request refused by the new policy reached the server"
    if want_rule is not None:
        assert msg["error"]["code"] == -32010 and msg["error"]["data"]["rule"] == want_rule, msg
    else:
        assert "API key not recognised" in msg["error"]["message"], msg
