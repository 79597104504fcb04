"""Node: the composition root. It builds the graph of one node and owns every lifetime.

What exists before `running()`: the identity, the engines and the local tools, the peer
directory, the MCP client pool and forwarded servers. What `running()` builds, each handed
its collaborators as plain values: the node's stats, the libp2p host and the links to peers,
the dialer, the router and the tool service, the card and peer exchanges, the mesh's view for
the MCP endpoint, and the endpoint. Every task runs in the one nursery `running()` owns:
leaving it stops every task, closes every connection and the engines, and leaks nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from node.config import NodeConfig, ToolContract
from node.mcp.clients import McpClientPool
from node.mcp.endpoint import MeshMcpEndpoint
from node.mcp.upstreams import McpUpstreams
from node.mesh.announcements import Announcements
from node.mesh.cards import CardExchange, own_card
from node.mesh.dialer import Dialer
from node.mesh.directory import PeerDirectory
from node.mesh.host import build_host, listen_multiaddr, parse_peer_addr
from node.mesh.identity import key_file_held, load_or_create_identity
from node.mesh.links import ConnectionEvents, PeerLinks
from node.mesh.mdns import MdnsBridge
from node.mesh.origins import OriginCheck, Signer
from node.mesh.peer_addresses import remember_card_addrs
from node.mesh.peer_exchange import PeerExchange
from node.mesh.peer_keeper import PeerKeeper
from node.mesh.router import Routed, Router, UpstreamTools
from node.mesh.service import ToolService
from node.mesh.stats import MeshStats
from node.mesh.tool_dht import ToolDht
from node.mesh.tool_lookup import ToolLookup
from node.mesh.view import MeshView
from node.runtime.ports import ensure_port_free
from node.runtime.signals import ChangeSignal
from node.runtime.tasks import isolated_handler, start_isolated
from node.runtime.tracing import Tracing
from node.tools.engines.base import ExecutionEngine
from node.tools.engines.lazy import LazyEngine
from node.tools.engines.process import ProcessEngine
from node.tools.engines.python import PythonEngine
from node.tools.engines.remote_mcp import RemoteMcpEngine
from node.tools.local import LocalTools
from protocols.call import CALL_PROTOCOL
from protocols.call_events import NO_EVENTS, CallEvents
from protocols.card import CARD_PROTOCOL
from protocols.messages import Card, ToolResponse, ToolSpec
from protocols.peers import PEERS_PROTOCOL, PeerList
from protocols.prune import PRUNE_PROTOCOL
from protocols.streams import WireLimits
from protocols.tool import TOOL_PROTOCOL

log = logging.getLogger("praxis.node")

STOP_TIMEOUT = 5.0  # for closing the engines when the node stops
EXPIRE_TICK = 1.0  # how often cards whose announcement ran out are dropped
DEPARTURE_GRACE = 3.0  # seconds a peer that closed our connection stays offered (see _departure_grace)


class Node:
    """One praxis agent node. Use `async with node.running():` to run it."""

    # Built by running(), for as long as the node runs.
    stats: MeshStats
    host: IHost
    links: PeerLinks
    dialer: Dialer
    router: Router
    service: ToolService
    cards: CardExchange
    peer_exchange: PeerExchange
    keeper: PeerKeeper
    announcements: Announcements | None  # None with p2p.discovery off
    dht: ToolDht | None
    lookup: ToolLookup | None
    mesh: MeshView
    mcp_endpoint: MeshMcpEndpoint

    def __init__(
        self,
        config: NodeConfig,
        *,
        key_pair: KeyPair | None = None,
        engines: dict[str, ExecutionEngine] | None = None,
        upstreams: UpstreamTools | None = None,
        tracer_provider: Any = None,
    ) -> None:
        self.config = config
        # Spans through the given OpenTelemetry provider (tests), to tracing.otlp_endpoint, or none.
        self.tracing = Tracing.for_node(config.agent.name, config.tracing.otlp_endpoint, tracer_provider)
        # A key from the config's key file is held while the node runs (one node per key).
        self.key_file = None if key_pair is not None else config.resolve_path(config.p2p.key_file)
        self.key_pair = key_pair or load_or_create_identity(config.resolve_path(config.p2p.key_file))
        self.peer_id = ID.from_pubkey(self.key_pair.public_key).to_string()
        self.limits = WireLimits(
            max_frame_bytes=config.limits.max_frame_bytes,
            idle_timeout=config.limits.idle_timeout_seconds,
            max_depth=config.limits.max_json_depth,
        )
        # One MCP client pool, shared by remote-mcp tools and the servers under mcp.servers.
        self.mcp_pool = McpClientPool(connect_timeout=config.limits.connect_timeout_seconds)
        self.engines: dict[str, ExecutionEngine] = engines if engines is not None else default_engines(config)
        self.engines.setdefault("remote-mcp", RemoteMcpEngine(self.mcp_pool, config.base_dir))
        if upstreams is None and config.mcp.servers:
            upstreams = McpUpstreams(
                config.mcp.servers, self.mcp_pool, base_dir=config.base_dir,
                refresh_seconds=config.mcp.refresh_seconds,
                list_timeout=config.limits.connect_timeout_seconds,
            )
        self.upstreams = upstreams
        self.local = LocalTools(
            config.agent.tools, self.engines,
            max_argument_bytes=config.limits.max_argument_bytes,
            max_result_bytes=config.limits.max_result_bytes,
        )
        self.directory = PeerDirectory()
        self.connections = ChangeSignal()  # bumped on every connect and disconnect
        self.own_card_changed = ChangeSignal()  # this node's own tools changed: push its card
        upstream_changed = getattr(upstreams, "changed", None)
        if isinstance(upstream_changed, ChangeSignal):  # shared servers' tools are in our card
            self.own_card_changed.follow(upstream_changed)
        self.tools_changed = ChangeSignal().follow(self.directory.changed, self.own_card_changed)
        self.serve_mcp_http = config.mcp.enabled  # `praxis-node mcp` serves stdio instead
        self.mcp_url = ""  # http://127.0.0.1:<port>/mcp once serving
        self._nursery: trio.Nursery | None = None

    # ----- lifetime ----------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Node]:
        """Build the running graph, start every task; stop them all on exit."""
        config, limits = self.config, self.config.limits
        self.local.check_contracts()
        ensure_port_free(config.p2p.host, config.p2p.port, "p2p.port")
        if self.serve_mcp_http:
            ensure_port_free(config.mcp.host, config.mcp.port, "mcp.port")
        bootstrap = [parse_peer_addr(text) for text in config.p2p.bootstrap_nodes]
        # Tool labels are the names the router offers (read when tools_changed moves).
        self.stats = stats = MeshStats(lambda: self.router.tools(), self.tools_changed)
        self.host = host = build_host(self.key_pair, config.p2p, limits)
        self.links = links = PeerLinks(host, self.limits, limits.connect_timeout_seconds, stats,
                                       min(limits.max_idle_streams_per_peer, limits.max_streams_per_peer // 2))
        p2p = config.p2p
        self.dialer = dialer = Dialer(host, self.connections, limits.connect_timeout_seconds,
                                      p2p.dial_backoff_max_seconds, stats.activity,
                                      enough=lambda: len(links.connected_peers()) >= p2p.min_peers)
        self._build_discovery(bootstrap)
        self.router = router = Router(self.local, self.directory, links.call_peer, self.upstreams,
                                      sign=Signer(self.key_pair, self.peer_id), tracing=self.tracing,
                                      lookup=self.lookup.find if self.lookup is not None else None)
        self.service = ToolService(config, self.local, router, OriginCheck(self.peer_id), self.limits, stats,
                                   self.upstreams, tracing=self.tracing)
        self.peer_exchange = PeerExchange(links, dialer, self.directory, self.peer_id, self.limits,
                                          enabled=config.p2p.peer_exchange)
        self.cards = CardExchange(
            links, self.directory, self.own_card, self.limits,
            pushes_per_minute=limits.max_card_pushes_per_minute, refresh_seconds=config.p2p.card_refresh_seconds,
            own_card_changed=self.own_card_changed, new_peer=self._first_card, activity=stats.activity,
            announces=self.announcements.reach_here if self.announcements is not None else lambda peer_id: False,
        )
        self.mesh = MeshView(router, self.directory, stats, name=config.agent.name, version=config.agent.version,
                             peer_id=self.peer_id, card=self.own_card, peer_list=self.peer_exchange.peer_list,
                             call_timeout=limits.call_timeout_seconds, tools_changed=self.tools_changed,
                             connections=links.directions, engines=self.engines,
                             ready=lambda: bool(links.addrs) and dialer.tried_all(bootstrap), tracing=self.tracing,
                             gossip_mesh=self.announcements.mesh_size if self.announcements is not None else None)
        self.mcp_endpoint = MeshMcpEndpoint(self.mesh, config.mcp)
        for protocol, handler in ((CARD_PROTOCOL, self.cards.serve_card_stream),
                                  (TOOL_PROTOCOL, self.service.serve_tool_stream),
                                  (CALL_PROTOCOL, self.service.serve_call_stream),
                                  (PEERS_PROTOCOL, self.peer_exchange.serve_peers_stream),
                                  (PRUNE_PROTOCOL, self.keeper.serve_prune_notice)):
            host.set_stream_handler(protocol, isolated_handler(f"serving {protocol}", handler))  # type: ignore[arg-type]
        host.get_network().register_notifee(ConnectionEvents(self._connected, self._disconnected))
        try:
            async with AsyncExitStack() as held:
                if self.key_file is not None:
                    held.enter_context(key_file_held(self.key_file))
                await held.enter_async_context(host.run([listen_multiaddr(config.p2p)]))
                if self.announcements is not None:
                    await held.enter_async_context(self.announcements.running())
                nursery = await held.enter_async_context(trio.open_nursery())
                self._nursery = nursery
                await nursery.start(links.calls.run)
                await nursery.start(self.cards.run)
                if self.dht is not None:
                    await nursery.start(self.dht.run)
                await nursery.start(self.keeper.run)
                nursery.start_soon(self._expire_cards)
                await nursery.start(self.peer_exchange.run)
                for info in bootstrap:
                    nursery.start_soon(dialer.keep_connected, info)
                if config.p2p.enable_mdns:
                    await nursery.start(MdnsBridge(self.peer_id, dialer.dial).run)
                await nursery.start(self.mcp_pool.run)
                if isinstance(self.upstreams, McpUpstreams):
                    await nursery.start(self.upstreams.run)
                if self.serve_mcp_http:
                    self.mcp_url = await nursery.start(self.mcp_endpoint.serve_http)
                log.info("node %s (%s) listening on %s", config.agent.name, self.peer_id, ", ".join(self.addrs))
                try:
                    yield self
                finally:
                    if self.announcements is not None:
                        await self.announcements.leave()  # before the connections close
                    nursery.cancel_scope.cancel()
                    await links.close()
        finally:
            with trio.move_on_after(STOP_TIMEOUT) as scope:
                scope.shield = True
                for engine in self.engines.values():
                    await engine.aclose()
            self.tracing.shutdown()

    def _build_discovery(self, bootstrap: list[PeerInfo]) -> None:
        """The DHT, GossipSub announcements, lookups and the connection keeper (node/mesh/*)."""
        p2p, host, links = self.config.p2p, self.host, self.links
        self.announcements = self.dht = self.lookup = None
        if p2p.discovery:
            self.announcements = Announcements(
                host, self.directory, self.own_card, self.own_card_changed, every=p2p.announce_seconds,
                per_peer=p2p.announce_seconds_per_peer, ttl=p2p.announce_ttl_seconds,
                heartbeat=p2p.gossip_heartbeat_seconds, per_minute=self.config.limits.max_card_pushes_per_minute,
                max_peers=p2p.max_peers, activity=self.stats.activity,
            )
            self.dht = ToolDht(host, lambda: [t.name for t in self.own_card().tools], self.own_card_changed,
                               refresh=p2p.provide_refresh_seconds, ttl=p2p.provider_ttl_seconds,
                               activity=self.stats.activity)
            self.lookup = ToolLookup(self.dht, links, self.directory, self.own_card, self.limits,
                                     ttl=p2p.announce_ttl_seconds)
        bootstrap_ids = {info.peer_id.to_string() for info in bootstrap}
        dht = self.dht

        def candidates() -> list[str]:
            known = dht.routing_peers() if dht is not None else []
            return list(dict.fromkeys(known + [e.peer_id for e in self.directory.peers()]))

        announcements = self.announcements

        def protected() -> set[str]:
            mesh = announcements.mesh_peers() if announcements is not None else set()
            return bootstrap_ids | mesh

        self.keeper = PeerKeeper(host, self.dialer, self.connections, max_peers=p2p.max_peers,
                                 min_peers=p2p.min_peers, backoff_max=p2p.dial_backoff_max_seconds,
                                 protected=protected, candidates=candidates)

    async def _expire_cards(self) -> None:
        """Drop cards whose announcement ran out and that no live connection holds."""
        while True:
            await trio.sleep(EXPIRE_TICK)  # a period, not a race workaround
            for peer_id in self.directory.expire():
                log.info("peer %s not announced for %g s; its tools are gone", peer_id,
                         self.config.p2p.announce_ttl_seconds)

    def _connected(self, peer_id: str, direction: str) -> None:
        self.connections.bump()
        self.stats.activity.connections_opened[direction] += 1
        self.stats.peer_connected(peer_id)
        self.directory.record_connected(peer_id)
        self.cards.request_exchange(peer_id, unless_announced=True)
        if self.dht is not None and self._nursery is not None:
            start_isolated(self._nursery, f"routing table: {peer_id}", self.dht.add_peer, peer_id)

    def _first_card(self, peer_id: str) -> None:
        """A connected peer's first card arrived: ask it whom it knows (peer exchange, if on), and
        give the DHT its addresses (an inbound peer's are often not known before its card)."""
        self.peer_exchange.discover_through(peer_id)
        entry = self.directory.get(peer_id)
        if self.dht is not None and self._nursery is not None and entry is not None:
            if remember_card_addrs(self.host, entry.card, self.config.p2p.announce_ttl_seconds):
                start_isolated(self._nursery, f"routing table: {peer_id}", self.dht.add_peer, peer_id)

    def _disconnected(self, peer_id: str) -> None:
        self.connections.bump()
        self.stats.peer_disconnected(peer_id)
        self.cards.forget(peer_id)
        pruned = self.keeper.was_pruned(peer_id)
        self.stats.activity.connections_closed["pruned" if pruned else "other"] += 1
        if pruned:  # closed for a connection bound (ours or the peer's): not a departure
            # The peer is alive: keep its card for a lease, as if it had just announced it. A card
            # learnt only over this connection (the peer's announcements not heard yet) vanished
            # here, until its next announcement: a period later (29 s among 30 nodes).
            self.directory.renew(peer_id, trio.current_time() + self._pruned_lease())
            self.directory.unlink(peer_id)
        elif self.directory.unlink(peer_id, trio.current_time() + self._departure_grace()):
            log.info("peer %s disconnected; its tools are gone", peer_id)

    def _pruned_lease(self) -> float:
        """How long the card of a peer pruned for a connection bound stays offered without news of
        it: the lease this node's own announcements give (peers of one mesh announce alike)."""
        return self.announcements.lease() if self.announcements is not None else self.config.p2p.announce_ttl_seconds

    def _departure_grace(self) -> float:
        """How long the card of a peer that closed our connection stays offered: a peer that
        crashed must stop being offered within seconds (one that pruned us for its own bound
        said so first, and keeps its card while its announcement lasts). Without discovery: at once."""
        return DEPARTURE_GRACE if self.config.p2p.discovery else 0.0

    # ----- what callers use ----------------------------------------------------------

    @property
    def addrs(self) -> list[str]:
        return self.links.addrs

    def own_card(self) -> Card:
        return own_card(self.config, self.peer_id, self.local.specs() + self._shared_specs(), self.addrs)

    def _shared_specs(self) -> list[ToolSpec]:
        return list(self.upstreams.shared_tools().values()) if self.upstreams is not None else []

    def peer_list(self) -> PeerList:
        return self.peer_exchange.peer_list()

    def connected_peers(self) -> list[str]:
        return self.links.connected_peers()

    async def call(
        self, name: str, arguments: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Routed:
        """Call a tool anywhere in the mesh; raises a `PraxisError` when it cannot be served."""
        return await self.mesh.call(name, dict(arguments or {}), timeout=timeout)

    async def request_peer(
        self, peer_id: str, name: str, arguments: dict[str, Any], *, timeout: float | None = None,
        events: CallEvents = NO_EVENTS,
    ) -> ToolResponse:
        """Send a call to one given peer (which serves it or forwards it), bypassing the router;
        `events` hears what the tool says while it runs."""
        return await self.mesh.request(peer_id, name, arguments, timeout=timeout, events=events)

    async def fetch_peer_list(self, peer_id: str, *, timeout: float = 5.0) -> PeerList:
        return await self.links.fetch_peer_list(peer_id, timeout=timeout)

    def add_tool(self, contract: ToolContract) -> None:
        """Start serving a tool at run time; peers get the new card at once."""
        self.local.add(contract)
        self.own_card_changed.bump()

    def remove_tool(self, name: str) -> None:
        if self.local.remove(name):
            self.own_card_changed.bump()


def default_engines(config: NodeConfig) -> dict[str, ExecutionEngine]:
    """One instance of every engine this node can run, created once."""

    def dagger_engine() -> ExecutionEngine:
        from node.tools.engines.dagger import DaggerEngine

        return DaggerEngine(config.engines.dagger, config.base_dir)

    return {
        "python": PythonEngine(),
        "process": ProcessEngine(config.engines.process, config.base_dir),
        "dagger": LazyEngine(dagger_engine),
    }
