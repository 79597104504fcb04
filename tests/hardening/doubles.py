"""TEST DOUBLE of a libp2p stream, for driving the real protocol handlers in memory.

`MemoryStream` is not the network: it replays scripted chunks to `read`, records what the
handler `write`s, and records whether the handler closed or reset it. It raises the real
libp2p exception types where a libp2p stream would (StreamEOF after the last chunk,
StreamReset on a write the peer refuses). The real network path is covered by the
loopback tests in test_fuzz.py (level c) and test_hostile_peers.py.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from types import SimpleNamespace

import trio
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.id import ID


class MemoryStream:
    """Test double for INetStream: read/write/close/reset plus `muxed_conn.peer_id`."""

    def __init__(self, chunks: Iterable[bytes], *, peer_id: ID, refuse_writes: bool = False) -> None:
        self._chunks: deque[bytes] = deque(c for c in chunks if c)
        self.written = bytearray()
        self.refuse_writes = refuse_writes
        self.closed = False
        self.was_reset = False
        self.muxed_conn = SimpleNamespace(peer_id=peer_id)

    @property
    def ended(self) -> bool:
        return self.closed or self.was_reset

    async def read(self, n: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.was_reset:
            raise StreamReset("stream was reset")
        if not self._chunks:
            raise StreamEOF("peer closed its side")
        chunk = self._chunks.popleft()
        if n is not None and len(chunk) > n:  # like yamux: partial reads of at most n bytes
            self._chunks.appendleft(chunk[n:])
            chunk = chunk[:n]
        return chunk

    async def write(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        if self.ended:
            raise StreamReset("write on an ended stream")
        if self.refuse_writes:
            raise StreamReset("peer reset the stream")
        self.written += data

    async def close(self) -> None:
        await trio.lowlevel.checkpoint()
        self.closed = True

    async def reset(self) -> None:
        await trio.lowlevel.checkpoint()
        self.was_reset = True
