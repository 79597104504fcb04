"""The mesh as the MCP endpoint sees it (the `Mesh` protocol of node/mcp/endpoint.py): the
tools and who provides them, a call, a description of this node and its peers, one signal;
and what the node knows of itself for `GET /healthz`, `GET /status` and `GET /metrics`.

This node's own calls go through here (`call`, `call_tool`, `request`) and are recorded in
its stats (node/mesh/stats.py) as `made`.

`status()` has one shape (`STATUS_FORMAT`); every key is always present, a value that is not
known yet is null:

    {
      "format": "praxis-node-status/1",
      "node": {"name": "node-a", "peerId": "12D3KooW...", "version": "0.1.0",
               "addrs": ["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW..."],
               "startedAt": "2025-01-31T12:00:00.000Z", "uptimeSeconds": 12.5, "ready": true,
               "tools": ["echo"]},                     # the tools this node serves to peers
      "peers": [{"name": "node-b" | null, "peerId": "12D3KooW...",
                 "direction": "inbound" | "outbound" | "unknown",
                 "connectedSince": "2025-01-31T12:00:01.000Z" | null, "connectedSeconds": 11.4 | null,
                 "latencyMs": 2.1 | null,             # smoothed round trip of the calls sent to it
                 "calls": {"sent": 3, "received": 1}, "errors": {"sent": 0, "received": 0},
                 "tools": ["add"]}],                  # the tools its card lists
      "tools": [{"name": "add", "providers": [{"kind": "peer", "name": "node-b", "peerId": "12D3KooW..."}],
                 "description": "Add two numbers",
                 "parameters": [{"name": "a", "type": "number", "required": true, "description": ""}],
                 "calls": 4, "errors": 1,            # since this node started, made + served + forwarded
                 "recent": {"calls": 4, "errors": 1, "p50Ms": 2.3 | null, "p95Ms": 5.1 | null}}],
      "window": {"seconds": 300, "maxCallsPerTool": 1000},   # what "recent" covers
      "calls": {"made": {"calls": 5, "errors": 1}, "served": {...}, "forwarded": {...},
                "inFlight": {"made": 0, "served": 0, "forwarded": 0},
                "refused": {"not_allowed": 0, "origin_refused": 0, "busy": 0, "too_large": 0,
                            "too_many_hops": 0, "invalid_arguments": 1, "unknown_tool": 0,
                            "invalid_request": 0}},
      "engines": {"dagger": {"queued": 0, "running": 1, "slots": 4}},  # engines with a queue, once created
      "recentCalls": [{"time": "2025-01-31T12:00:02.000Z", "tool": "add", "role": "made",
                       "caller": "mcp" | "node" | "12D3KooW...",
                       "provider": "local" | "mcp:<server>" | "12D3KooW..." | "-",
                       "outcome": "ok", "durationMs": 2.3}]     # the last 50 calls, the newest first
    }

Peers are the peers connected now, by peer ID; tools are the mesh's tools by the name callers
use (`Router.tools()`), by name, each with its parameters (declared, or read from its input
schema: "type" is the schema's type, types joined by "|", or "any"). Provider kinds: "local"
(this node), "peer", "mcp" (one of this node's MCP servers, by its configured name). Recent
calls never carry arguments or results; a tool name there is the name the call asked for (cut
to 128 characters), which need not be a tool of the mesh.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import trio
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from node.mcp.mesh import MeshEntry, Provider
from node.mesh.directory import PeerDirectory
from node.mesh.router import LOCAL, LOOKUP_SHARE, Routed, Router
from node.mesh.stats import MADE, WINDOW_CALLS, WINDOW_SECONDS, MeshStats, RecentCall, engine_queue
from node.runtime.signals import ChangeSignal
from node.runtime.tracing import SpanKind, Tracing
from protocols.call_events import NO_EVENTS, CallEvents
from protocols.errors import PraxisError, error_from_code
from protocols.messages import Card, ToolResponse, ToolResult, ToolSpec
from protocols.peers import PeerList

STATUS_FORMAT = "praxis-node-status/1"


class MeshView:
    def __init__(
        self,
        router: Router,
        directory: PeerDirectory,
        stats: MeshStats,
        *,
        name: str,
        version: str,
        peer_id: str,
        card: Callable[[], Card],
        peer_list: Callable[[], PeerList],
        call_timeout: float,
        tools_changed: ChangeSignal,
        connections: Callable[[], Mapping[str, str]],
        engines: Mapping[str, object],
        ready: Callable[[], bool],
        tracing: Tracing | None = None,
        gossip_mesh: Callable[[], int] | None = None,
    ) -> None:
        self.router = router
        self.directory = directory
        self.stats = stats
        self.gossip_mesh = gossip_mesh  # None without discovery (no GossipSub)
        self.name = name
        self.version = version
        self.peer_id = peer_id
        self.card = card
        self.peer_list = peer_list
        self.call_timeout = call_timeout
        self.tools_changed = tools_changed
        self.connections = connections  # connected peer ID -> "inbound" | "outbound" | "unknown"
        self.engines = engines
        self._ready = ready
        self.tracing = tracing or Tracing()
        stats.registry.register(_LiveCollector(self))

    def tools(self) -> Mapping[str, MeshEntry]:
        return {name: MeshEntry(tool.spec, tuple(self._provider(p) for p in tool.providers))
                for name, tool in self.router.tools().items()}

    # ----- this node's own calls -------------------------------------------------------

    async def call(
        self, name: str, arguments: dict[str, Any], *, timeout: float | None = None, caller: str = "node",
        traceparent: str | None = None, events: CallEvents = NO_EVENTS,
    ) -> Routed:
        """Call a tool anywhere in the mesh within `timeout` (default: the node's call timeout).
        `caller` is who asked, for the call log: "mcp" (the MCP endpoint) or "node";
        `traceparent` the caller's trace context, if it sent one."""
        deadline = trio.current_time() + (timeout if timeout is not None else self.call_timeout)
        with self.tracing.span(f"{caller} call {name}", SpanKind.SERVER, parent=traceparent,
                               **{"praxis.tool": name}), self.stats.call(MADE, name, caller) as record:
            if self.router.local.get(name) is not None:
                record.own, record.provider = True, LOCAL  # refused or failed here, by this node
            try:
                routed = await self.router.call(name, dict(arguments), deadline=deadline, trace_id=uuid.uuid4().hex,
                                               events=events)
            except PraxisError as exc:
                record.failed(exc)
                raise
            record.succeeded(routed.result, routed.provider)
            return routed

    async def find(self, name: str) -> bool:
        """Look up a tool no peer is known to offer (the DHT), within the router's share of the
        call timeout; True when the mesh knows it now. False at once without discovery."""
        if self.router.lookup is None:
            return False
        return await self.router.lookup(name, trio.current_time() + self.call_timeout * LOOKUP_SHARE)

    async def call_tool(
        self, name: str, arguments: dict[str, Any], *, traceparent: str | None = None,
        events: CallEvents = NO_EVENTS, timeout: float | None = None,
    ) -> ToolResult:
        # A client may shorten the deadline, never lengthen it.
        timeout = min(timeout, self.call_timeout) if timeout is not None else None
        return (await self.call(name, arguments, caller="mcp", traceparent=traceparent, events=events,
                                timeout=timeout)).result

    async def request(
        self, peer_id: str, name: str, arguments: dict[str, Any], *, timeout: float | None = None,
        events: CallEvents = NO_EVENTS,
    ) -> ToolResponse:
        """Send a call to one given peer (which serves it or forwards it), bypassing the router's
        choice; the answer comes back as the peer gave it, errors included. `events`: where what
        the tool says while it runs goes."""
        deadline = trio.current_time() + (timeout if timeout is not None else self.call_timeout)
        with self.stats.call(MADE, name, "node") as record:
            record.provider = peer_id
            try:
                response = await self.router.request(peer_id, name, arguments, deadline, events)
            except PraxisError as exc:
                record.failed(exc)
                raise
            if response.error is not None:
                record.failed(error_from_code(response.error.code, response.error.message))
            else:
                record.succeeded(response.result)
            return response

    def call_refused(self, name: str, error: PraxisError) -> None:
        self.stats.refused(MADE, name, "mcp", error)

    # ----- what the node knows of itself ----------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {"self": self.card().to_wire(), "peers": self.peer_list().to_wire()["peers"]}

    def ready(self) -> bool:
        return self._ready()

    def metrics_text(self) -> bytes:
        return generate_latest(self.stats.registry)

    def status(self) -> dict[str, Any]:
        now = trio.current_time()
        card = self.card()
        peers = []
        for peer_id, direction in sorted(self.connections().items()):
            entry = self.directory.get(peer_id)
            record = self.stats.peers.get(peer_id)
            peers.append({
                "name": entry.card.name if entry is not None else None,
                "peerId": peer_id,
                "direction": direction,
                "connectedSince": _iso(record.connected_at) if record is not None else None,
                "connectedSeconds": round(now - record.since, 3) if record is not None else None,
                "latencyMs": round(record.latency * 1000, 3)
                if record is not None and record.latency is not None else None,
                "calls": {"sent": record.sent if record else 0, "received": record.received if record else 0},
                "errors": {"sent": record.sent_errors if record else 0,
                           "received": record.received_errors if record else 0},
                "tools": sorted(entry.tools) if entry is not None else [],
            })
        tools = [{"name": name, "providers": [p.to_json() for p in entry.providers],
                  "description": entry.spec.description, "parameters": _parameters(entry.spec),
                  **self.stats.tool_summary(name)}
                 for name, entry in sorted(self.tools().items())]
        engines = {}
        for engine_name, engine in sorted(self.engines.items()):
            queue = engine_queue(engine)
            if queue is not None:
                engines[engine_name] = {"queued": queue[0], "running": queue[1], "slots": queue[2]}
        return {
            "format": STATUS_FORMAT,
            "node": {
                "name": self.name, "peerId": self.peer_id, "version": self.version, "addrs": list(card.addrs),
                "startedAt": _iso(self.stats.started_at), "uptimeSeconds": round(now - self.stats.started, 3),
                "ready": self.ready(), "tools": sorted(spec.name for spec in card.tools),
            },
            "peers": peers,
            "tools": tools,
            "window": {"seconds": WINDOW_SECONDS, "maxCallsPerTool": WINDOW_CALLS},
            "calls": self.stats.calls_summary(),
            "engines": engines,
            "recentCalls": [_recent(call) for call in self.stats.recent_calls()],
        }

    def _provider(self, provider: str) -> Provider:
        if provider == LOCAL:
            return Provider("local", self.name, self.peer_id)
        if provider.startswith("mcp:"):
            return Provider("mcp", provider.removeprefix("mcp:"))
        entry = self.directory.get(provider)
        return Provider("peer", entry.card.name if entry is not None else "", provider)


def _parameters(spec: ToolSpec) -> list[dict[str, Any]]:
    """A tool's parameters: as declared in its card, else the properties of its input schema."""
    if spec.parameters or not spec.input_schema:
        return [{"name": p.name, "type": p.type, "required": p.required, "description": p.description}
                for p in spec.parameters]
    properties = spec.input_schema.get("properties")
    required = spec.input_schema.get("required")
    required = set(required) if isinstance(required, list) and all(isinstance(r, str) for r in required) else set()
    out = []
    for name, schema in properties.items() if isinstance(properties, dict) else ():
        schema = schema if isinstance(schema, dict) else {}
        kind = schema.get("type")
        if isinstance(kind, list) and kind and all(isinstance(k, str) for k in kind):
            kind = "|".join(kind)
        description = schema.get("description")
        out.append({"name": name, "type": kind if isinstance(kind, str) else "any", "required": name in required,
                    "description": description if isinstance(description, str) else ""})
    return out


def _recent(call: RecentCall) -> dict[str, Any]:
    return {"time": _iso(call.ended_at), "tool": call.tool, "role": call.role, "caller": call.caller,
            "provider": call.provider, "outcome": call.outcome, "durationMs": round(call.seconds * 1000, 3)}


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _LiveCollector:
    """Gauges read when `/metrics` is scraped: peers, engine queues, the node itself."""

    def __init__(self, view: MeshView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        view = self.view
        peers = GaugeMetricFamily("praxis_peers_connected", "Peers connected now, by who dialled",
                                  labels=("direction",))
        directions = list(view.connections().values())
        for direction in ("inbound", "outbound"):
            peers.add_metric((direction,), directions.count(direction))
        yield peers
        queued = GaugeMetricFamily("praxis_engine_queue_length", "Calls waiting for an engine slot",
                                   labels=("engine",))
        busy = GaugeMetricFamily("praxis_engine_slots_busy", "Engine slots in use", labels=("engine",))
        slots = GaugeMetricFamily("praxis_engine_slots", "Engine slots in all", labels=("engine",))
        for name, engine in sorted(view.engines.items()):
            queue = engine_queue(engine)
            if queue is not None:
                for family, value in zip((queued, busy, slots), queue, strict=True):
                    family.add_metric((name,), value)
        yield from (queued, busy, slots)
        yield GaugeMetricFamily("praxis_mesh_tools", "Tools the mesh offers this node",
                                value=len(view.stats.labels.known()))
        if view.gossip_mesh is not None:
            yield GaugeMetricFamily("praxis_gossip_mesh_peers", "GossipSub mesh peers on the cards topic: "
                                    "those this node's announcements go to (0: they reach nobody)",
                                    value=view.gossip_mesh())
        yield GaugeMetricFamily("praxis_node_ready", "1 once the node listens and its bootstrap peers were tried",
                                value=1 if view.ready() else 0)
        yield GaugeMetricFamily("praxis_node_start_time_seconds", "When the node started (Unix time)",
                                value=view.stats.started_at)
        info = GaugeMetricFamily("praxis_node_info", "This node", labels=("name", "version", "peer_id"))
        info.add_metric((view.name, view.version, view.peer_id), 1)
        yield info
