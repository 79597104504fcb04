"""The MCP endpoint's HTTP rules (Host, Origin, bearer token), over 127.0.0.1 only.

An endpoint configured off loopback (`mcp.host: 0.0.0.0`) is served here by hypercorn bound to
127.0.0.1: the app is the same whatever it is bound to, and a remote client is simulated by the
Host header it would send. 203.0.113.5 is a documentation address (RFC 5737), used only as a
header value: nothing ever connects to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import mcp
from mcp.client.streamable_http import streamable_http_client

from tests.endpoint_app import serving_app

TOKEN = "tok-off-loopback-7f3a"
REMOTE_HOST = "203.0.113.5:8090"
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "t", "version": "0"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@asynccontextmanager
async def serving(**mcp_section: Any) -> AsyncIterator[str]:
    """The endpoint's URL (`.../mcp`) of a node served for `mcp_section` (tests/endpoint_app.py)."""
    async with serving_app("node-auth", **mcp_section) as (_, base):
        yield base + "/mcp"


async def initialize(url: str, **headers: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=5) as http:
        return await http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, **headers})


async def test_off_loopback_endpoint_serves_a_remote_host_with_the_token() -> None:
    async with serving(host="0.0.0.0", token=TOKEN) as url:
        answer = await initialize(url, Host=REMOTE_HOST, Authorization=f"Bearer {TOKEN}")
        assert answer.status_code == 200, (answer.status_code, answer.text[:200])
        # A whole MCP session as a remote client would run it.
        http = httpx2.AsyncClient(headers={"Host": REMOTE_HOST, "Authorization": f"Bearer {TOKEN}"},
                                  timeout=5)
        async with http, mcp.Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
            assert "echo" in {t.name for t in (await client.list_tools(cache_mode="bypass")).tools}
            result = await client.call_tool("echo", {"text": "from afar"})
            assert result.content[0].text == "from afar"  # type: ignore[union-attr]
        # The token is still the protection.
        for auth in ({}, {"Authorization": "Bearer wrong"}):
            refused = await initialize(url, Host=REMOTE_HOST, **auth)
            assert refused.status_code == 401 and TOKEN not in refused.text


async def test_bearer_scheme_is_case_insensitive_and_the_token_exact() -> None:
    async with serving(host="0.0.0.0", token=TOKEN) as url:
        for auth in (f"bearer {TOKEN}", f"BEARER {TOKEN}", f"BeArEr {TOKEN}", f"Bearer  {TOKEN}"):
            answer = await initialize(url, Host=REMOTE_HOST, Authorization=auth)
            assert answer.status_code == 200, (auth, answer.status_code)
        for auth in (f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Bearer {TOKEN.upper()}",
                     f"Basic {TOKEN}", TOKEN, f"Bearer{TOKEN}", "Bearer", f"Token {TOKEN}"):
            refused = await initialize(url, Host=REMOTE_HOST, Authorization=auth)
            assert refused.status_code == 401, (auth, refused.status_code)
            assert refused.headers["www-authenticate"] == "Bearer" and TOKEN not in refused.text


async def test_off_loopback_origin_of_a_web_page_must_be_local() -> None:
    auth = {"Host": REMOTE_HOST, "Authorization": f"Bearer {TOKEN}"}
    async with serving(host="0.0.0.0", token=TOKEN) as url:
        # A rebinding page has the Host's own origin; another site has its own: both refused,
        # even with the token.
        for origin in ("http://evil.example", f"http://{REMOTE_HOST}", "http://localhost.evil.example:80",
                       "http://127.0.0.1:80x", "null"):
            refused = await initialize(url, Origin=origin, **auth)
            assert refused.status_code == 403, (origin, refused.status_code)
        # Pages of this machine, and clients that are not browsers (no Origin), are served.
        for origin in ("http://localhost:6274", "http://127.0.0.1", "https://[::1]:8443"):
            answer = await initialize(url, Origin=origin, **auth)
            assert answer.status_code == 200, (origin, answer.status_code)
        assert (await initialize(url, **auth)).status_code == 200
    async with serving(host="192.0.2.10", token=TOKEN) as url:  # bound to one address: its pages too
        answer = await initialize(url, Origin="http://192.0.2.10:8080", **auth)
        assert answer.status_code == 200, answer.status_code
        assert (await initialize(url, Origin="http://192.0.2.11:8080", **auth)).status_code == 403


async def test_every_loopback_host_keeps_dns_rebinding_protection() -> None:
    # 127.0.0.2 is loopback too: no token needed, so Host and Origin must protect it.
    async with serving(host="127.0.0.2") as url:
        port = url.split(":")[2].split("/")[0]
        assert (await initialize(url, Host="evil.example:80")).status_code == 421
        assert (await initialize(url, Host=REMOTE_HOST)).status_code == 421
        refused = await initialize(url, Host=f"127.0.0.2:{port}", Origin="http://evil.example")
        assert refused.status_code == 403
        for host in (f"127.0.0.2:{port}", f"127.0.0.1:{port}", f"localhost:{port}"):
            answer = await initialize(url, Host=host, Origin=f"http://{host}")
            assert answer.status_code == 200, (host, answer.status_code)
