"""Limits on what a node has open at once: connections in total, inbound connections per remote
IP address, one inbound connection per peer, and streams on one peer's connection.

Who enforces what (py-libp2p 0.8.1):

- **Total connections** (`limits.max_connections`, both directions): py-libp2p's own
  `ConnectionConfig.max_connections`, checked before the handshake and again, race-free, when a
  connection is registered (`Swarm.add_conn`), for inbound and outbound connections alike.
- **Inbound connections**: py-libp2p's inbound limiter, `max_connections - min_connections`
  slots. `connection_config()` sets `min_connections` to a quarter of the total, so a node that
  peers flood with inbound connections can still dial out (its bootstrap nodes, peers it
  learns). The limiter counts only connections open at once thanks to the slot-leak
  workaround in `node.mesh.libp2p_patches`; without it, it counts every connection ever accepted.
- **Inbound connections per remote IP** (`limits.max_connections_per_ip`): our own count, taken
  before the handshake. py-libp2p's resource manager has a `CIDRLimiter`, but it caps the sum
  over each configured network, not each address within it.
- **One inbound connection per peer**: our own, when the connection is registered: a peer's new
  inbound connection replaces its older one (a restarted peer is served at once; a peer cannot
  pile up connections). `ConnectionConfig.max_connections_per_peer=1` alone does not hold: the
  library never trims a connection younger than its 20 s `grace_period`, and trims only when
  another connection is added. A simultaneous dial can leave one connection each way.
- **Streams open at once on one peer's connection** (`limits.max_streams_per_peer`, both
  directions): our own `opened_stream` notifee resets the stream that goes over. py-libp2p
  has no such limit for inbound streams: yamux bounds only the streams it opens itself, the
  resource manager's per-peer scoped stream limits are never consulted by `SwarmConn`, and its
  global stream semaphore makes excess streams wait instead of refusing them.

py-libp2p logs its own refusals at DEBUG. The guard checks the connection limits itself before
the library does, so every refused connection or stream is logged once, at INFO, with the
reason (at most `_RefusalLog.BURST` lines a minute per kind; the rest are counted and the count
is reported). Peer IDs and IP addresses in these lines are bounded; no peer-chosen text is logged.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from libp2p.abc import INetConn, INetStream, INetwork
from libp2p.network.config import LOW_WATERMARK, ConnectionConfig
from libp2p.network.swarm import Swarm
from libp2p.rcmgr import Direction
from multiaddr import Multiaddr

from node.config import LimitsSection
from node.mesh.notifee import Notifee

log = logging.getLogger("praxis.connections")

_UNKNOWN_IP = "unknown address"


def outbound_reserve(limits: LimitsSection) -> int:
    """Connections kept for the node's own dials: inbound connections may use the rest."""
    return limits.max_connections // 4


def connection_config(limits: LimitsSection) -> ConnectionConfig:
    """py-libp2p's connection manager settings for these limits."""
    total = limits.max_connections
    reserve = outbound_reserve(limits)
    return ConnectionConfig(
        max_connections=total,
        # py-libp2p gives inbound connections max_connections - min_connections slots.
        min_connections=reserve,
        # The auto-connector aims between the watermarks, the pruner starts above the high one:
        # never, as no connection past max_connections is registered.
        low_watermark=max(reserve, min(LOW_WATERMARK, total)),
        high_watermark=total,
        # Without it every dial also waits out a 250 ms happy-eyeballs delay.
        max_connections_per_peer=1,
    )


