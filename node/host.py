"""Building the libp2p host: Noise as the only security transport, yamux, one connection per peer."""

from __future__ import annotations

import ipaddress

import multiaddr
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from node.config import ConfigError, P2PSection


def build_host(key_pair: KeyPair, p2p: P2PSection) -> IHost:
    """A host that accepts only Noise (never plaintext, secio or TLS) and muxes with yamux."""
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_preference="YAMUX",
        enable_mDNS=p2p.enable_mdns,
        # One connection per peer; without it every dial waits out a 250 ms happy-eyeballs delay.
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )


def listen_multiaddr(p2p: P2PSection) -> multiaddr.Multiaddr:
    try:
        ip = ipaddress.ip_address(p2p.host)
    except ValueError:
        raise ConfigError(f"p2p.host: found {p2p.host!r}; expected an IPv4 or IPv6 address") from None
    proto = "ip4" if ip.version == 4 else "ip6"
    return multiaddr.Multiaddr(f"/{proto}/{ip}/tcp/{p2p.port}")


def full_addrs(host: IHost) -> list[str]:
    """The host's listen addresses with its /p2p/ component, as peers dial them."""
    peer = host.get_id().to_string()
    out = []
    for addr in host.get_addrs():
        text = str(addr)
        out.append(text if "/p2p/" in text else f"{text}/p2p/{peer}")
    return out


def parse_peer_addr(text: str) -> PeerInfo:
    """A multiaddr with a /p2p/<peer id> part; the error says what a valid one looks like."""
    try:
        return info_from_p2p_addr(multiaddr.Multiaddr(text))
    except Exception as exc:  # multiaddr raises several types for malformed input
        raise ValueError(
            f"not a peer address: {text!r} ({exc}); expected e.g. "
            "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW..."
        ) from None


def peer_id_text(peer: ID) -> str:
    return peer.to_string()
