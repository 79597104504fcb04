"""Workarounds for py-libp2p bugs, and hooks it lacks (`on_mesh_peer_added`), applied to one
host's swarm, pubsub or router instance at a time (never to the class). Each says which library
behaviour it works around and why; most also name the test that fails without them.

**Inbound slot leak (py-libp2p 0.8.1, `libp2p/network/swarm.py`).**
`Swarm._handle_inbound_connection` takes a slot of `Swarm._inbound_limiter` (a
`trio.CapacityLimiter` of `max_connections - min_connections` tokens: 250 with the default
`ConnectionConfig`) and gives it back in a `finally` once `_do_handle_inbound_connection`
returns. But after a successful upgrade that function waits on `self.manager.wait_finished()`:
it returns only when the swarm stops. Every inbound connection the node ever accepted keeps its
slot, and its handler task, after it has closed; after about 250 inbound connections in the
node's life (sequential, never concurrent: 250 `praxis-node call --peer` runs do it) every new
inbound connection is refused until the node restarts.

`release_inbound_slot_on_close(swarm)` ends that handler when its connection closes, so the
library's own `finally` returns the slot: the limiter then bounds inbound connections open at
once, as intended. It wraps two methods of this one swarm instance, and copies no library code:

- `_do_handle_inbound_connection` runs inside a nursery whose cancel scope is the handler's;
- `add_conn`, when the handler task registers its inbound connection, starts a watcher in that
  nursery which waits for the connection's `event_closed` and then cancels the scope (the
  library is waiting in `wait_finished()` by then; nothing of the connection runs in that task).

Remove it when py-libp2p releases the slot when the connection closes:
`tests/hardening/test_connections.py::test_unpatched_libp2p_still_leaks_inbound_slots` is the
canary that fails once the library no longer leaks.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import trio
from libp2p.abc import IHost, IMuxedConn, INetStream, INetwork, ISecureConn
from libp2p.host.exceptions import StreamFailure
from libp2p.network.connection.exceptions import RawConnError
from libp2p.network.connection.swarm_connection import SwarmConn
from libp2p.network.exceptions import SwarmException
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.rcmgr import Direction
from multiaddr import Multiaddr

from node.mesh.notifee import Notifee

_PATCHED = "_praxis_releases_inbound_slots"


def release_inbound_slot_on_close(swarm: Swarm) -> None:
    """Make this swarm give an inbound connection's limiter slot back when the connection closes."""
    if getattr(swarm, _PATCHED, False):
        return
    handle_inbound = swarm._do_handle_inbound_connection
    add_conn = swarm.add_conn
    # The handler task of each inbound connection being handled -> the nursery it runs in.
    handlers: dict[trio.lowlevel.Task, trio.Nursery] = {}

    async def do_handle_inbound_connection(*args: Any, **kwargs: Any) -> None:
        task = trio.lowlevel.current_task()
        async with trio.open_nursery() as nursery:
            handlers[task] = nursery
            try:
                await handle_inbound(*args, **kwargs)
            finally:
                del handlers[task]
                nursery.cancel_scope.cancel()  # the library gave up on this connection: stop watching

    async def add_conn_watched(muxed_conn: Any, direction: str = "unknown") -> SwarmConn:
        conn = await add_conn(muxed_conn, direction)
        nursery = handlers.get(trio.lowlevel.current_task())
        if nursery is not None and direction == "inbound":
            nursery.start_soon(_cancel_when_closed, conn, nursery.cancel_scope)
        return conn

    swarm._do_handle_inbound_connection = do_handle_inbound_connection  # type: ignore[method-assign]
    swarm.add_conn = add_conn_watched  # type: ignore[method-assign]
    setattr(swarm, _PATCHED, True)


async def _cancel_when_closed(conn: SwarmConn, scope: trio.CancelScope) -> None:
    await conn.event_closed.wait()  # set as soon as SwarmConn.close() begins, whoever closes it
    scope.cancel()


