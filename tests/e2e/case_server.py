"""An MCP server on the official Python SDK whose ordinary answers hold
member names in capitals inside data: a structured log entry, a structured
result, a JSON resource and a prompt embedding it. For the case guard of the
result checks: none of this is MCP's own structure, and none of it may be
refused.

    python tests/e2e/case_server.py PORT
"""

from __future__ import annotations

import json
import sys

import mcp_types as types
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import UserMessage
from pydantic import BaseModel

server = MCPServer("mcp-firewall-e2e-case")
RECORD = {"Name": "ingest-job", "Type": "batch", "Text": "done"}


@server.tool(name="log_struct")
async def log_struct(ctx: Context) -> str:
    """Logs a structured record, then answers."""
    await ctx.info(RECORD)
    return "logged"


class Row(BaseModel):
    Name: str
    Type: str
    Description: str


@server.tool(name="struct_out")
def struct_out() -> Row:
    """A structured result with capitalised fields."""
    return Row(Name="alpha", Type="widget", Description="a widget")


@server.resource("data://doc.json", mime_type="application/json")
def doc() -> str:
    """A JSON document."""
    return json.dumps(RECORD)


@server.prompt(name="with-resource")
def with_resource() -> list[UserMessage]:
    """A prompt embedding the JSON document."""
    return [UserMessage(content=types.EmbeddedResource(
        type="resource", resource=types.TextResourceContents(
            uri="data://doc.json", mime_type="application/json", text=json.dumps(RECORD))))]


if __name__ == "__main__":
    uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
