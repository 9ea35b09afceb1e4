"""Argument conditions (`when`) through the compiled filter in a real Envoy.

Every case is driven by the official MCP SDK (`ClientSession.call_tool` /
`read_resource`), which sends arguments and URIs exactly as given: it does not
coerce `"1000"` to a number from the tool's input schema nor normalise a
resource URI (checked on mcp 2.3.0: `call_tool` passes `arguments` through,
`read_resource` takes a plain `str`). So no case needs raw HTTP.

Each case asserts the verdict (allowed and answered by server-everything, or
refused with -32010 naming the expected rule) and, through Envoy's upstream
POST counter, that a refused call never reached the server and an allowed one
reached it exactly once.

Fail-closed semantics under test (README "Conditions"): a value the condition
cannot evaluate (missing argument, wrong type, a path or URL the filter refuses
to interpret) makes the `when` an *error*; an errored `when` makes an allow rule
not match and a deny rule match. The policies below pair an allow rule with a
deny rule on the same argument, so an error shows up as the deny rule's id,
while a value that parses but lies outside the allow rule shows up as
`default-deny`.
"""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest
from conftest import ADMIN_KEY, READER_KEY, base_policy
from mcp import MCPError
from mcp_raw import sdk_session

ALLOW = "allow"
CATALOGUE = {"id": "catalogue", "effect": "allow",
             "methods": ["tools/list", "prompts/list", "resources/list", "resources/templates/list"]}


def _policy(*rules: dict[str, Any]) -> dict[str, Any]:
    p = base_policy()  # the e2e API keys (reader, admin) and limits
    p["rules"] = [CATALOGUE, *rules]
    p["dlp"] = {"requests": "off", "responses": "off"}  # conditions only
    return p


# get-sum {a, b}: `a` stands in for a refund amount capped at 500; `b` has a
# deny rule above a million (so a missing `b` is an error under a deny rule).
AMOUNT_POLICY = _policy(
    {"id": "sum-cap", "effect": "allow", "roles": ["reader"], "tools": ["get-sum"],
     "when": {"arg": "/a", "lte": 500}},
    {"id": "no-huge-b", "effect": "deny", "tools": ["get-sum"], "when": {"arg": "/b", "gt": 1000000}},
)

# echo {message} taken as a filesystem path: allowed under /srv/work, except .git inside it.
PATH_POLICY = _policy(
    {"id": "workspace", "effect": "allow", "roles": ["reader"], "tools": ["echo"],
     "when": {"arg": "/message", "path_under": "/srv/work"}},
    {"id": "no-git", "effect": "deny", "tools": ["echo"],
     "when": {"arg": "/message", "path_under": "/srv/work/.git"}},
)

# echo {message} taken as a URL: an allow list of hosts and a loopback deny list (SSRF).
HOST_POLICY = _policy(
    {"id": "good-hosts", "effect": "allow", "roles": ["reader"], "tools": ["echo"],
     "when": {"arg": "/message", "host_in": ["good.com", "xn--bcher-kva.example"]}},
    {"id": "no-loopback", "effect": "deny", "tools": ["echo"],
     "when": {"arg": "/message", "host_in": ["127.0.0.1", "::1"]}},
)

# resources/read: server-everything 2026.8.31 serves demo://resource/dynamic/text/{N}
# (a template; there are no test://static/resource/N resources in this version) and
# nothing under file:// — the file:// rule checks the filter's verdict only.
RESOURCE_POLICY = _policy(
    {"id": "text-res", "effect": "allow", "roles": ["reader"], "resources": ["demo://resource/dynamic/text/*"]},
    {"id": "docs", "effect": "allow", "roles": ["reader"], "resources": ["file:///srv/docs/*"]},
)

NOT_MET = re.compile(r"conditions of \[.*\] were not met")


async def _attempt(env: Any, token: str, act: Any) -> tuple[Any, int]:
    """(result or MCPError, upstream POSTs during the call) in a fresh settled SDK session."""
    async with sdk_session(env.url, token) as s:
        await s.list_tools()  # the SDK lists once before its first call_tool: not during the count
        before = env.upstream_posts()
        try:
            out: Any = await act(s)
        except MCPError as e:
            out = e
        return out, env.upstream_posts() - before


