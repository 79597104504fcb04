"""A pool of MCP client sessions: one per upstream server, opened lazily, shared by every call.

`McpClientPool` runs inside a trio nursery it owns (`async with McpClientPool() as pool:`,
entered by the Node): each session is held open by one task of that nursery, because MCP
sessions are async context managers whose transport tasks must live as long as the session.
A session that dies (server killed, transport error, stdio process gone) is dropped, and the
next call opens a new one. Connecting has its own timeout; a call is bounded by the caller's
absolute deadline (`trio.current_time()`).

During a call, what the server says reaches the call's `CallEvents` (`node.mcp.session_events`
states the routing rule): progress, log notifications, sampling and elicitation requests (the
sessions declare both capabilities). A call whose scope is cancelled sends the server
`notifications/cancelled` for its request (the SDK does it: mcp 2.3.0's courtesy cancel) and
leaves the session open for other calls; nothing is retried. `set_logging_level` passes a
level on to a server (and again to every later session to it).

Secrets: headers and environment values are never logged and never appear in errors. A
server is named in messages by its configured name and a redacted address (no userinfo, no
query string; for stdio only the command's base name).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx2
import mcp
import mcp_types
import trio
from mcp.client.sse import sse_client
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types.jsonrpc import CONNECTION_CLOSED

from node.config import mcp_server_problem
from node.mcp.session_events import CallInFlight, SessionCalls
from node.runtime.tracing import current_traceparent
from protocols.call_events import NO_EVENTS, CallEvents
from protocols.errors import EngineUnavailable, ToolExecutionError, ToolTimeout
from protocols.messages import ContentItem, ToolResult

log = logging.getLogger("praxis.mcp.clients")
# `logging/setLevel` is how every handshake-era server (the ones this pool speaks to, in
# legacy mode) is told a level; the SDK warns that newer protocol versions drop it.
warnings.filterwarnings("ignore", message="The logging capability is deprecated", category=MCPDeprecationWarning)

Transport = Literal["streamable-http", "sse", "stdio"]
TRANSPORTS: tuple[Transport, ...] = ("streamable-http", "sse", "stdio")
DEFAULT_CONNECT_TIMEOUT = 10.0
# An idle legacy-SSE stream is closed by the client after this long without an event; the
# session is then reopened on the next call.
SSE_IDLE_TIMEOUT = 300.0
CLOSE_TIMEOUT = 3.0

ToolsChangedCallback = Callable[["McpServerParams"], None]


def resolve_stdio_paths(command: str | None, cwd: str | None, base_dir: Path | None) -> tuple[str | None, str | None]:
    """A relative command path (./server.py) and cwd resolve against the config file's folder."""
    if command is None or base_dir is None:
        return command, cwd
    if "/" in command and not Path(command).is_absolute():
        command = str(base_dir / command)
    return command, str(base_dir / cwd) if cwd else str(base_dir)


@dataclass(frozen=True)
class McpServerParams:
    """How to reach one MCP server. Hashable: the pool keeps one session per distinct value.

    `name` (what messages call the server) takes no part in equality, so contracts that point
    at the same server share one session.
    """

    name: str = field(compare=False)
    transport: Transport
    url: str | None = None
    command: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold secrets
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # secret
    cwd: str | None = None

    @classmethod
    def build(
        cls,
        name: str,
        *,
        address: str | None = None,
        transport: str | None = None,
        command: str | None = None,
        args: list[str] | tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> McpServerParams:
        """Validate one server's settings; raise ValueError saying what is wrong (no secrets).

        The rule is the config's (`node.config.mcp_server_problem`), so an `mcp.servers` entry
        or a `remote-mcp` engineSpec that loaded always builds.
        """
        problem = mcp_server_problem(address=address, transport=transport, command=command,
                                     headers=headers, env=env)
        if problem:
            raise ValueError(problem)
        if command:
            return cls(name, "stdio", command=command, args=tuple(str(a) for a in args),
                       env=tuple(sorted((env or {}).items())), cwd=cwd)
        assert address is not None
        kind: Transport = "sse" if transport == "sse" else "streamable-http"
        return cls(name, kind, url=address, headers=tuple(sorted((headers or {}).items())))

    def describe(self) -> str:
        """`'name' (where)`, safe for logs and error messages."""
        if self.transport == "stdio":
            assert self.command is not None
            return f"MCP server {self.name!r} (stdio: {os.path.basename(self.command)})"
        assert self.url is not None
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        safe = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        return f"MCP server {self.name!r} ({self.transport} {safe})"


def result_from_mcp(result: mcp_types.CallToolResult) -> ToolResult:
    """The remote result, unchanged: every content item (text, image, resource...), isError,
    and structured content."""
    content = [
        ContentItem.model_validate(item.model_dump(by_alias=True, exclude_none=True, mode="json"))
        for item in result.content
    ]
    structured = result.structured_content
    if structured is not None and not isinstance(structured, dict):
        structured = {"result": structured}
    return ToolResult(content=content, isError=bool(result.is_error), structuredContent=structured)


def _exception_summary(exc: BaseException) -> str:
    """A short description of why a connection failed: exception types and OS messages only.

    httpx errors can carry request details, so only their type and the first line of their
    message (which names host and port, never headers) are used.
    """
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e)

    walk(exc)
    parts = []
    for leaf in leaves[:3]:
        if isinstance(leaf, OSError) and leaf.strerror:
            parts.append(f"{type(leaf).__name__}: {leaf.strerror}")
        elif isinstance(leaf, httpx2.HTTPStatusError):
            parts.append(f"HTTP {leaf.response.status_code}")
        elif isinstance(leaf, httpx2.HTTPError | MCPError | trio.TooSlowError):
            first = str(leaf).splitlines()[0] if str(leaf) else ""
            parts.append(f"{type(leaf).__name__}: {first}"[:200] if first else type(leaf).__name__)
        else:
            parts.append(type(leaf).__name__)
    return "; ".join(dict.fromkeys(parts)) or type(exc).__name__


