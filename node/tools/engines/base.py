"""The one interface every execution engine implements, and the types it speaks.

An engine only executes a contract with arguments: it knows nothing of hosts, peers,
routers or MCP endpoints. Errors are the typed hierarchy of `protocols.errors`.
"""

from __future__ import annotations

from typing import Any, Protocol

from node.config import ToolContract
from protocols.call_events import NO_EVENTS, CallEvents
from protocols.errors import (
    ContractError,
    EngineUnavailable,
    PraxisError,
    ToolExecutionError,
    ToolTimeout,
)
from protocols.messages import ContentItem, ToolResult

__all__ = [
    "ContentItem",
    "ContractError",
    "EngineUnavailable",
    "ExecutionEngine",
    "PraxisError",
    "ToolExecutionError",
    "ToolResult",
    "ToolTimeout",
]


class ExecutionEngine(Protocol):
    """Runs tool contracts of one `engine:` kind.

    The Node creates each engine once and calls `aclose()` when it stops. `deadline` is an
    absolute `trio.current_time()` value: an engine must have returned or raised
    `ToolTimeout` by then.
    """

    def check_contract(self, contract: ToolContract) -> None:
        """Raise `ContractError` when the contract's engineSpec can never run (called at start)."""
        ...

    async def execute(
        self, contract: ToolContract, arguments: dict[str, Any], deadline: float,
        events: CallEvents = NO_EVENTS,
    ) -> ToolResult:
        """Run the tool; raise a `PraxisError` subclass on failure.

        `events` is the caller: progress, log messages and questions go there. When the call's
        scope is cancelled, the run must stop (process group killed, container run cancelled,
        upstream request cancelled) before this returns."""
        ...

    async def aclose(self) -> None:
        """Release connections and processes. Idempotent."""
        ...
