"""Identity from a JWT, through the chain of envoy/jwt-example.yaml:
header_mutation (strips a client's x-jwt-payload) -> jwt_authn (verifies, forwards
the payload in x-jwt-payload) -> mcp-firewall.

The signing key is generated per run (RS256); its public half replaces the JWKS of
the committed example. Forged-header cases use raw HTTP: an SDK has no reason to
send that header.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import anyio
import jwt as pyjwt
import pytest
from conftest import READER_KEY, base_policy, sha256_hex
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import MCPError
from mcp_raw import call, messages, open_session, rpc, sdk_session, send

import harness

ISSUER = "https://issuer.example.com"
AUDIENCE = "mcp-firewall"


def jwt_policy() -> dict[str, Any]:
    p = base_policy()
    p["identity"]["jwt_payload_header"] = "x-jwt-payload"
    p["identity"]["claims"] = {"subject": "sub", "roles": "roles", "tenant": "tenant"}
    return p


@pytest.fixture(scope="module")
def signing_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks(signing_key: Any) -> str:
    jwk = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    jwk.update({"kid": "e2e", "alg": "RS256", "use": "sig"})
    return json.dumps({"keys": [jwk]})


def make_token(key: Any, roles: list[str], sub: str = "alice", **extra: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "roles": roles, "tenant": "acme",
              "iat": now, "exp": now + 600, **extra}
    return pyjwt.encode(claims, key, algorithm="RS256", headers={"kid": "e2e"})


def forged_payload(roles: list[str]) -> str:
    raw = json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "roles": roles}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.fixture(scope="module")
def jwt_envoy(envoy_for: Any, jwks: str) -> harness.Envoy:
    return envoy_for(jwt_policy(), template="jwt-example", jwks=jwks)


def test_valid_jwt_with_admin_role_is_allowed(jwt_envoy: Any, signing_key: Any) -> None:
    token = make_token(signing_key, ["admin"])

    async def go() -> Any:
        async with sdk_session(jwt_envoy.url, token) as s:
            names = {t.name for t in (await s.list_tools()).tools}
            return names, await s.call_tool("get-tiny-image", {})

    names, res = anyio.run(go)
    assert "get-tiny-image" in names and "get-env" not in names, names
    assert not res.is_error


def test_valid_jwt_with_reader_role_is_held_to_reader_rules(jwt_envoy: Any, signing_key: Any) -> None:
    token = make_token(signing_key, ["reader"])

    async def go() -> Any:
        async with sdk_session(jwt_envoy.url, token) as s:
            names = {t.name for t in (await s.list_tools()).tools}
            with pytest.raises(MCPError) as ei:
                await s.call_tool("get-tiny-image", {})
            return names, ei.value

    names, err = anyio.run(go)
    assert names == {"echo", "get-sum"}
    assert err.code == -32010 and err.data.get("rule") == "default-deny"


def test_forged_jwt_payload_header_without_jwt_is_401(jwt_envoy: Any) -> None:
    before = jwt_envoy.upstream_requests()
    r = send(jwt_envoy.url, body=json.dumps(rpc("tools/list", id=1)), token=None,
             headers={"x-jwt-payload": forged_payload(["admin"])})
    assert r.status_code == 401, r.text
    assert "error" in messages(r)[0]
    assert jwt_envoy.upstream_requests() == before


def test_forged_jwt_payload_header_next_to_a_valid_reader_jwt_grants_nothing(jwt_envoy: Any,
                                                                             signing_key: Any) -> None:
    token = make_token(signing_key, ["reader"])
    sess = open_session(jwt_envoy.url, token)
    before = jwt_envoy.upstream_requests()
    r = send(jwt_envoy.url, body=json.dumps(call("get-tiny-image", id=2)), token=token,
             headers={**sess, "x-jwt-payload": forged_payload(["admin"])})
    assert r.status_code == 200, r.text
    err = messages(r)[0]["error"]
    assert err["code"] == -32010 and err["data"]["rule"] == "default-deny", err
    assert jwt_envoy.upstream_requests() == before


def test_jwt_with_a_bad_signature_gives_no_identity(jwt_envoy: Any) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = make_token(other_key, ["admin"])
    before = jwt_envoy.upstream_requests()
    r = send(jwt_envoy.url, body=json.dumps(rpc("tools/list", id=3)), token=token)
    assert r.status_code == 401, r.text
    assert jwt_envoy.upstream_requests() == before


def test_api_keys_still_work_behind_jwt_authn(jwt_envoy: Any) -> None:
    sess = open_session(jwt_envoy.url, READER_KEY)
    r = send(jwt_envoy.url, body=json.dumps(call("echo", {"message": "key"}, id=4)), token=READER_KEY,
             headers=sess)
    assert r.status_code == 200
    assert any("result" in m for m in messages(r)), r.text


CHAINS = [
    # (id, keep header_mutation, keep jwt_authn, forged header accepted)
    ("strip-and-jwt_authn", True, True, False),
    ("jwt_authn-only", False, True, False),
    ("strip-only", True, False, False),
    ("neither", False, False, True),
]


@pytest.mark.parametrize("chain,strip,authn,accepted", CHAINS, ids=[c[0] for c in CHAINS])
def test_which_filter_stops_a_forged_payload_header(chain: str, strip: bool, authn: bool, accepted: bool,
                                                    workdir: Any, jwks: str, mcp_server: Any) -> None:
    """Which part of the chain protects the payload header, measured on Envoy 1.40.

    - jwt_authn itself drops a client-sent copy of its forward_payload_header, also
      when no JWT is present (allow_missing_or_failed); header_mutation does it too.
      envoy/jwt-example.yaml keeps both (defence in depth, and not every JWT setup
      has jwt_authn on every route).
    - "neither" is the control: a policy reading x-jwt-payload with nothing in front
      takes a forged header as an identity. It shows this test can fail.
    """
    cfg = harness.render("jwt-example", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=mcp_server.port, policy=jwt_policy(), jwks=jwks)
    drop = set()
    if not strip:
        drop.add("envoy.filters.http.header_mutation")
    if not authn:
        drop.add("envoy.filters.http.jwt_authn")
    filters = harness.http_filters(cfg)
    filters[:] = [f for f in filters if f["name"] not in drop]
    env = harness.Envoy(cfg, workdir, name=f"envoy-jwt-{chain}")
    try:
        before = env.upstream_requests()
        r = send(env.url, body=json.dumps(rpc("tools/list", id=5)), token=None,
                 headers={"x-jwt-payload": forged_payload(["admin"])})
        if accepted:
            # Reached server-everything (which answers 400: no session id): the
            # firewall took the forged header as an identity.
            assert r.status_code != 401, r.text
            assert env.upstream_requests() == before + 1
        else:
            assert r.status_code == 401, r.text
            assert env.upstream_requests() == before
    finally:
        env.stop()


def test_sha256_of_the_reader_key_is_what_the_policy_lists() -> None:
    keys = {k["sha256"] for k in base_policy()["identity"]["api_keys"]}
    assert sha256_hex(READER_KEY) in keys
