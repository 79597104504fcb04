"""McpClientPool against real MCP servers: server-everything (HTTP, SSE, stdio), mcp-server-time."""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable

import pytest
import trio

from node.mcp.clients import McpClientPool, McpServerParams
from protocols.errors import EngineUnavailable, PraxisError, ToolTimeout
from tests.mcp_interop.servers import (
    child_pids,
    everything,
    everything_stdio_command,
    free_port,
    start_everything,
    time_server_command,
)

SECRET = "s3cr3t-header-value"


async def failure_while(
    action: Callable[[], Awaitable[None]], call: Awaitable[object]
) -> PraxisError | None:
    """Await `call` while `action` runs beside it; return the PraxisError it raised, if any."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(action)
        try:
            await call
        except PraxisError as exc:
            return exc
        return None


def deadline(seconds: float = 15.0) -> float:
    return trio.current_time() + seconds


async def check_everything_calls(pool: McpClientPool, params: McpServerParams) -> None:
    result = await pool.call_tool(params, "get-sum", {"a": 2, "b": 40}, deadline())
    assert not result.is_error
    assert result.text_output() == "The sum of 2 and 40 is 42."
    # Structured content passes through unchanged.
    result = await pool.call_tool(params, "get-structured-content", {"location": "Chicago"},
                                  deadline())
    assert result.structured_content is not None
    assert set(result.structured_content) == {"temperature", "conditions", "humidity"}
    # Non-text content (an image) passes through with its fields.
    result = await pool.call_tool(params, "get-tiny-image", {}, deadline())
    image = next(item for item in result.content if item.type == "image")
    dumped = image.model_dump()
    assert dumped["mimeType"] == "image/png" and len(dumped["data"]) > 100
    # The server's own isError result passes through as a result, not an exception.
    result = await pool.call_tool(params, "get-sum", {"a": "x", "b": 1}, deadline())
    assert result.is_error
    assert "expected number" in result.text_output()


@pytest.mark.parametrize("mode", ["streamableHttp", "sse"])
async def test_http_transports_forward_and_reuse_one_session(mode: str) -> None:
    async with everything(mode) as server, McpClientPool() as pool:
        params = McpServerParams.build(
            "everything", address=server.url, transport="sse" if mode == "sse" else None,
            headers={"X-Api-Key": SECRET},
        )
        tools = {t.name for t in await pool.list_tools(params, deadline())}
        assert {"echo", "get-sum", "trigger-long-running-operation"} <= tools
        await check_everything_calls(pool, params)
        # Concurrent calls share the one session too.
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(pool.call_tool, params, "echo", {"message": f"m{i}"}, deadline())
        assert pool.sessions_opened == 1


async def test_stdio_everything_and_time_server() -> None:
    async with McpClientPool() as pool:
        command, args = everything_stdio_command()
        everything_params = McpServerParams.build("everything", command=command, args=args)
        await check_everything_calls(pool, everything_params)
        command, args = time_server_command()
        time_params = McpServerParams.build("time", command=command, args=args)
        tools = {t.name for t in await pool.list_tools(time_params, deadline())}
        assert "get_current_time" in tools
        result = await pool.call_tool(time_params, "get_current_time", {"timezone": "UTC"},
                                      deadline())
        assert not result.is_error and '"timezone": "UTC"' in result.text_output()
        result = await pool.call_tool(time_params, "get_current_time",
                                      {"timezone": "Not/AZone"}, deadline())
        assert result.is_error
        assert pool.sessions_opened == 2


async def test_server_down_at_start_fails_fast_and_names_the_server() -> None:
    port = free_port()
    async with McpClientPool(connect_timeout=5) as pool:
        for transport in (None, "sse"):
            params = McpServerParams.build(
                "ghost", address=f"http://user:pw@127.0.0.1:{port}/mcp?k=v", transport=transport,
                headers={"Authorization": f"Bearer {SECRET}"},
            )
            started = trio.current_time()
            with pytest.raises(EngineUnavailable) as info:
                await pool.call_tool(params, "echo", {"message": "hi"}, deadline())
            assert trio.current_time() - started < 2.0
            message = info.value.message
            assert "'ghost'" in message and f"127.0.0.1:{port}" in message
            assert SECRET not in message and "pw" not in message and "k=v" not in message
            assert SECRET not in repr(params)
        missing = McpServerParams.build("nocmd", command="/nonexistent/mcp-server")
        with pytest.raises(EngineUnavailable, match="'nocmd'"):
            await pool.call_tool(missing, "echo", {}, deadline())


async def test_connect_timeout_against_a_silent_listener() -> None:
    """A port that accepts TCP but never answers HTTP: EngineUnavailable after connect_timeout."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    held: list[trio.SocketStream] = []

    async def accept_and_hold() -> None:
        while True:
            held.append(await listeners[0].accept())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_and_hold)
        async with McpClientPool(connect_timeout=0.5) as pool:
            params = McpServerParams.build("silent", address=f"http://127.0.0.1:{port}/mcp")
            started = trio.current_time()
            with pytest.raises(EngineUnavailable, match="cannot connect"):
                await pool.call_tool(params, "echo", {}, deadline())
            assert 0.4 < trio.current_time() - started < 2.0
        nursery.cancel_scope.cancel()
    for stream in held:
        await stream.aclose()
    await listeners[0].aclose()