def _run(env: Any, act: Any, token: str = READER_KEY) -> tuple[Any, int]:
    return anyio.run(_attempt, env, token, act)


def _assert_denied(out: Any, moved: int, rule: str) -> None:
    assert isinstance(out, MCPError), f"expected a refusal by {rule!r}, got a result: {out}"
    assert out.code == -32010, (out.code, out.message, out.data)
    assert out.data.get("rule") == rule, out.data
    if rule == "default-deny":
        assert NOT_MET.search(out.data.get("reason", "")), out.data
    assert moved == 0, f"a call refused by {rule!r} reached the server ({moved} POSTs)"


# --------------------------------------------------------------------------- amount cap

AMOUNT_CASES = [
    # (name, arguments, expected: ALLOW or the refusing rule)
    ("under_cap", {"a": 100, "b": 2}, ALLOW),
    ("at_cap", {"a": 500, "b": 1}, ALLOW),
    ("over_cap", {"a": 1000, "b": 1}, "default-deny"),
    ("over_cap_fraction", {"a": 500.5, "b": 0}, "default-deny"),
    ("string_1000", {"a": "1000", "b": 1}, "default-deny"),
    ("string_100_under_cap", {"a": "100", "b": 1}, "default-deny"),
    ("string_1e3", {"a": "1e3", "b": 1}, "default-deny"),
    ("string_space_100", {"a": " 100", "b": 1}, "default-deny"),
    ("bool", {"a": True, "b": 1}, "default-deny"),
    ("null", {"a": None, "b": 1}, "default-deny"),
    ("array", {"a": [100], "b": 1}, "default-deny"),
    ("missing_capped_arg", {"b": 1}, "default-deny"),
    ("missing_arg_under_deny_rule", {"a": 1}, "no-huge-b"),
    ("deny_rule_holds", {"a": 1, "b": 2000000}, "no-huge-b"),
    ("string_under_deny_rule", {"a": 1, "b": "2000000"}, "no-huge-b"),
]


@pytest.mark.parametrize("name,arguments,expected", AMOUNT_CASES, ids=[c[0] for c in AMOUNT_CASES])
def test_amount_cap(envoy_for: Any, name: str, arguments: dict[str, Any], expected: str) -> None:
    env = envoy_for(AMOUNT_POLICY)
    out, moved = _run(env, lambda s: s.call_tool("get-sum", arguments))
    if expected == ALLOW:
        assert not isinstance(out, MCPError), f"{name}: refused: {out.code} {out.data}"
        assert not out.is_error, out
        total = arguments["a"] + arguments["b"]
        assert [c.text for c in out.content] == [f"The sum of {arguments['a']} and {arguments['b']} is {total}."]
        assert moved == 1
    else:
        _assert_denied(out, moved, expected)


# --------------------------------------------------------------------------- path_under

PATH_CASES = [
    ("plain", "/srv/work/notes.txt", ALLOW),
    ("the_dir_itself", "/srv/work", ALLOW),
    ("dotdot_escape", "/srv/work/../etc/passwd", "default-deny"),
    ("dotdot_deep_escape", "/srv/work/a/b/../../../etc/passwd", "default-deny"),
    ("dotdot_stays_inside", "/srv/work/a/../b.txt", ALLOW),
    ("dotdot_above_root", "/srv/work/../../../../etc/passwd", "no-git"),  # refused = error
    ("dot", "/srv/work/./notes.txt", ALLOW),
    ("dot_into_git", "/srv/work/./.git/config", "no-git"),
    ("dotdot_into_git", "/srv/work/a/../.git/config", "no-git"),
    ("double_slash", "/srv//work//notes.txt", ALLOW),
    ("double_slash_into_git", "/srv/work//.git/config", "no-git"),
    ("encoded_dotdot_mixed_case", "/srv/work/%2e%2E/etc/passwd", "default-deny"),
    ("encoded_dotdot_back_inside", "/srv/work/%2e%2E/work/notes.txt", ALLOW),
    ("encoded_dot_git", "/srv/work/%2egit/config", "no-git"),
    ("encoded_slashes", "/srv/work%2F..%2F..%2Fetc%2Fpasswd", "default-deny"),
    ("double_encoded_dotdot", "/srv/work/%252e%252e/etc/passwd", "no-git"),
    ("backslash_dotdot", "/srv/work\\..\\..\\etc\\passwd", "no-git"),
    ("backslash_inside", "/srv/work/a\\b.txt", "no-git"),
    ("encoded_nul", "/srv/work/notes.txt%00.png", "no-git"),
    ("raw_nul", "/srv/work/notes.txt\x00.png", "no-git"),
    ("sibling_with_prefix", "/srv/workspace-evil/x", "default-deny"),
    ("sibling_dash", "/srv/work-evil", "default-deny"),
    ("relative", "srv/work/notes.txt", "no-git"),
    ("case_differs", "/SRV/WORK/notes.txt", "default-deny"),
]


