"""Talking to a running node through its MCP endpoint: what `praxis-node ... --node URL` uses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import mcp
import trio
from mcp.shared._httpx_utils import create_mcp_http_client

from node.cli.remote_peer import parse_cli_arguments
from node.mcp.clients import owned_http_transport
from node.mcp.endpoint import PEERS_URI
from protocols.errors import PeerUnreachable


@asynccontextmanager
async def endpoint_client(url: str, token: str | None, timeout: float) -> AsyncIterator[mcp.Client]:
    """An MCP client session to the node at `url` (with a bearer token when given)."""
    server: Any = url
    if token:
        server = owned_http_transport(url, create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}))
    try:
        with trio.fail_after(timeout):
            async with mcp.Client(server, mode="legacy") as client:
                yield client
    except trio.TooSlowError:
        raise PeerUnreachable(f"no answer from {url} within {timeout:g} s") from None


async def endpoint_tools(client: mcp.Client) -> list[Any]:
    return list((await client.list_tools(cache_mode="bypass")).tools)


async def endpoint_call(client: mcp.Client, tool: str, pairs: list[str]) -> Any:
    """Call `tool` with `key=value` pairs typed by the tool's input schema."""
    tools = {t.name: t for t in await endpoint_tools(client)}
    schema = tools[tool].input_schema if tool in tools else {}
    types = {name: prop.get("type", "") for name, prop in (schema.get("properties") or {}).items()
             if isinstance(prop, dict)}
    return await client.call_tool(tool, parse_cli_arguments(pairs, types))


async def endpoint_peers(client: mcp.Client) -> dict[str, Any]:
    result = await client.read_resource(PEERS_URI)
    text = next((c.text for c in result.contents if hasattr(c, "text")), "{}")
    data: dict[str, Any] = json.loads(text)
    return data


def content_text(result: Any) -> str:
    """What a person reads of an MCP call result: its text, and a note for other content."""
    parts = []
    for item in result.content:
        if getattr(item, "type", "") == "text":
            parts.append(item.text)
        else:
            parts.append(f"[{item.type} {getattr(item, 'mime_type', '') or ''}]".replace(" ]", "]"))
    return "".join(parts)
