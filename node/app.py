"""Node: wires host, directory, engines, router and services together and owns their lifetimes.

Everything runs in one trio nursery owned by `Node.running()`: leaving that context stops
every task, closes the host and the engines, and leaks nothing.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from node.config import ConfigError, NodeConfig, ToolContract
from node.mcp.clients import McpClientPool
from node.mcp.endpoint import MeshMcpEndpoint
from node.mcp.upstreams import McpUpstreams
from node.mesh.dial_budget import PER_LIST, DialBudget
from node.mesh.dialer import Dialer, is_connected, parse_bootstrap
from node.mesh.directory import PeerDirectory
from node.mesh.host import build_host, full_addrs, listen_multiaddr, parse_peer_addr
from node.mesh.identity import load_or_create_identity
from node.mesh.mdns import MdnsBridge
from node.mesh.origins import OriginCheck
from node.mesh.router import Routed, Router, UpstreamTools
from node.mesh.service import ToolService
from node.runtime.rate import RateWindow
from node.runtime.signals import ChangeSignal
from node.runtime.tasks import isolated_handler, start_isolated
from node.tools.engines.base import ExecutionEngine
from node.tools.engines.lazy import LazyEngine
from node.tools.engines.process import ProcessEngine
from node.tools.engines.python import PythonEngine
from node.tools.engines.remote_mcp import RemoteMcpEngine
from node.tools.local import LocalTools, json_size
from protocols.card import CARD_PROTOCOL, exchange_cards
from protocols.errors import InvalidRequest, PeerUnreachable, PraxisError, TooLarge, ToolTimeout
from protocols.messages import CallOrigin, Card, ToolRequest, ToolResponse, ToolSpec
from protocols.origin import sign_origin
from protocols.peers import MAX_PEERS_LISTED, PEERS_PROTOCOL, PeerList, PeerRecord, read_peer_list, send_peer_list
from protocols.streams import WireLimits, closing_stream, end_stream
from protocols.tool import TOOL_PROTOCOL, request_tool, serve_tool_stream

log = logging.getLogger("praxis.node")

CAPABILITIES = ["tools", "mcp"]
PEER_LIST_TOOL_BYTES = 2 * 1024 * 1024  # tools listed in one peer list, as JSON
STOP_TIMEOUT = 5.0  # for closing connections, then engines, when the node stops


class _ConnectionEvents(INotifee):
    """Forwards libp2p connection events to the node."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self.node._on_connected(conn.muxed_conn.peer_id)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self.node._on_disconnected(network, conn)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None