class _RefusalLog:
    """One INFO line per refusal, at most BURST lines a minute per kind; the rest are counted."""

    BURST = 20
    WINDOW = 60.0

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int, int]] = {}  # kind -> (start, logged, unlogged)

    def refused(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        start, logged, unlogged = self._windows.get(kind, (now, 0, 0))
        if now - start >= self.WINDOW:
            if unlogged:
                log.info("%d more refusals (%s) in the last minute were not logged", unlogged, kind)
            start, logged, unlogged = now, 0, 0
        if logged < self.BURST:
            log.info(message, *args)
            logged += 1
        else:
            unlogged += 1
        self._windows[kind] = (start, logged, unlogged)


class ConnectionGuard(Notifee):
    """Enforces `limits` on one swarm; `install()` hooks it into that swarm instance only."""

    def __init__(self, swarm: Swarm, limits: LimitsSection) -> None:
        self.swarm = swarm
        self.limits = limits
        self.inbound_per_ip: Counter[str] = Counter()  # inbound connections open or being set up
        self._refusals = _RefusalLog()

    def install(self) -> None:
        handle_inbound = self.swarm._handle_inbound_connection

        async def guarded(read_write_closer: Any, maddr: Multiaddr) -> None:
            ip = _remote_ip(read_write_closer)
            reason = self._inbound_refusal(ip)
            if reason is not None:
                self._refusals.refused("inbound connection", "refused an inbound connection from %s: %s", ip,
                                       reason)
                try:
                    await read_write_closer.close()
                except Exception as exc:  # already gone: nothing more to close
                    log.debug("closing a refused connection: %s", type(exc).__name__)
                return
            self.inbound_per_ip[ip] += 1
            try:
                # Returns when the connection closes (node.mesh.libp2p_patches), or its setup fails.
                await handle_inbound(read_write_closer, maddr)
            finally:
                self.inbound_per_ip[ip] -= 1
                if self.inbound_per_ip[ip] <= 0:
                    del self.inbound_per_ip[ip]

        self.swarm._handle_inbound_connection = guarded  # type: ignore[method-assign]
        self.swarm.register_notifee(self)

    def _inbound_refusal(self, ip: str) -> str | None:
        """Why a new inbound connection from `ip` must be refused, or None."""
        total = len(self.swarm.get_connections())
        if total >= self.limits.max_connections:
            return f"{total} connections open (limits.max_connections={self.limits.max_connections})"
        slots = self.swarm._inbound_limiter
        if slots.available_tokens < 1:
            return (f"{slots.borrowed_tokens} inbound connections open or being set up (at most "
                    f"{int(slots.total_tokens)}: limits.max_connections={self.limits.max_connections} "
                    f"less {outbound_reserve(self.limits)} kept for the node's own dials)")
        from_ip = self.inbound_per_ip[ip]
        if from_ip >= self.limits.max_connections_per_ip:
            return (f"{from_ip} inbound connections from this address open "
                    f"(limits.max_connections_per_ip={self.limits.max_connections_per_ip})")
        return None

    # ----- INotifee ----------------------------------------------------------------

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        if _direction(conn) != Direction.INBOUND:
            return
        peer = conn.muxed_conn.peer_id
        older = [c for c in self.swarm.get_connections(peer)
                 if c is not conn and _direction(c) == Direction.INBOUND and not c.is_closed]
        for old in older:
            self._refusals.refused("connection per peer", "closed an older inbound connection of peer %s: it "
                                   "opened a new one (one inbound connection per peer)", peer)
            try:
                await old.close()
            except Exception as exc:  # closing already: what we wanted
                log.debug("closing a replaced connection: %s", type(exc).__name__)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        open_now = sum(len(conn.get_streams()) for conn in self.swarm.get_connections(peer))
        if open_now <= self.limits.max_streams_per_peer:
            return
        outbound = bool(getattr(getattr(stream, "muxed_stream", None), "is_initiator", False))
        self._refusals.refused("stream", "refused %s stream %s peer %s: %d streams open on its connection "
                               "(limits.max_streams_per_peer=%d)", "an outbound" if outbound else "a",
                               "to" if outbound else "from", peer, open_now - 1, self.limits.max_streams_per_peer)
        # py-libp2p took a slot of its global stream semaphore and resource manager for this
        # stream, and gives them back when the stream closes, but only for a stream tagged with
        # its direction, which it does after this notification. Untagged, a reset here would
        # leak both: tag it as the library would.
        stream._direction = Direction.OUTBOUND if outbound else Direction.INBOUND  # type: ignore[attr-defined]
        await stream.reset()


def _remote_ip(read_write_closer: Any) -> str:
    try:
        address = read_write_closer.get_remote_address()
    except Exception:  # a transport that cannot tell: all such connections share one count
        return _UNKNOWN_IP
    if not address:
        return _UNKNOWN_IP
    return str(address[0])


def _direction(conn: INetConn) -> Direction:
    return getattr(conn, "direction", Direction.UNKNOWN)
