"""A short-lived node that dials one peer: what `praxis-node call|tools|peers --peer` use."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from node.app import Node
from node.config import parse_config
from node.mesh.host import parse_peer_addr
from protocols.errors import PeerUnreachable, ToolTimeout
from protocols.messages import ToolSpec


@dataclass
class MeshToolInfo:
    name: str
    provider: str  # node name
    peer_id: str
    description: str = ""


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


def param_types(spec: ToolSpec | None) -> dict[str, str]:
    return {p.name: p.type for p in spec.parameters} if spec else {}


def parse_cli_arguments(pairs: list[str], types: Mapping[str, str]) -> dict[str, Any]:
    """`key=value` pairs; values are JSON unless the tool declares the parameter a string."""
    arguments: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"argument {pair!r} is not key=value")
        if types.get(key) == "string":
            arguments[key] = raw
            continue
        try:
            arguments[key] = json.loads(raw)
        except ValueError:
            arguments[key] = raw
    return arguments


async def find_spec(node: Node, peer_id: str, tool: str) -> ToolSpec | None:
    """The tool's spec from the peer's card, else from the peers it knows."""
    entry = node.directory.get(peer_id)
    spec = next((t for t in entry.card.tools if t.name == tool), None) if entry else None
    if spec is not None:
        return spec
    try:
        peers = await node.fetch_peer_list(peer_id)
    except (PeerUnreachable, ToolTimeout):
        return None
    return next((t for r in peers.peers for t in r.tools if t.name == tool), None)


async def mesh_tools(node: Node, peer_id: str) -> list[MeshToolInfo]:
    """Every tool the peer knows: its own and its peers' (as its peer list reports them)."""
    entry = node.directory.get(peer_id)
    assert entry is not None
    tools = [MeshToolInfo(t.name, entry.card.name, peer_id, t.description) for t in entry.card.tools]
    try:
        peers = await node.fetch_peer_list(peer_id)
    except (PeerUnreachable, ToolTimeout):
        return tools
    for record in peers.peers:
        if record.peer_id == node.peer_id:
            continue
        tools.extend(MeshToolInfo(t.name, record.name, record.peer_id, t.description) for t in record.tools)
    return sorted(tools, key=lambda t: (t.name, t.provider))
