"""Tasks started because of what a peer sent: their failure ends the task, never the node."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger("praxis.tasks")


def start_isolated(nursery: trio.Nursery, what: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Run `fn(*args)` in `nursery`; an exception is logged (type only: its text may quote the
    peer's data) and ends this task alone. Cancellation passes through untouched."""
    nursery.start_soon(_guarded, what, fn, args, name=what)


async def _guarded(what: str, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
    try:
        await fn(*args)
    except Exception as exc:
        log.error("%s failed (%s); the node carries on", what, type(exc).__name__)
        log.debug("%s failed", what, exc_info=True)


def isolated_handler(what: str, handler: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """A libp2p stream handler that can never raise into the host."""

    async def guarded(stream: Any) -> None:
        await _guarded(what, handler, (stream,))

    return guarded
