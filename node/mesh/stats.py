"""What a node knows about its calls, its peers and its tool streams.

One `MeshStats` per node, with its own prometheus `CollectorRegistry` (never the library's
global one: two nodes run in one process). It records:

- every call this node handled, once, by *role*: `made` (this node's own call: its MCP
  endpoint's clients, `Node.call`, `Node.request_peer`), `served` (a peer's call this node ran
  with a local tool or one of its shared MCP servers) or `forwarded` (a peer's call this node
  passed on to another peer); by tool and *outcome*, with its duration. Each call also gets
  one INFO line on the `praxis.calls` logger (see `CallRecord`): tool, caller, provider,
  outcome and duration, never arguments or results;
- calls this node refused itself, by reason (`REASONS`);
- per connected peer: when it connected, the calls sent to it and received from it, the
  errors among them, and the smoothed round trip of the calls sent to it;
- bytes and frames on tool streams (`/praxis/tool/1.0.0` and `1.1.0`), both ways (`CountingStream`);
- per tool, the durations of its recent calls (`WINDOW_SECONDS`, at most `WINDOW_CALLS` per
  tool), for p50/p95;
- the last `RECENT_CALLS` calls, whatever their tool (`RecentCall`: tool, role, caller,
  provider, outcome, duration, when it ended; never arguments or results), for `/status` and
  the mesh page.

Every label set is bounded. `role`, `outcome`, `reason` and `direction` are fixed sets; a
`tool` label is a name the mesh currently offers this node (its own tools, its MCP servers'
tools, its peers' tools as `Router.tools()` names them), at most `MAX_TOOL_LABELS` of them;
any other name, such as a tool a peer merely asked for, is counted as `other`.

The metrics (names as `/metrics` shows them):

| metric | type | labels |
|---|---|---|
| `praxis_calls_total` | counter | role, tool, outcome |
| `praxis_call_duration_seconds` | histogram | role, tool, outcome |
| `praxis_calls_refused_total` | counter | reason |
| `praxis_calls_in_flight` | gauge | role |
| `praxis_tool_stream_bytes_total` | counter | direction (in, out) |
| `praxis_tool_stream_frames_total` | counter | direction (in, out) |

and, read when scraped (node/mesh/view.py): `praxis_peers_connected{direction}`,
`praxis_engine_queue_length{engine}`, `praxis_engine_slots_busy{engine}`,
`praxis_engine_slots{engine}`, `praxis_mesh_tools`, `praxis_gossip_mesh_peers` (with discovery),
`praxis_node_ready`, `praxis_node_start_time_seconds`, `praxis_node_info{name,version,peer_id}`;
and the mesh's upkeep (node/mesh/activity.py): `praxis_connections_opened_total{direction}`,
`praxis_connections_closed_total{reason}`, `praxis_peer_dials_total{outcome}`,
`praxis_card_exchanges_total{started_by}`, `praxis_dht_walks_total{purpose}`,
`praxis_announcements_total{event}`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, GCCollector, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from node.mesh.activity import ActivityCollector, MeshActivity
from node.runtime.signals import ChangeSignal
from protocols.errors import (
    Busy,
    ContractError,
    EngineUnavailable,
    InvalidArguments,
    InvalidRequest,
    NoProvider,
    NotAllowed,
    PeerUnreachable,
    PraxisError,
    TooLarge,
    ToolExecutionError,
    ToolNotFound,
    ToolTimeout,
)
from protocols.messages import ToolResult
from protocols.streams import ByteStream

call_log = logging.getLogger("praxis.calls")

MADE, SERVED, FORWARDED = ROLES = ("made", "served", "forwarded")
OUTCOMES = ("ok", "tool_error", "timeout", "not_allowed", "busy", "too_large", "invalid_arguments",
            "unknown_tool", "no_provider", "unreachable", "engine_unavailable", "contract_error",
            "invalid_request", "cancelled", "error")
# Why this node refused a call itself (a refusal a peer sent back is that peer's, not counted here).
REASONS = ("not_allowed", "origin_refused", "busy", "too_large", "too_many_hops", "invalid_arguments",
           "unknown_tool", "invalid_request")
OTHER = "other"  # the tool label of every name the mesh does not offer
NO_PROVIDER = "-"  # the provider of a call that reached none
MAX_TOOL_LABELS = 512
WINDOW_SECONDS = 300
WINDOW_CALLS = 1000
LATENCY_SMOOTHING = 0.3
RECENT_CALLS = 50  # calls kept for `recent_calls()`, the newest; older ones are dropped
MAX_RECENT_NAME = 128  # a tool name a peer asked for is kept (and logged) cut to this length
# Durations of calls: from a no-op on this node (~0.1 ms) to a container run (minutes).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
           120.0, 300.0, math.inf)

_OUTCOME_OF: dict[type[PraxisError], str] = {
    ToolExecutionError: "tool_error", ToolTimeout: "timeout", NotAllowed: "not_allowed", Busy: "busy",
    TooLarge: "too_large", InvalidArguments: "invalid_arguments", ToolNotFound: "unknown_tool",
    NoProvider: "no_provider", PeerUnreachable: "unreachable", EngineUnavailable: "engine_unavailable",
    ContractError: "contract_error", InvalidRequest: "invalid_request",
}
# Outcomes that, decided by this node, are refusals of that reason.
_REFUSAL_OUTCOMES = frozenset({"not_allowed", "busy", "too_large", "invalid_arguments", "unknown_tool",
                               "invalid_request"})


def outcome_of(error: BaseException) -> str:
    """The outcome a failed call is counted under (a fixed set, whatever the error says)."""
    if isinstance(error, trio.Cancelled):
        return "cancelled"
    return _OUTCOME_OF.get(type(error), "error") if isinstance(error, PraxisError) else "error"


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted samples (q in 0..1)."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class ToolLabels:
    """The `tool` label of a call: a name the mesh offers, or `other`.

    The names the mesh offers are read again whenever `changed` moved. At most `cap` distinct
    names are labels at once; when a new one would pass the cap, labels of tools the mesh no
    longer offers are dropped first (`forget` removes their series), and if none can go the
    new name is counted as `other`.
    """

    def __init__(self, known: Callable[[], Iterable[str]], changed: ChangeSignal,
                 forget: Callable[[str], None], cap: int = MAX_TOOL_LABELS) -> None:
        self._known_source = known
        self._changed = changed
        self._forget = forget
        self.cap = cap
        self._version = -1
        self._known: frozenset[str] = frozenset()
        self.used: set[str] = set()

    def known(self) -> frozenset[str]:
        if self._version != self._changed.version:
            self._known = frozenset(self._known_source())
            self._version = self._changed.version
        return self._known

    def label(self, name: str) -> str:
        known = self.known()
        if name not in known:
            return OTHER
        if name in self.used:
            return name
        if len(self.used) >= self.cap:
            for gone in [label for label in self.used if label not in known]:
                self.used.discard(gone)
                self._forget(gone)
            if len(self.used) >= self.cap:
                return OTHER
        self.used.add(name)
        return name


@dataclass
class PeerRecord:
    """What this node knows of one connected peer's calls."""

    connected_at: float  # wall clock (time.time())
    since: float  # trio clock
    sent: int = 0
    sent_errors: int = 0
    received: int = 0
    received_errors: int = 0
    latency: float | None = None  # smoothed seconds per call sent to it (answered ones)


