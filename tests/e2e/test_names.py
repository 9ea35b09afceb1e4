"""Issue #12, second pass, through the real Envoy: resource patterns, names, more
server channels and batch rewriting.

Against server-everything (resources, templates, completions) and, where the test
must see exactly what the server received or control exactly what it answers, a
scripted JSON-RPC peer started in this module (`ScriptedPeer`).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import ADMIN_KEY, READER_KEY, base_policy, policy_variant
from mcp import MCPError
from mcp_raw import call, messages, open_session, rpc, sdk_session, send

import harness

TOKEN = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"
DOCS = "demo://resource/static/document"


def with_rules(*extra: dict[str, Any], policy: dict[str, Any] | None = None) -> dict[str, Any]:
    p = policy if policy is not None else base_policy()
    p["rules"] = [*p["rules"], *extra]
    return p


def read_error(env: harness.Envoy, uri: str) -> dict[str, Any] | None:
    """The JSON-RPC error answering a resources/read of `uri` (None if it was answered)."""
    sess = open_session(env.url, READER_KEY)
    r = send(env.url, body=json.dumps(rpc("resources/read", {"uri": uri}, id=7)), token=READER_KEY, headers=sess)
    assert r.status_code == 200, r.text
    (msg,) = [m for m in messages(r) if m.get("id") == 7]
    return msg.get("error")


# --------------------------------------------------------------------------- resource patterns

def test_a_fragment_does_not_get_past_an_exact_deny(envoy_for: Any) -> None:
    """A URI is decided without its fragment (RFC 3986 §3.5): a server that drops it
    reads the denied document, so `#top` must not get past the exact deny."""
    env = envoy_for(with_rules(
        {"id": "docs-all", "effect": "allow", "roles": ["reader"], "resources": [f"{DOCS}/*"]},
        {"id": "no-arch", "effect": "deny", "resources": [f"{DOCS}/architecture.md"]}))
    for uri in (f"{DOCS}/architecture.md", f"{DOCS}/architecture.md#top", f"{DOCS}/architecture.md#"):
        err = read_error(env, uri)
        assert err is not None and err["code"] == -32010, (uri, err)
        assert err["data"]["rule"] == "no-arch", (uri, err)
    assert read_error(env, f"{DOCS}/features.md") is None
    # allowed with its fragment too: the firewall lets it through (server-everything
    # itself looks the URI up with the fragment and answers that it has none)
    err = read_error(env, f"{DOCS}/features.md#top")
    assert err is not None and err["code"] != -32010, err


def test_a_star_stays_in_its_segment_and_two_cross(envoy_for: Any) -> None:
    one = envoy_for(with_rules({"id": "one", "effect": "allow", "roles": ["reader"],
                                "resources": ["demo://resource/*"]}))
    err = read_error(one, f"{DOCS}/features.md")
    assert err is not None and err["code"] == -32010 and err["data"]["rule"] == "default-deny", err
    two = envoy_for(with_rules({"id": "two", "effect": "allow", "roles": ["reader"],
                                "resources": ["demo://resource/**"]}))
    assert read_error(two, f"{DOCS}/features.md") is None


@pytest.mark.parametrize("pattern, normal", [
    ("demo://Resource/static/document/*", "demo://resource/static/document/*"),
    (f"{DOCS}/%7Eadmin/*", f"{DOCS}/~admin/*"),
    ("file:///srv/Données RH/*", "file:///srv/Donn%C3%A9es%20RH/*"),
])
def test_envoy_refuses_a_resource_pattern_not_in_normal_form(pattern: str, normal: str, wasm: Path,
                                                              workdir: Path) -> None:
    policy = with_rules({"id": "odd", "effect": "deny", "resources": [pattern]})
    index = len(policy["rules"]) - 1
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=harness.free_port(), policy=policy)
    r = harness.envoy_validate(cfg, workdir, name="validate-pattern")
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert f"$.rules[{index}].resources[0]" in out, out[-3000:]
    assert json.dumps(normal) in out, out[-3000:]


# --------------------------------------------------------------------------- names

@pytest.mark.parametrize("name", ["\uff45\uff43\uff48\uff4f", "ech\u200bo", "echo/x", "e" * 129])
def test_a_tool_name_outside_the_spec_is_refused_before_the_server(envoy_for: Any, name: str) -> None:
    """A fullwidth `ｅｃｈｏ` is `echo` to a server that applies NFKC: no rule ever sees it."""
    env = envoy_for(with_rules({"id": "no-echo", "effect": "deny", "tools": ["echo"]}))
    sess = open_session(env.url, ADMIN_KEY)
    before = env.upstream_posts()
    r = send(env.url, body=json.dumps(call(name, {"message": "hi"}, id=3)), token=ADMIN_KEY, headers=sess)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == -32600, r.text
    assert env.upstream_posts() == before


def test_a_method_name_outside_printable_ascii_is_refused(envoy: harness.Envoy) -> None:
    before = envoy.upstream_posts()
    r = send(envoy.url, body=json.dumps(rpc("tools\uff0fcall", {"name": "echo"}, id=3)), token=ADMIN_KEY)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == -32600
    assert envoy.upstream_posts() == before


# --------------------------------------------------------------------------- more server channels

def test_resource_templates_list_is_filtered_per_caller(envoy_for: Any) -> None:
    env = envoy_for(with_rules({"id": "text-templates", "effect": "allow", "roles": ["reader"],
                                "resources": ["demo://resource/dynamic/text/*"]}))

    async def templates(token: str) -> set[str]:
        async with sdk_session(env.url, token) as s:
            return {t.uri_template for t in (await s.list_resource_templates()).resource_templates}

    assert anyio.run(templates, READER_KEY) == {"demo://resource/dynamic/text/{resourceId}"}
    # admin's only resources rule is on static documents: no template expands under it
    assert anyio.run(templates, ADMIN_KEY) == set()


def test_completions_of_a_prompt_the_caller_cannot_see_are_empty(envoy_for: Any) -> None:
    env = envoy_for(with_rules(
        {"id": "complete", "effect": "allow", "methods": ["completion/complete"]},
        {"id": "completable", "effect": "allow", "roles": ["admin"], "prompts": ["completable-prompt"]}))

    async def values(token: str) -> list[str]:
        from mcp.types import PromptReference
        async with sdk_session(env.url, token) as s:
            res = await s.complete(PromptReference(type="ref/prompt", name="completable-prompt"),
                                   {"name": "department", "value": ""})
            return list(res.completion.values)

    assert anyio.run(values, ADMIN_KEY) == ["Engineering", "Sales", "Marketing", "Support"]
    assert anyio.run(values, READER_KEY) == []


# --------------------------------------------------------------------------- scripted peer

class ScriptedPeer:
    """A JSON-RPC peer that records every body it receives and answers each request
    in it: resources/read with a base64 `blob` of text, anything else with an echo
    of its arguments."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def read_body(self) -> bytes:
                if "chunked" not in (self.headers.get("transfer-encoding") or ""):
                    return self.rfile.read(int(self.headers.get("content-length") or 0))
                out = b""
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    chunk = self.rfile.read(size)
                    self.rfile.readline()
                    if size == 0:
                        return out
                    out += chunk

            def do_POST(self) -> None:
                raw = self.read_body()
                body = json.loads(raw)
                peer.bodies.append(body)
                batch = body if isinstance(body, list) else [body]
                answers = [peer.answer(m) for m in batch if "method" in m and "id" in m]
                if not answers:
                    self.send_response(202)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                out = json.dumps(answers if isinstance(body, list) else answers[0]).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def answer(m: dict[str, Any]) -> dict[str, Any]:
        if m["method"] == "resources/read":
            uri = m["params"]["uri"]
            blob = base64.b64encode(f"db_password_token={TOKEN}\n".encode()).decode()
            return {"jsonrpc": "2.0", "id": m["id"],
                    "result": {"contents": [{"uri": uri, "mimeType": "text/plain", "blob": blob}]}}
        text = json.dumps(m.get("params", {}).get("arguments", {}))
        return {"jsonrpc": "2.0", "id": m["id"], "result": {"content": [{"type": "text", "text": text}]}}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedPeer]:
    peer = ScriptedPeer()
    yield peer
    peer.stop()