@pytest.mark.parametrize("name,value,expected", PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_path_under(envoy_for: Any, name: str, value: str, expected: str) -> None:
    env = envoy_for(PATH_POLICY)
    out, moved = _run(env, lambda s: s.call_tool("echo", {"message": value}))
    if expected == ALLOW:
        assert not isinstance(out, MCPError), f"{name}: refused: {out.code} {out.data}"
        assert [c.text for c in out.content] == [f"Echo: {value}"]
        assert moved == 1
    else:
        _assert_denied(out, moved, expected)


# --------------------------------------------------------------------------- host_in

HOST_CASES = [
    ("plain", "https://good.com/x", ALLOW),
    ("with_port", "https://good.com:8443/x", ALLOW),
    ("upper_case", "https://GOOD.COM/x", ALLOW),
    ("trailing_dot", "https://good.com./x", ALLOW),
    ("encoded_host_dot", "https://good%2Ecom/x", ALLOW),
    ("userinfo_good_host_evil", "https://good.com@evil.com/", "default-deny"),
    ("userinfo_evil_host_good", "https://evil.com@good.com/", ALLOW),
    ("two_at_signs", "https://a@good.com@evil.com/", "no-loopback"),
    ("suffix_lookalike", "https://good.com.evil.com/", "default-deny"),
    ("backslash_userinfo", "https://evil.com\\@good.com/", "no-loopback"),
    ("tab_in_host", "https://go\tod.com/", "no-loopback"),
    ("three_slashes", "https:///good.com/", "no-loopback"),
    ("no_scheme", "good.com/x", "no-loopback"),
    ("port_out_of_range", "https://good.com:99999/", "no-loopback"),
    ("ipv6_loopback", "http://[::1]/", "no-loopback"),
    ("ipv6_long_form", "http://[0:0::1]:8080/", "no-loopback"),
    ("ipv6_full_form", "http://[0000:0000:0000:0000:0000:0000:0000:0001]/", "no-loopback"),
    ("ipv4_mapped_ipv6", "http://[::ffff:127.0.0.1]/", "no-loopback"),
    ("ipv6_zone_id", "http://[::1%25eth0]/", "no-loopback"),
    ("decimal_2130706433", "http://2130706433/", "no-loopback"),
    ("hex_0x7f.1", "http://0x7f.1/", "no-loopback"),
    ("hex_whole", "http://0x7f000001/", "no-loopback"),
    ("octal_0177.0.0.1", "http://0177.0.0.1/", "no-loopback"),
    ("short_127.1", "http://127.1/", "no-loopback"),
    ("userinfo_then_loopback", "https://good.com@127.0.0.1/", "no-loopback"),
    ("other_ip", "http://10.0.0.1/", "default-deny"),
    ("punycode_as_is", "https://xn--bcher-kva.example/", ALLOW),
    ("punycode_upper_case", "https://XN--BCHER-KVA.example/", ALLOW),
    ("unicode_not_punycode", "https://bücher.example/", "no-loopback"),
    ("other_punycode", "https://xn--gd-0ka.com/", "default-deny"),
]


@pytest.mark.parametrize("name,value,expected", HOST_CASES, ids=[c[0] for c in HOST_CASES])
def test_host_in(envoy_for: Any, name: str, value: str, expected: str) -> None:
    env = envoy_for(HOST_POLICY)
    out, moved = _run(env, lambda s: s.call_tool("echo", {"message": value}))
    if expected == ALLOW:
        assert not isinstance(out, MCPError), f"{name}: refused: {out.code} {out.data}"
        assert [c.text for c in out.content] == [f"Echo: {value}"]
        assert moved == 1
    else:
        _assert_denied(out, moved, expected)


# --------------------------------------------------------------------------- resource URIs

SERVED = "served"        # allowed, and server-everything answers with the text resource
FORWARDED = "forwarded"  # allowed; the server answers as it sees fit (not found, …)

RESOURCE_CASES = [
    ("plain", "demo://resource/dynamic/text/1", SERVED),
    ("dotdot_out_of_allowed_dir", "demo://resource/dynamic/text/../blob/1", "default-deny"),
    ("dotdot_into_allowed_dir", "demo://resource/dynamic/blob/../text/1", SERVED),
    ("encoded_dotdot_to_static", "demo://resource/dynamic/text/%2e%2e/%2E%2E/static/document/architecture.md",
     "default-deny"),
    ("encoded_unreserved_digit", "demo://resource/dynamic/text/%31", FORWARDED),
    ("scheme_and_host_case", "DEMO://RESOURCE/dynamic/text/1", FORWARDED),
    ("encoded_slash", "demo://resource/dynamic/text/..%2f..%2fblob/1", "resource-uri"),
    ("encoded_nul", "demo://resource/dynamic/text/1%00", "resource-uri"),
    ("encoded_backslash", "demo://resource/dynamic/text/..%5c1", "resource-uri"),
    ("climbs_above_root", "demo://resource/../../../etc", "resource-uri"),
    ("file_dotdot_escape", "file:///srv/docs/../../etc/passwd", "default-deny"),
    ("file_encoded_dotdot_escape", "file:///srv/docs/%2e%2e/%2e%2e/etc/passwd", "default-deny"),
    ("file_dotdot_stays_inside", "file:///srv/docs/a/%2E%2E/b.md", FORWARDED),
    ("file_dot", "file:///srv/docs/./a.md", FORWARDED),
    ("file_scheme_upper_case", "FILE:///srv/docs/a.md", FORWARDED),
    ("file_climbs_above_root", "file:///../etc/passwd", "resource-uri"),
    ("file_encoded_slashes", "file:///srv/docs/..%2F..%2Fetc/passwd", "resource-uri"),
    ("file_backslash", "file:///srv/docs/..\\..\\etc\\passwd", "resource-uri"),
    ("file_double_slash", "file:///srv//docs/a.md", "resource-uri"),
    ("file_sibling_prefix", "file:///srv/docs-evil/a", "default-deny"),
    ("file_host_instead_of_root", "file://srv/docs/a", "default-deny"),
]


@pytest.mark.parametrize("name,uri,expected", RESOURCE_CASES, ids=[c[0] for c in RESOURCE_CASES])
def test_resource_uri_normalisation(envoy_for: Any, name: str, uri: str, expected: str) -> None:
    env = envoy_for(RESOURCE_POLICY)
    out, moved = _run(env, lambda s: s.read_resource(uri))
    if expected == SERVED:
        assert not isinstance(out, MCPError), f"{name}: refused: {out.code} {out.data}"
        assert [c.text.split(":")[0] for c in out.contents] == ["Resource 1"], out
        assert moved == 1
    elif expected == FORWARDED:
        if isinstance(out, MCPError):  # the server's own answer, not the firewall's
            assert out.code != -32010 and not (isinstance(out.data, dict) and "rule" in out.data), \
                (out.code, out.message, out.data)
        assert moved == 1, f"{name}: an allowed resources/read must reach the server"
    else:
        if expected == "default-deny":
            assert isinstance(out, MCPError) and out.code == -32010, out
            assert out.data.get("rule") == "default-deny", out.data
            assert moved == 0
        else:
            _assert_denied(out, moved, expected)


def test_condition_roles_do_not_leak(envoy_for: Any) -> None:
    """Control: the admin has no rule on get-sum in AMOUNT_POLICY, so even an amount
    under the cap is refused for it (the cap rule is the reader's)."""
    env = envoy_for(AMOUNT_POLICY)
    out, moved = _run(env, lambda s: s.call_tool("get-sum", {"a": 1, "b": 1}), token=ADMIN_KEY)
    assert isinstance(out, MCPError) and out.data.get("rule") == "default-deny", out
    assert moved == 0
