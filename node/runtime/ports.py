"""Refusing a listen port another process already uses.

py-libp2p listens with SO_REUSEPORT, so a second node given the port of a running one would
start without error and the kernel would split incoming connections between the two. Before
a node listens, it binds a plain socket (SO_REUSEADDR only: a port left in TIME_WAIT by an
earlier run is fine, a live listener is not) and closes it again.
"""

from __future__ import annotations

import errno
import socket

from node.config import ConfigError


def ensure_port_free(host: str, port: int, key: str) -> None:
    """Raise a `ConfigError` naming `key` when something already listens on host:port."""
    if port == 0:
        return  # the OS picks a free one
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"{key}: port {port} on {host} is already in use (another node or program listens "
                    "there); choose another port, or 0 for any free one"
                ) from None
            raise ConfigError(f"{key}: cannot listen on {host}:{port}: {exc.strerror}") from None
