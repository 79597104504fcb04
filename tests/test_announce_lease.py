"""An announcement's lease (issue 13): the publisher says how long its card is kept (`ttl`), and
its period grows with the mesh so that the whole mesh sends about one announcement every
`p2p.announce_seconds_per_peer` seconds.

A raw py-libp2p GossipSub peer publishes to, and listens to, a real node over 127.0.0.1.
"""

from __future__ import annotations

import json

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from protocols.announce import CARDS_TOPIC, MAX_TTL_SECONDS, decode_announcement, encode_announcement
from protocols.errors import PraxisError
from protocols.messages import Card
from tests.helpers import make_node, node_config, wait_until
from tests.raw_peer import raw_host, raw_pubsub, wire_card


def new_peer_id() -> str:
    return ID.from_pubkey(create_new_key_pair().public_key).to_string()


async def test_a_card_is_kept_for_its_announcements_ttl_and_a_ttl_out_of_range_is_refused():
    node = make_node(node_config("n", p2p={"announce_ttl_seconds": 600}))
    async with node.running(), raw_host() as peer:
        announcements = node.announcements
        assert announcements is not None
        peer_id = peer.get_id().to_string()
        async with raw_pubsub(peer, node.host, CARDS_TOPIC) as (pubsub, _):
            short = {"card": wire_card(peer_id, "short"), "seq": 1, "ttl": 2}
            await pubsub.publish(CARDS_TOPIC, json.dumps(short).encode())
            await wait_until(lambda: node.directory.get(peer_id) is not None, node.directory.changed, timeout=10)
            entry = node.directory.get(peer_id)
            assert entry is not None and entry.announced_until - trio.current_time() <= 2
            await peer.disconnect(node.host.get_id())  # no connection holds the card now: only its lease
            # Dropped after its own 2 s, long before the node's 600 s.
            await wait_until(lambda: node.directory.get(peer_id) is None, node.directory.changed, timeout=15)
        async with raw_host() as other, raw_pubsub(other, node.host, CARDS_TOPIC) as (pubsub, _):
            other_id = other.get_id().to_string()
            refused = announcements.refused
            forever = {"card": wire_card(other_id, "forever"), "seq": 1, "ttl": MAX_TTL_SECONDS * 10}
            await pubsub.publish(CARDS_TOPIC, json.dumps(forever).encode())
            await wait_until(lambda: announcements.refused > refused, announcements.dropped, timeout=10)
            assert node.directory.get(other_id) is None


async def test_the_announcement_period_and_lease_grow_with_the_peers_known():
    node = make_node(node_config("n", p2p={"announce_seconds": 2, "announce_ttl_seconds": 10}))
    async with node.running(), raw_host() as peer:
        announcements = node.announcements
        assert announcements is not None
        assert (announcements.period(), announcements.lease()) == (2, 10)
        until = trio.current_time() + 60
        for i in range(5):
            node.directory.update(Card.model_validate(wire_card(new_peer_id(), f"p{i}")), announced_until=until)
        assert (announcements.period(), announcements.lease()) == (5, 25)
        leases = []
        async with raw_pubsub(peer, node.host, CARDS_TOPIC) as (_, subscription):
            with trio.move_on_after(15):  # the node's next announcements (early repeats, then every 5 s)
                while 25 not in leases:  # GossipSub may first hand over older ones (ttl 10) it still caches
                    message = await subscription.get()
                    if ID(message.from_id).to_string() == node.peer_id:
                        leases.append(decode_announcement(message.data, node.peer_id).ttl)
        assert 25 in leases and set(leases) <= {10, 25}


def test_a_ttl_is_clamped_when_encoded():
    peer = new_peer_id()
    parsed = Card.model_validate(wire_card(peer, "short"))
    assert decode_announcement(encode_announcement(parsed, ttl=10 ** 9), peer).ttl == MAX_TTL_SECONDS


@pytest.mark.parametrize("ttl", [0, MAX_TTL_SECONDS + 1, "soon", -5])
def test_a_ttl_out_of_range_is_refused_when_decoded(ttl):
    peer = new_peer_id()
    with pytest.raises(PraxisError):
        decode_announcement(json.dumps({"card": wire_card(peer, "short"), "ttl": ttl}).encode(), peer)


async def test_the_seconds_per_peer_are_configured():
    """`p2p.announce_seconds_per_peer`: a big mesh on a small machine announces less often."""
    p2p = {"announce_seconds": 2, "announce_ttl_seconds": 10, "announce_seconds_per_peer": 3}
    assert await _period_and_lease_knowing_five_peers(p2p) == (15, 75)