@dataclass
class ToolRecord:
    """Calls of one tool label since the node started, and the recent ones."""

    calls: int = 0
    errors: int = 0
    recent: deque[tuple[float, float, bool]] = field(default_factory=lambda: deque(maxlen=WINDOW_CALLS))

    def summary(self, now: float, window: float) -> dict[str, Any]:
        """{"calls", "errors", "p50Ms", "p95Ms"} over the calls that ended in the last `window` s."""
        while self.recent and self.recent[0][0] < now - window:
            self.recent.popleft()
        durations = sorted(seconds for _, seconds, _ in self.recent)
        return {
            "calls": len(durations),
            "errors": sum(1 for _, _, failed in self.recent if failed),
            "p50Ms": round(percentile(durations, 0.50) * 1000, 3) if durations else None,
            "p95Ms": round(percentile(durations, 0.95) * 1000, 3) if durations else None,
        }


@dataclass(frozen=True, slots=True)
class RecentCall:
    """One call this node handled, as `recent_calls()` keeps it (never arguments or results)."""

    ended_at: float  # wall clock (time.time())
    role: str
    tool: str  # the name the call asked for, cut to MAX_RECENT_NAME (not the metric label)
    caller: str  # a peer ID, "mcp" or "node"
    provider: str  # "local", "mcp:<server>", a peer ID, or "-"
    outcome: str
    seconds: float


