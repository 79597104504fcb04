"""A running node as the CLI sees it: one interface, whether reached over libp2p or MCP.

`praxis-node call|tools|peers` open a `RemoteNode` and ask it; they never know which of the two
implementations answers:

- `--peer MULTIADDR`: `node.cli.remote_peer.PeerRemote`, a short-lived libp2p node that dials
  the peer (main.py imports it only then: it pulls in libp2p);
- `--node URL`: `node.cli.remote_endpoint.EndpointRemote`, an MCP client to the node's endpoint.

This module imports neither implementation (they import it), so it stays light.

Both give the same rows (`ToolRow`, `PeerRow`) and the same `CallResult`, so a command has one
code path and its `--json` output one shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

ProgressFn = Callable[[float, float | None, str | None], None]  # (progress, total, message)
SETUP_TIMEOUT = 30.0  # seconds to reach the node and list its tools when --timeout is not given


@dataclass(frozen=True)
class Parameter:
    """One parameter of a tool, as its input schema declares it."""

    name: str
    type: str  # a JSON Schema type ("string", "number", ...); "a|b" for a list of types; "" if none
    required: bool = False
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "required": self.required, "description": self.description}


@dataclass(frozen=True)
class ToolRow:
    """One tool of the mesh from one provider (a tool served by two nodes is two rows)."""

    name: str  # what to pass to `call` through this remote
    mesh_name: str  # the mesh's name for it (differs from `name` only for MCP-renamed tools)
    provider: str  # the name of the node that serves it
    peer_id: str  # that node's peer ID
    description: str = ""
    parameters: tuple[Parameter, ...] = ()

    def param_types(self) -> dict[str, str]:
        return {p.name: p.type for p in self.parameters}

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "meshName": self.mesh_name, "provider": self.provider,
                "peerId": self.peer_id, "description": self.description,
                "parameters": [p.to_json() for p in self.parameters]}


@dataclass(frozen=True)
class PeerRow:
    """A node: the one asked (`is_self`) or a peer it knows."""

    name: str
    peer_id: str
    addrs: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()  # tool names, sorted
    is_self: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "peerId": self.peer_id, "addrs": list(self.addrs),
                "tools": list(self.tools), "self": self.is_self}


@dataclass(frozen=True)
class CallResult:
    """What a call returned: MCP-shaped content, structured content, and whether it failed.

    A call the node refused (unknown tool, bad arguments, no provider) is an error result with
    the node's message as its text, like a tool that ran and failed.
    """

    content: list[dict[str, Any]] = field(default_factory=list)
    is_error: bool = False
    structured_content: dict[str, Any] | None = None
    # The node knows no tool of that name, or no provider serves it any more (not in --json).
    unknown_tool: bool = False

    @classmethod
    def failure(cls, message: str, *, unknown_tool: bool = False) -> CallResult:
        return cls(content=[{"type": "text", "text": message}], is_error=True, unknown_tool=unknown_tool)

    def text(self) -> str:
        """What a person reads: the text content, and a note for each other item."""
        parts = []
        for item in self.content:
            kind = str(item.get("type", ""))
            if kind == "text":
                parts.append(str(item.get("text") or ""))
            else:
                mime = item.get("mimeType") or item.get("mime_type") or ""
                parts.append(f"[{kind} {mime}]" if mime else f"[{kind}]")
        return "".join(parts)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"content": self.content, "isError": self.is_error}
        if self.structured_content is not None:
            out["structuredContent"] = self.structured_content
        return out


class RemoteNode(Protocol):
    """A running node, asked by the CLI. Implementations raise `PraxisError` (or an `OSError`)
    when the node cannot be reached; a call the node answers, even with a refusal, returns."""

    async def tools(self) -> list[ToolRow]:
        """Every tool the node knows of, its own and its peers', sorted by name and provider."""
        ...

    async def find_tool(self, name: str) -> ToolRow | None:
        """The tool `call NAME` would reach (NAME as listed, or its mesh name), if the node lists it."""
        ...

    async def call(self, name: str, arguments: dict[str, Any], *, timeout: float | None = None,
                   on_progress: ProgressFn | None = None) -> CallResult:
        """Call a tool; wait `timeout` seconds from the command's start (None: as long as the
        node's call timeout). Progress reports go to `on_progress`. A cancelled scope (Ctrl-C)
        cancels the call at the node before it ends."""
        ...

    async def peers(self) -> list[PeerRow]:
        """The node itself first, then the peers it knows."""
        ...

    async def status(self) -> dict[str, Any]:
        """The node's status in the `GET /status` shape (node/mesh/view.py), plus `source`:
        SOURCE_ENDPOINT when the node reported it, SOURCE_CARD when built from its card and
        peer list (then what only the node knows, such as latency and calls, is null)."""
        ...


# ----- shared by both implementations --------------------------------------------------------

