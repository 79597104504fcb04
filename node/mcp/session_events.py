"""What an upstream MCP server says during a call, routed to the call it belongs to.

A pooled session is shared by every call to its server, but its log notifications
(`notifications/message`), sampling requests (`sampling/createMessage`) and elicitation
requests (`elicitation/create`) are session-wide: on the wire they do not name the request
they belong to (the SDK's client transports do not say which HTTP response stream carried
them, and stdio has only one stream). The rule:

- progress carries its request's `progressToken`: it always reaches its own call;
- a log notification or a sampling/elicitation request reaches the call in flight when
  exactly one call is in flight on the session; with none or several, a log notification is
  dropped (counted) and a request is refused with `AMBIGUOUS` (JSON-RPC -32600), so no
  caller ever sees what belongs to another caller's call.

Delivery never stalls the shared session: progress and log go through a bounded queue per
call (extras dropped) that one task of the call drains in order, through `LimitedEvents`;
the call returns only after its queue is delivered. A question waits for the caller's
answer within the call's deadline and the bounds of `LimitedEvents`, and is cancelled when
the call ends. The caller's error (`AskRefused`) goes back to the server unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import mcp_types
import trio
from pydantic import ValidationError

from protocols.call_events import (
    ELICITATION,
    INVALID_REQUEST,
    SAMPLING,
    AskRefused,
    CallEvents,
    LogMessage,
    Progress,
)
from protocols.event_limits import limited

log = logging.getLogger("praxis.mcp.session_events")

QUEUE_SIZE = 64  # progress and log events waiting for a slow caller, per call
INTERNAL_ERROR = -32603
AMBIGUOUS = "cannot tell which call this request belongs to: several calls (or none) are in flight on this session"
Event = Progress | LogMessage
T = TypeVar("T")


class CallInFlight:
    """One call on a shared session: its caller, its deadline, its queue and its questions."""

    def __init__(self, events: CallEvents, deadline: float) -> None:
        self.events = limited(events)
        self.deadline = deadline
        self._send, self._receive = trio.open_memory_channel[Event](QUEUE_SIZE)
        self._asks: set[trio.CancelScope] = set()
        self.dropped = 0

    def post(self, event: Event) -> None:
        """Queue an event for the caller without waiting; dropped when the queue is full or closed."""
        try:
            self._send.send_nowait(event)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.dropped += 1

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        """The SDK's `progress_callback` for this call's request."""
        self.post(Progress(progress, total, message))

    async def _deliver(self) -> None:
        broken = False
        async with self._receive:
            async for event in self._receive:
                if broken:
                    continue  # keep draining so `post` never blocks; the caller is gone
                try:
                    if isinstance(event, Progress):
                        await self.events.progress(event)
                    else:
                        await self.events.log(event)
                except Exception as exc:  # a caller that cannot listen does not fail the call
                    log.info("a caller stopped taking events: %s", type(exc).__name__)
                    broken = True

    async def run(self, body: Callable[[], Awaitable[T]]) -> T:
        """Run the call's request, delivering queued events meanwhile and the rest after it;
        questions still open when it ends are cancelled."""
        failure: Exception | None = None
        value: T | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._deliver)
                try:
                    value = await body()
                except Exception as exc:  # raised below, outside the nursery: no exception group
                    failure = exc
                finally:
                    self._send.close()
        finally:
            for scope in list(self._asks):
                scope.cancel()
        if failure is not None:
            raise failure
        return value  # type: ignore[return-value]

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Ask the caller; cancelled when the call ends. Raises `AskRefused`."""
        with trio.CancelScope() as scope:
            self._asks.add(scope)
            try:
                return await self.events.ask(method, params, self.deadline)
            finally:
                self._asks.discard(scope)
        raise AskRefused(INVALID_REQUEST, "the call ended before the caller answered")


class SessionCalls:
    """The calls in flight on one session, and the session-wide callbacks that find them."""

    def __init__(self, server: str) -> None:
        self.server = server  # the server as messages name it (no secrets)
        self._calls: dict[int, CallInFlight] = {}
        self.unrouted = 0  # log notifications and requests that found no single call

    @contextmanager
    def call(self, events: CallEvents, deadline: float) -> Iterator[CallInFlight]:
        """Register a call for the time of its request."""
        call = CallInFlight(events, deadline)
        self._calls[id(call)] = call
        try:
            yield call
        finally:
            del self._calls[id(call)]

    def sole_call(self) -> CallInFlight | None:
        if len(self._calls) == 1:
            return next(iter(self._calls.values()))
        return None

    # ----- the SDK's session callbacks ------------------------------------------------------

    async def on_log(self, params: mcp_types.LoggingMessageNotificationParams) -> None:
        call = self.sole_call()
        if call is None:
            self.unrouted += 1
            log.debug("%s: a log message with %d calls in flight was dropped", self.server, len(self._calls))
            return
        call.post(LogMessage(str(params.level), params.data, params.logger))

    async def on_sampling(
        self, context: Any, params: mcp_types.CreateMessageRequestParams
    ) -> mcp_types.CreateMessageResult | mcp_types.CreateMessageResultWithTools | mcp_types.ErrorData:
        answer = await self._ask(SAMPLING, params)
        if isinstance(answer, mcp_types.ErrorData):
            return answer
        for model in (mcp_types.CreateMessageResult, mcp_types.CreateMessageResultWithTools):
            try:
                return model.model_validate(answer)
            except ValidationError:
                continue
        return mcp_types.ErrorData(code=INTERNAL_ERROR, message="the caller's answer is not a sampling result")

    async def on_elicitation(
        self, context: Any, params: mcp_types.ElicitRequestParams
    ) -> mcp_types.ElicitResult | mcp_types.ErrorData:
        answer = await self._ask(ELICITATION, params)
        if isinstance(answer, mcp_types.ErrorData):
            return answer
        try:
            return mcp_types.ElicitResult.model_validate(answer)
        except ValidationError:
            return mcp_types.ErrorData(code=INTERNAL_ERROR, message="the caller's answer is not an elicitation result")

    async def _ask(self, method: str, params: Any) -> dict[str, Any] | mcp_types.ErrorData:
        call = self.sole_call()
        if call is None:
            self.unrouted += 1
            log.info("%s: refused a %s request: %d calls in flight", self.server, method, len(self._calls))
            return mcp_types.ErrorData(code=INVALID_REQUEST, message=AMBIGUOUS)
        wire = params.model_dump(by_alias=True, exclude_none=True, mode="json")
        try:
            return await call.ask(method, wire)
        except AskRefused as exc:
            return mcp_types.ErrorData(code=exc.code, message=exc.message)
        except Exception as exc:  # a caller's bug must not break the shared session
            log.warning("%s: asking the caller failed: %s", self.server, type(exc).__name__)
            return mcp_types.ErrorData(code=INTERNAL_ERROR, message="the caller could not be asked")
