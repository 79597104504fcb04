"""Two mDNS-enabled nodes find each other with no bootstrap address.

Run only by tests/test_mdns.py, inside a network namespace of its own that holds nothing
but loopback: mDNS binds every interface and multicasts.
"""

import sys
from contextlib import AsyncExitStack
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.cli.logs import configure_logging  # noqa: E402
from node.config import parse_config  # noqa: E402
from tests.helpers import make_node, py_tool, wait_all_know  # noqa: E402


def config(name, tools):
    return parse_config({"agent": {"name": name, "tools": tools}, "p2p": {"enable_mdns": True},
                         "mcp": {"enabled": False}}, env={})


async def main() -> None:
    async with AsyncExitStack() as stack:
        a = make_node(config("a", [py_tool("ta", "noop")]))
        await stack.enter_async_context(a.running())
        b = make_node(config("b", [py_tool("tb", "noop")]))
        await stack.enter_async_context(b.running())
        await wait_all_know([a, b], {"ta", "tb"}, timeout=20)
        routed = await a.call("tb", {})
        assert routed.provider == b.peer_id
        print("mdns: discovered and called", flush=True)


if __name__ == "__main__":
    configure_logging("INFO")
    trio.run(main)
