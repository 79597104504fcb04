"""`/praxis/tool/1.0.0`: one request frame, one response frame, per stream."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from protocols.codec import parse_model
from protocols.errors import InvalidRequest, PraxisError, TooLarge
from protocols.messages import ToolRequest, ToolResponse
from protocols.streams import ByteStream, WireLimits, end_stream

TOOL_PROTOCOL = "/praxis/tool/1.0.0"

log = logging.getLogger("praxis.protocol.tool")

Dispatch = Callable[[ToolRequest, str], Awaitable[ToolResponse]]


async def request_tool(
    stream: ByteStream, request: ToolRequest, limits: WireLimits, deadline: float
) -> ToolResponse:
    """Client side: write the request, read and validate the response (caller ends the stream)."""
    framed = limits.framed(stream)
    await framed.write_json(request.to_wire(), deadline)
    response = parse_model(ToolResponse, await framed.read_json(deadline), "tool response")
    if response.id != request.id:
        raise InvalidRequest(f"tool response answers request {response.id[:64]!r}, not {request.id!r}")
    return response


def _request_id(raw: Any) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("id"), str):
        return raw["id"][:128]
    return ""


async def serve_tool_stream(
    stream: ByteStream, remote_peer_id: str, dispatch: Dispatch, limits: WireLimits,
    on_bad_request: Callable[[PraxisError], None] | None = None,
) -> None:
    """Server side of one stream: never raises, always ends the stream.

    A request that cannot be read or parsed gets an error frame (when the stream can still
    carry one) and is reported to `on_bad_request`; `dispatch` turns a valid request into a
    response, errors included.
    """
    framed = limits.framed(stream)
    ok = False
    try:
        raw: Any = None
        try:
            # The whole request within the idle time: a peer dripping a byte at a time cannot
            # hold a stream open past it.
            raw = await framed.read_json(trio.current_time() + limits.idle_timeout)
            request = parse_model(ToolRequest, raw, "tool request")
        except (InvalidRequest, TooLarge) as exc:
            log.warning("bad tool request from %s: %s", remote_peer_id, exc.message)
            if on_bad_request is not None:
                on_bad_request(exc)
            reply = ToolResponse.failure(_request_id(raw), exc.code, exc.message)
            with trio.move_on_after(limits.idle_timeout):
                await framed.write_json(reply.to_wire())
                # An oversized frame leaves unread bytes behind: reset. Otherwise close.
                ok = not isinstance(exc, TooLarge)
            return
        response = await dispatch(request, remote_peer_id)
        with trio.move_on_after(limits.idle_timeout):
            await framed.write_json(response.to_wire())
            ok = True
    except PraxisError as exc:
        log.info("tool stream from %s ended: %s", remote_peer_id, exc.message)
    except Exception:  # a handler must never take the node down; log it and reset
        log.exception("unexpected error serving a tool stream from %s", remote_peer_id)
    finally:
        await end_stream(stream, ok=ok)
