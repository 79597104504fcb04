"""tools/list_changed pacing: the first change of a burst is told at once, the rest of the burst
as one notice `NOTIFY_COALESCE_SECONDS` later. Run on trio's MockClock, which moves only when
the test moves it: "at once" means with the clock standing still.

The mesh and the client's connection are stand-ins (the endpoint's `Mesh` protocol and an object
with the SDK session's `send_tool_list_changed`); the real SDK client receiving these notices
over HTTP is tests/mcp_interop/test_endpoint.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio
import trio.testing

from node.config import McpSection
from node.mcp.endpoint import NOTIFY_COALESCE_SECONDS, MeshMcpEndpoint
from node.mcp.mesh import MeshEntry, Provider
from node.runtime.signals import ChangeSignal
from protocols.messages import ToolSpec


class ToolsOnlyMesh:
    """Stand-in mesh: a set of tool names the test changes; nothing is ever called."""

    name = "stand-in"
    version = "0"
    call_timeout = 5.0

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.tools_changed = ChangeSignal()

    def add(self, name: str) -> None:
        self.names.add(name)
        self.tools_changed.bump()

    def tools(self) -> Mapping[str, MeshEntry]:
        return {n: MeshEntry(ToolSpec(name=n), (Provider("local", "stand-in"),)) for n in self.names}

    async def find(self, name: str) -> bool:
        return False

    async def call_tool(self, name: str, arguments: dict[str, Any], **_: Any) -> Any:
        raise AssertionError("not called in these tests")

    def describe(self) -> dict[str, Any]:
        return {}


class CountingConnection:
    """Stand-in for the SDK's server connection: counts the notices it is asked to send."""

    def __init__(self) -> None:
        self.notices = 0

    async def send_tool_list_changed(self) -> None:
        self.notices += 1


async def test_first_change_told_at_once_and_a_burst_after_it_as_one_notice(
    mock_clock: trio.testing.MockClock,
) -> None:
    mesh = ToolsOnlyMesh()
    endpoint = MeshMcpEndpoint(mesh, McpSection(port=0))  # type: ignore[arg-type]
    connection = CountingConnection()
    endpoint._sessions.add(connection)  # what `_remember` does when the client lists tools
    async with trio.open_nursery() as nursery:
        await nursery.start(endpoint.watch_changes)
        mesh.add("one")
        await trio.testing.wait_all_tasks_blocked()
        assert connection.notices == 1  # told with the clock standing still
        for name in ("two", "three", "four"):
            mesh.add(name)
            await trio.testing.wait_all_tasks_blocked()
        assert connection.notices == 1  # the burst waits for the pause
        mock_clock.jump(NOTIFY_COALESCE_SECONDS)
        await trio.testing.wait_all_tasks_blocked()
        assert connection.notices == 2  # ... and goes out as one notice
        mock_clock.jump(NOTIFY_COALESCE_SECONDS)
        await trio.testing.wait_all_tasks_blocked()
        assert connection.notices == 2  # nothing changed since: nothing more to tell
        nursery.cancel_scope.cancel()
