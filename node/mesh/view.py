"""The mesh as the MCP endpoint sees it (the `Mesh` protocol of node/mcp/endpoint.py): the
tools and who provides them, a call, a description of this node and its peers, one signal."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import trio

from node.mcp.endpoint import MeshEntry, Provider
from node.mesh.directory import PeerDirectory
from node.mesh.router import LOCAL, Routed, Router
from node.runtime.signals import ChangeSignal
from protocols.messages import Card, ToolResult
from protocols.peers import PeerList


class MeshView:
    def __init__(
        self,
        router: Router,
        directory: PeerDirectory,
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

    async def call(self, name: str, arguments: dict[str, Any], *, timeout: float | None = None) -> Routed:
        """Call a tool anywhere in the mesh within `timeout` (default: the node's call timeout)."""
        deadline = trio.current_time() + (timeout if timeout is not None else self.call_timeout)
        return await self.router.call(name, dict(arguments), deadline=deadline, trace_id=uuid.uuid4().hex)

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        return (await self.call(name, arguments)).result

    def describe(self) -> dict[str, Any]:
        return {"self": self.card().to_wire(), "peers": self.peer_list().to_wire()["peers"]}

    def _provider(self, provider: str) -> Provider:
        if provider == LOCAL:
            return Provider("local", self.name, self.peer_id)
        if provider.startswith("mcp:"):
            return Provider("mcp", provider.removeprefix("mcp:"))
        entry = self.directory.get(provider)
        return Provider("peer", entry.card.name if entry is not None else "", provider)
