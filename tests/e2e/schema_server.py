"""An MCP server on the official Python SDK (low-level `Server`, streamable
HTTP) that declares input and output schemas, for `schemas`:

    python tests/e2e/schema_server.py PORT

- `add_order`: `customer` (string, required), `items` (array of `#/$defs/Item`,
  each with a required string `name`), `additionalProperties: false`; the
  low-level server does not validate, so every call that arrives answers
  "ran add_order" and the test can tell what reached the server.
- `weather`: an `outputSchema` requiring a number `temp`; the city "Oslo"
  gets `{"temp": 21.5}`, any other city `{"temp": "warm"}` (a server that
  breaks its own contract).
"""

from __future__ import annotations

import sys

import mcp_types as types
import uvicorn
from mcp.server.lowlevel import Server

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

if __name__ == "__main__":
    app = server.streamable_http_app(json_response=True)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
