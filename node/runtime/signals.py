"""A versioned change signal: wake every waiter when something changes, lose no change."""

from __future__ import annotations

import trio


class ChangeSignal:
    """A counter that waiters can block on; `bump()` wakes everyone waiting for a newer version."""

    def __init__(self) -> None:
        self.version = 0
        self._event = trio.Event()
        self._followers: list[ChangeSignal] = []

    def bump(self) -> None:
        self.version += 1
        self._event.set()
        self._event = trio.Event()
        for follower in self._followers:
            follower.bump()

    def follow(self, *sources: ChangeSignal) -> ChangeSignal:
        """Bump this signal whenever any of `sources` is bumped (at once, no task needed)."""
        for source in sources:
            source._followers.append(self)
        return self

    async def wait_past(self, version: int) -> int:
        """Return the current version once it is greater than `version`."""
        while self.version <= version:
            await self._event.wait()
        return self.version
