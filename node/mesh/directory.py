"""The peer directory: each connected peer's card, the tool index, and provider health."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import trio

from node.runtime.signals import ChangeSignal
from protocols.messages import Card, ToolSpec

log = logging.getLogger("praxis.peers")

LATENCY_SMOOTHING = 0.3  # weight of the newest sample in the moving average
LATENCY_TTL_SECONDS = 10.0  # an estimate this old is forgotten, so an idle provider gets tried again
FAILURE_PENALTY_SECONDS = 5.0  # how long a provider that could not be reached is avoided


@dataclass
class ProviderHealth:
    """What the router knows of a peer as a provider: recent latency, load, failures."""

    latency: float | None = None  # smoothed seconds per call
    sampled_at: float = -math.inf
    in_flight: int = 0
    failed_at: float = -math.inf

    def score(self, now: float) -> tuple[int, float, float]:
        """Lower is better: recently failed last, then fewer calls in flight, then faster."""
        recently_failed = 1 if now - self.failed_at < FAILURE_PENALTY_SECONDS else 0
        fresh = self.latency is not None and now - self.sampled_at < LATENCY_TTL_SECONDS
        latency = self.latency if fresh and self.latency is not None else 0.0
        return (recently_failed, self.in_flight * max(latency, 0.001), latency)


@dataclass
class PeerEntry:
    peer_id: str
    card: Card
    updated_at: float
    tools: dict[str, ToolSpec] = field(default_factory=dict)
    # Per tool: its definition's fingerprint, and when this peer first offered that definition.
    fingerprints: dict[str, str] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)
    # Linked: the card came over a live connection (card exchange), kept while it lasts.
    # Announced: the card came from GossipSub or a DHT lookup, kept until `announced_until`.
    linked: bool = True
    announced_until: float = -math.inf


@dataclass(frozen=True)
class Definition:
    """One definition of a tool name and the peers that offer exactly it (best first)."""

    fingerprint: str
    spec: ToolSpec
    providers: tuple[str, ...]
    first_seen: float  # when the earliest of these peers first offered it
    first_provider: str  # that peer


class PeerDirectory:
    """Cards by peer ID. `changed` is bumped whenever the mesh's tool set may have changed."""

    def __init__(self) -> None:
        self._peers: dict[str, PeerEntry] = {}
        self._health: dict[str, ProviderHealth] = {}
        self.changed = ChangeSignal()

    def update(self, card: Card, *, announced_until: float | None = None) -> bool:
        """Store a peer's card; True when it changed the peer's tool set or name.

        Without `announced_until` the card came over a live connection (linked); with it, from
        an announcement or a lookup, and it is kept until then unless renewed.
        """
        old = self._peers.get(card.peer_id)
        if old is not None and card.timestamp < old.card.timestamp:
            if announced_until is not None:  # still proves the peer alive: renew, keep the newer card
                old.announced_until = max(old.announced_until, announced_until)
            return False  # an older card that arrived late
        tools = {spec.name: spec for spec in card.tools}
        if old is None:  # a peer that (re)joins starts with a clean record
            self._health[card.peer_id] = ProviderHealth()
        now = trio.current_time()
        entry = PeerEntry(card.peer_id, card, now, tools)
        if old is not None:
            entry.linked, entry.announced_until = old.linked, old.announced_until
        if announced_until is None:
            entry.linked = True
        else:
            entry.linked = entry.linked and old is not None
            entry.announced_until = max(entry.announced_until, announced_until)
        for name, spec in tools.items():
            fingerprint = spec.fingerprint()
            entry.fingerprints[name] = fingerprint
            before = old.fingerprints.get(name) if old is not None else None
            if before == fingerprint and old is not None:
                entry.first_seen[name] = old.first_seen[name]  # the definition keeps its seniority
                continue
            entry.first_seen[name] = now
            if before is not None:
                log.warning("peer %s (%s) changed the definition of tool %s", card.name, card.peer_id, name)
        self._peers[card.peer_id] = entry
        changed = old is None or old.tools != tools or old.card.name != card.name
        if changed:
            self.changed.bump()
        return changed

    def remove(self, peer_id: str) -> bool:
        self._health.pop(peer_id, None)
        if self._peers.pop(peer_id, None) is None:
            return False
        self.changed.bump()
        return True

    def renew(self, peer_id: str, announced_until: float) -> bool:
        """The peer announced the card we hold again: keep it longer. False if we hold none."""
        entry = self._peers.get(peer_id)
        if entry is None:
            return False
        entry.announced_until = max(entry.announced_until, announced_until)
        return True

    def unlink(self, peer_id: str, keep_until: float = math.inf) -> bool:
        """The connection to a peer closed: keep its card while its announcement lasts, and no
        longer than `keep_until`. True when the card was removed."""
        entry = self._peers.get(peer_id)
        if entry is None:
            return False
        entry.linked = False
        entry.announced_until = min(entry.announced_until, keep_until)
        if entry.announced_until > trio.current_time():
            return False
        return self.remove(peer_id)

    def expire(self) -> list[str]:
        """Drop cards neither linked nor announced recently; the peer IDs dropped."""
        now = trio.current_time()
        gone = [pid for pid, e in self._peers.items() if not e.linked and e.announced_until <= now]
        for peer_id in gone:
            self.remove(peer_id)
        return gone

    def get(self, peer_id: str) -> PeerEntry | None:
        return self._peers.get(peer_id)

    def announced(self, peer_id: str) -> bool:
        """Is this peer's card held under an announcement's lease that still runs?"""
        entry = self._peers.get(peer_id)
        return entry is not None and entry.announced_until > trio.current_time()

    def peers(self) -> list[PeerEntry]:
        return sorted(self._peers.values(), key=lambda e: e.peer_id)

    def __len__(self) -> int:
        """How many peers' cards are held (without sorting them, as `peers()` does)."""
        return len(self._peers)

    def offers(self, tool: str) -> bool:
        """Does any peer's card list `tool`? (Without building the set of every name.)"""
        return any(tool in entry.tools for entry in self._peers.values())

    def providers(self, tool: str, fingerprint: str | None = None) -> list[str]:
        """Peers whose card lists `tool` (with that definition, if given), best first."""
        return self._best_first([pid for pid, entry in self._peers.items() if tool in entry.tools
                                 and (fingerprint is None or entry.fingerprints[tool] == fingerprint)])

    def _best_first(self, peer_ids: list[str]) -> list[str]:
        now = trio.current_time()
        return sorted(peer_ids, key=lambda pid: (self.health(pid).score(now), pid))

    def definitions(self, tool: str) -> list[Definition]:
        """The distinct definitions peers give `tool`, the longest-known first.

        The first one is the name's pinned definition: a newcomer offering the same name with
        another definition never replaces it (its variant is listed apart).
        """
        by_fingerprint: dict[str, list[str]] = {}
        for peer_id, entry in self._peers.items():
            fingerprint = entry.fingerprints.get(tool)
            if fingerprint is not None:
                by_fingerprint.setdefault(fingerprint, []).append(peer_id)
        return self._definitions(tool, by_fingerprint)

    def every_definition(self) -> dict[str, list[Definition]]:
        """`definitions` of every tool name, in one pass over the cards: a listing of the whole
        mesh costs the cards' tools, not names times peers."""
        groups: dict[str, dict[str, list[str]]] = {}  # name -> fingerprint -> peers
        for peer_id, entry in self._peers.items():
            for name, fingerprint in entry.fingerprints.items():
                groups.setdefault(name, {}).setdefault(fingerprint, []).append(peer_id)
        return {name: self._definitions(name, by_fingerprint) for name, by_fingerprint in groups.items()}

    def _definitions(self, tool: str, by_fingerprint: dict[str, list[str]]) -> list[Definition]:
        out = []
        for fingerprint, peers in by_fingerprint.items():
            first = min(peers, key=lambda p: (self._peers[p].first_seen[tool], p))
            out.append(Definition(fingerprint, self._peers[first].tools[tool], tuple(self._best_first(peers)),
                                  self._peers[first].first_seen[tool], first))
        return sorted(out, key=lambda d: (d.first_seen, d.fingerprint))

    def pinned(self, tool: str) -> str | None:
        """The fingerprint of `tool`'s pinned definition (the first of `definitions`), found
        without listing every definition's providers: what routing a call needs."""
        first = min(((entry.first_seen[tool], entry.fingerprints[tool])
                     for entry in self._peers.values() if tool in entry.tools), default=None)
        return first[1] if first is not None else None

    def health(self, peer_id: str) -> ProviderHealth:
        """The peer's record; a peer not in the directory gets a detached one (nothing is kept)."""
        health = self._health.get(peer_id)
        return health if health is not None else ProviderHealth()

    def record_success(self, peer_id: str, seconds: float) -> None:
        h = self.health(peer_id)
        now = trio.current_time()
        stale = h.latency is None or now - h.sampled_at >= LATENCY_TTL_SECONDS
        h.latency = seconds if stale or h.latency is None else (
            LATENCY_SMOOTHING * seconds + (1 - LATENCY_SMOOTHING) * h.latency
        )
        h.sampled_at = now

    def record_connected(self, peer_id: str) -> None:
        """A new connection proves the peer reachable again: lift its failure penalty."""
        self.health(peer_id).failed_at = -math.inf

    def record_unreachable(self, peer_id: str) -> None:
        self.health(peer_id).failed_at = trio.current_time()
