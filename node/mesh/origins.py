"""Who asks for a call: the peer in front of this node, and the proven origin behind it.

Policy is applied to both (node/tools/policy.py `may_call_as`). The rules, for a request that
arrives from the authenticated peer `front`:
- with an origin proof (protocols/origin.py): the signature must hold, the proof must not
  have expired nor expire more than `MAX_PROOF_SECONDS` from now, and its nonce must be new
  to this node (a replay is refused). A proof addressed to this node must come from its
  signer itself; a proof addressed to another node means the call was forwarded.
- without one, a call that says it was not forwarded (`hops` <= 1) comes from `front`, which
  the connection proves; a forwarded call without proof has an unproven origin: it is judged
  as coming from `front` and may only reach tools open to everyone.
"""

from __future__ import annotations

import time
from typing import Any

from libp2p.crypto.keys import KeyPair, PublicKey

from node.tools.policy import Caller
from protocols.errors import Busy, NotAllowed
from protocols.messages import CallOrigin, ToolRequest
from protocols.origin import check_signature, origin_key, sign_origin

MAX_PROOF_SECONDS = 3600  # a proof may not be valid for longer than this
CLOCK_SKEW_MS = 30_000  # a proof that expired this recently still counts (clocks differ)
MAX_REMEMBERED = 65_536  # nonces kept at once; past that, new proofs wait (Busy)
MAX_KEYS = 1024  # origins' public keys kept parsed (a peer ID always means the same key)


class Signer:
    """This node's proofs that it asks `target` for a call (see protocols/origin.py)."""

    def __init__(self, key_pair: KeyPair, peer_id: str) -> None:
        self.key_pair = key_pair
        self.peer_id = peer_id

    def __call__(self, target: str, tool: str, arguments: dict[str, Any], expires_ms: int) -> CallOrigin:
        return sign_origin(self.key_pair.private_key, self.peer_id, target=target, tool=tool,
                           arguments=arguments, expires_ms=expires_ms)


class OriginCheck:
    """Identifies the caller of each incoming request; remembers nonces to refuse replays."""

    def __init__(self, own_peer_id: str) -> None:
        self.own_peer_id = own_peer_id
        self._seen: dict[tuple[str, str], int] = {}  # (origin, nonce) -> expiry (unix ms)
        self._keys: dict[str, PublicKey] = {}  # peer ID -> its key, parsed once (a pure function)

    def identify(self, request: ToolRequest, front: str, arguments: dict[str, Any]) -> Caller:
        origin = request.origin
        if origin is None:
            return Caller(front, front, origin_proven=request.hops <= 1)
        now_ms = int(time.time() * 1000)
        check_signature(origin, request.name, arguments, now_ms - CLOCK_SKEW_MS, self._key)
        if origin.expires_ms > now_ms + MAX_PROOF_SECONDS * 1000:
            raise NotAllowed(f"call refused: its origin proof is valid for more than {MAX_PROOF_SECONDS} s")
        if origin.target == self.own_peer_id and origin.peer_id != front:
            raise NotAllowed(
                f"call refused: its origin proof was made by {origin.peer_id} for a direct call to "
                f"this node, but {front} sent it"
            )
        self._remember(origin.peer_id, origin.nonce, origin.expires_ms + CLOCK_SKEW_MS, now_ms)
        return Caller(front, origin.peer_id, origin_proven=True)

    def _key(self, peer_id: str) -> PublicKey:
        """`origin_key`, cached: parsing a peer ID into its key costs a quarter of a signature check."""
        key = self._keys.get(peer_id)
        if key is None:
            key = origin_key(peer_id)
            if len(self._keys) >= MAX_KEYS:
                self._keys.clear()  # bounded; refilled by the origins that keep calling
            self._keys[peer_id] = key
        return key

    def _remember(self, peer_id: str, nonce: str, expires_ms: int, now_ms: int) -> None:
        key = (peer_id, nonce)
        if key in self._seen:
            raise NotAllowed("call refused: it replays a call this node has already received")
        if len(self._seen) >= MAX_REMEMBERED:
            self._seen = {k: exp for k, exp in self._seen.items() if exp >= now_ms}
            if len(self._seen) >= MAX_REMEMBERED:
                raise Busy("node busy: too many signed calls in flight; retry later")
        self._seen[key] = expires_ms
