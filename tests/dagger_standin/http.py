"""TEST STAND-IN: a minimal HTTP/1.1 server on trio (h11) for the stand-in's GraphQL endpoint.

Routes: `POST /query` (GraphQL, what the SDK uses), `GET /_standin/stats` (containers running,
the most ever running at once, started, killed) and `POST /_standin/reset` (zero the
maximum). Every route needs the session token as the basic-auth user, like Dagger. While a
request runs, the connection is watched: when the client goes away (its call was cancelled),
the request is cancelled too, which kills any container it was running.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
from collections.abc import Sequence
from typing import Any

import h11
import trio

from tests.dagger_standin.resolvers import StandinEngine

log = logging.getLogger("praxis.test.standin")

MAX_BODY = 8 * 1024 * 1024
IDLE_SECONDS = 600.0


class StandinHTTPServer:
    def __init__(self, engine: StandinEngine, token: str) -> None:
        self.engine = engine
        self.token = token

    async def serve(self, listeners: Sequence[trio.SocketListener]) -> None:
        await trio.serve_listeners(self.handle_connection, listeners)

    async def handle_connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            for _ in range(1_000_000):  # bounded: one iteration per request on this connection
                with trio.move_on_after(IDLE_SECONDS):
                    request, body = await _read_request(stream, conn)
                if request is None:
                    return
                status, payload = await self._respond_watching(stream, conn, request, body)
                if status == 0:  # client went away
                    return
                await _send(stream, conn, status, payload)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            with trio.move_on_after(1):
                await stream.aclose()

    async def _respond_watching(
        self, stream: trio.SocketStream, conn: h11.Connection, request: h11.Request, body: bytes
    ) -> tuple[int, bytes]:
        outcome: list[tuple[int, bytes]] = []
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        nursery.cancel_scope.cancel()
                        return
                    conn.receive_data(data)  # a pipelined request: keep it for later

            async def respond() -> None:
                outcome.append(await self._route(request, body))
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            nursery.start_soon(respond)
        return outcome[0] if outcome else (0, b"")

    async def _route(self, request: h11.Request, body: bytes) -> tuple[int, bytes]:
        if not self._authorized(request):
            return 401, _json({"message": "unauthorized: bad or missing session token"})
        target = request.target.split(b"?", 1)[0]
        method = request.method
        if target == b"/query" and method == b"POST":
            try:
                data = json.loads(body)
            except ValueError:
                return 400, _json({"message": "request body is not JSON"})
            if not isinstance(data, dict) or not isinstance(data.get("query"), str):
                return 400, _json({"message": "expected {query, variables?, operationName?}"})
            variables = data.get("variables") if isinstance(data.get("variables"), dict) else None
            operation = (
                data.get("operationName") if isinstance(data.get("operationName"), str) else None
            )
            return 200, _json(await self.engine.execute(data["query"], variables, operation))
        if target == b"/_standin/stats" and method == b"GET":
            return 200, _json(self.engine.runner.stats.as_dict())
        if target == b"/_standin/reset" and method == b"POST":
            stats = self.engine.runner.stats
            stats.max_running = stats.running
            return 200, _json(stats.as_dict())
        return 404, _json({"message": "not found"})

    def _authorized(self, request: h11.Request) -> bool:
        for name, value in request.headers:
            if name == b"authorization" and value[:6].lower() == b"basic ":
                try:
                    user = base64.b64decode(value[6:].strip()).split(b":", 1)[0]
                except ValueError:
                    return False
                return hmac.compare_digest(user, self.token.encode())
        return False


async def _read_request(
    stream: trio.SocketStream, conn: h11.Connection
) -> tuple[h11.Request | None, bytes]:
    request: h11.Request | None = None
    body = bytearray()
    for _ in range(1_000_000):  # bounded by MAX_BODY / chunk size in practice
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            if not data and request is None:
                return None, b""
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise h11.RemoteProtocolError("request body too large")
        elif isinstance(event, h11.EndOfMessage):
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None, b""
    raise h11.RemoteProtocolError("request never ended")


async def _send(
    stream: trio.SocketStream, conn: h11.Connection, status: int, payload: bytes
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    with trio.fail_after(30):
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        await stream.send_all(conn.send(h11.Data(data=payload)) or b"")
        await stream.send_all(conn.send(h11.EndOfMessage()) or b"")


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
