"""`remote-mcp` engine: a tool contract served by forwarding the call to an MCP server.

engineSpec:
    address:   URL of the server (streamable HTTP by default, legacy SSE with transport: sse)
    command:   or an executable started over stdio, with `args` (list), `env` (map), `cwd`
    transport: streamable-http | sse | stdio (optional; inferred from address/command)
    headers:   HTTP headers (secret: never logged, never in cards, results or errors)
    tool:      the remote tool's name when it differs from the contract's name

The remote result (every content item, structured content, isError) comes back unchanged.
Sessions come from a shared `McpClientPool` (one per server, reused, reconnected on the next
call after a failure); the pool runs in the Node's nursery. What the server says during the
call (progress, log, sampling and elicitation) reaches the call's events, and a cancelled call
sends it `notifications/cancelled` (`node.mcp.clients`, `node.mcp.session_events`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node.config import RemoteMcpSpec, ToolContract
from node.mcp.clients import McpClientPool, McpServerParams, resolve_stdio_paths
from node.tools.engines.base import ToolResult
from protocols.call_events import NO_EVENTS, CallEvents


def server_params(contract: ToolContract, base_dir: Path | None = None, *, fresh: bool = False) -> McpServerParams:
    """The server a remote-mcp contract forwards to; raises ContractError on a bad engineSpec
    (`node.config.RemoteMcpSpec`, which checks the same rule as `McpServerParams.build`)."""
    spec = contract.typed_spec(RemoteMcpSpec, fresh=fresh)
    command, cwd = resolve_stdio_paths(spec.command, spec.cwd, base_dir)
    return McpServerParams.build(
        contract.name, address=spec.address, transport=spec.transport, command=command,
        args=spec.args, env=spec.env, headers=spec.headers, cwd=cwd,
    )


def remote_tool_name(contract: ToolContract) -> str:
    return contract.typed_spec(RemoteMcpSpec).tool or contract.name


class RemoteMcpEngine:
    """Executes `remote-mcp` contracts through a shared `McpClientPool`."""

    def __init__(self, pool: McpClientPool, base_dir: Path | None = None) -> None:
        self.pool = pool
        self.base_dir = base_dir
        self._params: dict[str, McpServerParams] = {}

    def _server(self, contract: ToolContract, *, fresh: bool = False) -> McpServerParams:
        params = None if fresh else self._params.get(contract.name)
        if params is None:
            params = server_params(contract, self.base_dir, fresh=fresh)
            self._params[contract.name] = params
        return params

    def check_contract(self, contract: ToolContract) -> None:
        self._server(contract, fresh=True)

    async def execute(
        self, contract: ToolContract, arguments: dict[str, Any], deadline: float,
        events: CallEvents = NO_EVENTS,
    ) -> ToolResult:
        return await self.pool.call_tool(
            self._server(contract), remote_tool_name(contract), arguments, deadline, events
        )

    async def aclose(self) -> None:
        """The pool is closed by whoever runs it (the Node); forget the parsed specs."""
        self._params.clear()
