"""The nodes of a scale run: their config folders, and the two ways to run them.

`ProcessFleet`: one `praxis-node run` process per node. `PackedFleet`: several `Node`
objects per worker process (scripts/scale_worker.py), for more nodes than 2 cores can start
as processes. Both start a node from its config folder (`node.yaml`, its identity key and its
tool module `scale_tool.py`), stop it, and start it again from the same folder (same identity;
the same ports once `pin_ports` wrote them). Every process is stopped by its PID, also on
errors and Ctrl-C (`aclose`).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio
import yaml

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MAX_LINE = 256 * 1024  # bytes of one announcement or worker event
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
TOOL_MODULE = "scale_tool"


@dataclass
class NodeSpec:
    """A node of the run: where its config lives, and what it announced once up."""

    name: str
    folder: Path
    peer_id: str = ""
    addrs: list[str] = field(default_factory=list)
    mcp_url: str = ""
    pid: int = 0  # the process it runs in (a worker's, in packed mode)

    @property
    def config(self) -> Path:
        return self.folder / "node.yaml"

    @property
    def tool(self) -> str:
        return tool_name(self.name)

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT of its MCP endpoint (GET /status is beside /mcp)."""
        return self.mcp_url.rsplit("/", 1)[0]


def tool_name(node: str) -> str:
    return f"who_{node}"


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`section.key=value` items (value as YAML: 32, true, [a, b]) as a nested dict."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ValueError(f"--set {item!r}: use section.key=value, e.g. limits.max_connections=64")
        place = out
        for part in parts[:-1]:
            place = place.setdefault(part, {})
            if not isinstance(place, dict):
                raise ValueError(f"--set {item!r}: {part} is set both as a value and as a section")
        place[parts[-1]] = yaml.safe_load(text)
    return out


def merged(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) \
            else value
    return out


def write_node(spec: NodeSpec, bootstrap: list[str], overrides: Mapping[str, Any],
               p2p_port: int = 0, mcp_port: int = 0) -> None:
    """The node's folder: node.yaml, and the python tool that returns the node's name."""
    spec.folder.mkdir(parents=True, exist_ok=True)
    (spec.folder / f"{TOOL_MODULE}.py").write_text(
        f'"""The bench-scale tool of {spec.name}."""\n\n\ndef who() -> str:\n    return {spec.name!r}\n')
    data: dict[str, Any] = {
        "agent": {"name": spec.name, "tools": [{
            "name": spec.tool, "description": f"Returns {spec.name}", "engine": "python",
            "engineSpec": {"callable": f"{TOOL_MODULE}:who"}}]},
        "p2p": {"host": "127.0.0.1", "port": p2p_port, "enable_mdns": False, "bootstrap_nodes": bootstrap},
        "mcp": {"enabled": True, "host": "127.0.0.1", "port": mcp_port},
    }
    spec.config.write_text(yaml.safe_dump(merged(data, overrides)))


