"""A worker process of `scripts/bench-scale --mode packed`: many praxis nodes in one trio loop.

Reads commands on stdin, one JSON object a line:
    {"cmd": "start", "name": "n007", "config": "/path/node.yaml"}
    {"cmd": "stop", "name": "n007"}
and writes events on stdout, one JSON object a line:
    {"event": "hello", "pid": 1234}
    {"event": "ready", "name": ..., "peerId": ..., "addrs": [...], "mcpUrl": ...}
    {"event": "failed", "name": ..., "error": "..."}
    {"event": "stopped", "name": ...}
Each node is a `Node` built from its config file, as `praxis-node run` builds it. When stdin
closes (the harness ended or died), every node stops and the worker exits.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this worktree's code, not whatever the venv has installed

from node.app import Node  # noqa: E402
from node.cli.logs import configure_logging  # noqa: E402
from node.config import load_config  # noqa: E402
from node.runtime.gc_tuning import tune_for_a_long_running_node  # noqa: E402

MAX_COMMAND = 64 * 1024  # bytes of one command line


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class Worker:
    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.scopes: dict[str, trio.CancelScope] = {}
        self.stopped: dict[str, trio.Event] = {}

    async def run_node(self, name: str, config: Path, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        done = self.stopped[name] = trio.Event()
        try:
            node = Node(load_config(config))
            with trio.CancelScope() as scope:
                self.scopes[name] = scope
                async with node.running():
                    emit({"event": "ready", "name": name, "peerId": node.peer_id, "addrs": node.addrs,
                          "mcpUrl": node.mcp_url})
                    started = True
                    task_status.started()
                    await trio.sleep_forever()
        except Exception as exc:  # reported to the harness, which fails the run or the phase
            emit({"event": "failed", "name": name, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        finally:
            self.scopes.pop(name, None)
            done.set()
            emit({"event": "stopped", "name": name})
            if not started:
                task_status.started()

    async def handle(self, command: dict[str, Any]) -> None:
        name = str(command.get("name", ""))
        if command.get("cmd") == "start" and name not in self.scopes:
            await self.nursery.start(self.run_node, name, Path(str(command.get("config"))))
        elif command.get("cmd") == "stop" and name in self.scopes:
            self.scopes[name].cancel()
            await self.stopped[name].wait()
        else:
            emit({"event": "failed", "name": name, "error": "unknown command or node"})


async def commands() -> Any:
    """Lines of stdin as JSON objects, until it closes."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buf = b""
    async with stream:
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            buf += chunk
            if len(buf) > MAX_COMMAND and b"\n" not in buf:
                raise SystemExit("command line too long")
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        worker = Worker(nursery)
        emit({"event": "hello", "pid": os.getpid()})
        async for command in commands():
            await worker.handle(command)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    configure_logging(sys.argv[1] if len(sys.argv) > 1 else "WARNING")
    tune_for_a_long_running_node()  # as `praxis-node run` does
    trio.run(main)
