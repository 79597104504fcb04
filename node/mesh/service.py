"""Serving tool calls that peers send this node: limits, policy, deadline, then the engine."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import trio
from libp2p.abc import INetStream

from node.config import NodeConfig
from node.mesh.origins import Caller, OriginCheck
from node.mesh.router import LOCAL, Router, UpstreamTools
from node.mesh.stats import SERVED, CallRecord, MeshStats
from node.runtime.tracing import SpanKind, Tracing
from node.tools.local import LocalTools
from node.tools.policy import may_call_as, may_use_node
from protocols.call import CallLimits, serve_call_stream
from protocols.call_events import NO_EVENTS, CallEvents
from protocols.errors import Busy, NotAllowed, PraxisError, TooLarge, ToolNotFound
from protocols.messages import ToolRequest, ToolResponse, ToolResult
from protocols.streams import WireLimits, end_stream
from protocols.tool import serve_tool_stream


class InFlightLimits:
    """Counts calls in flight per peer and in total; refuses at once past either limit."""

    def __init__(self, per_peer: int, total: int) -> None:
        self.per_peer = per_peer
        self.total = total
        self._by_peer: Counter[str] = Counter()
        self._total = 0

    @property
    def total_in_flight(self) -> int:
        return self._total

    @contextmanager
    def slot(self, peer_id: str) -> Iterator[None]:
        if self._total >= self.total:
            raise Busy(f"node busy: {self.total} calls in flight; retry later")
        if self._by_peer[peer_id] >= self.per_peer:
            raise Busy(f"busy: this peer already has {self.per_peer} calls in flight; retry later")
        self._total += 1
        self._by_peer[peer_id] += 1
        try:
            yield
        finally:
            self._total -= 1
            self._by_peer[peer_id] -= 1
            if not self._by_peer[peer_id]:
                del self._by_peer[peer_id]


class ToolService:
    """Answers peers' calls on `/praxis/tool/1.0.0` and `/praxis/tool/1.1.0`.

    Who asks is the peer in front and the call's proven origin (node/mesh/origins.py); policy
    applies to both.

    Local tools first (subject to policy), then shared MCP servers' tools, then, while the
    hop count allows, the call is forwarded to another peer that offers the tool (never back
    to the peer it came from). Every call is recorded in `stats` as served or forwarded, and
    logged there.
    """

    def __init__(
        self,
        config: NodeConfig,
        local: LocalTools,
        router: Router,
        origins: OriginCheck,
        wire: WireLimits,
        stats: MeshStats,
        upstreams: UpstreamTools | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        self.stats = stats
        self.tracing = tracing or Tracing()
        self.wire = wire
        self.origins = origins
        self.local = local
        self.router = router
        self.upstreams = upstreams
        limits = config.limits
        self.in_flight = InFlightLimits(limits.max_inflight_per_peer, limits.max_inflight_total)
        self.call_limits = CallLimits(max_calls=limits.max_calls_per_stream)

    async def serve_tool_stream(self, stream: INetStream) -> None:
        """`/praxis/tool/1.0.0`: one request from the stream's peer, one response; never raises."""
        peer_id = stream.muxed_conn.peer_id.to_string()
        await serve_tool_stream(self.stats.counting(stream), peer_id, self.handle, self.wire,
                                on_bad_request=self.stats.bad_request, was_reset=lambda: caller_gone(stream))

    async def serve_call_stream(self, stream: INetStream) -> None:
        """`/praxis/tool/1.1.0`: calls from the stream's peer one after the other, each with its
        interim frames both ways; never raises, always ends the stream."""
        peer_id = stream.muxed_conn.peer_id.to_string()
        counted = self.stats.counting(stream)
        ok = False
        try:
            ok = await serve_call_stream(counted, peer_id, self.handle, self.wire, self.call_limits,
                                         on_bad_request=self.stats.bad_request)
        finally:
            await end_stream(counted, ok=ok)

    async def handle(self, request: ToolRequest, peer_id: str, events: CallEvents = NO_EVENTS) -> ToolResponse:
        """Serve one call; `events` is the caller (interim frames on 1.1.0, nothing on 1.0.0)."""
        with self.tracing.span(f"serve {request.name}", SpanKind.SERVER, parent=request.traceparent,
                               **{"praxis.tool": request.name, "praxis.caller": peer_id}), \
                self.stats.call(SERVED, request.name, peer_id) as record:
            try:
                result = await self._serve(request, peer_id, record, events)
            except PraxisError as exc:
                record.failed(exc)
                return ToolResponse.failure(request.id, exc.code, exc.message)
            return ToolResponse(id=request.id, result=result)

    async def _serve(self, request: ToolRequest, peer_id: str, record: CallRecord, events: CallEvents) -> ToolResult:
        limits = self.config.limits
        if request.hops > limits.max_hops:
            record.refused = "too_many_hops"
            raise TooLarge(
                f"call to {request.name!r} refused: it has been forwarded {request.hops} times "
                f"(limit {limits.max_hops})"
            )
        budget = limits.call_timeout_seconds
        if request.deadline_ms is not None:
            budget = min(budget, request.deadline_ms / 1000)
        deadline = trio.current_time() + budget
        arguments = request.flat_arguments()
        try:
            caller = self.origins.identify(request, peer_id, arguments)
        except NotAllowed:
            record.refused = "origin_refused"
            raise
        contract = self.local.get(request.name)
        if contract is not None:
            record.provider = LOCAL
            if not may_call_as(contract, caller, self.config.policy):
                raise _refusal(caller, f"tool {request.name!r}")
            with self.in_flight.slot(peer_id):
                result = await self.local.run(request.name, arguments, deadline, events)
            record.succeeded(result)
            return result
        if not may_use_node(caller, self.config.policy):
            raise _refusal(caller, "this node's forwarded tools")
        if self.upstreams is not None and request.name in self.upstreams.shared_tools():
            server = self.upstreams.tools().get(request.name)
            record.provider = f"mcp:{server[0]}" if server is not None else "mcp"
            with self.in_flight.slot(peer_id):
                result = await self.upstreams.call(request.name, arguments, deadline, events)
            record.succeeded(result)
            return result
        if request.hops >= limits.max_hops:
            raise ToolNotFound(
                f"this node has no tool {request.name!r} and the call may not be forwarded further"
            )
        exclude = frozenset({peer_id, caller.origin})
        if self.router.peer_providers(request.name, exclude):
            record.forwarding()  # else the router refuses it at once, as a tool nobody offers
        with self.in_flight.slot(peer_id):
            # From here on, a forwarded call's errors are the mesh's answers, not this node's refusals.
            record.own = record.role == SERVED
            # A request that reached us was sent at least once, whatever its `hops` says (Go
            # callers send none): the next node must see it as forwarded.
            routed = await self.router.call(
                request.name, arguments, deadline=deadline, hops=max(request.hops, 1),
                trace_id=request.trace_id, exclude=exclude, use_upstreams=False,
                origin=request.origin, sign=False, events=events,
            )
        record.succeeded(routed.result, routed.provider)
        return routed.result


def caller_gone(stream: INetStream) -> bool:
    """py-libp2p 0.8.1 reports a reset stream, like a closed one, as EOF: tell them apart by the
    muxer's own flag (or a connection that is gone)."""
    reset = getattr(getattr(stream, "muxed_stream", None), "reset_received", False)
    return bool(reset) or bool(getattr(stream.muxed_conn, "is_closed", False))


def _refusal(caller: Caller, what: str) -> NotAllowed:
    if not caller.forwarded:
        return NotAllowed(f"peer {caller.front} is not allowed to call {what}")
    if not caller.origin_proven:
        return NotAllowed(f"a call forwarded by {caller.front} without proof of its origin may only reach "
                          f"tools open to every peer, and {what} is not")
    return NotAllowed(f"peer {caller.origin} (through {caller.front}) is not allowed to call {what}")

