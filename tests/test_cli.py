"""Nodes as separate OS processes, started and driven through the `praxis-node` CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import trio

from tests.processes import CLI, ROOT, node_process, write_config

ECHO = {"name": "echo", "engine": "python", "engineSpec": {"callable": "tests.sample_tools:echo"},
        "params": [{"name": "text", "type": "string", "required": True}]}
ADD = {"name": "add", "engine": "python", "engineSpec": {"callable": "tests.sample_tools:add"},
       "params": [{"name": "a", "type": "number", "required": True},
                  {"name": "b", "type": "number", "required": True}]}


async def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process([*CLI, *args], cwd=ROOT, capture_stdout=True,
                                      capture_stderr=True, check=False)


async def test_two_node_processes_call_each_other(tmp_path):
    a_cfg = write_config(tmp_path / "a", "proc-a", [ECHO], [])
    async with node_process(a_cfg) as (proc_a, ready_a):
        b_cfg = write_config(tmp_path / "b", "proc-b", [ADD], ready_a["addrs"][:1])
        async with node_process(b_cfg) as (proc_b, ready_b):
            # A tool on B, asked of A: A forwards it across the mesh.
            with trio.fail_after(20):
                while True:
                    out = await cli("tools", "--peer", ready_a["addrs"][0], "--json")
                    names = {t["name"] for t in json.loads(out.stdout)}
                    if names == {"echo", "add"}:
                        break
                    await trio.sleep(0.1)  # B's card reaches A asynchronously: poll A
            out = await cli("call", "--peer", ready_a["addrs"][0], "add", "a=2", "b=40")
            assert out.returncode == 0, out.stderr.decode()
            assert json.loads(out.stdout) == {"sum": 42}
            out = await cli("call", "--peer", ready_b["addrs"][0], "echo", "text=42")
            assert out.returncode == 0 and out.stdout.decode().strip() == "42"  # string param: kept as text
            out = await cli("peers", "--peer", ready_a["addrs"][0], "--json")
            listed = {p["peerId"] for p in json.loads(out.stdout)}
            assert {ready_a["peerId"], ready_b["peerId"]} <= listed
            # Kill B outright: A notices the closed connection and drops B's tools.
            proc_b.send_signal(signal.SIGKILL)
            await proc_b.wait()
            with trio.fail_after(20):
                while True:
                    out = await cli("tools", "--peer", ready_a["addrs"][0], "--json")
                    if {t["name"] for t in json.loads(out.stdout)} == {"echo"}:
                        break
                    await trio.sleep(0.1)
            out = await cli("call", "--peer", ready_a["addrs"][0], "add", "a=1", "b=1")
            # The provider left: the node no longer knows the tool, and says which it knows.
            assert (out.returncode, out.stderr) == (1, b"error: unknown tool 'add'; the node knows echo\n")


async def test_tool_errors_and_bad_arguments_exit_nonzero_with_a_message(tmp_path):
    cfg = write_config(tmp_path / "a", "proc-a", [ECHO], [])
    async with node_process(cfg) as (_, ready):
        out = await cli("call", "--peer", ready["addrs"][0], "echo")
        assert out.returncode == 1 and b"missing required argument 'text'" in out.stderr
        out = await cli("call", "--peer", ready["addrs"][0], "echo", "oops")
        assert out.returncode == 2 and b"is not key=value" in out.stderr


async def test_id_is_stable_across_restarts_and_key_is_private(tmp_path):
    cfg = write_config(tmp_path / "a", "proc-a", [], [])
    first = await cli("id", "-c", str(cfg))
    second = await cli("id", "-c", str(cfg))
    assert first.returncode == 0 and first.stdout == second.stdout
    assert first.stdout.startswith(b"peer ID: 12D3KooW")
    assert oct(os.stat(tmp_path / "a" / "identity.key").st_mode & 0o777) == "0o600"
    async with node_process(cfg) as (_, ready):
        assert first.stdout.decode().split()[2] == ready["peerId"]


async def test_bad_config_fails_at_start_with_the_key_named(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("agent:\n  tools:\n    - {name: t, engine: docker}\n")
    out = await cli("run", "-c", str(cfg))
    assert out.returncode == 2
    assert b"agent.tools[0].engine" in out.stderr and b"'docker'" in out.stderr


async def test_unreachable_peer_is_a_clear_error(tmp_path):
    out = await cli("call", "--peer", "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWHRyfTBKcjkqjNk5UZarJhzT7rXZYfr4DmaCWJgen62Xk",
                    "echo", "text=x", "--timeout", "2")
    assert out.returncode == 3 and b"is the node running?" in out.stderr


async def test_demo_runs_a_mesh_and_succeeds():
    out = await cli("demo", "--nodes", "3", timeout=120)
    text = out.stdout.decode()
    assert out.returncode == 0, text + out.stderr.decode()
    assert "5 of 5 cross-node calls succeeded" in text
    assert "sixarp" in text and '{"sum": 42}' in text


async def test_call_tools_and_peers_through_the_mcp_endpoint(tmp_path):
    a_cfg = write_config(tmp_path / "a", "proc-a", [ECHO], [])
    async with node_process(a_cfg) as (_, ready_a):
        b_cfg = write_config(tmp_path / "b", "proc-b", [ADD], ready_a["addrs"][:1])
        b_cfg.write_text(b_cfg.read_text().replace("enabled: false", "enabled: true\n  port: 0"))
        async with node_process(b_cfg) as (_, ready_b):
            url = ready_b["mcpUrl"]
            assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")
            with trio.fail_after(20):
                while True:  # A's card reaches B asynchronously: poll B's listing
                    out = await cli("tools", "--node", url, "--json")
                    if {t["name"] for t in json.loads(out.stdout)} == {"echo", "add"}:
                        break
                    await trio.sleep(0.1)
            out = await cli("call", "--node", url, "echo", "text=42")  # lives on A, asked of B
            assert out.returncode == 0 and out.stdout.decode().strip() == "42"
            out = await cli("call", "--node", url, "add", "a=1", "b=2")
            assert out.returncode == 0 and json.loads(out.stdout) == {"sum": 3}
            out = await cli("call", "--node", url, "add", "a=x")
            assert out.returncode == 1 and b"invalid arguments" in out.stderr
            out = await cli("peers", "--node", url, "--json")
            peers = json.loads(out.stdout)
            assert peers[0]["peerId"] == ready_b["peerId"] and "add" in peers[0]["tools"] and peers[0]["self"]
            assert any(p["peerId"] == ready_a["peerId"] and p["tools"] == ["echo"] for p in peers)
    out = await cli("tools", "--node", "http://127.0.0.1:1/mcp", "--timeout", "3")
    assert out.returncode == 3 and b"error:" in out.stderr


async def test_run_stops_cleanly_on_ctrl_c(tmp_path):
    cfg = write_config(tmp_path / "a", "proc-a", [ECHO], [])
    async with node_process(cfg) as (proc, ready):
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            await proc.wait()
        assert proc.returncode == 0
    log = (tmp_path / "a" / "node.log").read_text()
    assert "received SIGINT; stopping" in log and "Traceback" not in log