def disable_auto_connector(swarm: Swarm) -> None:
    """Switch off py-libp2p's AutoConnector on this swarm.

    **Dials nobody asked for (py-libp2p 0.8.1, `libp2p/network/auto_connector.py`).** Every
    30 s, and whenever a connection closes, the AutoConnector dials peers from the peerstore
    until the node holds about `(low_watermark + high_watermark) / 2` connections. The
    peerstore fills with what peers say (peer lists, identify), so a peer could aim this
    node's dials at addresses of its choosing, again and again, past every budget of
    node/mesh/dial_budget.py. The node keeps its bootstrap peers connected itself (node/mesh/dialer.py)
    and dials discovered peers within those budgets, so the AutoConnector has no job here.
    `maybe_connect` is what both of its triggers call; on this swarm it does nothing.
    """

    async def no_auto_connect() -> None:
        return None

    swarm.auto_connector.maybe_connect = no_auto_connect  # type: ignore[method-assign]


WRITE_TIMEOUT = 10.0  # seconds a write, once begun, may take before its connection is given up


def whole_writes(swarm: Swarm, timeout: float = WRITE_TIMEOUT) -> None:
    """Make every write on this swarm's connections go out whole, even when its caller is cancelled.

    **A cancelled write breaks the whole connection (py-libp2p 0.8.1, `security/noise/io.py`).**
    Noise encrypts a message with the session's next nonce and then sends it; trio may cancel
    the send after the nonce is spent and before every byte is out. The peer then fails to
    decrypt everything that follows ("Failed authentication of message") and closes the
    connection, with every stream on it. Cancelling is routine here: a DHT walk ended by a
    deadline, a tool lookup whose answer came by another path. A lookup that cancelled its DHT
    walk mid-write broke the connection its call was about to use ("cannot open a stream to
    peer ...: StreamFailure"), in about one run in 20 to 30 of
    `tests/test_discovery.py::test_a_tool_on_a_node_never_connected_is_found_through_the_dht_and_called`.

    Each connection's secured channel (below yamux, which already writes one frame at a time)
    writes within a shielded scope of its own, bounded by `timeout`: a cancelled caller waits for
    its frame to go out, and then sees the cancellation. A write that outlasts the bound leaves
    the channel with part of a message sent, so the connection is closed.
    Tests: `tests/test_whole_writes.py` (the canary `test_unpatched_libp2p_still_breaks_on_a_cancelled_write`
    fails once the library's writes survive cancellation).
    """
    upgrader: Any = swarm.upgrader
    upgrade = upgrader.upgrade_connection

    async def upgrade_connection(conn: ISecureConn, peer_id: ID) -> IMuxedConn:
        conn.write = written_whole(conn, timeout)  # type: ignore[method-assign,assignment]
        muxed: IMuxedConn = await upgrade(conn, peer_id)
        return muxed

    upgrader.upgrade_connection = upgrade_connection


def written_whole(conn: ISecureConn, timeout: float) -> Callable[[bytes], Coroutine[Any, Any, None]]:
    """`conn.write`, shielded from its caller's cancellation and bounded by `timeout` of its own.
    Not the caller's deadline: a write to a peer whose process reads nothing for `timeout`
    seconds now ends the connection, where it used to wait as long as its caller did."""
    write = conn.write

    async def write_whole(data: bytes) -> None:
        with trio.CancelScope(deadline=trio.current_time() + timeout, shield=True) as scope:
            await write(data)
        if scope.cancelled_caught:
            with trio.CancelScope(deadline=trio.current_time() + timeout, shield=True):
                await conn.close()  # part of a message may be out: nothing after it can be read
            raise RawConnError(f"a write of {len(data)} bytes took over {timeout:g} s; connection closed")

    return write_whole


