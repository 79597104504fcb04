"""What a tool says during a call reaches the MCP client that made it, and a client that gives
up stops the work: the node's real endpoint (HTTP and stdio), real `mcp.Client`s with
progress, logging, sampling and elicitation callbacks, and a test double for the engine only
(tests/event_engine.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp
import mcp_types
import pytest
import trio
from mcp import StdioServerParameters
from mcp.client.session import ClientRequestContext
from mcp.shared.exceptions import MCPError

from node.app import Node
from node.mcp.client_events import DEFAULT_LOG_LEVEL
from tests.event_engine import EventEngine, tools
from tests.helpers import node_config

ROOT = Path(__file__).resolve().parents[2]
# `logging/setLevel` is what these clients speak (2025-11-25); the SDK warns of its 2026 deprecation.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


@asynccontextmanager
async def event_node(call_timeout: float = 60.0) -> AsyncIterator[tuple[Node, EventEngine]]:
    engine = EventEngine()
    config = node_config("node-events", tools(), mcp={"enabled": True, "port": 0},
                         limits={"call_timeout_seconds": call_timeout})
    node = Node(config, engines={"python": engine})
    async with node.running():
        yield node, engine


class Heard:
    """What a client's callbacks received."""

    def __init__(self) -> None:
        self.progress: list[tuple[float, float | None, str | None]] = []
        self.logs: list[tuple[str, Any]] = []
        self.sampled: list[mcp_types.CreateMessageRequestParams] = []
        self.elicited: list[Any] = []

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append((progress, total, message))

    async def on_log(self, params: mcp_types.LoggingMessageNotificationParams) -> None:
        self.logs.append((params.level, params.data))

    async def on_sampling(self, context: ClientRequestContext,
                          params: mcp_types.CreateMessageRequestParams) -> mcp_types.CreateMessageResult:
        self.sampled.append(params)
        return mcp_types.CreateMessageResult(role="assistant", model="test-model",
                                             content=mcp_types.TextContent(type="text", text="teal"))

    async def on_elicitation(self, context: ClientRequestContext, params: Any) -> mcp_types.ElicitResult:
        self.elicited.append(params)
        return mcp_types.ElicitResult(action="accept", content={"name": "Ada"})


def stdio_params(tmp_path: Path) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "tests.mcp_interop.event_node"],
                                 cwd=str(ROOT), env={"PYTHONPATH": str(ROOT), "HOME": str(tmp_path),
                                                     "PATH": "/usr/bin:/bin"})


def text_of(result: mcp_types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, mcp_types.TextContent))


# ----- progress and logs --------------------------------------------------------------------


async def check_progress_and_logs(target: Any) -> None:
    heard = Heard()
    async with mcp.Client(target, mode="legacy", logging_callback=heard.on_log) as client:
        # Without a progress token: no progress at all; logs at the default level and above.
        assert text_of(await client.call_tool("talk", {})) == "done"
        assert heard.progress == []
        assert DEFAULT_LOG_LEVEL == "info"
        assert sorted(heard.logs, key=str) == [("error", {"said": "error"}), ("info", {"said": "info"}),
                                               ("warning", {"said": "warning"})]
        # With a token: progress; the paced reports all arrive, the burst of 100 is thinned out,
        # and the last value always arrives. (The SDK client runs each callback in a task of its
        # own, so their order is not the wire's: test_progress_is_in_order_on_the_wire checks it.)
        heard.logs.clear()
        await client.set_logging_level("warning")
        assert text_of(await client.call_tool("talk", {}, progress_callback=heard.on_progress)) == "done"
        values = [p for p, _, _ in heard.progress]
        assert {1, 2, 3, 4, 5, 105} <= set(values) and len(set(values)) == len(values), values
        assert len(values) < 5 + 100 // 2, f"the burst was not rate-limited: {len(values)} reports"
        assert (1, 105, "step 1") in heard.progress
        assert sorted(level for level, _ in heard.logs) == ["error", "warning"]
        # A level per session: debug from now on.
        heard.logs.clear()
        await client.set_logging_level("debug")
        await client.call_tool("talk", {})
        assert sorted(level for level, _ in heard.logs) == ["debug", "error", "info", "warning"]


async def test_progress_only_with_a_token_and_logs_by_the_clients_level_over_http() -> None:
    async with event_node() as (node, _):
        await check_progress_and_logs(node.mcp_url)


async def test_progress_and_logs_over_stdio(tmp_path: Path) -> None:
    await check_progress_and_logs(stdio_params(tmp_path))


