"""What the CLI tells a person when something goes wrong: one line, a hint, a documented exit code.

Exit codes (the README's table):

| code | meaning |
|---|---|
| 0 | success |
| 1 | the tool failed or refused the call (unknown tool, bad arguments, no provider, timeout), or an unexpected error |
| 2 | bad usage or config: a command line, a config file, an environment variable, a URL or token the node refuses |
| 3 | the node or peer could not be reached |
| 130 | interrupted (Ctrl-C); `praxis-node run` stopped by Ctrl-C exits 0 |

This module imports nothing heavy: `--node` commands must start fast.
"""

from __future__ import annotations

import sys

EXIT_OK, EXIT_TOOL_ERROR, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
NODE_COMMANDS = ("run", "mcp")  # they start a node from a config: what stops them at start is the config


class CliError(Exception):
    """A failure the CLI reports as one line (never a traceback, unless --debug)."""

    exit_code = EXIT_TOOL_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(CliError):
    """The command line, a URL, a token: what the user gave cannot work (exit 2)."""

    exit_code = EXIT_USAGE


class Unreachable(CliError):
    """The node or peer could not be reached, or stopped answering (exit 3)."""

    exit_code = EXIT_UNREACHABLE


def first_leaf(exc: BaseException) -> BaseException:
    """The first non-group exception inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _is(exc: BaseException, module: str, name: str) -> bool:
    """isinstance(exc, module.name), without importing the module: an exception of a module
    that was never imported cannot have been raised (this keeps `--node` free of heavy imports)."""
    loaded = sys.modules.get(module)
    cls = getattr(loaded, name, None) if loaded is not None else None
    return isinstance(cls, type) and isinstance(exc, cls)


def explain(exc: BaseException, command: str, where: str | None) -> tuple[str, int]:
    """(the line to print, the exit code) for an exception that ended a command.

    `where` is what the user named with --node or --peer (None for other commands).
    """
    leaf = first_leaf(exc)
    if isinstance(leaf, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(leaf, CliError):
        return f"error: {leaf.message}", leaf.exit_code
    if _is(leaf, "node.config", "ConfigError"):
        return f"config error: {leaf}", EXIT_USAGE
    if _is(leaf, "protocols.errors", "PraxisError"):
        message: str = getattr(leaf, "message", str(leaf))
        if _is(leaf, "protocols.errors", "PeerUnreachable"):
            return f"error: {message}", EXIT_UNREACHABLE
        if _is(leaf, "protocols.errors", "ContractError") or command in NODE_COMMANDS:
            return f"config error: {message}", EXIT_USAGE  # a tool's contract, an engine: the config
        return f"error: {message}", EXIT_TOOL_ERROR
    if isinstance(leaf, ValueError):  # a bad address, an endpoint that cannot be served as configured
        return f"error: {leaf}", EXIT_USAGE
    if isinstance(leaf, OSError):
        reason = leaf.strerror or str(leaf) or type(leaf).__name__
        if where is not None:
            return f"error: cannot reach {where}: {reason}", EXIT_UNREACHABLE
        filename = f" ({leaf.filename})" if getattr(leaf, "filename", None) else ""
        return f"error: {command}: {reason}{filename}", EXIT_USAGE
    text = str(leaf).strip().splitlines()
    detail = f": {text[0][:300]}" if text else ""
    return (f"error: unexpected {type(leaf).__name__}{detail} (run with --debug for the traceback)",
            EXIT_TOOL_ERROR)
