"""A rate limit service for the end-to-end tests, on Envoy's real protocol:
`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` over HTTP/2 gRPC
(the generated code of PyPI `xds-protos`, served by `grpcio`), counting in a
real Redis.

It stands in for envoyproxy/ratelimit (a Go program whose modules cannot be
fetched here) and does what it does for the configurations the tests use:

- the configuration is envoyproxy/ratelimit's own YAML (`domain`, nested
  `descriptors` of `key`, optional `value`, `rate_limit: {unit,
  requests_per_unit}`); a descriptor's entries walk the tree, an entry matching
  a node with its exact value before a node with none;
- fixed windows: one Redis counter per descriptor and window, named from the
  domain, every entry and the window's start, raised by the hits with INCRBY
  and given the window as its life with EXPIRE;
- OVER_LIMIT when any descriptor's counter passes its limit (every matching
  descriptor is counted, as the real service does).

Every request's domain and descriptors are appended, as one JSON line, to the
log file: the tests compare them with what the filter exported.

    python tests/e2e/ratelimit_service.py PORT REDIS_PORT CONFIG.yaml REQUESTS.jsonl
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from concurrent import futures
from typing import Any

import grpc
import redis
import yaml
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
UNIT_ENUM = {
    "second": rls_pb2.RateLimitResponse.RateLimit.SECOND,
    "minute": rls_pb2.RateLimitResponse.RateLimit.MINUTE,
    "hour": rls_pb2.RateLimitResponse.RateLimit.HOUR,
    "day": rls_pb2.RateLimitResponse.RateLimit.DAY,
}


def find_limit(nodes: list[dict[str, Any]], entries: list[tuple[str, str]]) -> dict[str, Any] | None:
    """The rate_limit of the node the entries lead to, or None."""
    node: dict[str, Any] | None = None
    level = nodes
    for key, value in entries:
        exact = [n for n in level if n.get("key") == key and n.get("value") == value]
        any_value = [n for n in level if n.get("key") == key and "value" not in n]
        found = exact or any_value
        if not found:
            return None
        node = found[0]
        level = node.get("descriptors") or []
    return (node or {}).get("rate_limit")


class Service(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(self, config: dict[str, Any], store: redis.Redis, log_path: str):
        self.config = config
        self.store = store
        self.log_path = log_path
        self.lock = threading.Lock()

    def ShouldRateLimit(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method's name
        hits = request.hits_addend or 1
        seen = [[(e.key, e.value) for e in d.entries] for d in request.descriptors]
        with self.lock, open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"domain": request.domain, "descriptors": seen}) + "\n")
        overall = rls_pb2.RateLimitResponse.OK
        statuses = []
        for entries in seen:
            limit = find_limit(self.config.get("descriptors") or [], entries) \
                if request.domain == self.config.get("domain") else None
            if limit is None:
                statuses.append(rls_pb2.RateLimitResponse.DescriptorStatus(code=rls_pb2.RateLimitResponse.OK))
                continue
            unit = limit["unit"].lower()
            window = UNITS[unit]
            start = int(time.time()) // window * window
            key = "_".join([request.domain] + [f"{k}_{v}" for k, v in entries]) + f"_{start}"
            pipe = self.store.pipeline()
            pipe.incrby(key, hits)
            pipe.expire(key, window)
            count = int(pipe.execute()[0])
            allowed = int(limit["requests_per_unit"])
            over = count > allowed
            if over:
                overall = rls_pb2.RateLimitResponse.OVER_LIMIT
            statuses.append(rls_pb2.RateLimitResponse.DescriptorStatus(
                code=rls_pb2.RateLimitResponse.OVER_LIMIT if over else rls_pb2.RateLimitResponse.OK,
                current_limit=rls_pb2.RateLimitResponse.RateLimit(
                    requests_per_unit=allowed, unit=UNIT_ENUM[unit]),
                limit_remaining=max(allowed - count, 0),
            ))
        return rls_pb2.RateLimitResponse(overall_code=overall, statuses=statuses)


def main() -> int:
    port, redis_port, config_path, log_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    store = redis.Redis(host="127.0.0.1", port=redis_port)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(Service(config, store, log_path), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
