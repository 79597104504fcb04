"""`/praxis/peers/1.0.0` for one node: tell peers whom it knows, and grow the mesh from what
they tell it, within budgets.

A peer list is the sender's word, not proven: a dial only succeeds where Noise proves the
listed peer ID, one IP/TCP address is tried per listed peer (never a DNS name), and every
dial is budgeted (node/mesh/dial_budget.py), so no list can aim this node's dials at will.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.peer.peerinfo import PeerInfo

from node.mesh.dial_budget import PER_LIST, DialBudget
from node.mesh.dialer import Dialer
from node.mesh.directory import PeerDirectory
from node.mesh.host import parse_peer_addr
from node.mesh.links import PeerLinks
from node.runtime.tasks import start_isolated
from node.tools.local import json_size
from protocols.errors import InvalidRequest, PraxisError, TooLarge
from protocols.peers import MAX_PEERS_LISTED, PeerList, PeerRecord, send_peer_list
from protocols.streams import WireLimits, closing_stream

log = logging.getLogger("praxis.node")

PEER_LIST_TOOL_BYTES = 2 * 1024 * 1024  # tools listed in one peer list, as JSON


class PeerExchange:
    def __init__(
        self,
        links: PeerLinks,
        dialer: Dialer,
        directory: PeerDirectory,
        own_peer_id: str,
        limits: WireLimits,
        *,
        enabled: bool,
    ) -> None:
        self.links = links
        self.dialer = dialer
        self.directory = directory
        self.own_peer_id = own_peer_id
        self.limits = limits
        self.enabled = enabled  # p2p.peer_exchange: ask new peers whom they know
        self.budget = DialBudget()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Own the discovery tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def peer_list(self) -> PeerList:
        """The peers this node knows, as many as one list may hold.

        Tools are listed while the list stays under `PEER_LIST_TOOL_BYTES`; past that, peers
        are listed without them, so the frame stays far below any reader's limit.
        """
        records: list[PeerRecord] = []
        budget = PEER_LIST_TOOL_BYTES
        for entry in self.directory.peers():
            if len(records) == MAX_PEERS_LISTED:
                break
            tools = list(entry.card.tools)
            size = json_size([t.to_wire() for t in tools])
            if size > budget:
                tools = []
            budget -= size if tools else 0
            try:
                records.append(PeerRecord(peer_id=entry.peer_id, name=entry.card.name, addrs=entry.card.addrs,
                                          tools=tools))
            except ValueError:  # pydantic's ValidationError: not listable; skip it, serve the rest
                continue
        return PeerList(peers=records)

    async def serve_peers_stream(self, stream: INetStream) -> None:
        deadline = trio.current_time() + self.limits.idle_timeout
        try:
            async with closing_stream(stream):
                await send_peer_list(stream, self.peer_list(), self.limits, deadline)
        except PraxisError as exc:
            log.info("peer list not sent: %s", exc.message)

    def discover_through(self, peer_id: str) -> None:
        """Soon: ask a new peer whom it knows, and dial some of those (see the module doc)."""
        if self.enabled and self._nursery is not None:
            start_isolated(self._nursery, f"peer exchange with {peer_id}", self._discover_through, peer_id)

    async def _discover_through(self, peer_id: str) -> None:
        try:
            peers = await self.links.fetch_peer_list(peer_id, timeout=self.limits.idle_timeout)
        except (InvalidRequest, TooLarge) as exc:  # a malformed or hostile list: nothing of it is used
            log.info("peer list from %s refused: %s", peer_id, exc.message)
            return
        except PraxisError as exc:  # e.g. a Go node without the extension: cards still work
            log.debug("no peer list from %s: %s", peer_id, exc.message)
            return
        assert self._nursery is not None
        dials = 0
        for record in peers.peers:
            if dials >= PER_LIST:
                break
            if record.peer_id == self.own_peer_id or self.links.is_connected(record.peer_id):
                continue
            info = _dialable(record)
            if info is None:
                continue
            host, port = _host_port(info)
            if not self.budget.allow(peer_id, host, port):
                log.debug("peer list from %s: dial budget spent; %s not dialled", peer_id, record.peer_id)
                continue
            dials += 1
            start_isolated(self._nursery, f"dialling {record.peer_id}", self.dialer.dial, info)


def _dialable(record: PeerRecord) -> PeerInfo | None:
    """The first of the record's addresses that is an IP and TCP address naming the record's
    peer (never a DNS name: a list must not make this node resolve names a peer chose)."""
    for addr in record.addrs:
        try:
            info = parse_peer_addr(addr)
        except ValueError:
            continue
        if info.peer_id.to_string() == record.peer_id and len(info.addrs) == 1 and all(_host_port(info)):
            return info
    return None


def _host_port(info: PeerInfo) -> tuple[str, str]:
    addr = info.addrs[0]
    host = ""
    for proto in ("ip4", "ip6"):
        try:
            host = addr.value_for_protocol(proto) or ""
        except Exception:  # multiaddr raises when the protocol is absent
            continue
        if host:
            break
    try:
        port = addr.value_for_protocol("tcp") or ""
    except Exception:  # not a TCP address
        port = ""
    return str(host), str(port)
