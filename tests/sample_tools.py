"""In-process sample tools for tests and benchmarks (the `python` engine)."""

from __future__ import annotations

from typing import Any

import trio


def echo(text: str) -> str:
    return text


def noop() -> str:
    return ""


def add(a: float, b: float) -> dict[str, Any]:
    return {"sum": a + b}


async def slow(seconds: float) -> str:
    await trio.sleep(seconds)
    return f"slept {seconds:g}s"


def fail(message: str) -> str:
    raise RuntimeError(message)
