"""A node's MCP endpoint app served on 127.0.0.1 by the test, whatever its config says.

An off-loopback config (`host: 0.0.0.0`, a token) is served here too, on loopback: a remote
client is simulated by the `Host` header it sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from node.app import Node
from tests.helpers import ECHO_PARAMS, make_node, node_config, py_tool


@asynccontextmanager
async def serving_app(node_name: str = "node-app", **mcp_section: Any) -> AsyncIterator[tuple[Node, str]]:
    """A running node with an `echo` tool whose endpoint app is built for `mcp_section`;
    yields the node and the base URL (`http://127.0.0.1:PORT`, without `/mcp`)."""
    node = make_node(node_config(node_name, [py_tool("echo", "echo", ECHO_PARAMS)],
                                 mcp={**mcp_section, "enabled": False}))
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 1.0

    async def serve(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await hypercorn_serve(app, config, task_status=task_status)  # type: ignore[arg-type]

    async with node.running(), trio.open_nursery() as nursery:
        app = node.mcp_endpoint.http_app()
        binds = await nursery.start(serve)
        assert binds[0].startswith("http://127.0.0.1:")
        yield node, binds[0]
        nursery.cancel_scope.cancel()
