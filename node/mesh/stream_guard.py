"""A py-libp2p stream handler that cannot take the host down.

py-libp2p's own handlers (GossipSub's `Pubsub.stream_handler`, the DHT's `handle_stream`) let
some errors out: a pubsub RPC that does not parse raised `DecodeError` through the swarm's
connection task and ended the node (found by tests/hardening/test_discovery_hostile.py). Wrapped
here, such an error resets that one stream, is logged by type only (its text may quote the
peer's bytes), and the node carries on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger("praxis.streams")

RESET_TIMEOUT = 2.0


def guarded(what: str, handler: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    async def guarded_handler(stream: Any) -> None:
        try:
            await handler(stream)
        except Exception as exc:  # whatever the library lets out: this stream only
            log.info("%s: stream from %s ended by %s", what, _peer(stream), type(exc).__name__)
            with trio.move_on_after(RESET_TIMEOUT):
                try:
                    await stream.reset()
                except Exception as reset_error:  # already closed or reset
                    log.debug("%s: reset: %s", what, type(reset_error).__name__)

    return guarded_handler


def _peer(stream: Any) -> str:
    try:
        return str(stream.muxed_conn.peer_id)[:64]
    except Exception:  # a stream without a connection: nothing to name
        return "?"
