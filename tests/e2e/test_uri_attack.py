"""Fresh-eyes attack on resource-URI canonicalisation (docs/policy.md, "Rules:
kinds, globs, normalisation", Resource URIs), through the compiled filter in a
real Envoy.

One Envoy, one recording peer (meter_peer.py: it answers every
`resources/read` and writes down every body it receives). The policy allows
the web, files and `res:` broadly and denies named resources beside:

    deny  http://169.254.169.254/**        (no-metadata)
    deny  https://internal.example.com/**  (no-internal)   and wss://, ftp:// of it
    deny  file:///etc/**                   (no-etc)
    deny  file:///srv/secret.txt           (no-secret: an exact file)
    deny  res://vault/**                   (no-vault: a custom scheme)
    deny  file:///C:/Secrets/**            (no-winsecret: a Windows server)

For every URI the test asks how real server stacks read it, each in ONE
process call for all URIs: Node (WHATWG `new URL`, `fileURLToPath`), Python
(`urllib.parse.urlsplit`, `httpx.URL`) and Go (`net/url`). A numeric host is
read as the resolver would (`getaddrinfo`/`inet_aton` forms, IPv4-mapped IPv6
as IPv4), a port as a number (`080` is 80). If ANY of them reads the URI as a
denied resource, the filter must not forward it (the peer must not receive
the request id). A failing test is a finding. Ordinary URIs must still pass.
Every process and temp file is removed at the end.

What it found on the build it was written against (43817a5; 29 failed, 238 passed):
- fixed since (57f0a86): a zero-padded default port was kept as written
  (`http://169.254.169.254:080/`, `https://internal.example.com:0443/`, also behind
  `2852039166` or `[::ffff:a9fe:a9fe]`), and so was ftp's default port 21: every client
  connects to the default port, the deny rule did not match; a trailing space
  (`file:///srv/secret.txt `), which WHATWG (Node) strips, was decided as `%20`;
  `res://vault%2e/token` normalised to the `res://vault./token` refused when sent raw;
- documented, not covered by glob patterns (DOCUMENTED_GAPS, strict xfail;
  docs/policy.md, Common traps): `file:///srv/secret.txt/` and `/.` for an exact-file
  deny; custom-scheme bare, query, fragment and port forms (`res://vault`,
  `res://vault?token`, `res://vault:1234/token`) for a deny on `res://vault/**`;
  Windows paths (`C|`, `C%3A`, case, a trailing dot in a segment).
"""

from __future__ import annotations

import ipaddress
import json
import posixpath
import re
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp_raw import ACCEPT

import harness
from meter_peer import RecordingPeer

CLI = harness.REPO / "target" / "release" / "mcp-firewall"
NODE_MODULES = harness.REPO / "peers" / "node_modules"


def uri_policy() -> dict[str, Any]:
    return {
        "version": 1,
        "mode": "enforce",
        "identity": {"anonymous_roles": ["anon"]},
        "rules": [
            {"id": "web", "effect": "allow", "resources": ["https://*/**"]},
            {"id": "plain-web", "effect": "allow", "resources": ["http://*/**"]},
            {"id": "sockets", "effect": "allow", "resources": ["ws://*/**", "wss://*/**"]},
            {"id": "ftp-web", "effect": "allow", "resources": ["ftp://*/**"]},
            {"id": "files", "effect": "allow", "resources": ["file:///**"]},
            {"id": "res", "effect": "allow", "resources": ["res://**"]},
            {"id": "no-metadata", "effect": "deny", "resources": ["http://169.254.169.254/**"]},
            {"id": "no-internal", "effect": "deny", "resources": ["https://internal.example.com/**"]},
            {"id": "no-internal-wss", "effect": "deny", "resources": ["wss://internal.example.com/**"]},
            {"id": "no-internal-ftp", "effect": "deny", "resources": ["ftp://internal.example.com/**"]},
            {"id": "no-etc", "effect": "deny", "resources": ["file:///etc/**"]},
            {"id": "no-secret", "effect": "deny", "resources": ["file:///srv/secret.txt"]},
            {"id": "no-vault", "effect": "deny", "resources": ["res://vault/**"]},
            {"id": "no-winsecret", "effect": "deny", "resources": ["file:///C:/Secrets/**"]},
            {"id": "no-private", "effect": "deny", "resources": ["https://docs.example.com/private/**"]},
        ],
    }


