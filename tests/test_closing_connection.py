"""A call made while its connection is closing (node.mesh.links.PeerLinks._new_stream): it goes out
on a new connection, as go-libp2p's swarm does, instead of failing although the peer is up.

The window is real and routine: the peer keeper prunes connections over `p2p.max_peers`, and
libp2p's `SwarmConn.close()` marks the connection closed first, then shuts its muxer down, then
unregisters it. The tests hold the muxer's shutdown to keep that window open while they call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
from libp2p.abc import INetConn
from libp2p.network.swarm import SwarmException

from node.app import Node
from protocols.tool import TOOL_PROTOCOL
from tests.helpers import ECHO_PARAMS, py_tool, start_mesh, wait_all_know


@asynccontextmanager
async def closing(conn: INetConn) -> AsyncIterator[None]:
    """`conn` in the midst of libp2p's own close: marked closed, still registered, its muxer's
    shutdown held until the block ends (then the close completes)."""
    muxer = conn.muxed_conn
    shut_down = muxer.close
    begun, release = trio.Event(), trio.Event()

    async def held_shut_down() -> None:
        begun.set()
        await release.wait()
        await shut_down()

    muxer.close = held_shut_down  # type: ignore[method-assign]
    with trio.fail_after(30):  # the whole close, its muxer's shutdown included, is bounded
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.close)
            await begun.wait()
            assert conn.is_closed
            try:
                yield
            finally:
                release.set()


async def _caller_and_provider(stack: AsyncExitStack) -> tuple[Node, Node, INetConn]:
    """A provider of `echo`, a caller connected to it; the caller's connection to it."""
    provider, caller = await start_mesh(stack, [[py_tool("echo", "echo", ECHO_PARAMS)], []])
    await wait_all_know([caller], {"echo"})
    [conn] = caller.host.get_network().get_connections(provider.host.get_id())
    return caller, provider, conn


async def test_a_call_while_its_connection_closes_goes_out_on_a_new_one():
    async with AsyncExitStack() as stack:
        caller, provider, conn = await _caller_and_provider(stack)
        async with closing(conn):
            routed = await caller.call("echo", {"text": "still here"}, timeout=20)
            assert routed.result.text_output() == "still here" and routed.provider == provider.peer_id
            live = [c for c in caller.host.get_network().get_connections(provider.host.get_id()) if not c.is_closed]
            assert live and conn not in live


async def test_unpatched_libp2p_still_fails_a_stream_on_a_closing_connection():
    """The canary: fails once py-libp2p's own `new_stream` dials anew (then drop the workaround)."""
    async with AsyncExitStack() as stack:
        caller, provider, conn = await _caller_and_provider(stack)
        async with closing(conn):
            with trio.fail_after(10), pytest.raises(SwarmException, match="No valid connections"):
                await caller.host.new_stream(provider.host.get_id(), [TOOL_PROTOCOL])  # type: ignore[list-item]