def forget_failed_dial(host: IHost, peer: ID) -> None:
    """Let the next dial of `peer` go out even if an earlier one failed.

    **Failed-dial cache (py-libp2p 0.8.1, `Swarm._negative_peer_cache`).** After a dial of a
    peer fails on every address, the swarm refuses to dial that peer again for about a minute
    ("recently failed all addresses"), even once the peer is up: a restarted bootstrap peer
    stayed unreachable that long. The node's dialer keeps its own backoff, so before each of
    its dials it lifts the swarm's block for that peer (the library's own `evict`).
    """
    cache = getattr(host.get_network(), "_negative_peer_cache", None)
    if cache is not None:
        cache.evict(str(peer))


def bound_provider_store(store: Any, *, ttl: float, max_keys: int, added: Callable[[], None] = lambda: None) -> None:
    """Give one DHT provider store a record lifetime and a size bound.

    **Provider records live 48 h (py-libp2p 0.8.1, `kad_dht/provider_store.py`).** The lifetime
    is the module constant `PROVIDER_RECORD_EXPIRATION_INTERVAL`, read by every store in the
    process, so a node that left was still offered for two days; and `add_provider` stores any
    number of keys a peer announces. On this store instance only: `get_providers` (what lookups
    and GET_PROVIDERS answers read) first drops records older than `ttl`, and `add_provider`
    refuses a new key once `max_keys` keys are held (after dropping expired records); `added` is
    called after each record stored.
    Test: `tests/hardening/test_discovery_hostile.py::test_provider_records_expire_after_the_ttl`
    (fails without it: the record is still served after its TTL).
    """
    get_providers = store.get_providers
    add_provider = store.add_provider

    def drop_expired(key: bytes | None = None) -> None:
        cutoff = time.time() - ttl
        keys = [key] if key is not None else list(store.providers)
        for k in keys:
            records = store.providers.get(k)
            if records is None:
                continue
            for peer in [p for p, r in records.items() if r.timestamp < cutoff]:
                del records[peer]
            if not records:
                del store.providers[k]

    def bounded_get_providers(key: bytes) -> Any:
        drop_expired(key)
        return get_providers(key)

    def bounded_add_provider(key: bytes, provider: Any) -> None:
        if key not in store.providers and len(store.providers) >= max_keys:
            drop_expired()
            if len(store.providers) >= max_keys:
                return  # full: a flood of keys cannot grow this node's memory
        add_provider(key, provider)
        added()

    store.get_providers = bounded_get_providers
    store.add_provider = bounded_add_provider


def narrow_dht_walks(peer_routing: Any, width: int) -> None:
    """Make one DHT's walks seek the `width` closest peers instead of k = 20.

    **Every walk touches k = 20 peers (py-libp2p 0.8.1, `kad_dht/peer_routing.py`).**
    `find_closest_peers_network(key, count=20)` queries each of the 20 closest peers it learns
    of (α = 10 at a time), and `ProviderStore.provide` and `find_providers` call it with that
    default: a provide sends ADD_PROVIDER to 20 peers and a lookup asks 20 for providers, each
    a dial when not connected. In a mesh of a few dozen nodes that is most of the mesh, and on
    two cores those dials kept 30 nodes in one process saturated for their first minute.
    On this routing instance only, every walk returns the `width` closest peers; providers and
    lookups converge on the same `width` peers, so a record is stored `width` times instead
    of 20 (re-provided every `p2p.provide_refresh_seconds`).
    Test: `tests/test_discovery.py::test_a_provide_reaches_only_the_walk_width` (fails
    without it: the provide reaches every peer of a 12-node mesh).
    """
    walk = peer_routing.find_closest_peers_network

    async def narrow_walk(target_key: bytes, count: int = width) -> list[Any]:
        return await walk(target_key, min(count, width))

    peer_routing.find_closest_peers_network = narrow_walk