STATUS_FORMAT = "praxis-node-status/1"  # node/mesh/view.py's STATUS_FORMAT (a test checks they agree)
SOURCE_ENDPOINT = "status endpoint"  # `status --node`: the node's own GET /status
SOURCE_CARD = "peer card"  # `status --peer`: its card and peer list; no uptime, latency or calls


def status_from_rows(me: PeerRow, others: list[PeerRow], tools: list[ToolRow], version: str | None) -> dict[str, Any]:
    """The /status shape from what any remote can tell (its card, its peer list, its tools),
    with null for everything only the node itself knows."""
    by_name: dict[str, list[ToolRow]] = {}
    for row in tools:
        by_name.setdefault(row.mesh_name, []).append(row)
    return {
        "format": STATUS_FORMAT,
        "source": SOURCE_CARD,
        "node": {"name": me.name, "peerId": me.peer_id, "version": version, "addrs": list(me.addrs),
                 "startedAt": None, "uptimeSeconds": None, "ready": None, "tools": list(me.tools)},
        "peers": [{"name": p.name or None, "peerId": p.peer_id, "direction": None, "connectedSince": None,
                   "connectedSeconds": None, "latencyMs": None, "calls": None, "errors": None,
                   "tools": list(p.tools)} for p in others],
        "tools": [{"name": name,
                   "providers": [{"kind": "local" if r.peer_id == me.peer_id else "peer", "name": r.provider,
                                  "peerId": r.peer_id} for r in rows],
                   "description": rows[0].description,
                   "parameters": [p.to_json() for p in rows[0].parameters],
                   "calls": None, "errors": None, "recent": None}
                  for name, rows in sorted(by_name.items())],
        "window": None, "calls": None, "engines": None, "recentCalls": None,
    }


def parameters_from_schema(schema: Mapping[str, Any] | None) -> tuple[Parameter, ...]:
    """A tool's parameters from its JSON input schema (the object's `properties`)."""
    if not isinstance(schema, Mapping):
        return ()
    properties = schema.get("properties")
    required = schema.get("required")
    required_names = {r for r in required if isinstance(r, str)} if isinstance(required, list) else set()
    if not isinstance(properties, Mapping):
        return ()
    out = []
    for name, prop in properties.items():
        prop = prop if isinstance(prop, Mapping) else {}
        kind = prop.get("type", "")
        if isinstance(kind, list):
            kind = "|".join(str(k) for k in kind)
        description = prop.get("description", "")
        out.append(Parameter(str(name), kind if isinstance(kind, str) else "", str(name) in required_names,
                             description if isinstance(description, str) else ""))
    return tuple(out)


def split_arguments(pairs: list[str]) -> list[tuple[str, str]]:
    """`key=value` pairs, checked before anything is dialled; raises ValueError on a bad one."""
    out = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"argument {pair!r} is not key=value")
        out.append((key, raw))
    return out


def typed_arguments(pairs: list[tuple[str, str]], types: Mapping[str, str]) -> dict[str, Any]:
    """Values are JSON unless the tool declares the parameter a string (`text=3` stays "3")."""
    arguments: dict[str, Any] = {}
    for key, raw in pairs:
        if types.get(key) == "string":
            arguments[key] = raw
            continue
        try:
            arguments[key] = json.loads(raw)
        except ValueError:
            arguments[key] = raw
    return arguments


def unknown_tool_message(name: str, listed: ToolRow | None, names: list[str], where: str) -> str:
    """Why `call NAME` found no tool, in one line, with what to do: the closest listed names, or
    the node's tools, or (for a tool listed a moment ago) that its provider has left.

    `where` is how the user named the node (`--node URL` or `--peer ADDR`), for the hint."""
    if listed is not None:
        return (f"tool {name!r} has no provider any more: {listed.provider or 'the node'} served it and has "
                f"left the mesh or cannot be reached; `praxis-node tools {where}` lists what is served now")
    import difflib  # only on this path

    names = sorted(set(names))
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)
    if close:
        options = " or ".join(repr(by_lower[c]) for c in close)
        return f"unknown tool {name!r}; did you mean {options}?"
    if not names:
        return (f"unknown tool {name!r}: the node knows no tools yet (its peers' cards may still be on "
                f"their way; `praxis-node tools {where}` lists them)")
    if len(names) <= 8:
        return f"unknown tool {name!r}; the node knows {', '.join(names)}"
    return f"unknown tool {name!r}; `praxis-node tools {where}` lists the {len(names)} tools the node knows"


def sorted_tools(rows: list[ToolRow]) -> list[ToolRow]:
    return sorted(rows, key=lambda r: (r.name, r.provider, r.peer_id))


def sorted_peers(self_row: PeerRow, others: list[PeerRow]) -> list[PeerRow]:
    return [self_row, *sorted(others, key=lambda r: (r.name, r.peer_id))]
