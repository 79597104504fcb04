"""`praxis-node demo`: a mesh of separate node processes on 127.0.0.1 calling each other.

Each node is a `praxis-node run` child process with its own config, key and log, and a
different set of built-in tools. The demo waits until every node knows every tool, calls
each tool through a node that does not own it, prints a table and stops the nodes. With
`--keep` it leaves the mesh running instead, until Ctrl-C, and prints the URL of the first
node's live mesh page (that node serves its MCP endpoint, and the page, on a free port).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import yaml

from node.cli.remote_peer import client_node
from protocols.errors import PraxisError

START_TIMEOUT = 30.0
CONVERGE_TIMEOUT = 20.0
CALL_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

TOOLS: list[dict[str, Any]] = [
    {"name": "word_count", "description": "Count the words in a text", "callable": "word_count",
     "params": [{"name": "text", "type": "string", "required": True}],
     "args": {"text": "the quick brown fox jumps"}},
    {"name": "reverse", "description": "Reverse a text", "callable": "reverse",
     "params": [{"name": "text", "type": "string", "required": True}],
     "args": {"text": "praxis"}},
    {"name": "add", "description": "Add two numbers", "callable": "add",
     "params": [{"name": "a", "type": "number", "required": True},
                {"name": "b", "type": "number", "required": True}],
     "args": {"a": 2, "b": 40}},
    {"name": "uppercase", "description": "Upper-case a text", "callable": "uppercase",
     "params": [{"name": "text", "type": "string", "required": True}],
     "args": {"text": "mesh"}},
    {"name": "sha256", "description": "SHA-256 of a text, hex", "callable": "sha256",
     "params": [{"name": "text", "type": "string", "required": True}],
     "args": {"text": "abc"}},
]


# Runs in a container when a Dagger engine session is available (DAGGER_SESSION_PORT/TOKEN).
DAGGER_TOOL: dict[str, Any] = {
    "name": "container_word_count", "description": "Count words, in a busybox container (Dagger)",
    "engine": "dagger",
    "params": [{"name": "text", "type": "string", "required": True}],
    "engineSpec": {"image": "busybox:latest", "command": ["sh", "-c", 'printf %s "$text" | wc -w']},
    "args": {"text": "one two three four"},
}


def dagger_available(environ: dict[str, str]) -> str | None:
    """None when a Dagger session is reachable from the environment, else why not."""
    if environ.get("DAGGER_SESSION_PORT") and environ.get("DAGGER_SESSION_TOKEN"):
        return None
    return ("no Dagger engine session (DAGGER_SESSION_PORT/DAGGER_SESSION_TOKEN unset); "
            "run `dagger run scripts/demo` with the Dagger CLI and Docker installed to include it")


@dataclass
class DemoNode:
    index: int
    name: str
    folder: Path
    tools: list[dict[str, Any]]
    process: trio.Process | None = None
    peer_id: str = ""
    addrs: list[str] = field(default_factory=list)
    mcp_url: str | None = None  # the first node's MCP endpoint (its page is at "/" beside it)

    @property
    def log_path(self) -> Path:
        return self.folder / "node.log"


def _config(node: DemoNode, bootstrap: list[str]) -> dict[str, Any]:
    return {
        "agent": {"name": node.name, "tools": [
            {"name": t["name"], "description": t["description"], "engine": t.get("engine", "python"),
             "params": t["params"],
             "engineSpec": t.get("engineSpec") or {"callable": f"node.cli.demo_tools:{t['callable']}"}}
            for t in node.tools
        ]},
        "p2p": {"port": 0, "host": "127.0.0.1", "enable_mdns": False, "bootstrap_nodes": bootstrap},
        # The first node serves its MCP endpoint and the mesh page, on loopback, on a free port.
        "mcp": {"enabled": True, "host": "127.0.0.1", "port": 0} if node.index == 0 else {"enabled": False},
    }


def page_url(mcp_url: str) -> str:
    """The mesh page of a node: "/" on the HTTP port of its MCP endpoint."""
    return mcp_url.removesuffix("/mcp") + "/"


async def _start(node: DemoNode, bootstrap: list[str]) -> None:
    node.folder.mkdir(parents=True, exist_ok=True)
    config_path = node.folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(_config(node, bootstrap), sort_keys=False))
    log = node.log_path.open("wb")
    node.process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "node.cli.main", "run", "-c", str(config_path), "--announce"],
        stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
    )
    log.close()
    assert node.process.stdout is not None
    buffer = b""
    with trio.move_on_after(START_TIMEOUT):
        while b"\n" not in buffer:
            chunk = await node.process.stdout.receive_some(4096)
            if not chunk:
                break
            buffer += chunk
    line = buffer.split(b"\n", 1)[0]
    try:
        ready = json.loads(line)
    except ValueError:
        raise RuntimeError(f"{node.name} did not start; its log:\n{_tail(node.log_path)}") from None
    node.peer_id, node.addrs, node.mcp_url = ready["peerId"], ready["addrs"], ready.get("mcpUrl")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def _stop(nodes: list[DemoNode]) -> None:
    for node in nodes:
        if node.process is not None and node.process.returncode is None:
            node.process.terminate()
    with trio.move_on_after(STOP_TIMEOUT):
        for node in nodes:
            if node.process is not None:
                await node.process.wait()
    for node in nodes:
        if node.process is not None and node.process.returncode is None:
            node.process.kill()
            await node.process.wait()


def _assign_tools(count: int, tools: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Spread the sample tools over the nodes; with more nodes than tools, some get none."""
    out: list[list[dict[str, Any]]] = [[] for _ in range(count)]
    for i, tool in enumerate(tools):
        out[i % count].append(tool)
    return out