def envoy_on(peer: ScriptedPeer, policy: dict[str, Any], workdir: Path, wasm: Path, name: str) -> harness.Envoy:
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=peer.port, policy=policy, wasm=wasm)
    return harness.Envoy(cfg, workdir, name=name)


def test_a_text_blob_is_decoded_and_redacted(scripted: ScriptedPeer, workdir: Path, wasm: Path) -> None:
    policy = with_rules({"id": "notes", "effect": "allow", "roles": ["reader"], "resources": ["file:///srv/notes/*"]})
    env = envoy_on(scripted, policy, workdir, wasm, "envoy-scripted-blob")
    try:
        r = send(env.url, body=json.dumps(rpc("resources/read", {"uri": "file:///srv/notes/a.txt"}, id=4)),
                 token=READER_KEY)
        assert r.status_code == 200, r.text
        (msg,) = messages(r)
        (content,) = msg["result"]["contents"]
        text = base64.b64decode(content["blob"]).decode()
        assert TOKEN not in text, text
        assert text == "db_password_token=[REDACTED:github_pat]\n", text
        # a query on a file: URI is refused before the server (RFC 8089 defines none)
        before = len(scripted.bodies)
        r = send(env.url, body=json.dumps(rpc("resources/read", {"uri": "file:///srv/notes/a.txt?x"}, id=5)),
                 token=READER_KEY)
        (msg,) = messages(r)
        assert msg["error"]["code"] == -32010 and msg["error"]["data"]["rule"] == "resource-uri", msg
        assert len(scripted.bodies) == before
    finally:
        env.stop()


