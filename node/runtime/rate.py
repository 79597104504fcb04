"""Counting events per key in a sliding window: the budgets that bound what peers can cause."""

from __future__ import annotations

from collections import deque

import trio


class RateWindow:
    """At most `limit` events per key within the last `window` seconds.

    Memory stays bounded: a key is kept only while it has events inside the window, and
    refused events are not recorded.
    """

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = {}

    def try_take(self, key: str) -> bool:
        """Record one event for `key` and return True, or return False when over the limit."""
        now = trio.current_time()
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= 4 * self.limit + 1024:
                self._prune(now)
            events = self._events[key] = deque()
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True

    def remaining(self, key: str) -> int:
        """Events `key` may still have now, without recording one."""
        now = trio.current_time()
        events = self._events.get(key)
        recent = sum(1 for t in events if t > now - self.window) if events else 0
        return self.limit - recent

    def forget(self, key: str) -> None:
        self._events.pop(key, None)

    def _prune(self, now: float) -> None:
        stale = [k for k, ev in self._events.items() if not ev or ev[-1] <= now - self.window]
        for key in stale:
            del self._events[key]