def pubsub_rides_existing_connections(pubsub: Any) -> None:
    """Make one Pubsub open its streams only on connections that exist, never dial for them.

    **Pubsub re-dials a closed peer (py-libp2p 0.8.1, `pubsub/pubsub.py`).** When a peer's
    pubsub stream ends and the peer still looks connected (as it does while its connection is
    closing), `_handle_dead_peer` schedules `_handle_new_peer_with_retry`, whose
    `host.new_stream` dials the peer again once the connection is gone. Each connection the
    peer keeper closed over `p2p.max_peers` came straight back this way (122 of the dials in the
    first minute of 30 nodes in one process). On this instance, `_handle_new_peer` does nothing
    for a peer without a connection: the next connection, whoever opens it, brings the stream.
    Test: `tests/test_discovery.py::test_pubsub_does_not_dial_a_peer_it_lost` (fails without
    it: the stream attempt reconnects the peer).
    """
    handle_new_peer = pubsub._handle_new_peer
    network = pubsub.host.get_network()

    async def handle_new_peer_if_connected(peer_id: ID) -> None:
        if network.get_connections(peer_id):
            await handle_new_peer(peer_id)

    pubsub._handle_new_peer = handle_new_peer_if_connected


PUBSUB_STREAM_TRIES = 5  # stream opens to one peer that fail in negotiation before pubsub gives up
MAX_STREAM_FAILURES = 4096  # peers whose failed opens are counted at once


def pubsub_retries_failed_stream_negotiation(pubsub: Any, tries: int = PUBSUB_STREAM_TRIES) -> None:
    """Make one Pubsub try again, a few times, when its stream to a connected peer fails in
    protocol negotiation, as the library already does when the swarm fails.

    **A peer's pubsub stream is given up after one failed negotiation (py-libp2p 0.8.1,
    `Pubsub._handle_new_peer_with_retry`).** The library retries a `SwarmException` while the
    peer stays connected, but `host.new_stream` reports a negotiation that failed (under load:
    "response timed out after 10s", dozens of times while 50 nodes start in one process) as
    `StreamFailure`, which it takes as final: that peer is then never registered with pubsub
    while the connection lasts. A newcomer whose one connection was its bootstrap peer heard no
    announcement at all (seen: three of 50 nodes left with one connection, no pubsub peer and a
    directory of one card). Here a `StreamFailure` is retried the library's way (its backoff,
    0.5 s doubling to 10 s, while connected) up to `tries` opens per peer, then given up as
    before: a peer without pubsub (the Go node) costs `tries` negotiations per connection.
    Test: `tests/test_pubsub_patches.py::test_a_failed_pubsub_negotiation_is_tried_again`;
    canary `::test_unpatched_libp2p_still_gives_up_a_peer_after_one_failed_negotiation`.
    """
    handle_new_peer = pubsub._handle_new_peer
    failed: dict[ID, int] = {}

    async def handle_new_peer_retrying(peer_id: ID) -> None:
        try:
            await handle_new_peer(peer_id)
        except StreamFailure as exc:
            count = failed.pop(peer_id, 0) + 1
            if count >= tries:
                raise  # the library gives up, as it would have at once
            if len(failed) >= MAX_STREAM_FAILURES:
                failed.clear()
            failed[peer_id] = count
            raise SwarmException(f"pubsub stream negotiation failed ({count} of {tries})") from exc
        failed.pop(peer_id, None)

    pubsub._handle_new_peer = handle_new_peer_retrying


def on_mesh_peer_added(router: GossipSub, callback: Callable[[ID, str], None]) -> None:
    """Call `callback(peer_id, topic)` whenever one GossipSub router adds a peer to a topic's mesh.

    **No event for "the mesh has a peer" (py-libp2p 0.8.1, `pubsub/gossipsub.py`).** The router
    calls its private `_notify_mesh_peer_added` on every path that adds a mesh peer (a
    subscription, a GRAFT, the heartbeat), only to wake `wait_for_mesh`, which waits for one
    named peer. This wraps that method on the instance; without it (the library renamed it) the
    node fails to start here rather than announcing late.
    Test: `tests/test_discovery.py::test_a_new_nodes_card_reaches_the_mesh_with_its_first_mesh_peer`.
    """
    notify = router._notify_mesh_peer_added

    def notify_and_call(peer_id: ID, topic: str) -> None:
        notify(peer_id, topic)
        callback(peer_id, topic)

    router._notify_mesh_peer_added = notify_and_call  # type: ignore[method-assign]


