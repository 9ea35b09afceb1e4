"""DLP end to end: secrets in tool arguments and results, through the compiled
filter in a real Envoy, with the official SDK where it can (server-everything over
SSE), raw HTTP against the JSON peer and the split-SSE peer.

The secret is a GitHub personal access token shape (`ghp_` + 36 random
characters), generated per run so no real or well-known value is involved.
"""

from __future__ import annotations

import json
import random
import string
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import READER_KEY, policy_variant
from mcp import MCPError
from mcp_raw import call, messages, open_session, sdk_session, send
from test_json_peer import json_peer  # noqa: F401  (fixture)

import harness

HERE = Path(__file__).resolve().parent
TOKEN = "ghp_" + "".join(random.SystemRandom().choice(string.ascii_letters + string.digits) for _ in range(36))
MESSAGE = f"deploy with {TOKEN} please"
REDACTED = "Echo: deploy with [REDACTED:github_pat] please"
RESPONSES_ONLY = {"dlp": {"requests": "off", "responses": "redact"}}


def test_secret_in_arguments_is_blocked_by_default(envoy: Any) -> None:
    """No dlp section = requests: block, responses: redact (POLICY.md defaults)."""
    async def go() -> Any:
        async with sdk_session(envoy.url, READER_KEY) as s:
            await s.list_tools()
            before = envoy.upstream_posts()
            with pytest.raises(MCPError) as ei:
                await s.call_tool("echo", {"message": MESSAGE})
            return ei.value, envoy.upstream_posts() - before

    err, moved = anyio.run(go)
    assert err.code == -32013, err
    assert err.data.get("findings") == [{"kind": "github_pat", "path": "/message"}], err.data
    assert TOKEN not in json.dumps(err.data) and TOKEN not in err.message
    assert moved == 0, "a blocked call must not reach the server"


def test_secret_in_result_is_redacted_on_sse(envoy_for: Any) -> None:
    env = envoy_for(policy_variant(**RESPONSES_ONLY))

    async def go() -> Any:
        async with sdk_session(env.url, READER_KEY) as s:
            return await s.call_tool("echo", {"message": MESSAGE})

    res = anyio.run(go)
    assert [c.text for c in res.content] == [REDACTED]


def test_secret_redacted_in_arguments_never_reaches_the_server(envoy_for: Any) -> None:
    """requests: redact rewrites the body before forwarding; the server echoes what it got."""
    env = envoy_for(policy_variant(dlp={"requests": "redact", "responses": "off"}))

    async def go() -> Any:
        async with sdk_session(env.url, READER_KEY) as s:
            return await s.call_tool("echo", {"message": MESSAGE})

    res = anyio.run(go)
    assert [c.text for c in res.content] == [REDACTED]


def test_exempt_tool_is_not_scanned(envoy_for: Any) -> None:
    env = envoy_for(policy_variant(dlp={"exempt_tools": ["echo"]}))

    async def go() -> Any:
        async with sdk_session(env.url, READER_KEY) as s:
            return await s.call_tool("echo", {"message": MESSAGE})

    res = anyio.run(go)
    assert [c.text for c in res.content] == [f"Echo: {MESSAGE}"]


def test_secret_in_result_is_redacted_on_json(json_peer: int, workdir: Path, wasm: Path) -> None:  # noqa: F811
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=json_peer, policy=policy_variant(**RESPONSES_ONLY), wasm=wasm)
    env = harness.Envoy(cfg, workdir, name="envoy-dlp-json")
    try:
        sess = open_session(env.url, READER_KEY)
        r = send(env.url, body=json.dumps(call("echo", {"message": MESSAGE}, id=6)), token=READER_KEY, headers=sess)
    finally:
        env.stop()
    assert TOKEN not in r.text
    if "content-length" in r.headers:
        assert int(r.headers["content-length"]) == len(r.content)
    (msg,) = messages(r)
    assert msg["result"]["content"][0]["text"] == REDACTED


@pytest.fixture(scope="module")
def split_peer_envoy(workdir: Path, wasm: Path) -> Iterator[harness.Envoy]:
    port = harness.free_port()
    peer = harness.Proc("split-dlp", [sys.executable, str(HERE / "split_sse_server.py"), str(port), "1", "crlf"],
                        workdir / "split-sse-dlp.log")
    env = None
    try:
        harness._wait(lambda: harness.port_open(port), 30, "split SSE peer", peer)
        cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                             upstream_port=port, policy=policy_variant(**RESPONSES_ONLY), wasm=wasm)
        env = harness.Envoy(cfg, workdir, name="envoy-split-dlp")
        yield env
    finally:
        if env is not None:
            env.stop()
        peer.stop()


def test_secret_split_across_sse_chunks_is_redacted(split_peer_envoy: Any) -> None:
    """The peer writes the result one byte per chunk: the token never sits whole in one chunk."""
    r = send(split_peer_envoy.url, body=json.dumps(call("echo", {"message": MESSAGE}, id=7)), token=READER_KEY,
             headers={"Mcp-Protocol-Version": "2025-11-25"})
    assert r.status_code == 200
    assert TOKEN not in r.text
    (msg,) = messages(r)
    assert msg["result"]["content"][0]["text"] == REDACTED


