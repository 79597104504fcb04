"""A node serving MCP on stdio whose tools run on the engine TEST DOUBLE (tests/event_engine.py):
`python -m tests.mcp_interop.event_node`, for `mcp.Client(StdioServerParameters(...))`.

Like `praxis-node mcp`, but with the double injected, which a config file cannot do.
"""

from __future__ import annotations

import logging

import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from node.app import Node
from tests.event_engine import EventEngine, tools
from tests.helpers import node_config


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)  # stderr: stdout carries MCP
    node = Node(node_config("node-stdio-events", tools()), key_pair=create_new_key_pair(),
                engines={"python": EventEngine()})
    node.serve_mcp_http = False
    async with node.running():
        await node.mcp_endpoint.serve_stdio()


if __name__ == "__main__":
    trio.run(main)
