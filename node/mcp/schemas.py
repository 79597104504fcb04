"""Checking a tool call's arguments against the tool's input schema, when the schema is data.

The MCP endpoint checks `tools/call` arguments before it routes a call. A peer's tool brings its
input schema in the peer's card, so the schema is a stranger's data, and checking against it must
not let the stranger make this node do anything:

- **No `$ref` leaves the document.** References are resolved through a registry that holds the
  document alone and retrieves nothing: `#/$defs/x`, anchors and `$id`s inside the schema
  resolve; a remote (`http:`), `file:` or any other outside reference is never fetched or read,
  and neither are the meta-schemas bundled with jsonschema.
- **Bounded work.** A schema over `MAX_SCHEMA_BYTES` (as compact JSON) or `MAX_SCHEMA_DEPTH`
  is not checked here. A check stops after `MAX_STEPS` keyword evaluations or `MAX_SECONDS`,
  and `uniqueItems` is not checked on arrays over `MAX_UNIQUE_ITEMS` (its fallback is quadratic).
- **The schema's regexes never run here** (`pattern`, `patternProperties`, the property matching
  of `additionalProperties` and `unevaluatedProperties`, `format`): a peer's `(a+)+$` would hold
  the node's event loop for minutes.

Whenever the node cannot decide here (an outside reference, a bound reached, a malformed schema,
a skipped regex that could turn a failure into a pass), `schema_problem` returns None and the call
goes on: the provider checks the arguments against its own schema, which is the final word
anyway. A problem is reported only when it is certain. Messages name paths and rules, never
argument values.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from itertools import islice
from typing import Any, cast

import jsonschema
import referencing.jsonschema
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

log = logging.getLogger("praxis.schemas")

MAX_SCHEMA_BYTES = 64 * 1024  # as compact JSON
MAX_SCHEMA_DEPTH = 32  # nesting of objects and arrays
MAX_STEPS = 20_000  # keyword evaluations per check
MAX_SECONDS = 0.25  # per check, whatever the steps cost
MAX_UNIQUE_ITEMS = 256
MAX_ERRORS = 50  # collected; the first SHOWN_ERRORS (by path) are reported
SHOWN_ERRORS = 5
MAX_SHOWN_CHARS = 200  # of one path or one rule value in a message

Keyword = Callable[[Any, Any, Any, Any], Iterable[ValidationError] | None]


class _Undecided(Exception):
    """This node cannot decide; the provider will."""


@dataclass
class _Check:
    deadline: float
    pattern_properties: bool  # the document has patternProperties somewhere
    steps: int = 0
    skipped: int = 0  # rules not checked here (regexes, big uniqueItems)


_CHECK: ContextVar[_Check] = ContextVar("praxis_schema_check")


def _retrieve_nothing(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


# jsonschema's default registry fetches any unknown URI with a blocking urlopen (file: included).
# Any other registry it combines with the meta-schemas it bundles, so the resolver is passed
# instead: nothing but the document itself. A meta-schema reached by a `$ref` would be checked
# by jsonschema's stock validator class (it switches classes at a `$schema`), whose keywords
# run regexes, and its `$dynamicRef`s can lead back into the peer's schema.
_NO_RETRIEVAL: Registry[Any] = Registry(retrieve=_retrieve_nothing)  # type: ignore[call-arg]


# How regexes are kept from running: the validator class is extended, not the schema edited.
# Deleting `pattern` from a copy is wrong under `not`, `oneOf`, `if` and friends (a deleted
# rule can turn a failure into a pass there, and the negation then rejects a valid call) and
# cannot follow `$ref`s into places a walk does not know are schemas. So the regex keywords are
# replaced by ones that check nothing and count a skip; a skip can only make a schema more
# permissive, so where every keyword on the way is monotone (allOf, anyOf, properties, items,
# $ref, ...) a failure is still certain. Keywords that are not monotone raise _Undecided when a
# skip happened below them.
_NOT_MONOTONE = {"not", "oneOf", "if", "contains", "unevaluatedProperties", "unevaluatedItems",
                 "disallow"}


def _skip() -> None:
    _CHECK.get().skipped += 1


def _pattern(validator: Any, value: Any, instance: Any, schema: Any) -> Iterable[ValidationError]:
    if validator.is_type(instance, "string"):
        _skip()
    return ()


def _pattern_properties(validator: Any, value: Any, instance: Any, schema: Any) -> Iterable[ValidationError]:
    if value and validator.is_type(instance, "object") and instance:
        _skip()
    return ()


def _format(validator: Any, value: Any, instance: Any, schema: Any) -> Iterable[ValidationError]:
    _skip()  # never asserted here: several format checkers are regexes
    return ()


def _additional_properties(original: Keyword) -> Keyword:
    def keyword(validator: Any, value: Any, instance: Any, schema: Any) -> Iterable[ValidationError] | None:
        if validator.is_type(instance, "object") and schema.get("patternProperties"):
            declared = schema.get("properties") or {}
            if any(name not in declared for name in instance):
                _skip()  # which names are "additional" depends on the regexes
                return ()
        return original(validator, value, instance, schema)
    return keyword


def _unevaluated_properties(original: Keyword) -> Keyword:
    def keyword(validator: Any, value: Any, instance: Any, schema: Any) -> Iterable[ValidationError] | None:
        if _CHECK.get().pattern_properties and validator.is_type(instance, "object") and instance:
            _skip()  # jsonschema runs every patternProperties regex to find the evaluated names
            return ()
        return original(validator, value, instance, schema)
    return keyword


def _unique_items(original: Keyword) -> Keyword:
    def keyword(validator: Any, value: Any, instance: Any, schema: Any) -> Iterable[ValidationError] | None:
        if value and validator.is_type(instance, "array") and len(instance) > MAX_UNIQUE_ITEMS:
            _skip()
            return ()
        return original(validator, value, instance, schema)
    return keyword


def _decided(original: Keyword) -> Keyword:
    def keyword(validator: Any, value: Any, instance: Any, schema: Any) -> Iterable[ValidationError]:
        check = _CHECK.get()
        before = check.skipped
        errors = list(original(validator, value, instance, schema) or ())
        if check.skipped != before:
            raise _Undecided("a rule not checked here sits under a non-monotone keyword")
        return errors
    return keyword


def _counted(original: Keyword) -> Keyword:
    def keyword(validator: Any, value: Any, instance: Any, schema: Any) -> Iterable[ValidationError] | None:
        check = _CHECK.get()
        check.steps += 1
        if check.steps > MAX_STEPS or time.monotonic() > check.deadline:
            raise _Undecided("the check would take too long")
        return original(validator, value, instance, schema)
    return keyword


_SAFE: dict[type[Any], type[Any]] = {}


def _safe(base: type[Any]) -> type[Any]:
    """`base` (one draft's validator class) with the keyword replacements described above."""
    if base in _SAFE:
        return _SAFE[base]
    keywords: dict[str, Keyword] = {}
    for name, original in base.VALIDATORS.items():
        if name == "pattern":
            replaced: Keyword = _pattern
        elif name == "patternProperties":
            replaced = _pattern_properties
        elif name == "format":
            replaced = _format
        elif name == "additionalProperties":
            replaced = _additional_properties(original)
        elif name == "uniqueItems":
            replaced = _unique_items(original)
        elif name == "unevaluatedProperties":
            # The skip for regexes is outside _decided: dropping this whole rule is permissive.
            replaced = _unevaluated_properties(_decided(original))
        elif name in _NOT_MONOTONE:
            replaced = _decided(original)
        else:
            replaced = original
        keywords[name] = _counted(replaced)
    _SAFE[base] = cast(type[Any], jsonschema.validators.extend(base, keywords))
    return _SAFE[base]


@dataclass
class _Prepared:
    validator_class: type[Any]
    document: dict[str, Any]
    pattern_properties: bool

    def validator(self) -> Any:
        specification = referencing.jsonschema.specification_with(
            self.validator_class.ID_OF(self.validator_class.META_SCHEMA))
        resolver = _NO_RETRIEVAL.resolver_with_root(specification.create_resource(self.document))
        return self.validator_class(self.document, _resolver=resolver)


def _prepare(schema: Mapping[str, Any]) -> _Prepared | None:
    """The schema ready to check with, or None when it is not checked here (logged why)."""
    if not isinstance(schema, Mapping):
        return None
    deepest, nested_dialect, pattern_properties = 0, False, False
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:  # iterative: a deep schema cannot exhaust the stack here
        item, level = stack.pop()
        if isinstance(item, Mapping):
            deepest = max(deepest, level)
            if deepest > MAX_SCHEMA_DEPTH:
                break
            nested_dialect = nested_dialect or (level > 1 and "$schema" in item)
            pattern_properties = pattern_properties or "patternProperties" in item
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            if deepest > MAX_SCHEMA_DEPTH:
                break
            stack.extend((v, level + 1) for v in item)
    if deepest > MAX_SCHEMA_DEPTH:
        log.debug("input schema nested deeper than %d: not checked here", MAX_SCHEMA_DEPTH)
        return None
    try:
        size = len(json.dumps(schema, separators=(",", ":")))
    except (TypeError, ValueError):
        return None
    if size > MAX_SCHEMA_BYTES:
        log.debug("input schema of %d bytes (over %d): not checked here", size, MAX_SCHEMA_BYTES)
        return None
    if nested_dialect:
        # jsonschema switches to its stock validator class at a subschema with its own
        # $schema, which would run the regexes.
        log.debug("input schema changes dialect inside: not checked here")
        return None
    dialect = schema.get("$schema")
    if dialect is None:
        base: type[Any] = jsonschema.Draft202012Validator
    else:
        found = jsonschema.validators.validator_for(schema, default=cast(Any, None)) \
            if isinstance(dialect, str) else None
        if found is None:
            log.debug("input schema of an unknown dialect: not checked here")
            return None
        base = found
    # The dialect is known from the class; without "$schema" a `$ref` back to the root does not
    # make jsonschema switch to the stock class either.
    document = {k: v for k, v in schema.items() if k != "$schema"}
    return _Prepared(_safe(base), document, pattern_properties)


def schema_problem(schema: Mapping[str, Any], arguments: dict[str, Any]) -> str | None:
    """Why `arguments` violate `schema`, naming paths and rules, never values.

    None when they are valid, and also when this node cannot decide (the provider will): see
    the module's docstring. Never raises, never does I/O, returns in bounded time.
    """
    prepared = _prepare(schema)
    if prepared is None:
        return None
    token = _CHECK.set(_Check(deadline=time.monotonic() + MAX_SECONDS,
                              pattern_properties=prepared.pattern_properties))
    try:
        validator = prepared.validator()
        errors = list(islice(validator.iter_errors(arguments), MAX_ERRORS))
        errors.sort(key=lambda e: [(type(p).__name__, p) for p in e.path])
        problems = list(dict.fromkeys(_describe(err) for err in errors))[:SHOWN_ERRORS]
    except _Undecided as why:
        log.debug("arguments not checked here: %s", why)
        return None
    except Unresolvable:
        log.debug("arguments not checked here: the schema refers outside itself")
        return None
    except Exception as exc:  # a schema jsonschema cannot use (a peer's data): the provider judges
        log.debug("arguments not checked here: %s", type(exc).__name__)
        return None
    finally:
        _CHECK.reset(token)
    return "; ".join(problems) if problems else None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "..."


def _describe(err: ValidationError) -> str:
    """One problem: where (a path of argument names and indexes) and which rule. Never
    `err.instance` or `err.message`, which hold the argument's value."""
    where = _clip("/".join(str(p) for p in err.path)) or "(arguments)"
    if err.validator == "required" and isinstance(err.validator_value, list):
        present = err.instance if isinstance(err.instance, dict) else {}
        missing = [name for name in err.validator_value if isinstance(name, str) and name not in present]
        text = f"missing required argument(s) {_clip(repr(missing))}"
        return f"{where}: {text}" if err.path else text
    if err.validator == "additionalProperties":
        return f"{where}: unexpected argument(s)"
    if err.validator is None:  # a `false` schema
        return f"{where}: not allowed by the schema"
    return f"{where}: must satisfy {err.validator}={_clip(repr(err.validator_value))}"


__all__ = ["MAX_SCHEMA_BYTES", "MAX_SCHEMA_DEPTH", "schema_problem"]
