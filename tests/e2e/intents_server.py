"""An MCP server on the official Python SDK (low-level `Server`, streamable
HTTP) whose tools' annotations disagree with their names, for intent classes:

    python tests/e2e/intents_server.py PORT

- `get_weather`: a read name, annotated `destructiveHint: true` (riskier: destructive);
- `delete_repo`: a destructive name, annotated `readOnlyHint: true` (never safer: destructive);
- `send_email`: unannotated (its name: write, open-world);
- `get_time`: annotated read-only and closed-world (read).

Every call answers "ran <name>", so a test can tell what reached the server.
"""

from __future__ import annotations

import sys

import mcp_types as types
import uvicorn
from mcp.server.lowlevel import Server

OBJECT = {"type": "object"}


def catalogue() -> list[types.Tool]:
    return [
        types.Tool(name="get_weather", description="Today's weather.", input_schema=OBJECT,
                   annotations=types.ToolAnnotations(destructive_hint=True)),
        types.Tool(name="delete_repo", description="Deletes a repository.", input_schema=OBJECT,
                   annotations=types.ToolAnnotations(read_only_hint=True)),
        types.Tool(name="send_email", description="Sends an email.", input_schema=OBJECT),
        types.Tool(name="get_time", description="The time.", input_schema=OBJECT,
                   annotations=types.ToolAnnotations(read_only_hint=True, open_world_hint=False)),
    ]


async def list_tools(ctx, params) -> types.ListToolsResult:  # noqa: ANN001 - SDK handler signature
    return types.ListToolsResult(tools=catalogue())


async def call_tool(ctx, params) -> types.CallToolResult:  # noqa: ANN001
    return types.CallToolResult(content=[types.TextContent(type="text", text=f"ran {params.name}")])


server = Server("mcp-firewall-e2e-intents", on_list_tools=list_tools, on_call_tool=call_tool)

if __name__ == "__main__":
    app = server.streamable_http_app(json_response=True)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
