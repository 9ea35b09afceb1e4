"""`time` conditions through the compiled filter in a real Envoy, on its clock.

The filter reads the host's clock (proxy-wasm `get_current_time`) when it
decides a body, so the windows are computed here from the current UTC time:
one that holds now (an hour either side), the same hours on every *other* day
of the week, and hours that start two hours from now. Each is written at a
fixed offset that is not whole hours (+13:45 and -09:30), so the weekday and
the clock the filter reads are not UTC's: a filter that ignored the offset,
read the wrong weekday or did not read the time at all decides at least one
case differently. The margins (an hour) are far wider than a test's run.

Each case asserts the verdict as the official MCP SDK sees it (answered by
server-everything, or refused with -32010 naming the rule) and, through
Envoy's upstream POST counter, that a refused call never reached the server.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import pytest
from conftest import READER_KEY
from mcp import MCPError
from test_conditions import ALLOW, _assert_denied, _policy, _run

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def offset_text(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{clock(abs(minutes))}"


def windows(offset_minutes: int, now: dt.datetime) -> dict[str, dict[str, Any]]:
    """Windows at `offset_minutes` east of UTC: `now` (holds), `other_days`
    (the same hours on the six other days), `later` (from two hours on)."""
    local = now + dt.timedelta(minutes=offset_minutes)
    minute = local.hour * 60 + local.minute
    start, opens = minute - 60, local.weekday()
    if start < 0:
        # The window opened yesterday evening and wraps past midnight: its
        # days name the day it opens.
        start, opens = start + 1440, (opens - 1) % 7
    hours = f"{clock(start)}-{clock((minute + 60) % 1440)}"
    utc_offset = offset_text(offset_minutes)
    return {
        "now": {"days": [DAYS[opens]], "hours": hours, "utc_offset": utc_offset},
        "other_days": {"days": [d for i, d in enumerate(DAYS) if i != opens], "hours": hours,
                       "utc_offset": utc_offset},
        "later": {"hours": f"{clock((minute + 120) % 1440)}-{clock((minute + 180) % 1440)}",
                  "utc_offset": utc_offset},
    }


@functools.cache  # one policy (and one Envoy) per offset for the whole run
def time_policy(offset_minutes: int) -> dict[str, Any]:
    w = windows(offset_minutes, dt.datetime.now(dt.timezone.utc))
    return _policy(
        {"id": "echo-now", "effect": "allow", "roles": ["reader"], "tools": ["echo"],
         "when": {"time": w["now"]}},
        {"id": "echo-freeze-later", "effect": "deny", "tools": ["echo"], "when": {"time": w["later"]}},
        {"id": "sum-other-days", "effect": "allow", "roles": ["reader"], "tools": ["get-sum"],
         "when": {"time": w["other_days"]}},
        {"id": "image-freeze-now", "effect": "deny", "tools": ["get-tiny-image"], "when": {"time": w["now"]}},
        {"id": "images", "effect": "allow", "roles": ["reader"], "tools": ["get-tiny-image"]},
        {"id": "env-unless-later", "effect": "allow", "roles": ["reader"], "tools": ["get-env"],
         "when": {"not": {"time": w["later"]}}},
    )


CASES = [
    # (name, tool, arguments, expected: ALLOW or the refusing rule)
    ("allow_in_a_window_that_holds_now", "echo", {"message": "hi"}, ALLOW),
    ("same_hours_on_other_days_do_not_allow", "get-sum", {"a": 1, "b": 2}, "default-deny"),
    ("deny_in_a_window_that_holds_now", "get-tiny-image", {}, "image-freeze-now"),
    ("not_a_later_window_allows", "get-env", {}, ALLOW),
]
OFFSETS = [13 * 60 + 45, -(9 * 60 + 30)]


@pytest.mark.parametrize("offset", OFFSETS, ids=[offset_text(o) for o in OFFSETS])
@pytest.mark.parametrize("name,tool,arguments,expected", CASES, ids=[c[0] for c in CASES])
def test_time_window(envoy_for: Any, offset: int, name: str, tool: str, arguments: dict[str, Any],
                     expected: str) -> None:
    env = envoy_for(time_policy(offset))
    out, moved = _run(env, lambda s: s.call_tool(tool, arguments), READER_KEY)
    if expected == ALLOW:
        assert not isinstance(out, MCPError), f"{name}: refused: {out.code} {out.data}"
        assert not out.is_error, out
        assert moved == 1
    else:
        _assert_denied(out, moved, expected)
        if expected == "default-deny":
            assert "sum-other-days" in out.data.get("reason", ""), out.data


def test_the_windows_are_what_they_claim() -> None:
    """The helper itself, at fixed instants: a wrong window would make the
    cases above pass for the wrong reason."""
    # 2026-12-04 (a Friday) 00:30 UTC is Friday 14:15 at +13:45 and Thursday
    # 15:00 at -09:30; 10:20 UTC at +13:45 is Saturday 00:05 (wraps back).
    at = dt.datetime(2026, 12, 4, 0, 30, tzinfo=dt.timezone.utc)
    w = windows(13 * 60 + 45, at)
    assert w["now"] == {"days": ["fri"], "hours": "13:15-15:15", "utc_offset": "+13:45"}
    assert w["later"]["hours"] == "16:15-17:15"
    assert windows(-(9 * 60 + 30), at)["now"] == {"days": ["thu"], "hours": "14:00-16:00",
                                                   "utc_offset": "-09:30"}
    w = windows(13 * 60 + 45, dt.datetime(2026, 12, 4, 10, 20, tzinfo=dt.timezone.utc))
    assert w["now"] == {"days": ["fri"], "hours": "23:05-01:05", "utc_offset": "+13:45"}
    assert "fri" not in w["other_days"]["days"] and len(w["other_days"]["days"]) == 6
