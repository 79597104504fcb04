"""One error hierarchy for everything a call can fail with.

Each error carries a stable numeric `code` (JSON-RPC style, sent on the wire in the
`error` object of a tool response) and a message that is safe to show to any caller:
messages never contain argument values or secrets.
"""

from __future__ import annotations


class PraxisError(Exception):
    """Base of every error a praxis call can raise or return."""

    code: int = -32603  # internal error

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def log_text(self) -> str:
        """What a log line may say of this error: the message, unless it carries tool output."""
        return self.message


class InvalidRequest(PraxisError):
    """A frame that is not a valid request: bad JSON, wrong shape, bad UTF-8."""

    code = -32600


class ToolNotFound(PraxisError):
    """The node (or the mesh) has no tool of that name."""

    code = -32601


class InvalidArguments(PraxisError):
    """Arguments missing, of the wrong type, or not allowed for this tool."""

    code = -32602


class ToolExecutionError(PraxisError):
    """The tool ran and failed (non-zero exit, exception in the callable...)."""

    code = -32000

    def __init__(self, message: str, *, exit_code: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.stderr = stderr

    def log_text(self) -> str:
        # The message quotes the tool's own output, which may echo argument values: keep it
        # for the caller, out of the node's log.
        return "the tool failed" + (f" with exit code {self.exit_code}" if self.exit_code is not None else "")


class ToolTimeout(PraxisError):
    """The call ran past its deadline and was cancelled."""

    code = -32001


class EngineUnavailable(PraxisError):
    """The engine behind the tool cannot be reached (no Dagger engine, MCP server down...)."""

    code = -32002


class ContractError(PraxisError):
    """The tool's contract (engineSpec) is invalid; nothing was run."""

    code = -32003


class NotAllowed(PraxisError):
    """Policy refuses this caller for this tool."""

    code = -32004


class Busy(PraxisError):
    """A concurrency limit is reached; try again later."""

    code = -32005


class TooLarge(PraxisError):
    """A frame, argument or result exceeds its size limit."""

    code = -32006


class NoProvider(PraxisError):
    """No local engine, peer or MCP server could serve the tool."""

    code = -32007


class PeerUnreachable(PraxisError):
    """A peer could not be dialled or vanished before answering.

    `maybe_ran` is True when the request had already been sent: the tool may have run.
    """

    code = -32008

    def __init__(self, message: str, *, maybe_ran: bool = False) -> None:
        super().__init__(message)
        self.maybe_ran = maybe_ran


class Cancelled(PraxisError):
    """The caller gave up (cancel, Ctrl-C, closed request, vanished peer, stopping node): the
    work was stopped and the call is not retried anywhere."""

    code = -32009


_BY_CODE: dict[int, type[PraxisError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        ToolNotFound,
        InvalidArguments,
        ToolExecutionError,
        ToolTimeout,
        EngineUnavailable,
        ContractError,
        NotAllowed,
        Busy,
        TooLarge,
        NoProvider,
        PeerUnreachable,
        Cancelled,
    )
}


def error_from_code(code: int, message: str) -> PraxisError:
    """Rebuild the typed error a remote node reported (unknown codes become PraxisError)."""
    cls = _BY_CODE.get(code, PraxisError)
    err = cls(message)
    err.code = code
    return err
