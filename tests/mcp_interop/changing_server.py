"""A stdio MCP server (official SDK) whose tool list changes on demand, for list_changed tests.

`grow` adds a tool named `extra_<n>` and sends notifications/tools/list_changed.
"""

from __future__ import annotations

import logging
import sys

from mcp.server.mcpserver import Context, MCPServer

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
server = MCPServer("changing")
added: list[str] = []


@server.tool()
async def grow(ctx: Context) -> str:
    """Add one tool and announce the change."""
    name = f"extra_{len(added) + 1}"

    def extra() -> str:
        return name

    server.add_tool(extra, name=name, description="added at run time")
    added.append(name)
    await ctx.session.send_tool_list_changed()
    return name


if __name__ == "__main__":
    server.run("stdio")
