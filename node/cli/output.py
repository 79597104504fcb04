"""What the CLI prints: aligned tables for people, JSON for machines.

The `--json` shapes (one for each command, whether it came through `--peer` or `--node`):

- `tools`: a list of {name, meshName, provider, peerId, description, parameters: [{name, type,
  required, description}]}, one per tool and provider, sorted by name, provider, peer ID;
- `peers`: a list of {name, peerId, addrs, tools, self}, the node asked first (`self: true`);
- `call`: {content, isError, structuredContent (when the tool gave one)}, as MCP has it;
- `status`: the node's `GET /status` shape (node/mesh/view.py, "format": "praxis-node-status/1")
  plus "source": "status endpoint" (through --node) or "peer card" (through --peer: built from
  the peer's card and peer list; uptime, direction, latency, calls, errors, the recent window,
  engines and recent calls are null, as only the node itself knows them);
- `tools --describe NAME`: {name, description, parameters: [{name, type, required,
  description}], providers: [{name, peerId, callAs}]}, callAs being what `call` takes there.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from node.cli.remote import SOURCE_CARD, CallResult, PeerRow, ToolRow


def table(headers: list[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def print_tools(rows: list[ToolRow], *, as_json: bool) -> None:
    if as_json:
        print_json([r.to_json() for r in rows])
        return
    # An MCP-renamed tool shows its mesh name too ("echo_1a2b3c4d (echo@1a2b3c4d)").
    table(["tool", "node", "peer ID", "description"],
          [[r.name if r.name == r.mesh_name else f"{r.name} ({r.mesh_name})", r.provider, r.peer_id,
            r.description] for r in rows])


def print_peers(rows: list[PeerRow], *, as_json: bool) -> None:
    if as_json:
        print_json([r.to_json() for r in rows])
        return
    table(["node", "peer ID", "addresses", "tools"],
          [[r.name + (" (this node)" if r.is_self else ""), r.peer_id, ", ".join(r.addrs), ", ".join(r.tools)]
           for r in rows])


def print_result(result: CallResult, *, as_json: bool) -> None:
    """The result on stdout (or, without --json, a failure as one line on stderr)."""
    if as_json:
        print_json(result.to_json())
    elif result.is_error:
        print(f"error: {result.text()}", file=sys.stderr)
    else:
        print(result.text())


def describe_tool(rows: list[ToolRow]) -> dict[str, Any]:
    """One tool (its rows, one per provider; the first one's parameters) as `tools --describe` shows it."""
    first = rows[0]
    return {"name": first.mesh_name, "description": first.description,
            "parameters": [p.to_json() for p in first.parameters],
            "providers": [{"name": r.provider, "peerId": r.peer_id, "callAs": r.name} for r in rows]}


def print_tool_description(rows: list[ToolRow], *, as_json: bool) -> None:
    described = describe_tool(rows)
    if as_json:
        print_json(described)
        return
    print(f"{described['name']}: {described['description'] or '(no description)'}\n")
    if described["parameters"]:
        table(["parameter", "type", "required", "description"],
              [[p["name"], p["type"] or "any", "yes" if p["required"] else "no", p["description"]]
               for p in described["parameters"]])
    else:
        print("no parameters")
    print()
    table(["served by", "peer ID", "call as"],
          [[p["name"], p["peerId"], p["callAs"]] for p in described["providers"]])


def _or_dash(value: Any, suffix: str = "") -> str:
    return "-" if value is None else f"{value}{suffix}"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _pair(value: Any) -> str:
    """A {sent, received} count as "sent/received"."""
    return f"{value.get('sent', 0)}/{value.get('received', 0)}" if isinstance(value, dict) else "-"


def print_status(status: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print_json(status)
        return
    node = status.get("node") or {}
    uptime = node.get("uptimeSeconds")
    print(f"node     {node.get('name')}  {node.get('peerId')}")
    print(f"version  {_or_dash(node.get('version'))}")
    print(f"uptime   {_or_dash(None if uptime is None else round(uptime, 1), ' s')}"
          + ("" if node.get("startedAt") is None else f" (since {node['startedAt']})"))
    for n, addr in enumerate(node.get("addrs") or []):
        print(f"{'address' if n == 0 else '':8} {addr}")
    print(f"source   {status.get('source')}")
    if status.get("source") == SOURCE_CARD:
        print("         (from the peer's card and peer list: uptime, latency and calls come only through "
              "--node URL, the node's status endpoint)")
    print()
    peers = status.get("peers") or []
    if peers:
        table(["peer", "peer ID", "direction", "connected since", "latency", "calls sent/recv", "errors sent/recv"],
              [[p.get("name") or "?", p.get("peerId"), _or_dash(p.get("direction")), _or_dash(p.get("connectedSince")),
                _ms(p.get("latencyMs")), _pair(p.get("calls")), _pair(p.get("errors"))] for p in peers])
    else:
        print("no peers")
    print()
    tools = status.get("tools") or []
    if tools:
        window = status.get("window")
        recent = f"recent {window['seconds']} s" if isinstance(window, dict) else "recent"
        table(["tool", "providers", "calls", "errors", f"{recent}: calls", "errors", "p50", "p95"],
              [[t.get("name"), ", ".join(str(p.get("name") or p.get("peerId") or "?")
                                         for p in t.get("providers") or []),
                _or_dash(t.get("calls")), _or_dash(t.get("errors")),
                *((_or_dash(r.get("calls")), _or_dash(r.get("errors")), _ms(r.get("p50Ms")), _ms(r.get("p95Ms")))
                  if isinstance(r := t.get("recent"), dict) else ("-", "-", "-", "-"))] for t in tools])
    else:
        print("no tools")
