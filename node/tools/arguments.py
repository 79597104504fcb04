"""Checking call arguments against a tool's declared parameters."""

from __future__ import annotations

from typing import Any

from protocols.errors import InvalidArguments
from protocols.messages import ToolParameter

_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


_LISTED = 10  # problems named in one error message at most


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for name, types in _PYTHON_TYPES.items():
        if isinstance(value, types):
            return name
    return type(value).__name__


def check_arguments(
    tool: str, params: list[ToolParameter], arguments: dict[str, Any], *, accept_undeclared: bool = False
) -> None:
    """Raise `InvalidArguments` naming every missing, unknown or wrongly typed argument.

    An argument the tool does not declare is refused, also when the tool declares no
    parameters at all, unless its contract sets `accept_undeclared_arguments` (`accept_undeclared`
    here; never for process or dagger tools). The message names arguments and types, never values,
    and lists at most a few problems.
    """
    declared = {p.name: p for p in params}
    problems = []
    for p in params:
        if p.required and p.name not in arguments:
            problems.append(f"missing required argument {p.name!r} ({p.type})")
    for name, value in arguments.items():
        param = declared.get(name)
        if param is None:
            if not accept_undeclared:
                problems.append(f"unknown argument {name[:64]!r}")
            continue
        found = _json_type(value)
        if found != param.type:
            problems.append(f"argument {name!r} must be {param.type}, got {found}")
    if problems:
        listed = "; ".join(problems[:_LISTED])
        if len(problems) > _LISTED:
            listed += f"; and {len(problems) - _LISTED} more"
        expected = ", ".join(
            f"{p.name}: {p.type}{'' if p.required else ' (optional)'}" for p in params
        )
        raise InvalidArguments(
            f"tool {tool!r}: {listed}. " + (f"Expected {{{expected}}}" if params else "It takes no arguments")
        )
