"""Proof of a call's origin: the node that first made a call signs it with its libp2p key.

A forwarded call reaches its provider from the forwarding node, so the stream's
authenticated peer is not who asked. The origin therefore signs what it asks for:

    "praxis-call-origin/1\\n" + JSON [origin peer ID, tool, SHA-256 of the arguments,
                                      expiry (unix ms), nonce, target peer ID]

`target` is the peer the origin sent the call to (its first hop). The origin's public key is
the one embedded in its Ed25519 peer ID, so a proof names no key of its own. Whoever checks a
proof also keeps the nonces it has seen until they expire (see node/mesh/origins.py): a proof is
good for one call on each node.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

from libp2p.crypto.keys import PrivateKey, PublicKey
from libp2p.peer.id import ID

from protocols.errors import NotAllowed
from protocols.messages import CallOrigin

DOMAIN = b"praxis-call-origin/1\n"
# Built once: `json.dumps` with options builds a new encoder on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def arguments_digest(arguments: dict[str, Any]) -> str:
    """SHA-256 of the arguments as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(_CANONICAL.encode(arguments).encode()).hexdigest()


def _signed_bytes(peer_id: str, target: str, nonce: str, expires_ms: int, tool: str, digest: str) -> bytes:
    return DOMAIN + _COMPACT.encode([peer_id, tool, digest, expires_ms, nonce, target]).encode()


def sign_origin(
    key: PrivateKey, peer_id: str, *, target: str, tool: str, arguments: dict[str, Any], expires_ms: int
) -> CallOrigin:
    """A proof that `peer_id` (whose private key is `key`) asks `target` to run `tool(arguments)`."""
    nonce = os.urandom(16).hex()
    data = _signed_bytes(peer_id, target, nonce, expires_ms, tool, arguments_digest(arguments))
    return CallOrigin(peer_id=peer_id, target=target, nonce=nonce, expires_ms=expires_ms,
                      signature=base64.b64encode(key.sign(data)).decode())


def origin_key(peer_id: str) -> PublicKey:
    """The public key embedded in an Ed25519 peer ID; `NotAllowed` for any other peer ID."""
    try:
        key = ID.from_base58(peer_id).extract_public_key()
    except Exception:  # base58 and multihash errors of several types
        key = None
    if key is None:
        raise NotAllowed("call refused: the origin proof names no Ed25519 peer ID")
    return key


def check_signature(
    origin: CallOrigin, tool: str, arguments: dict[str, Any], now_ms: int | None = None,
    key_of: Callable[[str], PublicKey] = origin_key,
) -> None:
    """Raise `NotAllowed` unless the proof is signed by its peer and has not expired.

    `key_of` turns the proof's peer ID into its public key (`origin_key`, or a cache of it).
    Replays are not checked here: that needs the memory of seen nonces.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if origin.expires_ms < now_ms:
        raise NotAllowed(f"call refused: its origin proof expired {(now_ms - origin.expires_ms) / 1000:.0f} s ago")
    key = key_of(origin.peer_id)
    try:
        signature = base64.b64decode(origin.signature, validate=True)
    except (binascii.Error, ValueError):
        raise NotAllowed("call refused: the origin proof's signature is not base64") from None
    data = _signed_bytes(origin.peer_id, origin.target, origin.nonce, origin.expires_ms, tool,
                         arguments_digest(arguments))
    try:
        valid = key.verify(data, signature)
    except Exception:  # the signature library raises on a malformed signature (not 64 bytes...)
        valid = False
    if not valid:
        raise NotAllowed("call refused: the origin proof does not match the call (tool, arguments, "
                         "expiry or target changed, or a forged signature)")
