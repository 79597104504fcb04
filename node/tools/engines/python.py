"""`python` engine: an in-process callable named in the config (trusted code, no isolation).

`engineSpec.callable: "package.module:function"` (`node.config.PythonSpec`). The module is looked
for in the folder of the config the tool was loaded from first (`mytools:greet` with `mytools.py`
beside `node.yaml`, no PYTHONPATH needed), then on the normal import path
(`node.config.import_callable`). The function receives the arguments as
keyword arguments and may be sync or async. A sync function runs on the node's event loop,
so it must be quick; anything slow belongs in a `process` or `dagger` tool.
Return a `str` (the text result), a JSON-able dict/list (text plus structured content), or
a `ToolResult`.

Progress, log and questions: a callable that declares a keyword parameter named
`praxis_events` (`node.config.PYTHON_EVENTS_PARAMETER`) gets the call's `CallEvents` there,
within the bounds of `protocols.event_limits.LimitedEvents`:
`await praxis_events.progress(Progress(3, 10, "copying"))`,
`await praxis_events.log(LogMessage("info", "text"))`,
`await praxis_events.ask(SAMPLING, params, deadline)`. No tool parameter may have that name
(checked when the contract loads). Cancellation is trio's: when the caller gives up, the
call's scope is cancelled and an async callable is interrupted at its next `await`; a sync
callable runs to its end (it must be quick anyway).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from node.config import PYTHON_EVENTS_PARAMETER, PythonSpec, ToolContract, import_callable
from node.tools.engines.base import ContractError, PraxisError, ToolExecutionError, ToolResult, ToolTimeout
from protocols.call_events import NO_EVENTS, CallEvents
from protocols.errors import InvalidArguments
from protocols.event_limits import limited

log = logging.getLogger("praxis.engine.python")


def result_from_value(value: Any) -> ToolResult:
    """Turn a callable's return value into a ToolResult."""
    if isinstance(value, ToolResult):
        return value
    if isinstance(value, str):
        return ToolResult.text(value)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise ToolExecutionError(
            f"the tool returned a {type(value).__name__}, which is not JSON; return str, dict or list"
        ) from None
    result = ToolResult.text(text)
    result.structured_content = value if isinstance(value, dict) else {"result": value}
    return result


def wants_events(func: Callable[..., Any]) -> bool:
    """True when the callable declares the `praxis_events` keyword by name."""
    try:
        parameter = inspect.signature(func).parameters.get(PYTHON_EVENTS_PARAMETER)
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return parameter is not None and parameter.kind in (
        inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class PythonEngine:
    def __init__(self) -> None:
        # (callable, whether it wants `praxis_events`): looked up and inspected once, not per call.
        self._resolved: dict[tuple[str, Path | None], tuple[Callable[..., Any], bool]] = {}

    def _callable(self, contract: ToolContract, *, fresh: bool = False) -> tuple[Callable[..., Any], bool]:
        target = contract.typed_spec(PythonSpec, fresh=fresh).callable
        key = (target, contract.config_dir)  # `mytools:greet` of two config folders: two functions
        cached = self._resolved.get(key)
        if cached is not None:
            return cached
        try:
            func = import_callable(target, contract.config_dir)
        except ValueError as exc:
            raise ContractError(f"tool {contract.name!r}: {exc}") from None
        resolved = self._resolved[key] = (func, wants_events(func))
        return resolved

    def check_contract(self, contract: ToolContract) -> None:
        if any(p.name == PYTHON_EVENTS_PARAMETER for p in contract.params):
            raise ContractError(f"tool {contract.name!r}: no parameter may be named "
                                f"{PYTHON_EVENTS_PARAMETER!r} (the python engine passes the call's events there)")
        self._callable(contract, fresh=True)

    async def execute(
        self, contract: ToolContract, arguments: dict[str, Any], deadline: float,
        events: CallEvents = NO_EVENTS,
    ) -> ToolResult:
        func, func_wants_events = self._callable(contract)
        if PYTHON_EVENTS_PARAMETER in arguments:  # only an undeclared argument can be named so
            raise InvalidArguments(f"tool {contract.name!r}: no argument may be named {PYTHON_EVENTS_PARAMETER!r}")
        kwargs = dict(arguments)
        if func_wants_events:
            kwargs[PYTHON_EVENTS_PARAMETER] = limited(events)
        with trio.move_on_at(deadline) as scope:
            try:
                value = func(**kwargs)
                if inspect.isawaitable(value):
                    value = await value
            except PraxisError:
                raise
            except TypeError as exc:
                raise ToolExecutionError(f"tool {contract.name!r} rejected its arguments: {exc}") from None
            except Exception as exc:
                log.warning("tool %s raised %s", contract.name, type(exc).__name__)
                raise ToolExecutionError(f"tool {contract.name!r} failed: {type(exc).__name__}: {exc}") from None
            return result_from_value(value)
        assert scope.cancelled_caught
        raise ToolTimeout(f"tool {contract.name!r} did not finish before its deadline")

    async def aclose(self) -> None:
        self._resolved.clear()