class CallRecord:
    """One call as this node handles it: `with stats.call(role, name, caller) as record:`.

    The code that handles the call says who serves it (`provider`, once known) and how it went:
    `succeeded(result, provider)` or
    `failed(error)`; a block left by any other exception counts as `cancelled` or `error`.
    `own` says whether a failure is this node's own decision (its checks, its engine), so that
    a refusal is counted under its reason; `refused` names a reason the error type cannot tell
    (`origin_refused`, `too_many_hops`). Leaving the block records the call and logs one line:

        call <role> tool=<name> caller=<peer ID|mcp|node> provider=<local|mcp:<server>|peer ID|->
        outcome=<outcome> duration_ms=<ms>[ error=<the error's log text>]
    """

    __slots__ = ("_stats", "role", "name", "caller", "provider", "own", "refused", "outcome", "error", "started")

    def __init__(self, stats: MeshStats, role: str, name: str, caller: str) -> None:
        self._stats = stats
        self.role = role
        self.name = name
        self.caller = caller
        self.provider = NO_PROVIDER
        self.own = role == SERVED
        self.refused: str | None = None
        self.outcome = ""
        self.error: PraxisError | None = None
        self.started = 0.0

    def forwarding(self) -> None:
        """A peer's call this node passes on: counted as forwarded from here on."""
        self._stats.in_flight[self.role] -= 1
        self.role = FORWARDED
        self._stats.in_flight[FORWARDED] += 1

    def succeeded(self, result: ToolResult, provider: str | None = None) -> None:
        if provider is not None:
            self.provider = provider
        self.outcome = "tool_error" if result.is_error else "ok"

    def failed(self, error: PraxisError) -> None:
        self.error = error
        self.outcome = outcome_of(error)

    def __enter__(self) -> CallRecord:
        self.started = trio.current_time()
        self._stats.in_flight[self.role] += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if error is not None and not self.outcome:
            self.outcome = outcome_of(error)
        self._stats.in_flight[self.role] -= 1
        self._stats.finished(self, trio.current_time() - self.started)


class CountingStream:
    """A tool stream that counts the bytes and frames (newlines) read and written on it."""

    __slots__ = ("_stream", "_stats")

    def __init__(self, stream: ByteStream, stats: MeshStats) -> None:
        self._stream = stream
        self._stats = stats

    async def read(self, n: int | None = None) -> bytes:
        data = await self._stream.read(n)
        self._stats.bytes_in += len(data)
        self._stats.frames_in += data.count(b"\n")
        return data

    async def write(self, data: bytes) -> None:
        await self._stream.write(data)
        self._stats.bytes_out += len(data)
        self._stats.frames_out += data.count(b"\n")

    async def close(self) -> None:
        await self._stream.close()

    async def reset(self) -> None:
        await self._stream.reset()


