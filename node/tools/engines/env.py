"""Turning call arguments into environment variables, safely (shared by process and dagger).

Arguments are data. Only the parameters a tool's contract declares become variables, and a
contract can only declare names from an allow-list (`node.config.env_param_problem`: lower
case, no proxy variables, no names shells treat specially), checked when the config loads.
This module checks the same rules again on every call, so an engine handed arguments by any
other path still sets nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from node.config import ToolContract, env_param_problem
from protocols.errors import InvalidArguments

_LISTED = 10  # names quoted in one error message at most


def env_value(value: Any) -> str:
    """Strings as they are; everything else as compact JSON (true, 3, {"a":1})."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(n[:64]) for n in names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def arguments_as_env(
    contract: ToolContract, arguments: dict[str, Any], reserved: Iterable[str] = ()
) -> dict[str, str]:
    """Each argument, which must be a declared parameter, becomes a variable of the same name.

    Raises `InvalidArguments` naming the argument (never its value) when it is not declared
    by the contract, when its name is not allowed for a variable, or when it would override
    a variable the contract itself sets (`reserved`).
    """
    tool = contract.name
    declared = {p.name for p in contract.params}
    undeclared = [name for name in arguments if name not in declared]
    if undeclared:
        raise InvalidArguments(
            f"tool {tool!r}: undeclared argument(s) {_names(undeclared)}: only the tool's declared "
            "parameters are passed to it"
        )
    reserved_set = set(reserved)
    env: dict[str, str] = {}
    for name, value in arguments.items():
        problem = env_param_problem(name)
        if problem:
            raise InvalidArguments(f"tool {tool!r}: argument {name[:64]!r} {problem}")
        if name in reserved_set:
            raise InvalidArguments(
                f"tool {tool!r}: argument {name!r} would override a variable the tool's contract sets"
            )
        env[name] = env_value(value)
    return env
