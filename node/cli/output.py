"""What the CLI prints: aligned tables for people, JSON for machines.

The `--json` shapes (one for each command, whether it came through `--peer` or `--node`):

- `tools`: a list of {name, meshName, provider, peerId, description, parameters: [{name, type,
  required, description}]}, one per tool and provider, sorted by name, provider, peer ID;
- `peers`: a list of {name, peerId, addrs, tools, self}, the node asked first (`self: true`);
- `call`: {content, isError, structuredContent (when the tool gave one)}, as MCP has it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from node.cli.remote import CallResult, PeerRow, ToolRow


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
