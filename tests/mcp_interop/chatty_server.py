"""A stdio MCP server (official SDK) that talks during calls and shows what it was told.

`chatter(count)` sends `count` log messages (info, unless `logging/setLevel` asked for less)
and progress reports, then returns;
`hang()` writes `started` to $PRAXIS_TEST_HANG_FILE, waits, and writes `cancelled` there when
the client's `notifications/cancelled` interrupts it; `echo(text)` answers at once.
Over stdio by default; `chatty_server.py http PORT` serves streamable HTTP on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import sys

import anyio
import mcp_types
from mcp.server.mcpserver import Context, MCPServer

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
server = MCPServer("chatty")
LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
level = ["debug"]  # what the client asked for with logging/setLevel (filtering is the server's job)


async def set_level(ctx: object, params: mcp_types.SetLevelRequestParams) -> mcp_types.EmptyResult:
    level[0] = str(params.level)
    return mcp_types.EmptyResult()


server._lowlevel_server.add_request_handler("logging/setLevel", mcp_types.SetLevelRequestParams, set_level)


def note(line: str) -> None:
    with open(os.environ["PRAXIS_TEST_HANG_FILE"], "a") as f:
        f.write(line + "\n")


@server.tool()
async def chatter(count: int, ctx: Context) -> str:
    """Log and report progress `count` times."""
    for i in range(1, count + 1):
        if LEVELS.index("info") >= LEVELS.index(level[0]):
            await ctx.info(f"chat {i}")
        await ctx.report_progress(i, count, f"step {i}")
    return "chatted"


@server.tool()
async def hang(ctx: Context) -> str:
    """Wait until cancelled (60 s at most)."""
    note("started")
    try:
        await anyio.sleep(60)
    except anyio.get_cancelled_exc_class():
        note("cancelled")
        raise
    return "not cancelled"


@server.tool()
def echo(text: str) -> str:
    return text


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "http":  # `http PORT`: streamable HTTP on 127.0.0.1
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