class _Connection:
    """One session and the task that holds it open."""

    def __init__(self, params: McpServerParams, connect_deadline: float) -> None:
        self.params = params
        self.connect_deadline = connect_deadline
        self.client: mcp.Client | None = None
        self.ready = trio.Event()  # set once connected, or once connecting failed
        self.done = trio.Event()  # set when the holding task has exited
        self.error: str | None = None
        self.dead = False
        self.scope = trio.CancelScope()
        self.calls: set[trio.CancelScope] = set()
        self.in_flight = SessionCalls(params.describe())

    def alive(self) -> bool:
        if self.dead:
            return False
        if self.client is None:
            return not self.ready.is_set()  # still connecting
        # The SDK's dispatcher flags itself closed when the server's stream ends (EOF of a
        # stdio server that exited, a dropped SSE stream); a new session is needed then.
        dispatcher = getattr(self.client.session, "_dispatcher", None)
        return not bool(getattr(dispatcher, "_closed", False))

    def kill(self) -> None:
        """Stop holding this session; calls still running on it fail with EngineUnavailable."""
        self.dead = True
        self.scope.cancel()


class McpClientPool:
    """One MCP client session per upstream server, for the whole life of the pool.

    Use as `async with McpClientPool() as pool:`; leaving it closes every session (stdio
    servers are stopped). `sessions_opened` counts sessions ever opened (for tests and stats).
    """

    def __init__(
        self,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        on_tools_changed: ToolsChangedCallback | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self._tools_changed_listeners: list[ToolsChangedCallback] = []
        if on_tools_changed is not None:
            self._tools_changed_listeners.append(on_tools_changed)
        self.sessions_opened = 0
        self._connections: dict[McpServerParams, _Connection] = {}
        self._nursery: trio.Nursery | None = None
        self._stack: AsyncExitStack | None = None
        self._log_levels: dict[McpServerParams, str] = {}

    # ----- lifetime ----------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[McpClientPool]:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield self
            finally:
                self._nursery = None
                for conn in self._connections.values():
                    conn.kill()
                self._connections.clear()

    async def __aenter__(self) -> McpClientPool:
        stack = AsyncExitStack()
        await stack.enter_async_context(self.running())
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        assert stack is not None
        return await stack.__aexit__(exc_type, exc, tb)

    def add_tools_changed_listener(self, callback: ToolsChangedCallback) -> None:
        """Call `callback(params)` whenever a server announces `tools/list_changed`."""
        self._tools_changed_listeners.append(callback)

    def remove_tools_changed_listener(self, callback: ToolsChangedCallback) -> None:
        if callback in self._tools_changed_listeners:
            self._tools_changed_listeners.remove(callback)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the pool as a task of someone else's nursery (`await nursery.start(pool.run)`)."""
        async with self.running():
            task_status.started()
            await trio.sleep_forever()

    def forget(self, params: McpServerParams) -> None:
        """Close the session to this server, if any (the next call opens a new one)."""
        conn = self._connections.pop(params, None)
        if conn is not None:
            conn.kill()

    def is_connected(self, params: McpServerParams) -> bool:
        conn = self._connections.get(params)
        return conn is not None and conn.client is not None and conn.alive()

    # ----- calls -------------------------------------------------------------------

    async def call_tool(
        self, params: McpServerParams, tool: str, arguments: dict[str, Any], deadline: float,
        events: CallEvents = NO_EVENTS,
    ) -> ToolResult:
        """Call a tool on the server; its result (isError included) comes back unchanged.

        Raises `EngineUnavailable` when the server cannot be reached or the session breaks
        during the call, `ToolTimeout` when the deadline passes first, and
        `ToolExecutionError` when the server answers the request with a protocol error.
        """
        what = f"tool {tool!r} on {params.describe()}"
        # The caller's trace goes on to the server (W3C trace context in `_meta`).
        traceparent = current_traceparent()
        meta: Any = {"traceparent": traceparent} if traceparent else None

        async def send(client: mcp.Client, call: CallInFlight | None) -> Any:
            assert call is not None
            return await client.call_tool(tool, arguments, progress_callback=call.progress, meta=meta)

        result = await self._request(params, deadline, what, send, events=events)
        assert isinstance(result, mcp_types.CallToolResult)
        return result_from_mcp(result)

    async def set_logging_level(self, params: McpServerParams, level: str, deadline: float) -> bool:
        """Ask the server to send log messages at `level` and above (now and on every later
        session); False when it declares no logging capability."""
        self._log_levels[params] = level

        async def send(client: mcp.Client, call: CallInFlight | None) -> Any:
            if client.server_capabilities.logging is None:
                return False
            await client.set_logging_level(level)  # type: ignore[arg-type]
            return True

        return bool(await self._request(params, deadline, f"the log level of {params.describe()}", send))

    async def list_tools(self, params: McpServerParams, deadline: float) -> list[mcp_types.Tool]:
        """Every tool the server lists (all pages, bounded)."""
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(100):  # a server whose cursor never ends cannot hang us

            async def fetch(client: mcp.Client, call: CallInFlight | None, cursor: str | None = cursor) -> Any:
                return await client.list_tools(cursor=cursor, cache_mode="bypass")

            page = await self._request(
                params, deadline, f"the tool list of {params.describe()}", fetch
            )
            assert isinstance(page, mcp_types.ListToolsResult)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                return tools
        raise ToolExecutionError(f"{params.describe()}: the tool list has more than 100 pages")

    async def _request(
        self,
        params: McpServerParams,
        deadline: float,
        what: str,
        send: Callable[[mcp.Client, CallInFlight | None], Any],
        *,
        events: CallEvents | None = None,
    ) -> Any:
        """Send one request on the session; with `events`, it is a call whose events are routed."""
        conn = await self._connected(params, deadline)
        client = conn.client
        assert client is not None
        with trio.move_on_at(deadline) as timeout_scope:
            lost = trio.CancelScope()
            conn.calls.add(lost)
            try:
                with lost:
                    if events is None:
                        return await send(client, None)
                    with conn.in_flight.call(events, deadline) as call:
                        return await call.run(lambda: send(client, call))
            except MCPError as exc:
                if exc.code == CONNECTION_CLOSED:
                    conn.kill()
                    raise EngineUnavailable(
                        f"{what}: the connection closed during the call; the next call reconnects"
                    ) from None
                raise ToolExecutionError(f"{what}: the server answered with error {exc.code}: "
                                         f"{exc.error.message}") from None
            except (httpx2.HTTPError, OSError, anyio.BrokenResourceError,
                    anyio.ClosedResourceError, anyio.EndOfStream) as exc:
                conn.kill()
                raise EngineUnavailable(
                    f"{what}: the connection failed ({_exception_summary(exc)}); "
                    "the next call reconnects"
                ) from None
            finally:
                conn.calls.discard(lost)
            # Only reached when `lost` was cancelled: the session died under the call.
            raise EngineUnavailable(
                f"{what}: the connection was lost during the call ({conn.error or 'closed'}); "
                "the next call reconnects"
            )
        assert timeout_scope.cancelled_caught
        raise ToolTimeout(f"{what}: no answer before the deadline")

    async def _connected(self, params: McpServerParams, deadline: float) -> _Connection:
        """The live session to this server, connecting first when there is none."""
        if self._nursery is None:
            raise EngineUnavailable(f"{params.describe()}: the MCP client pool is not running")
        conn = self._connections.get(params)
        if conn is None or not conn.alive():
            if conn is not None:
                conn.kill()
            conn = _Connection(params, trio.current_time() + self.connect_timeout)
            self._connections[params] = conn
            self._nursery.start_soon(self._hold, conn)
        with trio.move_on_at(min(deadline, conn.connect_deadline)):
            await conn.ready.wait()
        if not conn.ready.is_set():
            if trio.current_time() >= deadline and deadline < conn.connect_deadline:
                raise ToolTimeout(f"{params.describe()}: the deadline passed while connecting")
            conn.kill()
            raise EngineUnavailable(
                f"{params.describe()}: cannot connect within {self.connect_timeout:g} s"
            )
        if conn.client is None:
            if self._connections.get(params) is conn:
                del self._connections[params]  # the next call tries again
            raise EngineUnavailable(f"{params.describe()}: cannot connect: {conn.error}")
        return conn

    async def _hold(self, conn: _Connection) -> None:
        """Open the session, keep it open until it dies or is killed, then close it.

        The connect timeout is the deadline of the scope that holds the session, lifted once
        connected: a narrower scope around the connect alone would be left while the
        session's task group still runs inside it.
        """
        params = conn.params
        connected = False
        conn.scope.deadline = conn.connect_deadline
        try:
            with conn.scope:
                async with self._client(conn) as client:
                    connected = True
                    conn.scope.deadline = math.inf
                    self.sessions_opened += 1
                    conn.client = client
                    await self._apply_log_level(conn, client)
                    conn.ready.set()
                    log.info("connected to %s", params.describe())
                    await trio.sleep_forever()
            if not connected and not conn.dead:
                conn.error = f"no session within {self.connect_timeout:g} s"
                log.warning("%s: cannot connect: %s", params.describe(), conn.error)
        except Exception as exc:  # any transport failure ends this session only
            conn.error = _exception_summary(exc)
            if connected:
                log.warning("%s: session lost: %s", params.describe(), conn.error)
            else:
                log.warning("%s: cannot connect: %s", params.describe(), conn.error)
        finally:
            conn.dead = True
            conn.client = None
            conn.ready.set()
            for scope in list(conn.calls):
                scope.cancel()
            conn.done.set()
            if self._connections.get(params) is conn:
                del self._connections[params]

    async def _apply_log_level(self, conn: _Connection, client: mcp.Client) -> None:
        """A new session gets the level set earlier for its server (within the connect time)."""
        level = self._log_levels.get(conn.params)
        if level is None or client.server_capabilities.logging is None:
            return
        with trio.move_on_after(self.connect_timeout) as scope:
            try:
                await client.set_logging_level(level)  # type: ignore[arg-type]
            except MCPError as exc:
                log.warning("%s: refused the log level (error %s)", conn.params.describe(), exc.code)
        if scope.cancelled_caught:
            log.warning("%s: no answer to the log level within %g s", conn.params.describe(), self.connect_timeout)

    def _client(self, conn: _Connection) -> AbstractAsyncContextManager[mcp.Client]:
        params = conn.params
        calls = conn.in_flight
        client = mcp.Client(
            self._transport(params),
            mode="legacy",  # the initialize handshake: every server generation understands it
            cache=None,
            # Declaring these makes servers ask; the answers come from the call's own caller.
            sampling_callback=calls.on_sampling,
            elicitation_callback=calls.on_elicitation,
            logging_callback=calls.on_log,
            message_handler=self._message_handler(params),
            client_info=mcp_types.Implementation(name="praxis-node", version="0.1.0"),
        )
        return client

    def _transport(self, params: McpServerParams) -> Any:
        headers = dict(params.headers)
        if params.transport == "stdio":
            assert params.command is not None
            env = get_default_environment()
            env.update(dict(params.env))
            return mcp.StdioServerParameters(
                command=params.command, args=list(params.args), env=env, cwd=params.cwd
            )
        assert params.url is not None
        if params.transport == "sse":
            return sse_client(params.url, headers=headers or None, timeout=self.connect_timeout,
                              sse_read_timeout=SSE_IDLE_TIMEOUT)
        http = create_mcp_http_client(
            headers=headers or None,
            timeout=httpx2.Timeout(self.connect_timeout, read=None),
        )
        return owned_http_transport(params.url, http)

    def _message_handler(self, params: McpServerParams) -> Any:
        async def handle(message: Any) -> None:
            if isinstance(message, mcp_types.ToolListChangedNotification):
                log.info("%s announced a changed tool list", params.describe())
                for listener in list(self._tools_changed_listeners):
                    listener(params)
            await trio.lowlevel.checkpoint()

        return handle


@asynccontextmanager
async def owned_http_transport(url: str, http: httpx2.AsyncClient) -> AsyncIterator[Any]:
    """Streamable HTTP over an httpx client this transport owns (closed with it)."""
    async with http, streamable_http_client(url, http_client=http) as streams:
        yield streams
