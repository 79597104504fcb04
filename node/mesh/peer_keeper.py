"""Bounded connections that heal: at most `p2p.max_peers` connections kept, at least
`p2p.min_peers` sought.

Every `TICK` seconds (and whenever a connection opens or closes):
- over `max_peers`: close connections down to a low-water mark (`low_water`: a quarter below the
  bound, as go-libp2p's connection manager trims to its low water), never a bootstrap peer's, a
  GossipSub mesh peer's, one with a tool call on it (checked again once the peer has the notice:
  a call may begin meanwhile) or one younger than `GRACE`; the newest first
  (short-lived connections opened for calls and DHT queries go before long-held ones). Trimming
  to the bound itself kept every node full: each new connection cost another one, and a peer
  under `min_peers` that dialled a full one was pruned again and again. The directory keeps a
  pruned peer's card while its announcement lasts (`PeerDirectory.unlink`), and so does the
  peer: the keeper tells it first (`/praxis/prune/1.0.0`, protocols/prune.py), so that it does
  not take the closed connection for a crash;
- under `min_peers`: dial peers the DHT's routing table or the directory knows, each with its
  own exponential backoff (`INITIAL_BACKOFF` .. `p2p.dial_backoff_max_seconds`), lifting
  py-libp2p's failed-dial block before each dial (node/mesh/dialer.py). A partition heals the
  same way: any connection across it lets the DHT and GossipSub spread both sides' records.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from node.mesh.dialer import Dialer
from node.runtime.signals import ChangeSignal
from protocols.prune import NOTICE_TIMEOUT, PRUNE_PROTOCOL

log = logging.getLogger("praxis.peers")

TICK = 2.0
GRACE = 10.0  # seconds a new connection is never pruned
INITIAL_BACKOFF = 1.0
DIALS_PER_TICK = 4
MAX_BACKOFF_ENTRIES = 4096
DISCONNECT_TIMEOUT = 5.0
NOTICE_HOLDS = 2 * NOTICE_TIMEOUT  # a peer's prune notice explains its disconnect this long after
MAX_NOTICES = 4096


class PeerKeeper:
    def __init__(
        self,
        host: IHost,
        dialer: Dialer,
        connections: ChangeSignal,
        *,
        max_peers: int,
        min_peers: int,
        backoff_max: float,
        protected: Callable[[], set[str]],  # bootstrap peers and GossipSub mesh peers
        candidates: Callable[[], list[str]],
    ) -> None:
        self.host = host
        self.dialer = dialer
        self.connections = connections
        self.max_peers = max_peers
        self.min_peers = min(min_peers, max_peers)
        self.low_water = low_water(max_peers, self.min_peers)
        self.backoff_max = backoff_max
        self.protected = protected  # bootstrap peers: never pruned
        self.candidates = candidates  # peers worth a connection, best first
        self.pruned: set[str] = set()  # closed by this keeper (their disconnect is not a departure)
        self.notices: dict[str, float] = {}  # peer -> when it told us it prunes our connection
        self.prunes = 0
        self._backoff: dict[str, tuple[float, float]] = {}  # peer -> (next try, current backoff)
        self._opened: dict[str, float] = {}  # peer -> when we first saw its connection

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                seen = self.connections.version
                await self._prune()
                self._seek(nursery)
                with trio.move_on_after(TICK):
                    await self.connections.wait_past(seen)

    def was_pruned(self, peer_id: str) -> bool:
        """Was the last connection to `peer_id` closed for a connection bound, by this keeper or
        by the peer's (it told us)? Asked once, on disconnect."""
        self._opened.pop(peer_id, None)
        told = self.notices.pop(peer_id, -math.inf)
        if peer_id in self.pruned:
            self.pruned.discard(peer_id)
            return True
        return trio.current_time() - told <= NOTICE_HOLDS

    async def serve_prune_notice(self, stream: INetStream) -> None:
        """`/praxis/prune/1.0.0`: the peer is about to close our connection for its own bound."""
        if len(self.notices) >= MAX_NOTICES:
            self.notices.clear()
        self.notices[stream.muxed_conn.peer_id.to_string()] = trio.current_time()
        await stream.close()  # the peer waits for this before it closes the connection

    def _connected(self) -> list[str]:
        network = self.host.get_network()
        now = trio.current_time()
        out = []
        for peer in list(network.connections):
            if network.get_connections(peer):
                text = peer.to_string()
                self._opened.setdefault(text, now)
                out.append(text)
        return out

    async def _prune(self) -> None:
        connected = self._connected()
        if len(connected) <= self.max_peers:
            return
        excess = len(connected) - self.low_water
        protected = self.protected()
        now = trio.current_time()
        # A connection younger than GRACE is left alone (a DHT walk or a call is likely using it):
        # pruning it at once only made the walk dial it again.
        choices = [p for p in connected if p not in protected and not self._busy(p)
                   and now - self._opened.get(p, now) >= GRACE]
        choices.sort(key=lambda p: self._opened.get(p, math.inf), reverse=True)  # newest first
        async with trio.open_nursery() as nursery:
            for peer_id in choices[:excess]:
                nursery.start_soon(self.prune, peer_id)
        log.debug("pruned %d connection(s) over p2p.max_peers=%d (down to %d)", min(excess, len(choices)),
                  self.max_peers, self.low_water)

    async def prune(self, peer_id: str) -> None:
        """Close the connection to a peer, telling it first that it is a prune (see protocols/prune.py),
        unless a tool call began on it meanwhile."""
        peer = ID.from_base58(peer_id)
        self.pruned.add(peer_id)  # its disconnect is then no departure, here either
        with trio.move_on_after(NOTICE_TIMEOUT):
            await self._tell_pruned(peer)
        if self._busy(peer_id):
            # A call began on the connection while the notice was out: closing now would cut it
            # (a call to a tool that is not idempotent is then lost, not retried). A later tick
            # prunes the connection once it is idle, if it is still over the bound.
            self.pruned.discard(peer_id)
            log.debug("not pruning %s: a tool call began on its connection", peer_id)
            return
        self.prunes += 1
        with trio.move_on_after(DISCONNECT_TIMEOUT) as scope:  # the keeper's loop waits for its prunes
            try:
                await self.host.disconnect(peer)
            except Exception as exc:  # already closing
                log.debug("pruning %s: %s", peer_id, type(exc).__name__)
        if scope.cancelled_caught:  # still a prune: the peer was told, and its close comes later
            log.debug("pruning %s: not closed within %g s", peer_id, DISCONNECT_TIMEOUT)

    async def _tell_pruned(self, peer: ID) -> None:
        """Send the prune notice and wait for the peer to close its end (never a dial just for it)."""
        if not self.host.get_network().get_connections(peer):
            return
        try:
            stream = await self.host.new_stream(peer, [PRUNE_PROTOCOL])  # type: ignore[list-item]
        except Exception as exc:  # a peer without the protocol (the Go node), or gone already
            log.debug("prune notice to %s: %s", peer, type(exc).__name__)
            return
        try:
            await stream.read(1)  # returns (or raises) once the peer closed its end
        except Exception as exc:  # reset or gone: it will see the connection close either way
            log.debug("prune notice to %s: %s", peer, type(exc).__name__)
        finally:
            await stream.reset()

    def _busy(self, peer_id: str) -> bool:
        """A tool call is running on one of this peer's connections."""
        for conn in self.host.get_network().get_connections(ID.from_base58(peer_id)):
            for stream in conn.get_streams():
                protocol = str(stream.get_protocol() or "")
                if protocol.startswith("/praxis/tool/"):
                    return True
        return False

    def _seek(self, nursery: trio.Nursery) -> None:
        connected = set(self._connected())
        if len(connected) >= self.min_peers:
            return
        now = trio.current_time()
        own = self.host.get_id().to_string()
        dials = 0
        for peer_id in self.candidates():
            if dials >= DIALS_PER_TICK or len(connected) + dials >= self.min_peers:
                break
            if peer_id == own or peer_id in connected:
                continue
            next_try, backoff = self._backoff.get(peer_id, (-math.inf, INITIAL_BACKOFF))
            if next_try > now:
                continue
            addrs = self._addrs(peer_id)
            if not addrs:
                continue
            if len(self._backoff) >= MAX_BACKOFF_ENTRIES:
                self._backoff.clear()
            self._backoff[peer_id] = (now + backoff, min(backoff * 2, self.backoff_max))
            dials += 1
            nursery.start_soon(self._dial, PeerInfo(ID.from_base58(peer_id), addrs[:4]))

    def _addrs(self, peer_id: str) -> list[Multiaddr]:
        """Where the peerstore says the peer listens (nothing for an unknown or malformed ID)."""
        try:
            return list(self.host.get_peerstore().addrs(ID.from_base58(peer_id)))
        except Exception:  # PeerStoreError for an unknown peer; base58 errors for a bad ID
            return []

    async def _dial(self, info: PeerInfo) -> None:
        await self.dialer.dial(info)
        if self.dialer.is_connected(info.peer_id.to_string()):
            self._backoff.pop(info.peer_id.to_string(), None)


def low_water(max_peers: int, min_peers: int) -> int:
    """Connections kept after a trim: a quarter below `max_peers`, never under `min_peers`."""
    return max(min_peers, max_peers - max(1, max_peers // 4))
