"""Whole MCP servers a node forwards calls to (`mcp.servers` in the config).

`McpUpstreams` fetches each server's tool list at start, whenever the server announces
`notifications/tools/list_changed`, periodically (`mcp.refresh_seconds`), and sooner while a
server is unreachable (with backoff). A server that cannot be reached is logged and simply
contributes no tools: it never hides the other servers' tools.

Names: a tool keeps its remote name when no earlier server (in config order) lists the same
name; otherwise it is offered as `<server>_<tool>` (cut to 64 characters), so no upstream
tool is ever hidden by another. `changed` (a `ChangeSignal`) is bumped whenever the set of
tools or their specs change, so the Node can re-advertise its card and notify MCP clients.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import mcp_types
import trio

from node.config import McpServerEntry
from node.mcp.clients import McpClientPool, McpServerParams, resolve_stdio_paths
from node.runtime.signals import ChangeSignal
from protocols.call_events import NO_EVENTS, CallEvents
from protocols.errors import EngineUnavailable, PraxisError, ToolNotFound
from protocols.messages import ToolParameter, ToolResult, ToolSpec

log = logging.getLogger("praxis.mcp.upstreams")

MAX_NAME = 64
RETRY_INITIAL = 1.0
_JSON_TYPES = {"string", "number", "boolean", "object", "array"}


def spec_from_mcp(name: str, tool: mcp_types.Tool) -> ToolSpec:
    """A card ToolSpec for a remote tool: the full input schema, plus flat parameters for Go."""
    schema = dict(tool.input_schema or {"type": "object"})
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = set(schema.get("required") or [])
    params = []
    for pname, prop in (props or {}).items():
        if not isinstance(pname, str) or not pname or len(pname) > 128:
            continue
        ptype = prop.get("type") if isinstance(prop, dict) else None
        if ptype == "integer":
            ptype = "number"
        if ptype not in _JSON_TYPES:
            ptype = "string"  # unions and untyped: Go's flat parameter list cannot say more
        description = prop.get("description", "") if isinstance(prop, dict) else ""
        params.append(ToolParameter(name=pname, type=ptype,
                                    description=str(description or "")[:1024],
                                    required=pname in required))
    idempotent = tool.annotations.idempotent_hint if tool.annotations is not None else None
    return ToolSpec(
        name=name,
        description=(tool.description or tool.title or "")[:4096],
        parameters=params,
        inputSchema=schema,
        idempotent=idempotent,
    )


@dataclass
class _Server:
    entry: McpServerEntry
    params: McpServerParams
    tools: list[mcp_types.Tool] = field(default_factory=list)
    error: str | None = None  # why the last fetch failed; None when it succeeded
    fetched: bool = False
    wake: trio.Event = field(default_factory=trio.Event)


@dataclass(frozen=True)
class UpstreamTool:
    server: str
    remote_name: str
    spec: ToolSpec
    shared: bool


def server_params(entry: McpServerEntry, base_dir: Path | None = None) -> McpServerParams:
    """How to reach one `mcp.servers` entry (an `McpServerEntry` checked the rule `build` checks)."""
    command, cwd = resolve_stdio_paths(entry.command, entry.cwd, base_dir)
    return McpServerParams.build(
        entry.name, address=entry.address, transport=entry.transport, command=command,
        args=entry.args, env=entry.env, headers=entry.headers, cwd=cwd,
    )


class McpUpstreams:
    """The tools of the MCP servers listed under `mcp.servers`, and calls to them.

    Run it in the Node's nursery with `await nursery.start(upstreams.run)`: it returns once
    every server's first tool list was fetched (or failed), bounded by the connect timeout.
    """

    def __init__(
        self,
        servers: list[McpServerEntry],
        pool: McpClientPool,
        *,
        base_dir: Path | None = None,
        refresh_seconds: float = 60.0,
        list_timeout: float = 10.0,
    ) -> None:
        self.pool = pool
        self.refresh_seconds = refresh_seconds
        self.list_timeout = list_timeout
        self.changed = ChangeSignal()
        self._servers: dict[str, _Server] = {}
        for entry in servers:
            if entry.name in self._servers:
                raise ValueError(f"mcp.servers: the name {entry.name!r} appears more than once")
            self._servers[entry.name] = _Server(entry, server_params(entry, base_dir))
        self._by_params = {s.params: s for s in self._servers.values()}
        self._index: dict[str, UpstreamTool] = {}
        # Views of `_index` for the router (asked on every call): rebuilt only when it changes.
        self._tools: Mapping[str, tuple[str, ToolSpec]] = MappingProxyType({})
        self._shared: Mapping[str, ToolSpec] = MappingProxyType({})

    # ----- what the router and the card see ----------------------------------------

    @property
    def version(self) -> int:
        return self.changed.version

    async def wait_changed(self, since_version: int) -> int:
        """Return the version once the tool set has changed past `since_version`."""
        return await self.changed.wait_past(since_version)

    def tools(self) -> Mapping[str, tuple[str, ToolSpec]]:
        """Tool name -> (server name, spec with inputSchema), over every reachable server."""
        return self._tools

    def shared_tools(self) -> Mapping[str, ToolSpec]:
        """The tools of `share: true` servers: advertised to peers in this node's card."""
        return self._shared

    def status(self) -> dict[str, str]:
        """Server name -> "ok (N tools)", "not fetched yet" or why it is unreachable."""
        out = {}
        for name, server in self._servers.items():
            if server.error is not None:
                out[name] = f"unreachable: {server.error}"
            elif not server.fetched:
                out[name] = "not fetched yet"
            else:
                out[name] = f"ok ({len(server.tools)} tools)"
        return out

    async def call(
        self, name: str, arguments: dict[str, Any], deadline: float, events: CallEvents = NO_EVENTS
    ) -> ToolResult:
        tool = self._index.get(name)
        if tool is None:
            raise ToolNotFound(f"no forwarded MCP server lists tool {name!r}")
        server = self._servers[tool.server]
        try:
            return await self.pool.call_tool(server.params, tool.remote_name, arguments, deadline, events)
        except EngineUnavailable:
            server.wake.set()  # fetch its tool list again: it may be gone for good
            raise

    async def set_logging_level(self, level: str, deadline: float) -> None:
        """Pass an MCP client's `logging/setLevel` on to every forwarded server (and to their
        later sessions); a server that cannot take it is logged and skipped."""

        async def one(server: Any) -> None:
            try:
                await self.pool.set_logging_level(server.params, level, deadline)
            except PraxisError as exc:
                log.info("%s: log level not set: %s", server.params.describe(), type(exc).__name__)

        async with trio.open_nursery() as nursery:
            for server in self._servers.values():
                nursery.start_soon(one, server)

    # ----- fetching ------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.pool.add_tools_changed_listener(self._on_tools_changed)
        try:
            async with trio.open_nursery() as nursery:
                async with trio.open_nursery() as first:
                    for server in self._servers.values():
                        first.start_soon(self._fetch, server)
                task_status.started()
                for server in self._servers.values():
                    nursery.start_soon(self._watch, server)
        finally:
            self.pool.remove_tools_changed_listener(self._on_tools_changed)

    async def refresh(self) -> None:
        """Fetch every server's tool list now (and wait for it)."""
        async with trio.open_nursery() as nursery:
            for server in self._servers.values():
                nursery.start_soon(self._fetch, server)

    def _on_tools_changed(self, params: McpServerParams) -> None:
        server = self._by_params.get(params)
        if server is not None:
            server.wake.set()

    async def _watch(self, server: _Server) -> None:
        """Fetch again on a change notice, periodically, and with backoff while unreachable."""
        retry = RETRY_INITIAL
        while True:
            wait = self.refresh_seconds if server.error is None else min(retry, self.refresh_seconds)
            with trio.move_on_after(wait):
                await server.wake.wait()
            server.wake = trio.Event()
            await self._fetch(server)
            retry = RETRY_INITIAL if server.error is None else retry * 2

    async def _fetch(self, server: _Server) -> None:
        deadline = trio.current_time() + self.list_timeout
        was = server.error
        try:
            tools = await self.pool.list_tools(server.params, deadline)
        except PraxisError as exc:
            server.tools = []
            server.error = exc.message
            if was != exc.message:
                log.warning("forwarded %s offers no tools for now: %s",
                            server.params.describe(), exc.message)
        else:
            server.tools = tools
            server.error = None
            if was is not None or not server.fetched:
                log.info("forwarded %s offers %d tool(s)", server.params.describe(), len(tools))
        server.fetched = True
        self._reindex()

    def _reindex(self) -> None:
        index: dict[str, UpstreamTool] = {}
        for server in self._servers.values():  # config order decides who keeps a bare name
            for tool in server.tools:
                name = tool.name
                if name in index or not name:
                    name = f"{server.entry.name}_{tool.name}"[:MAX_NAME]
                    if name in index:
                        log.warning("forwarded %s: tool %r collides with another even as %r; "
                                    "skipped", server.params.describe(), tool.name, name)
                        continue
                try:
                    spec = spec_from_mcp(name, tool)
                except ValueError as exc:  # pydantic's ValidationError: a name or schema past the card's bounds
                    log.warning("forwarded %s: tool %r cannot be offered: %s", server.params.describe(),
                                tool.name[:64], str(exc).splitlines()[0][:200])
                    continue
                index[name] = UpstreamTool(server.entry.name, tool.name, spec, server.entry.share)
        if index != self._index:
            self._index = index
            self._tools = MappingProxyType({name: (t.server, t.spec) for name, t in index.items()})
            self._shared = MappingProxyType({name: t.spec for name, t in index.items() if t.shared})
            self.changed.bump()
