"""Where a peer can be dialled, from what it says of itself: at most a few IP/TCP addresses
naming that very peer (never a DNS name), kept in the peerstore for a bounded time."""

from __future__ import annotations

import ipaddress

import multiaddr
from libp2p.abc import IHost
from libp2p.peer.id import ID

from protocols.messages import Card

MAX_ADDRS = 4  # addresses kept per peer from its own card


def dialable_addrs(peer_id: str, addrs: list[str]) -> list[multiaddr.Multiaddr]:
    """The IP/TCP addresses among `addrs` that name `peer_id`, without their /p2p/ part."""
    out: list[multiaddr.Multiaddr] = []
    for text in addrs:
        if len(out) >= MAX_ADDRS:
            break
        parts = text.split("/")
        # /ip4/<ip>/tcp/<port>/p2p/<id>: exactly this shape
        if len(parts) != 7 or parts[0] or parts[1] not in ("ip4", "ip6") or parts[3] != "tcp" or parts[5] != "p2p":
            continue
        if parts[6] != peer_id or not parts[4].isdigit() or not 0 < int(parts[4]) < 65536:
            continue
        try:
            ipaddress.ip_address(parts[2])
            out.append(multiaddr.Multiaddr("/".join(parts[:5])))
        except ValueError:  # not an IP address (multiaddr raises ValueError subclasses too)
            continue
    return out


def remember_card_addrs(host: IHost, card: Card, ttl: float) -> int:
    """Put the card's dialable addresses in the peerstore for `ttl` seconds; how many."""
    addrs = dialable_addrs(card.peer_id, list(card.addrs))
    if addrs:
        host.get_peerstore().add_addrs(ID.from_base58(card.peer_id), addrs, int(max(ttl, 1)))
    return len(addrs)
