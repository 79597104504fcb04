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


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for name, types in _PYTHON_TYPES.items():
        if isinstance(value, types):
            return name
    return type(value).__name__


def check_arguments(tool: str, params: list[ToolParameter], arguments: dict[str, Any]) -> None:
    """Raise `InvalidArguments` naming every missing, unknown or wrongly typed argument.

    A tool that declares no parameters accepts any arguments (its engine decides). The
    message names arguments and types, never values.
    """
    if not params:
        return
    declared = {p.name: p for p in params}
    problems = []
    for p in params:
        if p.required and p.name not in arguments:
            problems.append(f"missing required argument {p.name!r} ({p.type})")
    for name, value in arguments.items():
        param = declared.get(name)
        if param is None:
            problems.append(f"unknown argument {name[:64]!r}")
            continue
        found = _json_type(value)
        if found != param.type:
            problems.append(f"argument {name!r} must be {param.type}, got {found}")
    if problems:
        expected = ", ".join(
            f"{p.name}: {p.type}{'' if p.required else ' (optional)'}" for p in params
        )
        raise InvalidArguments(f"tool {tool!r}: " + "; ".join(problems) + f". Expected {{{expected}}}")
