"""Keeping a node connected: bootstrap peers are dialled until up (and again after they drop),
peers found by mDNS or peer exchange are dialled once. Every dial has a deadline."""

from __future__ import annotations

import logging

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from node.config import ConfigError
from node.mesh.host import parse_peer_addr
from node.runtime.signals import ChangeSignal

log = logging.getLogger("praxis.dialer")

INITIAL_BACKOFF = 0.2


def is_connected(host: IHost | None, peer_id: str) -> bool:
    if host is None:
        return False
    try:
        peer = ID.from_base58(peer_id)
    except Exception:  # not a peer ID (base58 and multihash errors): nobody is connected as it
        return False
    return bool(host.get_network().get_connections(peer))


def parse_bootstrap(text: str) -> PeerInfo:
    try:
        return parse_peer_addr(text)
    except ValueError as exc:
        raise ConfigError(f"p2p.bootstrap_nodes: {exc}") from None


class Dialer:
    def __init__(self, host: IHost, connections: ChangeSignal, connect_timeout: float, backoff_max: float) -> None:
        self.host = host
        self.connections = connections  # bumped by the node on every connect and disconnect
        self.connect_timeout = connect_timeout
        self.backoff_max = backoff_max

    async def keep_connected(self, info: PeerInfo) -> None:
        """Dial a bootstrap peer until connected, and again whenever the connection drops."""
        backoff = INITIAL_BACKOFF
        target = info.peer_id.to_string()
        while True:
            version = self.connections.version
            if is_connected(self.host, target):
                backoff = INITIAL_BACKOFF
                await self.connections.wait_past(version)
                continue
            try:
                with trio.fail_after(self.connect_timeout):
                    await self.host.connect(info)
                log.info("connected to bootstrap peer %s", target)
                continue
            except (trio.TooSlowError, Exception) as exc:  # libp2p raises many types for a failed dial
                log.info("bootstrap peer %s unreachable (%s); retrying in %.1f s", target,
                         type(exc).__name__, backoff)
            await trio.sleep(backoff)  # backoff between dials, not a race workaround
            backoff = min(backoff * 2, self.backoff_max)

    async def dial(self, info: PeerInfo) -> None:
        """Dial a discovered peer once, unless already connected."""
        if is_connected(self.host, info.peer_id.to_string()):
            return
        try:
            with trio.fail_after(self.connect_timeout):
                await self.host.connect(info)
        except (trio.TooSlowError, Exception) as exc:  # libp2p raises many types for a failed dial
            log.info("discovered peer %s unreachable: %s", info.peer_id, type(exc).__name__)
