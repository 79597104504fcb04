"""Turning call arguments into environment variables, safely (shared by process and dagger)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from protocols.errors import InvalidArguments

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Names that change how programs load or find code; an argument may never set them.
PROTECTED_NAMES = frozenset({"PATH", "HOME", "SHELL", "IFS", "ENV", "BASH_ENV", "CACHE_BUST"})
PROTECTED_PREFIXES = ("LD_", "PYTHON", "DYLD_", "PERL", "RUBY", "NODE_", "JAVA_TOOL")


def is_protected(name: str) -> bool:
    upper = name.upper()
    return upper in PROTECTED_NAMES or upper.startswith(PROTECTED_PREFIXES)


def env_value(value: Any) -> str:
    """Strings as they are; everything else as compact JSON (true, 3, {"a":1})."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def arguments_as_env(
    tool: str, arguments: dict[str, Any], reserved: Iterable[str] = ()
) -> dict[str, str]:
    """Each argument becomes a variable of the same name.

    Raises `InvalidArguments` naming the argument (never its value) when the name is not an
    identifier, is protected, or would override a variable the contract itself sets.
    """
    reserved_set = set(reserved)
    env: dict[str, str] = {}
    for name, value in arguments.items():
        if not _IDENTIFIER.fullmatch(name):
            raise InvalidArguments(
                f"tool {tool!r}: argument name {name[:64]!r} cannot be an environment variable "
                "(use letters, digits and _, not starting with a digit)"
            )
        if is_protected(name):
            raise InvalidArguments(f"tool {tool!r}: argument {name!r} would set a protected variable")
        if name in reserved_set:
            raise InvalidArguments(
                f"tool {tool!r}: argument {name!r} would override a variable the tool's contract sets"
            )
        env[name] = env_value(value)
    return env
