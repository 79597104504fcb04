"""What a process tool reports on stderr while it runs: the stated line format.

A line (ending in a newline, at most `MAX_REPORT_LINE` bytes) of one of these forms is a
report to the caller, not error output:

    praxis:progress 3/10 copying files      progress 3 of 10, message "copying files"
    praxis:progress 0.25                    progress 0.25, no total, no message
    praxis:log warning disk almost full     a log message at an MCP level (debug, info, notice,
                                            warning, error, critical, alert, emergency)

Numbers are decimal (`3`, `2.5`); progress must grow from one report to the next (reports
that do not are dropped). Reports go through `LimitedEvents`: rate-limited, control
characters removed, text cut to 500 characters. Any other line, a malformed report
included, is ordinary stderr and stays in the text that error messages quote.
"""

from __future__ import annotations

import logging
import math

from protocols.call_events import LOG_LEVELS, CallEvents, LogMessage, Progress

log = logging.getLogger("praxis.engine.reports")

MAX_REPORT_LINE = 4096
PROGRESS = b"praxis:progress "
LOG = b"praxis:log "
LOGGER = "tool"


def parse_progress(rest: str) -> Progress | None:
    """`3/10 message`, `3 message`, `3/10` or `3`; None when it does not fit."""
    head, _, message = rest.strip().partition(" ")
    done, slash, total = head.partition("/")
    try:
        value = float(done)
        whole = float(total) if slash else None
    except ValueError:
        return None
    if not math.isfinite(value) or (whole is not None and not math.isfinite(whole)):
        return None
    return Progress(value, whole, message.strip() or None)


def parse_log(rest: str) -> LogMessage | None:
    level, _, text = rest.strip().partition(" ")
    if level not in LOG_LEVELS or not text.strip():
        return None
    return LogMessage(level, text.strip(), LOGGER)


class ReportReader:
    """Splits a process's stderr into reports (sent to `events`) and the rest (kept, bounded)."""

    def __init__(self, events: CallEvents, limit: int) -> None:
        self.events = events
        self.limit = limit
        self.stderr = bytearray()  # everything that was not a report
        self._line = bytearray()  # the line being read, while it may still be a report
        self._long = False  # inside a line too long to be a report
        self._broken = False  # the caller's events failed once: stop reporting

    async def feed(self, chunk: bytes) -> bool:
        """Take the next bytes of stderr; False once the kept stderr is over `limit`."""
        start = 0
        while start < len(chunk):
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end + 1]
            start += len(piece)
            if self._long:
                self.stderr += piece
            else:
                self._line += piece
                if len(self._line) > MAX_REPORT_LINE:  # too long to be a report
                    self.stderr += self._line
                    self._line.clear()
                    self._long = end < 0
                elif end >= 0:
                    await self._complete(bytes(self._line))
                    self._line.clear()
            if end >= 0:
                self._long = False
            if len(self.stderr) > self.limit:
                return False
        return True

    async def finish(self) -> None:
        """The stream ended: a last line without a newline is still a line."""
        if self._line:
            await self._complete(bytes(self._line))
            self._line.clear()

    async def _report(self, event: Progress | LogMessage) -> None:
        if self._broken:
            return
        try:
            if isinstance(event, Progress):
                await self.events.progress(event)
            else:
                await self.events.log(event)
        except Exception as exc:  # a caller that cannot listen does not fail the tool's run
            log.info("a caller stopped taking reports: %s", type(exc).__name__)
            self._broken = True

    async def _complete(self, line: bytes) -> None:
        if line.startswith(PROGRESS) or line.startswith(LOG):
            rest = line.decode("utf-8", errors="replace")
            if line.startswith(PROGRESS):
                progress = parse_progress(rest[len(PROGRESS):])
                if progress is not None:
                    await self._report(progress)
                    return
            else:
                message = parse_log(rest[len(LOG):])
                if message is not None:
                    await self._report(message)
                    return
        self.stderr += line
