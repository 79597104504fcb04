"""A running node through its MCP endpoint: the `RemoteNode` behind `praxis-node ... --node URL`.

No libp2p, no MCP SDK, no pydantic here: `--node` needs only a few JSON-RPC requests over HTTP
(node/cli/mcp_http.py), so that `tools --node` and `call --node` start in a fraction of a second.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from node.cli.mcp_http import HttpMcpClient, JsonRpcError, TimedOut
from node.cli.remote import (
    SETUP_TIMEOUT,
    SOURCE_ENDPOINT,
    CallResult,
    PeerRow,
    ProgressFn,
    ToolRow,
    parameters_from_schema,
    sorted_peers,
    sorted_tools,
)

PROVIDERS_META = "praxis/providers"  # tools/list: each tool's providers, [{kind, name, peerId}]
PEERS_URI = "praxis://node/peers"  # node/mcp/endpoint.py's peers resource (a test checks they agree)
NO_PROVIDER = "no provider for tool "  # the router's NoProvider message, as the endpoint passes it on
INVALID_PARAMS = -32602  # the endpoint's code for an unknown tool name
STATUS_PATH = "/status"  # beside /mcp on the node's HTTP port (node/mcp/endpoint.py)
TIMEOUT_META = "praxis/timeoutSeconds"  # tools/call `_meta`: a shorter deadline (node/mcp/endpoint.py)
DEFAULT_CALL_TIMEOUT = 60.0  # a node that does not announce its call timeout: the default one
ANSWER_GRACE = 5.0  # seconds past the node's own deadline for its answer (a timeout error) to arrive
NODE_GRACE = 1.0  # the node's deadline is this much past the CLI's: the CLI's cancel ends the call


def mesh_name_of(tool: Mapping[str, Any]) -> str:
    """The mesh's name for a listed tool: its title is "<mesh name> (from <provider>)".

    A mesh name has no whitespace, so it ends where the title's first " (from " starts.
    """
    name = str(tool.get("name", ""))
    title = tool.get("title")
    if not isinstance(title, str) or not title:
        return name
    head, sep, _ = title.partition(" (from ")
    return head if sep and head else name


class EndpointRemote:
    """The node as its MCP endpoint shows it: `tools/list`, `tools/call` and the peers resource."""

    def __init__(self, client: HttpMcpClient) -> None:
        self.client = client
        self.started = trio.current_time()  # the command's start: --timeout counts from it
        self._self: PeerRow | None = None
        self._listing: list[dict[str, Any]] | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, token: str | None, timeout: float | None) -> AsyncIterator[EndpointRemote]:
        started = trio.current_time()
        setup = timeout if timeout is not None else SETUP_TIMEOUT
        client = HttpMcpClient(url, token, started + setup, setup)
        try:
            await client.open()
            remote = cls(client)
            remote.started = started
            yield remote
        finally:
            await client.close()

    async def _listed(self) -> list[dict[str, Any]]:
        """The endpoint's tools/list, asked once per command."""
        if self._listing is None:
            self._listing = [t for t in await self.client.list_tools() if isinstance(t.get("name"), str)]
        return self._listing

    async def _rows(self, tool: Mapping[str, Any]) -> list[ToolRow]:
        """One row per provider of the tool (as the node's router sees them)."""
        meta = tool.get("_meta")
        providers = meta.get(PROVIDERS_META) if isinstance(meta, Mapping) else None
        labels = [p for p in providers if isinstance(p, Mapping)] if isinstance(providers, list) else []
        schema = tool.get("inputSchema")
        parameters = parameters_from_schema(schema if isinstance(schema, Mapping) else None)
        description = tool.get("description")
        rows = []
        for label in labels or [{}]:
            if label.get("kind") == "mcp":
                # An MCP server this node forwards to: the node is the mesh's provider.
                me = await self.itself()
                provider, peer_id = me.name, me.peer_id
            else:
                provider, peer_id = str(label.get("name", "")), str(label.get("peerId", ""))
            rows.append(ToolRow(name=str(tool["name"]), mesh_name=mesh_name_of(tool), provider=provider,
                                peer_id=peer_id, description=description if isinstance(description, str) else "",
                                parameters=parameters))
        return rows

    async def tools(self) -> list[ToolRow]:
        rows = []
        for tool in await self._listed():
            rows.extend(await self._rows(tool))
        return sorted_tools(rows)

    async def find_tool(self, name: str) -> ToolRow | None:
        listed = await self._listed()
        tool = next((t for t in listed if t["name"] == name), None) or \
            next((t for t in listed if mesh_name_of(t) == name), None)
        return (await self._rows(tool))[0] if tool is not None else None

    async def call(self, name: str, arguments: dict[str, Any], *, timeout: float | None = None,
                   on_progress: ProgressFn | None = None) -> CallResult:
        meta: dict[str, Any] = {}
        if timeout is not None:
            # The CLI's deadline: it cancels the call then. The node's own, a little later, is
            # only a safety net for a CLI that vanished without a word.
            deadline = self.started + timeout
            meta[TIMEOUT_META] = round(max(deadline - trio.current_time(), 0.0) + NODE_GRACE, 3)
            waited = f"{timeout:g} s (--timeout)"
        else:
            # The node's deadline: it answers with its own timeout error by then.
            node_timeout = self.client.call_timeout or DEFAULT_CALL_TIMEOUT
            deadline = trio.current_time() + node_timeout + ANSWER_GRACE
            waited = f"{node_timeout:g} s (the node's call timeout)"
        self.client.deadline = max(self.client.deadline, deadline)  # the session outlives the setup
        try:
            result = await self.client.call_tool(name, arguments, deadline=deadline, meta=meta,
                                                 on_progress=on_progress)
        except JsonRpcError as exc:  # refused before any tool ran (an unknown tool name)
            return CallResult.failure(exc.reason, unknown_tool=exc.code == INVALID_PARAMS
                                      and exc.reason.startswith("unknown tool"))
        except TimedOut:  # the node is there (it answered tools/list): the call took too long
            return CallResult.failure(f"no result from {name!r} within {waited}")
        content = result.get("content")
        items = [c for c in content if isinstance(c, dict)] if isinstance(content, list) else []
        structured = result.get("structuredContent")
        is_error = bool(result.get("isError"))
        text = "".join(str(c.get("text", "")) for c in items if c.get("type") == "text")
        return CallResult(content=items, is_error=is_error,
                          structured_content=structured if isinstance(structured, dict) else None,
                          unknown_tool=is_error and text.startswith(NO_PROVIDER))

    async def _read_peers(self) -> tuple[PeerRow, list[PeerRow]]:
        """The peers resource: {"self": this node's card, "peers": [records of the peers it knows]}."""
        result = await self.client.request("resources/read", {"uri": PEERS_URI})
        contents = result.get("contents")
        text = next((c["text"] for c in contents if isinstance(c, dict) and isinstance(c.get("text"), str)),
                    "{}") if isinstance(contents, list) else "{}"
        try:
            data = json.loads(text)
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        me = data.get("self")
        self._self = _peer_row(me if isinstance(me, dict) else {}, is_self=True)
        listed = data.get("peers")
        others = [_peer_row(r) for r in listed if isinstance(r, dict)] if isinstance(listed, list) else []
        return self._self, others

    async def itself(self) -> PeerRow:
        return self._self or (await self._read_peers())[0]

    async def peers(self) -> list[PeerRow]:
        me, others = await self._read_peers()
        return sorted_peers(me, others)

    async def status(self) -> dict[str, Any]:
        """The node's own `GET /status`, marked as such."""
        status = await self.client.get_json(STATUS_PATH)
        return {"format": status.get("format"), "source": SOURCE_ENDPOINT,
                **{k: v for k, v in status.items() if k != "format"}}


def _peer_row(card: Mapping[str, Any], *, is_self: bool = False) -> PeerRow:
    addrs = card.get("addrs")
    tools = card.get("tools")
    return PeerRow(
        name=str(card.get("name", "")),
        peer_id=str(card.get("peerId", "")),
        addrs=tuple(str(a) for a in addrs) if isinstance(addrs, list) else (),
        tools=tuple(sorted(str(t.get("name", "")) for t in tools if isinstance(t, dict)))
        if isinstance(tools, list) else (),
        is_self=is_self,
    )
