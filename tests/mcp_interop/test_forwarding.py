"""RemoteMcpEngine and McpUpstreams forwarding to real MCP servers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from node.config import McpServerEntry, ToolContract
from node.mcp.clients import McpClientPool
from node.mcp.upstreams import McpUpstreams
from node.tools.engines.remote_mcp import RemoteMcpEngine
from protocols.errors import ContractError, EngineUnavailable, ToolNotFound
from tests.mcp_interop.servers import (
    everything,
    everything_stdio_command,
    free_port,
    start_everything,
    time_server_command,
)

SECRET = "hdr-secret-123"
CHANGING = str(Path(__file__).with_name("changing_server.py"))


def contract(name: str, **spec: Any) -> ToolContract:
    return ToolContract.model_validate({"name": name, "engine": "remote-mcp", "engineSpec": spec})


def deadline(seconds: float = 15.0) -> float:
    return trio.current_time() + seconds


async def test_engine_forwards_over_every_transport_with_renamed_tools() -> None:
    command, args = everything_stdio_command()
    async with (
        everything("streamableHttp") as http,
        everything("sse") as sse,
        McpClientPool() as pool,
    ):
        engine = RemoteMcpEngine(pool)
        contracts = [
            contract("add_http", address=http.url, tool="get-sum",
                     headers={"Authorization": f"Bearer {SECRET}"}),
            contract("add_sse", address=sse.url, transport="sse", tool="get-sum"),
            contract("add_stdio", command=command, args=args, tool="get-sum"),
        ]
        for c in contracts:
            engine.check_contract(c)
            result = await engine.execute(c, {"a": 1, "b": 2}, deadline())
            assert result.text_output() == "The sum of 1 and 2 is 3.", c.name
            failed = await engine.execute(c, {"a": "one", "b": 2}, deadline())
            assert failed.is_error  # the upstream's isError, unchanged
        time_command, time_args = time_server_command()
        clock = contract("get_current_time", command=time_command, args=time_args)
        result = await engine.execute(clock, {"timezone": "Europe/Paris"}, deadline())
        assert "Europe/Paris" in result.text_output()
        await engine.aclose()
        assert pool.sessions_opened == 4


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({}, "needs address"),
        ({"address": "ftp://127.0.0.1/x"}, "http:// or https://"),
        ({"address": "http://127.0.0.1:1/mcp", "transport": "carrier-pigeon"}, "transport"),
        ({"command": "srv", "headers": {"Authorization": SECRET}}, "headers apply"),
        ({"address": "http://127.0.0.1:1/mcp", "headers": {"X": 1}}, "headers must map"),
        ({"address": "http://127.0.0.1:1/mcp", "image": "busybox"}, "unknown engineSpec"),
        ({"command": "srv", "args": "not-a-list"}, "args must be a list"),
    ],
)
def test_bad_engine_specs_are_refused_without_secrets(spec: dict[str, Any], fragment: str) -> None:
    engine = RemoteMcpEngine(McpClientPool())
    with pytest.raises(ContractError) as info:
        engine.check_contract(contract("t", **spec))
    assert fragment in info.value.message
    assert SECRET not in info.value.message


async def test_engine_to_a_server_that_is_down_fails_fast_without_secrets() -> None:
    async with McpClientPool() as pool:
        engine = RemoteMcpEngine(pool)
        c = contract("t", address=f"http://127.0.0.1:{free_port()}/mcp",
                     headers={"X-Token": SECRET})
        started = trio.current_time()
        with pytest.raises(EngineUnavailable) as info:
            await engine.execute(c, {}, deadline())
        assert trio.current_time() - started < 2.0
        assert "'t'" in info.value.message and SECRET not in info.value.message


def entry(**data: Any) -> McpServerEntry:
    return McpServerEntry.model_validate(data)


async def test_upstreams_list_and_call_and_survive_a_dead_server() -> None:
    command, args = everything_stdio_command()
    time_command, time_args = time_server_command()
    async with everything("streamableHttp") as http, McpClientPool(connect_timeout=5) as pool:
        upstreams = McpUpstreams(
            [
                entry(name="ghost", address=f"http://127.0.0.1:{free_port()}/mcp",
                      headers={"X-Token": SECRET}),
                entry(name="everything", address=http.url, share=True),
                entry(name="time", command=time_command, args=time_args),
                entry(name="local_everything", command=command, args=args),
            ],
            pool,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(upstreams.run)
            tools = upstreams.tools()
            # The unreachable server hides nothing.
            assert tools["get-sum"][0] == "everything"
            assert tools["get_current_time"][0] == "time"
            # The same tool on a later server gets the documented prefixed name.
            assert tools["local_everything_get-sum"][0] == "local_everything"
            spec = tools["get-sum"][1]
            assert spec.input_schema is not None and spec.input_schema["required"] == ["a", "b"]
            assert {p.name: p.type for p in spec.parameters} == {"a": "number", "b": "number"}
            assert spec.idempotent is True
            status = upstreams.status()
            assert status["ghost"].startswith("unreachable") and SECRET not in status["ghost"]
            assert status["everything"].startswith("ok")
            # Only share: true servers are advertised in the card.
            shared = upstreams.shared_tools()
            assert "get-sum" in shared and "get_current_time" not in shared

            result = await upstreams.call("get-sum", {"a": 20, "b": 22}, deadline())
            assert result.text_output() == "The sum of 20 and 22 is 42."
            result = await upstreams.call("local_everything_get-sum", {"a": 1, "b": 1}, deadline())
            assert result.text_output() == "The sum of 1 and 1 is 2."
            result = await upstreams.call("get_current_time", {"timezone": "UTC"}, deadline())
            assert not result.is_error
            with pytest.raises(ToolNotFound):
                await upstreams.call("nope", {}, deadline())
            nursery.cancel_scope.cancel()


async def test_upstreams_follow_list_changed_and_a_server_that_comes_up_late() -> None:
    port = free_port()
    async with McpClientPool(connect_timeout=5) as pool:
        upstreams = McpUpstreams(
            [
                entry(name="changing", command=sys.executable, args=[CHANGING]),
                entry(name="late", address=f"http://127.0.0.1:{port}/mcp"),
            ],
            pool,
            refresh_seconds=600,  # only change notices and the retry backoff drive refetches
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(upstreams.run)
            assert set(upstreams.tools()) == {"grow"}
            version = upstreams.version
            await upstreams.call("grow", {}, deadline())
            with trio.fail_after(10):
                while "extra_1" not in upstreams.tools():
                    version = await upstreams.wait_changed(version)
            result = await upstreams.call("extra_1", {}, deadline())
            assert result.text_output() == "extra_1"
            # A server that was down at start is picked up by the retry backoff.
            server = await start_everything("streamableHttp", port)
            try:
                with trio.fail_after(15):
                    while "echo" not in upstreams.tools():
                        version = await upstreams.wait_changed(version)
                result = await upstreams.call("echo", {"message": "late"}, deadline())
                assert result.text_output() == "Echo: late"
            finally:
                server.kill()
            nursery.cancel_scope.cancel()
