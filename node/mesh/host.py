"""Building the libp2p host: Noise as the only security transport, yamux, and the node's connection
limits (node.mesh.connection_limits) with the py-libp2p inbound slot-leak workaround (node.mesh.libp2p_patches)."""

from __future__ import annotations

import ipaddress

import multiaddr
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.swarm import Swarm
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from node.config import LimitsSection, P2PSection
from node.mesh.connection_limits import ConnectionGuard, connection_config
from node.mesh.libp2p_patches import (
    addresses_keep_their_longest_lifetime,
    addresses_skip_closed_listeners,
    batch_yamux_window_updates,
    disable_auto_connector,
    release_inbound_slot_on_close,
    whole_writes,
)
from node.mesh.stream_guard import guarded


def build_host(key_pair: KeyPair, p2p: P2PSection, limits: LimitsSection) -> IHost:
    """A host that accepts only Noise (never plaintext, secio or TLS), muxes with yamux and keeps
    to `limits` (connections in total, per IP, per peer; streams per peer)."""
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_preference="YAMUX",
        enable_mDNS=p2p.enable_mdns,
        connection_config=connection_config(limits),
    )
    swarm = host.get_network()
    if not isinstance(swarm, Swarm):  # new_host always builds a Swarm; the hooks below need one
        raise TypeError(f"unexpected libp2p network type {type(swarm).__name__}")
    release_inbound_slot_on_close(swarm)
    disable_auto_connector(swarm)
    ConnectionGuard(swarm, limits).install()
    batch_yamux_window_updates(swarm)
    whole_writes(swarm)
    addresses_skip_closed_listeners(host)
    addresses_keep_their_longest_lifetime(host.get_peerstore())
    # The library's own handlers (identify, identify push, ping) can raise out of the host too:
    # identify reads the listen addresses, which raises OSError once the listener closed, so a
    # peer identifying a node as it stopped ended that node with a traceback.
    for protocol, handler in list(host.get_mux().handlers.items()):
        if protocol is not None and handler is not None:
            host.set_stream_handler(protocol, guarded(str(protocol), handler))
    return host


def listen_multiaddr(p2p: P2PSection) -> multiaddr.Multiaddr:
    """Where the node listens (`p2p.host` is an IP address: the config checked it at load)."""
    ip = ipaddress.ip_address(p2p.host)
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
