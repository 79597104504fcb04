"""The live mesh page, `GET /` on a node's HTTP port: its headers and access rule, and the page
itself in a real headless browser (Debian's chromium driven by playwright for Python) showing a
running mesh: every node, every tool with its parameters and providers, the calls made, and a
call made while the page is open, which appears without a reload.

The browser test needs `/usr/bin/chromium` (`apt-get install -y chromium`, as root) and the
`playwright` package (the test extras); playwright's own browser download is never used.
Without them it is skipped with the reason; with `CI` set it fails instead, because CI must
run it. The screenshot is saved under the test's tmp_path and copied to
/tmp/praxis-mesh-page.png; its path is printed in the "figures" summary.

The mesh (all bootstrap from node-0, which serves the MCP endpoint): node-0 has `echo`, node-1
`add`, node-2 `fail`; a fourth node is named in HTML (a `<script>` and an `<img onerror>`), with
a tool `shout`; and a hostile raw peer (a bare libp2p host writing frames by hand, as a foreign
node could) sends node-0 a card whose name, tool name, description and parameter are HTML, and
calls node-0 for a tool whose name is HTML. The page must show all of it as text.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx2
import mcp
import pytest
import trio
from libp2p.abc import INetStream

from node.app import Node
from node.mesh.host import parse_peer_addr
from protocols.card import CARD_PROTOCOL
from protocols.messages import now_ms
from tests.endpoint_app import serving_app
from tests.helpers import ECHO_PARAMS, make_node, node_config, py_tool, start_mesh, wait_all_know, wait_until
from tests.raw_peer import call_tool, frame, raw_host, read_line

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT_COPY = Path("/tmp/praxis-mesh-page.png")
WAIT_MS = 15_000  # every wait on the page: selectors and expectations, never sleeps

ADD_PARAMS = [{"name": "a", "type": "number", "required": True, "description": "the first number"},
              {"name": "b", "type": "number", "required": True}]
FAIL_PARAMS = [{"name": "message", "type": "string", "required": True}]
MESH_TOOLS = [
    [py_tool("echo", "echo", ECHO_PARAMS, description="Say the text back")],
    [py_tool("add", "add", ADD_PARAMS, description="Add two numbers")],
    [py_tool("fail", "fail", FAIL_PARAMS, description="Always fails (for tests)")],
]
# A peer chooses its own name and its tools' names: here, HTML that would run if parsed.
HOSTILE_NODE = '<script>window.__pwned="script"</script><img src=x onerror="window.__pwned=\'img\'">'
# What a foreign peer may put in its card and requests (the wire allows any printable names).
HOSTILE_PEER = "<img src=x onerror=\"window.__pwned='peer'\"> raw"
HOSTILE_TOOL = "<img/src=x/onerror=window.__pwned='tool'>"
HOSTILE_PARAM = "<b>p</b>"
HOSTILE_DESCRIPTION = "<script>window.__pwned='description'</script> does things"
HOSTILE_CALL = "<svg/onload=window.__pwned='call'>"
TOKEN = "tok-mesh-page-41b7"
REMOTE_HOST = "203.0.113.5:8090"  # a documentation address (RFC 5737), used only as a Host header


def base_url(node: Node) -> str:
    return node.mcp_url.removesuffix("/mcp")


async def get(url: str, method: str = "GET", **headers: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=10) as http:
        return await http.request(method, url, headers=headers)


# ----- headers and the access rule (no browser needed) --------------------------------


async def test_the_page_is_sent_with_a_strict_policy_and_nosniff() -> None:
    async with serving_app("node-page") as (_, base):
        page = await get(base + "/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-store"
        policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
        assert policy["default-src"] == "'none'"
        assert policy["connect-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"
        assert policy["require-trusted-types-for"] == "'script'"
        # Inline script and style only by their hashes: no 'unsafe-inline', no 'unsafe-eval', no host.
        assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]{43}='", policy["script-src"]), policy["script-src"]
        assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]{43}='", policy["style-src"]), policy["style-src"]
        assert "unsafe" not in page.headers["content-security-policy"]
        # Everything the page loads is in it: no URL but its own `status`.
        assert re.findall(r"""(?:src|href)=["'](?!data:)""", page.text) == []
        assert "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in page.text and "innerHTML" not in page.text
        head = await get(base + "/", "HEAD")
        assert head.status_code == 200 and head.content == b""
        post = await get(base + "/", "POST")
        assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
        # On loopback, a page reached through a DNS name (rebinding) gets nothing.
        rebound = await get(base + "/", Host="evil.example:80")
        assert rebound.status_code == 421 and "praxis" not in rebound.text


