"""Serving tool calls that peers send this node: limits, policy, deadline, then the engine."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import trio
from libp2p.abc import INetStream

from node.config import NodeConfig
from node.mesh.origins import Caller, OriginCheck
from node.mesh.router import Router, UpstreamTools
from node.tools.local import LocalTools
from node.tools.policy import may_call_as, may_use_node
from protocols.errors import Busy, NotAllowed, PraxisError, TooLarge, ToolNotFound
from protocols.messages import ToolRequest, ToolResponse, ToolResult
from protocols.streams import WireLimits
from protocols.tool import serve_tool_stream

log = logging.getLogger("praxis.service")


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
    """Answers `/praxis/tool/1.0.0` requests from peers.

    Who asks is the peer in front and the call's proven origin (node/mesh/origins.py); policy
    applies to both.

    Local tools first (subject to policy), then shared MCP servers' tools, then, while the
    hop count allows, the call is forwarded to another peer that offers the tool (never back
    to the peer it came from).
    """

    def __init__(
        self,
        config: NodeConfig,
        local: LocalTools,
        router: Router,
        origins: OriginCheck,
        wire: WireLimits,
        upstreams: UpstreamTools | None = None,
    ) -> None:
        self.config = config
        self.wire = wire
        self.origins = origins
        self.local = local
        self.router = router
        self.upstreams = upstreams
        limits = config.limits
        self.in_flight = InFlightLimits(limits.max_inflight_per_peer, limits.max_inflight_total)

    async def serve_tool_stream(self, stream: INetStream) -> None:
        """`/praxis/tool/1.0.0`: one request from the stream's peer, one response; never raises."""
        await serve_tool_stream(stream, stream.muxed_conn.peer_id.to_string(), self.handle, self.wire)

    async def handle(self, request: ToolRequest, peer_id: str) -> ToolResponse:
        started = trio.current_time()
        try:
            result = await self._serve(request, peer_id)
        except PraxisError as exc:
            log.info(
                "call %s from %s refused or failed in %.0f ms: %s",
                request.name, peer_id, (trio.current_time() - started) * 1000, exc.log_text(),
            )
            return ToolResponse.failure(request.id, exc.code, exc.message)
        log.debug("call %s from %s served in %.1f ms", request.name, peer_id,
                  (trio.current_time() - started) * 1000)
        return ToolResponse(id=request.id, result=result)

    async def _serve(self, request: ToolRequest, peer_id: str) -> ToolResult:
        limits = self.config.limits
        if request.hops > limits.max_hops:
            raise TooLarge(
                f"call to {request.name!r} refused: it has been forwarded {request.hops} times "
                f"(limit {limits.max_hops})"
            )
        budget = limits.call_timeout_seconds
        if request.deadline_ms is not None:
            budget = min(budget, request.deadline_ms / 1000)
        deadline = trio.current_time() + budget
        arguments = request.flat_arguments()
        caller = self.origins.identify(request, peer_id, arguments)
        contract = self.local.get(request.name)
        if contract is not None:
            if not may_call_as(contract, caller, self.config.policy):
                raise _refusal(caller, f"tool {request.name!r}")
            with self.in_flight.slot(peer_id):
                return await self.local.run(request.name, arguments, deadline)
        if not may_use_node(caller, self.config.policy):
            raise _refusal(caller, "this node's forwarded tools")
        if self.upstreams is not None and request.name in self.upstreams.shared_tools():
            with self.in_flight.slot(peer_id):
                return await self.upstreams.call(request.name, arguments, deadline)
        if request.hops >= limits.max_hops:
            raise ToolNotFound(
                f"this node has no tool {request.name!r} and the call may not be forwarded further"
            )
        with self.in_flight.slot(peer_id):
            # A request that reached us was sent at least once, whatever its `hops` says (Go
            # callers send none): the next node must see it as forwarded.
            routed = await self.router.call(
                request.name, arguments, deadline=deadline, hops=max(request.hops, 1),
                trace_id=request.trace_id, exclude=frozenset({peer_id, caller.origin}), use_upstreams=False,
                origin=request.origin, sign=False,
            )
        return routed.result


def _refusal(caller: Caller, what: str) -> NotAllowed:
    if not caller.forwarded:
        return NotAllowed(f"peer {caller.front} is not allowed to call {what}")
    if not caller.origin_proven:
        return NotAllowed(f"a call forwarded by {caller.front} without proof of its origin may only reach "
                          f"tools open to every peer, and {what} is not")
    return NotAllowed(f"peer {caller.origin} (through {caller.front}) is not allowed to call {what}")

