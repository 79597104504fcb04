"""Yamux receive credit (node.mesh.libp2p_patches.batch_yamux_window_updates): a node's streams
send a WINDOW_UPDATE once half the window is read, not one per read as py-libp2p does."""

from __future__ import annotations

from typing import Any

import trio
from libp2p.abc import IHost, INetStream

from node.mesh.host import full_addrs
from tests.raw_peer import open_stream, raw_host, unpatched_host

SINK_PROTOCOL = "/test/sink/1.0.0"
SMALL = [100] * 200  # 20 KB in small messages, as GossipSub RPCs arrive: far under half a window
LARGE = [1024 * 1024]  # four times the 256 KiB window: needs credit given back to complete


async def window_updates_while_reading(sink: IHost, sender: IHost, sizes: list[int]) -> int:
    """WINDOW_UPDATE frames the sink's stream sends while it reads messages of `sizes`, each
    read whole, from `sender`."""
    updates = 0

    async def read_all(stream: INetStream) -> None:
        nonlocal updates
        muxed: Any = stream.muxed_stream
        send_window_update = muxed.send_window_update

        async def counted(*args: Any, **kwargs: Any) -> None:
            nonlocal updates
            updates += 1
            await send_window_update(*args, **kwargs)

        muxed.send_window_update = counted
        try:
            for size in sizes:
                got = 0
                while got < size:
                    got += len(await stream.read(size - got))
            await stream.write(b"ok")
        finally:
            await stream.close()

    sink.set_stream_handler(SINK_PROTOCOL, read_all)  # type: ignore[arg-type]
    with trio.fail_after(30):  # a bound against a stall (no credit given back)
        stream = await open_stream(sender, full_addrs(sink)[0], SINK_PROTOCOL)
        for size in sizes:
            await stream.write(b"x" * size)
        assert await stream.read(2) == b"ok"
        await stream.close()
    return updates


async def test_small_reads_give_no_credit_back_until_half_the_window():
    async with raw_host() as sink, raw_host() as sender:
        assert await window_updates_while_reading(sink, sender, SMALL) == 0


async def test_a_large_transfer_still_gets_credit_back():
    async with raw_host() as sink, raw_host() as sender:
        updates = await window_updates_while_reading(sink, sender, LARGE)
    assert 1 <= updates <= 8  # about one per half window (128 KiB) read; py-libp2p sent 17


async def test_unpatched_libp2p_still_sends_an_update_per_read():
    """The canary: fails once py-libp2p batches credit itself (then drop the workaround)."""
    async with unpatched_host() as sink, raw_host() as sender:
        assert await window_updates_while_reading(sink, sender, SMALL) >= 10
