"""An engine created on first use: keeps a heavy SDK import (dagger-io: ~1.3 s) off start-up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from node.config import ToolContract
from node.tools.engines.base import ExecutionEngine, ToolResult
from protocols.call_events import NO_EVENTS, CallEvents


class LazyEngine:
    def __init__(self, factory: Callable[[], ExecutionEngine]) -> None:
        self._factory = factory
        self._engine: ExecutionEngine | None = None

    def _get(self) -> ExecutionEngine:
        if self._engine is None:
            self._engine = self._factory()
        return self._engine

    def check_contract(self, contract: ToolContract) -> None:
        self._get().check_contract(contract)

    async def execute(
        self, contract: ToolContract, arguments: dict[str, Any], deadline: float,
        events: CallEvents = NO_EVENTS,
    ) -> ToolResult:
        return await self._get().execute(contract, arguments, deadline, events)

    async def aclose(self) -> None:
        if self._engine is not None:
            await self._engine.aclose()