async def test_progress_is_in_order_on_the_wire() -> None:
    """The call's event stream as an HTTP client reads it: progress values strictly increasing,
    the paced ones and the last one present, then the logs at the default level, then the result."""
    async with event_node() as (node, _):
        port = int(node.mcp_url.split(":")[2].split("/")[0])
        session = await raw_initialize(port)
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await raw_post(stream, port, session, {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
                "name": "talk", "arguments": {}, "_meta": {"progressToken": "tok"}}})
            with trio.fail_after(30):
                messages = await read_events(stream, until_id=7)
    kinds = [m.get("method", "result") for m in messages]
    progress = [m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"]
    assert {m["params"]["progressToken"] for m in messages if m.get("method") == "notifications/progress"} == {"tok"}
    assert progress[:5] == [1, 2, 3, 4, 5] and progress[-1] == 105 and progress == sorted(set(progress)), progress
    logs = [m["params"]["level"] for m in messages if m.get("method") == "notifications/message"]
    assert logs == ["info", "warning", "error"]
    assert kinds[-1] == "result" and kinds.index("notifications/message") > kinds.index("notifications/progress")


# ----- sampling and elicitation --------------------------------------------------------------


async def check_questions(target: Any) -> None:
    heard = Heard()
    async with mcp.Client(target, mode="legacy", sampling_callback=heard.on_sampling,
                          elicitation_callback=heard.on_elicitation) as client:
        result = await client.call_tool("ask", {})
        answers = result.structured_content or {}
        assert answers["sampling/createMessage"]["answer"]["content"] == {"type": "text", "text": "teal"}
        assert answers["sampling/createMessage"]["answer"]["model"] == "test-model"
        assert answers["elicitation/create"]["answer"] == {"action": "accept", "content": {"name": "Ada"}}
        # The client's callbacks saw the tool's own questions.
        assert heard.sampled[0].max_tokens == 20
        assert heard.elicited[0].message == "Your name?"
    # A client that declared neither capability is not asked: the tool gets what such a client
    # answers, exactly.
    async with mcp.Client(target, mode="legacy") as client:
        answers = (await client.call_tool("ask", {})).structured_content or {}
        assert answers == {"sampling/createMessage": {"code": -32600, "message": "Sampling not supported"},
                           "elicitation/create": {"code": -32600, "message": "Elicitation not supported"}}


async def test_sampling_and_elicitation_reach_the_client_over_http() -> None:
    async with event_node() as (node, engine):
        await check_questions(node.mcp_url)
        assert len(engine.asked) == 2


async def test_sampling_and_elicitation_over_stdio(tmp_path: Path) -> None:
    await check_questions(stdio_params(tmp_path))


async def test_a_client_error_answer_reaches_the_tool_unchanged() -> None:
    async def refuse(context: ClientRequestContext, params: Any) -> mcp_types.ErrorData:
        return mcp_types.ErrorData(code=-32042, message="the user said no")

    async with event_node() as (node, engine):
        async with mcp.Client(node.mcp_url, mode="legacy", sampling_callback=refuse,
                              elicitation_callback=refuse) as client:
            answers = (await client.call_tool("ask", {})).structured_content or {}
        assert answers == {"sampling/createMessage": {"code": -32042, "message": "the user said no"},
                           "elicitation/create": {"code": -32042, "message": "the user said no"}}


async def test_questions_pending_at_once_are_bounded_per_call() -> None:
    heard = Heard()
    async with event_node() as (node, _):
        async with mcp.Client(node.mcp_url, mode="legacy", sampling_callback=heard.on_sampling) as client:
            outcomes = ((await client.call_tool("ask_many", {})).structured_content or {})["outcomes"]
    # 4 pending at once reach the client; the 5th and 6th, asked meanwhile, are refused as busy.
    assert sorted(outcomes, key=str) == sorted(["test-model"] * 4 + [-32005] * 2, key=str), outcomes
    assert len(heard.sampled) == 4


# ----- cancellation --------------------------------------------------------------------------


async def test_an_sdk_cancel_stops_the_engine_and_the_node_serves_on() -> None:
    async with event_node() as (node, engine):
        async with mcp.Client(node.mcp_url, mode="legacy") as client:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.call_tool, "wait", {})
                    with trio.fail_after(10):
                        await engine.started.wait()
                    cancelled_at = trio.current_time()
                    scope.cancel()  # the SDK sends notifications/cancelled for the call
            with trio.fail_after(5):
                await engine.cancelled.wait()
            latency = trio.current_time() - cancelled_at
            assert latency < 2.0, latency
            print(f"\nfigure: SDK cancel to engine cancelled over HTTP: {latency * 1000:.0f} ms")
            # The same session, and the node, go on serving.
            assert text_of(await client.call_tool("wait", {"seconds": 0.01})) == "waited"