# --------------------------------------------------------------------------- the URIs

MD = "169.254.169.254"
IN = "internal.example.com"

# (family, uri). Each is sent; the assertion depends on how the parsers read it.
ATTACKS: list[tuple[str, str]] = [
    # A. IPv4 number forms (WHATWG, inet_aton)
    *[("ipv4-forms", f"http://{h}/latest") for h in [
        MD, "2852039166", "0xa9fea9fe", "0XA9FEA9FE", "0x00a9fea9fe", "0251.0376.0251.0376",
        "00000251.0376.0251.0376", "169.254.43518", "169.16689662", "0xa9.254.43518",
        "0x0a9.0xfe.0xa9.0xfe", "169.254.169.254.", "0xa9fea9fe.", "169.254.169.0254",
        "169.254.169.254..", "1.169.254.169.254", "169.254.169.254.5", "0xa9.0xfe.0xa9.0xfe.0",
        "0x", "internal.0x", "internal.example.123",
    ]],
    # B. percent-escapes and case in the host
    *[("host-escapes", u) for u in [
        "http://%31%36%39.254.169.254/latest", "http://169%2e254%2e169%2e254/latest",
        "http://169%2E254.169.254/latest", "http://169.254.169.254%2e/latest",
        "http://%32%38%35%32%30%33%39%31%36%36/latest", "http://0%78a9fea9fe/latest",
        f"https://%69nternal.example.com/x", "https://%49NTERNAL.example.com/x",
        "https://INTERNAL.EXAMPLE.COM/x", "https://Internal.Example.Com./x",
        "https://internal%2eexample%2ecom/x", "https://internal.example.com%2E/x",
        "https://internal.example.com%2e%2e/x", "https://%2569nternal.example.com/x",
        "https://internal.example.com%00/x", "https://internal.example.com%09/x",
        "https://internal.example.com%20/x", "https://internal%2Dexample.com/x",
    ]],
    # C. IPv6 literals
    *[("ipv6", f"http://[{h}]/latest") for h in [
        "::ffff:169.254.169.254", "::ffff:a9fe:a9fe", "0:0:0:0:0:ffff:a9fe:a9fe", "::FFFF:A9FE:A9FE",
        "0000:0000:0000:0000:0000:ffff:169.254.169.254", "::ffff:169.254.169.254%25eth0",
        "::ffff:a9fe:a9fe%25eth0", "fe80::1%25eth0", "::ffff:0251.254.169.254", "::ffff:169.254.43518",
        "::a9fe:a9fe", "::169.254.169.254", "64:ff9b::a9fe:a9fe", "::ffff:0:a9fe:a9fe",
        "::ffff:a9fe:a9fe]:80[", "v1.a9fe",
    ]],
    # D. ports
    *[("ports", u) for u in [
        f"http://{MD}:80/latest", f"http://{MD}:080/latest", f"http://{MD}:0080/latest",
        f"http://{MD}:00000000080/latest", f"http://{MD}:/latest", f"http://{MD}:0/latest",
        f"http://{MD}:65616/latest", f"http://{MD}:8080/latest", f"http://{MD}:80:80/latest",
        f"http://{MD}:+80/latest", f"http://{MD}: 80/latest", f"http://[::ffff:a9fe:a9fe]:080/latest",
        f"http://2852039166:0080/latest",
        f"https://{IN}:443/x", f"https://{IN}:0443/x", f"https://{IN}:00443/x", f"https://{IN}:/x",
        f"wss://{IN}:443/x", f"wss://{IN}:0443/x", f"ftp://{IN}:21/x", f"ftp://{IN}:021/x",
        f"ftp://{IN}/x",
    ]],
    # E. no '//', extra slashes, backslashes
    *[("slashes", u) for u in [
        f"http:{MD}/latest", f"http:/{MD}/latest", f"http:///{MD}/latest", f"http:////{MD}/latest",
        f"http:\\\\{MD}/latest", f"http:/\\{MD}/latest", f"http://\\{MD}/latest", f"http:\\/{MD}/latest",
        f"https:{IN}/x", f"https:\\\\{IN}\\x", f"HTTPS:/{IN}/x", f"https://{IN}\\x",
        f"wss:{IN}/x", f"ftp:{IN}/x",
    ]],
    # F. whitespace and controls (WHATWG strips tab/newline everywhere, C0+space at the ends)
    *[("whitespace", u) for u in [
        f"http://169.254.1\t69.254/latest", f"ht\ntp://{MD}/latest", f" http://{MD}/latest",
        f"\x01http://{MD}/latest", f"http://{MD}/latest ", f"http://{MD}/latest\x00",
        f"http://{MD} /latest", f"http://{MD}\r\n/latest", f"https://inter\tnal.example.com/x",
        f"https://{IN}\x0c/x", f"https://{IN}\u00a0/x", "file:///srv/secret.txt ", "file:///srv/secret.txt  ",
        "file:///srv/secret.txt\t", "file:///srv/secret.txt\x1f", "file:///srv/secret.tx\nt",
        "file:///srv/secret.txt%20", "file:///etc/pass\twd",
    ]],
    # G. userinfo and '@' elsewhere
    *[("at-sign", u) for u in [
        f"https://x@{IN}/x", f"https://docs.example.com@{IN}/x", f"https://docs.example.com:443@{IN}/x",
        f"https://{IN}%40docs.example.com/x", f"https://docs.example.com%40{IN}/x",
        f"https://docs.example.com/@{IN}/x", f"https://docs.example.com?@{IN}/x",
        f"https://docs.example.com#@{IN}/x", f"https://{IN}\\@docs.example.com/x",
        f"https://docs.example.com\\@{IN}/x", f"https://a@b@{IN}/x", f"https://@{IN}/x",
        f"res://x@vault/token", f"file://x@localhost/etc/passwd",
    ]],
    # H. Unicode hosts (IDNA maps these to ASCII in WHATWG)
    *[("unicode-host", u) for u in [
        "https://internal\u3002example\u3002com/x", "https://internal\uff0eexample.com/x",
        "https://\uff49nternal.example.com/x", "https://\u24d8nternal.example.com/x",
        "https://inter\u00adnal.example.com/x", "https://inter\u200bnal.example.com/x",
        "https://%EF%BD%89nternal.example.com/x", "https://internal.example.co\u1d0d/x",
        "http://\uff11\uff16\uff19.254.169.254/latest", "http://169\u3002254\u3002169\u3002254/latest",
        "res://\uff56ault/token",
    ]],
    # I. scheme case
    *[("scheme-case", u) for u in [
        f"HTTP://{MD}/latest", f"HtTpS://{IN}/x", "FILE:///etc/passwd", "File:/etc/passwd",
        "RES://vault/token", "Res://VAULT/token", f"WSS://{IN}/x",
    ]],
    # J. file: forms
    *[("file", u) for u in [
        "file:///etc/passwd", "file:/etc/passwd", "file://localhost/etc/passwd", "file://LOCALHOST/etc/passwd",
        "file://localhost./etc/passwd", "file://localhost:/etc/passwd", "file://localhost:80/etc/passwd",
        "file://127.0.0.1/etc/passwd", "file://evil.example/etc/passwd", "file://%6cocalhost/etc/passwd",
        "file:////etc/passwd", "file://///etc/passwd", "file:///etc//passwd", "file:.//etc/passwd",
        "file:etc/passwd", "file:./etc/passwd", "file:/..//etc/passwd", "file:..//etc/passwd",
        "file:///srv/../etc/passwd", "file:///srv/%2e%2e/etc/passwd", "file:///srv/%2E./etc/passwd",
        "file:///srv/.%2E/etc/passwd", "file:///%65tc/passwd", "file:///%65TC/passwd",
        "file:///etc%2fpasswd", "file:///etc%2Fpasswd", "file:///etc%5cpasswd", "file:\\\\etc\\passwd",
        "file:///etc/passwd?x", "file:///etc/passwd#x", "file:///etc/./passwd", "file:/./etc/passwd",
        "file:///./etc/passwd", "file:///srv/docs/a.md#/../../../etc/passwd", "file:///etc/passwd%00",
        "file:///etc/passwd%2500", "file:///srv/%252e%252e/etc/passwd", "file:///srv/secret.txt",
        "file:///srv/./secret.txt", "file:///srv/secret.txt#x", "file:///srv//secret.txt",
        "file:///srv/secret.txt/", "file:///srv/secret.txt/.", "file:///srv/SECRET.txt",
        "file:///%73rv/secret.txt", "file:/srv/secret.txt", "file://localhost/srv/secret.txt",
        "file:///proc/self/root/etc/passwd",
    ]],
    # K. Windows file: forms (a server on Windows; drive letters and paths are case-insensitive there)
    *[("windows-file", u) for u in [
        "file:///C:/Secrets/x", "file:///C|/Secrets/x", "file:///c:/Secrets/x", "file:///C:/secrets/x",
        "file://C:/Secrets/x", "file:C:/Secrets/x", "file:/C:/Secrets/x", "file:///C%3A/Secrets/x",
        "file:///C%7C/Secrets/x", "file:///C:/Secrets./x", "file://localhost/C:/Secrets/x",
    ]],
    # L. custom scheme
    *[("custom-scheme", u) for u in [
        "res://vault/token", "res://VAULT/token", "res://vault:/token", "res://vault:0/token",
        "res://vault./token", "res://vault%2e/token", "res://vault%2E/token", "res://%76ault/token",
        "res://%56AULT/token", "res:/vault/token", "res:vault/token", "res:///vault/token",
        "res://vault%2Ftoken", "res://vault/%2e%2e/token", "res://data/../vault/token",
        "res://[::1]/token", "res://vault%00/token", "res:%2F%2Fvault/token", "res://vault",
        "res://vault?token", "res://vault?/token", "res://vault#/token", "res://vault:1234/token",
    ]],
    # M. a path-level deny on a web host (the server fetches; the remote server reads the path)
    *[("http-path", u) for u in [
        "https://docs.example.com/private/x", "https://docs.example.com/public/../private/x",
        "https://docs.example.com/public/%2e%2e/private/x", "https://docs.example.com/public/.%2E/private/x",
        "https://docs.example.com/public/%2e%2e%2fprivate/x", "https://docs.example.com/%70rivate/x",
        "https://docs.example.com/private%2fx", "https://docs.example.com/private/./x",
        "https://docs.example.com/./private/x", "https://docs.example.com:0443/private/x",
        "https://docs.example.com//private/x", "https://docs.example.com/public/..;/private/x",
        "https://docs.example.com/PRIVATE/x", "https://docs.example.com/private;x/y",
        "https://docs.example.com/private/x ", "https://docs.example.com/public/..\\private/x",
        "https:docs.example.com/private/x", "https://docs.example.com./private/x",
    ]],
]

