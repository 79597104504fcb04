"""Tool discovery through py-libp2p's Kademlia DHT (`libp2p.kad_dht`, protocol `/ipfs/kad/1.0.0`).

Every node runs the DHT in server mode. For each tool it serves (its own and its shared MCP
servers') it announces a provider record under `tool_key(name)`: `/praxis-tool/` and the
SHA-256 of the name, as a multihash (see `tool_key`). Records are re-announced
every `p2p.provide_refresh_seconds` and expire `p2p.provider_ttl_seconds` after they were
stored (py-libp2p's 22 h / 48 h would offer a node that left for two days).

A node looks a tool up when a call names a tool it does not know (the router asks
`find_providers`), then fetches the providers' cards over `/praxis/card/1.0.0`.

Bounds around the library's handlers: values are refused in every namespace (this mesh stores
only provider records; `strict_validation` with a validator that refuses everything), the
provider store holds at most `MAX_PROVIDER_KEYS` keys (py-libp2p caps providers per key at 20
and ADD_PROVIDER messages at 10 per peer per 10 s, and its inbound handlers at 12), and every
lookup has a deadline.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.common import PROTOCOL_ID
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.records.validator import NamespacedValidator, Validator

from node.mesh.activity import MeshActivity
from node.mesh.libp2p_patches import bound_provider_store, narrow_dht_walks
from node.mesh.stream_guard import guarded
from node.runtime.signals import ChangeSignal

log = logging.getLogger("praxis.dht")

TOOL_NAMESPACE = "praxis-tool"
MAX_PROVIDER_KEYS = 4096  # distinct keys this node stores provider records for
LOOKUP_PROVIDERS = 8  # providers one lookup returns at most
WALK_WIDTH = 6  # peers a provider record is stored on, and a walk seeks (py-libp2p: k = 20)
REPROVIDE_FROM = 8  # routing-table size from which each doubling provides again


def tool_key(name: str) -> str:
    """The DHT key of a tool name: a SHA2-256 multihash (hex) of `/praxis-tool/<name>`.

    Namespaced by the prefix inside the hash, fixed length whatever the name, and a valid
    multihash: py-libp2p's FIND_NODE handler refuses longer keys that are not one, which made
    provider walks stop at the first hop with a textual key.
    """
    digest = hashlib.sha256(f"/{TOOL_NAMESPACE}/{name}".encode()).digest()
    return (bytes([0x12, 0x20]) + digest).hex()


class _NoValues(Validator):
    """This mesh stores no values in the DHT: every PUT_VALUE is refused."""

    def validate(self, key: str, value: bytes) -> None:
        raise ValueError("this DHT stores no values")

    def select(self, key: str, values: list[bytes]) -> int:
        return 0


class ToolDht:
    def __init__(
        self,
        host: IHost,
        tool_names: Callable[[], list[str]],
        own_card_changed: ChangeSignal,
        *,
        refresh: float,
        ttl: float,
        activity: MeshActivity,
    ) -> None:
        self.host = host
        self.tool_names = tool_names
        self.own_card_changed = own_card_changed
        self.refresh = refresh
        self.ttl = ttl
        self.activity = activity
        validator = NamespacedValidator({TOOL_NAMESPACE: _NoValues()}, strict_validation=True)
        self.dht = KadDHT(host, DHTMode.SERVER, validator=validator, validator_changed=True,
                          strict_validation=True)
        narrow_dht_walks(self.dht.peer_routing, WALK_WIDTH)
        host.set_stream_handler(PROTOCOL_ID, guarded("dht", self.dht.handle_stream))
        self.records_changed = ChangeSignal()  # a provider record was stored here
        self.table_changed = ChangeSignal()  # a connected peer joined the routing table
        bound_provider_store(self.dht.provider_store, ttl=ttl, max_keys=MAX_PROVIDER_KEYS,
                             added=self.records_changed.bump)
        self.provided: set[str] = set()
        self._provide_at_size = 1  # routing-table size at which this node provides again
        self._kick = ChangeSignal()  # provide again soon

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep this node's provider records fresh until cancelled (the DHT service runs beside)."""
        from libp2p.tools.anyio_service import background_trio_service

        async with background_trio_service(self.dht), trio.open_nursery() as nursery:
            task_status.started()
            self._kick.follow(self.own_card_changed)
            nursery.start_soon(self._provide_when_kicked)

    async def _provide_when_kicked(self) -> None:
        """Provide now, again every `refresh` seconds, and whenever our tools change or the
        routing table is still filling (a provider record is only as good as the peers holding it)."""
        seen = self._kick.version
        while True:
            await self.provide_all()
            with trio.move_on_after(self.refresh):
                seen = await self._kick.wait_past(seen)

    async def provide_all(self) -> None:
        names = sorted(set(self.tool_names()))
        for name in names:
            self.activity.dht_walks["provide"] += 1
            try:
                with trio.move_on_after(self.refresh):
                    await self.dht.provide(tool_key(name))
            except Exception as exc:  # a failed announcement: the next refresh tries again
                log.debug("provide %s failed: %s", name, type(exc).__name__)
        gone = self.provided - set(names)
        for name in gone:  # stop re-announcing it; its records expire after the TTL
            self.dht.provider_store.providing_keys.discard(bytes.fromhex(tool_key(name)))
        self.provided = set(names)

    async def add_peer(self, peer_id: str) -> None:
        """A connected peer may serve the DHT: let the routing table consider it."""
        try:
            added = await self.dht.add_peer(ID.from_base58(peer_id))
        except Exception as exc:  # a peer without a usable address: not in the table
            log.debug("routing table: %s not added: %s", peer_id, type(exc).__name__)
            return
        if added:
            self.table_changed.bump()
        size = self.dht.routing_table.size()
        if added and size >= self._provide_at_size:
            # First peer, then from REPROVIDE_FROM on each doubling: the mesh grew, and the
            # WALK_WIDTH peers closest to our keys may be new ones (records stored while the mesh
            # was small were missed by later lookups). A provide on every growth kept 30 nodes
            # starting together churning connections.
            self._provide_at_size = max(REPROVIDE_FROM, 2 * size)
            self._kick.bump()

    async def find_providers(self, name: str, deadline: float) -> list[str]:
        """Peers other than this node with a live provider record for `name`, within the deadline."""
        own = self.host.get_id()
        found: list[str] = []
        key = tool_key(name)
        self.activity.dht_walks["lookup"] += 1
        with trio.move_on_at(deadline):
            # Asked for one provider, the library stops after the first batch of peers that
            # knew any (asked for more than a key has, it walks on through every closer peer
            # it hears of: the whole mesh); the rest of what that batch knew went to the local
            # store (unless the store is full: then the one provider returned is all we have).
            first = await self.dht.find_providers(key, 1)
            infos = [*first, *self.dht.provider_store.get_providers(bytes.fromhex(key))][:LOOKUP_PROVIDERS]
            for info in infos:
                if info.peer_id != own and info.peer_id.to_string() not in found:
                    if info.addrs:
                        self.host.get_peerstore().add_addrs(info.peer_id, info.addrs[:4], int(self.ttl))
                    found.append(info.peer_id.to_string())
        return found

    def holds_record(self, name: str, provider: str) -> bool:
        """Does this node store a live provider record of `provider` for tool `name`?"""
        infos = self.dht.provider_store.get_providers(bytes.fromhex(tool_key(name)))
        return any(info.peer_id.to_string() == provider for info in infos)

    def routing_peers(self) -> list[str]:
        return [p.to_string() for p in self.dht.routing_table.get_peer_ids()]