def gossipsub_refuses_grafts_past_d_high(router: GossipSub, host: IHost) -> None:
    """Make one GossipSub router answer a GRAFT with a PRUNE when the topic's mesh already holds
    `degree_high` peers and this node did not dial the grafting peer.

    **Meshes grow past D_high between heartbeats (py-libp2p 0.8.1, `GossipSub.handle_graft`).**
    The library adds every peer that grafts, and only its heartbeat prunes the mesh back to D
    (1 s apart on a node, 30-60 s under the library's adaptive gossip, which the node turns off):
    until then any number of peers, sybils included, sit in the mesh and are sent every message. go-libp2p
    refuses such a GRAFT (`handleGraft`: at D_hi it accepts only peers it dialled, which an
    attacker cannot choose, against a takeover of the mesh) and backs off from the peer; this
    does the same, with the library's own PRUNE and backoff.
    Test: `tests/test_pubsub_patches.py::test_a_graft_past_d_high_is_pruned_unless_this_node_dialled`;
    canary `::test_unpatched_libp2p_still_grafts_past_d_high`.
    """
    handle_graft = router.handle_graft

    async def handle_graft_within_d_high(graft_msg: rpc_pb2.ControlGraft, sender_peer_id: ID) -> None:
        topic = graft_msg.topicID
        mesh = router.mesh.get(topic)
        if (mesh is not None and sender_peer_id not in mesh and len(mesh) >= router.degree_high
                and not _dialled(host, sender_peer_id)):
            router._add_back_off(sender_peer_id, topic, False)
            await router.emit_prune(topic, sender_peer_id, False, False)
            return
        await handle_graft(graft_msg, sender_peer_id)

    router.handle_graft = handle_graft_within_d_high  # type: ignore[method-assign]


def gossipsub_backs_off_peers_it_prunes(router: GossipSub) -> None:
    """Make one GossipSub router back off from the peers its heartbeat prunes, as the spec and
    go-libp2p do (go: `prunePeer` in `heartbeat` calls `addBackoff`).

    **The heartbeat prunes without backing off (py-libp2p 0.8.1, `GossipSub.mesh_heartbeat`).**
    Past D_high it prunes the mesh back to D and tells the peers so, but keeps no backoff of its
    own; the pruned peers do keep one (from the PRUNE). So the next heartbeat's opportunistic
    grafting, which skips only peers in backoff, grafts them again; they answer with a PRUNE (the
    library logs "GRAFT flood detected" within 10 s, "GRAFT: ignoring request" after) and only
    then does this node back off: a GRAFT and a PRUNE wasted for most prunes, and a mesh that
    churns. 100 nodes in one process logged 7,991 and 2,214 of those in about 10 minutes; their
    core stayed saturated; with this patch (two runs) none and 1,373-2,417, and the core idled at
    66-69% once the mesh had settled. (Packed 25 to a process on two cores, 100 nodes showed no
    clear gain in two runs each way; see the README.) This adds the library's own prune backoff
    for each peer the heartbeat prunes.
    Test: `tests/test_pubsub_patches.py::test_a_peer_pruned_by_the_heartbeat_is_not_grafted_again`;
    canary `::test_unpatched_libp2p_still_grafts_again_a_peer_it_pruned`.
    """
    mesh_heartbeat = router.mesh_heartbeat

    def mesh_heartbeat_backing_off() -> tuple[defaultdict[ID, list[str]], defaultdict[ID, list[str]]]:
        to_graft, to_prune = mesh_heartbeat()
        for peer, topics in to_prune.items():
            for topic in topics:
                router._add_back_off(peer, topic, False)
        return to_graft, to_prune

    router.mesh_heartbeat = mesh_heartbeat_backing_off  # type: ignore[method-assign]


