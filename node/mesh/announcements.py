"""Card announcements over GossipSub (py-libp2p's `libp2p.pubsub`), topic `/praxis/cards/1.0.0`.

A node publishes its own card when it starts, whenever its tools change, periodically, and
(`leaving`) when it stops. The period is `p2p.announce_seconds`, or `p2p.announce_seconds_per_peer`
per peer this node knows when that is longer: every node receives every announcement, so a fixed
period made each node's idle work grow with the mesh (40 nodes every 15 s: ~3 messages a second,
each received from several mesh peers); so the mesh as a whole sends one every
`announce_seconds_per_peer` seconds, whatever its size. The period is read again when it is due
(`Announcements._due`), so that those set while a mesh starts grow as directories fill, and a
newcomer takes the period the announcements it hears show (`heard_period`). Each
announcement carries its lease (`ttl`), scaled with the period from `p2p.announce_ttl_seconds`.

GossipSub signs each message with the publisher's key and checks that signature on every hop
(`strict_signing`); this module refuses a card that names anyone but the signer, so an
announcement is as much proof as a card exchanged over a Noise connection. A card learnt this
way is kept for its announcement's `ttl` after the last one (`PeerDirectory.update(...,
announced_until=...)`).

A change therefore reaches the whole mesh through GossipSub's mesh of a few peers each
(degree 6), never by a push to every peer. Bounds, enforced in the topic validator before a
message is forwarded: one message at most `MAX_ANNOUNCEMENT_BYTES`; per signer at most
`limits.max_card_pushes_per_minute` announcements a minute (the rest are dropped and not
forwarded); the card must parse within the wire limits. Pubsub itself caps an inbound RPC at
`MAX_RPC_BYTES` and accepts subscriptions to this topic only.

py-libp2p defaults changed here: heartbeat 120 s -> `p2p.gossip_heartbeat_seconds` (1 s); the
mesh degree is smaller and fits `p2p.max_peers` (`gossip_degrees`); its adaptive gossip is off.
That "v2.0" addition scores the mesh's health every 30 s and, when it scores it low, sets the
heartbeat to 30-60 s (its comment calls that faster recovery) and raises D_low and D_high by up
to 3 and 4. Measured, 50 nodes in one process, settled: with it, 33 nodes at a 60 s heartbeat,
meshes of up to 12 peers, 6.5 messages written per node a second and 0.86% of a core per node;
without it (three runs), every heartbeat 1 s, meshes of at most 8, 3.5-4.1 messages and
0.64-0.71%. (In one run each way one node's mesh stayed empty and its directory at 1 card:
pubsub had given up its peers, see `libp2p_patches.pubsub_retries_failed_stream_negotiation`.)
Left as the library has it: its opportunistic grafting, which grafts up to two more peers at
every heartbeat (the heartbeat prunes back to D past D_high): turned off, IHAVE gossip to
non-mesh peers rose from 0.15 to 3.5-4 per node a second and the CPU per node to 1.0-1.2%
(three runs), for reasons not found.
Peer exchange on PRUNE (`do_px`) was considered and stays off: py-libp2p dials every peer a
PRUNE names, outside the node's connection bound; in a 30-node test it kept connections
churning (hundreds of prunes a minute).
New peers come from the DHT's routing table instead (node/mesh/peer_keeper.py).
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import NamedTuple

import trio
from libp2p.abc import IHost, ISubscriptionAPI
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from node.mesh.activity import MeshActivity
from node.mesh.directory import PeerDirectory
from node.mesh.libp2p_patches import (
    forget_failed_dial,
    gossipsub_backs_off_peers_it_prunes,
    gossipsub_publishes_past_an_empty_mesh,
    gossipsub_refuses_grafts_past_d_high,
    on_mesh_peer_added,
    pubsub_merges_queued_rpcs,
    pubsub_retries_failed_stream_negotiation,
    pubsub_rides_existing_connections,
    pubsub_sends_no_peer_records,
    pubsub_skips_cache_replays,
)
from node.mesh.peer_addresses import remember_card_addrs
from node.mesh.stream_guard import guarded
from node.runtime.rate import RateWindow
from node.runtime.signals import ChangeSignal
from protocols.announce import (
    CARDS_TOPIC,
    MAX_ANNOUNCEMENT_BYTES,
    MAX_TTL_SECONDS,
    decode_announcement,
    encode_announcement,
)
from protocols.errors import PraxisError, TooLarge
from protocols.messages import Card

log = logging.getLogger("praxis.announce")

MAX_RPC_BYTES = 2 * MAX_ANNOUNCEMENT_BYTES  # one pubsub RPC frame (py-libp2p's default: 1 MiB)
MAX_MERGED_RPC_BYTES = MAX_ANNOUNCEMENT_BYTES  # queued RPCs written as one up to this (half a frame: room for control)
LEAVE_TIMEOUT = 1.0  # for the leaving announcement when the node stops
FLUSH_POLL = 0.01
SEEN_SIGNERS = 4096  # last-message cache entries kept at most
HEARD_QUORUM = 3  # signers heard before their leases set this node's period
# py-libp2p's GossipSub drops messages past 10 a second per *forwarding* peer and topic: a peer
# relays everyone's announcements, so with 30 nodes starting together half the cards were lost.
# Raised here; what bounds a publisher is the per-signer limit in the topic validator.
RELAYED_PER_SECOND = 200.0


class _Heard(NamedTuple):
    """A signer's last accepted announcement and the lease it gave."""

    data: bytes
    lease: float


