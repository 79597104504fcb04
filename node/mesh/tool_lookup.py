"""Finding a tool this node does not know yet: ask the DHT for its providers, fetch their cards
over `/praxis/card/1.0.0` (a short-lived connection each), and keep those cards as announced
for `ttl` seconds, so the router can route the call and listings show the tool.

Bounded: one lookup per name at a time (later callers wait for it), a name found nowhere is not
looked up again for `NEGATIVE_SECONDS`, at most `LOOKUPS_PER_MINUTE` lookups a minute, at most
`CARDS_PER_LOOKUP` cards fetched per lookup; everything within the caller's deadline.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

import trio

from node.mesh.directory import PeerDirectory
from node.mesh.links import PeerLinks
from node.mesh.tool_dht import ToolDht
from node.runtime.rate import RateWindow
from protocols.card import CARD_PROTOCOL, exchange_cards
from protocols.errors import PraxisError
from protocols.messages import Card
from protocols.streams import WireLimits, closing_stream

log = logging.getLogger("praxis.lookup")

# A lookup is a DHT walk and GET_PROVIDERS to the peers it finds (tool_dht.WALK_WIDTH), each a
# dial when not connected. With walks of 20 peers, 120 lookups a minute per node kept both cores
# of 40 node processes busy; with walks of 6 they do not, and a newcomer whose client calls
# every tool of a 40-node mesh (most not announced to it yet) needs about that many.
NEGATIVE_SECONDS = 5.0
LOOKUPS_PER_MINUTE = 120
CARDS_PER_LOOKUP = 3
MAX_NEGATIVE = 1024


class ToolLookup:
    def __init__(
        self, dht: ToolDht, links: PeerLinks, directory: PeerDirectory, card: Callable[[], Card],
        limits: WireLimits, *, ttl: float,
    ) -> None:
        self.dht = dht
        self.links = links
        self.directory = directory
        self.card = card
        self.limits = limits
        self.ttl = ttl
        self.rate = RateWindow(LOOKUPS_PER_MINUTE)
        self._running: dict[str, trio.Event] = {}
        self._not_found: dict[str, float] = {}
        self.lookups = 0  # DHT lookups started (for tests and figures)

    async def find(self, name: str, deadline: float) -> bool:
        """Look `name` up; True when at least one provider's card listing it is now known."""
        now = trio.current_time()
        if self._not_found.get(name, -1.0) > now:
            return False
        running = self._running.get(name)
        if running is not None:
            with trio.move_on_at(deadline):
                await running.wait()
            return self._known(name)
        if not self.rate.try_take("lookups"):
            log.info("tool lookups over %d a minute: %s not looked up", LOOKUPS_PER_MINUTE, name[:128])
            return False
        done = self._running[name] = trio.Event()
        try:
            self.lookups += 1
            async with trio.open_nursery() as race:  # whichever tells first ends the other
                race.start_soon(_then_cancel, race.cancel_scope, functools.partial(self._from_dht, name, deadline))
                race.start_soon(_then_cancel, race.cancel_scope, functools.partial(self._announced, name))
        finally:
            del self._running[name]
            done.set()
        found = self._known(name)
        if not found:
            if len(self._not_found) >= MAX_NEGATIVE:
                self._not_found.clear()
            self._not_found[name] = trio.current_time() + NEGATIVE_SECONDS
        return found

    def retry_in(self, name: str) -> float:
        """Seconds until `name` may be looked up again after it was found nowhere (0: now)."""
        return max(0.0, self._not_found.get(name, 0.0) - trio.current_time())

    async def _from_dht(self, name: str, deadline: float) -> None:
        providers = await self.dht.find_providers(name, deadline)
        async with trio.open_nursery() as nursery:
            for peer_id in providers[:CARDS_PER_LOOKUP]:
                nursery.start_soon(self._fetch_card, peer_id, deadline)

    async def _announced(self, name: str) -> None:
        """Until an announcement (or another lookup) makes the directory list `name`: a newcomer's
        announcement reaches the mesh in a fraction of the DHT walk that looks for its tool."""
        seen = self.directory.changed.version
        while not self._known(name):
            seen = await self.directory.changed.wait_past(seen)

    def _known(self, name: str) -> bool:
        return self.directory.offers(name)

    async def _fetch_card(self, peer_id: str, deadline: float) -> None:
        limit = min(deadline, trio.current_time() + self.limits.idle_timeout)
        try:
            stream = await self.links.open_stream(peer_id, CARD_PROTOCOL, limit)
            async with closing_stream(stream):
                card = await exchange_cards(stream, self.card(), peer_id, self.limits, limit)
        except PraxisError as exc:
            log.info("no card from provider %s: %s", peer_id, exc.message)
            return
        self.directory.update(card, announced_until=trio.current_time() + self.ttl)


async def _then_cancel(scope: trio.CancelScope, run: Callable[[], Awaitable[None]]) -> None:
    await run()
    scope.cancel()