def gossipsub_publishes_past_an_empty_mesh(router: GossipSub) -> None:
    """Make one GossipSub router send this node's own messages to D topic peers when its mesh for
    the topic is empty, instead of to nobody.

    **An own message with an empty mesh goes nowhere (py-libp2p 0.8.1,
    `GossipSub._get_peers_to_send`).** For a topic the node has joined, the library sends only to
    the topic's mesh; it has no flood publishing (the v1.1 spec's, on by default in go-libp2p,
    which sends a node's own messages to every topic peer). A node whose mesh is empty (grafts
    refused past D_high and backoffs after prunes leave a few so for a minute or more: 2 of 40
    nodes at rest, `praxis_gossip_mesh_peers` 0) announced to nobody: its peers kept its card
    only by fetching it again every `p2p.card_refresh_seconds`, and the rest of the mesh not at
    all. With this, such a node's own messages go to up to D of its topic peers (as the library
    picks fanout peers for a topic it has not joined), who forward them along their meshes;
    forwarding and a node with a mesh are unchanged.
    Test: `tests/test_pubsub_patches.py::test_an_own_message_with_an_empty_mesh_reaches_topic_peers`;
    canary `::test_unpatched_libp2p_sends_an_own_message_with_an_empty_mesh_to_nobody`.
    """
    peers_to_send = router._get_peers_to_send

    def peers_to_send_past_an_empty_mesh(topic_ids: Iterable[str], msg_forwarder: ID, origin: ID,
                                         msg_id: bytes | None = None) -> Iterable[ID]:
        pubsub = router.pubsub
        if pubsub is None or origin != pubsub.my_id or msg_forwarder != pubsub.my_id:
            return peers_to_send(topic_ids, msg_forwarder, origin, msg_id)  # forwarding: as the library has it
        topics = list(topic_ids)
        peers = set(peers_to_send(topics, msg_forwarder, origin, msg_id))
        if peers:
            return peers
        for topic in topics:
            if topic in router.mesh and not router.mesh[topic] and topic in pubsub.peer_topics:
                peers.update(router._get_in_topic_gossipsub_peers_from_minus(topic, router.degree, ()))
        return peers

    router._get_peers_to_send = peers_to_send_past_an_empty_mesh  # type: ignore[method-assign]


def _dialled(host: IHost, peer: ID) -> bool:
    """Whether this node holds a connection to `peer` that it dialled itself."""
    network = host.get_network()
    return any(getattr(conn, "direction", None) == Direction.OUTBOUND for conn in network.get_connections(peer))


def pubsub_skips_cache_replays(pubsub: Any) -> None:
    """Make one Pubsub leave its message cache to itself when a peer subscribes.

    **Every new pubsub peer is sent the whole message cache (py-libp2p 0.8.1, `pubsub/pubsub.py`
    `_replay_recent_messages`, not in the GossipSub spec).** Each message of the last
    `gossip_window` heartbeats goes out again, one RPC each, to every peer whose subscription
    arrives, and connections come and go all the time here (calls, DHT walks, the keeper's trims).
    `py-spy` on a node of a 40-node mesh while it converged: a fifth of its CPU in these replays,
    and more at the receivers (each RPC's peer record checked, each message's signature). An
    announcement repeats every period anyway, and a tool not yet announced is found through the
    DHT; on this instance the replay does nothing.
    Test: `tests/test_pubsub_patches.py` (with a canary that fails once the library stops replaying).
    """

    async def no_replay(peer_id: ID, topic: str) -> None:
        return None

    pubsub._replay_recent_messages = no_replay


