"""The MCP client behind one `tools/call` of the node's endpoint, as the tool sees it (`CallEvents`).

- progress becomes `notifications/progress` for the client's `progressToken`, only when the
  client sent one; at most one every `PROGRESS_INTERVAL` seconds per call (the newest report
  waits, and goes out when the interval has passed or just before the result; those in
  between are dropped), and only increasing values (the spec requires it);
- log messages become `notifications/message` related to the call, at or above the level
  the client set with `logging/setLevel` for its session (`DEFAULT_LOG_LEVEL` before any),
  at most `LOG_BURST` a second per call, each at most `MAX_LOG_BYTES` of JSON;
- a question (sampling, elicitation) becomes a `sampling/createMessage` or
  `elicitation/create` request to the client, related to the call, answered within the
  call's deadline; a client that declared no such capability is not asked: the tool gets
  what such a client answers (`not_supported`). At most `MAX_PENDING_ASKS` at once per call,
  each at most `MAX_ASK_BYTES` of JSON, and so is the answer.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import anyio
import mcp_types
import trio
from mcp.server.connection import allowed_log_levels
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError

from protocols.call_events import (
    ELICITATION,
    LOG_LEVELS,
    SAMPLING,
    AskRefused,
    LogMessage,
    Progress,
    not_supported,
)
from protocols.errors import Busy, InvalidArguments, TooLarge, ToolTimeout
from protocols.event_limits import TokenBucket

log = logging.getLogger("praxis.mcp.server")

PROGRESS_INTERVAL = 0.1  # seconds between two progress notifications of one call
LOG_BURST = 20  # log notifications per second and call; more are dropped
MAX_LOG_BYTES = 64 * 1024  # one log notification's data, as JSON
MAX_PENDING_ASKS = 4  # questions of one call waiting for the client at once
MAX_ASK_BYTES = 1024 * 1024  # one question, and one answer, as JSON
DEFAULT_LOG_LEVEL = "info"  # a session's threshold before it sends logging/setLevel
LOG_LEVEL_STATE = "praxis/logLevel"  # where a session's level lives (its Connection.state)
METHOD_NOT_FOUND = -32601


def session_log_level(connection: Any) -> str:
    """The level a client session asked for (`logging/setLevel`), else `DEFAULT_LOG_LEVEL`."""
    state = getattr(connection, "state", None)
    level = state.get(LOG_LEVEL_STATE) if isinstance(state, dict) else None
    return level if level in LOG_LEVELS else DEFAULT_LOG_LEVEL


def set_session_log_level(connection: Any, level: str) -> None:
    state = getattr(connection, "state", None)
    if isinstance(state, dict) and level in LOG_LEVELS:
        state[LOG_LEVEL_STATE] = level


def connection_of(ctx: Any) -> Any:
    """The client's connection behind a request context (the SDK keeps it on the session)."""
    return getattr(ctx, "connection", None) or getattr(getattr(ctx, "session", None), "_connection", None)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _json_size(value: Any) -> int:
    try:
        return len(json.dumps(value, separators=(",", ":"), allow_nan=False))
    except (TypeError, ValueError):
        return MAX_ASK_BYTES + 1  # not JSON: too large to pass on


