"""What an upstream MCP server says during a call reaches the call's events, and a cancelled
call reaches the server: McpClientPool, the remote-mcp engine and one Node, against
server-everything and a small MCP SDK server of our own (chatty_server.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from node.mcp.clients import McpClientPool, McpServerParams
from node.mcp.session_events import AMBIGUOUS
from protocols.call_events import ELICITATION, LOG_LEVELS, SAMPLING, LogMessage, Progress
from tests.helpers import make_node, node_config
from tests.mcp_interop.servers import everything, everything_stdio_command, free_port, wait_for_port
from tests.test_engine_events import Recorder

CHATTY = Path(__file__).with_name("chatty_server.py")
SAMPLED = {"role": "assistant", "content": {"type": "text", "text": "forty-two"},
           "model": "test-model", "stopReason": "endTurn"}


def deadline(seconds: float = 20.0) -> float:
    return trio.current_time() + seconds


def everything_stdio() -> McpServerParams:
    command, args = everything_stdio_command()
    return McpServerParams.build("everything", command=command, args=args)


def chatty(hang_file: Path) -> McpServerParams:
    return McpServerParams.build("chatty", command=sys.executable, args=[str(CHATTY)],
                                 env={"PRAXIS_TEST_HANG_FILE": str(hang_file)})


@asynccontextmanager
async def chatty_server(transport: str, notes: Path) -> AsyncIterator[McpServerParams]:
    """The chatty server over stdio (started by the pool) or streamable HTTP (a process of ours)."""
    if transport == "stdio":
        yield chatty(notes)
        return
    port = free_port()
    process = await trio.lowlevel.open_process(
        [sys.executable, str(CHATTY), "http", str(port)], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "PRAXIS_TEST_HANG_FILE": str(notes)})
    try:
        await wait_for_port(port, process)
        yield McpServerParams.build("chatty", address=f"http://127.0.0.1:{port}/mcp")
    finally:
        process.kill()  # by its PID (the process object)
        with trio.move_on_after(5):
            await process.wait()


async def lines_of(path: Path, wanted: str, limit: float) -> list[str]:
    """Poll the file the test server writes until it holds `wanted` (bounded by `limit`)."""
    with trio.fail_after(limit):
        while True:
            lines = path.read_text().split() if path.exists() else []
            if wanted in lines:
                return lines
            await trio.sleep(0.02)


@pytest.mark.parametrize("mode", ["stdio", "streamableHttp"])
async def test_everything_long_running_progress_reaches_the_call(mode: str) -> None:
    async with McpClientPool() as pool:
        if mode == "stdio":
            params = everything_stdio()
            result, events = await call_long_running(pool, params)
        else:
            async with everything(mode) as server:
                params = McpServerParams.build("everything", address=server.url)
                result, events = await call_long_running(pool, params)
    assert "Long running operation completed" in result
    assert events.progresses == [Progress(i, 4, None) for i in range(1, 5)]


async def call_long_running(pool: McpClientPool, params: McpServerParams) -> tuple[str, Recorder]:
    events = Recorder()
    result = await pool.call_tool(params, "trigger-long-running-operation", {"duration": 0.4, "steps": 4},
                                  deadline(), events)
    return result.text_output(), events


async def test_everything_sampling_is_answered_by_the_callers_ask() -> None:
    events = Recorder(answer=SAMPLED)
    async with McpClientPool() as pool:
        result = await pool.call_tool(everything_stdio(), "trigger-sampling-request",
                                      {"prompt": "the answer?", "maxTokens": 10}, deadline(), events)
    assert not result.is_error and "forty-two" in result.text_output()
    method, params = events.asks[0]
    assert method == SAMPLING and params["maxTokens"] == 10
    assert "the answer?" in params["messages"][0]["content"]["text"]


async def test_everything_elicitation_answered_and_refused() -> None:
    async with McpClientPool() as pool:
        params = everything_stdio()
        accepted = Recorder(answer={"action": "accept", "content": {"name": "Ada", "check": True}})
        result = await pool.call_tool(params, "trigger-elicitation-request", {}, deadline(), accepted)
        assert accepted.asks[0][0] == ELICITATION
        assert "requestedSchema" in accepted.asks[0][1]
        assert "- Name: Ada" in result.text_output()
        # The caller's error goes back to the server unchanged (code and message).
        refusing = Recorder(answer=None)  # raises AskRefused(-32600, "no")
        result = await pool.call_tool(params, "trigger-elicitation-request", {}, deadline(), refusing)
        assert result.is_error
        assert "-32600" in result.text_output() and "no" in result.text_output()
        assert pool.sessions_opened == 1


@pytest.mark.parametrize("transport", ["stdio", "streamable-http"])
async def test_log_and_progress_of_a_call_reach_it_and_the_level_is_passed_on(tmp_path: Path, transport: str) -> None:
    async with McpClientPool() as pool, chatty_server(transport, tmp_path / "notes") as params:
        events = Recorder()
        result = await pool.call_tool(params, "chatter", {"count": 3}, deadline(), events)
        assert result.text_output() == "chatted"
        assert [m.data for m in events.logs] == ["chat 1", "chat 2", "chat 3"]
        assert all(m.level == "info" for m in events.logs)
        assert events.progresses == [Progress(i, 3, f"step {i}") for i in range(1, 4)]
        # logging/setLevel passed on: info messages no longer come.
        assert await pool.set_logging_level(params, "warning", deadline())
        quiet = Recorder()
        await pool.call_tool(params, "chatter", {"count": 2}, deadline(), quiet)
        assert quiet.logs == [] and len(quiet.progresses) == 2
        # A new session to the server (after a loss) gets the same level.
        pool.forget(params)
        again = Recorder()
        await pool.call_tool(params, "chatter", {"count": 2}, deadline(), again)
        assert again.logs == [] and len(again.progresses) == 2
        assert pool.sessions_opened == 2


@pytest.mark.parametrize("transport", ["stdio", "streamable-http"])
async def test_cancelled_call_sends_notifications_cancelled_and_the_session_keeps_serving(
    tmp_path: Path, transport: str
) -> None:
    notes = tmp_path / "notes"
    async with McpClientPool() as pool, chatty_server(transport, notes) as params:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pool.call_tool, params, "hang", {}, deadline(60))
                await lines_of(notes, "started", 20)
                scope.cancel()
        # The server's handler was interrupted by the client's notifications/cancelled.
        await lines_of(notes, "cancelled", 5)
        result = await pool.call_tool(params, "echo", {"text": "still here"}, deadline())
        assert result.text_output() == "still here"
        assert pool.sessions_opened == 1
        assert notes.read_text().split() == ["started", "cancelled"]  # nothing was retried


async def test_with_two_calls_in_flight_logs_and_asks_are_not_guessed(tmp_path: Path) -> None:
    """The routing rule: session-wide messages go to a call only when it is the only one."""
    notes = tmp_path / "notes"
    async with McpClientPool() as pool:
        params = chatty(notes)
        events = Recorder()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.call_tool, params, "hang", {}, deadline(60))
            await lines_of(notes, "started", 20)
            await pool.call_tool(params, "chatter", {"count": 2}, deadline(), events)
            nursery.cancel_scope.cancel()
        assert events.logs == []  # whose were they? Not told: dropped
        assert len(events.progresses) == 2  # progress names its request: always delivered
        asker = Recorder(answer=SAMPLED)
        async with McpClientPool() as pool2:
            everything_params = everything_stdio()
            long_call = Recorder()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pool2.call_tool, everything_params, "trigger-long-running-operation",
                                   {"duration": 8, "steps": 8}, deadline(), long_call)
                with trio.fail_after(20):
                    await long_call.first_progress.wait()  # it is in flight on the session
                result = await pool2.call_tool(everything_params, "trigger-sampling-request",
                                               {"prompt": "p", "maxTokens": 5}, deadline(), asker)
                nursery.cancel_scope.cancel()
        assert result.is_error and AMBIGUOUS[:40] in result.text_output()
        assert asker.asks == []


async def test_through_a_node_remote_mcp_and_python_tools_report_to_the_callers_events(tmp_path: Path) -> None:
    command, args = everything_stdio_command()
    tools: list[dict[str, Any]] = [
        {"name": "slowly", "engine": "remote-mcp",
         "engineSpec": {"command": command, "args": args, "tool": "trigger-long-running-operation"},
         "params": [{"name": "duration", "type": "number"}, {"name": "steps", "type": "number"}]},
        {"name": "steps", "engine": "python", "engineSpec": {"callable": "tests.sample_tools:steps"},
         "params": [{"name": "count", "type": "number"}]},
        {"name": "reporter", "engine": "process",
         "engineSpec": {"command": ["sh", "-c", "echo 'praxis:progress 1/2 half' >&2; "
                                                "echo 'praxis:log notice nearly' >&2; echo fine"]}},
    ]
    node = make_node(node_config("events", tools, engines={"process": {"enabled": True}}))
    async with node.running():
        remote = Recorder()
        routed = await node.mesh.call("slowly", {"duration": 0.3, "steps": 3}, events=remote)
        assert "completed" in routed.result.text_output()
        assert [p.progress for p in remote.progresses] == [1, 2, 3]
        python = Recorder()
        await node.mesh.call("steps", {"count": 2}, events=python)
        assert [p.progress for p in python.progresses] == [1, 2]
        process = Recorder()
        routed = await node.mesh.call("reporter", {}, events=process)
        assert routed.result.text_output().strip() == "fine"
        assert process.progresses == [Progress(1, 2, "half")]
        assert process.logs == [LogMessage("notice", "nearly", "tool")]


async def test_a_caller_that_cannot_take_events_does_not_fail_the_upstream_call(tmp_path: Path) -> None:
    from tests.test_engine_events import BrokenCaller

    caller = BrokenCaller()
    async with McpClientPool() as pool:
        result = await pool.call_tool(chatty(tmp_path / "notes"), "chatter", {"count": 3}, deadline(), caller)
    assert result.text_output() == "chatted" and caller.attempts == 1


async def test_everything_log_messages_during_a_call_reach_it() -> None:
    """server-everything's simulated logging sends one message every 5 s: a 6 s call sees one."""
    async with McpClientPool() as pool:
        params = everything_stdio()
        toggled = await pool.call_tool(params, "toggle-simulated-logging", {}, deadline())
        assert "Started simulated" in toggled.text_output()
        events = Recorder()
        await pool.call_tool(params, "trigger-long-running-operation", {"duration": 6, "steps": 3},
                             deadline(30), events)
    assert events.logs, "no log message reached the call"
    assert all(m.level in LOG_LEVELS and "message" in str(m.data).lower() for m in events.logs)
    assert [p.progress for p in events.progresses] == [1, 2, 3]