def pin_ports(spec: NodeSpec) -> None:
    """Rewrite the config with the ports the node got, so a restart listens where it did."""
    data = yaml.safe_load(spec.config.read_text())
    data["p2p"]["port"] = int(spec.addrs[0].split("/tcp/")[1].split("/")[0])
    data["mcp"]["port"] = int(spec.mcp_url.split(":")[2].split("/")[0])
    spec.config.write_text(yaml.safe_dump(data))


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class LineReader:
    """Newline-terminated lines from a stream, each at most MAX_LINE bytes."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buf = b""

    async def line(self) -> bytes | None:
        while b"\n" not in self.buf:
            if len(self.buf) > MAX_LINE:
                raise RuntimeError("a line over the size limit")
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line


async def stop_process(proc: trio.Process, sig: signal.Signals = signal.SIGTERM) -> None:
    """`sig` by PID, then SIGKILL after STOP_GRACE; shielded so Ctrl-C cannot skip it."""
    with trio.CancelScope(shield=True):
        if proc.returncode is None:
            proc.send_signal(sig)
            with trio.move_on_after(STOP_GRACE):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


class Fleet(Protocol):
    mode: str

    async def start(self, spec: NodeSpec) -> None: ...

    async def stop(self, spec: NodeSpec) -> None: ...

    def processes(self) -> dict[int, list[str]]: ...

    async def aclose(self) -> None: ...


class ProcessFleet:
    """One `praxis-node run --announce` process per node."""

    mode = "processes"

    def __init__(self, start_timeout: float, log_level: str) -> None:
        self.start_timeout = start_timeout
        self.log_level = log_level
        self.procs: dict[str, trio.Process] = {}

    async def start(self, spec: NodeSpec) -> None:
        log = (spec.folder / "node.log").open("ab")
        try:
            proc = await trio.lowlevel.open_process(
                [PYTHON, "-m", "node.cli.main", "run", "-c", str(spec.config), "--announce",
                 "--log-level", self.log_level],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        self.procs[spec.name] = proc
        assert proc.stdout is not None
        with trio.move_on_after(self.start_timeout):
            line = await LineReader(proc.stdout).line()
            if line is None:
                raise RuntimeError(f"{spec.name} exited before it was up:\n{log_tail(spec.folder / 'node.log')}")
            ready = json.loads(line)
            spec.peer_id, spec.addrs, spec.mcp_url = ready["peerId"], ready["addrs"], ready["mcpUrl"]
            spec.pid = proc.pid
            return
        raise RuntimeError(f"{spec.name} was not up within {self.start_timeout:g} s:\n"
                           f"{log_tail(spec.folder / 'node.log')}")

    async def stop(self, spec: NodeSpec, sig: signal.Signals = signal.SIGTERM) -> None:
        proc = self.procs.pop(spec.name, None)
        if proc is not None:
            await stop_process(proc, sig)

    def processes(self) -> dict[int, list[str]]:
        return {proc.pid: [name] for name, proc in self.procs.items() if proc.returncode is None}

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for proc in self.procs.values():
                    nursery.start_soon(stop_process, proc)
            self.procs.clear()


class _WorkerHandle:
    def __init__(self, index: int, proc: trio.Process, log: Path) -> None:
        self.index = index
        self.proc = proc
        self.log = log
        self.nodes: list[str] = []
        self.events: dict[str, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._writing = trio.Lock()  # commands for nodes starting at once share the worker's stdin

    async def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        async with self._writing:
            await self.proc.stdin.send_all((json.dumps(command) + "\n").encode())


class PackedFleet:
    """Nodes packed into `workers` worker processes (scripts/scale_worker.py), assigned in turn."""

    mode = "packed"

    def __init__(self, workers: int, folder: Path, start_timeout: float, log_level: str) -> None:
        self.worker_count = workers
        self.folder = folder
        self.start_timeout = start_timeout
        self.log_level = log_level
        self.workers: list[_WorkerHandle] = []
        self.placed: dict[str, _WorkerHandle] = {}
        self._next = 0
        self._nursery: trio.Nursery | None = None

    async def open(self, nursery: trio.Nursery) -> None:
        """Start every worker (in parallel) and wait until each has imported the node."""
        self._nursery = nursery
        async with trio.open_nursery() as starting:
            for index in range(self.worker_count):
                starting.start_soon(self._start_worker, index)
        self.workers.sort(key=lambda w: w.index)

    async def _start_worker(self, index: int) -> None:
        log_path = self.folder / f"worker-{index}.log"
        log = log_path.open("ab")
        try:
            proc = await trio.lowlevel.open_process(
                [PYTHON, str(ROOT / "scripts" / "scale_worker.py"), self.log_level],
                cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.PIPE, stderr=log,
            )
        finally:
            log.close()
        handle = _WorkerHandle(index, proc, log_path)
        self.workers.append(handle)
        assert proc.stdout is not None
        reader = LineReader(proc.stdout)
        with trio.move_on_after(self.start_timeout):
            line = await reader.line()
            if line is None or json.loads(line).get("event") != "hello":
                raise RuntimeError(f"worker {index} did not start:\n{log_tail(log_path)}")
            assert self._nursery is not None
            self._nursery.start_soon(self._read_events, handle, reader)
            return
        raise RuntimeError(f"worker {index} did not start within {self.start_timeout:g} s")

    async def _read_events(self, handle: _WorkerHandle, reader: LineReader) -> None:
        while True:
            line = await reader.line()
            if line is None:
                for channel in handle.events.values():  # the worker died: wake whoever waits
                    channel.send_nowait({"event": "failed", "error": "the worker exited"})
                return
            event = json.loads(line)
            waiting = handle.events.get(str(event.get("name")))
            if waiting is not None:
                waiting.send_nowait(event)

    async def _command(self, handle: _WorkerHandle, spec: NodeSpec, command: str, wanted: str) -> dict[str, Any]:
        send, receive = trio.open_memory_channel[dict[str, Any]](16)
        handle.events[spec.name] = send
        try:
            await handle.send({"cmd": command, "name": spec.name, "config": str(spec.config)})
            with trio.move_on_after(self.start_timeout):
                while True:
                    event = await receive.receive()
                    if event.get("event") == wanted:
                        return event
                    if event.get("event") == "failed":
                        raise RuntimeError(f"{spec.name}: {event.get('error')}\n{log_tail(handle.log)}")
            raise RuntimeError(f"{spec.name}: no {wanted!r} from worker {handle.index} "
                               f"within {self.start_timeout:g} s")
        finally:
            handle.events.pop(spec.name, None)

    async def start(self, spec: NodeSpec) -> None:
        handle = self.placed.get(spec.name)
        if handle is None:
            handle = self.placed[spec.name] = self.workers[self._next % len(self.workers)]
            self._next += 1
        ready = await self._command(handle, spec, "start", "ready")
        spec.peer_id, spec.addrs, spec.mcp_url = ready["peerId"], ready["addrs"], ready["mcpUrl"]
        spec.pid = handle.proc.pid
        handle.nodes.append(spec.name)

    async def stop(self, spec: NodeSpec) -> None:
        handle = self.placed[spec.name]
        await self._command(handle, spec, "stop", "stopped")
        handle.nodes.remove(spec.name)

    def processes(self) -> dict[int, list[str]]:
        return {w.proc.pid: list(w.nodes) for w in self.workers if w.proc.returncode is None and w.nodes}

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for handle in self.workers:
                if handle.proc.stdin is not None:
                    with trio.move_on_after(1):
                        try:
                            await handle.proc.stdin.aclose()  # the worker stops its nodes and exits
                        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                            pass  # already gone: stop_process below still reaps it
            async with trio.open_nursery() as nursery:
                for handle in self.workers:
                    nursery.start_soon(self._wait_then_stop, handle.proc)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()


    @staticmethod
    async def _wait_then_stop(proc: trio.Process) -> None:
        with trio.move_on_after(STOP_GRACE / 2):  # a worker whose stdin closed stops its nodes and exits
            await proc.wait()
        await stop_process(proc)
