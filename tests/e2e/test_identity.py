"""Identity beyond API keys and JWTs: mTLS peers, session binding, kill switch and
disabled subjects, through the compiled filter in a real Envoy.

mTLS: Envoy terminates TLS with `require_client_certificate`; the filter reads the
peer's URI SAN (`connection.uri_san_peer_certificate`) as the subject. The CA, the
server and the client certificates are generated per run with `cryptography`.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import ADMIN_KEY, READER_KEY, REVOKED_KEY, base_policy, policy_variant
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mcp import MCPError
from mcp_raw import ACCEPT, call, messages, open_session, rpc, send

import harness

AGENT_SAN = "spiffe://acme/agent-1"


# --------------------------------------------------------------------------- session binding

def test_session_id_of_another_caller_is_refused(envoy: Any) -> None:
    """Mcp-Session-Id is bound to the identity that opened it: a reader cannot ride
    an admin's session (and so cannot inherit whatever the server ties to it)."""
    admin_sess = open_session(envoy.url, ADMIN_KEY)
    before = envoy.upstream_requests()
    r = send(envoy.url, body=json.dumps(call("echo", {"message": "hijack"}, id=8)), token=READER_KEY,
             headers=admin_sess)
    assert r.status_code == 200, r.text
    err = messages(r)[0]["error"]
    assert err["code"] == -32010 and err["data"]["rule"] == "session-binding", err
    assert envoy.upstream_requests() == before
    # the owner still uses it
    ok = send(envoy.url, body=json.dumps(call("echo", {"message": "mine"}, id=9)), token=ADMIN_KEY,
              headers=admin_sess)
    assert ok.status_code == 200 and any("result" in m for m in messages(ok)), ok.text


def test_an_invented_session_id_is_refused_404_and_binds_nothing(envoy: Any) -> None:
    """Only ids the server issued are bound: an id no caller holds here (invented,
    forgotten on restart, or idled out and its entry reused) would be anyone's to
    continue, so it is refused with 404 as a server refuses a session it does not
    know (the client opens a new one). It binds nothing: a second caller presenting
    it gets the same answer, not a stolen-session refusal."""
    invented = {"Mcp-Session-Id": "not-issued-" + READER_KEY[::-1]}
    for token in (READER_KEY, ADMIN_KEY):
        before = envoy.upstream_requests()
        r = send(envoy.url, body=json.dumps(call("echo", {"message": "x"}, id=3)), token=token, headers=invented)
        assert envoy.upstream_requests() == before, "reached the server"
        assert r.status_code == 404, (r.status_code, r.text)
        err = messages(r)[0]["error"]
        assert err["data"]["rule"] == "session-binding" and "bound to no caller" in err["message"] + json.dumps(err), err


@pytest.mark.parametrize("method", ["DELETE", "GET"])
def test_session_id_of_another_caller_cannot_be_deleted_or_streamed(envoy: Any, method: str) -> None:
    """DELETE would end the admin's session; GET would open its server-to-client stream."""
    admin_sess = open_session(envoy.url, ADMIN_KEY)
    before = envoy.upstream_requests()
    r = send(envoy.url, method=method, token=READER_KEY, headers=admin_sess, content_type=None, timeout=10)
    assert r.status_code in (401, 403) or (r.status_code == 200 and "error" in r.text), \
        f"{method} with another caller's session: HTTP {r.status_code} {r.text[:300]}"
    assert envoy.upstream_requests() == before, f"{method} with another caller's session reached the server"


# --------------------------------------------------------------------------- kill switch

def test_kill_switch_refuses_every_message(envoy_for: Any) -> None:
    env = envoy_for(policy_variant(kill_switch=True))
    before = env.upstream_requests()
    for token, body in [(ADMIN_KEY, call("echo", {"message": "x"}, id=1)), (READER_KEY, rpc("tools/list", id=2))]:
        r = send(env.url, body=json.dumps(body), token=token)
        assert r.status_code == 200, r.text
        err = messages(r)[0]["error"]
        assert err["code"] == -32010 and err["data"]["rule"] == "kill-switch", err
    assert env.upstream_requests() == before


def test_kill_switch_holds_in_dry_run(envoy_for: Any) -> None:
    env = envoy_for(policy_variant(kill_switch=True, mode="dry_run"))
    before = env.upstream_requests()
    r = send(env.url, body=json.dumps(call("echo", {"message": "x"}, id=1)), token=ADMIN_KEY)
    assert messages(r)[0]["error"]["data"]["rule"] == "kill-switch", r.text
    assert env.upstream_requests() == before


def test_disabled_subject_is_refused_others_are_not(envoy_for: Any) -> None:
    env = envoy_for(policy_variant(disabled=["e2e-reader"]))
    r = send(env.url, body=json.dumps(rpc("tools/list", id=1)), token=READER_KEY)
    err = messages(r)[0]["error"]
    assert err["code"] == -32010 and err["data"]["rule"] == "kill-switch", err
    admin_sess = open_session(env.url, ADMIN_KEY)
    ok = send(env.url, body=json.dumps(call("echo", {"message": "fine"}, id=2)), token=ADMIN_KEY,
              headers=admin_sess)
    assert any("result" in m for m in messages(ok)), ok.text


