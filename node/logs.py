"""Readable log output for the CLI; quiets py-libp2p's chatter."""

from __future__ import annotations

import logging
import sys

# Third-party loggers kept at WARNING even at --log-level DEBUG: some of them log request and
# response bodies at DEBUG (sse_starlette, httpcore2, gql), which would carry argument values.
NOISY = ("multiaddr", "zeroconf", "httpx", "httpcore", "httpx2", "httpcore2", "h11", "h2", "hpack",
         "sse_starlette", "hypercorn", "mcp", "gql", "dagger", "asyncio")


def configure_logging(level: str = "INFO", name: str | None = None) -> None:
    prefix = f"[{name}] " if name else ""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)-7s {prefix}%(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # py-libp2p logs expected stream resets and dial failures at ERROR with tracebacks.
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