def test_a_redacted_batch_keeps_the_clients_answers(scripted: ScriptedPeer, workdir: Path, wasm: Path) -> None:
    """batches: evaluate + requests: redact: the batch is re-serialised with the
    redacted call, and the client's answers in it keep their result and error."""
    policy = policy_variant(**{"limits.batches": "evaluate", "dlp.requests": "redact"})
    env = envoy_on(scripted, policy, workdir, wasm, "envoy-scripted-batch")
    try:
        batch = [
            {"jsonrpc": "2.0", "id": "srv-1", "result": {"roots": [{"uri": "file:///srv/work"}]}},
            {"jsonrpc": "2.0", "id": "srv-2", "error": {"code": -1, "message": "user declined"}},
            call("echo", {"message": f"deploy with {TOKEN}"}, id=9),
        ]
        before = len(scripted.bodies)
        r = send(env.url, body=json.dumps(batch), token=READER_KEY)
        assert r.status_code == 200, r.text
        (received,) = scripted.bodies[before:]
        assert received[0] == batch[0], received
        assert received[1] == batch[1], received
        assert received[2]["params"]["arguments"]["message"] == "deploy with [REDACTED:github_pat]", received
        assert TOKEN not in json.dumps(received)
    finally:
        env.stop()


# --------------------------------------------------------------------------- identity edges

STOLEN_SAN = "spiffe://acme/stolen"


@pytest.fixture(scope="module")
def two_san_pki(workdir: Path) -> dict[str, Path]:
    """A client certificate whose first URI SAN is fine and whose second is disabled."""
    import ipaddress

    import test_identity as ti
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    d = workdir / "pki-two-sans"
    d.mkdir(exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = ti._cert("e2e-ca", ca_key, "e2e-ca", ca_key, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = ti._cert("localhost", srv_key, "e2e-ca", ca_key,
                   sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli = ti._cert("agent-1", cli_key, "e2e-ca", ca_key,
                   sans=[x509.UniformResourceIdentifier(ti.AGENT_SAN), x509.UniformResourceIdentifier(STOLEN_SAN)])
    ca_crt, _ = ti._write(d / "ca", ca, ca_key)
    srv_crt, srv_k = ti._write(d / "server", srv, srv_key)
    cli_crt, cli_k = ti._write(d / "client", cli, cli_key)
    return {"ca": ca_crt, "server_crt": srv_crt, "server_key": srv_k, "client_crt": cli_crt, "client_key": cli_k}


def mtls_call(pki: dict[str, Path], workdir: Path, mcp_server: Any, wasm: Path, *, disabled: list[str],
              xfcc: bool, name: str) -> dict[str, Any]:
    """One raw initialize over mTLS (refused too by the kill switch); `xfcc`: Envoy writes the certificate's URI SANs
    in x-forwarded-client-cert (SANITIZE_SET, so a client's own copy is replaced)."""
    import httpx

    import test_identity as ti

    policy = ti.mtls_policy()
    policy["disabled"] = disabled
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=mcp_server.port, policy=policy, wasm=wasm)
    if xfcc:
        hcm = harness._hcm(cfg)
        hcm["forward_client_cert_details"] = "SANITIZE_SET"
        hcm["set_current_client_cert_details"] = {"uri": True}
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": str(pki["server_crt"])},
                                      "private_key": {"filename": str(pki["server_key"])}}],
                "validation_context": {"trusted_ca": {"filename": str(pki["ca"])}},
            },
        },
    }
    env = harness.Envoy(cfg, workdir, name=name)
    try:
        with httpx.Client(verify=ti.ssl_context(pki), timeout=30) as hc:
            # a client's own x-forwarded-client-cert naming only the good SAN: replaced by Envoy
            init = rpc("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                      "clientInfo": {"name": "e2e-two-sans", "version": "0"}}, id=2)
            r = hc.post(f"https://127.0.0.1:{env.port}/mcp", content=json.dumps(init),
                        headers={"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
                                 "x-forwarded-client-cert": f"URI={ti.AGENT_SAN}"})
        assert r.status_code == 200, r.text
        (msg,) = [m for m in messages(r) if m.get("id") == 2]
        return msg
    finally:
        env.stop()


def test_a_disabled_second_uri_san_refuses_the_certificate(two_san_pki: dict[str, Path], workdir: Path,
                                                           mcp_server: Any, wasm: Path) -> None:
    msg = mtls_call(two_san_pki, workdir, mcp_server, wasm, disabled=[STOLEN_SAN], xfcc=True, name="envoy-two-sans")
    assert msg.get("error", {}).get("data", {}).get("rule") == "kill-switch", msg
    assert STOLEN_SAN in msg["error"]["data"]["reason"], msg


def test_a_certificate_with_no_disabled_san_passes(two_san_pki: dict[str, Path], workdir: Path,
                                                   mcp_server: Any, wasm: Path) -> None:
    msg = mtls_call(two_san_pki, workdir, mcp_server, wasm, disabled=["spiffe://acme/someone-else"], xfcc=True,
                    name="envoy-two-sans-ok")
    assert "result" in msg, msg