# Ordinary URIs: the policy allows them and they must still reach the server as sent.
BENIGN = [
    "https://docs.example.com/a/b?x=1", "https://docs.example.com/", "https://docs.example.com",
    "https://docs.example.com/a/b#frag", "https://docs.example.com:8443/x", "http://example.org/x",
    "http://[2001:db8::1]/x", "http://10.0.0.1/x", "https://xn--bcher-kva.example/x",
    "ws://example.org/sock", "wss://example.org/sock", "ftp://ftp.example.org/pub/x",
    "file:///srv/docs/a.md", "file:///srv/docs/sub/b%20c.md", "file:///srv/docs/~admin/a",
    "file:///srv/docs/Donn%C3%A9es/x.md", "file:///C:/Public/x", "res://data/x", "res://data/a/b?c=d",
    "res://data/x#frag", "https://internal.example.com.evil.example/x", "http://169.254.169.253/x",
]


# --------------------------------------------------------------------------- parsers

NODE_JS = r"""
const { fileURLToPath } = require('url');
const uris = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = uris.map(u => {
  try {
    const x = new URL(u);
    let fpath = null;
    if (x.protocol === 'file:') { try { fpath = fileURLToPath(x); } catch (e) { fpath = null; } }
    let path = x.pathname; try { path = decodeURIComponent(x.pathname); } catch (e) {}
    return { ok: true, scheme: x.protocol.replace(/:$/, ''), host: x.hostname, port: x.port, path, fpath };
  } catch (e) { return { ok: false, err: String(e.code || e.message) }; }
});
process.stdout.write(JSON.stringify(out));
"""

