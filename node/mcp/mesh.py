"""What the MCP endpoint knows of the mesh: a narrow protocol (node/mesh/view.py implements it)
and the plain values it speaks in. The endpoint never sees the node, its router or its host."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from node.runtime.signals import ChangeSignal
from protocols.call_events import NO_EVENTS, CallEvents
from protocols.errors import PraxisError
from protocols.messages import ToolResult, ToolSpec


@dataclass(frozen=True)
class Provider:
    """Who serves a tool, as the listing names it."""

    kind: str  # "local", "peer" or "mcp"
    name: str  # the node's name, or the MCP server's name
    peer_id: str = ""

    def to_json(self) -> dict[str, str]:
        out = {"kind": self.kind, "name": self.name}
        if self.peer_id:
            out["peerId"] = self.peer_id
        return out


@dataclass(frozen=True)
class MeshEntry:
    """One tool of the mesh as the endpoint lists it."""

    spec: ToolSpec
    providers: tuple[Provider, ...]


class Mesh(Protocol):
    """All the endpoint knows of the mesh (node/mesh/view.py implements it)."""

    name: str  # this node's name and version, for the MCP server's own description
    version: str
    tools_changed: ChangeSignal  # bumped whenever the set of tools or their specs may have changed
    call_timeout: float  # seconds: a call's deadline unless the caller asks for less

    def tools(self) -> Mapping[str, MeshEntry]:
        """Every tool of the mesh, by the name callers use."""
        ...

    async def find(self, name: str) -> bool:
        """Look up a tool `tools()` does not list (not announced to this node yet); True when the
        mesh knows it now."""
        ...

    async def call_tool(
        self, name: str, arguments: dict[str, Any], *, traceparent: str | None = None,
        events: CallEvents = NO_EVENTS, timeout: float | None = None,
    ) -> ToolResult:
        """Call a tool anywhere in the mesh; raises a `PraxisError` when it cannot be served.
        `traceparent`: the client's W3C trace context (`_meta.traceparent`), if it sent one;
        `events`: where progress, log messages and questions from the tool go;
        `timeout`: a shorter deadline than `call_timeout` the client asked for (seconds)."""
        ...

    def describe(self) -> dict[str, Any]:
        """This node and the peers it knows: {"self": card, "peers": [records]}."""
        ...

    def call_refused(self, name: str, error: PraxisError) -> None:
        """Record a call the endpoint refused before it reached the mesh (unknown tool, bad arguments)."""
        ...

    def ready(self) -> bool:
        """True once the node listens and its bootstrap peers were tried."""
        ...

    def status(self) -> dict[str, Any]:
        """This node, its peers, the mesh's tools and their calls (shape: node/mesh/view.py)."""
        ...

    def metrics_text(self) -> bytes:
        """The node's metrics in the Prometheus text format."""
        ...
