"""The node's MCP endpoint, exercised by real clients: the MCP Inspector CLI and the SDK's Client.

Mesh used here: node A has a local python tool; node B (bootstrapped from A) has its own
python tool and forwards to server-everything (`share: true`), so a client on A reaches
every kind of tool through A.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import mcp
import mcp_types
import pytest
import trio
from mcp.shared.exceptions import MCPError

from node.app import Node
from node.mcp.endpoint import EndpointConfigError, mcp_names
from node.runtime.signals import ChangeSignal
from tests.helpers import ECHO_PARAMS, make_node, node_config, py_tool, wait_until
from tests.mcp_interop.servers import (
    INSPECTOR,
    RunningServer,
    everything,
    require,
    time_server_command,
)

ADD_PARAMS = [{"name": "a", "type": "number", "required": True},
              {"name": "b", "type": "number", "required": True}]
SLOW_PARAMS = [{"name": "seconds", "type": "number", "required": True}]


@dataclass
class Mesh:
    a: Node
    b: Node
    upstream: RunningServer


@asynccontextmanager
async def mesh(a_tools: list[dict[str, Any]] | None = None) -> AsyncIterator[Mesh]:
    async with AsyncExitStack() as stack:
        upstream = await stack.enter_async_context(everything("streamableHttp"))
        a = make_node(node_config(
            "node-a", a_tools if a_tools is not None else [py_tool("echo", "echo", ECHO_PARAMS)],
            mcp={"enabled": True, "port": 0}))
        await stack.enter_async_context(a.running())
        b = make_node(node_config(
            "node-b",
            [py_tool("add", "add", ADD_PARAMS), py_tool("slow", "slow", SLOW_PARAMS)],
            bootstrap=a.addrs[:1],
            mcp={"servers": [{"name": "everything", "address": upstream.url, "share": True}]},
        ))
        await stack.enter_async_context(b.running())
        await wait_until(lambda: {"add", "get-sum"} <= set(a.router.tools()), a.directory.changed)
        yield Mesh(a, b, upstream)


async def inspector(tmp_path: Path, *target_and_args: str) -> Any:
    """Run the MCP Inspector CLI; return its JSON output (fails the test on a non-zero exit)."""
    env = {**os.environ, "HOME": str(tmp_path)}
    with trio.fail_after(60):
        done = await trio.run_process(
            [str(require(INSPECTOR)), "--cli", *target_and_args],
            capture_stdout=True, capture_stderr=True, check=False, env=env,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return json.loads(done.stdout)


async def test_inspector_lists_the_mesh_and_calls_across_it_over_http(tmp_path: Path) -> None:
    async with mesh() as m:
        listed = await inspector(tmp_path, m.a.mcp_url, "--method", "tools/list")
        tools = {t["name"]: t for t in listed["tools"]}
        # Local, a peer's, and a peer's forwarded MCP server's tools, each with its schema.
        assert {"echo", "add", "slow", "get-sum"} <= set(tools)
        assert tools["add"]["inputSchema"]["required"] == ["a", "b"]
        assert tools["get-sum"]["inputSchema"]["properties"]["a"]["type"] == "number"
        # A tool that lives on node B.
        called = await inspector(tmp_path, m.a.mcp_url, "--method", "tools/call",
                                 "--tool-name", "add", "--tool-arg", "a=2", "b=3")
        assert called["isError"] is False
        assert called["structuredContent"] == {"sum": 5}
        # A tool B forwards to server-everything: A has no such tool, B does the forwarding.
        called = await inspector(tmp_path, m.a.mcp_url, "--method", "tools/call",
                                 "--tool-name", "get-sum", "--tool-arg", "a=40", "b=2")
        assert called["content"][0]["text"] == "The sum of 40 and 2 is 42."


async def test_inspector_through_praxis_node_mcp_over_stdio(tmp_path: Path) -> None:
    async with mesh() as m:
        config = tmp_path / "stdio-node.yaml"
        config.write_text(json.dumps({
            "agent": {"name": "stdio-node"},
            "p2p": {"port": 0, "enable_mdns": False,
                    "bootstrap_nodes": m.a.addrs[:1] + m.b.addrs[:1]},
            "mcp": {"enabled": False},
        }))
        praxis = str(Path(sys.executable).with_name("praxis-node"))
        listed = await inspector(tmp_path, praxis, "mcp", "-c", str(config), "--method",
                                 "tools/list")
        names = {t["name"] for t in listed["tools"]}
        assert {"echo", "add", "get-sum"} <= names
        called = await inspector(tmp_path, praxis, "mcp", "-c", str(config),
                                 "--method", "tools/call", "--tool-name", "get-sum",
                                 "--tool-arg", "a=1", "b=2")
        assert called["content"][0]["text"] == "The sum of 1 and 2 is 3."


async def test_sdk_client_gets_results_errors_and_list_changed() -> None:
    async with mesh(a_tools=[]) as m:
        notices = ChangeSignal()  # versioned: a notice that arrives while the test lists is not lost

        async def on_message(message: Any) -> None:
            if isinstance(message, mcp_types.ToolListChangedNotification):
                notices.bump()

        async def listed(client: mcp.Client) -> set[str]:
            return {t.name for t in (await client.list_tools(cache_mode="bypass")).tools}

        async with mcp.Client(m.a.mcp_url, mode="legacy", message_handler=on_message) as client:
            assert {"add", "get-sum", "get-tiny-image"} <= await listed(client)
            # Forwarded through B: image content and structured content arrive unchanged.
            image = await client.call_tool("get-tiny-image", {})
            assert [c.type for c in image.content] == ["text", "image", "text"]
            weather = await client.call_tool("get-structured-content", {"location": "Chicago"})
            assert set(weather.structured_content or {}) == {"temperature", "conditions",
                                                              "humidity"}
            # Arguments that violate the schema: a clear isError, nothing forwarded.
            bad = await client.call_tool("add", {"a": "two"})
            assert bad.is_error
            text = bad.content[0].text  # type: ignore[union-attr]
            assert "missing required argument(s) ['b']" in text and "a: must satisfy type" in text
            assert "two" not in text  # values are never echoed
            # The upstream's own isError passes through.
            upstream_error = await client.call_tool("get-sum", {"a": 1, "b": "x"})
            assert upstream_error.is_error
            # An unknown tool is a protocol error naming it.
            with pytest.raises(MCPError, match="unknown tool 'nope'"):
                await client.call_tool("nope", {})
            # The mesh changes: a node C with a new tool joins, then leaves; each time the
            # client is told, and tools/list follows.
            c = make_node(node_config("node-c", [py_tool("noop", "noop")],
                                      bootstrap=m.a.addrs[:1]))
            seen = notices.version
            async with c.running():
                with trio.fail_after(10):
                    seen = await notices.wait_past(seen)
                    while "noop" not in await listed(client):
                        seen = await notices.wait_past(seen)
                result = await client.call_tool("noop", {})
                assert not result.is_error
                seen = notices.version
            with trio.fail_after(10):
                seen = await notices.wait_past(seen)
                while "noop" in await listed(client):
                    seen = await notices.wait_past(seen)


async def test_node_keeps_serving_after_a_client_disconnects_mid_call() -> None:
    async with mesh() as m:
        with trio.move_on_after(0.5):
            async with mcp.Client(m.a.mcp_url, mode="legacy") as client:
                await client.call_tool("slow", {"seconds": 5})
        async with mcp.Client(m.a.mcp_url, mode="legacy") as client:
            result = await client.call_tool("echo", {"text": "still here"})
            assert result.content[0].text == "still here"  # type: ignore[union-attr]


async def test_dns_rebinding_and_bearer_token() -> None:
    async with mesh() as m:
        body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "0"}}}
        headers = {"Accept": "application/json, text/event-stream",
                   "Content-Type": "application/json"}
        async with httpx2.AsyncClient(timeout=5) as http:
            evil = await http.post(m.a.mcp_url, json=body, headers={**headers, "Host": "evil.example"})
            assert evil.status_code in (403, 421)
    token_node = make_node(node_config("node-t", [py_tool("echo", "echo", ECHO_PARAMS)],
                                       mcp={"enabled": True, "port": 0, "token": "tok-123"}))
    async with token_node.running():
        async with httpx2.AsyncClient(timeout=5) as http:
            denied = await http.post(token_node.mcp_url, json=body, headers=headers)
            assert denied.status_code == 401 and "tok-123" not in denied.text
        transport_headers = {"Authorization": "Bearer tok-123"}
        client_http = httpx2.AsyncClient(headers=transport_headers, timeout=5)
        from mcp.client.streamable_http import streamable_http_client

        async with client_http, mcp.Client(
            streamable_http_client(token_node.mcp_url, http_client=client_http), mode="legacy"
        ) as client:
            result = await client.call_tool("echo", {"text": "authorised"})
            assert result.content[0].text == "authorised"  # type: ignore[union-attr]


async def test_off_loopback_binding_requires_a_token() -> None:
    node = make_node(node_config("node-x", mcp={"enabled": False, "host": "0.0.0.0", "port": 0}))
    async with node.running():
        with pytest.raises(EndpointConfigError, match="mcp.token"):
            node.mcp_endpoint.http_app()


def test_name_sanitizing_is_deterministic_and_collision_free() -> None:
    names = {"ok-name", "a.b", "a_b", "a b", "x" * 80, "x" * 81, "über"}
    first = mcp_names(names)
    assert first == mcp_names(set(reversed(sorted(names))))
    assert set(first.values()) == names
    assert first["ok-name"] == "ok-name" and first["a_b"] == "a_b"
    for mcp_name in first:
        assert len(mcp_name) <= 64 and all(c.isalnum() or c in "_-" for c in mcp_name)
        assert mcp_name.isascii()


async def test_only_shared_servers_are_offered_to_peers() -> None:
    command, args = time_server_command()
    async with everything("streamableHttp") as upstream:
        a = make_node(node_config("node-a"))
        async with a.running():
            b = make_node(node_config("node-b", bootstrap=a.addrs[:1], mcp={"servers": [
                {"name": "everything", "address": upstream.url, "share": True},
                {"name": "time", "command": command, "args": args},  # not shared
            ]}))
            async with b.running():
                assert "get_current_time" in b.router.tools()  # B itself uses it
                await wait_until(lambda: "get-sum" in a.router.tools(), a.directory.changed)
                assert "get_current_time" not in a.router.tools()
                # Even by name, a peer cannot reach the unshared server through B.
                response = await a.request_peer(b.peer_id, "get_current_time", {"timezone": "UTC"})
                assert response.error is not None and response.result.is_error
                routed = await b.call("get_current_time", {"timezone": "UTC"})
                assert routed.provider == "mcp:time" and not routed.result.is_error
