"""In-process sample tools for tests and benchmarks (the `python` engine)."""

from __future__ import annotations

from typing import Any

import trio


def echo(text: str) -> str:
    return text


def noop() -> str:
    return ""


def names(**arguments: Any) -> list[str]:
    """The names of the arguments it was called with (for tools that accept undeclared ones)."""
    return sorted(arguments)


def add(a: float, b: float) -> dict[str, Any]:
    return {"sum": a + b}


async def slow(seconds: float) -> str:
    await trio.sleep(seconds)
    return f"slept {seconds:g}s"


def fail(message: str) -> str:
    raise RuntimeError(message)


async def record(token: str, seconds: float = 0.0) -> str:
    """Sleep, then append the token to $PRAXIS_TEST_RECORD_FILE: proves which calls ran, and how often."""
    import os

    await trio.sleep(seconds)
    path = os.environ["PRAXIS_TEST_RECORD_FILE"]
    with open(path, "a", encoding="utf-8") as f:  # noqa: ASYNC230 - one short line, synchronously on purpose
        f.write(token + "\n")
    return token


async def steps(count: int, praxis_events: Any) -> str:
    """Report `count` progress steps and one log line through the call's events (python engine)."""
    from protocols.call_events import LogMessage, Progress

    for i in range(1, int(count) + 1):
        await praxis_events.progress(Progress(i, count, f"step {i}"))
    await praxis_events.log(LogMessage("info", "steps done"))
    return f"{count} steps"
