"""Newline-delimited JSON frames over a byte stream (DESIGN.md section 4).

Two layers, h11-style:
- `FrameDecoder` is pure: feed it bytes, take complete frames out. It knows nothing of
  sockets, so it is trivial to unit-test and fuzz.
- `FramedStream` is the thin I/O layer over a libp2p stream: bounded reads with an idle
  timeout and a deadline, and writes of one compact JSON value plus `\\n`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Protocol

import trio

from protocols.errors import InvalidRequest, PeerUnreachable, TooLarge, ToolTimeout

DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
DEFAULT_IDLE_TIMEOUT = 10.0
DEFAULT_MAX_DEPTH = 64
READ_CHUNK = 64 * 1024
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class ByteStream(Protocol):
    """The part of libp2p's INetStream that framing uses."""

    async def read(self, n: int | None = None) -> bytes: ...

    async def write(self, data: bytes) -> None: ...


class FrameDecoder:
    """Splits a byte stream into newline-terminated frames of bounded size."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already known to hold no newline

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete frame without its newline, or None if more bytes are needed.

        Raises `TooLarge` once a frame exceeds the limit, whether or not its newline came.
        """
        index = self._buffer.find(b"\n", self._scanned)
        if index < 0:
            self._scanned = len(self._buffer)
            if self._scanned > self.max_frame_bytes:
                raise TooLarge(f"frame exceeds the limit of {self.max_frame_bytes} bytes")
            return None
        if index > self.max_frame_bytes:
            raise TooLarge(f"frame exceeds the limit of {self.max_frame_bytes} bytes")
        frame = bytes(self._buffer[:index])
        del self._buffer[: index + 1]
        self._scanned = 0
        return frame


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a decoded JSON value (iterative: no recursion on hostile input)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def decode_json(frame: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse one frame; every failure is an `InvalidRequest` that says what was wrong."""
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"frame is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidRequest(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, and int strings past Python's digit limit
        raise InvalidRequest(f"frame is not valid JSON: {_short(str(exc))}") from None
    if _depth(value, max_depth) > max_depth:
        raise InvalidRequest(f"JSON nested deeper than {max_depth} levels")
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        # Such a string cannot be encoded as UTF-8: echoing or storing it would break later.
        raise InvalidRequest("frame has a string with an unpaired UTF-16 surrogate escape")
    return value


def _finite_float(text: str) -> float:
    # 1e999 parses to inf, which no JSON encoder can write back: refuse it on the way in.
    value = float(text)
    if math.isinf(value):
        raise ValueError("number out of range")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def encode_json(value: Any) -> bytes:
    """One compact JSON value plus the newline terminator."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode() + b"\n"


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
        data = encode_json(value)
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
