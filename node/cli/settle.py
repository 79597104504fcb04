"""When the mesh has settled enough for `praxis-node mcp` to answer its first `tools/list`.

A desktop client starts `praxis-node mcp` and asks for the tools at once; tools that arrive
later reach it only as a `tools/list_changed` notification, which some clients ignore. So
stdio mode waits (at most `bound` seconds) until the mesh has *settled*:

1. every bootstrap peer's card has arrived, and
2. for each bootstrap peer, each peer it lists (dialable, not this node, at most `PER_LIST`
   of them) has sent its card: with peer exchange, once dialled; with discovery (the
   default), once one of its tools was found through the DHT.

A listed peer whose dial fails cannot be seen from here (the node keeps no record of failed
dials that a caller can read), so such a peer holds the wait until the bound. A read-only
signal from the node's peer exchange ("done with peer X: its list fetched, each dial it
started connected or failed") would end the wait at once in that case too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from node.mesh.dial_budget import PER_LIST
from node.mesh.host import parse_peer_addr
from protocols.errors import PraxisError
from protocols.peers import PeerRecord

if TYPE_CHECKING:
    from node.app import Node

log = logging.getLogger("praxis.stdio")
LOOKUP_PAUSE = 1.0  # seconds between DHT lookups of a listed peer's tool while settling


async def wait_until_settled(node: Node, bound: float) -> bool:
    """Wait until the mesh has settled (see the module doc), at most `bound` seconds.

    True when it settled, False when the bound passed first (the node serves what it has).
    """
    started = trio.current_time()
    wanted = [parse_peer_addr(a).peer_id.to_string() for a in node.config.p2p.bootstrap_nodes]
    wanted = [p for p in dict.fromkeys(wanted) if p != node.peer_id]
    settled = False
    with trio.move_on_after(bound):
        await _cards(node, wanted)
        if node.config.p2p.peer_exchange or node.lookup is not None:
            async with trio.open_nursery() as nursery:
                for peer_id in wanted:
                    nursery.start_soon(_listed_peers_settled, node, peer_id, bound)
        settled = True
    waited = trio.current_time() - started
    if settled:
        log.info("mesh settled after %.2f s: %d tools", waited, len(node.mesh.tools()))
    else:
        missing = [p for p in wanted if node.directory.get(p) is None]
        log.info("serving after %.1f s without a settled mesh%s", waited,
                 f" (no card yet from {', '.join(missing)})" if missing else "")
    return settled


async def _cards(node: Node, peer_ids: list[str]) -> None:
    """Until every one of these peers' cards has arrived."""
    while any(node.directory.get(p) is None for p in peer_ids):
        await node.directory.changed.wait_past(node.directory.changed.version)


async def _listed_peers_settled(node: Node, peer_id: str, bound: float) -> None:
    """Until the peers that `peer_id` lists (those the node would dial) have sent their cards."""
    try:
        listed = await node.fetch_peer_list(peer_id, timeout=bound)
    except PraxisError:  # no list (a Go node, or the peer left): nothing more to wait for
        return
    records: list[PeerRecord] = []
    for record in listed.peers:
        if len(records) >= PER_LIST:
            break
        if record.peer_id == node.peer_id or node.directory.get(record.peer_id) is not None:
            continue
        if any(_names(addr, record.peer_id) for addr in record.addrs):
            records.append(record)
    if not node.config.p2p.peer_exchange:
        # Discovery without peer exchange: listed peers are not dialled, and their cards may
        # reach this node only with their next announcement; find their tools in the DHT.
        await _found_through_the_dht(node, [r for r in records if r.tools])
        return
    await _cards(node, [r.peer_id for r in records])


async def _found_through_the_dht(node: Node, records: list[PeerRecord]) -> None:
    """Until each of these peers' cards is known, looking one of its tools up now and then."""
    assert node.lookup is not None
    while missing := [r for r in records if node.directory.get(r.peer_id) is None]:
        version = node.directory.changed.version
        async with trio.open_nursery() as nursery:
            for record in missing:
                nursery.start_soon(node.lookup.find, record.tools[0].name, trio.current_time() + LOOKUP_PAUSE)
        # A record not in the DHT yet: ask again soon, once the lookup's memory of "found
        # nowhere" has run out (asking before that returns at once and finds nothing).
        pause = max(LOOKUP_PAUSE, min(node.lookup.retry_in(r.tools[0].name) for r in missing))
        with trio.move_on_after(pause):
            await node.directory.changed.wait_past(version)


def _names(addr: str, peer_id: str) -> bool:
    """Whether `addr` is a peer address of `peer_id` (one the node could dial)."""
    try:
        return parse_peer_addr(addr).peer_id.to_string() == peer_id
    except ValueError:
        return False