async def test_off_loopback_the_page_needs_the_bearer_token() -> None:
    async with serving_app("node-page", host="0.0.0.0", token=TOKEN) as (_, base):
        for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            refused = await get(base + "/", Host=REMOTE_HOST, **auth)
            assert refused.status_code == 401, (auth, refused.status_code)
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "praxis" not in refused.text and "<html" not in refused.text
        page = await get(base + "/", Host=REMOTE_HOST, Authorization=f"Bearer {TOKEN}")
        assert page.status_code == 200 and "<title>praxis mesh</title>" in page.text
        foreign = await get(base + "/", Host=REMOTE_HOST, Authorization=f"Bearer {TOKEN}",
                            Origin="http://evil.example")
        assert foreign.status_code == 403


# ----- the page in a real browser --------------------------------------------------------


async def send_hostile_card(peer_id: str, stream: INetStream) -> None:
    """The raw peer's side of a card exchange: its card first, then node-0's is read."""
    card = {"name": HOSTILE_PEER, "version": "<i>1</i>", "peerId": peer_id, "capabilities": ["tools"],
            "tools": [{"name": HOSTILE_TOOL, "description": HOSTILE_DESCRIPTION,
                       "parameters": [{"name": HOSTILE_PARAM, "type": "string", "required": True}]}],
            "timestamp": now_ms(), "addrs": []}
    try:
        await stream.write(frame(card))
        await read_line(stream)
    finally:
        await stream.close()


def browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (Debian's chromium: apt-get install -y chromium, as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright for Python is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture
def chromium() -> Path:
    reason = browser_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the mesh page test must run in CI but cannot: {reason}")
        pytest.skip(f"the mesh page test needs a real browser: {reason}")
    return CHROMIUM


@dataclass
class Expected:
    nodes: list[str]  # every node's name, this node's first
    tools: dict[str, tuple[list[str], list[str]]]  # tool -> (parameter chips, provider names)
    calls: list[tuple[str, str, str]]  # (tool, role, outcome) of every call node-0 handled, any order
    late: tuple[str, str, str, str]  # (tool, role, caller, outcome) of the call made with the page open


def exactly(text: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(text) + "$")


def browse(url: str, expected: Expected, late_call: Callable[[], Awaitable[None]], shot: Path) -> dict[str, Any]:
    """In a worker thread: open the page in chromium, wait until it shows everything expected,
    make `late_call` (in the trio loop) and wait until the page shows it, take the screenshot."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    problems: list[str] = []
    dialogs: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            # A CSP violation or a script error shows here.
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            response = page.goto(url)
            assert response is not None and response.status == 200
            headers = response.headers

            # Every node, in the nodes table and in the graph.
            for name in expected.nodes:
                expect(page.locator("#nodes .node-label").filter(has_text=exactly(name))).to_have_count(1)
            expect(page.locator("#graph g.node")).to_have_count(len(expected.nodes))
            graph_names = page.locator("#graph g.node").evaluate_all("gs => gs.map(g => g.dataset.name)")
            # Every peer dialled node-0: an arrow from each peer to it.
            expect(page.locator("#graph line.edge.inbound[marker-end]")).to_have_count(len(expected.nodes) - 1)

            # Every tool, with its parameters and providers.
            for tool, (params, providers) in expected.tools.items():
                row = page.locator("#tools tbody tr").filter(
                    has=page.locator(".tool-label", has_text=exactly(tool)))
                expect(row).to_have_count(1)
                for chip in params + providers:
                    expect(row).to_contain_text(chip)

            # Every call node-0 handled, newest first, with its outcome and a duration.
            rows = page.locator("#calls tbody tr")
            expect(rows).to_have_count(len(expected.calls))
            shown = sorted(zip(rows.locator("td.call-tool").all_inner_texts(),
                               rows.locator("td:nth-child(3)").all_inner_texts(),
                               rows.locator("td:nth-child(6)").all_inner_texts(), strict=True))
            durations = rows.locator("td:nth-child(7)").all_inner_texts()

            # A call made now shows up on its own (the page polls /status).
            trio.from_thread.run(late_call)
            expect(rows).to_have_count(len(expected.calls) + 1)
            tool, role, caller, outcome = expected.late
            newest = rows.first
            expect(newest.locator("td.call-tool")).to_have_text(tool)
            expect(newest).to_contain_text(role)
            expect(newest).to_contain_text(caller)
            expect(newest).to_contain_text(outcome)

            # Hostile names are text: nothing ran, no element was made of them.
            pwned = page.evaluate("() => window.__pwned === undefined ? null : String(window.__pwned)")
            images = page.locator("img").count()
            scripts = page.locator("script").count()
            page.screenshot(path=str(shot), full_page=True, animations="disabled")
        finally:
            browser.close()
    return {"headers": headers, "graph_names": graph_names, "shown": shown, "durations": durations,
            "pwned": pwned, "images": images, "scripts": scripts, "dialogs": dialogs, "problems": problems}


async def test_the_mesh_page_in_a_real_browser_shows_the_running_mesh(
    chromium: Path, tmp_path: Path, figures: Any
) -> None:
    async with AsyncExitStack() as stack:
        a, b, c = await start_mesh(stack, MESH_TOOLS, mcp={"enabled": True, "port": 0})
        hostile = make_node(node_config(HOSTILE_NODE, [py_tool("shout", "echo", ECHO_PARAMS)],
                                        bootstrap=a.addrs[:1]))
        await stack.enter_async_context(hostile.running())
        await wait_all_know([a, b, c, hostile], {"echo", "add", "fail", "shout"})
        raw = await stack.enter_async_context(raw_host())
        raw.set_stream_handler(CARD_PROTOCOL, partial(send_hostile_card, raw.get_id().to_string()))
        await raw.connect(parse_peer_addr(a.addrs[0]))  # node-0 asks for its card at once
        await wait_until(lambda: HOSTILE_TOOL in a.router.tools(), a.directory.changed)
        answer = await call_tool(raw, a.addrs[0], HOSTILE_CALL, {})
        assert answer["error"]["code"] == -32601, answer  # unknown tool

        # Real calls through node-0: an MCP client's (local, on node-1, failing on node-2), one
        # of node-0's own to the hostile node's tool, and one node-2 sends node-0 to forward.
        async with mcp.Client(a.mcp_url, mode="legacy") as client:
            assert (await client.call_tool("echo", {"text": "hello"})).content[0].text == "hello"  # type: ignore[union-attr]
            for i in range(2):
                assert (await client.call_tool("add", {"a": i, "b": 1})).structured_content == {"sum": i + 1}
            assert (await client.call_tool("fail", {"message": "boom"})).is_error
        assert (await a.call("shout", {"text": "hi"})).result.content[0].text == "hi"  # type: ignore[union-attr]
        forwarded = await c.request_peer(a.peer_id, "add", {"a": 2, "b": 2})
        assert forwarded.error is None

        async def late_call() -> None:
            answer = await b.request_peer(a.peer_id, "echo", {"text": "while the page is open"})
            assert answer.error is None

        expected = Expected(
            nodes=["node-0", "node-1", "node-2", HOSTILE_NODE, HOSTILE_PEER],
            tools={"echo": (["text*", ": string"], ["node-0 (this node)"]),
                   "add": (["a*", "b*", ": number"], ["node-1"]),
                   "fail": (["message*"], ["node-2"]),
                   "shout": (["text*"], [HOSTILE_NODE]),
                   HOSTILE_TOOL: ([HOSTILE_PARAM + "*", HOSTILE_DESCRIPTION], [HOSTILE_PEER])},
            calls=[(HOSTILE_CALL, "served", "unknown tool"), ("echo", "made", "ok"), ("add", "made", "ok"),
                   ("add", "made", "ok"), ("fail", "made", "tool error"), ("shout", "made", "ok"),
                   ("add", "forwarded", "ok")],
            late=("echo", "served", "node-1", "ok"),
        )
        shot = tmp_path / "mesh-page.png"
        url = base_url(a) + "/"
        # Bounded by the page's own timeouts (WAIT_MS each).
        seen = await trio.to_thread.run_sync(partial(browse, url, expected, late_call, shot))

    assert seen["headers"]["x-content-type-options"] == "nosniff"
    assert "script-src 'sha256-" in seen["headers"]["content-security-policy"]
    assert sorted(seen["graph_names"]) == sorted(expected.nodes)
    assert seen["shown"] == sorted(expected.calls)
    assert all(re.fullmatch(r"[\d.]+ (ms|s)", d) for d in seen["durations"]), seen["durations"]
    # The hostile name and tool ran nothing and made no element; the page's own script is the
    # only one; no CSP violation or script error was reported.
    assert seen["pwned"] is None and seen["dialogs"] == []
    assert seen["images"] == 0 and seen["scripts"] == 1
    assert seen["problems"] == [], seen["problems"]

    assert shot.stat().st_size > 10_000
    shutil.copyfile(shot, SCREENSHOT_COPY)
    figures(f"mesh page: screenshot of node-0's page (4 nodes and a raw peer) at {shot} (copied to {SCREENSHOT_COPY})")
