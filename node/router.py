"""Deciding who serves a call: this node's engine, a peer, or a forwarded MCP server.

Order (DESIGN.md section 3): the local contract first; else the peers whose cards list the
tool, best first (fewest calls in flight, lowest recent latency, not recently failed); a
provider that could not be reached is skipped and the next one tried, and a call that may
already have run is retried elsewhere only when the tool is idempotent; else the MCP
servers that list the tool; else `NoProvider` naming what was tried.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from node.local_tools import LocalTools
from node.peers import PeerDirectory
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
from protocols.messages import ToolRequest, ToolResponse, ToolResult, ToolSpec

log = logging.getLogger("praxis.router")

LOCAL = "local"
PeerCaller = Callable[[str, ToolRequest, float], Awaitable[ToolResponse]]
# Errors after which another provider may safely be tried: the tool did not run.
_NOT_RUN = (ToolNotFound, Busy, NotAllowed)


class UpstreamTools(Protocol):
    """Tools of forwarded MCP servers (see node/mcp_upstreams.py)."""

    def tools(self) -> Mapping[str, tuple[str, ToolSpec]]: ...

    def shared_tools(self) -> Mapping[str, ToolSpec]:
        """The subset peers may reach through this node (advertised in its card)."""
        ...

    async def call(self, name: str, arguments: dict[str, Any], deadline: float) -> ToolResult: ...


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


class Router:
    def __init__(
        self,
        local: LocalTools,
        directory: PeerDirectory,
        call_peer: PeerCaller,
        upstreams: UpstreamTools | None = None,
    ) -> None:
        self.local = local
        self.directory = directory
        self.call_peer = call_peer
        self.upstreams = upstreams

    def tools(self) -> dict[str, MeshTool]:
        """Every tool the mesh offers, by name (local first, then peers, then MCP servers)."""
        out: dict[str, MeshTool] = {}
        for spec in self.local.specs():
            out[spec.name] = MeshTool(spec, (LOCAL,))
        for name in sorted(self.directory.tool_names()):
            providers = tuple(self.directory.providers(name))
            if name in out:
                out[name] = MeshTool(out[name].spec, out[name].providers + providers)
            else:
                peer_spec = self.directory.spec(name)
                assert peer_spec is not None
                out[name] = MeshTool(peer_spec, providers)
        if self.upstreams is not None:
            for name, (server, spec) in sorted(self.upstreams.tools().items()):
                entry = out.get(name)
                provider = f"mcp:{server}"
                out[name] = MeshTool(spec, (provider,)) if entry is None else MeshTool(
                    entry.spec, entry.providers + (provider,)
                )
        return out

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
    ) -> Routed:
        """Serve the call somewhere; raise a `PraxisError` saying why when nobody can.

        `hops` is how often the call was already forwarded; `exclude` names peers not to
        send it to (the peer it came from); `use_upstreams=False` keeps it off MCP servers.
        """
        if self.local.get(name) is not None:
            return Routed(await self.local.run(name, arguments, deadline), LOCAL)
        tried: list[str] = []
        refusals: list[PraxisError] = []  # typed "did not run" answers from providers
        providers = [p for p in self.directory.providers(name) if p not in exclude]
        idempotent = any(
            (entry := self.directory.get(p)) is not None
            and bool(entry.tools[name].idempotent)
            for p in providers
        )
        for peer_id in providers:
            if trio.current_time() >= deadline:
                raise ToolTimeout(f"tool {name!r}: deadline passed after trying {', '.join(tried)}")
            request = ToolRequest(
                id=uuid.uuid4().hex,
                name=name,
                arguments=arguments,
                hops=hops + 1,
                trace_id=trace_id,
                deadline_ms=max(1, int((deadline - trio.current_time()) * 1000)),
            )
            try:
                return Routed(await self._call_peer(peer_id, request, deadline), peer_id, len(tried) + 1)
            except PeerUnreachable as exc:
                tried.append(f"peer {peer_id} ({exc.message})")
                if exc.maybe_ran and not idempotent:
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
            upstream = self.upstreams.tools().get(name)
            if upstream is not None:
                result = await self.upstreams.call(name, arguments, deadline)
                return Routed(result, f"mcp:{upstream[0]}", len(tried) + 1)
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

    async def _call_peer(self, peer_id: str, request: ToolRequest, deadline: float) -> ToolResult:
        health = self.directory.health(peer_id)
        health.in_flight += 1
        started = trio.current_time()
        try:
            response = await self.call_peer(peer_id, request, deadline)
        except PeerUnreachable:
            self.directory.record_unreachable(peer_id)
            raise
        finally:
            health.in_flight -= 1
        self.directory.record_success(peer_id, trio.current_time() - started)
        if response.error is not None:
            raise error_from_code(response.error.code, response.error.message)
        return response.result
