"""What a tool says while it runs, and who hears it.

During a call, whatever runs the tool (an engine, an upstream MCP server, a peer further on)
may report progress, send log messages, and ask the caller a question that only the caller
at the far end can answer (MCP sampling and elicitation). Every hop hands the call a
`CallEvents`: the MCP endpoint builds one that speaks to its client's session, a peer's
call stream builds one that writes interim frames, and `NO_EVENTS` listens to nothing.

Cancellation is not an event: it is trio cancellation of the call's scope, which every hop
turns into the next hop's cancel (a cancel frame, `notifications/cancelled`, a killed
process group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

# MCP's log levels, lowest first (RFC 5424 names, as in `logging/setLevel`).
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
SAMPLING = "sampling/createMessage"
ELICITATION = "elicitation/create"
ASK_METHODS = frozenset({SAMPLING, ELICITATION})
INVALID_REQUEST = -32600  # JSON-RPC: what an MCP client answers a request it does not support


@dataclass(frozen=True)
class Progress:
    """One progress report: `progress` grows; `total` when known; a short human `message`."""

    progress: float
    total: float | None = None
    message: str | None = None


@dataclass(frozen=True)
class LogMessage:
    """One log notification: an MCP level (`LOG_LEVELS`), any JSON `data`, an optional logger name."""

    level: str
    data: Any
    logger: str | None = None


class AskRefused(Exception):
    """The caller answered a sampling or elicitation request with an error (JSON-RPC code and
    message), or could not be asked at all. Passed back to whoever asked, unchanged."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CallEvents(Protocol):
    """The caller of one call, as seen by whatever runs it."""

    @property
    def log_level(self) -> str | None:
        """The lowest level of log message the caller wants (`LOG_LEVELS`); None: it wants none.
        A forwarded call carries it to the next hop, so nothing below it crosses the mesh."""
        ...

    async def progress(self, update: Progress) -> None:
        """Pass a progress report on towards the caller (it may be dropped by a rate limit)."""
        ...

    async def log(self, message: LogMessage) -> None:
        """Pass a log notification on towards the caller (dropped below the caller's level)."""
        ...

    async def ask(self, method: str, params: dict[str, Any], deadline: float) -> dict[str, Any]:
        """Ask the caller (`SAMPLING` or `ELICITATION`) and return its result; raise `AskRefused`
        with the caller's error, or when it cannot be asked before `deadline`."""
        ...


def not_supported(method: str) -> AskRefused:
    """The answer an MCP client gives to a request it declared no capability for."""
    what = {SAMPLING: "Sampling", ELICITATION: "Elicitation"}.get(method, "Request")
    return AskRefused(INVALID_REQUEST, f"{what} not supported")


class NoEvents:
    """A caller that listens to nothing and can answer nothing."""

    @property
    def log_level(self) -> str | None:
        return None

    async def progress(self, update: Progress) -> None:
        return None

    async def log(self, message: LogMessage) -> None:
        return None

    async def ask(self, method: str, params: dict[str, Any], deadline: float) -> dict[str, Any]:
        raise not_supported(method)


NO_EVENTS: CallEvents = NoEvents()
