"""Cancelling a dagger tool two hops away: an MCP SDK client on node A, or Ctrl-C on
`praxis-node call --node`, stops the container that node B runs for it (checked through the
private Docker daemon of the TEST STAND-IN for Dagger)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import mcp
import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from node.app import Node
from node.tools.engines.dagger import DaggerEngine
from tests.dagger.test_dagger_cancel import poll, standin_containers
from tests.dagger_fixtures import IMAGE, DaggerBackend
from tests.helpers import cancel_once_started, make_node, node_config, wait_all_know

ROOT = Path(__file__).resolve().parents[2]
GONE_WITHIN = 15.0  # a bound on the wait; scripts/bench reports the real cancel latency
LONG = {"name": "long_build", "engine": "dagger", "allow_peers": ["*"],
        "engineSpec": {"image": IMAGE, "command": ["sleep", "60"], "timeout": 120}}


@asynccontextmanager
async def two_hops(backend: DaggerBackend, tmp_path: Path) -> AsyncIterator[Node]:
    """Yields node A (MCP endpoint, no tools), which reaches B's dagger tool over libp2p."""
    config_b = node_config("node-b", [LONG]).with_base_dir(tmp_path)
    engine = DaggerEngine(config_b.engines.dagger, config_b.base_dir, environ=backend.env)
    b = Node(config_b, key_pair=create_new_key_pair(), engines={"dagger": engine})
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(b.running())
        a = make_node(node_config("node-a", bootstrap=b.addrs[:1], mcp={"enabled": True, "port": 0}))
        await stack.enter_async_context(a.running())
        await wait_all_know([a], {"long_build"})
        yield a


async def test_an_sdk_client_cancel_stops_the_container_two_hops_away(
    dagger_backend: DaggerBackend, tmp_path: Path
) -> None:
    if dagger_backend.daemon is None:
        pytest.skip("checks containers through the stand-in's private Docker daemon")
    before = await trio.to_thread.run_sync(standin_containers, dagger_backend)
    async with two_hops(dagger_backend, tmp_path) as a, mcp.Client(a.mcp_url, mode="legacy") as client:
        started, _ = await cancel_once_started(lambda: client.call_tool("long_build", {}),
                                               lambda: poll(dagger_backend, lambda ids: bool(ids - before), 60))
        ours = started - before
        await poll(dagger_backend, lambda ids: not (ids & ours), GONE_WITHIN)


async def test_ctrl_c_on_the_cli_stops_the_container_two_hops_away(
    dagger_backend: DaggerBackend, tmp_path: Path
) -> None:
    if dagger_backend.daemon is None:
        pytest.skip("checks containers through the stand-in's private Docker daemon")
    before = await trio.to_thread.run_sync(standin_containers, dagger_backend)
    async with two_hops(dagger_backend, tmp_path) as a:
        cli = await trio.lowlevel.open_process(
            [sys.executable, "-m", "node.cli.main", "call", "--node", a.mcp_url, "long_build"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            ours = await poll(dagger_backend, lambda ids: bool(ids - before), 60) - before
            cli.send_signal(signal.SIGINT)
            await poll(dagger_backend, lambda ids: not (ids & ours), GONE_WITHIN)
            with trio.fail_after(GONE_WITHIN):
                await cli.wait()
        finally:
            if cli.returncode is None:
                cli.kill()
                await cli.wait()
        assert cli.returncode == 130