GO_SRC = r"""
package main

import (
	"encoding/json"
	"net/url"
	"os"
	"strings"
)

type R struct {
	Ok     bool   `json:"ok"`
	Err    string `json:"err,omitempty"`
	Scheme string `json:"scheme"`
	Host   string `json:"host"`
	Port   string `json:"port"`
	Path   string `json:"path"`
}

func main() {
	var uris []string
	if err := json.NewDecoder(os.Stdin).Decode(&uris); err != nil {
		panic(err)
	}
	out := make([]R, 0, len(uris))
	for _, u := range uris {
		x, err := url.Parse(u)
		if err != nil {
			out = append(out, R{Err: err.Error()})
			continue
		}
		out = append(out, R{Ok: true, Scheme: strings.ToLower(x.Scheme), Host: x.Hostname(), Port: x.Port(), Path: x.Path})
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
"""


def python_read(u: str) -> dict[str, Any]:
    try:
        x = urllib.parse.urlsplit(u)
        try:
            port = "" if x.port is None else str(x.port)
        except ValueError as e:
            return {"ok": False, "err": f"port: {e}"}
        return {"ok": True, "scheme": x.scheme.lower(), "host": x.hostname or "", "port": port,
                "path": urllib.parse.unquote(x.path)}
    except ValueError as e:
        return {"ok": False, "err": str(e)}


