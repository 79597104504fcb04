"""The node's persistent Ed25519 key: created on first start (mode 0600), reused after."""

from __future__ import annotations

import fcntl
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair, PrivateKey, PublicKey
from libp2p.crypto.serialization import deserialize_private_key
from libp2p.identity_utils import save_identity
from libp2p.peer.id import ID

from node.config import ConfigError

log = logging.getLogger("praxis.identity")

# An Ed25519 key file is 36 bytes; an RSA-4096 key about 2.4 KiB. Nothing larger is read.
MAX_KEY_FILE_BYTES = 8192


def load_or_create_identity(path: Path) -> KeyPair:
    """Load the key at `path`, creating it when absent. A corrupt file is an error, never replaced.

    The key file must be a regular file of at most `MAX_KEY_FILE_BYTES`: a device, a FIFO or a
    folder (`/dev/zero`, `/dev/stdin`...) is refused before anything is read from it.
    """
    if path.exists():
        return KeyPair(*_read_key(path))
    key_pair = create_new_key_pair()
    try:
        save_identity(key_pair, path)
    except OSError as exc:
        raise ConfigError(f"p2p.key_file: {path}: cannot write the node key: {exc.strerror}") from None
    log.info("created a new node key at %s", path)
    return key_pair


@contextmanager
def key_file_held(path: Path) -> Iterator[None]:
    """Hold the key file for as long as the node runs: a second node given the same key file
    would take the same peer ID, and the two would connect to each other without a word."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"p2p.key_file: {path} cannot be opened ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"p2p.key_file: {path} is held by another running node; give each node its own "
                "key_file (two nodes with one key would have one peer ID)"
            ) from None
        yield
    finally:
        os.close(fd)  # closing the file releases the lock


def _read_key(path: Path) -> tuple[PrivateKey, PublicKey]:
    def refuse(why: str) -> ConfigError:
        return ConfigError(
            f"p2p.key_file: {path} {why}; set p2p.key_file to the node's key file (a regular file of "
            f"at most {MAX_KEY_FILE_BYTES} bytes), or to a path that does not exist yet to get a new key there"
        )

    try:
        # Looked at before it is opened (opening some devices does something); then checked
        # again on the open file, which cannot be swapped. O_NONBLOCK: a FIFO does not wait.
        if not stat.S_ISREG(mode := os.stat(path).st_mode):
            raise refuse(f"is not a regular file (it is {_kind(mode)})")
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise refuse(f"cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise refuse(f"is not a regular file (it is {_kind(info.st_mode)})")
        if info.st_size > MAX_KEY_FILE_BYTES:
            raise refuse(f"is {info.st_size} bytes, too large for a key")
        try:
            data = file.read(MAX_KEY_FILE_BYTES + 1)  # bounded even if the file grows meanwhile
        except OSError as exc:
            raise refuse(f"cannot be read ({exc.strerror})") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise refuse(f"grew past {MAX_KEY_FILE_BYTES} bytes while being read")
    try:
        private_key = deserialize_private_key(data)
        public_key = private_key.get_public_key()
        public_key.serialize()
    except Exception as exc:  # the parser raises many kinds on garbage
        raise ConfigError(
            f"p2p.key_file: {path}: the node key cannot be read ({type(exc).__name__}: {exc}); "
            "restore it, or delete it to start with a new peer ID"
        ) from None
    return private_key, public_key


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def peer_id_of(key_pair: KeyPair) -> ID:
    return ID.from_pubkey(key_pair.public_key)
