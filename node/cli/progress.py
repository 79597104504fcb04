"""What `praxis-node call` shows on stderr while a call runs (stdout carries only the result).

- On a terminal: one line, rewritten in place about five times a second: the tool, the seconds
  elapsed, and the last progress report (`3/10 (30%)`, or `3` without a total, then its
  message). It is erased before the result is printed.
- Not on a terminal (a pipe, a file, a CI log): one plain line per progress report,
  `progress: 3/10 (30%) copying files`, and nothing else.
- With `--json`: nothing at all.

A message is the tool's own text, from wherever in the mesh it runs: control characters are
replaced (a remote tool cannot move the cursor or recolour the terminal) and it is cut to
`MAX_MESSAGE` characters.
"""

from __future__ import annotations

import shutil
import sys
from typing import TextIO

import trio

TICK = 0.2  # seconds between two redraws of the terminal line
MAX_MESSAGE = 200


def _clean(text: str) -> str:
    """Printable text only: C0, DEL and C1 control characters become "?"."""
    return "".join("?" if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in text[:MAX_MESSAGE])


def describe(progress: float, total: float | None, message: str | None) -> str:
    """`3/10 (30%) message`, `3 message` without a total."""
    text = f"{progress:g}"
    if total:
        text += f"/{total:g} ({min(progress / total, 1.0):.0%})"
    return text + (f" {_clean(message)}" if message else "")


class CallDisplay:
    """The elapsed time and progress of one call, on stderr (see the module's doc)."""

    def __init__(self, tool: str, *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.tool = _clean(tool)
        self.started = trio.current_time()
        self.last = ""
        self._shown = False

    def progress(self, progress: float, total: float | None, message: str | None) -> None:
        if not self.enabled:
            return
        self.last = describe(progress, total, message)
        if self.tty:
            self._draw()
        else:
            print(f"progress: {self.last}", file=self.stream, flush=True)

    async def run(self) -> None:
        """On a terminal, keep the elapsed time moving until cancelled; elsewhere, nothing."""
        if not self.tty:
            return
        while True:
            self._draw()
            await trio.sleep(TICK)

    def clear(self) -> None:
        """Erase the terminal line, before the result or an error is printed."""
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False

    def _draw(self) -> None:
        elapsed = trio.current_time() - self.started
        line = f"{self.tool}: {elapsed:.1f} s" + (f"  {self.last}" if self.last else "")
        width = max(shutil.get_terminal_size().columns - 1, 20)
        self.stream.write("\r\x1b[K" + line[:width])
        self.stream.flush()
        self._shown = True
