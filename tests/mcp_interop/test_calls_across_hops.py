"""A call is a conversation, end to end: a real MCP SDK client on node A's endpoint, the work two
hops away on node B (its own process tool, or server-everything / a small SDK server that B
forwards to). What the work says during the call reaches the client; what the client answers
reaches the work; when the client gives up, the work stops.

    MCP client --HTTP--> A --/praxis/tool/1.1.0--> B --> process / MCP server
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mcp
import mcp_types
import trio

from node.app import Node
from tests.helpers import cancel_once_started, make_node, node_config, wait_until
from tests.mcp_interop.servers import RunningServer, everything, python

ROOT = Path(__file__).resolve().parents[2]
CHATTY = str(Path(__file__).with_name("chatty_server.py"))
GONE_WITHIN = 5.0  # bound on waiting for a cancelled process to disappear (the bench measures the real figure)

# A process tool that reports progress on stderr (praxis:progress N/TOTAL message) and answers.
COUNTER = {
    "name": "counter",
    "engine": "process",
    "allow_peers": ["*"],  # a host process is open to peers only when its operator says so
    "params": [{"name": "steps", "type": "number", "required": True}],
    "engineSpec": {"command": ["sh", "-c",
                               'i=1; while [ "$i" -le "$steps" ]; do echo "praxis:progress $i/$steps step $i" >&2; '
                               'sleep 0.15; i=$((i+1)); done; echo counted'],
                   "timeout": 60},
}
# A process tool that writes its PID and then sleeps: the test can see whether it still runs.
SLEEPER = {
    "name": "sleeper",
    "engine": "process",
    "allow_peers": ["*"],
    "engineSpec": {"command": ["sh", "-c", "echo $$ > sleeper.pid; exec sleep 30"], "timeout": 60},
}


@dataclass
class Hops:
    a: Node
    b: Node
    folder: Path
    upstream: RunningServer

    @property
    def url(self) -> str:
        assert self.a.mcp_url
        return self.a.mcp_url


@asynccontextmanager
async def hops(tmp_path: Path) -> AsyncIterator[Hops]:
    """A (endpoint, no tools) <- B (process tools; server-everything and the chatty server, shared)."""
    async with AsyncExitStack() as stack:
        upstream = await stack.enter_async_context(everything("streamableHttp"))
        a = make_node(node_config("node-a", mcp={"enabled": True, "port": 0}))
        await stack.enter_async_context(a.running())
        hang_file = tmp_path / "hang.log"
        config_b = node_config(
            "node-b", [COUNTER, SLEEPER], bootstrap=a.addrs[:1],
            engines={"process": {"enabled": True}},
            mcp={"servers": [
                {"name": "everything", "address": upstream.url, "share": True},
                {"name": "chatty", "command": python(), "args": [CHATTY], "share": True,
                 "env": {"PRAXIS_TEST_HANG_FILE": str(hang_file)}},
            ]},
        ).with_base_dir(tmp_path)
        b = make_node(config_b)
        await stack.enter_async_context(b.running())
        wanted = {"counter", "sleeper", "trigger-long-running-operation", "trigger-sampling-request",
                  "trigger-elicitation-request", "chatter", "hang"}
        await wait_until(lambda: wanted <= set(a.router.tools()), a.directory.changed, timeout=60)
        yield Hops(a, b, tmp_path, upstream)


async def wait_for_file(path: Path, limit: float = 30.0) -> str:
    with trio.fail_after(limit):
        while not path.exists() or not path.read_text().strip():
            await trio.sleep(0.05)
    return path.read_text()


async def wait_gone(pid: int, limit: float = GONE_WITHIN) -> float:
    """Seconds until `pid` no longer runs (fails the test past `limit`)."""
    started = trio.current_time()
    with trio.fail_after(limit):
        while Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid):
            await trio.sleep(0.02)
    return trio.current_time() - started


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0].lower()
    except (OSError, IndexError):
        return "zombie"  # gone between the two reads


def text_of(result: mcp_types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, mcp_types.TextContent))


async def test_progress_crosses_two_hops_from_an_upstream_and_from_a_process(tmp_path: Path) -> None:
    async with hops(tmp_path) as h, mcp.Client(h.url, mode="legacy") as client:
        seen: dict[str, list[tuple[float, float | None]]] = {"upstream": [], "process": []}

        def recorder(key: str) -> Any:
            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                seen[key].append((progress, total))
            return on_progress

        result = await client.call_tool("trigger-long-running-operation", {"duration": 1, "steps": 4},
                                        progress_callback=recorder("upstream"))
        assert not result.is_error and "Steps: 4" in text_of(result)
        result = await client.call_tool("counter", {"steps": 5}, progress_callback=recorder("process"))
        assert not result.is_error and text_of(result).strip() == "counted", text_of(result)
    # Every report crossed both hops (the SDK client runs each callback in its own task, so
    # compare as sets; the endpoint's own tests check the order on the raw stream).
    assert sorted(seen["upstream"]) == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert sorted(seen["process"]) == [(i, 5) for i in range(1, 6)]


async def test_sampling_and_elicitation_are_answered_by_the_client_two_hops_away(tmp_path: Path) -> None:
    asked: list[str] = []

    async def sampling(context: Any, params: mcp_types.CreateMessageRequestParams) -> mcp_types.CreateMessageResult:
        asked.append("sampling")
        return mcp_types.CreateMessageResult(
            role="assistant", content=mcp_types.TextContent(type="text", text="answer-from-the-client-7f3"),
            model="test-model", stop_reason="endTurn")

    async def elicitation(context: Any, params: Any) -> mcp_types.ElicitResult:
        asked.append("elicitation")
        return mcp_types.ElicitResult(action="accept", content={"name": "Ada Lovelace"})

    async with hops(tmp_path) as h:
        async with mcp.Client(h.url, mode="legacy", sampling_callback=sampling,
                              elicitation_callback=elicitation) as client:
            sampled = await client.call_tool("trigger-sampling-request", {"prompt": "hello", "maxTokens": 10})
            assert not sampled.is_error and "answer-from-the-client-7f3" in text_of(sampled)
            elicited = await client.call_tool("trigger-elicitation-request", {})
            assert not elicited.is_error and "Ada Lovelace" in text_of(elicited)
        assert asked == ["sampling", "elicitation"]
        # A client that declared neither capability: the upstream gets what that client would say.
        async with mcp.Client(h.url, mode="legacy") as plain:
            refused = await plain.call_tool("trigger-sampling-request", {"prompt": "hello", "maxTokens": 10})
            assert refused.is_error and "Sampling not supported" in text_of(refused)
            refused = await plain.call_tool("trigger-elicitation-request", {})
            assert refused.is_error and "Elicitation not supported" in text_of(refused)


async def test_an_upstreams_log_messages_reach_the_client_two_hops_away(tmp_path: Path) -> None:
    logs: list[str] = []
    three = trio.Event()

    async def on_log(params: mcp_types.LoggingMessageNotificationParams) -> None:
        logs.append(str(params.data))
        if len(logs) >= 3:
            three.set()

    async with hops(tmp_path) as h, mcp.Client(h.url, mode="legacy", logging_callback=on_log) as client:
        result = await client.call_tool("chatter", {"count": 3})
        assert not result.is_error
        with trio.fail_after(10):
            await three.wait()
    assert sorted(logs) == ["chat 1", "chat 2", "chat 3"]


async def test_a_client_cancel_stops_a_process_and_an_upstream_call_two_hops_away(tmp_path: Path) -> None:
    async with hops(tmp_path) as h, mcp.Client(h.url, mode="legacy") as client:
        pid, _ = await cancel_once_started(lambda: client.call_tool("sleeper", {}),
                                           lambda: wait_for_file(h.folder / "sleeper.pid"))
        await wait_gone(int(pid))
        await cancel_once_started(lambda: client.call_tool("hang", {}), lambda: wait_for_file(h.folder / "hang.log"))
        with trio.fail_after(GONE_WITHIN):
            while "cancelled" not in (h.folder / "hang.log").read_text():
                await trio.sleep(0.02)
        # Nothing was retried, and the mesh keeps serving the same client.
        assert (h.folder / "hang.log").read_text().split() == ["started", "cancelled"]
        result = await client.call_tool("counter", {"steps": 1})
        assert text_of(result).strip() == "counted"


async def test_ctrl_c_on_the_cli_stops_a_process_two_hops_away(tmp_path: Path) -> None:
    async with hops(tmp_path) as h:
        cli = await trio.lowlevel.open_process(
            [sys.executable, "-m", "node.cli.main", "call", "--node", h.url, "sleeper"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            pid = int(await wait_for_file(h.folder / "sleeper.pid"))
            cli.send_signal(signal.SIGINT)
            await wait_gone(pid)
            with trio.fail_after(GONE_WITHIN):
                await cli.wait()
        finally:
            if cli.returncode is None:
                cli.kill()
                await cli.wait()
        assert cli.stdout is not None and cli.stderr is not None
        err = (await cli.stderr.receive_some(65536)).decode()
        assert cli.returncode == 130, err
        assert err.splitlines()[-1] == "interrupted: the call was cancelled"
        assert await cli.stdout.receive_some(65536) == b""
