"""Tool calls to peers, on streams kept open for the next call.

A call takes an idle `/praxis/tool/1.1.0` stream to that peer, or opens one offering 1.1.0
then 1.0.0 (multistream-select picks what the peer knows). On 1.0.0 (the Go node) it is the
old one-shot exchange, and cancelling it resets the stream. On 1.1.0 the provider's interim
frames go to the call's `CallEvents`; a cancelled caller sends `cancel` and resets the stream;
after the result the stream waits in the pool for the next call to that peer, at most
`max_idle_per_peer` of them and half as long as the provider said it keeps it (never longer
than this node's idle timeout), so a stream is never closed under a call. A pooled stream
found broken when the call is written is no error of that call: it goes out on a fresh one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import trio
from libp2p.abc import INetStream

from node.mesh.stats import MeshStats
from node.runtime.signals import ChangeSignal
from protocols.call import CALL_PROTOCOL, NotSent, request_call, send_cancel
from protocols.call_events import CallEvents
from protocols.errors import PeerUnreachable
from protocols.messages import ToolRequest, ToolResponse
from protocols.streams import ByteStream, WireLimits, closing_stream, end_stream
from protocols.tool import TOOL_PROTOCOL, request_tool

log = logging.getLogger("praxis.links")

# (peer ID, protocols to offer, deadline) -> a stream on one of them
StreamOpener = Callable[[str, list[str], float], Awaitable[INetStream]]


@dataclass
class _Idle:
    stream: ByteStream  # counted
    raw: INetStream
    expires: float


def looks_open(stream: INetStream) -> bool:
    """False when py-libp2p already knows the stream or its connection is gone (the provider
    closed it, reset it, or the connection dropped): such a stream is not worth a write."""
    muxed = getattr(stream, "muxed_stream", None)
    if any(getattr(muxed, flag, False) for flag in ("recv_closed", "reset_received", "closed")):
        return False
    return not getattr(stream.muxed_conn, "is_closed", False)


def is_cancellation(exc: BaseException) -> bool:
    """A trio cancellation, alone or as the only kind in a nursery's exception group."""
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(lambda e: not isinstance(e, trio.Cancelled | BaseExceptionGroup)) is None
    return False