def httpx_read(u: str) -> dict[str, Any]:
    try:
        x = httpx.URL(u)
        return {"ok": True, "scheme": x.scheme.lower(), "host": x.host, "port": "" if x.port is None else str(x.port),
                "path": x.path}
    except Exception as e:  # noqa: BLE001 - any refusal is "cannot read"
        return {"ok": False, "err": f"{type(e).__name__}: {e}"}


def run_node(uris: list[str]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node, "node is not on PATH"
    p = subprocess.run([node, "-e", NODE_JS], input=json.dumps(uris), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def run_go(uris: list[str], scratch: Path) -> list[dict[str, Any]]:
    go = shutil.which("go")
    assert go, "go is not on PATH"
    src = scratch / "parse_uris.go"
    src.write_text(GO_SRC)
    p = subprocess.run([go, "run", str(src)], input=json.dumps(uris), capture_output=True, text=True, timeout=120,
                       cwd=scratch)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


DEFAULT_PORT = {"http": 80, "ws": 80, "https": 443, "wss": 443, "ftp": 21}


def numeric_host(host: str) -> str:
    """The host as a client connects to it: IPv4-mapped IPv6 as IPv4, a trailing dot
    dropped, the numeric forms getaddrinfo/inet_aton accept (`2852039166`, `0xa9.254.43518`)
    written dotted; otherwise lower-cased."""
    h = host.strip("[]").lower()
    if h.endswith("."):
        h = h[:-1]
    try:
        ip = ipaddress.ip_address(h)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ip)
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fx.]+", h) and not h.endswith("."):
        try:
            return socket.inet_ntoa(socket.inet_aton(h))
        except OSError:
            pass
    return h


def remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 (what WHATWG does to an http path, and HTTP clients that resolve dots)."""
    out: list[str] = []
    segs = path.split("/")
    for i, seg in enumerate(segs):
        if seg == "..":
            if len(out) > 1:
                out.pop()
            if i == len(segs) - 1:
                out.append("")
        elif seg == ".":
            if i == len(segs) - 1:
                out.append("")
        else:
            out.append(seg)
    return "/".join(out)


def file_paths(r: dict[str, Any]) -> list[str]:
    return [p for p in (r.get("path"), r.get("fpath")) if isinstance(p, str) and p]


def denied_reading(r: dict[str, Any]) -> str | None:
    """The deny rule a parser's reading of the URI falls under, or None."""
    if not r.get("ok"):
        return None
    scheme = r["scheme"]
    host = numeric_host(r.get("host") or "")
    port_s = r.get("port") or ""
    try:
        port = int(port_s) if port_s else DEFAULT_PORT.get(scheme)
    except ValueError:
        return None
    if scheme == "http" and host == MD and port == 80:
        return "no-metadata"
    if scheme == "https" and host == IN and port == 443:
        return "no-internal"
    if scheme == "wss" and host == IN and port == 443:
        return "no-internal-wss"
    if scheme == "ftp" and host == IN and port == 21:
        return "no-internal-ftp"
    if scheme == "res" and host == "vault":
        return "no-vault"
    if scheme == "https" and host == "docs.example.com" and port == 443:
        if remove_dot_segments(r.get("path") or "").startswith("/private/"):
            return "no-private"
    if scheme == "file":
        for p in file_paths(r):
            posix = posixpath.normpath(re.sub("/+", "/", p))
            if posix.startswith("/etc/"):
                return "no-etc"
            if posix == "/srv/secret.txt":
                return "no-secret"
            # A Windows server: drive letter and names case-insensitive, trailing dots dropped.
            win = p.lstrip("/").replace("\\", "/").lower()
            win = "/".join(seg.rstrip(". ") if seg not in (".", "..") else seg for seg in win.split("/"))
            if re.match(r"c:/secrets/.", win):
                return "no-winsecret"
    return None