_NOTHING = _Heard(b"", 0.0)


class Announcements:
    def __init__(
        self,
        host: IHost,
        directory: PeerDirectory,
        card: Callable[[], Card],
        own_card_changed: ChangeSignal,
        *,
        every: float,
        per_peer: float,
        ttl: float,
        heartbeat: int,
        per_minute: int,
        max_peers: int,
        activity: MeshActivity,
    ) -> None:
        self.host = host
        self.directory = directory
        self.card = card
        self.own_card_changed = own_card_changed
        self.every = every
        self.per_peer = per_peer
        self.ttl = ttl
        self.own_id = host.get_id().to_string()
        self.rate = RateWindow(per_minute)
        self.dropped = ChangeSignal()  # bumped with `refused`
        self._last: dict[str, _Heard] = {}  # signer -> its last accepted message
        self.received_via: dict[str, str] = {}  # signer -> the peer that forwarded its last message
        self.heard = ChangeSignal()  # bumped for each announcement applied (a lease renewed counts)
        self.activity = activity
        self._seq = 0
        degree, low, high = gossip_degrees(max_peers)
        # GossipSub 1.1, not 1.2: 1.2 adds IDONTWANT, which py-libp2p sends to every mesh peer for
        # every message whatever its size (go-libp2p: only above 1 KiB); for announcements of a
        # few hundred bytes that was a third of all pubsub traffic.
        self.router = GossipSub(
            [PROTOCOL_ID_V11, PROTOCOL_ID], degree=degree, degree_low=low, degree_high=high,
            heartbeat_interval=heartbeat, heartbeat_initial_delay=0.1, do_px=False,
            max_messages_per_topic_per_second=RELAYED_PER_SECOND, adaptive_gossip_enabled=False,
        )
        self.pubsub = Pubsub(host, self.router, strict_signing=True, max_inbound_rpc_size=MAX_RPC_BYTES,
                             max_subscriptions_per_peer=4, allowed_topics={CARDS_TOPIC})
        pubsub_rides_existing_connections(self.pubsub)
        pubsub_retries_failed_stream_negotiation(self.pubsub)
        pubsub_skips_cache_replays(self.pubsub)
        pubsub_sends_no_peer_records(self.pubsub)
        pubsub_merges_queued_rpcs(self.pubsub, MAX_MERGED_RPC_BYTES)
        for protocol in self.router.get_protocols():  # the library's handler, unable to end the node
            host.set_stream_handler(protocol, guarded("pubsub", self.pubsub.stream_handler))
        self.pubsub.set_topic_validator(CARDS_TOPIC, self._validate, False)
        self._meshed = trio.Event()  # GossipSub's mesh has had a peer
        on_mesh_peer_added(self.router, lambda peer_id, topic: self._meshed.set())
        gossipsub_refuses_grafts_past_d_high(self.router, host)
        gossipsub_backs_off_peers_it_prunes(self.router)
        gossipsub_publishes_past_an_empty_mesh(self.router)
        self._started = False

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run pubsub and the router; announce until the block ends, then say we are leaving."""
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(background_trio_service(self.pubsub))
            await stack.enter_async_context(background_trio_service(self.router))
            await self.pubsub.wait_until_ready()
            subscription = await self.pubsub.subscribe(CARDS_TOPIC)
            nursery = await stack.enter_async_context(trio.open_nursery())
            nursery.start_soon(self._receive, subscription)
            nursery.start_soon(self._announce)
            nursery.start_soon(self._announce_once_meshed)
            self._started = True
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()
                await self.leave()

    @property
    def refused(self) -> int:
        """Announcements dropped by the topic validator so far (`/metrics` counts the same)."""
        return self.activity.announcements["dropped"]

    def mesh_peers(self) -> set[str]:
        """The peers GossipSub's mesh for the cards topic runs through now."""
        return {peer.to_string() for peer in self.router.mesh.get(CARDS_TOPIC, ())}

    def reach_here(self, peer_id: str) -> bool:
        """Do this connected peer's announcements reach this node? It is on the cards topic, and
        this node's GossipSub mesh has a peer (an empty mesh hears no announcement)."""
        return bool(self.mesh_size()) and ID.from_base58(peer_id) in self.pubsub.peer_topics.get(CARDS_TOPIC, ())

    def mesh_size(self) -> int:
        """How many peers this node's announcements go to first (`praxis_gossip_mesh_peers`)."""
        return len(self.router.mesh.get(CARDS_TOPIC, ()))

    async def publish_now(self, *, leaving: bool = False) -> bool:
        """Publish this node's card; False when it is too big to announce (peers fetch it instead)."""
        self._seq += 1
        try:
            data = encode_announcement(self.card(), leaving=leaving, seq=self._seq, ttl=self.lease())
        except TooLarge as exc:
            log.info("card not announced over GossipSub: %s", exc.message)
            return False
        await self.pubsub.publish(CARDS_TOPIC, data)
        self.activity.announcements["published"] += 1
        return True

    def period(self) -> float:
        """Seconds between this node's announcements: the configured period, longer in a big mesh
        (the one this node's directory shows, or the one its announcers show, whichever is
        bigger), but never so long that its lease would pass the longest an announcement may give
        (the lease is cut there, and receivers would drop the card before the next announcement)."""
        longest = MAX_TTL_SECONDS * self.every / self.ttl
        return max(self.every, min(max(self.per_peer * len(self.directory), self.heard_period()), longest))

    def heard_period(self) -> float:
        """The period the nodes this one hears announce at: the median of the leases they last
        gave, scaled back to a period with this node's settings (a mesh shares its config).

        A newcomer's directory fills at the pace of the mesh's announcements (about one a
        `announce_seconds_per_peer`): set from it alone, its period stayed short for minutes and
        a mesh that had just started published three times what it does settled (200 packed
        nodes: 2.9 announcements a second instead of one). The announcements it hears tell it the
        mesh's period at once. 0 until `HEARD_QUORUM` signers are heard; the median, so that a
        few signers' extreme leases do not set it (many signers could, as they could fill the
        directory; either way the period stays within `MAX_TTL_SECONDS`)."""
        if len(self._last) < HEARD_QUORUM:
            return 0.0
        return statistics.median(heard.lease for heard in self._last.values()) * self.every / self.ttl

    def lease(self, period: float | None = None) -> float:
        """How long receivers keep this node's card after an announcement made with `period` (by
        default the one in force now): `p2p.announce_ttl_seconds` for the configured period,
        scaled with the period."""
        return self.ttl * (self.period() if period is None else period) / self.every

    async def _announce(self) -> None:
        seen = self.own_card_changed.version
        while True:  # for the node's life
            sent, period = trio.current_time(), self.period()
            await self.publish_now()
            while (due := self._due(sent, period)) > trio.current_time():
                with trio.move_on_at(due):  # the period, or sooner on a change
                    seen = await self.own_card_changed.wait_past(seen)
                    break

    def _due(self, sent: float, period: float) -> float:
        """When the announcement after one sent at `sent` with `period` is due. The
        period is read again (RTCP's timer reconsideration, RFC 3550 6.3.6): while a mesh starts,
        directories fill, and a period set on a small one would flood the mesh with announcements
        timed for a few nodes. It only grows, and only while the receivers keep the card: the
        next announcement leaves them the old period's margin before the lease ends."""
        latest = sent + max(period, self.lease(period) - period)
        return max(sent + period, min(sent + self.period(), latest))

    async def _announce_once_meshed(self) -> None:
        """The announcement made at start goes out before any connection and reaches nobody
        (GossipSub sends only to mesh peers): make it again the moment the mesh has a peer, so
        the mesh hears of a new node within its first connection, not a period later. No more
        repeats after start: three more (1, 2 and 4 s after it), made before this one existed,
        were most of what 200 nodes starting together published (11-14 announcements a second
        in the whole mesh with them, 5.0-6.7 without)."""
        await self._meshed.wait()
        await self.publish_now()

    async def leave(self) -> None:
        """Tell the mesh this node is stopping (once; best effort within `LEAVE_TIMEOUT`)."""
        if not self._started:
            return
        self._started = False
        with trio.move_on_after(LEAVE_TIMEOUT) as scope:
            scope.shield = True
            try:
                if await self.publish_now(leaving=True):
                    await self._flushed()
            except Exception as exc:  # a node stopping: peers will drop the card at its expiry
                log.debug("leaving announcement not sent: %s", type(exc).__name__)

    async def _flushed(self) -> None:
        """Until pubsub's outbound queues are empty (the leaving message is on the wire): the
        caller closes every connection next, which would drop what is still queued."""
        for _ in range(int(LEAVE_TIMEOUT / FLUSH_POLL)):  # bounded; the caller's timeout too
            if not any(len(queue) for queue in self.pubsub.peer_queues.values()):
                break
            await trio.sleep(FLUSH_POLL)  # pubsub offers no event for an empty queue
        await trio.lowlevel.checkpoint()  # the writer that popped the last message finishes its write

    def _validate(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """GossipSub's topic validator: False drops the message and stops its forwarding."""
        signer = _peer_id(msg.from_id)
        if signer is None or len(msg.data) > MAX_ANNOUNCEMENT_BYTES:
            return self._refuse("malformed or too large")
        if signer == self.own_id:
            return True
        if not self.rate.try_take(signer):
            return self._refuse("over the rate limit")
        if self._last.get(signer, _NOTHING).data != msg.data:  # else the same card again: already checked
            try:
                decode_announcement(msg.data, signer)
            except PraxisError:
                return self._refuse("invalid")
        if len(self.received_via) >= SEEN_SIGNERS:
            self.received_via.clear()
        self.received_via[signer] = forwarder.to_string()
        return True

    def _refuse(self, why: str) -> bool:
        self.activity.announcements["dropped"] += 1
        self.dropped.bump()
        if self.refused <= 20 or self.refused % 1000 == 0:
            log.info("announcement dropped (%s); %d dropped so far", why, self.refused)
        return False

    async def _receive(self, subscription: ISubscriptionAPI) -> None:
        while True:
            msg = await subscription.get()
            signer = _peer_id(msg.from_id)
            if signer is None or signer == self.own_id:
                continue
            self._apply(signer, msg.data)
            self.activity.announcements["applied"] += 1
            self.heard.bump()

    def _apply(self, signer: str, data: bytes) -> None:
        now = trio.current_time()
        last = self._last.get(signer, _NOTHING)
        if last.data == data and self.directory.renew(signer, now + last.lease):
            return  # the same card again: only its lease grows
        try:
            announcement = decode_announcement(data, signer)
        except PraxisError:
            return  # the validator let it through only if valid; a race with a changed limit
        lease = announcement.ttl or self.ttl
        until = now + lease
        if announcement.leaving:
            self._last.pop(signer, None)
            if self.directory.remove(signer):
                log.info("peer %s (%s) left; its tools are gone", announcement.card.name, signer)
            return
        if len(self._last) >= SEEN_SIGNERS and signer not in self._last:
            self._last.clear()
        self._last[signer] = _Heard(data, lease)
        remember_card_addrs(self.host, announcement.card, lease)
        forget_failed_dial(self.host, ID.from_base58(signer))  # seen alive: may be dialled again
        if self.directory.update(announcement.card, announced_until=until):
            card = announcement.card
            log.info("peer %s (%s) announces %d tool(s)", card.name, signer, len(card.tools))


def gossip_degrees(max_peers: int) -> tuple[int, int, int]:
    """GossipSub's mesh degree (D, D_low, D_high): (4, 3, 8) when `max_peers` leaves room, else
    smaller, so the mesh never needs more connections than the node keeps. Not the libp2p
    defaults (6, 4, 12): every announcement reaches every node, and each node receives and
    relays it once per mesh peer, so the mesh size is the idle cost; with D_high 12 meshes sat
    at 9 peers (median, 25 nodes in one process) and 4,108 RPCs went out in 30 s where
    (4, 3, 8) sent 2,594, every announcement still delivered to every node."""
    high = max(2, min(8, max_peers * 3 // 4))
    degree = max(1, min(4, high // 2))
    return degree, max(1, min(3, degree - 1)), high


def _peer_id(raw: bytes) -> str | None:
    try:
        return ID(raw).to_string()
    except Exception:  # not a multihash peer ID
        return None
