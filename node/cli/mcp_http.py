"""A small MCP client over streamable HTTP for `--node`, on the standard library alone.

The MCP SDK's client costs more than a second of imports (its pydantic models of every
protocol version, the server half of the SDK); a `praxis-node tools --node URL` needs four
JSON-RPC requests. This client speaks just that: `initialize`, `notifications/initialized`,
then requests (`tools/list`, `tools/call`, `resources/read`), each a POST whose answer is JSON
or a server-sent event stream, and a DELETE that ends the session.

`call_tool` follows a call's event stream until its result (progress notifications arrive
before it, read within the size bound `MAX_BODY` and the call's deadline); a call the CLI gives
up on (its deadline, Ctrl-C) is cancelled at the node: `notifications/cancelled` for it, then
its request closed.

Every failure becomes a `CliError` with one line a person can act on: the endpoint's path, a
missing or refused token, nothing listening, not an HTTP server at all. Blocking socket work
runs in a worker thread, so trio's deadlines and Ctrl-C still hold.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import trio

from node.cli.errors import CliError, Unreachable, UsageError

PROTOCOL_VERSION = "2025-11-25"  # the handshake-era version the node's SDK (2.3) speaks
MCP_PATH = "/mcp"  # where a node serves its endpoint (node/mcp/endpoint.py)
TOKEN_VARIABLE = "PRAXIS_MCP_TOKEN"
MAX_BODY = 64 * 1024 * 1024  # bytes of one answer; a node's tools/list is far below
ERROR_BODY = 4096  # bytes of an error answer read for its message
CLOSE_TIMEOUT = 1.0  # seconds for the DELETE that ends the session
CANCEL_TIMEOUT = 2.0  # seconds for the `notifications/cancelled` of a call given up on
MAX_PAGES = 100  # tools/list pages followed

T = TypeVar("T")
ProgressFn = Callable[[float, float | None, str | None], None]  # (progress, total, message)


class _Stop(Exception):
    """The worker thread reading an event stream is no longer listened to."""


class JsonRpcError(CliError):
    """The node answered a request with a JSON-RPC error (`reason`: its message)."""

    def __init__(self, method: str, code: int, reason: str) -> None:
        super().__init__(f"the node refused {method}: {reason}")
        self.code = code
        self.reason = reason


class TimedOut(Unreachable):
    """No answer within the command's --timeout."""


