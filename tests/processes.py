"""Starting `praxis-node run` as a child process and stopping it by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "node.cli.main"]


def write_config(folder: Path, name: str, tools: list[dict[str, Any]], bootstrap: list[str],
                 **sections: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "node.yaml"
    data: dict[str, Any] = {
        "agent": {"name": name, "tools": tools},
        "p2p": {"port": 0, "enable_mdns": False, "bootstrap_nodes": bootstrap},
        "mcp": {"enabled": False},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    path.write_text(yaml.safe_dump(data))
    return path


async def start_node_process(config: Path, env: dict[str, str] | None = None) -> tuple[trio.Process, dict[str, Any]]:
    """Start a node; return the process and its ready announcement (peerId, addrs)."""
    log = (config.parent / "node.log").open("ab")
    proc = await trio.lowlevel.open_process(
        [*CLI, "run", "-c", str(config), "--announce"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
    )
    log.close()
    assert proc.stdout is not None
    buf = b""
    with trio.fail_after(30):
        while b"\n" not in buf:
            chunk = await proc.stdout.receive_some(4096)
            assert chunk, f"node exited early:\n{(config.parent / 'node.log').read_text()[-3000:]}"
            buf += chunk
    return proc, json.loads(buf.split(b"\n", 1)[0])


async def stop_process(proc: trio.Process, sig: int = signal.SIGTERM) -> None:
    if proc.returncode is None:
        proc.send_signal(sig)
        with trio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@asynccontextmanager
async def node_process(config: Path, env: dict[str, str] | None = None
                       ) -> AsyncIterator[tuple[trio.Process, dict[str, Any]]]:
    proc, ready = await start_node_process(config, env)
    try:
        yield proc, ready
    finally:
        await stop_process(proc)
