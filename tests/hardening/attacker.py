"""A hostile peer: a bare libp2p host that answers the praxis protocols with whatever a test
tells it to (its card, its peer list), and records the tool calls it receives."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.abc import IHost, INetStream

from protocols.card import CARD_PROTOCOL
from protocols.peers import PEERS_PROTOCOL
from protocols.tool import TOOL_PROTOCOL
from tests.raw_peer import frame, raw_host, read_line


@dataclass
class Attacker:
    host: IHost
    card: dict[str, Any]
    peer_list: dict[str, Any] = field(default_factory=lambda: {"peers": []})
    lists_served: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    served: trio.Event = field(default_factory=trio.Event)  # set at each peer list served
    called: trio.Event = field(default_factory=trio.Event)

    @property
    def peer_id(self) -> str:
        return self.host.get_id().to_string()

    @property
    def addr(self) -> str:
        return f"{self.host.get_addrs()[0]}/p2p/{self.peer_id}"

    async def serve_card(self, stream: INetStream) -> None:
        try:
            await stream.write(frame({**self.card, "peerId": self.peer_id}))
            with trio.move_on_after(5):
                await read_line(stream)
        except Exception:  # the node may reset a card it refuses: nothing to do here
            pass
        finally:
            await _close(stream)

    async def serve_peers(self, stream: INetStream) -> None:
        try:
            await stream.write(json.dumps(self.peer_list, separators=(",", ":")).encode() + b"\n")
        finally:
            await _close(stream)
            self.lists_served += 1
            self.served.set()
            self.served = trio.Event()

    async def serve_tool(self, stream: INetStream) -> None:
        try:
            request = json.loads(await read_line(stream))
            self.tool_calls.append(request)
            self.called.set()
            await stream.write(frame({"id": request.get("id", ""), "result": {
                "content": [{"type": "text", "text": "from the attacker"}], "isError": False}}))
        finally:
            await _close(stream)


async def _close(stream: INetStream) -> None:
    with trio.move_on_after(2):
        try:
            await stream.close()
        except Exception:  # already reset by the node
            return


@asynccontextmanager
async def attacker(tools: list[dict[str, Any]], name: str = "attacker") -> AsyncIterator[Attacker]:
    async with raw_host() as host:
        peer = Attacker(host, {"name": name, "version": "1", "capabilities": ["tools"], "tools": tools})
        host.set_stream_handler(CARD_PROTOCOL, peer.serve_card)  # type: ignore[arg-type]
        host.set_stream_handler(PEERS_PROTOCOL, peer.serve_peers)  # type: ignore[arg-type]
        host.set_stream_handler(TOOL_PROTOCOL, peer.serve_tool)  # type: ignore[arg-type]
        yield peer


class LogWatch(logging.Handler):
    """Sets an event when a log message (of this process) matches a pattern."""

    def __init__(self, pattern: str) -> None:
        super().__init__(logging.DEBUG)
        self.pattern = re.compile(pattern)
        self.seen = trio.Event()
        self.matches: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.pattern.search(message):
            self.matches.append(message)
            self.seen.set()


@asynccontextmanager
async def watching(logger: str, pattern: str) -> AsyncIterator[LogWatch]:
    watch = LogWatch(pattern)
    log = logging.getLogger(logger)
    old_level = log.level
    log.addHandler(watch)
    log.setLevel(logging.DEBUG)
    try:
        yield watch
    finally:
        log.removeHandler(watch)
        log.setLevel(old_level)


async def wait_for_file_text(path: Any, pattern: str, alive: Callable[[], bool], timeout: float) -> str | None:
    """Poll another process's log file until `pattern` appears (or the process died)."""
    regex = re.compile(pattern)
    with trio.move_on_after(timeout):
        while alive():
            text = path.read_text(errors="replace") if path.exists() else ""
            found = regex.search(text)
            if found:
                return found.group()
            await trio.sleep(0.05)  # another process's file: no event to wait on
    return None
