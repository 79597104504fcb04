"""A write cancelled on its way out (node.mesh.libp2p_patches.whole_writes): the node's frame still
goes out whole, and the connection keeps serving its streams."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.network.connection.exceptions import RawConnError
from libp2p.network.connection.swarm_connection import SwarmConn
from libp2p.stream_muxer.yamux.yamux import FLAG_SYN, TYPE_PING, YAMUX_HEADER_FORMAT

from node.mesh.host import full_addrs
from node.mesh.libp2p_patches import written_whole
from tests.raw_peer import open_stream, raw_host, unpatched_host

ECHO_PROTOCOL = "/test/echo/1.0.0"
PING = struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_PING, FLAG_SYN, 0, 7)  # a yamux ping: the peer answers it


async def _echo(stream: INetStream) -> None:
    try:
        await stream.write(await stream.read(64))
    finally:
        await stream.close()


async def _echo_through(stream: INetStream) -> None:
    await stream.write(b"still here")
    assert await stream.read(64) == b"still here"
    await stream.close()


async def _connection(sender: IHost, receiver: IHost) -> SwarmConn:
    """Connect `sender` to `receiver` (one echo through it); the sender's only connection to it."""
    with trio.fail_after(10):
        await _echo_through(await open_stream(sender, full_addrs(receiver)[0], ECHO_PROTOCOL))
    [conn] = sender.get_network().get_connections(receiver.get_id())
    assert isinstance(conn, SwarmConn)  # its yamux connection's secured channel is what the tests write on
    return conn


async def _cancelled_write_then_ping(sender: IHost, receiver: IHost) -> SwarmConn:
    """Connect `sender` to `receiver`, write a ping on the connection's secured channel from a
    cancelled scope, then another one; the sender's connection."""
    conn = await _connection(sender, receiver)
    secured: Any = conn.muxed_conn.secured_conn  # a yamux connection's (not in IMuxedConn)
    with trio.CancelScope() as scope:
        scope.cancel()  # cancelled before the write's first checkpoint, after Noise spent the nonce
        await secured.write(PING)
    with trio.fail_after(5):
        await secured.write(PING)  # decrypted by the receiver only if the first went out whole
    return conn


async def test_a_cancelled_write_goes_out_whole_and_the_connection_lives_on():
    async with raw_host() as receiver, raw_host() as sender:
        receiver.set_stream_handler(ECHO_PROTOCOL, _echo)  # type: ignore[arg-type]
        conn = await _cancelled_write_then_ping(sender, receiver)
        with trio.fail_after(10):
            await _echo_through(await sender.new_stream(receiver.get_id(), [ECHO_PROTOCOL]))  # type: ignore[list-item]
        assert not conn.is_closed
        assert sender.get_network().get_connections(receiver.get_id()) == [conn]  # the same one, not a redial


async def test_unpatched_libp2p_still_breaks_on_a_cancelled_write():
    """The canary: fails once py-libp2p's writes survive cancellation (then drop the workaround)."""
    async with raw_host() as receiver, unpatched_host() as sender:
        receiver.set_stream_handler(ECHO_PROTOCOL, _echo)  # type: ignore[arg-type]
        conn = await _cancelled_write_then_ping(sender, receiver)
        with trio.fail_after(10):  # the receiver fails to decrypt the second ping and hangs up
            await conn.event_closed.wait()


async def test_a_write_over_its_bound_closes_the_connection():
    """Part of a message may be out by then: the connection cannot carry another one."""
    async with raw_host() as receiver, unpatched_host() as sender:
        receiver.set_stream_handler(ECHO_PROTOCOL, _echo)  # type: ignore[arg-type]
        conn = await _connection(sender, receiver)
        secured: Any = conn.muxed_conn.secured_conn
        write = written_whole(secured, timeout=0.0)  # its bound passed at once
        with pytest.raises(RawConnError, match="took over 0 s; connection closed"):
            await write(PING)
        with trio.fail_after(10):
            await conn.event_closed.wait()
