"""A running node through its MCP endpoint: the `RemoteNode` behind `praxis-node ... --node URL`.

No libp2p here: `--node` needs only an MCP client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import mcp
import mcp_types
import trio
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from node.cli.remote import CallResult, PeerRow, ToolRow, parameters_from_schema, sorted_peers, sorted_tools
from node.mcp.clients import owned_http_transport
from node.mcp.endpoint import PEERS_URI
from protocols.errors import PeerUnreachable

PROVIDERS_META = "praxis/providers"  # tools/list: each tool's providers, [{kind, name, peerId}]


@asynccontextmanager
async def endpoint_client(url: str, token: str | None, timeout: float) -> AsyncIterator[mcp.Client]:
    """An MCP client session to the node at `url` (with a bearer token when given)."""
    server: Any = url
    if token:
        server = owned_http_transport(url, create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}))
    try:
        with trio.fail_after(timeout):
            async with mcp.Client(server, mode="legacy") as client:
                yield client
    except trio.TooSlowError:
        raise PeerUnreachable(f"no answer from {url} within {timeout:g} s") from None


def mesh_name_of(tool: mcp_types.Tool) -> str:
    """The mesh's name for a listed tool: its title is "<mesh name> (from <provider>)".

    A mesh name has no whitespace, so it ends where the title's first " (from " starts.
    """
    if not tool.title:
        return tool.name
    head, sep, _ = tool.title.partition(" (from ")
    return head if sep and head else tool.name


class EndpointRemote:
    """The node as its MCP endpoint shows it: `tools/list`, `tools/call` and the peers resource."""

    def __init__(self, client: mcp.Client) -> None:
        self.client = client
        self._self: PeerRow | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, token: str | None, timeout: float) -> AsyncIterator[EndpointRemote]:
        async with endpoint_client(url, token, timeout) as client:
            yield cls(client)

    async def _listed(self) -> list[mcp_types.Tool]:
        return list((await self.client.list_tools(cache_mode="bypass")).tools)

    async def _rows(self, tool: mcp_types.Tool) -> list[ToolRow]:
        """One row per provider of the tool (as the node's router sees them)."""
        meta = tool.meta or {}
        providers = meta.get(PROVIDERS_META)
        labels = [p for p in providers if isinstance(p, Mapping)] if isinstance(providers, list) else []
        parameters = parameters_from_schema(tool.input_schema)
        rows = []
        for label in labels or [{}]:
            if label.get("kind") == "mcp":
                # An MCP server this node forwards to: the node is the mesh's provider.
                me = await self.itself()
                provider, peer_id = me.name, me.peer_id
            else:
                provider, peer_id = str(label.get("name", "")), str(label.get("peerId", ""))
            rows.append(ToolRow(name=tool.name, mesh_name=mesh_name_of(tool), provider=provider, peer_id=peer_id,
                                description=tool.description or "", parameters=parameters))
        return rows

    async def tools(self) -> list[ToolRow]:
        rows = []
        for tool in await self._listed():
            rows.extend(await self._rows(tool))
        return sorted_tools(rows)

    async def find_tool(self, name: str) -> ToolRow | None:
        listed = await self._listed()
        tool = next((t for t in listed if t.name == name), None) or \
            next((t for t in listed if mesh_name_of(t) == name), None)
        return (await self._rows(tool))[0] if tool is not None else None

    async def call(self, name: str, arguments: dict[str, Any]) -> CallResult:
        try:
            result = await self.client.call_tool(name, arguments)
        except MCPError as exc:  # refused before any tool ran (an unknown tool name)
            return CallResult.failure(exc.message)
        return CallResult(content=[item.model_dump(by_alias=True, exclude_none=True, mode="json")
                                   for item in result.content],
                          is_error=bool(result.is_error), structured_content=result.structured_content)

    async def _read_peers(self) -> tuple[PeerRow, list[PeerRow]]:
        """The peers resource: {"self": this node's card, "peers": [records of the peers it knows]}."""
        result = await self.client.read_resource(PEERS_URI, cache_mode="bypass")
        text = next((c.text for c in result.contents if isinstance(c, mcp_types.TextResourceContents)), "{}")
        data = json.loads(text)
        data = data if isinstance(data, dict) else {}
        me = data.get("self")
        self._self = _peer_row(me if isinstance(me, dict) else {}, is_self=True)
        listed = data.get("peers")
        others = [_peer_row(r) for r in listed if isinstance(r, dict)] if isinstance(listed, list) else []
        return self._self, others

    async def itself(self) -> PeerRow:
        return self._self or (await self._read_peers())[0]

    async def peers(self) -> list[PeerRow]:
        me, others = await self._read_peers()
        return sorted_peers(me, others)


def _peer_row(card: Mapping[str, Any], *, is_self: bool = False) -> PeerRow:
    addrs = card.get("addrs")
    tools = card.get("tools")
    return PeerRow(
        name=str(card.get("name", "")),
        peer_id=str(card.get("peerId", "")),
        addrs=tuple(str(a) for a in addrs) if isinstance(addrs, list) else (),
        tools=tuple(sorted(str(t.get("name", "")) for t in tools if isinstance(t, dict)))
        if isinstance(tools, list) else (),
        is_self=is_self,
    )
