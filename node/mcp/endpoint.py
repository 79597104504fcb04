"""The node's MCP endpoint: every tool of the mesh, to any MCP client.

Two ways to serve it, both inside the node's trio loop:
- streamable HTTP at `http://<mcp.host>:<mcp.port>/mcp`, served by hypercorn's trio worker
  (`await nursery.start(endpoint.serve_http)`). It binds 127.0.0.1 by default; any other
  address requires `mcp.token`, checked as `Authorization: Bearer <token>` on every request.
  On loopback, Host and Origin must name a loopback address (DNS-rebinding protection); off
  loopback, any Host is accepted (the token protects) and a browser's Origin must be local.
- stdio (`praxis-node mcp -c CONFIG`): MCP on stdin/stdout, for desktop clients that start
  their servers as commands.

`tools/list` is the router's view of the mesh (local tools, peers' tools, forwarded MCP
servers' tools), each with its input schema. MCP tool names must match
`[A-Za-z0-9_-]{1,64}`; see `mcp_names` for the rule. Connected clients get
`notifications/tools/list_changed` when that set changes. `tools/call` validates the
arguments against the tool's schema, then goes through the router like any other call.

During a call the tool speaks to the client that made it (node/mcp/client_events.py): progress
for its `progressToken`, log messages at the level it set (`logging/setLevel`, per session),
sampling and elicitation requests it answers. The client ends a call with
`notifications/cancelled` (the SDK cancels the handler) or by closing the HTTP request that
carries it (`noting_disconnects` in node/mcp/http.py; the endpoint cancels the call then, which
the SDK alone would not). The node's call timeout is announced at `initialize`
(`capabilities.experimental.praxis.callTimeoutSeconds`); a client may shorten one call's
deadline with `_meta["praxis/timeoutSeconds"]`.

The same HTTP server answers, under the same rule (loopback Host and Origin, or the bearer
token), these GETs about the node (see `_observing`):
- `GET /healthz`: 200 `{"status": "ok", "ready": true}` once the node listens and its
  bootstrap peers were tried; 503 `{"status": "starting", "ready": false}` before;
- `GET /status`: this node, its peers, the mesh's tools and their calls, as JSON (the shape is
  documented in node/mesh/view.py);
- `GET /metrics`: the node's metrics in the Prometheus text format (node/mesh/stats.py);
- `GET /`: the live mesh page (node/mcp/page/): the mesh as a graph, its tools, recent calls,
  polled from `/status`; sent with a strict Content-Security-Policy and `nosniff`.
"""

from __future__ import annotations

import json
import logging
import weakref
from typing import Any

import mcp_types
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from mcp.server.lowlevel import Server
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import INVALID_PARAMS
from pydantic import TypeAdapter

from node.config import McpSection, is_loopback
from node.mcp.client_events import ClientEvents, connection_of, set_session_log_level
from node.mcp.http import CLIENT_GONE, ASGIApp, bearer_guard, noting_disconnects, observing, origin_guard
from node.mcp.mesh import Mesh, MeshEntry, Provider
from node.mcp.names import is_mcp_name, mcp_names
from node.mcp.schemas import schema_problem
from protocols.call_events import LOG_LEVELS
from protocols.errors import Cancelled, InvalidArguments, PraxisError, ToolNotFound
from protocols.messages import ToolResult, ToolSpec

log = logging.getLogger("praxis.mcp.server")

MCP_PATH = "/mcp"
# A resource describing this node and the peers it knows (`praxis-node peers --node URL`).
PEERS_URI = "praxis://node/peers"
NOTIFY_TIMEOUT = 2.0
# Changes this close together make one tools/list_changed: while a mesh settles cards arrive
# many a second, and each rebuilt the whole listing (a seventh of a busy 200-node worker's CPU).
NOTIFY_COALESCE_SECONDS = 0.5
_CONTENT = TypeAdapter(mcp_types.ContentBlock)
# What the endpoint tells clients at `initialize` (capabilities.experimental): the node's call
# timeout, so that `praxis-node call --node` waits exactly as long as the node's deadline.
EXPERIMENTAL_KEY = "praxis"
# A client may shorten a call's deadline (never lengthen it): `_meta` of tools/call, in seconds.
TIMEOUT_META = "praxis/timeoutSeconds"


class EndpointConfigError(ValueError):
    """The MCP endpoint cannot be served as configured (no token off loopback). A loaded config
    never gets here (`node.config` refuses it); a config built in code still cannot."""


def _input_schema(spec: ToolSpec) -> dict[str, Any]:
    schema = dict(spec.input_schema) if spec.input_schema else None
    if schema is None:
        props = {p.name: {"type": p.type, "description": p.description} for p in spec.parameters}
        schema = {"type": "object", "properties": props,
                  "required": [p.name for p in spec.parameters if p.required]}
    schema.setdefault("type", "object")
    return schema


