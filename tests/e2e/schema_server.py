"""An MCP server on the official Python SDK (low-level `Server`, streamable
HTTP) that declares input and output schemas, for `schemas`:

    python tests/e2e/schema_server.py PORT [--loose-twin]

- `add_order`: `customer` (string, required), `items` (array of `#/$defs/Item`,
  each with a required string `name`), `additionalProperties: false`; the
  low-level server does not validate, so every call that arrives answers
  "ran add_order" and the test can tell what reached the server.
- `weather`: an `outputSchema` requiring a number `temp`; the city "Oslo"
  gets `{"temp": 21.5}`, any other city `{"temp": "warm"}` (a server that
  breaks its own contract).

With `--loose-twin` the same process also serves a second MCP server at
`/loose/mcp` whose `add_order` takes any object: two servers behind one
Envoy cluster, told apart only by their path (and the route that matches it).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator

import mcp_types as types
import uvicorn
from mcp.server.lowlevel import Server
from starlette.applications import Starlette

ORDER = {
    "type": "object",
    "properties": {
        "customer": {"type": "string"},
        "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
    },
    "required": ["customer"],
    "additionalProperties": False,
    "$defs": {
        "Item": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
            "required": ["name"],
        }
    },
}
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {"type": "object", "properties": {"temp": {"type": "number"}}, "required": ["temp"]}


async def list_tools(ctx, params) -> types.ListToolsResult:  # noqa: ANN001 - SDK handler signature
    return types.ListToolsResult(tools=[
        types.Tool(name="add_order", description="Places an order.", input_schema=ORDER),
        types.Tool(name="weather", description="Today's weather.", input_schema=CITY, output_schema=WEATHER),
    ])


async def call_tool(ctx, params) -> types.CallToolResult:  # noqa: ANN001
    if params.name == "weather":
        city = (params.arguments or {}).get("city")
        structured = {"temp": 21.5} if city == "Oslo" else {"temp": "warm"}
        return types.CallToolResult(content=[types.TextContent(type="text", text=str(structured))],
                                    structured_content=structured)
    return types.CallToolResult(content=[types.TextContent(type="text", text=f"ran {params.name}")])


server = Server("mcp-firewall-e2e-schemas", on_list_tools=list_tools, on_call_tool=call_tool)


async def list_loose_tools(ctx, params) -> types.ListToolsResult:  # noqa: ANN001
    return types.ListToolsResult(tools=[
        types.Tool(name="add_order", description="Places an order.", input_schema={"type": "object"}),
    ])


loose_server = Server("mcp-firewall-e2e-schemas-loose", on_list_tools=list_loose_tools,
                      on_call_tool=call_tool)


def twin_app() -> Starlette:
    """Both servers in one app: `/mcp` the strict one, `/loose/mcp` the loose one."""
    strict = server.streamable_http_app(json_response=True)
    loose = loose_server.streamable_http_app(json_response=True, streamable_http_path="/loose/mcp")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with strict.router.lifespan_context(strict), loose.router.lifespan_context(loose):
            yield

    return Starlette(routes=[*strict.routes, *loose.routes], lifespan=lifespan)


if __name__ == "__main__":
    app = twin_app() if "--loose-twin" in sys.argv[2:] else server.streamable_http_app(json_response=True)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
