"""A second real MCP peer: an official-SDK (Python `mcp`) server that answers with
plain JSON (`json_response=True`) instead of SSE, so list filtering and results
are also tested end to end on `application/json` responses.

    python tests/e2e/json_server.py PORT [HEADER_LOG]

With HEADER_LOG, the names of every request's headers are appended to that file
as one JSON line (what reached the server, for tests that check what Envoy
removed on the way).
"""

from __future__ import annotations

import json
import sys

from typing import Annotated

from pydantic import BaseModel

from mcp.server.mcpserver import Elicit, MCPServer, Resolve

server = MCPServer("mcp-firewall-e2e-json-peer")


@server.tool()
def echo(message: str) -> str:
    """Echoes back the input string."""
    return f"Echo: {message}"


@server.tool(name="get-sum")
def get_sum(a: float, b: float) -> str:
    """Returns the sum of two numbers."""
    return str(a + b)


@server.tool(name="get-env")
def get_env() -> str:
    """Stands in for a dangerous tool (returns a constant, not the environment)."""
    return "ENV=not-really"


@server.tool(name="get-tiny-image")
def get_tiny_image() -> str:
    """A tool only admins may call in the test policy."""
    return "image"


class Card(BaseModel):
    number: str


def ask_card() -> Elicit[Card]:
    """Asks the user for a card number: on the 2026-07-28 wire the SDK answers the
    first call with an InputRequiredResult (multi round-trip requests) and reads
    the answer from the retry's inputResponses."""
    return Elicit("Your card number, please", Card)


@server.tool(name="pay")
def pay(card: Annotated[Card, Resolve(ask_card)]) -> str:
    """A tool that needs input the caller types (the server echoes what it got)."""
    return f"paid with {card.number}"


@server.prompt(name="simple-prompt")
def simple_prompt() -> str:
    """A prompt the policy allows."""
    return "hello"


@server.prompt(name="other-prompt")
def other_prompt() -> str:
    """A prompt no rule allows."""
    return "hidden"


def logging_headers(app, path: str):
    """The ASGI app, writing each HTTP request's header names to `path` first."""
    async def wrapped(scope, receive, send):
        if scope["type"] == "http":
            names = sorted(k.decode("latin-1").lower() for k, _ in scope["headers"])
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"method": scope["method"], "headers": names}) + "\n")
        await app(scope, receive, send)
    return wrapped


if __name__ == "__main__":
    if len(sys.argv) > 2:
        import uvicorn
        app = server.streamable_http_app(json_response=True)
        uvicorn.run(logging_headers(app, sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]),
                    log_level="warning")
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]), json_response=True)