def to_call_result(result: ToolResult) -> mcp_types.CallToolResult:
    """A ToolResult as MCP: content items unchanged, isError, structured content."""
    content = []
    for item in result.content:
        data = item.model_dump(exclude_none=True)
        try:
            content.append(_CONTENT.validate_python(data))
        except ValueError:
            # Not an MCP content block (a Go node's own kind): show it as JSON text.
            content.append(mcp_types.TextContent(type="text", text=json.dumps(data)))
    return mcp_types.CallToolResult(content=content, is_error=result.is_error,
                                    structured_content=result.structured_content)


def _traceparent(meta: Any) -> str | None:
    """The W3C trace context an MCP client sent in `_meta` (a string, or nothing)."""
    value = meta.get("traceparent") if isinstance(meta, dict) else None
    return value if isinstance(value, str) and len(value) <= 64 else None


def _provided_by(providers: tuple[Provider, ...]) -> str:
    """"this node", "MCP server time", "peer node-b 3kXy9aQz", with "+N more" when shared."""
    if not providers:
        return "nobody"
    first = providers[0]
    where = {"local": "this node", "mcp": f"MCP server {first.name}"}.get(
        first.kind, f"peer {first.name} {first.peer_id[-8:]}")
    return where + (f" +{len(providers) - 1} more" if len(providers) > 1 else "")


def _error_result(message: str) -> mcp_types.CallToolResult:
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=message)], is_error=True
    )


def _timeout_asked(meta: Any) -> float | None:
    """The deadline a client asked for in `_meta` (seconds, positive), if any."""
    value = meta.get(TIMEOUT_META) if isinstance(meta, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1e9:
        return float(value)
    return None


class _MeshServer(Server[Any]):
    """The SDK's low-level server, announcing `tools.listChanged` and the node's call timeout
    on every transport."""

    experimental: dict[str, dict[str, Any]] = {}

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> Any:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities or self.experimental or None, extensions,
        )

    def get_capabilities(self, notification_options: NotificationOptions | None = None,
                         experimental_capabilities: dict[str, dict[str, Any]] | None = None,
                         extensions: dict[str, dict[str, Any]] | None = None, *,
                         protocol_version: str | None = None) -> mcp_types.ServerCapabilities:
        # The HTTP transport builds its capabilities here, without initialization options.
        return super().get_capabilities(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities or self.experimental or None, extensions, protocol_version=protocol_version)


