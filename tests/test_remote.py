"""`praxis-node tools|peers|call` through `--peer` (libp2p) and `--node` (MCP): one interface.

Against real node processes on 127.0.0.1, through the real CLI as a subprocess: the same mesh
asked both ways prints the same `--json`, calls give one result shape, and `--node` never
imports libp2p. Plus the pure pieces of node/cli/remote.py (argument typing, parameters).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from node.cli.remote import Parameter, parameters_from_schema, split_arguments, typed_arguments
from tests.processes import CLI, ROOT, node_process, write_config

ECHO = {"name": "echo", "engine": "python", "engineSpec": {"callable": "tests.sample_tools:echo"},
        "description": "Echo a text",
        "params": [{"name": "text", "type": "string", "description": "what to echo", "required": True}]}
ADD = {"name": "add", "engine": "python", "engineSpec": {"callable": "tests.sample_tools:add"},
       "description": "Add two numbers",
       "params": [{"name": "a", "type": "number", "required": True},
                  {"name": "b", "type": "number", "required": True}]}
# Another definition of "echo" (another description, another callable): a variant on a third node.
OTHER_ECHO = {"name": "echo", "engine": "python", "engineSpec": {"callable": "tests.sample_tools:names"},
              "description": "Not the echo you know",
              "params": [{"name": "text", "type": "string", "required": True}]}
MCP_ON = {"mcp": {"enabled": True, "port": 0}}
DEAD_PEER = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWHRyfTBKcjkqjNk5UZarJhzT7rXZYfr4DmaCWJgen62Xk"


async def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process([*CLI, *args], cwd=ROOT, capture_stdout=True,
                                      capture_stderr=True, check=False)


async def cli_json(*args: str) -> Any:
    out = await cli(*args, "--json")
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return json.loads(out.stdout)


@asynccontextmanager
async def two_node_processes(tmp_path: Path) -> AsyncIterator[tuple[dict[str, Any], dict[str, Any]]]:
    """`praxis-node run` processes A (echo) and B (add, MCP endpoint on, bootstrapped from A),
    yielded once B's endpoint lists both tools (polled through the CLI: another process's state)."""
    a_cfg = write_config(tmp_path / "a", "node-a", [ECHO], [])
    async with node_process(a_cfg) as (_, a):
        b_cfg = write_config(tmp_path / "b", "node-b", [ADD], a["addrs"][:1], **MCP_ON)
        async with node_process(b_cfg) as (_, b):
            with trio.fail_after(20):
                while {t["name"] for t in await cli_json("tools", "--node", b["mcpUrl"])} != {"echo", "add"}:
                    await trio.sleep(0.1)
            yield a, b


async def until_equal(first: tuple[str, ...], second: tuple[str, ...], timeout: float = 20) -> Any:
    """Poll both commands until they print the same JSON (cards and departures travel
    asynchronously: a --peer client that just left may still be listed for a moment)."""
    with trio.move_on_after(timeout):
        while True:
            a, b = await cli_json(*first), await cli_json(*second)
            if a == b:
                return a
            await trio.sleep(0.2)
    assert a == b  # the last outputs, shown side by side by pytest
    return a


def one_line_error(out: subprocess.CompletedProcess[bytes]) -> str:
    err = out.stderr.decode()
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: "), err
    return err


async def test_tools_and_peers_print_one_json_shape_through_peer_and_node(tmp_path):
    async with two_node_processes(tmp_path) as (a, b):
        tools = await until_equal(("tools", "--peer", b["addrs"][0]), ("tools", "--node", b["mcpUrl"]))
        assert tools == [
            {"name": "add", "meshName": "add", "provider": "node-b", "peerId": b["peerId"],
             "description": "Add two numbers",
             "parameters": [{"name": "a", "type": "number", "required": True, "description": ""},
                            {"name": "b", "type": "number", "required": True, "description": ""}]},
            {"name": "echo", "meshName": "echo", "provider": "node-a", "peerId": a["peerId"],
             "description": "Echo a text",
             "parameters": [{"name": "text", "type": "string", "required": True,
                             "description": "what to echo"}]},
        ]
        # The mesh is the same whichever node is asked.
        assert await cli_json("tools", "--peer", a["addrs"][0]) == tools

        peers = await until_equal(("peers", "--peer", b["addrs"][0]), ("peers", "--node", b["mcpUrl"]))
        assert peers == [
            {"name": "node-b", "peerId": b["peerId"], "addrs": b["addrs"], "tools": ["add"], "self": True},
            {"name": "node-a", "peerId": a["peerId"], "addrs": a["addrs"], "tools": ["echo"], "self": False},
        ]

        # The tables: one layout both ways, the asked node marked.
        for where in (("--peer", b["addrs"][0]), ("--node", b["mcpUrl"])):
            out = await cli("tools", *where)
            assert out.returncode == 0, out.stderr.decode()[-3000:]
            lines = out.stdout.decode().splitlines()
            assert lines[0].split() == ["tool", "node", "peer", "ID", "description"]
            assert lines[2].split()[:3] == ["add", "node-b", b["peerId"]]
            out = await cli("peers", *where)
            assert out.stdout.decode().splitlines()[2].startswith("node-b (this node)")


async def test_call_gives_one_result_shape_through_peer_and_node(tmp_path):
    async with two_node_processes(tmp_path) as (a, b):
        ways = {"--peer": b["addrs"][0], "--node": b["mcpUrl"]}
        for flag, where in ways.items():
            # Typed by the tool's schema: numbers for add, text kept as text for echo (on A).
            out = await cli("call", flag, where, "add", "a=2", "b=40", "--json")
            assert out.returncode == 0, (flag, out.stderr.decode())
            assert json.loads(out.stdout) == {"content": [{"type": "text", "text": '{"sum": 42}'}],
                                              "isError": False, "structuredContent": {"sum": 42}}, flag
            out = await cli("call", flag, where, "echo", "text=42")
            assert (out.returncode, out.stdout) == (0, b"42\n"), (flag, out.stderr.decode())

            # Refusals: exit 1, one line on stderr, an isError result with --json.
            out = await cli("call", flag, where, "nosuch", "x=1")
            assert out.returncode == 1 and "nosuch" in one_line_error(out), flag
            out = await cli("call", flag, where, "echo")
            assert out.returncode == 1 and "text" in one_line_error(out), flag
            out = await cli("call", flag, where, "echo", "--json")
            listed = json.loads(out.stdout)
            assert out.returncode == 1 and listed["isError"] is True and set(listed) == {"content", "isError"}

            # A malformed argument is refused before anything is dialled.
            out = await cli("call", flag, where, "echo", "oops")
            assert out.returncode == 2 and "is not key=value" in one_line_error(out)
    for flag, dead in (("--peer", DEAD_PEER), ("--node", "http://127.0.0.1:1/mcp")):
        out = await cli("call", flag, dead, "echo", "oops", "--timeout", "20")
        assert out.returncode == 2 and "is not key=value" in one_line_error(out), flag


async def test_node_commands_import_neither_libp2p_nor_the_mcp_sdk_nor_the_config(tmp_path):
    """`--node` needs a few JSON-RPC requests over HTTP: main() runs tools, peers and call without
    importing libp2p, the MCP SDK, pydantic, an HTTP client library or the config (YAML, models),
    which is what makes these commands start in a fraction of a second."""
    heavy = ("libp2p", "multiaddr", "mcp", "mcp_types", "pydantic", "httpx", "httpx2", "anyio", "yaml")
    cfg = write_config(tmp_path / "a", "node-a", [ECHO, ADD], [], **MCP_ON)
    async with node_process(cfg) as (_, a):
        for command in (["tools", "--json"], ["peers"], ["status"], ["tools", "--describe", "add"],
                        ["call", "add", "a=1", "b=2"], ["call", "nosuch"]):
            script = (
                "import json, sys\n"
                "from node.cli.main import main\n"
                f"rc = main([{command[0]!r}, '--node', {a['mcpUrl']!r}, *{command[1:]!r}])\n"
                f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}\n"
                "                 or m.startswith(('node.config', 'node.mcp', 'node.mesh', 'node.app')))\n"
                "print(json.dumps({'rc': rc, 'loaded': loaded}))\n"
            )
            with trio.fail_after(30):
                out = await trio.run_process([sys.executable, "-c", script], cwd=ROOT, capture_stdout=True,
                                             capture_stderr=True, check=False)
            report = json.loads(out.stdout.decode().splitlines()[-1])
            assert report == {"rc": 1 if command[-1] == "nosuch" else 0, "loaded": []}, \
                (command, out.stderr.decode()[-2000:])


def test_the_cli_names_the_endpoint_as_the_node_serves_it():
    """--node speaks to the endpoint without importing it: its path and resource URI agree."""
    from node.cli import mcp_http, remote_endpoint
    from node.mcp import endpoint

    assert (mcp_http.MCP_PATH, remote_endpoint.PEERS_URI) == (endpoint.MCP_PATH, endpoint.PEERS_URI)


async def test_node_lists_variants_by_their_mcp_name_and_calls_them_by_either_name(tmp_path):
    """Two definitions of `echo`: the endpoint lists the second as `echo@<peer>` (MCP name
    `echo_<peer>`); `tools --node` shows both names, `call --node` takes either."""
    a_cfg = write_config(tmp_path / "a", "node-a", [ECHO], [])
    async with node_process(a_cfg) as (_, a):
        b_cfg = write_config(tmp_path / "b", "node-b", [], a["addrs"][:1], **MCP_ON)
        async with node_process(b_cfg) as (_, b):
            url = b["mcpUrl"]
            with trio.fail_after(20):  # A's echo first, so it keeps the name
                while {t["name"] for t in await cli_json("tools", "--node", url)} != {"echo"}:
                    await trio.sleep(0.1)
            c_cfg = write_config(tmp_path / "c", "node-c", [OTHER_ECHO], b["addrs"][:1])
            async with node_process(c_cfg) as (_, c):
                suffix = c["peerId"][-8:]
                with trio.fail_after(20):
                    while len(tools := await cli_json("tools", "--node", url)) != 2:
                        await trio.sleep(0.1)
                variant = next(t for t in tools if t["provider"] == "node-c")
                assert (variant["name"], variant["meshName"]) == (f"echo_{suffix}", f"echo@{suffix}")
                assert variant["peerId"] == c["peerId"] and variant["description"] == "Not the echo you know"
                out = await cli("tools", "--node", url)
                assert f"echo_{suffix} (echo@{suffix})" in out.stdout.decode()
                for name in (f"echo_{suffix}", f"echo@{suffix}"):
                    out = await cli("call", "--node", url, name, "text=hi")
                    assert (out.returncode, json.loads(out.stdout)) == (0, ["text"]), out.stderr.decode()
                out = await cli("call", "--node", url, "echo", "text=hi")
                assert (out.returncode, out.stdout) == (0, b"hi\n")


# ----- the pure pieces ----------------------------------------------------------------------


def test_arguments_are_json_unless_the_parameter_is_a_string():
    pairs = split_arguments(["text=3", "n=3", "flag=true", "obj={\"k\": [1]}", "word=hello", "eq=a=b", "empty="])
    types = {"text": "string", "n": "number", "eq": "string", "empty": "string"}
    assert typed_arguments(pairs, types) == {"text": "3", "n": 3, "flag": True, "obj": {"k": [1]},
                                             "word": "hello", "eq": "a=b", "empty": ""}
    for bad in ("oops", "=value"):
        try:
            split_arguments([bad])
        except ValueError as exc:
            assert "is not key=value" in str(exc)
        else:
            raise AssertionError(bad)


def test_parameters_from_a_schema_of_any_shape():
    schema = {"type": "object", "required": ["a", 7],
              "properties": {"a": {"type": "number", "description": "first"}, "b": {"type": ["string", "null"]},
                             "c": {}, "d": "not a mapping"}}
    assert parameters_from_schema(schema) == (Parameter("a", "number", True, "first"), Parameter("b", "string|null"),
                                              Parameter("c", ""), Parameter("d", ""))
    assert parameters_from_schema(None) == () and parameters_from_schema({"properties": []}) == ()
