"""The HTTP side of the node's endpoint: the guards every request passes (the bearer token, a
web page's Origin) and the GETs about the node beside `/mcp`: `/healthz`, `/status`,
`/metrics` and the live mesh page at `/`, under the MCP app's own Host and Origin rule."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request

from node.mcp.mesh import Mesh
from node.mcp.page import mesh_page

ASGIApp = Callable[[MutableMapping[str, Any], Callable[..., Awaitable[Any]],
                    Callable[..., Awaitable[None]]], Awaitable[None]]
HEALTH_PATH, STATUS_PATH, METRICS_PATH = OBSERVE_PATHS = ("/healthz", "/status", "/metrics")
PAGE_PATH = "/"  # the live mesh page, under the same rule as OBSERVE_PATHS
CLIENT_GONE = "praxis.client_gone"  # scope key: a trio.Event set when the request's client leaves


def _refusal(status: int, message: str, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    body = json.dumps({"error": message}).encode()
    return [{"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()), *headers]},
            {"type": "http.response.body", "body": body}]


def observing(app: ASGIApp, mesh: Mesh, security: TransportSecuritySettings) -> ASGIApp:
    """`GET /healthz`, `/status`, `/metrics` and the page at `/` beside the MCP app, under its Host
    and Origin rule.

    The rule is the SDK's own check with the MCP app's settings (on loopback: a loopback Host,
    else 421, and a loopback Origin if any, else 403); the bearer token and the off-loopback
    Origin check wrap this app as they wrap the MCP app.
    """
    checks = TransportSecurityMiddleware(security)

    async def routed(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (scope["path"] not in OBSERVE_PATHS and scope["path"] != PAGE_PATH):
            await app(scope, receive, send)
            return
        refusal = await checks.validate_request(Request(scope, receive), is_post=False)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            status, body, kind = 405, json.dumps({"error": "only GET"}).encode(), b"application/json"
            extra = [(b"allow", b"GET, HEAD")]
        elif scope["path"] == PAGE_PATH:
            page = mesh_page()
            status, body, kind, extra = 200, page.body, page.content_type, list(page.headers)
        else:
            extra = []
            status, body, kind = _observe(scope["path"], mesh)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"no-store"), *extra]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    return routed


def noting_disconnects(app: ASGIApp) -> ASGIApp:
    """Give each POST a `CLIENT_GONE` event in its scope, set once its client disconnects (or
    its response ends): the endpoint cancels the call it carries, which the SDK would run on."""

    async def noted(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await app(scope, receive, send)
            return
        gone = scope[CLIENT_GONE] = trio.Event()

        async def receiving() -> Any:
            message = await receive()
            if message.get("type") == "http.disconnect":
                gone.set()
            return message

        try:
            await app(scope, receiving, send)
        finally:
            gone.set()  # the answer went out, or the client left: either way nobody listens now

    return noted


def _observe(path: str, mesh: Mesh) -> tuple[int, bytes, bytes]:
    """(status, body, content type) of one of the OBSERVE_PATHS."""
    if path == HEALTH_PATH:
        ready = mesh.ready()
        health = {"status": "ok", "ready": True} if ready else {"status": "starting", "ready": False}
        return (200 if ready else 503), json.dumps(health).encode(), b"application/json"
    if path == STATUS_PATH:
        return 200, json.dumps(mesh.status()).encode(), b"application/json"
    return 200, mesh.metrics_text(), CONTENT_TYPE_LATEST.encode()


def bearer_guard(app: ASGIApp, token: str) -> ASGIApp:
    """Refuse (401) a request without `Authorization: Bearer <token>`."""
    # Compared as SHA-256 digests with compare_digest: constant time, and not even the token's
    # length shows in the timing.
    expected = hashlib.sha256(token.encode()).digest()

    async def guarded(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            header = dict(scope.get("headers") or []).get(b"authorization", b"")
            # RFC 7235: the scheme is case-insensitive ("bearer", "BEARER"), then one or more
            # spaces; RFC 7230: no surrounding whitespace belongs to the value.
            scheme, _, credentials = header.strip(b" \t").partition(b" ")
            given = hashlib.sha256(credentials.lstrip(b" ")).digest()
            if not hmac.compare_digest(given, expected) or scheme.lower() != b"bearer":
                for message in _refusal(401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")]):
                    await send(message)
                return
        await app(scope, receive, send)

    return guarded


def origin_guard(app: ASGIApp, allowed: list[str]) -> ASGIApp:
    """Refuse (403) a request whose Origin is not one of `allowed` (`scheme://host`, any port)."""

    def allowed_origin(origin: str) -> bool:
        for base in allowed:
            if origin == base or (origin.startswith(base + ":") and origin[len(base) + 1:].isdigit()):
                return True
        return False

    async def guarded(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            origin = dict(scope.get("headers") or []).get(b"origin", b"").decode("latin-1")
            if origin and not allowed_origin(origin):
                for message in _refusal(403, "requests from web pages of other origins are refused", []):
                    await send(message)
                return
        await app(scope, receive, send)

    return guarded