class MeshStats:
    """The node's record of its calls, peers and tool streams (see the module's docstring)."""

    def __init__(self, known_tools: Callable[[], Iterable[str]], tools_changed: ChangeSignal) -> None:
        self.registry = CollectorRegistry()
        self.started_at = time.time()
        self.started = trio.current_time()
        self.labels = ToolLabels(known_tools, tools_changed, self._forget_tool)
        self._calls = Counter("praxis_calls", "Calls this node handled, by role, tool and outcome",
                              ("role", "tool", "outcome"), registry=self.registry)
        self._durations = Histogram("praxis_call_duration_seconds", "How long calls took, by role, tool and outcome",
                                    ("role", "tool", "outcome"), buckets=BUCKETS, registry=self.registry)
        self._refusals = Counter("praxis_calls_refused", "Calls this node refused itself, by reason",
                                 ("reason",), registry=self.registry)
        self._refused = {reason: self._refusals.labels(reason) for reason in REASONS}
        self.refusals = dict.fromkeys(REASONS, 0)
        # (role, tool, outcome) -> the counter's and the histogram's series, made on first use.
        self._series: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self.in_flight = dict.fromkeys(ROLES, 0)
        self.by_role = {role: [0, 0] for role in ROLES}  # calls, errors
        self.tools: dict[str, ToolRecord] = {}
        self.recent: deque[RecentCall] = deque(maxlen=RECENT_CALLS)
        self.peers: dict[str, PeerRecord] = {}
        self.bytes_in = self.bytes_out = self.frames_in = self.frames_out = 0
        self.registry.register(_StreamCollector(self))
        self.activity = MeshActivity()  # bumped by the mesh's parts (node/mesh/activity.py)
        self.registry.register(ActivityCollector(self.activity))
        GCCollector(registry=self.registry)  # the process's garbage collector (node/runtime/gc_tuning.py)

    # ----- recording ------------------------------------------------------------------

    def call(self, role: str, name: str, caller: str) -> CallRecord:
        return CallRecord(self, role, name, caller)

    def refused(self, role: str, name: str, caller: str, error: PraxisError) -> None:
        """A call refused before anything handled it (the MCP endpoint's own checks)."""
        with self.call(role, name, caller) as record:
            record.own = True
            record.failed(error)

    def bad_request(self, error: PraxisError) -> None:
        """A tool stream whose request could not be read: no call, but a refusal."""
        self._refuse("too_large" if isinstance(error, TooLarge) else "invalid_request")

    def _refuse(self, reason: str) -> None:
        self._refused[reason].inc()
        self.refusals[reason] += 1

    def finished(self, record: CallRecord, seconds: float) -> None:
        outcome = record.outcome if record.outcome in OUTCOMES else "error"
        failed = outcome != "ok"
        tool = self.labels.label(record.name)
        key = (record.role, tool, outcome)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (self._calls.labels(*key), self._durations.labels(*key))
        series[0].inc()
        series[1].observe(seconds)
        totals = self.by_role[record.role]
        totals[0] += 1
        totals[1] += failed
        tool_record = self.tools.get(tool)
        if tool_record is None:
            tool_record = self.tools[tool] = ToolRecord()
        tool_record.calls += 1
        tool_record.errors += failed
        tool_record.recent.append((trio.current_time(), seconds, failed))
        self.recent.append(RecentCall(time.time(), record.role, record.name[:MAX_RECENT_NAME], record.caller,
                                      record.provider, outcome, seconds))
        reason = record.refused or (outcome if record.own and outcome in _REFUSAL_OUTCOMES else None)
        if reason is not None:
            self._refuse(reason)
        if record.role != MADE:
            peer = self.peers.get(record.caller)
            if peer is not None:
                peer.received += 1
                peer.received_errors += failed
        if call_log.isEnabledFor(logging.INFO):
            error = f" error={record.error.log_text()}" if record.error is not None else ""
            call_log.info("call %s tool=%s caller=%s provider=%s outcome=%s duration_ms=%.1f%s",
                          record.role, record.name[:MAX_RECENT_NAME], record.caller, record.provider, outcome,
                          seconds * 1000, error)

    def peer_connected(self, peer_id: str) -> None:
        if peer_id not in self.peers:
            self.peers[peer_id] = PeerRecord(time.time(), trio.current_time())

    def peer_disconnected(self, peer_id: str) -> None:
        self.peers.pop(peer_id, None)

    def sent(self, peer_id: str, seconds: float, *, answered: bool, ok: bool) -> None:
        """A call this node sent to a peer: answered (with a result or an error) or not, ok or not."""
        peer = self.peers.get(peer_id)
        if peer is None:
            return
        peer.sent += 1
        peer.sent_errors += not ok
        if answered:
            peer.latency = seconds if peer.latency is None else (
                LATENCY_SMOOTHING * seconds + (1 - LATENCY_SMOOTHING) * peer.latency)

    def counting(self, stream: ByteStream) -> CountingStream:
        return CountingStream(stream, self)

    def _forget_tool(self, tool: str) -> None:
        for key in [key for key in self._series if key[1] == tool]:
            del self._series[key]
            self._calls.remove(*key)
            self._durations.remove(*key)
        self.tools.pop(tool, None)

    # ----- reading ----------------------------------------------------------------------

    def tool_summary(self, name: str) -> dict[str, Any]:
        """{"calls", "errors", "recent": {"calls", "errors", "p50Ms", "p95Ms"}} of one tool."""
        record = self.tools.get(name) or ToolRecord()
        return {"calls": record.calls, "errors": record.errors,
                "recent": record.summary(trio.current_time(), WINDOW_SECONDS)}

    def recent_calls(self) -> list[RecentCall]:
        """The last `RECENT_CALLS` calls this node handled, the newest first."""
        return list(reversed(self.recent))

    def calls_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {role: {"calls": calls, "errors": errors}
                               for role, (calls, errors) in self.by_role.items()}
        out["inFlight"] = dict(self.in_flight)
        out["refused"] = dict(self.refusals)
        return out