# --------------------------------------------------------------------------- processes


class Peer(RecordingPeer):
    def __init__(self, workdir: Path):
        super().__init__(workdir, "uri-peer")

    def ids_seen(self) -> dict[Any, Any]:
        """Each request id the peer received, with the URI it asked for."""
        return {m["id"]: (m.get("params") or {}).get("uri") for m in self.seen() if "id" in m}


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="mcpfw-uri-attack-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def peer(scratch: Path) -> Iterator[Peer]:
    p = Peer(scratch)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def envoy(scratch: Path, wasm: Path, peer: Peer) -> Iterator[harness.Envoy]:
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=peer.port, policy=uri_policy(), wasm=wasm)
    env = harness.Envoy(cfg, scratch, name="envoy-uri")
    yield env
    env.stop()


@pytest.fixture(scope="module")
def readings(scratch: Path) -> dict[str, dict[str, dict[str, Any]]]:
    uris = sorted({u for _, u in ATTACKS} | set(BENIGN))
    node, go = run_node(uris), run_go(uris, scratch)
    return {u: {"node": n, "go": g, "python": python_read(u), "httpx": httpx_read(u)}
            for u, n, g in zip(uris, node, go)}


_ids = count(1000)


def read_resource(env: harness.Envoy, uri: str, method: str = "resources/read") -> tuple[int, dict[str, Any]]:
    rid = next(_ids)
    body = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": {"uri": uri}})
    with httpx.Client(timeout=30) as c:
        r = c.post(env.url, content=body, headers={"Accept": ACCEPT, "Content-Type": "application/json"})
    try:
        answer = r.json()
    except ValueError:
        answer = {"http": r.status_code, "text": r.text[:300]}
    return rid, answer


def verdict(answer: dict[str, Any]) -> str:
    if "error" in answer:
        e = answer["error"]
        return f"refused {e.get('code')} rule={(e.get('data') or {}).get('rule')} ({e.get('message', '')[:120]})"
    return "forwarded" if "result" in answer else f"? {answer}"


def show(readings: dict[str, dict[str, Any]]) -> str:
    def one(r: dict[str, Any]) -> str:
        if not r.get("ok"):
            return f"error {r.get('err')}"
        return f"{r['scheme']} host={r.get('host')!r} port={r.get('port')!r} path={r.get('path')!r}" + (
            f" fpath={r['fpath']!r}" if r.get("fpath") else "")
    return "; ".join(f"{k}: {one(v)}" for k, v in readings.items())


# --------------------------------------------------------------------------- tests


# Spellings a glob pattern cannot name, which docs/policy.md (Common traps: "Deny a
# resource and what is under it") tells operators to deny in their own patterns: the
# bare and query forms of a custom-scheme resource and its ports, a file named with a
# trailing slash, and Windows paths (case-insensitive drive and names, `C|`, `C%3A`).
# Strict xfail: the day the filter covers one, the test says so and the docs change.
DOCUMENTED_GAPS = {
    "file:///srv/secret.txt/", "file:///srv/secret.txt/.",
    "file:///C|/Secrets/x", "file:///c:/Secrets/x", "file:///C:/secrets/x", "file:///C%3A/Secrets/x",
    "file:///C:/Secrets./x",
    "res://vault", "res://vault?token", "res://vault?/token", "res://vault#/token", "res://vault:0/token",
    "res://vault:1234/token",
}
ATTACK_PARAMS = [
    pytest.param(f, u, id=f"{f}:{u!r}",
                 marks=[pytest.mark.xfail(strict=True, reason="a documented gap of glob patterns")]
                 if u in DOCUMENTED_GAPS else [])
    for f, u in ATTACKS
]


@pytest.mark.parametrize("family,uri", ATTACK_PARAMS)
def test_no_parser_reads_a_forwarded_uri_as_a_denied_resource(
        family: str, uri: str, envoy: harness.Envoy, peer: Peer, readings: dict[str, Any]) -> None:
    r = readings[uri]
    who = {name: rule for name, reading in r.items() if (rule := denied_reading(reading))}
    rid, answer = read_resource(envoy, uri)
    forwarded = rid in peer.ids_seen()
    if who:
        assert not forwarded and "error" in answer, (
            f"{uri!r} passed the filter ({verdict(answer)}) but is read as a denied resource by {who}: "
            f"{show(r)}")


