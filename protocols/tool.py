"""`/praxis/tool/1.0.0`: one request frame, one response frame, per stream."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from protocols.codec import parse_model
from protocols.errors import InvalidRequest, PraxisError, TooLarge
from protocols.messages import ToolRequest, ToolResponse
from protocols.streams import READ_CHUNK, ByteStream, WireLimits, end_stream

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


async def _dispatch_until_reset(
    stream: ByteStream, dispatch: Dispatch, request: ToolRequest, remote_peer_id: str,
    was_reset: Callable[[], bool],
) -> ToolResponse | None:
    """Run the call; a reset by the caller (its only way to cancel on 1.0.0) cancels it (None).

    A half-close after the request is no cancel (a caller may close its side once it has
    written); bytes after the request are read and ignored. py-libp2p reports a reset as an
    EOF too: `was_reset` tells them apart.
    """
    response: ToolResponse | None = None
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            try:
                while await stream.read(READ_CHUNK):
                    pass
            except EOFError:  # libp2p's StreamEOF: a half-close, or a reset reported as one
                pass
            except Exception:  # a reset, or the connection gone: nobody waits for the answer
                nursery.cancel_scope.cancel()
                return
            if was_reset():
                nursery.cancel_scope.cancel()
                return
            await trio.sleep_forever()

        nursery.start_soon(watch)
        response = await dispatch(request, remote_peer_id)
        nursery.cancel_scope.cancel()
    return response


async def serve_tool_stream(
    stream: ByteStream, remote_peer_id: str, dispatch: Dispatch, limits: WireLimits,
    on_bad_request: Callable[[PraxisError], None] | None = None,
    was_reset: Callable[[], bool] = lambda: False,
) -> None:
    """Server side of one stream: never raises, always ends the stream.

    A request that cannot be read or parsed gets an error frame (when the stream can still
    carry one) and is reported to `on_bad_request`; `dispatch` turns a valid request into a
    response, errors included. A reset of the stream during the call cancels it.
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
        response = await _dispatch_until_reset(stream, dispatch, request, remote_peer_id, was_reset)
        if response is None:
            log.info("tool stream from %s reset during the call: the call was cancelled", remote_peer_id)
            return
        with trio.move_on_after(limits.idle_timeout):
            await framed.write_json(response.to_wire())
            ok = True
    except PraxisError as exc:
        log.info("tool stream from %s ended: %s", remote_peer_id, exc.message)
    except Exception:  # a handler must never take the node down; log it and reset
        log.exception("unexpected error serving a tool stream from %s", remote_peer_id)
    finally:
        await end_stream(stream, ok=ok)
