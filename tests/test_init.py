"""`praxis-node init [FOLDER]` (issue 12): a starter config that checks, runs and answers calls
as written, through the real CLI as a subprocess; it never overwrites a file.

The node's ports come from the environment (PRAXIS_P2P_PORT, PRAXIS_MCP_PORT, the README's
overrides), so the test can run beside other nodes; the files are used exactly as written.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import trio
import yaml

from tests.processes import CLI, ROOT, node_process


async def cli(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process([*CLI, *args], cwd=cwd, capture_stdout=True, capture_stderr=True,
                                      check=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_init_then_check_then_run_then_call(tmp_path):
    folder = tmp_path / "mynode"
    out = await cli("init", str(folder))
    assert out.returncode == 0, out.stderr.decode()
    config = folder / "node.yaml"
    text = out.stdout.decode()
    # It says what to run next, in order.
    steps = [f"praxis-node check -c {config}", f"praxis-node run -c {config}",
             "praxis-node tools --node http://127.0.0.1:8090/mcp",
             "praxis-node call --node http://127.0.0.1:8090/mcp greet name=Ada"]
    positions = [text.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), text

    # What it wrote: a python tool beside the config, a process tool (and the engine on, its
    # allow_peers explained), the MCP endpoint on; commented.
    data = yaml.safe_load(config.read_text())
    tools = {t["name"]: t for t in data["agent"]["tools"]}
    assert tools["greet"]["engine"] == "python" and tools["greet"]["engineSpec"]["callable"] == "tools:greet"
    assert tools["count_words"]["engine"] == "process" and tools["count_words"]["allow_peers"] == []
    assert data["engines"]["process"]["enabled"] is True and data["mcp"]["enabled"] is True
    assert (folder / "tools.py").is_file() and "def greet(" in (folder / "tools.py").read_text()
    written = config.read_text()
    assert "Peers may call a process tool only when its own allow_peers" in written and written.count("#") > 20

    out = await cli("check", "-c", str(config))
    assert (out.returncode, out.stdout.decode()) == (0, f"{config}: ok (2 tools: greet, count_words)\n"), \
        out.stderr.decode()

    env = {"PRAXIS_P2P_PORT": str(free_port()), "PRAXIS_MCP_PORT": str(free_port())}
    async with node_process(config, env) as (_, ready):
        url = ready["mcpUrl"]
        assert url == f"http://127.0.0.1:{env['PRAXIS_MCP_PORT']}/mcp"
        out = await cli("tools", "--node", url, "--json")
        assert out.returncode == 0, out.stderr.decode()
        assert sorted(t["name"] for t in json.loads(out.stdout)) == ["count_words", "greet"]
        # From another folder: the tool's module is found beside its config, not in the cwd.
        out = await cli("call", "--node", url, "greet", "name=Ada", cwd=tmp_path)
        assert (out.returncode, out.stdout) == (0, b"Hello, Ada!\n"), out.stderr.decode()
        out = await cli("call", "--node", url, "count_words", "text=one two three")
        assert (out.returncode, out.stdout.decode().strip()) == (0, "3"), out.stderr.decode()


async def test_init_writes_into_the_current_folder_and_never_overwrites(tmp_path):
    out = await cli("init", cwd=tmp_path)
    assert out.returncode == 0, out.stderr.decode()
    assert "praxis-node check -c node.yaml" in out.stdout.decode()
    config, tools = tmp_path / "node.yaml", tmp_path / "tools.py"
    written = config.read_text()
    assert f"name: {tmp_path.name}" in written  # the node is named after its folder

    config.write_text(written + "# my edit\n")
    out = await cli("init", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.decode() == (f"error: {config} already exists: init never overwrites a file; choose "
                                   "another folder (praxis-node init FOLDER)\n")
    assert config.read_text().endswith("# my edit\n")

    # A tools.py of the user's own is not overwritten either, and nothing is written then.
    other = tmp_path / "other"
    other.mkdir()
    (other / "tools.py").write_text("MINE = 1\n")
    out = await cli("init", str(other))
    assert out.returncode == 2 and "tools.py already exists" in out.stderr.decode()
    assert (other / "tools.py").read_text() == "MINE = 1\n" and not (other / "node.yaml").exists()
    assert tools.exists()
