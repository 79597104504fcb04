"""A dagger tool served by node B, called from node A across the mesh (real containers)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair

from node.app import Node
from node.tools.engines.dagger import DaggerEngine
from protocols.errors import PraxisError
from tests.dagger_fixtures import IMAGE, DaggerBackend
from tests.helpers import make_node, node_config, wait_all_know

WORD_COUNT = {
    "name": "word_count",
    "description": "Count words in a text",
    "engine": "dagger",
    "params": [{"name": "text", "type": "string", "required": True}],
    "engineSpec": {
        "image": IMAGE,
        "command": ["sh", "-c", 'echo "$text" | wc -w; echo "$text" > /work/last.txt'],
        "mounts": {"./work": "/work"},
        "env": {"LANG": "C"},
    },
}
FAILING = {
    "name": "always_fails",
    "engine": "dagger",
    "engineSpec": {"image": IMAGE, "command": ["sh", "-c", "echo 'nope' >&2; exit 3"]},
}


async def test_dagger_tool_on_b_called_from_a(dagger_backend: DaggerBackend, tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    config_b = node_config("node-b", [WORD_COUNT, FAILING]).with_base_dir(tmp_path)
    engine = DaggerEngine(config_b.engines.dagger, config_b.base_dir, environ=dagger_backend.env)
    node_b = Node(config_b, key_pair=create_new_key_pair(), engines={"dagger": engine})
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(node_b.running())
        node_a = make_node(node_config("node-a", [], bootstrap=node_b.addrs[:1]))
        await stack.enter_async_context(node_a.running())
        await wait_all_know([node_a], {"word_count", "always_fails"})
        routed = await node_a.call("word_count", {"text": "one two three"}, timeout=60)
        assert routed.provider == node_b.peer_id
        assert routed.result.text_output().strip() == "3"
        assert (tmp_path / "work" / "last.txt").read_text() == "one two three\n"
        with pytest.raises(PraxisError, match="exited with code 3: nope"):
            await node_a.call("always_fails", {}, timeout=60)
