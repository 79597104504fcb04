"""Links to peers over this node's libp2p host: streams opened within a deadline, a tool call
to one peer (counted in the node's stats), a peer list fetched, connections listed (with their
direction) and closed, connection events.

Every wait has a deadline; every stream is ended (closed after a complete exchange, reset
after a failure) by `closing_stream`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork
from libp2p.peer.id import ID

from node.mesh.call_streams import CallStreams
from node.mesh.dialer import is_connected
from node.mesh.host import full_addrs
from node.mesh.notifee import Notifee
from node.mesh.stats import MeshStats
from protocols.call_events import NO_EVENTS, CallEvents
from protocols.errors import PeerUnreachable, ToolTimeout
from protocols.messages import ToolRequest, ToolResponse
from protocols.peers import PEERS_PROTOCOL, PeerList, read_peer_list
from protocols.streams import WireLimits, closing_stream

log = logging.getLogger("praxis.links")

STOP_TIMEOUT = 5.0  # for closing every connection when the node stops


class PeerLinks:
    def __init__(self, host: IHost, limits: WireLimits, connect_timeout: float, stats: MeshStats,
                 max_idle_streams_per_peer: int = 32) -> None:
        self.host = host
        self.limits = limits
        self.connect_timeout = connect_timeout
        self.stats = stats
        # Tool calls, on streams kept for the next call (run `calls.run` for their idle time).
        self.calls = CallStreams(self.open_stream, limits, stats, max_idle_streams_per_peer)

    @property
    def addrs(self) -> list[str]:
        return full_addrs(self.host)

    def is_connected(self, peer_id: str) -> bool:
        return is_connected(self.host, peer_id)

    def connected_peers(self) -> list[str]:
        network = self.host.get_network()
        return sorted(p.to_string() for p in network.connections if network.get_connections(p))

    def directions(self) -> dict[str, str]:
        """Connected peer ID -> "inbound" (it dialled us) or "outbound" (we dialled it)."""
        network = self.host.get_network()
        out = {}
        for peer in list(network.connections):
            live = network.get_connections(peer)
            if live:
                out[peer.to_string()] = connection_direction(live[0])
        return out

    async def open_stream(self, peer_id: str, protocol: str | list[str], deadline: float) -> INetStream:
        """A new stream to a peer on `protocol` (or the first of several the peer knows), dialling
        it if needed, within the connect timeout."""
        limit = min(deadline, trio.current_time() + self.connect_timeout)
        protocols = [protocol] if isinstance(protocol, str) else protocol
        try:
            with trio.fail_at(limit):
                return await self._new_stream(ID.from_base58(peer_id), protocols)
        except trio.TooSlowError:
            if limit >= deadline:
                raise ToolTimeout(f"deadline passed while opening a stream to peer {peer_id}") from None
            raise PeerUnreachable(f"no stream to peer {peer_id} within {self.connect_timeout:g} s") from None
        except Exception as exc:  # libp2p raises many unrelated types for a failed dial
            raise PeerUnreachable(f"cannot open a stream to peer {peer_id}: {type(exc).__name__}") from None

    async def _new_stream(self, peer: ID, protocols: list[str]) -> INetStream:
        """`host.new_stream`, once more on a new connection if the one it used was closing.

        **A stream on a closing connection fails instead of dialling (py-libp2p 0.8.1,
        `Swarm.new_stream`).** A connection stays registered while its `close()` shuts the
        muxer down; a stream opened in that window fails ("No valid connections available",
        or a multistream handshake cut off) although the peer is up. Connections close
        routinely here: the peer keeper prunes them over `p2p.max_peers`, and so do peers'.
        Card exchanges failed so in runs of `test_thirty_nodes_keep_to_max_peers...`, and a
        call then fails with "cannot open a stream ...: SwarmException".
        go-libp2p's `Swarm.NewStream` dials again when its connection turns out closed; so
        does this, once, for the node's own protocols only: in the swarm it would also redial
        for pubsub and the prune notice, which must never dial a peer whose connection is
        closing (`libp2p_patches.pubsub_rides_existing_connections`, `PeerKeeper._tell_pruned`).
        Test: `tests/test_closing_connection.py`.
        """
        network = self.host.get_network()
        used = list(network.get_connections(peer))
        try:
            return await self.host.new_stream(peer, protocols)  # type: ignore[arg-type]
        except Exception:
            if not any(conn.is_closed for conn in used):
                raise  # not a connection closing under us: the peer's or the dial's failure
        log.debug("connection to %s was closing; opening a stream on a new one", peer)
        await network.dial_peer(peer)  # skips the closed connection, dials a new one
        return await self.host.new_stream(peer, protocols)  # type: ignore[arg-type]

    async def call_peer(
        self, peer_id: str, request: ToolRequest, deadline: float, events: CallEvents = NO_EVENTS
    ) -> ToolResponse:
        """One call to one peer (`/praxis/tool/1.1.0`, or 1.0.0 with a peer that knows only that);
        a stream lost after sending may have run the tool."""
        started = trio.current_time()
        response: ToolResponse | None = None
        try:
            response = await self.calls.call(peer_id, request, deadline, events)
            return response
        finally:
            self.stats.sent(peer_id, trio.current_time() - started, answered=response is not None,
                            ok=response is not None and response.error is None and not response.result.is_error)

    async def fetch_peer_list(self, peer_id: str, *, timeout: float = 5.0) -> PeerList:
        """Ask a peer for the peers it knows (`/praxis/peers/1.0.0`)."""
        deadline = trio.current_time() + timeout
        async with closing_stream(await self.open_stream(peer_id, PEERS_PROTOCOL, deadline)) as stream:
            return await read_peer_list(stream, self.limits, deadline)

    async def close(self) -> None:
        """Close every connection so peers notice at once, and stop listening.

        Leaving py-libp2p's `host.run()` does neither: its shutdown runs cancelled, so the
        listening socket outlived the node and a node restarted in the same process on the
        same port shared it with a dead listener (SO_REUSEPORT). Done here, shielded.
        """
        with trio.move_on_after(STOP_TIMEOUT) as scope:
            scope.shield = True
            # Listeners first: they are what a restart on the same port needs released, and
            # nothing new should arrive while the peers are let go.
            for listener in list(getattr(self.host.get_network(), "listeners", {}).values()):
                try:
                    await listener.close()
                except Exception as exc:  # a listener that failed to start: nothing to close
                    log.debug("closing a listener: %s", type(exc).__name__)
            await self.calls.aclose()
            # Every peer at once: one by one, a node with dozens of peers on a busy machine
            # ran out of the stop timeout.
            async with trio.open_nursery() as nursery:
                for peer in list(self.host.get_network().connections):
                    nursery.start_soon(self._disconnect, peer)

    async def _disconnect(self, peer: ID) -> None:
        try:
            await self.host.disconnect(peer)
        except Exception as exc:  # already closing: nothing more to do for this peer
            log.debug("disconnect from %s: %s", peer, type(exc).__name__)


def connection_direction(conn: INetConn) -> str:
    """"inbound" or "outbound": libp2p's own record of who dialled, else the muxer's initiator."""
    direction = str(getattr(conn, "direction", "")).lower()
    if direction in ("inbound", "outbound"):
        return direction
    initiator = getattr(conn.muxed_conn, "is_initiator", None)
    return "unknown" if initiator is None else ("outbound" if initiator else "inbound")


class ConnectionEvents(Notifee):
    """libp2p's connection events, as two callbacks: a connection opened (the peer, who
    dialled); a peer's last connection closed."""

    def __init__(self, connected: Callable[[str, str], None], disconnected: Callable[[str], None]) -> None:
        self._connected = connected
        self._disconnected = disconnected

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._connected(conn.muxed_conn.peer_id.to_string(), connection_direction(conn))

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        if not [c for c in network.get_connections(peer) if c is not conn]:
            self._disconnected(peer.to_string())