def _with_rules(*extra: dict[str, Any]) -> dict[str, Any]:
    p = policy_variant(**RESPONSES_ONLY)
    p["rules"] = [*p["rules"], *extra]
    return p


def test_secret_in_a_prompt_is_redacted(envoy_for: Any) -> None:
    """prompts/get results carry text in messages[].content: scanned like tool results."""
    env = envoy_for(_with_rules({"id": "args-prompt", "effect": "allow", "prompts": ["args-prompt"]}))

    async def go() -> Any:
        async with sdk_session(env.url, READER_KEY) as s:
            return await s.get_prompt("args-prompt", {"city": MESSAGE})

    res = anyio.run(go)
    text = json.dumps([m.content.model_dump() for m in res.messages])
    assert TOKEN not in text, text
    assert "[REDACTED:github_pat]" in text, text


def test_secret_echoed_in_an_error_is_redacted(envoy_for: Any) -> None:
    """A JSON-RPC error answering a scanned call is text the client reads: scanned too
    (server-everything echoes an unknown resource URI in its error message)."""
    env = envoy_for(_with_rules({"id": "templates", "effect": "allow", "resources": ["demo://resource/dynamic/text/*"]}))

    async def go() -> Any:
        async with sdk_session(env.url, READER_KEY) as s:
            with pytest.raises(MCPError) as ei:
                await s.read_resource(f"demo://resource/dynamic/text/{TOKEN}")
            return ei.value

    err = anyio.run(go)
    assert TOKEN not in err.message, err.message
    assert "[REDACTED:github_pat]" in err.message, err.message


CARD = 4111111111111111  # the well-known Visa test number: Luhn-valid, issued to nobody


def test_card_sent_as_a_number_is_blocked(envoy: Any) -> None:
    """A card number is a card number whether the caller quotes it or not: a JSON
    number is scanned as its text (the string form was blocked, the number passed)."""
    async def go() -> Any:
        async with sdk_session(envoy.url, READER_KEY) as s:
            await s.list_tools()
            before = envoy.upstream_posts()
            with pytest.raises(MCPError) as ei:
                await s.call_tool("echo", {"message": "pay", "card": CARD})
            return ei.value, envoy.upstream_posts() - before

    err, moved = anyio.run(go)
    assert err.code == -32013, err
    assert err.data.get("findings") == [{"kind": "credit_card", "path": "/card"}], err.data
    assert str(CARD) not in json.dumps(err.data)
    assert moved == 0, "a blocked call must not reach the server"


def test_card_sent_as_a_number_is_redacted_before_the_server(envoy_for: Any) -> None:
    """requests: redact replaces the number with the string that says what was there
    (the unit test redacts_a_card_sent_as_a_number shows the rewritten arguments);
    here the filter's finding counter moves and the call goes through."""
    env = envoy_for(policy_variant(dlp={"requests": "redact", "responses": "off"}))
    sess = open_session(env.url, READER_KEY)
    found = "wasmcustom.mcp_firewall.dlp.findings.credit_card"
    before = env.stat(found)
    r = send(env.url, body=json.dumps(call("echo", {"message": "pay", "card": CARD}, id=9)),
             token=READER_KEY, headers=sess)
    assert r.status_code == 200, r.text
    assert env.stat(found) == before + 1, "the number was found (and so redacted) on its way to the server"
    (msg,) = messages(r)
    assert msg.get("result", {}).get("content", [{}])[0].get("text") == "Echo: pay", msg
    assert str(CARD) not in r.text


# A strong password generated per run: what the platforms' own formats below carry.
PASSWORD = "Xk9#" + "".join(random.SystemRandom().choice(string.ascii_letters + string.digits) for _ in range(12))
K8S_ENV = f"env:\n- name: DB_PASSWORD\n  value: {PASSWORD}\n- name: LOG_LEVEL\n  value: debug\n"


@pytest.mark.parametrize(
    ("arguments", "finding"),
    [
        pytest.param({"message": "x", "Parameter": {"Name": "DB_PASSWORD", "Type": "SecureString", "Value": PASSWORD}},
                     {"kind": "password", "path": "/Parameter/Value"}, id="aws_ssm_parameter"),
        pytest.param({"message": "x", "db_password": {"sensitive": True, "value": PASSWORD}},
                     {"kind": "password", "path": "/db_password/value"}, id="terraform_output"),
        pytest.param({"message": K8S_ENV}, {"kind": "password", "path": "/message"}, id="kubernetes_yaml_as_text"),
        pytest.param({"message": "4539\u200b5787\u200b6362\u200b1486"}, {"kind": "credit_card", "path": "/message"},
                     id="card_split_by_zero_width_spaces"),
        pytest.param({"message": f"docker login -u admin -p {PASSWORD} registry.corp.io"},
                     {"kind": "password", "path": "/message"}, id="docker_login"),
    ],
)
def test_platform_formats_are_blocked(envoy: Any, arguments: dict[str, Any], finding: dict[str, str]) -> None:
    """Twelfth attack pass, findings 2, 6 and 7: each of these reached the server."""
    sess = open_session(envoy.url, READER_KEY)
    before = envoy.upstream_posts()
    r = send(envoy.url, body=json.dumps(call("echo", arguments, id=5)), token=READER_KEY, headers=sess)
    (msg,) = messages(r)
    assert msg.get("error", {}).get("code") == -32013, msg
    assert msg["error"]["data"]["findings"] == [finding], msg
    assert PASSWORD not in r.text
    assert envoy.upstream_posts() == before, "a blocked call must not reach the server"


