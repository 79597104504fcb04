"""`process` engine: a host process, with no isolation, only where the operator enables it.

`engineSpec` (`node.config.ProcessSpec`): `command` (argv list, required), `env` (fixed
variables), `timeout` (seconds), `cwd` (relative to the config file's folder). The declared
parameters a call passes become environment variables (nothing else does: see
`node.tools.engines.env`).
Stdout is the result (JSON stdout is also structured content); output past the limit kills
the process and fails the call.

Progress and log (`node.tools.engines.reports`): a stderr line `praxis:progress 3/10 copying`
or `praxis:log warning disk almost full` goes to the caller (rate-limited, cleaned, cut) and is
left out of the stderr text that error messages quote.

Cancellation: each run is its own session and process group; when the call is cancelled, or
its deadline passes, or the run ends, the whole group (grandchildren too) gets SIGKILL.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import trio

from node.config import ProcessEngineSettings, ProcessSpec, ToolContract
from node.tools.engines.base import (
    EngineUnavailable,
    ToolExecutionError,
    ToolResult,
    ToolTimeout,
)
from node.tools.engines.env import arguments_as_env
from node.tools.engines.reports import ReportReader
from protocols.call_events import NO_EVENTS, CallEvents
from protocols.errors import TooLarge
from protocols.event_limits import limited

log = logging.getLogger("praxis.engine.process")

# The host variables a process inherits; everything else of the node's environment stays out.
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")


class ProcessEngine:
    def __init__(self, settings: ProcessEngineSettings, base_dir: Path) -> None:
        self.settings = settings
        self.base_dir = base_dir

    def check_contract(self, contract: ToolContract) -> None:
        contract.typed_spec(ProcessSpec, fresh=True)

    async def execute(
        self, contract: ToolContract, arguments: dict[str, Any], deadline: float,
        events: CallEvents = NO_EVENTS,
    ) -> ToolResult:
        if not self.settings.enabled:
            raise EngineUnavailable(
                f"tool {contract.name!r}: the process engine is disabled on this node "
                "(set engines.process.enabled: true to run host processes)"
            )
        spec = contract.typed_spec(ProcessSpec)
        command, cwd = list(spec.command), self.base_dir / (spec.cwd or ".")
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        env.update(spec.env)
        env.update(arguments_as_env(contract, arguments, reserved=spec.env))
        deadline = min(deadline, trio.current_time() + (spec.timeout or self.settings.default_timeout_seconds))
        limit = self.settings.max_output_bytes
        try:
            process = await trio.lowlevel.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ToolExecutionError(
                f"tool {contract.name!r}: cannot start {command[0]!r}: {exc.strerror}"
            ) from None
        stdout = bytearray()
        reports = ReportReader(limited(events), limit)
        overflow: list[str] = []

        async def drain_stdout() -> None:
            while True:
                chunk = await process.stdout.receive_some(65536)  # type: ignore[union-attr]
                if not chunk:
                    return
                stdout.extend(chunk)
                if len(stdout) > limit:
                    overflow.append("stdout")
                    _kill_group(process)
                    return

        async def drain_stderr() -> None:
            while True:
                chunk = await process.stderr.receive_some(65536)  # type: ignore[union-attr]
                if not chunk:
                    await reports.finish()
                    return
                if not await reports.feed(chunk):
                    overflow.append("stderr")
                    _kill_group(process)
                    return

        async def reap() -> None:
            await process.wait()
            _kill_group(process)  # what it left behind would hold the pipes open

        try:
            with trio.move_on_at(deadline) as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(drain_stdout)
                    nursery.start_soon(drain_stderr)
                    nursery.start_soon(reap)
        finally:
            # Cancelled, timed out or done: nothing the run started may outlive it.
            _kill_group(process)
            if process.returncode is None:
                with trio.CancelScope(shield=True):
                    await process.wait()
        stderr = reports.stderr
        if scope.cancelled_caught:
            raise ToolTimeout(f"tool {contract.name!r} ran past its deadline and was killed")
        if overflow:
            raise TooLarge(f"tool {contract.name!r}: {overflow[0]} exceeded {limit} bytes; the process was killed")
        out = stdout.decode("utf-8", errors="replace")
        if process.returncode != 0:
            err = stderr.decode("utf-8", errors="replace").strip()
            raise ToolExecutionError(
                f"tool {contract.name!r} exited with code {process.returncode}: "
                + (err[-2000:] if err else "no error output"),
                exit_code=process.returncode,
                stderr=err[-2000:],
            )
        return structured_stdout(out)

    async def aclose(self) -> None:
        return None


def _kill_group(process: trio.Process) -> None:
    """Kill the tool's whole process group (it was started in a session of its own)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def structured_stdout(out: str) -> ToolResult:
    """Stdout as text; stdout that is JSON is also returned as structured content."""
    result = ToolResult.text(out)
    stripped = out.strip()
    if stripped[:1] in ("{", "["):
        try:
            value = json.loads(stripped)
        except ValueError:
            return result
        result.structured_content = value if isinstance(value, dict) else {"result": value}
    return result