async def run_demo(count: int, keep_dir: bool = False) -> int:
    if not 2 <= count <= 16:
        print("demo: --nodes must be between 2 and 16", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="praxis-demo-"))
    tools = list(TOOLS)
    no_dagger = dagger_available(dict(os.environ))
    if no_dagger is None:
        tools.append(DAGGER_TOOL)
    else:
        print(f"demo: dagger tool skipped: {no_dagger}")
    nodes = [DemoNode(i, f"node-{i}", folder / f"node-{i}", assigned)
             for i, assigned in enumerate(_assign_tools(count, tools))]
    print(f"demo: starting {count} nodes on 127.0.0.1 (folder {folder})")
    try:
        await _start(nodes[0], [])
        async with trio.open_nursery() as nursery:
            for node in nodes[1:]:
                nursery.start_soon(_start, node, nodes[0].addrs[:1])
        for node in nodes:
            print(f"  {node.name}  {node.peer_id}  {node.addrs[0]}  tools: "
                  f"{', '.join(t['name'] for t in node.tools) or '-'}")
        code = await _exercise(nodes, tools)
        if keep_dir:
            await _keep_running(nodes[0])
        return code
    except (RuntimeError, PraxisError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await _stop(nodes)
        if keep_dir:
            print(f"demo: configs and logs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


async def _keep_running(node: DemoNode) -> None:
    """Leave the mesh up until Ctrl-C (or SIGTERM), saying where to look at it."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        if node.mcp_url:
            print(f"\ndemo: open {page_url(node.mcp_url)} in a browser; Ctrl-C stops the mesh")
            print(f"demo: or ask it: praxis-node status --node {node.mcp_url}", flush=True)
        else:
            print("\ndemo: the mesh keeps running; Ctrl-C stops the mesh", flush=True)
        async for _ in signals:
            print("demo: stopping the mesh", flush=True)
            return


async def _exercise(nodes: list[DemoNode], tools: list[dict[str, Any]]) -> int:
    client = client_node([n.addrs[0] for n in nodes], name="demo-client")
    all_tools = {t["name"] for n in nodes for t in n.tools}
    owner = {t["name"]: n for n in nodes for t in n.tools}
    async with client.running():
        started = trio.current_time()
        with trio.move_on_after(CONVERGE_TIMEOUT):
            while not await _converged(client, nodes, all_tools):
                # Other processes' directories cannot be watched from here: poll them.
                await trio.sleep(0.05)
        if not await _converged(client, nodes, all_tools):
            print("demo failed: the mesh did not converge; node logs follow", file=sys.stderr)
            for n in nodes:
                print(f"--- {n.name} ---\n{_tail(n.log_path)}", file=sys.stderr)
            return 1
        print(f"demo: every node knows all {len(all_tools)} tools "
              f"({(trio.current_time() - started) * 1000:.0f} ms after start-up)\n")
        rows, failures = [], 0
        for i, tool in enumerate(tools):
            if tool["name"] not in all_tools:
                continue
            callers = [n for n in nodes if n is not owner[tool["name"]]]
            caller = callers[i % len(callers)]
            t0 = trio.current_time()
            try:
                response = await client.request_peer(caller.peer_id, tool["name"], tool["args"],
                                                      timeout=CALL_TIMEOUT)
                text = response.result.text_output()
                failed = response.result.is_error
            except PraxisError as exc:
                text, failed = f"error: {exc.message}", True
            ms = (trio.current_time() - t0) * 1000
            failures += failed
            rows.append([tool["name"], caller.name, owner[tool["name"]].name,
                         _args_text(tool["args"]), text[:48], f"{ms:.1f} ms"])
    from node.cli.output import table

    table(["tool", "caller", "provider", "arguments", "result", "latency"], rows)
    print(f"\ndemo: {len(rows) - failures} of {len(rows)} cross-node calls succeeded")
    return 0 if failures == 0 else 1


def _args_text(args: dict[str, Any]) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in args.items())


async def _converged(client: Any, nodes: list[DemoNode], all_tools: set[str]) -> bool:
    """True when each node's directory plus its own tools covers every tool."""
    for node in nodes:
        if client.directory.get(node.peer_id) is None:
            return False
        try:
            peers = await client.fetch_peer_list(node.peer_id, timeout=2.0)
        except PraxisError:
            return False
        known = {t["name"] for t in node.tools} | {t.name for r in peers.peers for t in r.tools}
        if known != all_tools:
            return False
    return True