def _digits_in(zero: int, number: str) -> str:
    """`number` written in the digits of the script whose zero is `zero`."""
    return "".join(chr(zero + int(d)) if d.isdigit() else d for d in number)


CARD_TEXT = "4539 5787 6362 1486"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        pytest.param(CARD_TEXT.replace(" ", "&ndash;"), "credit_card", id="card_grouped_with_named_en_dashes"),
        pytest.param(CARD_TEXT.replace(" ", "&#150;"), "credit_card", id="card_grouped_with_windows_1252_dashes"),
        pytest.param("".join(f"&#x0000{ord(c) + 0xFEE0:x}" for c in CARD_TEXT.replace(" ", "")), "credit_card",
                     id="card_in_zero_padded_references_without_semicolons"),
        pytest.param(_digits_in(0x966, CARD_TEXT), "credit_card", id="card_in_devanagari_digits"),
        pytest.param(_digits_in(0x660, CARD_TEXT), "credit_card", id="card_in_arabic_indic_digits"),
        pytest.param(_digits_in(0x1D7CE, CARD_TEXT), "credit_card", id="card_in_mathematical_bold_digits"),
        pytest.param(CARD_TEXT.replace(" ", "\u00a0") + "\u00b2 expired", "credit_card",
                     id="card_before_a_superscript_footnote"),
        pytest.param("".join(d + "\ufe0f\u20e3" if d.isdigit() else d for d in CARD_TEXT), "credit_card",
                     id="card_in_keycap_digits"),
        pytest.param("write to taro\ufe6bexample.com", "email", id="email_with_a_small_at"),
        pytest.param("write to taro&commat;example&period;com", "email", id="email_in_named_references"),
        # The twenty-third session's attack: one styled digit inside the secret.
        pytest.param("iban GB8\u00b2 WEST 1234 5698 7654 32 ok", "iban", id="iban_with_a_superscript_check_digit"),
        pytest.param("mail bob\u2077@example.com now", "email", id="email_whose_name_ends_in_a_superscript"),
        pytest.param("4111\u30fc111\u00b9\u30fc1111\u30fc1111", "credit_card",
                     id="card_grouped_by_long_vowel_marks_with_a_superscript"),
        pytest.param(f"card ({CARD_TEXT})", "credit_card", id="card_in_parentheses"),
        pytest.param("docker --config /x --log-level debug --tlsverify login -u me -p Hunter2!xyz9", "password",
                     id="docker_login_after_global_options"),
        pytest.param("echo 'Hunter2!xyz9' | docker login -u me --password-stdin", "password",
                     id="docker_login_password_echoed_in"),
        pytest.param("C:\\Tools\\PsExec.exe \\\\host -u admin -p Hunter2!xyz9 cmd", "password", id="psexec_exe"),
        pytest.param("127.0.0.1:6379> AUTH Hunter2!xyz9", "password", id="redis_cli_prompt"),
    ],
)
def test_what_a_reader_decodes_is_blocked(envoy: Any, text: str, kind: str) -> None:
    """Limits of the second reading and the detectors found by helpers' attacks
    (twenty-first to twenty-third sessions): each of these reached the server; a
    reader reads the card, the address or the password in it. The footnote case was blocked before the second
    reading widened, passed with the wide reading alone, and is why the narrow one
    stays."""
    sess = open_session(envoy.url, READER_KEY)
    before = envoy.upstream_posts()
    r = send(envoy.url, body=json.dumps(call("echo", {"message": text}, id=5)), token=READER_KEY, headers=sess)
    (msg,) = messages(r)
    assert msg.get("error", {}).get("code") == -32013, msg
    assert msg["error"]["data"]["findings"] == [{"kind": kind, "path": "/message"}], msg
    assert envoy.upstream_posts() == before, "a blocked call must not reach the server"


def test_kubernetes_yaml_in_a_result_is_redacted(envoy_for: Any) -> None:
    """What `kubectl get -o yaml` returns: the value named by its `name` line is redacted."""
    env = envoy_for(policy_variant(**RESPONSES_ONLY))

    async def go() -> Any:
        async with sdk_session(env.url, READER_KEY) as s:
            return await s.call_tool("echo", {"message": K8S_ENV})

    res = anyio.run(go)
    assert [c.text for c in res.content] == [f"Echo: {K8S_ENV.replace(PASSWORD, '[REDACTED:password]')}"]
