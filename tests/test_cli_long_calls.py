"""`praxis-node call` follows long calls (issue 10, part 5): it waits as long as the call's
deadline, shows progress, and Ctrl-C cancels the remote work and exits 130 at once.

The CLI is the real command, run as a process; the node runs in this process with its real MCP
endpoint and libp2p host, and a test double for the engine only (tests/event_engine.py), so
the test sees the engine start and be cancelled.
"""

from __future__ import annotations

import os
import pty
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from node.app import Node
from node.cli.errors import EXIT_INTERRUPTED, EXIT_TOOL_ERROR
from tests.event_engine import EventEngine, tools
from tests.helpers import node_config
from tests.processes import CLI, ROOT


@asynccontextmanager
async def event_node(call_timeout: float = 60.0) -> AsyncIterator[tuple[Node, EventEngine]]:
    engine = EventEngine()
    config = node_config("node-cli-events", tools(), mcp={"enabled": True, "port": 0},
                         limits={"call_timeout_seconds": call_timeout})
    node = Node(config, engines={"python": engine})
    async with node.running():
        yield node, engine


async def cli(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[bytes], float]:
    """Run the CLI; (its output, seconds it took). `timeout` bounds the test only."""
    started = trio.current_time()
    with trio.fail_after(timeout):
        out = await trio.run_process([*CLI, *args], cwd=ROOT, capture_stdout=True, capture_stderr=True,
                                     check=False, env={k: v for k, v in os.environ.items()
                                                       if k != "PRAXIS_MCP_TOKEN"})
    return out, trio.current_time() - started


async def test_progress_lines_without_a_terminal_and_none_with_json() -> None:
    async with event_node() as (node, _):
        out, _ = await cli("call", "--node", node.mcp_url, "wait", "seconds=0.5")
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout.decode() == "waited\n"
        assert out.stderr.decode() == "progress: 1/2 (50%) started\nprogress: 2 waiting\n"
        out, _ = await cli("call", "--node", node.mcp_url, "wait", "seconds=0.5", "--json")
        assert out.returncode == 0 and out.stderr == b""
        assert out.stdout.decode().startswith("{")


async def test_on_a_terminal_one_line_shows_the_elapsed_time_and_progress() -> None:
    async with event_node() as (node, _):
        main, child = pty.openpty()
        try:
            proc = await trio.lowlevel.open_process(
                [*CLI, "call", "--node", node.mcp_url, "wait", "seconds=1"], cwd=ROOT,
                stdout=subprocess.PIPE, stderr=child, stdin=subprocess.DEVNULL)
            os.close(child)
            with trio.fail_after(30):
                await proc.wait()
            seen = b""
            while True:  # what the CLI wrote to its terminal (the pty keeps it after the exit)
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # EIO: the terminal's other end is closed and drained
                    break
                if not chunk:
                    break
                seen += chunk
        finally:
            os.close(main)
        assert proc.returncode == 0
        text = seen.decode()
        assert "\n" not in text.replace("\r\n", "\n").rstrip("\n")  # one line, rewritten in place
        frames = [f for f in text.split("\r\x1b[K") if f]
        assert frames and all(f.startswith("wait: ") for f in frames), frames
        assert any("2 waiting" in f for f in frames) and any(" s  " in f for f in frames)
        assert text.endswith("\r\x1b[K")  # erased before the result


async def test_ctrl_c_cancels_the_call_at_the_node_and_exits_130() -> None:
    async with event_node() as (node, engine):
        proc = await trio.lowlevel.open_process([*CLI, "call", "--node", node.mcp_url, "wait"], cwd=ROOT,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            with trio.fail_after(30):
                await engine.started.wait()
            interrupted = trio.current_time()
            proc.send_signal(signal.SIGINT)
            with trio.fail_after(5):
                await engine.cancelled.wait()
            cancel_latency = trio.current_time() - interrupted
            with trio.fail_after(10):
                await proc.wait()
            exit_latency = trio.current_time() - interrupted
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.stderr is not None
        err = (await proc.stderr.receive_some(65536)).decode()
        assert proc.returncode == EXIT_INTERRUPTED, err
        assert err.splitlines()[-1] == "interrupted: the call was cancelled" and "Traceback" not in err
        assert exit_latency < 5.0, exit_latency
        print(f"\nfigure: Ctrl-C to engine cancelled {cancel_latency * 1000:.0f} ms, "
              f"to CLI exit {exit_latency * 1000:.0f} ms")


async def test_timeout_is_the_calls_deadline_and_cancels_it() -> None:
    async with event_node() as (node, engine):
        out, took = await cli("call", "--node", node.mcp_url, "wait", "seconds=10", "--timeout", "2")
        err = out.stderr.decode()
        assert out.returncode == EXIT_TOOL_ERROR, err
        assert err.splitlines()[-1] == "error: no result from 'wait' within 2 s (--timeout)"
        assert took < 8, took  # about 2 s plus the CLI's own start, not the tool's 10 s
        print(f"\nfigure: call --timeout 2 on a 10 s tool: exit 1 after {took:.2f} s")
        with trio.fail_after(5):
            await engine.cancelled.wait()  # the CLI's cancel stopped the work


async def test_without_timeout_the_cli_waits_for_the_nodes_call_timeout() -> None:
    """The node's call timeout (3 s here; 60 s by default) is the deadline: the CLI waits for the
    node's own answer, a timeout error, and neither cuts the call earlier nor hangs after it."""
    async with event_node(call_timeout=3) as (node, _):
        out, took = await cli("call", "--node", node.mcp_url, "wait")
        err = out.stderr.decode()
        assert out.returncode == EXIT_TOOL_ERROR, err
        assert "timed out" in err.splitlines()[-1] and "--timeout" not in err
        assert 3 <= took < 10, took
        print(f"\nfigure: call without --timeout, node call timeout 3 s: exit 1 after {took:.2f} s")
        # A call shorter than the node's timeout is never cut.
        out, _ = await cli("call", "--node", node.mcp_url, "wait", "seconds=2")
        assert (out.returncode, out.stdout.decode()) == (0, "waited\n")


async def test_ctrl_c_through_peer_exits_130_at_once() -> None:
    async with event_node() as (node, engine):
        proc = await trio.lowlevel.open_process([*CLI, "call", "--peer", node.addrs[0], "wait"], cwd=ROOT,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            with trio.fail_after(30):
                await engine.started.wait()
            interrupted = trio.current_time()
            proc.send_signal(signal.SIGINT)
            with trio.fail_after(15):
                await proc.wait()
            exit_latency = trio.current_time() - interrupted
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == EXIT_INTERRUPTED
        assert exit_latency < 5.0, exit_latency
        print(f"\nfigure: Ctrl-C to CLI exit through --peer {exit_latency * 1000:.0f} ms")
