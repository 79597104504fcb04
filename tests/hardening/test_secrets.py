"""A canary secret, set as a dagger passthrough variable and as the header of a forwarded MCP
server, never appears in any log line, card, error message, MCP listing or CLI output of a
whole mesh run (real containers, real MCP server, real MCP client, the real CLI)."""

from __future__ import annotations

import json
import logging
import secrets
from contextlib import AsyncExitStack
from pathlib import Path

import mcp
import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from node.app import Node
from node.cli.logs import configure_logging
from node.tools.engines.dagger import DaggerEngine
from protocols.errors import PraxisError
from tests.dagger_fixtures import IMAGE, DaggerBackend
from tests.helpers import make_node, node_config, wait_all_know
from tests.mcp_interop.servers import everything
from tests.processes import CLI, ROOT

LEAK_STDOUT = {"name": "leak_stdout", "engine": "dagger",
               "engineSpec": {"image": IMAGE, "command": ["sh", "-c", 'echo "token=$API_TOKEN"'],
                              "env_passthrough": ["API_TOKEN"]}}
LEAK_STDERR = {"name": "leak_stderr", "engine": "dagger",
               "engineSpec": {"image": IMAGE, "command": ["sh", "-c", 'echo "bad token $API_TOKEN" >&2; exit 2'],
                              "env_passthrough": ["API_TOKEN"]}}


async def cli_output(*args: str) -> str:
    with trio.fail_after(60):
        out = await trio.run_process([*CLI, *args], cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False)
    return out.stdout.decode() + out.stderr.decode()


@pytest.fixture
def product_logging_at_debug(caplog):
    """The product's logging setup at its most verbose, captured; the root logger restored after."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    configure_logging("DEBUG")
    root.addHandler(caplog.handler)  # configure_logging(force=True) removed caplog's handler
    caplog.handler.setLevel(logging.DEBUG)
    yield caplog
    root.handlers[:] = saved[1]
    root.setLevel(saved[0])


async def test_canary_secret_never_leaks(dagger_backend: DaggerBackend, tmp_path: Path, product_logging_at_debug,
                                         figures):
    caplog = product_logging_at_debug
    canary = f"CANARY-{secrets.token_hex(12)}"
    seen: list[str] = []  # every text a user or peer could see
    async with everything("streamableHttp") as upstream, AsyncExitStack() as stack:
        config_b = node_config(
            "provider", [LEAK_STDOUT, LEAK_STDERR],
            mcp={"enabled": True, "port": 0, "servers": [
                {"name": "everything", "address": upstream.url, "share": True,
                 "headers": {"Authorization": f"Bearer {canary}", "X-Api-Key": canary}}]},
        ).with_base_dir(tmp_path)
        seen.append(repr(config_b))
        engine = DaggerEngine(config_b.engines.dagger, tmp_path, environ={**dagger_backend.env, "API_TOKEN": canary})
        node_b = Node(config_b, key_pair=create_new_key_pair(), engines={"dagger": engine})
        await stack.enter_async_context(node_b.running())
        node_a = make_node(node_config("caller", bootstrap=node_b.addrs[:1], mcp={"enabled": True, "port": 0}))
        await stack.enter_async_context(node_a.running())
        await wait_all_know([node_a], {"leak_stdout", "leak_stderr", "echo"}, timeout=30)

        # Results and errors across the mesh.
        result = (await node_a.call("leak_stdout", {}, timeout=60)).result
        seen.append(result.model_dump_json())
        assert "token=***" in result.text_output()  # the tool printed it; the engine masked it
        with pytest.raises(PraxisError) as err:
            await node_a.call("leak_stderr", {}, timeout=60)
        seen.append(err.value.message)
        assert "exited with code 2" in err.value.message
        forwarded = (await node_a.call("echo", {"message": "through B"}, timeout=30)).result
        seen.append(forwarded.model_dump_json())
        assert "through B" in forwarded.text_output()
        rejected = (await node_a.call("echo", {"message": 5}, timeout=30)).result  # upstream's own isError
        seen.append(rejected.model_dump_json())
        assert rejected.is_error

        # Cards and peer lists, as peers receive them.
        seen.append(json.dumps(node_b.own_card().to_wire()))
        seen += [e.card.model_dump_json() for e in node_a.directory.peers()]
        seen.append(node_b.peer_list().model_dump_json())

        # The MCP listing and calls through A's endpoint, by the official client.
        async with mcp.Client(node_a.mcp_url, mode="legacy") as client:
            listing = await client.list_tools(cache_mode="bypass")
            seen.append(listing.model_dump_json())
            for name in ("leak_stdout", "leak_stderr", "echo"):
                arguments = {"message": "m"} if name == "echo" else {}
                seen.append((await client.call_tool(name, arguments)).model_dump_json())
        assert "leak_stdout" in seen[-4]

        # The CLI, as a user runs it against B.
        peer = node_b.addrs[0]
        seen.append(await cli_output("tools", "--peer", peer))
        seen.append(await cli_output("peers", "--peer", peer, "--json"))
        seen.append(await cli_output("call", "--peer", peer, "leak_stdout"))
        seen.append(await cli_output("call", "--peer", peer, "leak_stderr"))
        seen.append(await cli_output("call", "--peer", peer, "echo", "message=via-cli"))
        assert "via-cli" in seen[-1]

    logs = [record.getMessage() for record in caplog.records]
    leaks = [text[:200] for text in seen + logs if canary in text]
    figures(f"secrets: canary searched in {len(seen)} outputs (results, errors, cards, peer lists, MCP listing "
            f"and calls, CLI) and {len(logs)} log lines; found {len(leaks)} times")
    assert not leaks
    assert len(logs) > 50  # the run was really logged at DEBUG