class Node:
    """One praxis agent node. Use `async with node.running():` to run it."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        key_pair: KeyPair | None = None,
        engines: dict[str, ExecutionEngine] | None = None,
        upstreams: UpstreamTools | None = None,
    ) -> None:
        self.config = config
        self.key_pair = key_pair or load_or_create_identity(config.resolve_path(config.p2p.key_file))
        self.peer_id = ID.from_pubkey(self.key_pair.public_key).to_string()
        self.engines: dict[str, ExecutionEngine] = engines if engines is not None else default_engines(config)
        self.limits = WireLimits(
            max_frame_bytes=config.limits.max_frame_bytes,
            idle_timeout=config.limits.idle_timeout_seconds,
            max_depth=config.limits.max_json_depth,
        )
        # MCP both ways (node/mcp_*.py): one client pool shared by remote-mcp tools and the
        # servers under mcp.servers, and this node's own MCP endpoint over the mesh.
        self.mcp_pool = McpClientPool(connect_timeout=config.limits.connect_timeout_seconds)
        self.engines.setdefault("remote-mcp", RemoteMcpEngine(self.mcp_pool, config.base_dir))
        if upstreams is None and config.mcp.servers:
            try:
                upstreams = McpUpstreams(
                    config.mcp.servers, self.mcp_pool, base_dir=config.base_dir,
                    refresh_seconds=config.mcp.refresh_seconds,
                    list_timeout=config.limits.connect_timeout_seconds,
                )
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        self.mcp_endpoint = MeshMcpEndpoint(self)
        self.serve_mcp_http = config.mcp.enabled  # `praxis-node mcp` serves stdio instead
        self.mcp_url = ""  # http://127.0.0.1:<port>/mcp once serving
        self.directory = PeerDirectory()
        self.local = LocalTools(
            config.agent.tools, self.engines,
            max_argument_bytes=config.limits.max_argument_bytes,
            max_result_bytes=config.limits.max_result_bytes,
        )
        self.upstreams = upstreams
        self.router = Router(self.local, self.directory, self._call_peer, upstreams, sign=self._sign)
        self.service = ToolService(config, self.local, self.router, OriginCheck(self.peer_id), upstreams)
        self.dial_budget = DialBudget()
        self.card_pushes = RateWindow(config.limits.max_card_pushes_per_minute)
        self.connections = ChangeSignal()  # bumped on every connect and disconnect
        self.own_card_changed = ChangeSignal()
        self.host: IHost | None = None
        self.dialer: Dialer | None = None
        self._nursery: trio.Nursery | None = None
        self._exchanging: set[str] = set()
        self._exchange_again: set[str] = set()
        self._push_refused: set[str] = set()  # peers told once that their pushes are refused

    # ----- identity and addresses -------------------------------------------------

    @property
    def addrs(self) -> list[str]:
        return full_addrs(self.host) if self.host is not None else []

    def own_card(self) -> Card:
        return Card(
            name=self.config.agent.name,
            version=self.config.agent.version,
            peer_id=self.peer_id,
            capabilities=list(CAPABILITIES),
            tools=self.local.specs() + self._shared_specs(),
            addrs=self.addrs,
        )

    def peer_list(self) -> PeerList:
        """The peers this node knows, as many as one list may hold.

        Tools are listed while the list stays under `PEER_LIST_TOOL_BYTES`; past that, peers
        are listed without them, so the frame stays far below any reader's limit.
        """
        records: list[PeerRecord] = []
        budget = PEER_LIST_TOOL_BYTES
        for entry in self.directory.peers():
            if len(records) == MAX_PEERS_LISTED:
                break
            tools = list(entry.card.tools)
            size = json_size([t.to_wire() for t in tools])
            if size > budget:
                tools = []
            budget -= size if tools else 0
            try:
                records.append(PeerRecord(peer_id=entry.peer_id, name=entry.card.name, addrs=entry.card.addrs,
                                          tools=tools))
            except ValueError:  # pydantic's ValidationError: not listable; skip it, serve the rest
                continue
        return PeerList(peers=records)

    def _sign(self, target: str, tool: str, arguments: dict[str, Any], expires_ms: int) -> CallOrigin:
        """This node's proof that it asks `target` for this call (see protocols/origin.py)."""
        return sign_origin(self.key_pair.private_key, self.peer_id, target=target, tool=tool,
                           arguments=arguments, expires_ms=expires_ms)

    def _shared_specs(self) -> list[ToolSpec]:
        return list(self.upstreams.shared_tools().values()) if self.upstreams is not None else []

    def connected_peers(self) -> list[str]:
        assert self.host is not None
        network = self.host.get_network()
        return sorted(p.to_string() for p in network.connections if network.get_connections(p))

    # ----- lifetime ----------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Node]:
        """Start the host and every background task; stop them all on exit."""
        self.local.check_contracts()
        bootstrap = [parse_bootstrap(text) for text in self.config.p2p.bootstrap_nodes]
        host = build_host(self.key_pair, self.config.p2p, self.config.limits)
        self.host = host
        for protocol, handler in ((CARD_PROTOCOL, self._serve_card_stream), (TOOL_PROTOCOL, self._serve_tool_stream),
                                  (PEERS_PROTOCOL, self._serve_peers_stream)):
            host.set_stream_handler(protocol, isolated_handler(f"serving {protocol}", handler))  # type: ignore[arg-type]
        host.get_network().register_notifee(_ConnectionEvents(self))
        try:
            async with host.run([listen_multiaddr(self.config.p2p)]), trio.open_nursery() as nursery:
                self._nursery = nursery
                self.dialer = Dialer(host, self.connections, self.config.limits.connect_timeout_seconds,
                                     self.config.p2p.dial_backoff_max_seconds)
                for info in bootstrap:
                    nursery.start_soon(self.dialer.keep_connected, info)
                nursery.start_soon(self._refresh_cards_periodically)
                nursery.start_soon(self._push_card_on_change)
                if self.config.p2p.enable_mdns:
                    await nursery.start(MdnsBridge(self.peer_id, self.dialer.dial).run)
                await nursery.start(self.mcp_pool.run)
                if isinstance(self.upstreams, McpUpstreams):
                    await nursery.start(self.upstreams.run)
                    nursery.start_soon(self._advertise_shared_upstreams, self.upstreams)
                if self.serve_mcp_http:
                    self.mcp_url = await nursery.start(self.mcp_endpoint.serve_http)
                log.info("node %s (%s) listening on %s", self.config.agent.name, self.peer_id,
                         ", ".join(self.addrs))
                try:
                    yield self
                finally:
                    nursery.cancel_scope.cancel()
                    await self._disconnect_all()
        finally:
            self._nursery = None
            self.host = None
            with trio.move_on_after(STOP_TIMEOUT) as scope:
                scope.shield = True
                for engine in self.engines.values():
                    await engine.aclose()

    async def _disconnect_all(self) -> None:
        """Close every connection so peers notice at once (leaving host.run() does not)."""
        assert self.host is not None
        with trio.move_on_after(STOP_TIMEOUT) as scope:
            scope.shield = True
            for peer in list(self.host.get_network().connections):
                try:
                    await self.host.disconnect(peer)
                except Exception as exc:  # already closing: nothing more to do for this peer
                    log.debug("disconnect from %s: %s", peer, type(exc).__name__)

    # ----- calls -------------------------------------------------------------------

    async def call(
        self, name: str, arguments: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Routed:
        """Call a tool anywhere in the mesh; raises a `PraxisError` when it cannot be served."""
        return await self.router.call(name, dict(arguments or {}), deadline=self._deadline(timeout),
                                      trace_id=uuid.uuid4().hex)

    async def request_peer(
        self, peer_id: str, name: str, arguments: dict[str, Any], *, timeout: float | None = None
    ) -> ToolResponse:
        """Send a call to one given peer (which serves it or forwards it), bypassing the router."""
        deadline = self._deadline(timeout)
        remaining = deadline - trio.current_time()
        request = ToolRequest(id=uuid.uuid4().hex, name=name, arguments=arguments, hops=1,
                              deadline_ms=max(1, int(remaining * 1000)), trace_id=uuid.uuid4().hex,
                              origin=self._sign(peer_id, name, arguments, int((time.time() + remaining) * 1000)))
        return await self._call_peer(peer_id, request, deadline)

    def _deadline(self, timeout: float | None) -> float:
        """An absolute deadline: `timeout` seconds from now, or the configured call timeout."""
        return trio.current_time() + (timeout if timeout is not None else self.config.limits.call_timeout_seconds)

    async def fetch_peer_list(self, peer_id: str, *, timeout: float = 5.0) -> PeerList:
        """Ask a peer for the peers it knows (the /praxis/peers/1.0.0 extension)."""
        deadline = trio.current_time() + timeout
        async with closing_stream(await self._open_stream(peer_id, PEERS_PROTOCOL, deadline)) as stream:
            return await read_peer_list(stream, self.limits, deadline)

    async def _call_peer(self, peer_id: str, request: ToolRequest, deadline: float) -> ToolResponse:
        stream = await self._open_stream(peer_id, TOOL_PROTOCOL, deadline)
        try:
            async with closing_stream(stream):
                # The deadline bounds the wait for the answer, not the idle timeout: tools may be slow.
                return await request_tool(stream, request, replace(self.limits, idle_timeout=math.inf), deadline)
        except PeerUnreachable as exc:
            raise PeerUnreachable(exc.message, maybe_ran=True) from None

    async def _open_stream(self, peer_id: str, protocol: str, deadline: float) -> INetStream:
        assert self.host is not None
        limit = min(deadline, trio.current_time() + self.config.limits.connect_timeout_seconds)
        try:
            with trio.fail_at(limit):
                return await self.host.new_stream(ID.from_base58(peer_id), [protocol])  # type: ignore[list-item]
        except trio.TooSlowError:
            if limit >= deadline:
                raise ToolTimeout(f"deadline passed while opening a stream to peer {peer_id}") from None
            raise PeerUnreachable(f"no stream to peer {peer_id} within "
                                  f"{self.config.limits.connect_timeout_seconds:g} s") from None
        except Exception as exc:  # libp2p raises many unrelated types for a failed dial
            raise PeerUnreachable(f"cannot open a stream to peer {peer_id}: {type(exc).__name__}") from None

    async def _serve_tool_stream(self, stream: INetStream) -> None:
        peer_id = stream.muxed_conn.peer_id.to_string()
        await serve_tool_stream(stream, peer_id, self.service.handle, self.limits)

    # ----- cards ------------------------------------------------------------------

    async def _serve_card_stream(self, stream: INetStream) -> None:
        peer_id = stream.muxed_conn.peer_id.to_string()
        if not self.card_pushes.try_take(peer_id):
            # A peer re-pushing its card over and over costs parsing and listing on every push.
            if peer_id not in self._push_refused:
                self._push_refused.add(peer_id)
                log.info("peer %s pushes its card more than %d times a minute; pushes refused for now",
                         peer_id, self.card_pushes.limit)
            await end_stream(stream, ok=False)
            return
        self._push_refused.discard(peer_id)
        await self._exchange_on(stream, peer_id, trio.current_time() + self.limits.idle_timeout)

    async def _exchange_on(self, stream: INetStream, peer_id: str, deadline: float) -> None:
        """One card exchange on an open stream (either side); stores the peer's card."""
        try:
            async with closing_stream(stream):
                card = await exchange_cards(stream, self.own_card(), peer_id, self.limits, deadline)
        except PraxisError as exc:
            _log_card_failure(peer_id, exc)
            return
        self._store_card(card)

    def request_card_exchange(self, peer_id: str) -> None:
        """Exchange cards with a peer soon; at most one exchange per peer at a time."""
        if self._nursery is None:
            return
        if peer_id in self._exchanging:
            self._exchange_again.add(peer_id)
            return
        self._exchanging.add(peer_id)
        start_isolated(self._nursery, f"card exchange with {peer_id}", self._exchange_cards_with, peer_id)

    async def _exchange_cards_with(self, peer_id: str) -> None:
        try:
            while True:
                self._exchange_again.discard(peer_id)
                await self._exchange_once(peer_id)
                if peer_id not in self._exchange_again:
                    return
        finally:
            self._exchanging.discard(peer_id)

    async def _exchange_once(self, peer_id: str) -> None:
        deadline = trio.current_time() + self.limits.idle_timeout
        try:
            stream = await self._open_stream(peer_id, CARD_PROTOCOL, deadline)
        except PraxisError as exc:
            log.info("no card exchange with %s: %s", peer_id, exc.message)
            return
        await self._exchange_on(stream, peer_id, deadline)

    def _store_card(self, card: Card) -> None:
        if not self._is_connected(card.peer_id):
            return  # the peer left while its card was in flight
        is_new = self.directory.get(card.peer_id) is None
        if self.directory.update(card):
            log.info("peer %s (%s) offers %d tool(s): %s", card.name, card.peer_id, len(card.tools),
                     ", ".join(sorted(t.name for t in card.tools)) or "-")
        if is_new and self._nursery is not None and self.config.p2p.peer_exchange:
            start_isolated(self._nursery, f"peer exchange with {card.peer_id}", self._discover_through, card.peer_id)

    # ----- peer exchange: grow a full mesh from one bootstrap peer ----------------

    async def _serve_peers_stream(self, stream: INetStream) -> None:
        deadline = trio.current_time() + self.limits.idle_timeout
        try:
            async with closing_stream(stream):
                await send_peer_list(stream, self.peer_list(), self.limits, deadline)
        except PraxisError as exc:
            log.info("peer list not sent: %s", exc.message)

    async def _discover_through(self, peer_id: str) -> None:
        """Ask a new peer whom it knows, and dial some of those we are not connected to yet.

        A peer list is the peer's word, not proven: a dial only succeeds where Noise proves the
        listed peer ID, one address is tried per listed peer, and every dial is budgeted
        (node/mesh/dial_budget.py), so no list can aim this node's dials at an address at will.
        """
        try:
            peers = await self.fetch_peer_list(peer_id, timeout=self.limits.idle_timeout)
        except (InvalidRequest, TooLarge) as exc:  # a malformed or hostile list: nothing of it is used
            log.info("peer list from %s refused: %s", peer_id, exc.message)
            return
        except PraxisError as exc:  # e.g. a Go node without the extension: cards still work
            log.debug("no peer list from %s: %s", peer_id, exc.message)
            return
        assert self._nursery is not None and self.dialer is not None
        dials = 0
        for record in peers.peers:
            if dials >= PER_LIST:
                break
            if record.peer_id == self.peer_id or self._is_connected(record.peer_id):
                continue
            info = _dialable(record)
            if info is None:
                continue
            host, port = _host_port(info)
            if not self.dial_budget.allow(peer_id, host, port):
                log.debug("peer list from %s: dial budget spent; %s not dialled", peer_id, record.peer_id)
                continue
            dials += 1
            start_isolated(self._nursery, f"dialling {record.peer_id}", self.dialer.dial, info)

    def add_tool(self, contract: ToolContract) -> None:
        """Start serving a tool at run time; peers get the new card at once."""
        self.local.add(contract)
        self.notify_own_tools_changed()

    def remove_tool(self, name: str) -> None:
        if self.local.remove(name):
            self.notify_own_tools_changed()

    def notify_own_tools_changed(self) -> None:
        """Push a fresh card to every connected peer (call when the local tool set changes)."""
        self.own_card_changed.bump()
        self.directory.changed.bump()

    async def _push_card_on_change(self) -> None:
        seen = self.own_card_changed.version
        while True:
            seen = await self.own_card_changed.wait_past(seen)
            self._exchange_with_all()

    async def _advertise_shared_upstreams(self, upstreams: McpUpstreams) -> None:
        """Push a fresh card when the tools of `share: true` MCP servers change."""
        shared: dict[str, Any] = {}  # what the first card carried if it went out before the fetch
        seen = 0
        while True:
            seen = await upstreams.wait_changed(seen)
            if upstreams.shared_tools() != shared:
                shared = upstreams.shared_tools()
                self.notify_own_tools_changed()

    async def _refresh_cards_periodically(self) -> None:
        while True:
            await trio.sleep(self.config.p2p.card_refresh_seconds)
            self._exchange_with_all()

    def _exchange_with_all(self) -> None:
        for peer_id in self.connected_peers():
            self.request_card_exchange(peer_id)

    # ----- connections ------------------------------------------------------------

    def _is_connected(self, peer_id: str) -> bool:
        return is_connected(self.host, peer_id)

    def _on_connected(self, peer: ID) -> None:
        self.connections.bump()
        self.directory.record_connected(peer.to_string())
        self.request_card_exchange(peer.to_string())

    def _on_disconnected(self, network: INetwork, conn: INetConn) -> None:
        self.connections.bump()
        peer = conn.muxed_conn.peer_id
        remaining = [c for c in network.get_connections(peer) if c is not conn]
        if not remaining:
            self.card_pushes.forget(peer.to_string())
            self._push_refused.discard(peer.to_string())
            if self.directory.remove(peer.to_string()):
                log.info("peer %s disconnected; its tools are gone", peer.to_string())


def _dialable(record: PeerRecord) -> PeerInfo | None:
    """The first of the record's addresses that is an IP and TCP address naming the record's
    peer (never a DNS name: a list must not make this node resolve names a peer chose)."""
    for addr in record.addrs:
        try:
            info = parse_peer_addr(addr)
        except ValueError:
            continue
        if info.peer_id.to_string() == record.peer_id and len(info.addrs) == 1 and all(_host_port(info)):
            return info
    return None


def _host_port(info: PeerInfo) -> tuple[str, str]:
    addr = info.addrs[0]
    host = ""
    for proto in ("ip4", "ip6"):
        try:
            host = addr.value_for_protocol(proto) or ""
        except Exception:  # multiaddr raises when the protocol is absent
            continue
        if host:
            break
    try:
        port = addr.value_for_protocol("tcp") or ""
    except Exception:  # not a TCP address
        port = ""
    return str(host), str(port)


def _log_card_failure(peer_id: str, exc: PraxisError) -> None:
    # A refused (lying or malformed) card is worth a warning; a peer leaving mid-exchange is not.
    level = logging.INFO if isinstance(exc, PeerUnreachable | ToolTimeout) else logging.WARNING
    log.log(level, "card exchange with %s failed: %s", peer_id, exc.message)


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