def pubsub_sends_no_peer_records(pubsub: Any) -> None:
    """Make one Pubsub send its RPCs without the signed peer record py-libp2p adds to each.

    **A signed peer record in every RPC (py-libp2p 0.8.1; go-libp2p sends one only with peer
    exchange).** The receiver checks its Ed25519 signature for every RPC (`crypto_sign_open` was
    7% of a busy node's CPU). Peers learn our addresses from identify on each connection and
    from our card; on this instance the record is left out of what is written.
    Test: `tests/test_pubsub_patches.py`.
    """
    write_msg = pubsub.write_msg

    async def write_without_record(stream: Any, rpc: Any) -> bool:
        rpc.ClearField("senderRecord")
        return bool(await write_msg(stream, rpc))

    pubsub.write_msg = write_without_record


def pubsub_merges_queued_rpcs(pubsub: Any, max_bytes: int) -> None:
    """Make one Pubsub write the RPCs queued for a peer as one, up to `max_bytes`, not one by one.

    **One write per RPC (py-libp2p 0.8.1, `pubsub/pubsub.py` `handle_sending_messages`).** Each
    peer's sending task pops one RPC and writes it: one Noise message, one yamux frame, one
    send, and at the peer one read, one frame and one wake of its reading task, for every
    message forwarded: most of a message's cost (`py-spy` of a packed worker: the write and read
    paths about twice the handling of the messages). A queue holds 32 RPCs; the library drops
    what comes past that, so a busy node lost announcements. On this instance the sending task
    takes what else is queued for the peer when it wakes and writes it in the same RPC (protobuf
    concatenates the repeated `publish`, `subscriptions` and control fields), up to `max_bytes`.
    An idle node's queue holds one RPC and nothing changes; a busy node's RPCs merge, so the
    cost per message falls, and its queues drain, as the load grows.
    Test: `tests/test_pubsub_patches.py::test_rpcs_queued_for_a_peer_go_out_in_one_write`.
    """

    async def send_merged(peer_id: ID, stream: INetStream, queue: Any) -> None:
        held: Any = None  # an RPC that did not fit the last write: the next write starts with it
        try:
            while True:
                rpc = held if held is not None else await queue.pop()
                held = None
                if rpc is None:  # the queue closed: the peer is gone
                    return
                out, size = rpc, rpc.ByteSize()
                while len(queue):  # pop() returns at once while one is queued
                    queued = await queue.pop()
                    if queued is None or size + queued.ByteSize() > max_bytes:
                        held = queued
                        break
                    if out is rpc:  # into a copy: pubsub queues one RPC object for several peers (subscriptions)
                        out = rpc_pb2.RPC()
                        out.CopyFrom(rpc)
                    out.MergeFrom(queued)
                    size += queued.ByteSize()
                if not await pubsub.write_msg(stream, out):
                    return
        except Exception:  # as the library's loop: the stream broke, the peer is gone
            pubsub._handle_dead_peer(peer_id)

    pubsub.handle_sending_messages = send_merged


def addresses_skip_closed_listeners(host: IHost) -> None:
    """Make one host's address list leave out listeners that are closing instead of raising.

    **A stopping host raises from its address list (py-libp2p 0.8.1, `transport/tcp/tcp.py`).**
    `TCPListener.get_addrs` calls `getsockname()` on every listening socket; once the swarm has
    closed them (as a node stops), it raises `OSError: Bad file descriptor`. The host asks for its
    addresses from tasks of its own (identifying a new connection, signing the peer record that
    every GossipSub message carries), so a peer connecting while a node stopped ended the node with
    that error. On this host, `get_transport_addrs` (what `get_addrs` reads) skips such a listener.
    Test: `tests/hardening/test_connections.py::test_a_host_whose_listener_closed_lists_no_address`.
    """
    network = host.get_network()

    def get_transport_addrs() -> list[Multiaddr]:
        addrs: list[Multiaddr] = []
        for listener in list(network.listeners.values()):
            try:
                addrs.extend(listener.get_addrs())
            except OSError:  # closed under us: it listens nowhere any more
                continue
        return addrs

    host.get_transport_addrs = get_transport_addrs  # type: ignore[attr-defined,method-assign]


