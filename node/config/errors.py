"""Config errors: every problem of a config, each at its key, none quoting a secret.

Problems are pydantic errors (field errors of the sections, and the rules the models check,
raised as the custom types below) turned into `ConfigProblem`s: a key such as
`agent.tools[0].engineSpec.image` and what is wrong there. What was found is quoted only for
ordinary scalars outside engineSpecs (whose commands and addresses may carry credentials); a
value found where a section, mapping or list belongs is shown by its type, and values under
secret-like keys are `(hidden)`.

A problem with a value that came from an environment variable (`PRAXIS_P2P_PORT=abc`) is
reported at that variable, not at the file's key (`EnvOverride`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

# A rule's own message, shown as it is after the key.
CONTRACT_ERROR = "praxis_contract"
# A field of an engineSpec that is not what its rule says: "<rule>; found <its type>".
FIELD_ERROR = "praxis_field"
# A required field of an engineSpec that is absent: "missing; <rule>".
MISSING_ERROR = "praxis_missing"

# Keys whose values may be secrets: a config error never shows what was found under them.
_SECRET_KEYS = frozenset({"headers", "token", "env", "secrets", "password", "authorization", "api_key"})
_SECRET_FRAGMENTS = ("secret", "token", "password")
# Errors that mean "a section, mapping or list was expected here": whatever was found instead
# (`mcp: "token=..."`) may be a secret written in the wrong place, so only its type is shown.
_CONTAINER_ERRORS = frozenset({
    "model_type", "model_attributes_type", "dataclass_type", "dict_type", "mapping_type",
    "list_type", "tuple_type", "set_type", "frozen_set_type", "iterable_type",
})
_SHOWN_CHARS = 80
_TYPE_NAMES = {"str": "string", "int": "number", "float": "number", "bool": "boolean", "dict": "mapping",
               "list": "list", "NoneType": "null"}
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

Loc = tuple[int | str, ...]


@dataclass(frozen=True)
class EnvOverride:
    """A key of the config whose value came from an environment variable, as it was set."""

    variable: str  # PRAXIS_P2P_PORT
    value: str  # what the variable holds (never shown for a secret-like key)
    loc: tuple[str, ...]  # ("p2p", "port")
    # A scalar or a list of strings is shown; a structure (PRAXIS_MCP_SERVERS, in YAML) may
    # carry headers or env, so it is not, like a misplaced value in the file.
    plain: bool = True

    def shown(self) -> str:
        """`PRAXIS_P2P_PORT=abc`, as a shell would take it; `(hidden)` for a secret-like key."""
        if any(is_secret_key(p) for p in self.loc):
            return f"{self.variable}=(hidden)"
        if not self.plain:
            return f"{self.variable}=(not shown)"
        value = self.value if len(self.value) <= _SHOWN_CHARS else self.value[: _SHOWN_CHARS - 3] + "..."
        return f"{self.variable}={shlex.quote(value) if value.isprintable() else repr(value)}"


@dataclass(frozen=True)
class ConfigProblem:
    """One problem of a config: where (a key such as `p2p.host`; "" for the whole file) and what."""

    where: str
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.text}" if self.where else self.text


class ConfigError(Exception):
    """The config cannot be used; the message says where and why, every problem on its own line."""

    def __init__(self, message: str, problems: Sequence[ConfigProblem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)

    @classmethod
    def listing(cls, source: str, problems: Sequence[ConfigProblem]) -> ConfigError:
        lines = [f"{source}: invalid configuration", *(f"  {p}" for p in problems)]
        return cls("\n".join(lines), problems)


def contract_error(message: str) -> PydanticCustomError:
    """A rule's error: shown as `key: message`."""
    return PydanticCustomError(CONTRACT_ERROR, "{message}", {"message": message})


def invalid(title: str, problems: Iterable[tuple[Loc, str]]) -> ValidationError:
    """A ValidationError of rule errors at keys relative to the model being validated (raised
    inside a validator, pydantic puts them under the model's own key)."""
    return ValidationError.from_exception_data(
        title, [InitErrorDetails(type=contract_error(text), loc=loc, input=None) for loc, text in problems]
    )


def with_problems(title: str, exc: ValidationError | None, problems: Iterable[tuple[Loc, str]]) -> ValidationError:
    """`exc`'s errors and rule errors at the given keys, as one ValidationError."""
    details = [as_details(err) for err in exc.errors()] if exc is not None else []
    details += [InitErrorDetails(type=contract_error(text), loc=loc, input=None) for loc, text in problems]
    return ValidationError.from_exception_data(title, details)