async def test_slower_than_the_deadline_times_out_and_the_session_survives() -> None:
    async with everything("streamableHttp") as server, McpClientPool() as pool:
        params = McpServerParams.build("everything", address=server.url)
        await pool.call_tool(params, "echo", {"message": "warm"}, deadline())
        started = trio.current_time()
        with pytest.raises(ToolTimeout, match="trigger-long-running-operation"):
            await pool.call_tool(params, "trigger-long-running-operation",
                                 {"duration": 10, "steps": 2}, trio.current_time() + 0.5)
        assert trio.current_time() - started < 1.5
        result = await pool.call_tool(params, "echo", {"message": "after"}, deadline())
        assert result.text_output() == "Echo: after"
        assert pool.sessions_opened == 1


@pytest.mark.parametrize("mode", ["streamableHttp", "sse"])
async def test_killed_mid_call_then_reconnects_after_restart(mode: str) -> None:
    server = await start_everything(mode)
    port = server.port
    try:
        async with McpClientPool(connect_timeout=5) as pool:
            params = McpServerParams.build("everything", address=server.url,
                                           transport="sse" if mode == "sse" else None)
            await pool.call_tool(params, "echo", {"message": "before"}, deadline())

            async def kill_soon() -> None:
                await trio.sleep(0.3)  # let the long call reach the server first
                server.kill()

            started = trio.current_time()
            error = await failure_while(kill_soon, pool.call_tool(
                params, "trigger-long-running-operation", {"duration": 10, "steps": 2},
                deadline()))
            assert isinstance(error, EngineUnavailable) and "'everything'" in error.message
            assert trio.current_time() - started < 5.0
            await server.wait_exited()
            # Down: a clear, fast error.
            with pytest.raises(EngineUnavailable):
                await pool.call_tool(params, "echo", {"message": "down"}, deadline())
            # Back on the same port: the next call reconnects by itself.
            server = await start_everything(mode, port)
            result = await pool.call_tool(params, "echo", {"message": "again"}, deadline())
            assert result.text_output() == "Echo: again"
            assert pool.sessions_opened == 2
    finally:
        server.kill()


async def test_stdio_server_killed_mid_call_is_restarted_on_the_next_call() -> None:
    async with McpClientPool() as pool:
        command, args = everything_stdio_command()
        params = McpServerParams.build("everything", command=command, args=args)
        await pool.call_tool(params, "echo", {"message": "one"}, deadline())
        (pid,) = child_pids(args[0])

        async def kill_soon() -> None:
            await trio.sleep(0.3)  # let the long call reach the server first
            os.kill(pid, signal.SIGKILL)

        error = await failure_while(kill_soon, pool.call_tool(
            params, "trigger-long-running-operation", {"duration": 10, "steps": 2}, deadline()))
        assert isinstance(error, EngineUnavailable) and "'everything'" in error.message
        result = await pool.call_tool(params, "echo", {"message": "two"}, deadline())
        assert result.text_output() == "Echo: two"
        assert pool.sessions_opened == 2
        assert pid not in child_pids(args[0])


async def test_unknown_tool_and_timeouts_keep_the_pool_serving() -> None:
    async with everything("streamableHttp") as server, McpClientPool() as pool:
        params = McpServerParams.build("everything", address=server.url)
        # A tool name the server does not know: server-everything answers with isError.
        result = await pool.call_tool(params, "no-such-tool", {}, deadline())
        assert result.is_error and "not found" in result.text_output()
        result = await pool.call_tool(params, "echo", {"message": "still"}, deadline())
        assert result.text_output() == "Echo: still"