# --------------------------------------------------------------------------- mTLS

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool = False,
          sans: list[x509.GeneralName] | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
    crt, k = path.with_suffix(".crt"), path.with_suffix(".key")
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return crt, k


@pytest.fixture(scope="module")
def pki(workdir: Path) -> dict[str, Path]:
    d = workdir / "pki"
    d.mkdir(exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("e2e-ca", ca_key, "e2e-ca", ca_key, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert("localhost", srv_key, "e2e-ca", ca_key,
                sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli = _cert("agent-1", cli_key, "e2e-ca", ca_key, sans=[x509.UniformResourceIdentifier(AGENT_SAN)])
    ca_crt, _ = _write(d / "ca", ca, ca_key)
    srv_crt, srv_k = _write(d / "server", srv, srv_key)
    cli_crt, cli_k = _write(d / "client", cli, cli_key)
    return {"ca": ca_crt, "server_crt": srv_crt, "server_key": srv_k, "client_crt": cli_crt, "client_key": cli_k}


def mtls_envoy(policy: dict[str, Any], pki: dict[str, Path], workdir: Path, mcp_server: Any, wasm: Path,
               name: str) -> harness.Envoy:
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=mcp_server.port, policy=policy, wasm=wasm)
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
    return harness.Envoy(cfg, workdir, name=name)


def mtls_policy() -> dict[str, Any]:
    p = base_policy()
    # no roles: any identity, so also an mTLS peer (whose roles are empty)
    p["rules"].append({"id": "agents-echo", "effect": "allow", "tools": ["echo"]})
    return p


def ssl_context(pki: dict[str, Path], client_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    if client_cert:
        ctx.load_cert_chain(str(pki["client_crt"]), str(pki["client_key"]))
    return ctx


def test_mtls_peer_is_identified_by_its_uri_san(pki: dict[str, Path], workdir: Path, mcp_server: Any,
                                                wasm: Path) -> None:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    env = mtls_envoy(mtls_policy(), pki, workdir, mcp_server, wasm, "envoy-mtls")
    url = f"https://127.0.0.1:{env.port}/mcp"

    async def go() -> Any:
        async with httpx2.AsyncClient(verify=ssl_context(pki), timeout=30) as hc:
            async with streamable_http_client(url, http_client=hc) as (read, write):
                async with ClientSession(read, write) as s:
                    await s.initialize()
                    names = {t.name for t in (await s.list_tools()).tools}
                    echoed = await s.call_tool("echo", {"message": "over mTLS"})
                    with pytest.raises(MCPError) as ei:
                        await s.call_tool("get-sum", {"a": 1, "b": 2})
                    return names, echoed, ei.value

    try:
        names, echoed, denied = anyio.run(go)
    finally:
        env.stop()
    assert names == {"echo"}, names  # no roles: only the role-free rule applies
    assert [c.text for c in echoed.content] == ["Echo: over mTLS"]
    assert denied.code == -32010 and denied.data.get("rule") == "default-deny"


def test_mtls_subject_can_be_disabled(pki: dict[str, Path], workdir: Path, mcp_server: Any, wasm: Path) -> None:
    """Proves the subject is the URI SAN: disabling exactly that string refuses the peer."""
    p = mtls_policy()
    p["disabled"] = [AGENT_SAN]
    env = mtls_envoy(p, pki, workdir, mcp_server, wasm, "envoy-mtls-disabled")
    try:
        with httpx.Client(verify=ssl_context(pki), timeout=30) as c:
            r = c.post(f"https://127.0.0.1:{env.port}/mcp", content=json.dumps(rpc("tools/list", id=1)),
                       headers={"Content-Type": "application/json", "Accept": ACCEPT})
    finally:
        env.stop()
    err = messages(r)[0]["error"]
    assert err["code"] == -32010 and err["data"]["rule"] == "kill-switch", err


def test_mtls_without_client_certificate_never_reaches_the_filter(pki: dict[str, Path], workdir: Path,
                                                                  mcp_server: Any, wasm: Path) -> None:
    env = mtls_envoy(mtls_policy(), pki, workdir, mcp_server, wasm, "envoy-mtls-nocert")
    try:
        with httpx.Client(verify=ssl_context(pki, client_cert=False), timeout=10) as c:
            with pytest.raises(httpx.HTTPError):
                c.post(f"https://127.0.0.1:{env.port}/mcp", content=json.dumps(rpc("tools/list", id=1)),
                       headers={"Content-Type": "application/json", "Accept": ACCEPT})
        assert env.upstream_requests() == 0
    finally:
        env.stop()


def test_a_401_says_why_and_carries_a_challenge(envoy: Any) -> None:
    """A key nobody has is named as such (not "no identity"), a missing one too,
    and both answers carry the WWW-Authenticate challenge RFC 6750 requires."""
    body = json.dumps(call("echo", {"message": "x"}))
    wrong = send(envoy.url, body=body, token=REVOKED_KEY)
    assert wrong.status_code == 401, wrong.text
    assert "API key not recognised" in wrong.json()["error"]["message"]
    assert wrong.headers.get("www-authenticate") == "Bearer"
    none = send(envoy.url, body=body)
    assert none.status_code == 401, none.text
    assert none.json()["error"]["message"].startswith("no identity")
    assert none.headers.get("www-authenticate") == "Bearer"