def as_details(err: Mapping[str, Any], loc_prefix: Loc = ()) -> InitErrorDetails:
    """An error of `ValidationError.errors()`, to raise again (type, message, key and input kept)."""
    context = {**(err.get("ctx") or {}), "message": err["msg"]}  # the bounds of `expected` kept
    return InitErrorDetails(
        type=PydanticCustomError(err["type"], "{message}", context),
        loc=(*loc_prefix, *err["loc"]),
        input=err.get("input"),
    )


def key_of(loc: Iterable[int | str]) -> str:
    """`('agent', 'tools', 0, 'engineSpec', 'image')` -> `agent.tools[0].engineSpec.image`."""
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            key += f".{part}" if key else part
        else:
            key += f"[{part!r}]"
    return key


def is_secret_key(part: Any) -> bool:
    name = str(part).lower()
    return name in _SECRET_KEYS or any(fragment in name for fragment in _SECRET_FRAGMENTS)


def shown(err: Mapping[str, Any]) -> str:
    """What a config error may say it found: a scalar's value, otherwise only its type."""
    found = err.get("input")
    if any(is_secret_key(p) for p in err["loc"]):
        return "(hidden)"
    if isinstance(found, dict | list) or err["type"] in _CONTAINER_ERRORS:
        return f"a {type_name(found)}"
    text = repr(found)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def type_name(value: Any) -> str:
    kind = type(value).__name__
    return _TYPE_NAMES.get(kind, kind)


# What pydantic's common errors expect, in plain words ("found 'abc'; expected an integer").
_EXPECTED = {
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "an integer",
    "float_parsing": "a number", "float_type": "a number",
    "bool_parsing": "true or false", "bool_type": "true or false",
    "string_type": "a string", "list_type": "a list",
    "model_type": "a mapping", "model_attributes_type": "a mapping", "dict_type": "a mapping",
}
_BOUNDS = {"greater_than": ("gt", "a number above {}"), "greater_than_equal": ("ge", "at least {}"),
           "less_than": ("lt", "a number below {}"), "less_than_equal": ("le", "at most {}"),
           "string_too_short": ("min_length", "at least {} character(s)"),
           "string_too_long": ("max_length", "at most {} character(s)")}


def expected(err: Mapping[str, Any]) -> str:
    """What was expected where `err` was found: `expected an integer`, `expected at most 65535`."""
    kind = err["type"]
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}"
    bound = _BOUNDS.get(kind)
    limit = (err.get("ctx") or {}).get(bound[0]) if bound else None
    if bound and isinstance(limit, int | float):
        return "expected " + bound[1].format(f"{limit:g}" if isinstance(limit, float) else limit)
    return f"expected: {err['msg']}"


def problems_from(errors: Iterable[Mapping[str, Any]], overrides: Sequence[EnvOverride] = ()) -> list[ConfigProblem]:
    """pydantic's errors as config problems (never echoing a secret or a misplaced value); an
    error at a key set by an environment variable (`overrides`) is reported at that variable."""
    problems = []
    for err in errors:
        key, kind, msg = key_of(err["loc"]), err["type"], err["msg"]
        override = next((o for o in overrides if tuple(err["loc"][: len(o.loc)]) == o.loc), None)
        if override is not None:
            problems.append(env_problem(override, err))
            continue
        if kind == "missing":
            text = f"missing; expected {msg.lower()}"
        elif kind == MISSING_ERROR:
            text = f"missing; {msg}"
        elif kind == "extra_forbidden":
            text = "unknown key; remove it or check its spelling"
        elif kind == CONTRACT_ERROR:
            text = msg
        elif kind == FIELD_ERROR:  # in an engineSpec (commands, addresses...): the type only, never the value
            found = "(hidden)" if any(is_secret_key(p) for p in err["loc"]) else f"a {type_name(err.get('input'))}"
            text = f"{msg}; found {found}"
        else:
            text = f"found {shown(err)}; {expected(err)}"
        problems.append(ConfigProblem(key, text))
    return problems


def env_problem(override: EnvOverride, err: Mapping[str, Any]) -> ConfigProblem:
    """An error at a key an environment variable set, at that variable: `PRAXIS_P2P_PORT=abc:
    expected an integer (it overrides p2p.port)`; inside a list it set, also the item's key."""
    key = key_of(override.loc)
    inner = len(err["loc"]) > len(override.loc)
    if inner:  # an item of a list the variable set: the item's own key and problem
        return ConfigProblem(override.shown(), str(problems_from([err])[0]))
    kind, msg = err["type"], err["msg"]
    if kind in (CONTRACT_ERROR, FIELD_ERROR):
        what = msg
    elif kind == "missing":
        what = f"missing; expected {msg.lower()}"
    else:
        what = expected(err)
    return ConfigProblem(override.shown(), f"{what} (the variable overrides {key})")