async def test_closing_the_http_request_stops_the_engine() -> None:
    async with event_node() as (node, engine):
        url = node.mcp_url
        port = int(url.split(":")[2].split("/")[0])
        session = await raw_initialize(port)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await raw_post(stream, port, session, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                               "params": {"name": "wait", "arguments": {}}})
        with trio.fail_after(10):
            await engine.started.wait()
            assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 200")  # the event stream
        closed_at = trio.current_time()
        await stream.aclose()
        # The client is gone with its request: the call stops.
        with trio.fail_after(5):
            await engine.cancelled.wait()
        latency = trio.current_time() - closed_at
        print(f"\nfigure: closed HTTP request to engine cancelled: {latency * 1000:.0f} ms")
        async with mcp.Client(url, mode="legacy") as client:
            assert text_of(await client.call_tool("wait", {"seconds": 0.01})) == "waited"


async def test_notifications_cancelled_over_stdio_stops_the_engine(tmp_path: Path) -> None:
    async with mcp.Client(stdio_params(tmp_path), mode="legacy") as client:
        with trio.move_on_after(1.5):  # long enough for the call to have started under load
            await client.call_tool("wait", {})
        # The engine lives in the stdio node's process: ask it (it waits for the cancel).
        assert text_of(await client.call_tool("was_cancelled", {"seconds": 10})) == "cancelled"
        assert text_of(await client.call_tool("wait", {"seconds": 0.01})) == "waited"


async def test_a_client_may_shorten_the_deadline_never_lengthen_it() -> None:
    async with event_node(call_timeout=3) as (node, _):
        async with mcp.Client(node.mcp_url, mode="legacy") as client:
            init = client.session.server_capabilities
            assert init is not None and (init.experimental or {}).get("praxis") == {"callTimeoutSeconds": 3}
            started = trio.current_time()
            result = await client.call_tool("wait", {}, meta={"praxis/timeoutSeconds": 0.5})
            assert result.is_error and "timed out" in text_of(result)
            assert trio.current_time() - started < 2.5
            result = await client.call_tool("wait", {"seconds": 0.01}, meta={"praxis/timeoutSeconds": 600})
            assert text_of(result) == "waited"


async def test_an_unknown_tool_is_still_a_protocol_error() -> None:
    async with event_node() as (node, _):
        async with mcp.Client(node.mcp_url, mode="legacy") as client:
            with pytest.raises(MCPError, match="unknown tool"):
                await client.call_tool("nope", {})


# ----- a raw HTTP client, to close a request mid-call -------------------------------------------


async def raw_post(stream: trio.SocketStream, port: int, session: str | None, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = ["POST /mcp HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
               "Accept: application/json, text/event-stream", f"Content-Length: {len(data)}",
               "MCP-Protocol-Version: 2025-11-25"]
    if session:
        headers.append(f"Mcp-Session-Id: {session}")
    await stream.send_all(("\r\n".join(headers) + "\r\n\r\n").encode() + data)


async def raw_initialize(port: int) -> str:
    """initialize + initialized, each on its own connection; returns the session ID."""
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", port) as first:
            await raw_post(first, port, None, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}})
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await first.receive_some(4096)
                assert chunk
                head += chunk
        session = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"mcp-session-id:"))
        async with await trio.open_tcp_stream("127.0.0.1", port) as second:
            await raw_post(second, port, session, {"jsonrpc": "2.0", "method": "notifications/initialized"})
            assert (await second.receive_some(4096)).startswith(b"HTTP/1.1 202")
    return session


async def read_events(stream: trio.SocketStream, until_id: int) -> list[dict[str, Any]]:
    """The JSON messages of an event stream (HTTP/1.1, chunked), up to the answer to `until_id`."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some(65536)
        assert chunk
        buffer += chunk
    head, body = buffer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower()
    data, messages = b"", []
    while True:
        while b"\r\n" not in body:  # the next chunk's size line
            more = await stream.receive_some(65536)
            assert more
            body += more
        size_line, body = body.split(b"\r\n", 1)
        size = int(size_line, 16)
        while len(body) < size + 2:
            more = await stream.receive_some(65536)
            assert more
            body += more
        data, body = data + body[:size], body[size + 2:]
        while b"\r\n\r\n" in data or b"\n\n" in data:  # one whole event
            sep = b"\r\n\r\n" if b"\r\n\r\n" in data else b"\n\n"
            event, data = data.split(sep, 1)
            lines = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
            if lines and lines[0]:
                message = json.loads(b"\n".join(lines))
                messages.append(message)
                if message.get("id") == until_id and "method" not in message:
                    return messages
