"""Bounds on what a tool may say during one call: the `CallEvents` wrapper every hop reuses.

A tool (or an upstream server, or a peer further on) may print 100,000 progress lines or ask
a hundred questions at once. `LimitedEvents` stands between it and the caller:

- progress: at most `progress_rate` per second (a burst of `progress_burst`), extras dropped;
  a report whose `progress` does not grow is dropped (MCP requires it to increase); numbers
  must be finite; the message is cleaned (control characters removed) and cut to
  `max_text` characters.
- log: at most `log_rate` per second (a burst of `log_burst`), extras dropped; an unknown
  level becomes `info`; text data is cleaned and cut; other data over `max_log_bytes` of JSON
  becomes a cut string; the logger name is cleaned and cut to 100 characters.
- ask: at most `max_pending_asks` at once, params of at most `max_ask_bytes` JSON, an answer
  of at most `max_answer_bytes`, waiting at most `max_ask_seconds`; anything over a bound is
  refused with `AskRefused` (nothing is sent to the caller).

Nothing is retried and nothing is queued: a dropped event is counted (`dropped`) and gone.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import trio

from protocols.call_events import INVALID_REQUEST, LOG_LEVELS, AskRefused, CallEvents, LogMessage, Progress

# C0/C1 control characters and the Unicode bidi overrides that can disguise text in a terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
MAX_LOGGER_NAME = 100


def clean_text(text: str, limit: int) -> str:
    """One line of printable text, at most `limit` characters (tabs and newlines become spaces)."""
    text = _CONTROL.sub(lambda m: " " if m.group() in "\t\n\r" else "", text).strip()
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _json_size(value: Any) -> int:
    try:
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError):
        return -1  # not JSON at all


class TokenBucket:
    """`rate` events per second on average, at most `burst` at once (trio's clock)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = trio.current_time()

    def take(self) -> bool:
        now = trio.current_time()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class LimitedEvents:
    """A `CallEvents` that passes on only what stays within the bounds above. One per call."""

    def __init__(
        self,
        inner: CallEvents,
        *,
        progress_rate: float = 10.0,
        progress_burst: int = 20,
        log_rate: float = 20.0,
        log_burst: int = 50,
        max_text: int = 500,
        max_log_bytes: int = 8192,
        max_pending_asks: int = 4,
        max_ask_bytes: int = 256 * 1024,
        max_answer_bytes: int = 1024 * 1024,
        max_ask_seconds: float = 300.0,
    ) -> None:
        self.inner = inner
        self.max_text = max_text
        self.max_log_bytes = max_log_bytes
        self.max_pending_asks = max_pending_asks
        self.max_ask_bytes = max_ask_bytes
        self.max_answer_bytes = max_answer_bytes
        self.max_ask_seconds = max_ask_seconds
        self._progress_bucket = TokenBucket(progress_rate, progress_burst)
        self._log_bucket = TokenBucket(log_rate, log_burst)
        self._last_progress = -math.inf
        self._pending = 0
        self.dropped = 0  # progress and log events not passed on

    @property
    def log_level(self) -> str | None:
        return self.inner.log_level

    async def progress(self, update: Progress) -> None:
        total = update.total
        if not math.isfinite(update.progress) or (total is not None and not math.isfinite(total)):
            self.dropped += 1
            return
        if update.progress <= self._last_progress or not self._progress_bucket.take():
            self.dropped += 1
            return
        self._last_progress = update.progress
        message = clean_text(update.message, self.max_text) if update.message else None
        await self.inner.progress(Progress(update.progress, total, message or None))

    async def log(self, message: LogMessage) -> None:
        if not self._log_bucket.take():
            self.dropped += 1
            return
        level = message.level if message.level in LOG_LEVELS else "info"
        data = message.data
        if isinstance(data, str):
            data = clean_text(data, self.max_text)
        else:
            size = _json_size(data)
            if size < 0 or size > self.max_log_bytes:
                shown = json.dumps(data, default=str, ensure_ascii=False)
                data = clean_text(shown, min(self.max_text, self.max_log_bytes))
        logger = clean_text(message.logger, MAX_LOGGER_NAME) if message.logger else None
        await self.inner.log(LogMessage(level, data, logger or None))

    async def ask(self, method: str, params: dict[str, Any], deadline: float) -> dict[str, Any]:
        if self._pending >= self.max_pending_asks:
            raise AskRefused(INVALID_REQUEST, f"too many requests to the caller at once "
                                              f"(at most {self.max_pending_asks} per call)")
        size = _json_size(params)
        if size < 0 or size > self.max_ask_bytes:
            raise AskRefused(INVALID_REQUEST, f"request to the caller is over {self.max_ask_bytes} bytes")
        deadline = min(deadline, trio.current_time() + self.max_ask_seconds)
        self._pending += 1
        try:
            with trio.move_on_at(deadline):
                answer = await self.inner.ask(method, params, deadline)
                size = _json_size(answer)
                if size < 0 or size > self.max_answer_bytes:
                    raise AskRefused(INVALID_REQUEST, f"the caller's answer is over {self.max_answer_bytes} bytes")
                return answer
            raise AskRefused(INVALID_REQUEST, "the caller did not answer in time")
        finally:
            self._pending -= 1


def limited(events: CallEvents, **bounds: Any) -> CallEvents:
    """`events` within bounds; an already limited one is returned as it is (no double count)."""
    if isinstance(events, LimitedEvents) and not bounds:
        return events
    return LimitedEvents(events, **bounds)
