"""Deciding who serves a call: this node's engine, a peer, or a forwarded MCP server.

Order: the local contract first; else this node's own MCP servers that list the tool (a name
this node serves is never routed to a peer); else the peers whose cards list the tool with
its pinned definition, best first (fewest calls in flight, lowest recent latency, not
recently failed); a provider that could not be reached is skipped and the next one tried,
and a call that may already have run is retried elsewhere only when that provider's own
card says the tool is idempotent; else `NoProvider` naming what was tried.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import trio

from node.mesh.directory import PeerDirectory
from node.mesh.origins import MAX_PROOF_SECONDS
from node.runtime.tracing import SpanKind, Tracing, current_traceparent
from node.tools.local import LocalTools
from protocols.call_events import NO_EVENTS, CallEvents
from protocols.errors import (
    Busy,
    NoProvider,
    NotAllowed,
    PeerUnreachable,
    PraxisError,
    ToolNotFound,
    ToolTimeout,
    error_from_code,
)
from protocols.messages import CallOrigin, ToolRequest, ToolResponse, ToolResult, ToolSpec

log = logging.getLogger("praxis.router")

LOCAL = "local"
VARIANT_SUFFIX = 8  # characters of the peer ID that tell a tool's variants apart
PeerCaller = Callable[[str, ToolRequest, float, CallEvents], Awaitable[ToolResponse]]
# Errors after which another provider may safely be tried: the tool did not run.
_NOT_RUN = (ToolNotFound, Busy, NotAllowed)


class UpstreamTools(Protocol):
    """Tools of forwarded MCP servers (see node/mcp/upstreams.py)."""

    def tools(self) -> Mapping[str, tuple[str, ToolSpec]]: ...

    def shared_tools(self) -> Mapping[str, ToolSpec]:
        """The subset peers may reach through this node (advertised in its card)."""
        ...

    async def call(
        self, name: str, arguments: dict[str, Any], deadline: float, events: CallEvents = NO_EVENTS
    ) -> ToolResult: ...


@dataclass
class Routed:
    result: ToolResult
    provider: str  # "local", a peer ID, or "mcp:<server>"
    attempts: int = 1  # providers asked; more than one means the call failed over


@dataclass(frozen=True)
class MeshTool:
    """One tool as the mesh offers it, with who can serve it."""

    spec: ToolSpec
    providers: tuple[str, ...]
    tool: str = ""  # the name its providers know it by ("echo" for the variant "echo@1a2b3c4d")
    definition: str | None = None  # peers' tools: the definition's fingerprint


Signer = Callable[[str, str, dict[str, Any], int], CallOrigin]  # (target, tool, arguments, expires_ms)
ToolFinder = Callable[[str, float], Awaitable[bool]]  # (tool, deadline) -> found
LOOKUP_SHARE = 0.5  # of the time left, at most, spent looking an unknown tool up


def variant_name(tool: str, peer_id: str) -> str:
    """How a second definition of `tool` is listed: after the peer that first offered it."""
    return f"{tool}@{peer_id[-VARIANT_SUFFIX:]}"


class Router:
    def __init__(
        self,
        local: LocalTools,
        directory: PeerDirectory,
        call_peer: PeerCaller,
        upstreams: UpstreamTools | None = None,
        sign: Signer | None = None,
        tracing: Tracing | None = None,
        lookup: ToolFinder | None = None,
    ) -> None:
        self.local = local
        # Finds providers of a tool no peer is known to offer (the DHT; node/mesh/tool_lookup.py).
        self.lookup = lookup
        self.directory = directory
        self.call_peer = call_peer
        self.upstreams = upstreams
        self.sign = sign
        self.tracing = tracing or Tracing()

    def tools(self) -> dict[str, MeshTool]:
        """Every tool the mesh offers, by the name callers use.

        This node's own tools and its MCP servers' tools keep their names: a peer offering the
        same name never receives those calls. Among peers, a name means the definition known
        longest (`PeerDirectory.definitions`); every other definition is listed apart as
        `name@<peer>`, so no newcomer can replace a tool's description or take its calls.
        """
        out: dict[str, MeshTool] = {}
        for spec in self.local.specs():
            out[spec.name] = MeshTool(spec, (LOCAL,), spec.name)
        if self.upstreams is not None:
            for name, (server, spec) in sorted(self.upstreams.tools().items()):
                if name not in out:
                    out[name] = MeshTool(spec, (f"mcp:{server}",), name)
        for name, definitions in sorted(self.directory.every_definition().items()):
            own = out.get(name)
            for index, definition in enumerate(definitions):
                if own is None and index == 0:
                    out[name] = MeshTool(definition.spec, definition.providers, name, definition.fingerprint)
                elif own is not None and definition.fingerprint == own.spec.fingerprint():
                    # Peers offering exactly our definition: shown as providers; calls stay here.
                    out[name] = own = replace(own, providers=own.providers + definition.providers)
                else:
                    variant = variant_name(name, definition.first_provider)
                    out[variant] = MeshTool(definition.spec, definition.providers, name, definition.fingerprint)
        return out

    def _peer_target(self, name: str) -> tuple[str, str | None]:
        """(tool, definition) that `name` routes to among peers; see `tools`."""
        pinned = self.directory.pinned(name)  # None: no peer lists `name` itself
        if pinned is not None:
            return name, pinned
        tool, at, suffix = name.rpartition("@")
        if at and tool:
            for definition in self.directory.definitions(tool):
                if variant_name(tool, definition.first_provider) == name:
                    return tool, definition.fingerprint
        return name, None

    def peer_providers(self, name: str, exclude: frozenset[str] = frozenset()) -> list[str]:
        """The peers a call to `name` would be sent to, best first, leaving out `exclude`."""
        return self._providers(*self._peer_target(name), exclude)

    def _providers(self, tool: str, definition: str | None, exclude: frozenset[str]) -> list[str]:
        if definition is None:
            return []
        return [p for p in self.directory.providers(tool, definition) if p not in exclude]

    async def call(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        deadline: float,
        hops: int = 0,
        trace_id: str | None = None,
        exclude: frozenset[str] = frozenset(),
        use_upstreams: bool = True,
        origin: CallOrigin | None = None,
        sign: bool = True,
        events: CallEvents = NO_EVENTS,
    ) -> Routed:
        """Serve the call somewhere; raise a `PraxisError` saying why when nobody can.

        `hops` is how often the call was already forwarded; `exclude` names peers not to
        send it to (the peer it came from); `use_upstreams=False` keeps it off MCP servers.
        `origin` is the proof of who made a call this node forwards; with none and `sign`,
        this node signs as the origin (never for a call it forwards: that would vouch for a
        caller it cannot prove). `events` is the caller: what the tool says while it runs goes there.
        """
        if self.local.get(name) is not None:
            return Routed(await self.local.run(name, arguments, deadline, events), LOCAL)
        upstream = self.upstreams.tools().get(name) if self.upstreams is not None and use_upstreams else None
        if upstream is not None and self.upstreams is not None:
            result = await self.upstreams.call(name, arguments, deadline, events)
            return Routed(result, f"mcp:{upstream[0]}")
        tool, definition = self._peer_target(name)
        tried: list[str] = []
        refusals: list[PraxisError] = []  # typed "did not run" answers from providers
        providers = self._providers(tool, definition, exclude)
        if not providers and self.lookup is not None and hops == 0:
            # A tool no peer is known to offer: ask the DHT (only for this node's own calls, so a
            # peer's calls cannot make this node search the mesh for names of its choosing).
            now = trio.current_time()
            if await self.lookup(tool, now + (deadline - now) * LOOKUP_SHARE):
                tool, definition = self._peer_target(name)
                providers = self._providers(tool, definition, exclude)
        for peer_id in providers:
            if trio.current_time() >= deadline:
                raise ToolTimeout(f"tool {name!r}: deadline passed after trying {', '.join(tried)}")
            remaining = deadline - trio.current_time()
            proof = origin
            if proof is None and sign and self.sign is not None:
                expires_ms = int(time.time() * 1000 + min(remaining, MAX_PROOF_SECONDS - 60) * 1000)
                proof = self.sign(peer_id, tool, arguments, expires_ms)
            request = ToolRequest(
                id=uuid.uuid4().hex,
                name=tool,
                arguments=arguments,
                hops=hops + 1,
                trace_id=trace_id,
                deadline_ms=max(1, int(remaining * 1000)),
                origin=proof,
            )
            try:
                return Routed(await self._call_peer(peer_id, request, deadline, events), peer_id, len(tried) + 1)
            except PeerUnreachable as exc:
                tried.append(f"peer {peer_id} ({exc.message})")
                if exc.maybe_ran and not self._says_idempotent(peer_id, tool):
                    raise PeerUnreachable(
                        f"tool {name!r}: peer {peer_id} vanished during the call ({exc.message}); "
                        "not retried elsewhere because the tool is not idempotent and may have run",
                        maybe_ran=True,
                    ) from None
                log.info("tool %s: peer %s unreachable, trying the next provider", name, peer_id)
            except _NOT_RUN as exc:
                tried.append(f"peer {peer_id} ({exc.message})")
                refusals.append(exc)
        if self.upstreams is not None and use_upstreams:
            tried.append("forwarded MCP servers (none lists it)")
        if not providers:
            where = "; ".join(tried) if tried else "no MCP server lists it"
            raise ToolNotFound(
                f"no provider for tool {name!r}: not a local tool, no connected peer lists it, "
                f"and {where}"
            )
        message = f"no provider could serve tool {name!r}; tried: " + "; ".join(tried)
        kinds = {type(e) for e in refusals}
        if len(refusals) == len(tried) and len(kinds) == 1:
            # Every provider gave the same answer (all refused, all busy): pass that answer on.
            raise kinds.pop()(refusals[0].message if len(refusals) == 1 else message)
        raise NoProvider(message)

    async def request(
        self, peer_id: str, name: str, arguments: dict[str, Any], deadline: float, events: CallEvents = NO_EVENTS
    ) -> ToolResponse:
        """Send a call to one given peer (which serves it or forwards it), bypassing the choice of
        provider; the answer comes back as the peer gave it, errors included."""
        remaining = deadline - trio.current_time()
        origin = None
        if self.sign is not None:
            origin = self.sign(peer_id, name, arguments, int((time.time() + remaining) * 1000))
        request = ToolRequest(id=uuid.uuid4().hex, name=name, arguments=arguments, hops=1,
                              deadline_ms=max(1, int(remaining * 1000)), trace_id=uuid.uuid4().hex, origin=origin)
        return await self._traced_call_peer(peer_id, request, deadline, events)

    async def _traced_call_peer(
        self, peer_id: str, request: ToolRequest, deadline: float, events: CallEvents
    ) -> ToolResponse:
        """One request to one peer, as a client span whose context travels in the request."""
        attributes = {"praxis.tool": request.name, "praxis.peer": peer_id, "praxis.hops": str(request.hops)}
        with self.tracing.span(f"call {request.name}", SpanKind.CLIENT, **attributes):
            request.traceparent = current_traceparent()
            return await self.call_peer(peer_id, request, deadline, events)

    def _says_idempotent(self, peer_id: str, tool: str) -> bool:
        """Only the provider that failed may say its run can be repeated: another card's word
        about idempotence says nothing of what this provider did."""
        entry = self.directory.get(peer_id)
        spec = entry.tools.get(tool) if entry is not None else None
        return spec is not None and bool(spec.idempotent)

    async def _call_peer(
        self, peer_id: str, request: ToolRequest, deadline: float, events: CallEvents
    ) -> ToolResult:
        health = self.directory.health(peer_id)
        health.in_flight += 1
        started = trio.current_time()
        try:
            response = await self._traced_call_peer(peer_id, request, deadline, events)
        except PeerUnreachable:
            self.directory.record_unreachable(peer_id)
            raise
        finally:
            health.in_flight -= 1
        self.directory.record_success(peer_id, trio.current_time() - started)
        if response.error is not None:
            raise error_from_code(response.error.code, response.error.message)
        return response.result
