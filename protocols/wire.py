"""What both praxis protocols share: limits, stream ending, model validation errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import trio
from pydantic import BaseModel, ValidationError

from protocols.errors import InvalidRequest
from protocols.framing import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_DEPTH, DEFAULT_MAX_FRAME_BYTES, FramedStream

CLOSE_TIMEOUT = 2.0
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class WireLimits:
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_depth: int = DEFAULT_MAX_DEPTH

    def framed(self, stream: Any) -> FramedStream:
        return FramedStream(
            stream,
            max_frame_bytes=self.max_frame_bytes,
            idle_timeout=self.idle_timeout,
            max_depth=self.max_depth,
        )


def parse_model(model: type[M], raw: Any, what: str) -> M:
    """Validate a decoded frame; the error names the fields, never their values."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{what} must be a JSON object, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:5]:
            field = ".".join(str(p) for p in err["loc"]) or "(root)"
            problems.append(f"{field}: {err['msg']}")
        raise InvalidRequest(f"invalid {what}: " + "; ".join(problems)) from None


async def end_stream(stream: Any, *, ok: bool) -> None:
    """Close a stream after a complete exchange, reset it after a failure; never hang."""
    with trio.move_on_after(CLOSE_TIMEOUT) as scope:
        scope.shield = True
        try:
            if ok:
                await stream.close()
            else:
                await stream.reset()
        except Exception:  # the stream is already gone: nothing left to release
            return
    if scope.cancelled_caught:
        # The peer did not acknowledge the close in time; drop our side.
        with trio.move_on_after(CLOSE_TIMEOUT) as scope2:
            scope2.shield = True
            try:
                await stream.reset()
            except Exception:
                return


@asynccontextmanager
async def closing_stream(stream: Any) -> AsyncIterator[Any]:
    """Close the stream after the block; reset it when the block raised."""
    ok = False
    try:
        yield stream
        ok = True
    finally:
        await end_stream(stream, ok=ok)
