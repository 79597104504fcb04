"""Keeping a node connected: bootstrap peers are dialled until up (and again after they drop),
peers found by mDNS or peer exchange are dialled once. Every dial has a deadline."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from node.mesh.activity import MeshActivity
from node.mesh.libp2p_patches import forget_failed_dial
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


class Dialer:
    def __init__(
        self, host: IHost, connections: ChangeSignal, connect_timeout: float, backoff_max: float,
        activity: MeshActivity, enough: Callable[[], bool] = lambda: False,
    ) -> None:
        self.host = host
        self.activity = activity
        # True while the node holds enough connections: a dropped bootstrap peer is then not
        # redialled (it may have pruned us for its own bound; redialling would churn).
        self.enough = enough
        self.connections = connections  # bumped by the node on every connect and disconnect
        self.connect_timeout = connect_timeout
        self.backoff_max = backoff_max
        self.tried: set[str] = set()  # bootstrap peers dialled at least once, whatever came of it
        self.tried_changed = ChangeSignal()

    def tried_all(self, bootstrap: list[PeerInfo]) -> bool:
        """Has every one of these bootstrap peers been dialled at least once (or found connected)?"""
        return all(info.peer_id.to_string() in self.tried for info in bootstrap)

    def _mark_tried(self, peer_id: str) -> None:
        if peer_id not in self.tried:
            self.tried.add(peer_id)
            self.tried_changed.bump()

    async def keep_connected(self, info: PeerInfo) -> None:
        """Dial a bootstrap peer until connected, and again whenever the connection drops."""
        target = info.peer_id.to_string()
        if self._is_self(info, "bootstrap peer"):
            self._mark_tried(target)
            return
        backoff = INITIAL_BACKOFF
        while True:
            version = self.connections.version
            if is_connected(self.host, target) or (target in self.tried and self.enough()):
                self._mark_tried(target)
                backoff = INITIAL_BACKOFF
                await self.connections.wait_past(version)
                continue
            problem = await self._connect(info)
            self._mark_tried(target)
            if problem is None:
                log.info("connected to bootstrap peer %s", target)
                continue
            log.info("bootstrap peer %s unreachable: %s; retrying in %.1f s", target, problem, backoff)
            await trio.sleep(backoff)  # backoff between dials, not a race workaround
            backoff = min(backoff * 2, self.backoff_max)

    def is_connected(self, peer_id: str) -> bool:
        return is_connected(self.host, peer_id)

    async def dial(self, info: PeerInfo) -> None:
        """Dial a discovered peer once, unless already connected."""
        if self._is_self(info, "discovered peer") or is_connected(self.host, info.peer_id.to_string()):
            return
        problem = await self._connect(info)
        if problem is not None:
            log.info("discovered peer %s unreachable: %s", info.peer_id, problem)

    async def _connect(self, info: PeerInfo) -> str | None:
        """One dial within the connect timeout; None when connected, else why not, in words."""
        # py-libp2p refuses, for about a minute, to dial a peer whose dial failed: a restarted
        # peer would stay unreachable that long. This dialer keeps its own backoff instead.
        forget_failed_dial(self.host, info.peer_id)
        problem: str | None = None
        try:
            with trio.fail_after(self.connect_timeout):
                await self.host.connect(info)
        except trio.TooSlowError:
            problem = f"no connection within {self.connect_timeout:g} s"
        except Exception as exc:  # libp2p raises many types for a failed dial
            problem = dial_failure_reason(exc)
        self.activity.peer_dials["failed" if problem else "ok"] += 1
        return problem

    def _is_self(self, info: PeerInfo, what: str) -> bool:
        if info.peer_id != self.host.get_id():
            return False
        log.warning("%s %s is this node itself (same peer ID); not dialling it", what, info.peer_id)
        return True


_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused (nothing listens at that address: is the node running?)",
    errno.EHOSTUNREACH: "no route to that host",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "the connection timed out",
    errno.ECONNRESET: "the connection was reset during the handshake",
}


def dial_failure_reason(exc: BaseException) -> str:
    """Why a libp2p dial failed, in words: the first cause a person can act on."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    messages: list[str] = []
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _ERRNO_WORDS:
            return _ERRNO_WORDS[current.errno]
        text = str(current)
        if "peer id mismatch" in text.lower() or "does not correspond to the received pubkey" in text:
            return "the node at that address has another peer ID (restarted with a new key?)"
        if "Maximum connections" in text:
            return "this node holds its maximum of connections (limits.max_connections)"
        messages.append(text)
        for attribute in ("exceptions", "errors"):  # exception groups; libp2p's MultiError
            nested_group = getattr(current, attribute, None)
            if isinstance(nested_group, list | tuple):
                stack.extend(e for e in nested_group if isinstance(e, BaseException))
        for nested in (current.__cause__, current.__context__):
            if nested is not None:
                stack.append(nested)
    first = next((m for m in messages if m), type(exc).__name__)
    return f"{type(exc).__name__}: {first[:200]}"