def endpoint_url(text: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of a `--node` URL; a UsageError says what a valid one looks like."""
    example = "http://127.0.0.1:8090/mcp"
    if text.startswith("/ip4/") or text.startswith("/ip6/") or text.startswith("/dns"):
        raise UsageError(f"--node takes the URL of a node's MCP endpoint (e.g. {example}); "
                         f"{text!r} is a multiaddr: use --peer {text}")
    if "://" not in text:
        raise UsageError(f"--node takes a URL: try http://{text}" if text[:1].isalnum() else
                         f"--node takes a URL such as {example}; got {text!r}")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--node takes an http:// or https:// URL such as {example}; got {text!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UsageError(f"--node {text!r}: the port is not a number from 0 to 65535") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, parts.hostname, port, path


def suggested_url(text: str) -> str:
    """The URL with the endpoint's path: what a user who left it out meant."""
    parts = urlsplit(text)
    return urlunsplit((parts.scheme, parts.netloc, MCP_PATH, "", ""))


class HttpMcpClient:
    """One MCP session with a node's endpoint. Use `open()` then `request()`, then `close()`.

    `deadline` (trio time) bounds everything; `timeout` is only named in messages.
    """

    def __init__(self, url: str, token: str | None, deadline: float, timeout: float) -> None:
        self.url = url
        self.token = token or None
        self.deadline = deadline
        self.timeout = timeout
        self.scheme, self.host, self.port, self.path = endpoint_url(url)
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._next_id = 0
        self._socket_timeout = timeout  # seconds left for the blocking work at hand
        self.server_info: dict[str, Any] = {}
        self.call_timeout: float | None = None  # the node's call timeout, if it announced it

    # ----- the session -------------------------------------------------------------------

    async def open(self) -> None:
        result = await self.request("initialize", {
            "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
            "clientInfo": {"name": "praxis-node-cli", "version": "1"},
        })
        version = result.get("protocolVersion")
        self.protocol_version = version if isinstance(version, str) else PROTOCOL_VERSION
        info = result.get("serverInfo")
        self.server_info = info if isinstance(info, dict) else {}
        # A praxis node announces its call timeout (node/mcp/endpoint.py, EXPERIMENTAL_KEY).
        capabilities = result.get("capabilities")
        experimental = capabilities.get("experimental") if isinstance(capabilities, dict) else None
        praxis = experimental.get("praxis") if isinstance(experimental, dict) else None
        seconds = praxis.get("callTimeoutSeconds") if isinstance(praxis, dict) else None
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and 0 < seconds < 1e7:
            self.call_timeout = float(seconds)
        await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"}, None)

    async def close(self) -> None:
        """End the session (the node forgets it at once) and close the connection."""
        try:
            if self.session_id is not None:
                await self._cleanup(lambda: self._delete(), CLOSE_TIMEOUT)
        except (OSError, CliError, http.client.HTTPException):
            pass  # the node is gone or did not care: nothing to end
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The result of one request; raises JsonRpcError when the node answers with an error."""
        self._next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            message["params"] = params
        answer = await self._post(message, self._next_id)
        assert answer is not None
        error = answer.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            raise JsonRpcError(method, code if isinstance(code, int) else 0, str(error.get("message") or "error"))
        result = answer.get("result")
        if not isinstance(result, dict):
            raise Unreachable(f"{self.url} answered {method} with no result: is it a praxis node's MCP endpoint?")
        return result

    async def call_tool(self, name: str, arguments: dict[str, Any], *, deadline: float,
                        meta: dict[str, Any] | None = None, on_progress: ProgressFn | None = None) -> dict[str, Any]:
        """The result of `tools/call`, following its event stream: progress for this call goes to
        `on_progress` as it arrives (a token is sent only then). Past `deadline` (trio time) the
        call is cancelled at the node and `TimedOut` raised; so it is when the caller's scope is
        cancelled (Ctrl-C), and the cancellation goes on."""
        self._next_id += 1
        request_id = self._next_id
        params: dict[str, Any] = {"name": name, "arguments": arguments}
        token = f"praxis-cli-{request_id}"
        meta = {**(meta or {}), **({"progressToken": token} if on_progress is not None else {})}
        if meta:
            params["_meta"] = meta
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}).encode()

        def deliver(message: dict[str, Any]) -> None:  # in the worker thread
            update = message.get("params") if message.get("method") == "notifications/progress" else None
            if on_progress is None or not isinstance(update, dict) or update.get("progressToken") != token:
                return  # log messages, list_changed: not for this command
            progress, total, text = update.get("progress"), update.get("total"), update.get("message")
            if not isinstance(progress, int | float):
                return
            try:
                trio.from_thread.run_sync(on_progress, float(progress),
                                          float(total) if isinstance(total, int | float) else None,
                                          text if isinstance(text, str) else None)
            except (trio.RunFinishedError, trio.Cancelled):
                raise _Stop from None

        stream = self._new_connection(max(deadline - trio.current_time(), 0.01) + 1.0)
        try:
            with trio.move_on_at(deadline) as scope:
                answer = await trio.to_thread.run_sync(  # type: ignore[call-arg]
                    lambda: self._exchange(body, "tools/call", request_id, deliver, stream), abandon_on_cancel=True)
        except (trio.Cancelled, KeyboardInterrupt):  # the caller gave up (Ctrl-C)
            with trio.CancelScope(shield=True):
                await self._give_up(stream, request_id, "the caller cancelled")
            raise
        if scope.cancelled_caught:
            await self._give_up(stream, request_id, "the caller's deadline passed")
            raise self._timed_out()
        stream.close()
        assert answer is not None
        error = answer.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            raise JsonRpcError("tools/call", code if isinstance(code, int) else 0, str(error.get("message") or "error"))
        result = answer.get("result")
        if not isinstance(result, dict):
            raise Unreachable(f"{self.url} answered tools/call with no result: is it a praxis node's MCP endpoint?")
        return result

    async def _give_up(self, stream: http.client.HTTPConnection, request_id: int, reason: str) -> None:
        """Cancel a call at the node (`notifications/cancelled`), then close its request."""
        cancel = json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled",
                             "params": {"requestId": request_id, "reason": reason}}).encode()
        await self._cleanup(lambda: self._notify_once(cancel), CANCEL_TIMEOUT)
        try:
            if stream.sock is not None:
                stream.sock.shutdown(socket.SHUT_RDWR)  # wakes the worker thread reading it
        except OSError:
            pass
        stream.close()

    def _notify_once(self, body: bytes) -> None:
        """POST one notification on a connection of its own (in a worker thread)."""
        conn = self._new_connection(CANCEL_TIMEOUT)
        try:
            conn.request("POST", self.path, body=body, headers=self._headers())
            conn.getresponse().read(ERROR_BODY)
        finally:
            conn.close()

    async def _cleanup(self, work: Callable[[], object], limit: float) -> None:
        """Best-effort blocking work after the command's deadline (ending a session, a cancel)."""
        self._socket_timeout = limit
        with trio.move_on_after(limit + 0.5):
            try:
                await trio.to_thread.run_sync(work, abandon_on_cancel=True)  # type: ignore[call-arg]
            except (OSError, http.client.HTTPException):
                pass  # the node is gone or did not care: nothing more to do

    async def list_tools(self) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            result = await self.request("tools/list", {"cursor": cursor} if cursor else {})
            page = result.get("tools")
            if isinstance(page, list):
                tools.extend(t for t in page if isinstance(t, dict))
            cursor = result.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                break
        return tools

    async def get_json(self, path: str) -> dict[str, Any]:
        """`GET path` (e.g. /status) on the endpoint's host and port, with the same token: a JSON object."""
        return await self._blocking(lambda: self._get(path), None)

    # ----- HTTP ---------------------------------------------------------------------------

    def _get(self, path: str) -> dict[str, Any]:
        where = f"{self.scheme}://{self._where()}{path}"
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            conn = self._connection(self._socket_timeout)
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()  # a kept-alive connection the server closed meanwhile: once more
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
            if response.status == 401:
                self._conn = None
                raise UsageError(f"401 from {where}: " + (
                    f"it refused the token; check --token or ${TOKEN_VARIABLE}" if self.token
                    else f"pass --token or set {TOKEN_VARIABLE}"))
            if response.status == 404:
                self._conn = None
                raise UsageError(f"404 from {where}: this node serves no {path} (an older praxis-node?)")
            if response.status != 200:
                self._conn = None
                raise Unreachable(f"{where} answered HTTP {response.status}: "
                                  f"{_error_text(response.read(ERROR_BODY))}")
            answer = _json_object(response.read(MAX_BODY))
            if answer is None:
                raise Unreachable(f"{where} did not answer with a JSON object")
            return answer
        except CliError:
            raise
        except TimeoutError:
            raise self._timed_out() from None
        except (OSError, http.client.HTTPException) as exc:
            self._conn = None
            raise Unreachable(f"cannot read {where}: {_reason(exc)}") from None


    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        if self.protocol_version is not None:
            headers["MCP-Protocol-Version"] = self.protocol_version
        return headers

    def _new_connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            import ssl  # only for https: it costs a tenth of a second

            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = self._new_connection(timeout)
        self._conn.timeout = timeout
        if self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        return self._conn

    async def _post(self, message: dict[str, Any], wanted_id: int | None) -> dict[str, Any] | None:
        body = json.dumps(message).encode()
        method = str(message.get("method"))
        return await self._blocking(lambda: self._exchange(body, method, wanted_id), None)

    async def _blocking(self, work: Callable[[], T], limit: float | None) -> T:
        """Run blocking socket work in a thread, within the deadline (and `limit` seconds)."""
        remaining = self.deadline - trio.current_time()
        if limit is not None:
            remaining = min(remaining, limit)
        if remaining <= 0:
            raise self._timed_out()
        self._socket_timeout = remaining
        with trio.move_on_after(remaining + 0.5) as scope:  # the socket timeout fires first
            # (trio's KI-protection decorator hides run_sync's keyword arguments from mypy)
            return await trio.to_thread.run_sync(work, abandon_on_cancel=True)  # type: ignore[call-arg]
        if self._conn is not None:  # the worker may still hold the connection: never reuse it
            self._conn = None
        assert scope.cancelled_caught
        raise self._timed_out()

    def _timed_out(self) -> CliError:
        return TimedOut(f"no answer from {self.url} within {self.timeout:g} s (--timeout)")

    def _exchange(self, body: bytes, method: str, wanted_id: int | None,
                  deliver: Callable[[dict[str, Any]], None] | None = None,
                  own: http.client.HTTPConnection | None = None) -> dict[str, Any] | None:
        """One POST, in a worker thread: the answer to `wanted_id` (None for a notification).
        `deliver` gets the other messages of its event stream; `own`: a connection of its own."""
        first = self.session_id is None
        try:
            conn = own or self._connection(self._socket_timeout)
            try:
                conn.request("POST", self.path, body=body, headers=self._headers())
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if first:
                    raise
                # A kept-alive connection the server closed meanwhile: once more on a new one.
                conn.close()
                conn.request("POST", self.path, body=body, headers=self._headers())
                response = conn.getresponse()
            if response.status >= 300 or response.status < 200:
                raise self._refused(response, method)
            session = response.getheader("mcp-session-id")
            if session and self.session_id is None:
                self.session_id = session
            if wanted_id is None:
                response.read(ERROR_BODY)
                return None
            kind = (response.getheader("content-type") or "").split(";")[0].strip().lower()
            if kind == "text/event-stream":
                answer = self._from_events(response, wanted_id, deliver)
            elif kind == "application/json":
                answer = _json_object(response.read(MAX_BODY))
            else:
                raise Unreachable(f"{self.url} answered {method} with {kind or 'no content type'}, not MCP: "
                                  "is it a praxis node's MCP endpoint?")
            if answer is None:
                raise Unreachable(f"{self.url} ended its answer to {method} without a result")
            if not response.isclosed() and own is None:
                conn.close()  # an event stream that still runs: do not wait for its end
                self._conn = None
            return answer
        except (CliError, _Stop):
            raise
        except ConnectionRefusedError:
            raise Unreachable(f"cannot reach {self.url}: connection refused (nothing listens at "
                              f"{self._where()}: is the node running, with its MCP endpoint on?)") from None
        except socket.gaierror:
            raise Unreachable(f"cannot reach {self.url}: the host name {self.host!r} does not resolve") from None
        except TimeoutError:
            raise self._timed_out() from None
        except (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError,
                BrokenPipeError) as exc:
            self._conn = None
            if first and ("multistream" in str(exc) or self._speaks_libp2p()):
                raise UsageError(f"{self._where()} is a node's p2p (libp2p) port, not its MCP endpoint: --node "
                                 "takes the endpoint's URL (mcp.port, e.g. http://127.0.0.1:8090/mcp); for the "
                                 f"p2p port use --peer /ip4/{self.host}/tcp/{self.port}/p2p/<peer ID>") from None
            if first:
                raise UsageError(f"{self.url} does not answer as an HTTP server ({_reason(exc)}): --node takes "
                                 "the URL of a node's MCP endpoint (e.g. http://127.0.0.1:8090/mcp)") from None
            raise Unreachable(f"{self.url} closed the connection during {method}: did the node stop?") from None
        except OSError as exc:
            if type(exc).__name__ == "SSLError" or "SSL" in type(exc).__name__:
                raise UsageError(f"{self.url}: TLS failed ({_reason(exc)}): is the endpoint http://, "
                                 "not https://?") from None
            raise Unreachable(f"cannot reach {self.url}: {_reason(exc)}") from None
        except http.client.HTTPException as exc:
            self._conn = None
            raise Unreachable(f"{self.url} gave a malformed HTTP answer ({_reason(exc)})") from None

    def _speaks_libp2p(self) -> bool:
        """Whether the port greets like libp2p (its listener sends `/multistream/1.0.0` on its own
        as a connection opens): asked only after an HTTP request there failed without an answer,
        which is a p2p port's way of refusing one (it may reset before its greeting is read)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=min(self._socket_timeout, 1.0)) as probe:
                return b"/multistream/" in probe.recv(64)
        except OSError:
            return False

    def _delete(self) -> None:
        conn = self._connection(self._socket_timeout)
        conn.request("DELETE", self.path, headers=self._headers())
        conn.getresponse().read(ERROR_BODY)

    def _where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _refused(self, response: http.client.HTTPResponse, method: str) -> CliError:
        """The error for an HTTP status other than 2xx: what it means for this user, in one line."""
        status = response.status
        detail = _error_text(response.read(ERROR_BODY))
        self._conn = None  # a refused request may leave the body half read: a fresh connection next
        if status == 401:
            if self.token:
                return UsageError(f"401 from the endpoint: it refused the token; check --token or "
                                  f"${TOKEN_VARIABLE} against the node's mcp.token")
            return UsageError(f"401 from the endpoint: pass --token or set {TOKEN_VARIABLE}")
        if status in (301, 302, 307, 308, 404, 405) and self.path.split("?")[0] != MCP_PATH:
            return UsageError(f"the endpoint path is {MCP_PATH}: try {suggested_url(self.url)}")
        if status == 404 and self.session_id is not None:
            return Unreachable(f"{self.url} no longer knows this session during {method}: did the node restart?")
        if status == 404:
            return UsageError(f"404 from {self.url}: no MCP endpoint at this URL")
        if status == 421:
            return UsageError(f"421 from the endpoint: it refused the Host {self._where()} ({detail}); "
                              "a node on a loopback address answers only to 127.0.0.1, localhost or ::1")
        if status == 403:
            return UsageError(f"403 from the endpoint: {detail}")
        if status >= 500:
            return Unreachable(f"the endpoint failed with HTTP {status} during {method}: {detail}")
        return Unreachable(f"{self.url} answered {method} with HTTP {status}: {detail}")

    @staticmethod
    def _from_events(response: http.client.HTTPResponse, wanted_id: int,
                     deliver: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any] | None:
        """Read server-sent events until the JSON-RPC answer to `wanted_id`; the others (progress
        and log notifications, list_changed) go to `deliver`, or are skipped."""
        for data in _events(response):
            message = _json_object(data)
            if message is None:
                continue
            if message.get("id") == wanted_id and "method" not in message:
                return message
            if deliver is not None:
                deliver(message)
        return None


def _events(response: http.client.HTTPResponse) -> Iterator[bytes]:
    """The data of each event of an event stream (`data:` lines joined by newlines)."""
    data: list[bytes] = []
    total = 0
    while True:
        line = response.readline(MAX_BODY)
        if not line:
            if data:
                yield b"\n".join(data)
            return
        total += len(line)
        if total > MAX_BODY:
            raise Unreachable(f"an answer over {MAX_BODY // (1024 * 1024)} MiB: refused")
        line = line.rstrip(b"\r\n")
        if not line:
            if data:
                yield b"\n".join(data)
            data = []
        elif line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _error_text(body: bytes) -> str:
    """The message of an error answer: {"error": "..."} (the node's guards), a JSON-RPC error, or text."""
    parsed = _json_object(body)
    if parsed is not None:
        error = parsed.get("error")
        if isinstance(error, dict):
            error = error.get("message")
        if isinstance(error, str) and error:
            return error[:200]
    text = body.decode("utf-8", "replace").strip().splitlines()
    return text[0][:200] if text else "no details"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() and exc.strerror[1:2].islower() else exc.strerror
    text = str(exc).strip()
    return text or type(exc).__name__
