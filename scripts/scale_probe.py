"""Calls through a node's MCP endpoint, as any MCP client makes them, and its GET /status.

A small streamable-HTTP MCP client on httpx (the SDK's client would cost the harness, which
shares the machine with the nodes it measures, far more CPU per call): `initialize`,
`notifications/initialized`, then `tools/call`. Every answer is bounded in size and time, and
every call ends in one `Outcome` whose `kind` says what happened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

PROTOCOL_VERSION = "2025-06-18"
MAX_ANSWER = 1024 * 1024  # bytes of one answer; a call here returns a node's name
MAX_STATUS = 16 * 1024 * 1024  # bytes of GET /status (it lists every tool of the mesh)
INVALID_PARAMS = -32602  # the endpoint's code for a tool it does not know

# Outcome kinds
OK = "ok"
UNKNOWN_TOOL = "unknown_tool"  # the node does not know the tool (yet)
TOOL_ERROR = "tool_error"  # isError: the node knew it but the call failed (unreachable, ...)
WRONG_RESULT = "wrong_result"  # answered, but not with the expected node's name
TIMEOUT = "timeout"
HTTP_ERROR = "http_error"  # the endpoint itself failed (refused, closed, not MCP)


@dataclass(frozen=True)
class Outcome:
    kind: str
    seconds: float
    detail: str = ""  # the node's message (cut short); never arguments: calls here have none

    @property
    def ok(self) -> bool:
        return self.kind == OK


class ProbeError(Exception):
    """The endpoint answered outside the protocol."""


def sse_messages(body: str) -> list[dict[str, Any]]:
    """JSON-RPC messages in a text/event-stream body: the `data:` lines of each event."""
    messages: list[dict[str, Any]] = []
    for event in body.replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(line[5:].removeprefix(" ") for line in event.split("\n") if line.startswith("data:"))
        if not data:
            continue
        try:
            value = json.loads(data)
        except ValueError:
            continue  # not JSON-RPC (a comment or a keep-alive)
        if isinstance(value, dict):
            messages.append(value)
    return messages


def answer_to(messages: list[dict[str, Any]], request_id: int) -> dict[str, Any] | None:
    """The response to `request_id` among messages (notifications may come first)."""
    for message in messages:
        if message.get("id") == request_id and ("result" in message or "error" in message):
            return message
    return None


def classify(answer: dict[str, Any], expected_text: str, seconds: float) -> Outcome:
    """What a tools/call answer means for a call that should return `expected_text`."""
    error = answer.get("error")
    if isinstance(error, dict):
        kind = UNKNOWN_TOOL if error.get("code") == INVALID_PARAMS else TOOL_ERROR
        return Outcome(kind, seconds, str(error.get("message", ""))[:200])
    result = answer.get("result")
    if not isinstance(result, dict):
        return Outcome(HTTP_ERROR, seconds, "no result")
    content = result.get("content")
    text = ""
    if isinstance(content, list) and content and isinstance(content[0], dict):
        text = str(content[0].get("text", ""))
    if result.get("isError"):
        return Outcome(TOOL_ERROR, seconds, text[:200])
    if text != expected_text:
        return Outcome(WRONG_RESULT, seconds, text[:200])
    return Outcome(OK, seconds)


class McpSession:
    """One MCP session with one node's endpoint (`url` ends in /mcp)."""

    def __init__(self, http: httpx.AsyncClient, url: str, call_timeout: float) -> None:
        self.http = http
        self.url = url
        self.call_timeout = call_timeout
        self.session_id: str | None = None
        self._next_id = 0
        self._opening = trio.Lock()  # concurrent calls share one session: open it once

    async def _post(self, message: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "MCP-Protocol-Version": PROTOCOL_VERSION}
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        body = b""
        async with self.http.stream("POST", self.url, headers=headers, content=json.dumps(message)) as response:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER:
                    raise ProbeError("answer over the size limit")
            session = response.headers.get("mcp-session-id")
            kind = response.headers.get("content-type", "")
            status = response.status_code
        if session and self.session_id is None:
            self.session_id = session
        if "id" not in message or status >= 400 or not body:
            return status, None
        text = body.decode("utf-8", "replace")
        messages = sse_messages(text) if kind.startswith("text/event-stream") else [json.loads(text)]
        return status, answer_to(messages, message["id"])

    async def open(self) -> None:
        with trio.fail_after(self.call_timeout):
            self.session_id = None
            status, answer = await self._post(self._request("initialize", {
                "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                "clientInfo": {"name": "praxis-bench-scale", "version": "1"}}))
            if answer is None or "result" not in answer:
                raise ProbeError(f"initialize answered HTTP {status}")
            await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        return {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params}

    async def call(self, tool: str, expected_text: str) -> Outcome:
        """Call `tool` with no arguments; never raises for what the node or the network does."""
        start = trio.current_time()
        with trio.move_on_after(self.call_timeout):
            try:
                async with self._opening:
                    if self.session_id is None:
                        await self.open()
                status, answer = await self._post(self._request("tools/call", {"name": tool, "arguments": {}}))
            except (httpx.HTTPError, ProbeError, ValueError, trio.TooSlowError) as exc:
                self.session_id = None  # the next call starts a new session
                return Outcome(HTTP_ERROR, trio.current_time() - start, type(exc).__name__)
            if status == 404:  # the node no longer knows this session (it restarted)
                self.session_id = None
            if answer is None:
                return Outcome(HTTP_ERROR, trio.current_time() - start, f"HTTP {status}")
            return classify(answer, expected_text, trio.current_time() - start)
        self.session_id = None  # a call abandoned mid-answer leaves the session unclear
        return Outcome(TIMEOUT, trio.current_time() - start)


async def get_status(http: httpx.AsyncClient, base: str, timeout: float) -> dict[str, Any] | None:
    """GET <base>/status as JSON, or None when the node does not answer."""
    text = await get_text(http, f"{base}/status", timeout)
    try:
        value = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def get_text(http: httpx.AsyncClient, url: str, timeout: float, limit: int = MAX_STATUS) -> str | None:
    with trio.move_on_after(timeout):
        try:
            async with http.stream("GET", url) as response:
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        return None
                if response.status_code != 200:
                    return None
            return body.decode("utf-8", "replace")
        except httpx.HTTPError:
            return None
    return None


def connections_from_status(status: dict[str, Any] | None) -> int | None:
    """Peers connected now, as /status lists them."""
    peers = status.get("peers") if status is not None else None
    return len(peers) if isinstance(peers, list) else None


# The mesh's upkeep counters of /metrics (node/mesh/activity.py): family -> its label.
UPKEEP = {
    "praxis_connections_opened": "direction", "praxis_connections_closed": "reason",
    "praxis_peer_dials": "outcome", "praxis_card_exchanges": "started_by",
    "praxis_dht_walks": "purpose", "praxis_announcements": "event",
}


@dataclass(frozen=True)
class MeshUpkeep:
    """What one read of a node's /metrics says of the mesh's upkeep."""

    counts: dict[str, float]  # {"connections_opened.inbound": n, ...}
    gossip_mesh: int | None  # `praxis_gossip_mesh_peers`; None for a node without discovery


def upkeep_from_metrics(text: str | None) -> MeshUpkeep | None:
    """The upkeep counters and the GossipSub mesh size of a /metrics text, parsed once; None when
    the node did not answer or has no such counters (a node older than them)."""
    if text is None:
        return None
    counts: dict[str, float] = {}
    mesh = None
    try:
        for family in text_string_to_metric_families(text):
            if family.name == "praxis_gossip_mesh_peers" and family.samples:
                mesh = int(family.samples[0].value)
            label = UPKEEP.get(family.name)
            for sample in family.samples if label is not None else ():
                if sample.name == f"{family.name}_total" and label in sample.labels:
                    counts[f"{family.name.removeprefix('praxis_')}.{sample.labels[label]}"] = sample.value
    except ValueError:  # not the Prometheus text format
        return None
    return MeshUpkeep(counts, mesh) if counts else None


def connections_from_metrics(text: str | None) -> int | None:
    """The sum of `praxis_peers_connected{direction=...}` in a /metrics text."""
    if text is None:
        return None
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("praxis_peers_connected{") or line.startswith("praxis_peers_connected "):
            try:
                total += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
            seen = True
    return int(total) if seen else None
