"""The bounded stream layer around the codec: frames on a libp2p stream, with size and time limits.

`FramedStream` reads frames with an idle timeout and a deadline and writes one compact JSON
value plus `\\n`; `WireLimits` carries a node's limits; `end_stream` / `closing_stream` end
every stream the node opens or serves (close after a complete exchange, reset after a failure).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import trio

from protocols.codec import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_FRAME_BYTES,
    FrameDecoder,
    decode_json,
    encode_json,
)
from protocols.errors import PeerUnreachable, ToolTimeout

READ_CHUNK = 64 * 1024
CLOSE_TIMEOUT = 2.0


class ByteStream(Protocol):
    """The part of libp2p's INetStream the wire uses: read and write bytes, close or reset."""

    async def read(self, n: int | None = None) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...

    async def reset(self) -> None: ...


S = TypeVar("S", bound=ByteStream)


class FramedStream:
    """Reads and writes frames on one stream, with bounded size and time.

    A read waits at most `idle_timeout` for each chunk and never past `deadline` (an
    absolute trio time, or +inf). Stream errors surface as `PeerUnreachable`.
    """

    def __init__(
        self,
        stream: ByteStream,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(max_frame_bytes)
        self.idle_timeout = idle_timeout
        self.max_depth = max_depth

    async def read_frame(self, deadline: float = math.inf) -> bytes:
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                return frame
            wait_until = min(deadline, trio.current_time() + self.idle_timeout)
            if wait_until == math.inf:  # no limit here (the caller's own scope bounds the wait)
                self.decoder.feed(await self._read_chunk())
                continue
            with trio.move_on_at(wait_until):
                chunk = await self._read_chunk()
                self.decoder.feed(chunk)
                continue
            if wait_until >= deadline:
                raise ToolTimeout("the peer's frame did not arrive before the deadline")
            raise ToolTimeout(f"peer sent nothing for {self.idle_timeout:g} s (idle timeout)")

    async def read_json(self, deadline: float = math.inf) -> Any:
        return decode_json(await self.read_frame(deadline), self.max_depth)

    async def write_json(self, value: Any, deadline: float = math.inf) -> None:
        await self.write_frame(encode_json(value), deadline)

    async def write_frame(self, data: bytes, deadline: float = math.inf) -> None:
        """Write one already encoded frame (`encode_json`)."""
        with trio.move_on_at(deadline) as scope:
            try:
                await self.stream.write(data)
            except Exception as exc:  # libp2p raises several unrelated types on a dead stream
                raise PeerUnreachable(f"stream closed while writing: {type(exc).__name__}") from None
        if scope.cancelled_caught:
            raise ToolTimeout("deadline passed while writing to the peer")

    async def _read_chunk(self) -> bytes:
        try:
            chunk = await self.stream.read(READ_CHUNK)
        except Exception as exc:  # StreamEOF, StreamReset, MuxedStreamClosed, ...
            raise PeerUnreachable(self._closed_message(exc)) from None
        if not chunk:
            raise PeerUnreachable(self._closed_message(None))
        return chunk

    def _closed_message(self, exc: BaseException | None) -> str:
        how = f" ({type(exc).__name__})" if exc is not None else ""
        if self.decoder.buffered:
            return f"stream ended in the middle of a frame{how}"
        return f"stream ended before a frame arrived{how}"


@dataclass(frozen=True)
class WireLimits:
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_depth: int = DEFAULT_MAX_DEPTH

    def framed(self, stream: ByteStream) -> FramedStream:
        return FramedStream(
            stream,
            max_frame_bytes=self.max_frame_bytes,
            idle_timeout=self.idle_timeout,
            max_depth=self.max_depth,
        )


async def end_stream(stream: ByteStream, *, ok: bool) -> None:
    """Close a stream after a complete exchange, reset it after a failure; never hang."""
    with trio.move_on_after(CLOSE_TIMEOUT) as scope:
        scope.shield = True
        try:
            if ok:
                await stream.close()
            else:
                await stream.reset()
        except Exception:  # the stream is already gone: nothing left to release
            return
    if scope.cancelled_caught:
        # The peer did not acknowledge the close in time; drop our side.
        with trio.move_on_after(CLOSE_TIMEOUT) as scope2:
            scope2.shield = True
            try:
                await stream.reset()
            except Exception:
                return


@asynccontextmanager
async def closing_stream(stream: S) -> AsyncIterator[S]:
    """Close the stream after the block; reset it when the block raised."""
    ok = False
    try:
        yield stream
        ok = True
    finally:
        await end_stream(stream, ok=ok)