class ClientEvents:
    """`CallEvents` for one `tools/call` request of one MCP client session."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.session = ctx.session
        self.connection = connection_of(ctx)
        meta = ctx.meta
        # `_meta` as the SDK validated it (a dict with `progress_token`).
        token = meta.get("progress_token") if isinstance(meta, dict) else None
        self.progress_token: str | int | None = token if isinstance(token, str | int) else None
        self.protocol_version = str(getattr(self.connection, "protocol_version", ""))
        self._last_progress: float | None = None  # the last value sent
        self._sent_at = -float("inf")
        self._waiting: Progress | None = None  # the newest report held back by the interval
        self._held = trio.Event()
        self._log_bucket = TokenBucket(LOG_BURST, LOG_BURST)
        self._pending_asks = 0

    # ----- progress ----------------------------------------------------------------------

    async def progress(self, update: Progress) -> None:
        if self.progress_token is None or not _finite(update.progress) or \
                (update.total is not None and not _finite(update.total)):
            return
        last = self._waiting.progress if self._waiting is not None else self._last_progress
        if last is not None and not update.progress > last:
            return  # the spec wants increasing values: a report that goes back is dropped
        self._waiting = update
        if trio.current_time() - self._sent_at >= PROGRESS_INTERVAL:
            await self.flush()
        else:
            self._held.set()  # `pump` sends it once the interval has passed

    async def pump(self) -> None:
        """Run beside the call: send a held-back report once the interval has passed."""
        while True:
            await self._held.wait()
            self._held = trio.Event()
            await trio.sleep_until(self._sent_at + PROGRESS_INTERVAL)
            await self.flush()

    async def flush(self) -> None:
        """Send the report held back by the interval, if any (called before the result too)."""
        update, self._waiting = self._waiting, None
        if update is None:
            return
        self._last_progress, self._sent_at = update.progress, trio.current_time()
        message = update.message[:1000] if isinstance(update.message, str) else None
        try:
            await self.session.report_progress(update.progress, update.total, message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            log.debug("progress not delivered: the client's stream is closed")  # the call goes on

    # ----- log messages ------------------------------------------------------------------

    @property
    def log_level(self) -> str | None:
        """The lowest level this client wants for this call, passed on to the hops behind."""
        wanted = [level for level in LOG_LEVELS if self._wants(level)]
        return wanted[0] if wanted else None

    def _wants(self, level: str) -> bool:
        if level not in LOG_LEVELS:
            return False
        if self.protocol_version in MODERN_PROTOCOL_VERSIONS:
            # 2026-07-28 clients opt in per request (`_meta`), and there is no setLevel.
            return level in allowed_log_levels(self.protocol_version, _meta_dict(self.ctx.meta))
        return LOG_LEVELS.index(level) >= LOG_LEVELS.index(session_log_level(self.connection))

    async def log(self, message: LogMessage) -> None:
        if not self._wants(message.level):
            return
        if not self._log_bucket.take():
            return
        data = message.data
        if _json_size(data) > MAX_LOG_BYTES:
            data = f"(a log message of more than {MAX_LOG_BYTES // 1024} KiB, dropped)"
        logger = message.logger[:128] if isinstance(message.logger, str) else None
        notification = mcp_types.LoggingMessageNotification(
            params=mcp_types.LoggingMessageNotificationParams(level=message.level, data=data,  # type: ignore[arg-type]
                                                              logger=logger))
        try:
            await self.session.send_notification(notification, related_request_id=self.ctx.request_id)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            log.debug("log message not delivered: the client's stream is closed")  # the call goes on

    # ----- questions ---------------------------------------------------------------------

    def _capable(self, method: str) -> bool:
        wanted = (mcp_types.ClientCapabilities(sampling=mcp_types.SamplingCapability()) if method == SAMPLING
                  else mcp_types.ClientCapabilities(elicitation=mcp_types.ElicitationCapability()))
        return bool(self.session.check_client_capability(wanted))

    async def ask(self, method: str, params: dict[str, Any], deadline: float) -> dict[str, Any]:
        if method not in (SAMPLING, ELICITATION):
            raise AskRefused(METHOD_NOT_FOUND, "Method not found")
        if not self._capable(method) or not self.session.can_send_request:
            raise not_supported(method)  # what this client would answer: it is not asked
        if self._pending_asks >= MAX_PENDING_ASKS:
            raise AskRefused(Busy.code, f"{MAX_PENDING_ASKS} questions to the client are pending already")
        if _json_size(params) > MAX_ASK_BYTES:
            raise AskRefused(TooLarge.code, f"a question over {MAX_ASK_BYTES // 1024} KiB is not passed on")
        remaining = deadline - trio.current_time()
        if remaining <= 0:
            raise AskRefused(ToolTimeout.code, "the call's deadline has passed")
        try:
            request, result_type = _typed_request(method, params)
        except ValidationError:
            raise AskRefused(InvalidArguments.code, f"invalid {method} request") from None
        self._pending_asks += 1
        try:
            with trio.fail_at(deadline):
                answer = await self.session.send_request(
                    request, result_type, request_read_timeout_seconds=remaining,
                    metadata=ServerMessageMetadata(related_request_id=self.ctx.request_id))
        except NoBackChannelError:
            raise not_supported(method) from None
        except MCPError as exc:
            raise AskRefused(exc.code, exc.message[:1000]) from None
        except (trio.TooSlowError, TimeoutError):
            raise AskRefused(ToolTimeout.code, "the client did not answer before the call's deadline") from None
        except ValidationError:
            raise AskRefused(InvalidArguments.code, f"the client's answer to {method} is not valid") from None
        finally:
            self._pending_asks -= 1
        result = answer.model_dump(by_alias=True, mode="json", exclude_none=True)
        if _json_size(result) > MAX_ASK_BYTES:
            raise AskRefused(TooLarge.code, f"the client's answer is over {MAX_ASK_BYTES // 1024} KiB")
        return result


def _typed_request(method: str, params: dict[str, Any]) -> tuple[Any, type[BaseModel]]:
    """The SDK's model of the question (validated) and of the answer it expects."""
    if method == SAMPLING:
        request = mcp_types.CreateMessageRequest.model_validate({"method": method, "params": params}, by_name=False)
        with_tools = params.get("tools") is not None or params.get("toolChoice") is not None
        return request, (mcp_types.CreateMessageResultWithTools if with_tools else mcp_types.CreateMessageResult)
    elicit = mcp_types.ElicitRequest.model_validate({"method": method, "params": params}, by_name=False)
    return elicit, mcp_types.ElicitResult


def _meta_dict(meta: Any) -> dict[str, Any] | None:
    if meta is None:
        return None
    if isinstance(meta, dict):
        return meta
    dump = getattr(meta, "model_dump", None)
    return dump(by_alias=True) if callable(dump) else None
