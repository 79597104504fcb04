"""The mesh's upkeep on `/metrics` (node/mesh/activity.py): connections opened and closed (and
why), dials to stay connected, card exchanges and announcements, counted by real nodes over
127.0.0.1 as they do the work, and the GossipSub mesh announcements go to. (DHT walks:
tests/test_discovery.py, where a lookup is made.)"""

from __future__ import annotations

import socket
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from node.app import Node
from node.mesh.libp2p_patches import on_mesh_peer_added
from node.runtime.signals import ChangeSignal
from protocols.announce import CARDS_TOPIC
from tests.helpers import ECHO_PARAMS, counter, node_config, py_tool, sample, wait_until


def discovering(name: str, tools: list[dict[str, Any]] | None = None, bootstrap: list[str] | None = None,
                **p2p: Any) -> Node:
    return Node(node_config(name, tools, bootstrap, p2p={"peer_exchange": False, **p2p}),
                key_pair=create_new_key_pair())


def nobody_listening() -> str:
    """The address of a peer that does not exist: a port just closed on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"/ip4/127.0.0.1/tcp/{port}/p2p/{ID.from_pubkey(create_new_key_pair().public_key)}"


async def test_metrics_count_connections_dials_and_why_connections_closed() -> None:
    async with AsyncExitStack() as stack:
        a = discovering("a", [py_tool("a_echo", "echo", ECHO_PARAMS)], min_peers=0)
        await stack.enter_async_context(a.running())
        b = discovering("b", bootstrap=[a.addrs[0], nobody_listening()], min_peers=0)
        await stack.enter_async_context(b.running())
        await wait_until(lambda: a.peer_id in b.connected_peers(), b.connections)
        await wait_until(lambda: len(b.dialer.tried) == 2, b.dialer.tried_changed)
        assert counter(b, "praxis_peer_dials", outcome="ok") == 1
        assert counter(b, "praxis_peer_dials", outcome="failed") >= 1  # the bootstrap peer nobody runs
        assert counter(b, "praxis_connections_opened", direction="outbound") >= 1
        assert counter(a, "praxis_connections_opened", direction="inbound") >= 1
        assert counter(a, "praxis_connections_closed", reason="pruned") == 0
        assert a.announcements is not None and b.announcements is not None
        heard = b.announcements.heard
        await wait_until(lambda: heard.version >= 1, heard, timeout=15)  # A's card, announced
        assert counter(b, "praxis_announcements", event="applied") == heard.version
        assert counter(a, "praxis_announcements", event="published") >= 1
        assert counter(b, "praxis_announcements", event="dropped") == 0

        # A prunes B for its bound: a prune on both sides, whoever closed.
        await a.keeper.prune(b.peer_id)
        await wait_until(lambda: counter(a, "praxis_connections_closed", reason="pruned") == 1, a.connections)
        await wait_until(lambda: counter(b, "praxis_connections_closed", reason="pruned") == 1, b.connections)
        assert counter(a, "praxis_connections_closed", reason="other") == 0

        # C connects and stops: to A, a connection closed for another reason than a bound.
        async with AsyncExitStack() as c_running:
            c = discovering("c", bootstrap=[a.addrs[0]], min_peers=0)
            await c_running.enter_async_context(c.running())
            await wait_until(lambda: c.peer_id in a.connected_peers(), a.connections)
        await wait_until(lambda: counter(a, "praxis_connections_closed", reason="other") >= 1, a.connections)
        assert counter(a, "praxis_connections_closed", reason="pruned") == 1


async def test_metrics_count_card_exchanges() -> None:
    """D announces nothing (discovery off), so A fetches its card over their connection."""
    async with AsyncExitStack() as stack:
        a = discovering("a", min_peers=0)
        await stack.enter_async_context(a.running())
        d = discovering("d", [py_tool("d_echo", "echo", ECHO_PARAMS)], bootstrap=[a.addrs[0]], discovery=False)
        await stack.enter_async_context(d.running())
        await wait_until(lambda: "d_echo" in a.router.tools(), a.directory.changed)
        assert counter(a, "praxis_card_exchanges", started_by="this_node") + counter(
            a, "praxis_card_exchanges", started_by="peer") >= 1
        assert counter(d, "praxis_card_exchanges", started_by="this_node") + counter(
            d, "praxis_card_exchanges", started_by="peer") >= 1


async def test_metrics_show_the_gossipsub_mesh_announcements_go_to() -> None:
    async with AsyncExitStack() as stack:
        a = discovering("a", min_peers=0)
        await stack.enter_async_context(a.running())
        assert sample(a, "praxis_gossip_mesh_peers") == 0  # alone: its announcements reach nobody
        b = discovering("b", bootstrap=[a.addrs[0]], min_peers=0)
        await stack.enter_async_context(b.running())
        assert b.announcements is not None
        grafted = ChangeSignal()  # a graft before this hook is seen by the first check
        on_mesh_peer_added(b.announcements.router, lambda peer, topic: grafted.bump())
        await wait_until(lambda: sample(b, "praxis_gossip_mesh_peers") == 1, grafted, timeout=15)
        d = discovering("d", discovery=False)
        await stack.enter_async_context(d.running())
        with pytest.raises(KeyError):  # no GossipSub without discovery: no such gauge
            sample(d, "praxis_gossip_mesh_peers")


async def test_the_periodic_card_refresh_leaves_out_peers_that_announce_over_gossipsub() -> None:
    """A refreshes cards every second. D announces nothing (discovery off): A fetches its card
    again at every refresh. B is on the cards topic, so its changes reach A announced (and
    pushed): A leaves it out, although no running announcement holds B's card (its lease is half
    a second, and B announces hourly)."""
    async with AsyncExitStack() as stack:
        a = discovering("a", min_peers=0, card_refresh_seconds=1)
        await stack.enter_async_context(a.running())
        b = discovering("b", bootstrap=[a.addrs[0]], min_peers=0, announce_seconds=3600, announce_ttl_seconds=0.5)
        await stack.enter_async_context(b.running())
        d = discovering("d", bootstrap=[a.addrs[0]], discovery=False)
        await stack.enter_async_context(d.running())
        assert a.announcements is not None
        await wait_until(lambda: a.directory.get(b.peer_id) is not None and a.directory.get(d.peer_id) is not None,
                         a.directory.changed, timeout=15)
        with trio.fail_after(15):  # B's subscription reaches A, B's half-second lease runs out
            while not a.announcements.reach_here(b.peer_id) or a.directory.announced(b.peer_id):
                await trio.sleep(0.1)  # neither has a signal to wait on; bounded above
        refreshed_b = counter(b, "praxis_card_exchanges", started_by="peer")
        refreshed_d = counter(d, "praxis_card_exchanges", started_by="peer")
        await wait_until(lambda: counter(d, "praxis_card_exchanges", started_by="peer") >= refreshed_d + 2,
                         d.cards.exchanged, timeout=15)  # two of A's refreshes since
        assert counter(b, "praxis_card_exchanges", started_by="peer") == refreshed_b
        # With no GossipSub mesh peer no announcement reaches A, so B is no longer left out.
        a.announcements.router.mesh[CARDS_TOPIC].clear()  # as if the heartbeat had pruned them all
        assert not a.announcements.reach_here(b.peer_id)
