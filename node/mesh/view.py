"""The mesh as the MCP endpoint sees it (the `Mesh` protocol of node/mcp/endpoint.py): the
tools and who provides them, a call, a description of this node and its peers, one signal.

This node's own calls go through here (`call`, `call_tool`, `request`) and are recorded in
its stats (node/mesh/stats.py) as `made`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import trio

from node.mcp.endpoint import MeshEntry, Provider
from node.mesh.directory import PeerDirectory
from node.mesh.router import LOCAL, Routed, Router
from node.mesh.stats import MADE, MeshStats
from node.runtime.signals import ChangeSignal
from protocols.errors import PraxisError, error_from_code
from protocols.messages import Card, ToolResponse, ToolResult
from protocols.peers import PeerList


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
    ) -> None:
        self.router = router
        self.directory = directory
        self.stats = stats
        self.name = name
        self.version = version
        self.peer_id = peer_id
        self.card = card
        self.peer_list = peer_list
        self.call_timeout = call_timeout
        self.tools_changed = tools_changed

    def tools(self) -> Mapping[str, MeshEntry]:
        return {name: MeshEntry(tool.spec, tuple(self._provider(p) for p in tool.providers))
                for name, tool in self.router.tools().items()}

    # ----- this node's own calls -------------------------------------------------------

    async def call(
        self, name: str, arguments: dict[str, Any], *, timeout: float | None = None, caller: str = "node"
    ) -> Routed:
        """Call a tool anywhere in the mesh within `timeout` (default: the node's call timeout).
        `caller` is who asked, for the call log: "mcp" (the MCP endpoint) or "node"."""
        deadline = trio.current_time() + (timeout if timeout is not None else self.call_timeout)
        with self.stats.call(MADE, name, caller) as record:
            if self.router.local.get(name) is not None:
                record.own, record.provider = True, LOCAL  # refused or failed here, by this node
            try:
                routed = await self.router.call(name, dict(arguments), deadline=deadline, trace_id=uuid.uuid4().hex)
            except PraxisError as exc:
                record.failed(exc)
                raise
            record.succeeded(routed.result, routed.provider)
            return routed

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        return (await self.call(name, arguments, caller="mcp")).result

    async def request(
        self, peer_id: str, name: str, arguments: dict[str, Any], *, timeout: float | None = None
    ) -> ToolResponse:
        """Send a call to one given peer (which serves it or forwards it), bypassing the router's
        choice; the answer comes back as the peer gave it, errors included."""
        deadline = trio.current_time() + (timeout if timeout is not None else self.call_timeout)
        with self.stats.call(MADE, name, "node") as record:
            record.provider = peer_id
            try:
                response = await self.router.request(peer_id, name, arguments, deadline)
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

    def describe(self) -> dict[str, Any]:
        return {"self": self.card().to_wire(), "peers": self.peer_list().to_wire()["peers"]}

    def _provider(self, provider: str) -> Provider:
        if provider == LOCAL:
            return Provider("local", self.name, self.peer_id)
        if provider.startswith("mcp:"):
            return Provider("mcp", provider.removeprefix("mcp:"))
        entry = self.directory.get(provider)
        return Provider("peer", entry.card.name if entry is not None else "", provider)
