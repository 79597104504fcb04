"""A short-lived node that dials one peer: the `RemoteNode` behind `praxis-node ... --peer`.

Imports libp2p (through `node.app`): `node.cli.remote` imports this module only for `--peer`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from node.app import Node
from node.cli.remote import (
    CallResult,
    PeerRow,
    ToolRow,
    parameters_from_schema,
    sorted_peers,
    sorted_tools,
)
from node.config import parse_config
from node.mesh.host import parse_peer_addr
from protocols.errors import PeerUnreachable, ToolTimeout
from protocols.messages import ToolSpec
from protocols.peers import PeerRecord

LISTING_TIMEOUT = 5.0  # seconds to wait for the peer's peer list when it only completes a listing


def client_node(bootstrap: list[str], name: str = "praxis-cli") -> Node:
    """A node with no tools, no mDNS, a throw-away key, listening on an ephemeral port."""
    config = parse_config(
        {"agent": {"name": name}, "p2p": {"port": 0, "enable_mdns": False, "peer_exchange": False,
                                           "bootstrap_nodes": bootstrap},
         "mcp": {"enabled": False}},
        env={},
    )
    return Node(config, key_pair=create_new_key_pair())


@asynccontextmanager
async def connected_client(peer_addr: str, timeout: float = 10.0) -> AsyncIterator[tuple[Node, str]]:
    """Run a client node until it holds the peer's card; yields (node, peer ID)."""
    target = parse_peer_addr(peer_addr).peer_id.to_string()
    node = client_node([peer_addr])
    async with node.running():
        with trio.move_on_after(timeout):
            while node.directory.get(target) is None:
                await node.directory.changed.wait_past(node.directory.changed.version)
        if node.directory.get(target) is None:
            raise PeerUnreachable(f"no card from {peer_addr} within {timeout:g} s: is the node running?")
        yield node, target


def spec_schema(spec: ToolSpec) -> dict[str, Any]:
    """The tool's input schema, as a node's MCP endpoint lists it: its own, else one from its parameters."""
    if spec.input_schema:
        return dict(spec.input_schema)
    return {"type": "object",
            "properties": {p.name: {"type": p.type, "description": p.description} for p in spec.parameters},
            "required": [p.name for p in spec.parameters if p.required]}


def tool_row(spec: ToolSpec, provider: str, peer_id: str) -> ToolRow:
    return ToolRow(name=spec.name, mesh_name=spec.name, provider=provider, peer_id=peer_id,
                   description=spec.description, parameters=parameters_from_schema(spec_schema(spec)))


class PeerRemote:
    """The peer as its card and its peer list describe it; calls go to it over `/praxis/tool`.

    Its tools are those of its card and of the cards of the peers it lists; the peer serves a
    call or forwards it to a peer that can.
    """

    def __init__(self, node: Node, peer_id: str, timeout: float) -> None:
        self.node = node
        self.peer_id = peer_id
        self.timeout = timeout

    @classmethod
    @asynccontextmanager
    async def open(cls, peer_addr: str, timeout: float) -> AsyncIterator[PeerRemote]:
        async with connected_client(peer_addr, timeout) as (node, peer_id):
            yield cls(node, peer_id, timeout)

    def _own_rows(self) -> list[ToolRow]:
        entry = self.node.directory.get(self.peer_id)
        assert entry is not None  # connected_client waited for the card
        return [tool_row(t, entry.card.name, self.peer_id) for t in entry.card.tools]

    async def _peer_list(self, *, strict: bool) -> list[PeerRecord]:
        """The peers the node lists, without this client. `strict`: a failure raises, else is empty."""
        try:
            # Listing tools goes on without the peers' tools after a short wait, as it always did.
            timeout = self.timeout if strict else min(self.timeout, LISTING_TIMEOUT)
            listed = await self.node.fetch_peer_list(self.peer_id, timeout=timeout)
        except (PeerUnreachable, ToolTimeout):
            if strict:
                raise
            return []
        return [r for r in listed.peers if r.peer_id != self.node.peer_id]

    async def tools(self) -> list[ToolRow]:
        rows = self._own_rows()
        for record in await self._peer_list(strict=False):
            rows.extend(tool_row(t, record.name, record.peer_id) for t in record.tools)
        return sorted_tools(rows)

    async def find_tool(self, name: str) -> ToolRow | None:
        # The peer's own card first: no round trip for its own tools.
        own = next((r for r in self._own_rows() if r.name == name), None)
        return own or next((r for r in await self.tools() if r.name == name), None)

    async def call(self, name: str, arguments: dict[str, Any]) -> CallResult:
        response = await self.node.request_peer(self.peer_id, name, arguments, timeout=self.timeout)
        if response.error is not None:
            return CallResult.failure(response.error.message)
        result = response.result.to_wire()
        return CallResult(content=list(result.get("content", [])), is_error=bool(result.get("isError")),
                          structured_content=result.get("structuredContent"))

    async def peers(self) -> list[PeerRow]:
        entry = self.node.directory.get(self.peer_id)
        assert entry is not None
        me = PeerRow(entry.card.name, self.peer_id, tuple(entry.card.addrs),
                     tuple(sorted(t.name for t in entry.card.tools)), is_self=True)
        others = [PeerRow(r.name, r.peer_id, tuple(r.addrs), tuple(sorted(t.name for t in r.tools)))
                  for r in await self._peer_list(strict=True)]
        return sorted_peers(me, others)
