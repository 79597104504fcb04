"""`/praxis/card/1.0.0` for one node: exchange cards with every peer, keep the directory current.

Cards are exchanged on every new connection (whichever side dialled), again whenever this node's own
tools change, and periodically (`p2p.card_refresh_seconds`); on a new connection and periodically,
not with a peer whose card an announcement holds (with discovery most connections are short DHT
ones: an exchange on each cost about a third of their streams). The periodic refresh also leaves out
a peer whose card is held and whose announcements reach this node (`announces`: on the cards topic,
with a GossipSub mesh here): its changes come announced, and pushed. (Announcements of a big mesh
come minutes apart, so most connected peers' cards were held by no running one: 200 packed nodes
with `announce_seconds_per_peer` 4 exchanged 82 cards a second at rest; 4.9 with this.) A peer may
start at most `limits.max_card_pushes_per_minute` exchanges a minute; past that its card streams are
reset unread. A card is stored only while its peer is still connected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio
from libp2p.abc import INetStream

from node.config import NodeConfig
from node.mesh.activity import MeshActivity
from node.mesh.directory import PeerDirectory
from node.mesh.links import PeerLinks
from node.runtime.rate import RateWindow
from node.runtime.signals import ChangeSignal
from node.runtime.tasks import start_isolated
from protocols.card import CARD_PROTOCOL, exchange_cards
from protocols.errors import PeerUnreachable, PraxisError, ToolTimeout
from protocols.messages import Card, ToolSpec
from protocols.streams import WireLimits, closing_stream, end_stream

log = logging.getLogger("praxis.node")

CAPABILITIES = ["tools", "mcp"]


def own_card(config: NodeConfig, peer_id: str, specs: list[ToolSpec], addrs: list[str]) -> Card:
    """This node's card: its name, its tools (local and shared MCP servers'), where it listens."""
    return Card(name=config.agent.name, version=config.agent.version, peer_id=peer_id,
                capabilities=list(CAPABILITIES), tools=specs, addrs=addrs)


class CardExchange:
    def __init__(
        self,
        links: PeerLinks,
        directory: PeerDirectory,
        card: Callable[[], Card],
        limits: WireLimits,
        *,
        pushes_per_minute: int,
        refresh_seconds: float,
        own_card_changed: ChangeSignal,
        new_peer: Callable[[str], None],
        activity: MeshActivity,
        announces: Callable[[str], bool],
    ) -> None:
        self.links = links
        self.directory = directory
        self.card = card
        self.limits = limits
        self.refresh_seconds = refresh_seconds
        self.own_card_changed = own_card_changed
        self.new_peer = new_peer  # called once for each peer whose first card was stored
        self.activity = activity
        self.announces = announces  # do this peer's announcements reach this node (GossipSub)?
        self.exchanged = ChangeSignal()  # bumped after each exchange, whoever started it
        self.pushes = RateWindow(pushes_per_minute)
        self._push_refused: set[str] = set()  # peers told once that their pushes are refused
        self._exchanging: set[str] = set()
        self._again: set[str] = set()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Refresh cards periodically and push ours when it changes, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._refresh_periodically)
            nursery.start_soon(self._push_on_change)
            task_status.started()

    async def serve_card_stream(self, stream: INetStream) -> None:
        """An exchange a peer started: its card for ours."""
        peer_id = stream.muxed_conn.peer_id.to_string()
        if not self.pushes.try_take(peer_id):
            # A peer re-pushing its card over and over costs parsing and listing on every push.
            if peer_id not in self._push_refused:
                self._push_refused.add(peer_id)
                log.info("peer %s pushes its card more than %d times a minute; pushes refused for now",
                         peer_id, self.pushes.limit)
            await end_stream(stream, ok=False)
            return
        self._push_refused.discard(peer_id)
        self.activity.card_exchanges["peer"] += 1
        await self._exchange_on(stream, peer_id, trio.current_time() + self.limits.idle_timeout)

    def request_exchange(self, peer_id: str, *, unless_announced: bool = False) -> None:
        """Exchange cards with a peer soon; at most one exchange per peer at a time. With
        `unless_announced`, not when the peer's card is held from a running announcement."""
        if self._nursery is None or (unless_announced and self.directory.announced(peer_id)):
            return
        if peer_id in self._exchanging:
            self._again.add(peer_id)
            return
        self._exchanging.add(peer_id)
        start_isolated(self._nursery, f"card exchange with {peer_id}", self._exchange_with, peer_id)

    def exchange_with_all(self) -> None:
        for peer_id in self.links.connected_peers():
            self.request_exchange(peer_id)

    def forget(self, peer_id: str) -> None:
        """The peer left: drop its push budget."""
        self.pushes.forget(peer_id)
        self._push_refused.discard(peer_id)

    async def _exchange_with(self, peer_id: str) -> None:
        try:
            while True:
                self._again.discard(peer_id)
                await self._exchange_once(peer_id)
                if peer_id not in self._again:
                    return
        finally:
            self._exchanging.discard(peer_id)

    async def _exchange_once(self, peer_id: str) -> None:
        deadline = trio.current_time() + self.limits.idle_timeout
        self.activity.card_exchanges["this_node"] += 1
        try:
            stream = await self.links.open_stream(peer_id, CARD_PROTOCOL, deadline)
        except PraxisError as exc:
            log.info("no card exchange with %s: %s", peer_id, exc.message)
            return
        await self._exchange_on(stream, peer_id, deadline)

    async def _exchange_on(self, stream: INetStream, peer_id: str, deadline: float) -> None:
        """One card exchange on an open stream (either side); stores the peer's card."""
        try:
            async with closing_stream(stream):
                card = await exchange_cards(stream, self.card(), peer_id, self.limits, deadline)
        except PraxisError as exc:
            # A refused (lying or malformed) card is worth a warning; a peer leaving mid-exchange is not.
            level = logging.INFO if isinstance(exc, PeerUnreachable | ToolTimeout) else logging.WARNING
            log.log(level, "card exchange with %s failed: %s", peer_id, exc.message)
            return
        self._store(card)
        self.exchanged.bump()

    def _store(self, card: Card) -> None:
        if not self.links.is_connected(card.peer_id):
            return  # the peer left while its card was in flight
        is_new = self.directory.get(card.peer_id) is None
        if self.directory.update(card):
            log.info("peer %s (%s) offers %d tool(s): %s", card.name, card.peer_id, len(card.tools),
                     ", ".join(sorted(t.name for t in card.tools)) or "-")
        if is_new:
            self.new_peer(card.peer_id)

    async def _push_on_change(self) -> None:
        seen = self.own_card_changed.version
        while True:
            seen = await self.own_card_changed.wait_past(seen)
            self.exchange_with_all()

    async def _refresh_periodically(self) -> None:
        while True:
            await trio.sleep(self.refresh_seconds)
            for peer_id in self.links.connected_peers():
                if self.directory.get(peer_id) is None or not self.announces(peer_id):
                    self.request_exchange(peer_id, unless_announced=True)
