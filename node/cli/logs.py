"""Readable log output for the CLI; quiets py-libp2p's chatter.

Every log line is one line: what peers send (names, messages) ends up in log messages, so
the formatter escapes line breaks and other control characters in the message and bounds
its length. A peer cannot forge a log line or flood the log through one message.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any

# Third-party loggers kept at WARNING even at --log-level DEBUG: some of them log request and
# response bodies at DEBUG (sse_starlette, httpcore2, gql), which would carry argument values.
NOISY = ("multiaddr", "zeroconf", "httpx", "httpcore", "httpx2", "httpcore2", "h11", "h2", "hpack",
         "sse_starlette", "hypercorn", "mcp", "gql", "dagger", "asyncio")
MAX_MESSAGE = 2000  # characters of one log message; longer ones are cut and say so
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
LOG_FORMATS = ("text", "json")


def escape_message(text: str) -> str:
    """One bounded line: control characters as \\n, \\x1b, \\u2028..., cut at MAX_MESSAGE."""
    escaped = _CONTROL.sub(_escape_char, text)
    if len(escaped) > MAX_MESSAGE:
        escaped = escaped[:MAX_MESSAGE] + f"... ({len(escaped) - MAX_MESSAGE} more characters)"
    return escaped


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or char.encode("unicode_escape").decode("ascii")


def utc_timestamp(created: float) -> str:
    """A record's time in UTC, to the millisecond: 2026-11-27T17:13:38.123Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class OneLineFormatter(logging.Formatter):
    """Escapes the message; a traceback is indented under it. Times are UTC with milliseconds
    (2026-11-27T17:13:38.123Z) unless a `datefmt` is given."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return super().formatTime(record, datefmt) if datefmt else utc_timestamp(record.created)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = escape_message(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        # A traceback spans lines by nature; indented, no line of it can pass for a log line,
        # even one quoting an exception's text.
        return "\n".join("    " + _CONTROL.sub(_escape_char, line) for line in super().formatException(ei).splitlines())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: {time, level, logger, message} (plus node, exception when set).

    The message is escaped and bounded as in the text format, so a peer's text cannot forge
    a line there either (JSON would escape line breaks anyway; the bound still matters)."""

    def __init__(self, node: str | None = None) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": utc_timestamp(record.created), "level": record.levelname,
                               "logger": record.name, "message": escape_message(record.getMessage())}
        if self.node:
            out["node"] = self.node
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)[:MAX_MESSAGE * 4]
        return json.dumps(out, ensure_ascii=True)


def configure_logging(level: str = "INFO", name: str | None = None, log_format: str = "text") -> None:
    """Logs on stderr: one line each, `log_format` "text" (readable) or "json" (one object a line)."""
    prefix = f"[{name}] " if name else ""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = JsonFormatter(name) if log_format == "json" else \
        OneLineFormatter(f"%(asctime)s %(levelname)-7s {prefix}%(name)s: %(message)s")
    handler.setFormatter(formatter)
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_libp2p_logging()


def quiet_libp2p_logging() -> None:
    """py-libp2p logs expected stream resets and dial failures at ERROR, with tracebacks: off.

    Call it again after libp2p is imported: its import resets its logger (WARNING, no handler,
    no propagation), and Python's last-resort handler then prints each such record to stderr
    ("Failed to open TCP stream: ..." once per dial attempt). `LIBP2P_DEBUG` still works: with
    it set, libp2p's own handlers are attached and left alone.
    """
    if os.environ.get("LIBP2P_DEBUG"):
        return
    libp2p = logging.getLogger("libp2p")
    libp2p.setLevel(logging.CRITICAL)
    if not libp2p.handlers:
        libp2p.addHandler(logging.NullHandler())