class _StreamCollector:
    """Calls in flight and tool-stream traffic, read from plain counters when scraped."""

    def __init__(self, stats: MeshStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        in_flight = GaugeMetricFamily("praxis_calls_in_flight", "Calls being handled now, by role",
                                      labels=("role",))
        for role in ROLES:
            in_flight.add_metric((role,), stats.in_flight[role])
        yield in_flight
        traffic = CounterMetricFamily("praxis_tool_stream_bytes", "Bytes on tool streams (1.0.0 and 1.1.0)",
                                      labels=("direction",))
        traffic.add_metric(("in",), stats.bytes_in)
        traffic.add_metric(("out",), stats.bytes_out)
        yield traffic
        frames = CounterMetricFamily("praxis_tool_stream_frames", "Frames on tool streams (1.0.0 and 1.1.0)",
                                     labels=("direction",))
        frames.add_metric(("in",), stats.frames_in)
        frames.add_metric(("out",), stats.frames_out)
        yield frames


def engine_queue(engine: object) -> tuple[int, int, int] | None:
    """(waiting, running, slots) of an engine that bounds its runs with a trio CapacityLimiter
    (the dagger engine), else None.

    Read without the engine's help: `LazyEngine` keeps the engine it created in `_engine`, and
    `DaggerEngine` its limiter in `_limiter`; an engine not created yet has no queue.
    """
    inner = getattr(engine, "_engine", engine)
    limiter = getattr(inner, "_limiter", None)
    if not isinstance(limiter, trio.CapacityLimiter):
        return None
    statistics = limiter.statistics()
    return statistics.tasks_waiting, statistics.borrowed_tokens, int(statistics.total_tokens)


__all__ = ["FORWARDED", "MADE", "OUTCOMES", "REASONS", "ROLES", "SERVED", "CallRecord", "MeshStats", "RecentCall",
           "engine_queue"]