class CallStreams:
    def __init__(self, open_stream: StreamOpener, limits: WireLimits, stats: MeshStats,
                 max_idle_per_peer: int) -> None:
        self.open_stream = open_stream
        self.limits = limits
        self.stats = stats
        self.max_idle_per_peer = max_idle_per_peer
        self.idle: dict[str, list[_Idle]] = {}
        self.opened = 0  # tool streams opened, either protocol
        # What a new stream offers, best first (the benchmark offers only 1.0.0 for the Go-wire figure).
        self.offer = [CALL_PROTOCOL, TOOL_PROTOCOL]
        self._closing: list[ByteStream] = []
        self._wake = trio.Event()
        self._next_at = -math.inf  # when the reaper wakes next (-inf: not waiting yet)
        self.changed = ChangeSignal()  # bumped when streams leave the pool (taken or closed)

    async def call(self, peer_id: str, request: ToolRequest, deadline: float, events: CallEvents) -> ToolResponse:
        """One call to one peer; a `PeerUnreachable` with `maybe_ran` when it was lost after sending."""
        pooled = self._take(peer_id)
        while True:  # at most twice: a pooled stream, then a fresh one
            reused = pooled is not None
            if pooled is not None:
                stream, raw = pooled.stream, pooled.raw
            else:
                raw = await self.open_stream(peer_id, self.offer, deadline)
                self.opened += 1
                stream = self.stats.counting(raw)
                if raw.get_protocol() != CALL_PROTOCOL:
                    return await self._call_once(stream, request, deadline)
            try:
                outcome = await request_call(stream, request, events, self.limits, deadline)
            except NotSent as exc:
                await end_stream(stream, ok=False)
                if reused:
                    # It broke while idle, most likely with its connection: so did its siblings.
                    self._drop(peer_id)
                    pooled = None
                    continue  # the call goes out on a fresh stream
                raise PeerUnreachable(exc.message) from None
            except PeerUnreachable as exc:
                await end_stream(stream, ok=False)
                raise PeerUnreachable(exc.message, maybe_ran=True) from None
            except BaseException as exc:
                if is_cancellation(exc):
                    await send_cancel(stream, self.limits)
                await end_stream(stream, ok=False)
                raise
            if outcome.keep_seconds > 0:
                self._put(peer_id, stream, raw, min(outcome.keep_seconds, self.limits.idle_timeout) / 2)
            else:
                await end_stream(stream, ok=True)
            return outcome.response

    async def _call_once(self, stream: ByteStream, request: ToolRequest, deadline: float) -> ToolResponse:
        """`/praxis/tool/1.0.0`: one request, one response, then the stream is closed (reset when
        the call fails or is cancelled)."""
        try:
            async with closing_stream(stream) as open_stream:
                # The deadline bounds the wait for the answer, not the idle timeout: tools may be slow.
                return await request_tool(open_stream, request, replace(self.limits, idle_timeout=math.inf),
                                          deadline)
        except PeerUnreachable as exc:
            raise PeerUnreachable(exc.message, maybe_ran=True) from None

    # ----- the pool ---------------------------------------------------------------------

    def _take(self, peer_id: str) -> _Idle | None:
        idle = self.idle.get(peer_id)
        now = trio.current_time()
        while idle:
            entry = idle.pop()  # the most recently used: the least likely to expire under us
            if entry.expires > now and looks_open(entry.raw):
                if not idle:
                    del self.idle[peer_id]
                return entry
            self._closing.append(entry.stream)
            self._wake.set()
        self.idle.pop(peer_id, None)
        return None

    def _drop(self, peer_id: str) -> None:
        """Close every idle stream to a peer."""
        self._closing.extend(entry.stream for entry in self.idle.pop(peer_id, []))
        self._wake.set()

    def _put(self, peer_id: str, stream: ByteStream, raw: INetStream, keep: float) -> None:
        idle = self.idle.setdefault(peer_id, [])
        if len(idle) >= self.max_idle_per_peer:
            self._closing.append(stream)
            self._wake.set()
            return
        expires = trio.current_time() + keep
        idle.append(_Idle(stream, raw, expires))
        if expires < self._next_at:  # else the reaper wakes in time anyway: no wake-up per call
            self._wake.set()

    def idle_streams(self) -> int:
        return sum(len(entries) for entries in self.idle.values())

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Close idle streams when their time is up (and the ones the pool had no room for)."""
        task_status.started()
        while True:
            now = trio.current_time()
            next_at = math.inf
            for peer_id in list(self.idle):
                keep = [e for e in self.idle[peer_id] if e.expires > now]
                self._closing.extend(e.stream for e in self.idle[peer_id] if e.expires <= now)
                if keep:
                    self.idle[peer_id] = keep
                    next_at = min(next_at, min(e.expires for e in keep))
                else:
                    del self.idle[peer_id]
            closing, self._closing = self._closing, []
            if closing:
                self.changed.bump()
                async with trio.open_nursery() as nursery:
                    for stream in closing:
                        nursery.start_soon(lambda s=stream: end_stream(s, ok=True))
                continue
            self._wake = trio.Event()
            # With every stream out on a call, wake after the longest keep anyway: else each call's
            # stream coming back (`_put`) would wake the reaper only to find nothing due.
            self._next_at = min(next_at, now + self.limits.idle_timeout / 2)
            with trio.move_on_at(self._next_at):
                await self._wake.wait()

    async def aclose(self) -> None:
        """Close every idle stream (the node is stopping)."""
        streams = [e.stream for entries in self.idle.values() for e in entries] + self._closing
        self.idle.clear()
        self._closing = []
        for stream in streams:
            await end_stream(stream, ok=False)
