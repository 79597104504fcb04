"""Every mount and environment escape the DaggerEngine refuses locally is refused when a
remote peer asks for it too (real containers through the Dagger test stand-in)."""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair

from node.app import Node
from node.config import NodeConfig, ToolContract
from node.tools.engines.dagger import DaggerEngine
from protocols.errors import ContractError, InvalidArguments
from tests.dagger_fixtures import IMAGE, DaggerBackend
from tests.helpers import make_node, node_config, wait_all_know
from tests.raw_peer import frame, open_stream, raw_host, read_json

ONE_PARAM = {  # declares one parameter: every other name is refused before anything runs
    "name": "one_param", "engine": "dagger", "params": [{"name": "ok_name", "type": "string"}],
    "engineSpec": {"image": IMAGE, "command": ["sh", "-c", "echo ran"], "env": {"LANG": "C"},
                   "env_passthrough": ["API_TOKEN"]},
}
MOUNTED = {
    "name": "mounted", "engine": "dagger",
    "engineSpec": {"image": IMAGE, "command": ["sh", "-c", "ls /data"], "mounts": {"./data": "/data"}},
}
ESCAPING_NAMES = ["PATH", "LD_PRELOAD", "PYTHONPATH", "HOME", "CACHE_BUST", "LANG", "API_TOKEN", "a-b", "1x",
                  "SHELLOPTS", "PS4", "GIT_SSH_COMMAND", "http_proxy", "path"]


def dagger_node(config: NodeConfig, backend: DaggerBackend) -> Node:
    engine = DaggerEngine(config.engines.dagger, config.base_dir, environ={**backend.env, "API_TOKEN": "t"})
    return Node(config, key_pair=create_new_key_pair(), engines={"dagger": engine})


async def test_env_and_mount_escapes_requested_by_a_remote_peer(dagger_backend: DaggerBackend, tmp_path: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "inside.txt").write_text("ok")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("must not be readable")
    provider = dagger_node(node_config("provider", [ONE_PARAM, MOUNTED]).with_base_dir(tmp_path), dagger_backend)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(provider.running())
        caller = make_node(node_config("caller", bootstrap=provider.addrs[:1]))
        await stack.enter_async_context(caller.running())
        await wait_all_know([caller], {"one_param", "mounted"})
        assert (await caller.call("one_param", {"ok_name": "1"}, timeout=60)).result.text_output().strip() == "ran"
        for name in ESCAPING_NAMES:
            with pytest.raises(InvalidArguments, match=name):
                await caller.call("one_param", {name: "/tmp/evil"}, timeout=60)
        # The Go node's wrapped argument shape cannot smuggle a protected name in either.
        async with raw_host() as go:
            stream = await open_stream(go, provider.addrs[0], "/praxis/tool/1.0.0")
            await stream.write(frame({"id": "w", "name": "one_param", "timestamp": 1,
                                      "arguments": {"args": {}, "params": {}, "secrets": {"LD_PRELOAD": "/x.so"}}}))
            response = await read_json(stream, timeout=30)
            assert response["error"]["code"] == -32602 and "LD_PRELOAD" in response["error"]["message"]

        assert "inside.txt" in (await caller.call("mounted", {}, timeout=60)).result.text_output()
        # Swap the mounted folder for a symlink that leaves the roots, while the node runs.
        os.rename(tmp_path / "data", tmp_path / "data-moved")
        os.symlink(outside, tmp_path / "data")
        with pytest.raises(ContractError, match="outside the allowed mount roots"):
            await caller.call("mounted", {}, timeout=60)


@pytest.mark.parametrize("host_path", ["../elsewhere", "/etc", "./link-out"])
async def test_escaping_mounts_never_serve(dagger_backend: DaggerBackend, tmp_path: Path, host_path: str):
    """A contract whose mount leaves the roots stops the node at start, and cannot be added later."""
    (tmp_path.parent / "elsewhere").mkdir(exist_ok=True)
    os.symlink("/etc", tmp_path / "link-out")
    tool = {"name": "escape", "engine": "dagger",
            "engineSpec": {"image": IMAGE, "command": ["cat", "/data/passwd"], "mounts": {host_path: "/data"}}}
    with pytest.raises(ContractError, match="outside the allowed mount roots"):
        async with dagger_node(node_config("bad", [tool]).with_base_dir(tmp_path), dagger_backend).running():
            pytest.fail("a node with an escaping mount must not start")
    node = dagger_node(node_config("good").with_base_dir(tmp_path), dagger_backend)
    async with node.running():
        with pytest.raises(ContractError, match="outside the allowed mount roots"):
            node.add_tool(ToolContract.model_validate(tool))
        assert "escape" not in node.router.tools()