@pytest.mark.parametrize("uri", BENIGN)
def test_ordinary_uris_still_reach_the_server_as_sent(uri: str, envoy: harness.Envoy, peer: Peer,
                                                      readings: dict[str, Any]) -> None:
    assert not any(denied_reading(x) for x in readings[uri].values()), "test mistake: a benign URI reads as denied"
    rid, answer = read_resource(envoy, uri)
    assert "result" in answer, (uri, verdict(answer))
    assert peer.ids_seen().get(rid) == uri, "the filter rewrote the URI it forwarded"


def test_subscribe_is_decided_like_read(envoy: harness.Envoy, peer: Peer) -> None:
    """resources/subscribe of a denied host spelled with a zero-padded port."""
    for uri in [f"http://{MD}/latest", f"http://{MD}:080/latest", f"https://{IN}:0443/x"]:
        rid, answer = read_resource(envoy, uri, method="resources/subscribe")
        assert rid not in peer.ids_seen() and "error" in answer, (uri, verdict(answer))


def test_an_encoded_trailing_dot_is_refused_like_a_raw_one(envoy: harness.Envoy, peer: Peer) -> None:
    """docs/policy.md: "Under other schemes a host ending in `.` is refused". `res://vault%2e/x`
    normalises to `res://vault./x` (the escape of an unreserved '.' is decoded), the very string
    refused when sent raw: one normal form, two decisions, and the canonicaliser is not
    idempotent on it (its own output is refused)."""
    _, raw = read_resource(envoy, "res://vault./token")
    _, enc = read_resource(envoy, "res://vault%2e/token")
    assert "error" in raw, verdict(raw)
    assert "error" in enc, f"res://vault%2e/token: {verdict(enc)}; res://vault./token: {verdict(raw)}"


def test_json_spellings_of_the_uri_member_are_refused(envoy: harness.Envoy, peer: Peer) -> None:
    """A second `uri` member, or one in another case (Go's encoding/json matches field
    names case-insensitively and the last one wins), must not carry the denied URI past."""
    bodies = [
        '{"jsonrpc":"2.0","id":%d,"method":"resources/read","params":{"uri":"https://docs.example.com/","uri":"http://169.254.169.254/latest"}}',
        '{"jsonrpc":"2.0","id":%d,"method":"resources/read","params":{"uri":"https://docs.example.com/","URI":"http://169.254.169.254/latest"}}',
        '{"jsonrpc":"2.0","id":%d,"method":"resources/read","params":{"uri":"https://docs.example.com/","Uri":"http://169.254.169.254/latest"}}',
        '{"jsonrpc":"2.0","id":%d,"method":"resources/read","params":{"ur\\u0069":"http://169.254.169.254/latest"}}',
        '{"jsonrpc":"2.0","id":%d,"method":"resources/read","params":{"uri":"http:\\/\\/169.254.169.254\\/latest"}}',
    ]
    for b in bodies:
        rid = next(_ids)
        with httpx.Client(timeout=30) as c:
            r = c.post(envoy.url, content=b % rid, headers={"Accept": ACCEPT, "Content-Type": "application/json"})
        assert rid not in peer.ids_seen(), (b, r.status_code, r.text[:300])


def test_explain_agrees_with_the_filter_on_the_zero_padded_port() -> None:
    """`mcp-firewall explain` decides as the filter does: `http://169.254.169.254:080/` is
    the host and port the deny rule names (it passed both before ports were read as
    numbers)."""
    if not CLI.exists():
        pytest.skip("target/release/mcp-firewall is not built")
    with tempfile.TemporaryDirectory(prefix="mcpfw-uri-explain-") as d:
        pol = Path(d) / "policy.json"
        pol.write_text(json.dumps(uri_policy()))
        msg = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "resources/read",
                          "params": {"uri": f"http://{MD}:080/latest"}})
        p = subprocess.run([str(CLI), "explain", str(pol), msg], capture_output=True, text=True, timeout=30)
    assert p.stdout.startswith(("DENY", "REFUSED")) or "resource-uri" in p.stdout, p.stdout