async def test_the_period_stays_within_the_longest_lease_an_announcement_may_give():
    """A period whose scaled lease would pass `MAX_TTL_SECONDS` is cut so that the lease fits:
    the lease on the wire is capped there, and a longer period would let receivers drop the card
    between two announcements."""
    # 60 s per peer: 300 s, whose lease (15,000 s) no announcement may give.
    p2p = {"announce_seconds": 2, "announce_ttl_seconds": 100, "announce_seconds_per_peer": 60}
    assert await _period_and_lease_knowing_five_peers(p2p) == (2 * MAX_TTL_SECONDS / 100, MAX_TTL_SECONDS)


async def _period_and_lease_knowing_five_peers(p2p: dict[str, float]) -> tuple[float, float]:
    """A node's announcement period and lease once it holds the cards of five peers."""
    node = make_node(node_config("n", p2p=p2p))
    async with node.running():
        announcements = node.announcements
        assert announcements is not None
        until = trio.current_time() + 60
        for i in range(5):
            node.directory.update(Card.model_validate(wire_card(new_peer_id(), f"p{i}")), announced_until=until)
        return announcements.period(), announcements.lease()


async def _gap_after_the_mesh_grows(p2p: dict[str, float], peers_added: int) -> tuple[float, float]:
    """A node announces every `announce_seconds` (it knows no peer); right after one of its
    announcements, `peers_added` cards land in its directory. Returns the seconds from that
    announcement to the next one, and the lease that announcement gave."""
    node = make_node(node_config("n", p2p=p2p))
    async with node.running(), raw_host() as peer, raw_pubsub(peer, node.host, CARDS_TOPIC) as (_, subscription):

        async def next_from_node() -> tuple[float, float]:
            while True:
                message = await subscription.get()
                if ID(message.from_id).to_string() == node.peer_id:
                    ttl = decode_announcement(message.data, node.peer_id).ttl
                    return trio.current_time(), float(ttl or 0)

        with trio.fail_after(60):  # bounds against a hang, not speed
            for _ in range(5):  # past the early repeats: the node now announces every period
                await next_from_node()
            sent, lease = await next_from_node()
            until = trio.current_time() + 600
            for i in range(peers_added):
                node.directory.update(Card.model_validate(wire_card(new_peer_id(), f"p{i}")), announced_until=until)
            received, _ = await next_from_node()
    return received - sent, lease


async def test_a_period_set_on_a_small_mesh_lengthens_as_the_mesh_grows_within_its_lease():
    """While a mesh starts, directories fill: the period a node set when it knew few peers is read
    again when due (timer reconsideration) rather than kept, so that the start does not flood the
    mesh with announcements timed for a few nodes. It grows only while receivers still keep the
    card: the next announcement leaves them one old period before the last one's lease ends."""
    # Knowing nobody: period 2 s, lease 10 s. Then 30 peers: period 30 s, cut to 10 - 2 = 8 s.
    gap, lease = await _gap_after_the_mesh_grows(
        {"announce_seconds": 2, "announce_ttl_seconds": 10, "announce_seconds_per_peer": 1}, peers_added=30)
    assert lease == 10
    assert 5 <= gap < lease  # 2 s if the period set on the empty directory were kept; 30 s uncapped


async def test_a_newcomer_announces_at_the_period_its_announcers_show():
    """A node's directory fills at the pace of the mesh's announcements, so a period set from it
    alone stays short for minutes after a node joins a big mesh. The leases the node hears show
    the mesh's period at once: with three signers heard it takes their median (one signer's
    extreme lease does not set it), and announces with the matching lease."""
    p2p = {"announce_seconds": 2, "announce_ttl_seconds": 10, "announce_seconds_per_peer": 1}
    node = make_node(node_config("n", p2p=p2p))
    async with node.running(), raw_host() as a, raw_host() as b, raw_host() as c:
        announcements = node.announcements
        assert announcements is not None
        # Leases 100 s and 150 s scale back to periods of 20 s and 30 s here (2 s per 10 s of lease).
        for host, ttl in ((a, 100), (b, MAX_TTL_SECONDS), (c, 150)):
            async with raw_pubsub(host, node.host, CARDS_TOPIC) as (pubsub, _):
                peer_id = host.get_id().to_string()
                message = {"card": wire_card(peer_id, f"p{ttl}"), "seq": 1, "ttl": ttl}
                await pubsub.publish(CARDS_TOPIC, json.dumps(message).encode())
                known = node.directory.changed
                await wait_until(lambda p=peer_id: node.directory.get(p) is not None, known, timeout=10)
            if host is not c:  # two signers: not enough to go by, and their directory of 2 means 2 s
                assert announcements.period() == 2
        assert announcements.heard_period() == 150 * 2 / 10  # the median of 100, 150 and the hostile maximum
        assert (announcements.period(), announcements.lease()) == (30, 150)
