"""Real third-party MCP servers for the tests: started on 127.0.0.1 with free ports, stopped by PID.

Installed by scripts/setup-mcp into .cache/ (server-everything and the Inspector from npm,
mcp-server-time from PyPI in its own venv).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache"
EVERYTHING_JS = (CACHE / "mcp-tools/node_modules/@modelcontextprotocol/server-everything"
                 / "dist/index.js")
INSPECTOR = CACHE / "mcp-tools/node_modules/.bin/mcp-inspector"
TIME_SERVER = CACHE / "mcp-server-time-venv/bin/mcp-server-time"
LOOPBACK_PRELOAD = Path(__file__).with_name("loopback.cjs")
READY_TIMEOUT = 20.0


def require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run scripts/setup-mcp first", pytrace=False)
    return path


def node_bin() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (Node.js >= 20) is required for the MCP tests", pytrace=False)
    return node


def everything_stdio_command() -> tuple[str, list[str]]:
    """(command, args) that start server-everything over stdio."""
    return node_bin(), [str(require(EVERYTHING_JS)), "stdio"]


def time_server_command() -> tuple[str, list[str]]:
    return str(require(TIME_SERVER)), ["--local-timezone", "UTC"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for_port(port: int, process: trio.Process, limit: float = READY_TIMEOUT) -> None:
    """Poll until 127.0.0.1:port accepts connections; fail if the process exits first."""
    with trio.fail_after(limit):
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"server process {process.pid} exited with {process.returncode} "
                                   f"before listening on port {port}")
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)  # polling interval, bounded by fail_after
                continue
            await stream.aclose()
            return


@dataclass
class RunningServer:
    """A server process (HTTP ones have a port and URL)."""

    process: trio.Process
    port: int
    url: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL by PID (the process object), as an abrupt crash would."""
        if self.process.returncode is None:
            self.process.kill()

    async def wait_exited(self, limit: float = 5.0) -> None:
        with trio.fail_after(limit):
            await self.process.wait()


async def start_everything(mode: str, port: int | None = None) -> RunningServer:
    """server-everything in `streamableHttp` or `sse` mode, on 127.0.0.1 only."""
    port = port or free_port()
    env = {"PORT": str(port), "PATH": "/usr/bin:/bin"}
    process = await trio.lowlevel.open_process(
        [node_bin(), "--require", str(LOOPBACK_PRELOAD), str(require(EVERYTHING_JS)), mode],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    ready = False
    try:
        await wait_for_port(port, process)
        ready = True
    finally:
        if not ready:  # do not leave a half-started server behind
            process.kill()
    path = "/mcp" if mode == "streamableHttp" else "/sse"
    return RunningServer(process, port, f"http://127.0.0.1:{port}{path}")


@asynccontextmanager
async def everything(mode: str, port: int | None = None) -> AsyncIterator[RunningServer]:
    server = await start_everything(mode, port)
    try:
        yield server
    finally:
        server.kill()
        with trio.move_on_after(5) as scope:
            scope.shield = True
            await server.process.wait()


def python() -> str:
    return sys.executable


def child_pids(marker: str) -> list[int]:
    """PIDs of this test process's direct children whose command line contains `marker`."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and marker in cmdline:
            found.append(int(entry.name))
    return found
