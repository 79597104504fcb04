"""`remote-mcp` engine: a tool contract served by forwarding the call to an MCP server.

engineSpec:
    address:   URL of the server (streamable HTTP by default, legacy SSE with transport: sse)
    command:   or an executable started over stdio, with `args` (list), `env` (map), `cwd`
    transport: streamable-http | sse | stdio (optional; inferred from address/command)
    headers:   HTTP headers (secret: never logged, never in cards, results or errors)
    tool:      the remote tool's name when it differs from the contract's name

The remote result (every content item, structured content, isError) comes back unchanged.
Sessions come from a shared `McpClientPool` (one per server, reused, reconnected on the next
call after a failure); the pool runs in the Node's nursery.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node.config import ToolContract
from node.mcp.clients import McpClientPool, McpServerParams, resolve_stdio_paths
from node.tools.engines.base import ContractError, ToolResult

_SPEC_KEYS = {"address", "command", "args", "env", "cwd", "transport", "headers", "tool"}


def _str_map(value: Any, key: str, contract: ToolContract) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        # Never echo the value: headers and env hold secrets.
        raise ContractError(f"tool {contract.name!r}: engineSpec.{key} must map strings to strings")
    return dict(value)


def server_params(contract: ToolContract, base_dir: Path | None = None) -> McpServerParams:
    """The server a remote-mcp contract forwards to; raises ContractError on a bad engineSpec."""
    spec = contract.engine_spec
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise ContractError(
            f"tool {contract.name!r}: unknown engineSpec key(s) {unknown} for engine remote-mcp; "
            f"expected some of {sorted(_SPEC_KEYS)}"
        )
    for key in ("address", "command", "transport", "tool", "cwd"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise ContractError(f"tool {contract.name!r}: engineSpec.{key} must be a string")
    args = spec.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str | int | float) for a in args):
        raise ContractError(f"tool {contract.name!r}: engineSpec.args must be a list of strings")
    command, cwd = resolve_stdio_paths(spec.get("command"), spec.get("cwd"), base_dir)
    try:
        return McpServerParams.build(
            contract.name,
            address=spec.get("address"),
            transport=spec.get("transport"),
            command=command,
            args=[str(a) for a in args],
            env=_str_map(spec.get("env"), "env", contract),
            headers=_str_map(spec.get("headers"), "headers", contract),
            cwd=cwd,
        )
    except ValueError as exc:
        raise ContractError(f"tool {contract.name!r}: engineSpec: {exc}") from None


def remote_tool_name(contract: ToolContract) -> str:
    tool = contract.engine_spec.get("tool")
    return tool if isinstance(tool, str) and tool else contract.name


class RemoteMcpEngine:
    """Executes `remote-mcp` contracts through a shared `McpClientPool`."""

    def __init__(self, pool: McpClientPool, base_dir: Path | None = None) -> None:
        self.pool = pool
        self.base_dir = base_dir
        self._params: dict[str, McpServerParams] = {}

    def _server(self, contract: ToolContract) -> McpServerParams:
        params = self._params.get(contract.name)
        if params is None:
            params = server_params(contract, self.base_dir)
            self._params[contract.name] = params
        return params

    def check_contract(self, contract: ToolContract) -> None:
        self._params.pop(contract.name, None)
        self._server(contract)

    async def execute(
        self, contract: ToolContract, arguments: dict[str, Any], deadline: float
    ) -> ToolResult:
        return await self.pool.call_tool(
            self._server(contract), remote_tool_name(contract), arguments, deadline
        )

    async def aclose(self) -> None:
        """The pool is closed by whoever runs it (the Node); forget the parsed specs."""
        self._params.clear()
