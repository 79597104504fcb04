"""A short-lived node that dials one peer: the `RemoteNode` behind `praxis-node ... --peer`.

Imports libp2p (through `node.app`): `node.cli.main` imports this module only for `--peer`.

The client dials the peer once, itself, and a failed dial is reported at once, in words
(`--peer ADDR: connection refused (nothing listens at that address: ...)`), instead of
waiting for the peer's card until the timeout. py-libp2p logs each failed dial to stderr on
its own (its `import` leaves its logger without a handler, so Python's last-resort handler
prints it): `quiet_libp2p_logging` takes that path away for CLI commands.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import PeerInfo

from node.app import Node
from node.cli.logs import quiet_libp2p_logging
from node.cli.remote import (
    SETUP_TIMEOUT,
    CallResult,
    PeerRow,
    ProgressFn,
    ToolRow,
    parameters_from_schema,
    sorted_peers,
    sorted_tools,
    status_from_rows,
)
from node.config import parse_config
from node.mesh.dialer import dial_failure_reason
from node.mesh.host import parse_peer_addr
from protocols.call_events import LogMessage, Progress, not_supported
from protocols.errors import NoProvider, PeerUnreachable, ToolNotFound, ToolTimeout
from protocols.messages import ToolSpec
from protocols.peers import PeerRecord

LISTING_TIMEOUT = 5.0  # seconds to wait for the peer's peer list when it only completes a listing


quiet_libp2p_logging()  # importing libp2p (above) reset its logger: silence it again

UNKNOWN_TOOL_CODES = (ToolNotFound.code, NoProvider.code)


def client_node(bootstrap: list[str], name: str = "praxis-cli") -> Node:
    """A node with no tools, no mDNS, no discovery (it only talks to the one peer), a throw-away key,
    listening on an ephemeral port."""
    config = parse_config(
        {"agent": {"name": name}, "p2p": {"port": 0, "enable_mdns": False, "peer_exchange": False, "discovery": False,
                                           "bootstrap_nodes": bootstrap},
         "mcp": {"enabled": False}},
        env={},
    )
    return Node(config, key_pair=create_new_key_pair())


@asynccontextmanager
async def connected_client(peer_addr: str, timeout: float = 10.0) -> AsyncIterator[tuple[Node, str]]:
    """Run a client node, dial the peer once and wait for its card; yields (node, peer ID).

    A failed dial raises `PeerUnreachable` at once, saying why (refused, another peer ID...)."""
    info = parse_peer_addr(peer_addr)
    target = info.peer_id.to_string()
    deadline = trio.current_time() + timeout
    node = client_node([])  # no bootstrap: this dial is the only one, and its failure is ours to tell
    async with node.running():
        try:
            with trio.fail_at(deadline):
                await node.host.connect(info)
        except trio.TooSlowError:
            raise PeerUnreachable(f"--peer {peer_addr}: no connection within {timeout:g} s") from None
        except Exception as exc:  # libp2p raises many types for a failed dial
            raise PeerUnreachable(f"--peer {peer_addr}: {dial_problem(exc, info)}") from None
        with trio.move_on_at(deadline):
            while node.directory.get(target) is None:
                await node.directory.changed.wait_past(node.directory.changed.version)
        if node.directory.get(target) is None:
            raise PeerUnreachable(f"--peer {peer_addr}: connected, but no card within {timeout:g} s: "
                                  "is it a praxis node?")
        yield node, target


def dial_problem(exc: BaseException, info: PeerInfo) -> str:
    """Why the dial of `--peer` failed, in words: the mesh's reasons, plus two a CLI user meets
    and the mesh's words do not name (another node at that address; an HTTP port)."""
    texts = [f"{type(e).__name__}: {e}" for e in _causes(exc)]
    if any("PeerIDMismatchesPubkey" in t or "does not correspond to the received pubkey" in t for t in texts):
        return ("the node at that address has another peer ID: check the /p2p/ part (`praxis-node id -c CONFIG` "
                "prints it), or the node was restarted with a new key")
    if any("TTP/1." in t for t in texts):  # the first byte went to multistream's length prefix
        addr = str(info.addrs[0]) if info.addrs else ""
        found = re.match(r"/ip([46])/([^/]+)/tcp/(\d+)", addr)
        url = "http://HOST:PORT/mcp"
        if found:
            host = f"[{found[2]}]" if found[1] == "6" else found[2]
            url = f"http://{host}:{found[3]}/mcp"
        return (f"{addr or 'that address'} speaks HTTP, not libp2p: if it is a node's MCP endpoint, use --node "
                f"{url}; --peer takes the node's p2p address")
    return dial_failure_reason(exc)


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception, its causes and contexts, and the members of its groups (libp2p's MultiError too)."""
    out: list[BaseException] = []
    stack = [exc]
    while stack and len(out) < 100:
        current = stack.pop()
        if any(current is seen for seen in out):
            continue
        out.append(current)
        for attribute in ("exceptions", "errors"):
            group = getattr(current, attribute, None)
            if isinstance(group, list | tuple):
                stack.extend(e for e in group if isinstance(e, BaseException))
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return out


def spec_schema(spec: ToolSpec) -> dict[str, Any]:
    """The tool's input schema, as a node's MCP endpoint lists it: its own, else one from its parameters."""
    if spec.input_schema:
        return dict(spec.input_schema)
    return {"type": "object",
            "properties": {p.name: {"type": p.type, "description": p.description} for p in spec.parameters},
            "required": [p.name for p in spec.parameters if p.required]}


def tool_row(spec: ToolSpec, provider: str, peer_id: str) -> ToolRow:
    return ToolRow(name=spec.name, mesh_name=spec.name, provider=provider, peer_id=peer_id,
                   description=spec.description, parameters=parameters_from_schema(spec_schema(spec)))


class PeerRemote:
    """The peer as its card and its peer list describe it; calls go to it over `/praxis/tool`.

    Its tools are those of its card and of the cards of the peers it lists; the peer serves a
    call or forwards it to a peer that can.
    """

    def __init__(self, node: Node, peer_id: str, timeout: float | None) -> None:
        self.node = node
        self.peer_id = peer_id
        self.timeout = timeout if timeout is not None else SETUP_TIMEOUT  # listing the peer's tools
        self.started = trio.current_time()  # the command's start: --timeout counts from it
        self._listed: list[PeerRecord] | None = None  # the peer's peer list, asked once per command

    @classmethod
    @asynccontextmanager
    async def open(cls, peer_addr: str, timeout: float | None) -> AsyncIterator[PeerRemote]:
        started = trio.current_time()
        async with connected_client(peer_addr, timeout if timeout is not None else SETUP_TIMEOUT) as (node, peer_id):
            remote = cls(node, peer_id, timeout)
            remote.started = started
            yield remote

    def _own_rows(self) -> list[ToolRow]:
        entry = self.node.directory.get(self.peer_id)
        assert entry is not None  # connected_client waited for the card
        return [tool_row(t, entry.card.name, self.peer_id) for t in entry.card.tools]

    async def _peer_list(self, *, strict: bool) -> list[PeerRecord]:
        """The peers the node lists, without this client. `strict`: a failure raises, else is empty."""
        if self._listed is not None:
            return self._listed
        try:
            # Listing tools goes on without the peers' tools after a short wait, as it always did.
            timeout = self.timeout if strict else min(self.timeout, LISTING_TIMEOUT)
            listed = await self.node.fetch_peer_list(self.peer_id, timeout=timeout)
        except (PeerUnreachable, ToolTimeout):
            if strict:
                raise
            return []
        self._listed = [r for r in listed.peers if r.peer_id != self.node.peer_id]
        return self._listed

    async def tools(self) -> list[ToolRow]:
        rows = self._own_rows()
        for record in await self._peer_list(strict=False):
            rows.extend(tool_row(t, record.name, record.peer_id) for t in record.tools)
        return sorted_tools(rows)

    async def find_tool(self, name: str) -> ToolRow | None:
        # The peer's own card first: no round trip for its own tools.
        own = next((r for r in self._own_rows() if r.name == name), None)
        return own or next((r for r in await self.tools() if r.name == name), None)

    async def call(self, name: str, arguments: dict[str, Any], *, timeout: float | None = None,
                   on_progress: ProgressFn | None = None) -> CallResult:
        # The call's deadline: --timeout from the command's start, else this client node's call
        # timeout (the peer still cuts the call at its own). A cancelled scope (Ctrl-C) cancels
        # the call: the libp2p layer tells the peer.
        if timeout is not None:
            seconds, waited = max(self.started + timeout - trio.current_time(), 0.0), f"{timeout:g} s (--timeout)"
        else:
            seconds = self.node.config.limits.call_timeout_seconds
            waited = f"{seconds:g} s (the call timeout)"
        try:
            response = await self.node.request_peer(self.peer_id, name, arguments, timeout=seconds,
                                                    events=_ProgressEvents(on_progress))
        except ToolTimeout:  # the peer is there (it sent its card): the call took too long
            return CallResult.failure(f"no result from {name!r} within {waited}")
        if response.error is not None:
            return CallResult.failure(response.error.message, unknown_tool=response.error.code in UNKNOWN_TOOL_CODES)
        result = response.result.to_wire()
        return CallResult(content=list(result.get("content", [])), is_error=bool(result.get("isError")),
                          structured_content=result.get("structuredContent"))

    async def peers(self) -> list[PeerRow]:
        entry = self.node.directory.get(self.peer_id)
        assert entry is not None
        me = PeerRow(entry.card.name, self.peer_id, tuple(entry.card.addrs),
                     tuple(sorted(t.name for t in entry.card.tools)), is_self=True)
        others = [PeerRow(r.name, r.peer_id, tuple(r.addrs), tuple(sorted(t.name for t in r.tools)))
                  for r in await self._peer_list(strict=True)]
        return sorted_peers(me, others)

    async def status(self) -> dict[str, Any]:
        """What the peer's card and peer list tell; uptime, latency and calls only its /status knows."""
        entry = self.node.directory.get(self.peer_id)
        assert entry is not None
        me, *others = await self.peers()
        return status_from_rows(me, others, await self.tools(), entry.card.version or None)


class _ProgressEvents:
    """The CLI as the caller of a call through --peer: it shows progress, and asks nothing."""

    log_level = None  # the CLI shows no log messages

    def __init__(self, on_progress: ProgressFn | None) -> None:
        self.on_progress = on_progress

    async def progress(self, update: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(update.progress, update.total, update.message)

    async def log(self, message: LogMessage) -> None:
        return None

    async def ask(self, method: str, params: dict[str, Any], deadline: float) -> dict[str, Any]:
        raise not_supported(method)  # the CLI declares no sampling or elicitation