def addresses_keep_their_longest_lifetime(peerstore: Any) -> None:
    """Make one peerstore keep a peer's addresses as long as the longest-lived add asked.

    **One expiry per peer, set by whichever add came last (py-libp2p 0.8.1, `peer/peerstore.py`).**
    `add_addrs(peer, addrs, ttl)` sets the peer's single TTL from now, for every address it holds.
    Identify stores a connected peer's listen addresses for 2 h; the node then stores the ones
    its card names for `p2p.announce_ttl_seconds`, and that shorter TTL expired them all. A
    peer pruned for `p2p.max_peers` stays offered for a lease (`PeerDirectory.unlink`), longer
    than that in a big mesh, and a call to it failed with "No known addresses" ("peer ID is
    expired"; `test_thirty_nodes_keep_to_max_peers...` failed so in CI and here). On this
    peerstore an add never shortens the expiry of addresses still held; an address given for
    ever (TTL 0) stays so.
    Tests: `tests/test_peer_addresses.py` (canary:
    `::test_unpatched_libp2p_still_expires_addresses_at_the_last_ttl`).
    """
    add_addrs = peerstore.add_addrs

    def add_addrs_keeping_lifetime(peer_id: ID, addrs: Any, ttl: int = 0) -> None:
        add_addrs(peer_id, addrs, _lifetime(peerstore, peer_id, ttl))

    peerstore.add_addrs = add_addrs_keeping_lifetime  # `add_addr` and peer records call it too


def _lifetime(peerstore: Any, peer_id: ID, ttl: int) -> int:
    """The TTL for an add of `ttl` that leaves the peer's live addresses at least their own."""
    held = peerstore.peer_data_map.get(peer_id)
    if held is None or not held.get_addrs() or held.is_expired():
        return ttl
    if held.ttl == 0 or ttl == 0:  # 0: valid for ever, in the library's terms
        return 0
    return max(ttl, held.last_identified + held.ttl - int(time.time()))


def batch_yamux_window_updates(swarm: Swarm) -> None:
    """Make one swarm's yamux streams give receive credit back once half the window is read.

    **A WINDOW_UPDATE frame for every read (py-libp2p 0.8.1, `stream_muxer/yamux/yamux.py`).**
    `YamuxStream._auto_tune_and_send_window_update(bytes_read=n)` runs after every read, and
    whenever less than half the window has been consumed (always, for small messages) it sends
    a WINDOW_UPDATE for the bytes just read: with `PY_YAMUX_RELEASE_ON_READ` on (its default) and,
    through its "partial slack" branch, with it off too. GossipSub reads each RPC's length prefix
    a byte at a time, so every message received cost an encrypted frame and a `send()` back;
    `py-spy` on a node of a 40-node mesh found a quarter of its CPU in these updates.
    go-yamux sends one only once half the window is consumed. On this swarm's streams the
    method is called with `bytes_read=0`, which leaves just that rule (the library's own
    `delta >= threshold` branch, its window auto-tuning included).
    Tests: `tests/test_yamux_credit.py` (the canary `test_unpatched_libp2p_still_sends_an_update_per_read`
    fails once the library batches credit itself).
    """
    swarm.register_notifee(_BatchedWindowUpdates())


class _BatchedWindowUpdates(Notifee):
    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        muxed = getattr(stream, "muxed_stream", None)
        update = getattr(muxed, "_auto_tune_and_send_window_update", None)
        if update is None:  # not a yamux stream
            return

        async def batched(*, bytes_read: int = 0) -> None:
            await update(bytes_read=0)  # credit what was read once it is half the window

        muxed._auto_tune_and_send_window_update = batched  # type: ignore[union-attr]
