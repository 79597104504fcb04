"""`praxis-node mcp` (stdio) answers its first tools/list once the mesh has settled (issue 12):
the bootstrap peer's tools and those of the peers it lists, not half the mesh; and a bootstrap
peer that is down holds it only until the bound. Real node processes on 127.0.0.1, the stdio
node driven as an MCP client would: JSON-RPC lines on its stdin, written before it is ready.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import trio
import yaml

from tests.processes import CLI, ROOT, node_process, write_config

ALPHA = {"name": "alpha", "engine": "python", "engineSpec": {"callable": "tests.sample_tools:noop"}}
GAMMA = {"name": "gamma", "engine": "python", "engineSpec": {"callable": "tests.sample_tools:noop"}}
HELLO = [
    {"jsonrpc": "2.0", "id": 1, "method": "initialize",
     "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "test", "version": "1"}}},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}},
]
UNKNOWN_PEER = "12D3KooWHRyfTBKcjkqjNk5UZarJhzT7rXZYfr4DmaCWJgen62Xk"


def stdio_config(folder: Path, bootstrap: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "stdio.yaml"
    path.write_text(yaml.safe_dump({"agent": {"name": "stdio"}, "mcp": {"enabled": False},
                                    "p2p": {"port": 0, "enable_mdns": False, "bootstrap_nodes": bootstrap}}))
    return path


async def first_listing(config: Path, *extra: str, timeout: float = 60) -> list[str]:
    """Start `praxis-node mcp`, send initialize and tools/list at once; the names it first lists."""
    proc = await trio.lowlevel.open_process([*CLI, "mcp", "-c", str(config), *extra], cwd=ROOT,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=(config.parent / "stdio.log").open("ab"))
    assert proc.stdin is not None and proc.stdout is not None
    try:
        await proc.stdin.send_all(b"".join(json.dumps(m).encode() + b"\n" for m in HELLO))
        buf = b""
        with trio.fail_after(timeout):
            while True:
                while b"\n" not in buf:
                    chunk = await proc.stdout.receive_some(65536)
                    assert chunk, (config.parent / "stdio.log").read_text()[-3000:]
                    buf += chunk
                line, buf = buf.split(b"\n", 1)
                message: dict[str, Any] = json.loads(line)
                if message.get("id") == 2:
                    return sorted(t["name"] for t in message["result"]["tools"])
    finally:
        await proc.stdin.aclose()
        with trio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_first_tools_list_shows_the_bootstrap_peer_and_the_peers_it_lists(tmp_path):
    a_cfg = write_config(tmp_path / "a", "node-a", [ALPHA], [], mcp={"enabled": True, "port": 0})
    async with node_process(a_cfg) as (_, a):
        c_cfg = write_config(tmp_path / "c", "node-c", [GAMMA], a["addrs"][:1])
        async with node_process(c_cfg):
            with trio.fail_after(30):  # A has C's card: its peer list names C
                while True:
                    done = await trio.run_process([*CLI, "tools", "--node", a["mcpUrl"], "--json"], cwd=ROOT,
                                                  capture_stdout=True, capture_stderr=True, check=False)
                    if {t["name"] for t in json.loads(done.stdout or b"[]")} == {"alpha", "gamma"}:
                        break
                    await trio.sleep(0.1)  # another process's state: poll it
            # The stdio node knows only A; C is found through A's peer list. A bound far past
            # the test's own deadline: it must serve because the mesh settled, not because it gave up.
            config = stdio_config(tmp_path / "s", a["addrs"][:1])
            assert await first_listing(config, "--wait-for-peers", "600", timeout=60) == ["alpha", "gamma"]


async def test_a_bootstrap_peer_that_is_down_holds_the_first_listing_only_until_the_bound(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = stdio_config(tmp_path / "s", [f"/ip4/127.0.0.1/tcp/{port}/p2p/{UNKNOWN_PEER}"])
    assert await first_listing(config, "--wait-for-peers", "1", timeout=60) == []
