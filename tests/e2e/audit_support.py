"""Helpers for the audit delivery tests (test_audit_delivery.py): a collector that
can be stopped and started again on the same port and file, an Envoy whose policy
audits to it, the trail as the collector stored it, `mcp-firewall audit verify`,
and the filter's own view (Envoy stats, warning logs).

Nothing here changes what the filter or the collector do: processes are the real
ones (`mcp-firewall collector`, Envoy + the compiled .wasm), started on free
loopback ports like everything in harness.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from conftest import base_policy

import harness

CLI = harness.REPO / "target" / "release" / "mcp-firewall"
AUDIT_CLUSTER = "audit_collector"

STAT_PREFIX = "wasmcustom.mcp_firewall."
STAT_SENT = STAT_PREFIX + "audit.sent"
STAT_RETRIED = STAT_PREFIX + "audit.retried"
STAT_DROPPED = STAT_PREFIX + "audit.dropped"
STAT_APPEND_FAILED = STAT_PREFIX + "audit.append_failed"
STAT_BUFFERED = STAT_PREFIX + "audit.buffered"
STAT_REFUSED_AUDIT = STAT_PREFIX + "refused.audit_unavailable"

T = TypeVar("T")


# --------------------------------------------------------------------------- collector

class Collector:
    """`mcp-firewall collector` on a fixed loopback port, appending to one file.

    ``stop()`` then ``start()`` is an outage: same port (Envoy's cluster is
    static), same ``--out`` file (the collector rebuilds its set of stored hashes
    from it at start, so re-sent batches are not stored twice).
    """

    def __init__(self, workdir: Path, name: str, port: int | None = None):
        self.workdir = workdir
        self.name = name
        self.port = port or harness.free_port()
        self.out = workdir / f"{name}.ndjson"
        self.proc: harness.Proc | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.proc is None or not self.proc.alive(), "collector already running"
        self.starts += 1
        self.proc = harness.Proc(
            f"{self.name}-{self.starts}",
            [str(CLI), "collector", "--listen", f"127.0.0.1:{self.port}", "--out", str(self.out)],
            self.workdir / f"{self.name}-{self.starts}.log")
        harness._wait(lambda: harness.port_open(self.port), 30, f"collector {self.name}", self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        # Nobody may be listening any more, or the "outage" is not one.
        assert not harness.port_open(self.port), f"port {self.port} still accepts connections"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def logs(self) -> str:
        return "".join((self.workdir / f"{self.name}-{i}.log").read_text(errors="replace")
                       for i in range(1, self.starts + 1))


# --------------------------------------------------------------------------- Envoy

def audit_envoy(workdir: Path, mcp_server: harness.McpServer, wasm: Path, collector_port: int, *,
                name: str, audit: dict[str, Any], concurrency: int = 1,
                policy: dict[str, Any] | None = None, extra_args: tuple[str, ...] = ()) -> harness.Envoy:
    """envoy/envoy.yaml + the test policy with an `audit` section, plus a static
    cluster for the collector (the same shape as test_audit.py)."""
    p = policy if policy is not None else base_policy()
    p["audit"] = {"cluster": AUDIT_CLUSTER, "path": "/v1/audit", "authority": "audit", **audit}
    cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                         upstream_port=mcp_server.port, policy=p, wasm=wasm)
    cfg["static_resources"]["clusters"].append(collector_cluster(collector_port))
    return harness.Envoy(cfg, workdir, name=name, concurrency=concurrency, extra_args=extra_args)


def start_collector(workdir: Path, name: str) -> tuple[harness.Proc, int, Path]:
    """`mcp-firewall collector` on a free port, writing `<name>.ndjson` in `workdir`, once it
    listens: its process (the caller stops it), its port and its file."""
    if not CLI.exists():
        raise AssertionError(f"{CLI} is missing: run `cargo build --release -p mcp-firewall-cli` (scripts/test.sh does)")
    port = harness.free_port()
    out = workdir / f"{name}.ndjson"
    proc = harness.Proc(name, [str(CLI), "collector", "--listen", f"127.0.0.1:{port}", "--out", str(out)],
                        workdir / f"{name}.log")
    try:
        harness._wait(lambda: harness.port_open(port), 30, "audit collector", proc)
    except BaseException:
        proc.stop()
        raise
    return proc, port, out


def collector_cluster(port: int) -> dict[str, Any]:
    return {
        "name": AUDIT_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": AUDIT_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def audit_stats(env: harness.Envoy) -> dict[str, int]:
    """sent / retried / dropped / append_failed / buffered / refused (0 when not created yet)."""
    s = env.stats(r"^wasmcustom\.mcp_firewall\.(audit\.|refused\.audit_unavailable)")
    return {"sent": s.get(STAT_SENT, 0), "retried": s.get(STAT_RETRIED, 0), "dropped": s.get(STAT_DROPPED, 0),
            "append_failed": s.get(STAT_APPEND_FAILED, 0), "buffered": s.get(STAT_BUFFERED, 0),
            "refused": s.get(STAT_REFUSED_AUDIT, 0)}


DROP_LOG = re.compile(r"mcp-firewall: (\d+) audit events dropped \(seq ([0-9, \-]+?)(, approximate)?\)")


def drop_reports(env: harness.Envoy) -> list[tuple[int, list[tuple[int, int]], bool]]:
    """Every "N audit events dropped (seq a-b, c-d)" warning in Envoy's log:
    (N, [(a, b), (c, d)], exact)."""
    out = []
    for m in DROP_LOG.finditer(env.log_text()):
        ranges = []
        for r in m.group(2).split(","):
            a, _, b = r.strip().partition("-")
            ranges.append((int(a), int(b)))
        out.append((int(m.group(1)), ranges, m.group(3) is None))
    return out


def expand(ranges: list[tuple[int, int]]) -> list[int]:
    return [s for a, b in ranges for s in range(a, b + 1)]


def runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted seqs as maximal contiguous (first, last) runs."""
    out: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


# --------------------------------------------------------------------------- the trail

def read_lines(path: Path) -> list[str]:
    """The trail's finished lines. A test reads while the collector appends a batch
    (one `write_all`, which may reach the file in pieces), so bytes after the last
    newline are a line still being written: the collector itself cuts them on start."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    finished = raw[: raw.rfind(b"\n") + 1].decode()
    # Only "\n" ends a line: `str.splitlines` also cuts at U+2028, U+0085 and
    # \x1c-\x1e, which a JSON string holds raw (a helper's attack, twentieth session).
    return [line for line in finished.split("\n") if line.strip()]


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_lines(path)]


def verify(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), "audit", "verify", *extra, str(path)], capture_output=True, text=True,
                          timeout=120)


GAP_LINE = re.compile(r"FAIL chain (\S+): gap between (\d+) and (\d+) \((\d+) missing(.*)\)$")


def verify_gaps(report: str) -> list[tuple[int, int, int, str]]:
    """(after, next, missing, rest of the message) of every gap line of a verify report."""
    return [(int(m.group(2)), int(m.group(3)), int(m.group(4)), m.group(5))
            for m in (GAP_LINE.match(line) for line in report.splitlines()) if m]


def method(e: dict[str, Any]) -> str | None:
    return (e.get("request") or {}).get("method")


# --------------------------------------------------------------------------- waiting

def wait_until(probe: Callable[[], T], done: Callable[[T], bool], timeout: float, what: str,
               describe: Callable[[T], str] = repr, interval: float = 0.2) -> T:
    """Poll ``probe()`` until ``done(value)``; on timeout fail with the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached after {timeout:.0f}s; last: {describe(value)}")
        time.sleep(interval)
