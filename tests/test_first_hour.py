"""Start-up refuses what cannot work, and a late peer is reached within seconds (issue 12),
through the real CLI: `praxis-node run` as a child process, stopped by its PID."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import trio
import yaml

from tests.hardening.attacker import wait_for_file_text
from tests.processes import CLI, ROOT, node_process, start_node_process, stop_process, write_config

ECHO = {"name": "echo", "engine": "python", "engineSpec": {"callable": "tests.sample_tools:echo"},
        "params": [{"name": "text", "type": "string", "required": True}]}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def run_until_exit(config: Path, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    """`praxis-node run` that is expected to refuse to start: its exit code and output."""
    with trio.fail_after(timeout):
        return await trio.run_process([*CLI, "run", "-c", str(config)], cwd=ROOT, capture_stdout=True,
                                      capture_stderr=True, check=False)


async def test_a_second_node_on_a_port_in_use_is_refused(tmp_path):
    port = free_port()
    first = write_config(tmp_path / "a", "first", [ECHO], [], p2p={"port": port})
    async with node_process(first):
        second = write_config(tmp_path / "b", "second", [ECHO], [], p2p={"port": port})
        done = await run_until_exit(second)
    assert done.returncode == 2, done.stderr.decode()
    assert f"p2p.port: port {port} on 127.0.0.1 is already in use" in done.stderr.decode()


async def test_a_node_whose_mcp_port_is_in_use_is_refused(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "a", "node", [ECHO], [], mcp={"enabled": True, "port": port})
        done = await run_until_exit(config)
    assert done.returncode == 2, done.stderr.decode()
    assert f"mcp.port: port {port} on 127.0.0.1 is already in use" in done.stderr.decode()


async def test_two_nodes_cannot_share_a_key_file(tmp_path):
    first = write_config(tmp_path, "first", [ECHO], [])  # key_file: identity.key, beside it
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump({"agent": {"name": "second"}, "p2p": {"port": 0, "enable_mdns": False},
                                      "mcp": {"enabled": False}}))
    async with node_process(first):
        done = await run_until_exit(second)
    assert done.returncode == 2, done.stderr.decode()
    assert "identity.key is held by another running node" in done.stderr.decode()
    # Once the first node has stopped, the second may use the key.
    proc, ready = await start_node_process(second)
    await stop_process(proc)
    assert ready["peerId"]


async def test_a_node_never_dials_itself(tmp_path):
    port = free_port()
    config = write_config(tmp_path, "loop", [ECHO], [], p2p={"port": port})
    with trio.fail_after(30):
        ident = await trio.run_process([*CLI, "id", "-c", str(config)], cwd=ROOT, capture_stdout=True)
    peer_id = ident.stdout.decode().split("peer ID: ")[1].split()[0]
    config = write_config(tmp_path, "loop", [ECHO], [f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id}"],
                          p2p={"port": port})
    async with node_process(config) as (proc, ready):
        seen = await wait_for_file_text(tmp_path / "node.log", r"bootstrap peer \S+ is this node itself",
                                        lambda: proc.returncode is None, timeout=20)
        assert seen is not None and proc.returncode is None
        assert "connected to bootstrap peer" not in (tmp_path / "node.log").read_text()


async def test_a_late_bootstrap_peer_is_reached_within_seconds(tmp_path):
    """py-libp2p blocks a peer for 60 s after a failed dial; the node's dialer lifts that block,
    so a bootstrap peer that comes up late is connected after one backoff step, not a minute."""
    port = free_port()
    b_config = write_config(tmp_path / "b", "late", [ECHO], [], p2p={"port": port})
    with trio.fail_after(30):
        ident = await trio.run_process([*CLI, "id", "-c", str(b_config)], cwd=ROOT, capture_stdout=True)
    b_id = ident.stdout.decode().split("peer ID: ")[1].split()[0]
    a_config = write_config(tmp_path / "a", "early", [], [f"/ip4/127.0.0.1/tcp/{port}/p2p/{b_id}"],
                            p2p={"dial_backoff_max_seconds": 2})
    a_log = tmp_path / "a" / "node.log"
    async with node_process(a_config) as (a, _):
        refused = await wait_for_file_text(a_log, r"unreachable: connection refused \(nothing listens",
                                           lambda: a.returncode is None, timeout=20)
        assert refused is not None, a_log.read_text()[-2000:]
        async with node_process(b_config):
            # Far below py-libp2p's 60 s block: a few backoff steps of at most 2 s.
            connected = await wait_for_file_text(a_log, "connected to bootstrap peer",
                                                 lambda: a.returncode is None, timeout=30)
            assert connected is not None, a_log.read_text()[-2000:]
    print(json.dumps({"log_lines": len(a_log.read_text().splitlines())}))
