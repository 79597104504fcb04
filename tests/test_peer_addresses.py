"""How long the peerstore keeps where a peer can be dialled: an add never cuts short what an
earlier one gave (node.mesh.libp2p_patches.addresses_keep_their_longest_lifetime).

py-libp2p keeps one expiry per peer, from `time.time()` in whole seconds; the tests move that
clock forward instead of waiting for it.
"""

from __future__ import annotations

import time

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerstore import PeerStoreError
from multiaddr import Multiaddr

from node.config import LimitsSection, P2PSection
from node.mesh.host import build_host
from node.mesh.peer_addresses import remember_card_addrs
from protocols.messages import Card
from tests.raw_peer import bare_host

LISTEN = Multiaddr("/ip4/127.0.0.1/tcp/4001")
IDENTIFY_TTL = 7200  # what py-libp2p's identify gives a connected peer's listen addresses


def _peer() -> ID:
    return ID.from_pubkey(create_new_key_pair().public_key)


def _card(peer: ID) -> Card:
    return Card(name="far", peer_id=peer.to_string(), addrs=[f"{LISTEN}/p2p/{peer}"])


def _clock_moved(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + seconds)


def test_a_card_stored_after_identify_leaves_the_addresses_their_lifetime(monkeypatch):
    host = build_host(create_new_key_pair(), P2PSection(enable_mdns=False), LimitsSection())
    peer, store = _peer(), host.get_peerstore()
    store.add_addr(peer, LISTEN, IDENTIFY_TTL)
    assert remember_card_addrs(host, _card(peer), ttl=30) == 1
    _clock_moved(monkeypatch, 600)  # past the card's 30 s, within identify's 2 h
    assert store.addrs(peer) == [LISTEN]


def test_addresses_given_for_a_short_time_still_expire(monkeypatch):
    host = build_host(create_new_key_pair(), P2PSection(enable_mdns=False), LimitsSection())
    peer, store = _peer(), host.get_peerstore()
    assert remember_card_addrs(host, _card(peer), ttl=30) == 1
    store.add_addr(peer, LISTEN, 20)  # shorter still: changes nothing
    _clock_moved(monkeypatch, 60)
    with pytest.raises(PeerStoreError, match="expired"):
        store.addrs(peer)


def test_unpatched_libp2p_still_expires_addresses_at_the_last_ttl(monkeypatch):
    """The canary: fails once py-libp2p keeps an expiry per address (then drop the workaround)."""
    store = bare_host(ConnectionConfig()).get_peerstore()
    peer = _peer()
    store.add_addr(peer, LISTEN, IDENTIFY_TTL)
    store.add_addrs(peer, [LISTEN], 30)
    _clock_moved(monkeypatch, 600)
    with pytest.raises(PeerStoreError, match="expired"):
        store.addrs(peer)
