"""The tools this node serves itself: their contracts and the engines that run them."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from node.config import ToolContract
from node.tools.arguments import check_arguments
from node.tools.engines.base import ExecutionEngine
from protocols.call_events import NO_EVENTS, CallEvents
from protocols.errors import ContractError, EngineUnavailable, PraxisError, TooLarge, ToolExecutionError
from protocols.messages import ToolResult, ToolSpec

log = logging.getLogger("praxis.local")


class LocalTools:
    def __init__(
        self,
        contracts: list[ToolContract],
        engines: Mapping[str, ExecutionEngine],
        *,
        max_argument_bytes: int = 1 << 20,
        max_result_bytes: int = 4 << 20,
    ) -> None:
        self._contracts = {c.name: c for c in contracts}
        self._engines = engines
        self.max_argument_bytes = max_argument_bytes
        self.max_result_bytes = max_result_bytes

    def get(self, name: str) -> ToolContract | None:
        return self._contracts.get(name)

    def contracts(self) -> list[ToolContract]:
        return list(self._contracts.values())

    def specs(self) -> list[ToolSpec]:
        return [c.to_spec() for c in self._contracts.values()]

    def add(self, contract: ToolContract) -> None:
        """Serve a new tool (or replace one of the same name); its engine must accept it."""
        engine = self._engines.get(contract.engine)
        if engine is None:
            raise EngineUnavailable(f"tool {contract.name!r}: engine {contract.engine!r} is not available")
        engine.check_contract(contract)
        self._contracts[contract.name] = contract

    def remove(self, name: str) -> bool:
        return self._contracts.pop(name, None) is not None

    def check_contracts(self) -> None:
        """Fail at start on a contract its engine can never run, naming every such contract.

        A config from `load_config` passes: it was checked with the same models when it loaded.
        This catches contracts built in code and engines handed to the node.
        """
        problems = []
        for contract in self._contracts.values():
            engine = self._engines.get(contract.engine)
            if engine is None:
                raise EngineUnavailable(f"tool {contract.name!r}: engine {contract.engine!r} is not available")
            try:
                engine.check_contract(contract)
            except ContractError as exc:
                problems.append(exc.message)
        if problems:
            raise ContractError("; ".join(problems))

    async def run(
        self, name: str, arguments: dict[str, Any], deadline: float, events: CallEvents = NO_EVENTS
    ) -> ToolResult:
        contract = self._contracts[name]
        size = json_size(arguments)
        if size > self.max_argument_bytes:
            raise TooLarge(f"tool {name!r}: arguments are {size} bytes, over the limit of {self.max_argument_bytes}")
        check_arguments(name, contract.params, arguments, accept_undeclared=contract.accept_undeclared_arguments)
        engine = self._engines.get(contract.engine)
        if engine is None:
            raise EngineUnavailable(f"tool {name!r}: engine {contract.engine!r} is not available on this node")
        try:
            result = await engine.execute(contract, arguments, deadline, events)
        except PraxisError:
            raise
        except Exception as exc:  # an engine bug must fail this call, not the node
            log.exception("engine %s failed on tool %s", contract.engine, name)
            raise ToolExecutionError(f"tool {name!r}: engine error ({type(exc).__name__})") from None
        size = json_size(result.to_wire())
        if size > self.max_result_bytes:
            raise TooLarge(f"tool {name!r}: result is {size} bytes, over the limit of {self.max_result_bytes}")
        return result


_SIZE_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)  # built once, not per call


def json_size(value: object) -> int:
    return len(_SIZE_ENCODER.encode(value).encode())