class MeshMcpEndpoint:
    """The MCP server over a mesh, served over HTTP or stdio."""

    def __init__(self, mesh: Mesh, config: McpSection) -> None:
        self.mesh = mesh
        self.config = config
        self.server: Server[Any] = _MeshServer(
            f"praxis-node {mesh.name}",
            version=mesh.version,
            instructions="Every tool of a praxis mesh: this node's, its peers' and the MCP "
                         "servers they forward to.",
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_read_resource=self._read_resource,
        )
        self.server.experimental = {EXPERIMENTAL_KEY: {"callTimeoutSeconds": mesh.call_timeout}}
        # `logging/setLevel`, per client session (node/mcp/client_events.py); registered
        # directly, as the SDK's keyword for it warns of the 2026 protocol's deprecation.
        self.server.add_request_handler("logging/setLevel", mcp_types.SetLevelRequestParams, self._set_level)
        self._sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        self._listed: dict[str, tuple[str, ToolSpec]] | None = {}  # None: not known what clients saw
        # The listing is rebuilt only when the mesh's tools change, not on every request.
        self._listing: dict[str, tuple[str, MeshEntry]] = {}
        self._listing_version = -1
        self.bound: list[str] = []

    # ----- the mesh as MCP -----------------------------------------------------------

    def listing(self) -> dict[str, tuple[str, ToolSpec]]:
        """MCP name -> (mesh name, spec), from the mesh's current view."""
        return {mcp_name: (mesh_name, entry.spec) for mcp_name, (mesh_name, entry) in self._mesh_listing().items()}

    def _mesh_listing(self) -> dict[str, tuple[str, MeshEntry]]:
        """MCP name -> (mesh name, the mesh's entry), rebuilt when the mesh's tools changed."""
        version = self.mesh.tools_changed.version
        if version != self._listing_version:
            mesh = self.mesh.tools()
            self._listing = {mcp_name: (mesh_name, mesh[mesh_name])
                             for mcp_name, mesh_name in mcp_names(set(mesh)).items()}
            self._listing_version = version
        return self._listing

    async def _list_tools(
        self, ctx: Any, params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        self._remember(ctx)
        tools = []
        for mcp_name, (mesh_name, entry) in sorted(self._mesh_listing().items()):
            spec = entry.spec
            # Who serves it, so a client (and the person behind it) can tell where a tool comes
            # from and tell apart two peers' definitions of one name.
            tools.append(mcp_types.Tool(
                name=mcp_name,
                title=f"{mesh_name} (from {_provided_by(entry.providers)})",
                description=spec.description or None,
                input_schema=_input_schema(spec),
                annotations=mcp_types.ToolAnnotations(idempotent_hint=spec.idempotent)
                if spec.idempotent is not None else None,
                _meta={"praxis/providers": [p.to_json() for p in entry.providers]},
            ))
        return mcp_types.ListToolsResult(tools=tools)

    async def _call_tool(
        self, ctx: Any, params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        self._remember(ctx)
        found = self._mesh_listing().get(params.name)
        if found is None and is_mcp_name(params.name) and await self.mesh.find(params.name):
            found = self._mesh_listing().get(params.name)  # not announced to us yet: the DHT knew it
        if found is None:
            message = f"unknown tool {params.name[:64]!r}: tools/list names every tool of the mesh"
            self.mesh.call_refused(params.name, ToolNotFound(message))
            raise MCPError(INVALID_PARAMS, message)
        mesh_name, entry = found
        arguments = dict(params.arguments or {})
        problem = schema_problem(_input_schema(entry.spec), arguments)
        if problem is not None:
            message = f"tool {params.name!r}: invalid arguments: {problem}"
            self.mesh.call_refused(mesh_name, InvalidArguments(message))
            return _error_result(message)
        events = ClientEvents(ctx)
        # A client that closes its HTTP request has given up: the call stops (the SDK would run
        # it to the end). `notifications/cancelled` cancels this handler's scope (the SDK).
        gone = _client_gone(ctx)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(events.pump)
            if gone is not None:
                nursery.start_soon(_cancel_when, gone, nursery.cancel_scope)
            try:
                result = await self.mesh.call_tool(
                    mesh_name, arguments, traceparent=_traceparent(params.meta), events=events,
                    timeout=_timeout_asked(params.meta))
            except PraxisError as exc:  # the mesh logged it with the call
                nursery.cancel_scope.cancel()
                return _error_result(exc.message)
            await events.flush()
            nursery.cancel_scope.cancel()
            return to_call_result(result)
        log.info("call of %s cancelled: the client closed its request", mesh_name)
        return _error_result(Cancelled(f"call of {params.name!r} cancelled: the client closed its request").message)

    async def _set_level(self, ctx: Any, params: mcp_types.SetLevelRequestParams) -> mcp_types.EmptyResult:
        if params.level not in LOG_LEVELS:  # the SDK's model allows only these already
            raise MCPError(INVALID_PARAMS, f"unknown log level; use one of {', '.join(LOG_LEVELS)}")
        self._remember(ctx)
        set_session_log_level(connection_of(ctx), params.level)
        return mcp_types.EmptyResult()

    async def _list_resources(
        self, ctx: Any, params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListResourcesResult:
        return mcp_types.ListResourcesResult(resources=[mcp_types.Resource(
            name="peers", uri=PEERS_URI, mime_type="application/json",
            description="This node and the peers it knows: names, peer IDs, addresses and tools",
        )])

    async def _read_resource(
        self, ctx: Any, params: mcp_types.ReadResourceRequestParams
    ) -> mcp_types.ReadResourceResult:
        if params.uri != PEERS_URI:
            raise MCPError(INVALID_PARAMS, f"unknown resource {params.uri[:128]!r}; resources/list names them")
        data = self.mesh.describe()
        return mcp_types.ReadResourceResult(contents=[mcp_types.TextResourceContents(
            uri=PEERS_URI, mime_type="application/json", text=json.dumps(data))])

    def _remember(self, ctx: Any) -> None:
        """Keep the client's connection (weakly) to send it tools/list_changed later."""
        # The SDK hands handlers a per-request session; the client's connection (which owns
        # the stream for server-initiated notifications) sits behind it.
        connection = connection_of(ctx)
        if connection is not None and hasattr(connection, "send_tool_list_changed"):
            self._sessions.add(connection)

    # ----- change notices --------------------------------------------------------------

    async def watch_changes(
        self, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Notify connected clients whenever the mesh's tool set (names or specs) changes."""
        self._listed = self.listing()
        task_status.started()
        seen = self.mesh.tools_changed.version
        while True:
            seen = await self.mesh.tools_changed.wait_past(seen)
            if not self._sessions:  # nobody to tell: the next client lists afresh anyway
                self._listed = None
                continue
            listed = self.listing()
            if listed == self._listed:
                continue
            self._listed = listed
            await self._notify_all()
            # The first change of a burst is told at once; the rest wait and go out as one notice.
            await trio.sleep(NOTIFY_COALESCE_SECONDS)

    async def _notify_all(self) -> None:
        for session in list(self._sessions):
            with trio.move_on_after(NOTIFY_TIMEOUT):
                try:
                    await session.send_tool_list_changed()
                except Exception as exc:  # a client that went away: forget it
                    log.debug("tools/list_changed not delivered: %s", type(exc).__name__)
                    self._sessions.discard(session)

    # ----- transports ------------------------------------------------------------------

    def http_app(self) -> ASGIApp:
        """The ASGI app: the SDK's streamable HTTP app, behind a bearer check when configured."""
        cfg = self.config
        loopback = is_loopback(cfg.host)
        if not loopback and not cfg.token:
            raise EndpointConfigError(
                f"mcp.host {cfg.host!r} is not a loopback address: set mcp.token, which clients "
                "then send as 'Authorization: Bearer <token>'"
            )
        bound = cfg.host.strip("[]")
        bound = f"[{bound}]" if ":" in bound else bound
        local = list(dict.fromkeys([bound, "127.0.0.1", "localhost", "[::1]"] if loopback
                                   else ["127.0.0.1", "localhost", "[::1]"]))
        if loopback:
            # Any web page can reach 127.0.0.1 through a DNS name it points there (DNS
            # rebinding); without a token, Host and Origin naming a loopback address are the
            # protection. Spelled out for every loopback host (the SDK does it only for three).
            security = TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=[f"{name}:*" for name in local],
                allowed_origins=[f"http://{name}:*" for name in local],
            )
        else:
            # Off loopback, clients name this machine by any of its addresses and names (or a
            # NAT's, or a proxy's), which no list here can know, so Host is not checked: the
            # bearer token is the protection, and a rebinding page never has it (a browser
            # does not send it on its own, as it would a cookie). The SDK checks Host and Origin
            # together, so its check is off and Origin is checked below.
            security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        app: ASGIApp = self.server.streamable_http_app(
            streamable_http_path=MCP_PATH, host=cfg.host, transport_security=security,
        )
        app = observing(noting_disconnects(app), self.mesh, security)
        if not loopback:
            # A request with an Origin comes from a web page. The MCP spec requires servers to
            # check it, and it still matters here: a page a user on the local network opens,
            # with a leaked token, could otherwise reach an endpoint its author cannot. Pages
            # from this machine (loopback origins, or the bound address) are let through;
            # clients that are not browsers send no Origin and are not affected.
            pages = local if bound in ("0.0.0.0", "[::]") else [*local, bound]
            app = origin_guard(app, [f"{scheme}://{name}" for name in pages for scheme in ("http", "https")])
        if cfg.token:
            app = bearer_guard(app, cfg.token)
        return app

    async def serve_http(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve streamable HTTP until cancelled; `task_status.started(url)` once listening."""
        cfg = self.config
        app = self.http_app()
        config = HypercornConfig()
        host = f"[{cfg.host}]" if ":" in cfg.host and not cfg.host.startswith("[") else cfg.host
        config.bind = [f"{host}:{cfg.port}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        config.graceful_timeout = 1.0
        async with trio.open_nursery() as nursery:
            await nursery.start(self.watch_changes)
            binds = await nursery.start(_serve, app, config)
            self.bound = list(binds)
            url = self.url
            log.info("MCP endpoint at %s", url)
            task_status.started(url)

    @property
    def url(self) -> str:
        """The endpoint's URL, once serving over HTTP."""
        if not self.bound:
            return ""
        bound = self.bound[0]  # e.g. http://127.0.0.1:8090
        return bound.rstrip("/") + MCP_PATH

    async def serve_stdio(self) -> None:
        """Serve MCP on this process's stdin/stdout until the client closes stdin."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.watch_changes)
            async with stdio_server() as (read_stream, write_stream):
                await self.server.run(
                    read_stream, write_stream, self.server.create_initialization_options()
                )
            nursery.cancel_scope.cancel()


def _client_gone(ctx: Any) -> trio.Event | None:
    """Set when the HTTP request that carries this call closes (node/mcp/http.py); None on stdio."""
    scope = getattr(getattr(ctx, "request", None), "scope", None)
    gone = scope.get(CLIENT_GONE) if isinstance(scope, dict) else None
    return gone if isinstance(gone, trio.Event) else None


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _serve(app: ASGIApp, config: HypercornConfig, *, task_status: Any) -> None:
    await hypercorn_serve(app, config, task_status=task_status)  # type: ignore[arg-type]


__all__ = ["EndpointConfigError", "Mesh", "MeshEntry", "MeshMcpEndpoint", "Provider", "is_loopback", "mcp_names"]
