"""The node's persistent Ed25519 key: created on first start (mode 0600), reused after."""

from __future__ import annotations

import logging
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.identity_utils import load_identity, save_identity
from libp2p.peer.id import ID

from node.config import ConfigError

log = logging.getLogger("praxis.identity")


def load_or_create_identity(path: Path) -> KeyPair:
    """Load the key at `path`, creating it when absent. A corrupt file is an error, never replaced."""
    if path.exists():
        try:
            return load_identity(path)
        except (ValueError, OSError) as exc:
            raise ConfigError(
                f"{path}: the node key cannot be read ({exc}); restore it, or delete it to "
                "start with a new peer ID"
            ) from None
    key_pair = create_new_key_pair()
    try:
        save_identity(key_pair, path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the node key: {exc.strerror}") from None
    log.info("created a new node key at %s", path)
    return key_pair


def peer_id_of(key_pair: KeyPair) -> ID:
    return ID.from_pubkey(key_pair.public_key)
