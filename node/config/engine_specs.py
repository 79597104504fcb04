"""The `engineSpec` of each engine as a pydantic model, and the rules shared with the engines.

One model per engine (`ProcessSpec`, `DaggerSpec`, `PythonSpec`, `RemoteMcpSpec`). A config
checks each tool's engineSpec with its model when it loads, so every problem is reported at
its key (`agent.tools[0].engineSpec.image`); the engines parse contracts built in code with
the same models (`parse_engine_spec`, a `ContractError` naming the tool and every problem)
and run the typed spec.

When the config file's folder is known (`ConfigContext.base_dir`, set by `load_config`), the
models also check what the engines would otherwise find out at start or on every call:
dagger mounts exist and lie inside the allowed roots, `cwd` folders exist, and python
callables can be imported: from the config's folder first (`mytools:greet` with `mytools.py`
beside the config), then from the normal import path (`import_callable`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import posixpath
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    StrictBool,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from node.config.errors import (
    CONTRACT_ERROR,
    FIELD_ERROR,
    MISSING_ERROR,
    as_details,
    contract_error,
    invalid,
    key_of,
    type_name,
)
from protocols.errors import ContractError

CACHE_BUST = "CACHE_BUST"
TRANSPORTS = ("streamable-http", "sse", "stdio")
Transport = Literal["streamable-http", "sse", "stdio"]
# Seconds: a number (never a string or a boolean), above zero.
Seconds = Annotated[float, Field(strict=True, gt=0)]
_CALLABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ConfigContext:
    """Validation context of a config being loaded (`NodeConfig.model_validate(..., context=...)`).

    With it, each tool's engineSpec is checked with its engine's model. With `base_dir` (the
    config file's folder), files and imports are checked too.
    """

    base_dir: Path | None = None
    # The allowed mount roots as real paths; None when engines.dagger.mount_roots is itself
    # invalid (reported on its own key), so only the mounts' existence is checked.
    mount_roots: list[Path] | None = None


def config_context(info: ValidationInfo) -> ConfigContext | None:
    return info.context if isinstance(info.context, ConfigContext) else None


def valid_identifier(name: str) -> bool:
    """True for names usable as environment variables."""
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is not None


class EngineSpec(BaseModel):
    """An engineSpec. A key set to null counts as absent; every field error is reported once,
    at its field, with the field's rule (`RULES`), never with the value found."""

    ENGINE: ClassVar[str] = ""
    RULES: ClassVar[dict[str, str]] = {}

    @model_validator(mode="wrap")
    @classmethod
    def _explained(cls, data: Any, handler: ModelWrapValidatorHandler[EngineSpec]) -> EngineSpec:
        if isinstance(data, Mapping):
            data = {k: v for k, v in data.items() if v is not None}
        try:
            return handler(data)
        except ValidationError as exc:
            raise ValidationError.from_exception_data(cls.__name__, cls._explain(exc, data)) from None

    @classmethod
    def _explain(cls, exc: ValidationError, data: Any) -> list[InitErrorDetails]:
        out: list[InitErrorDetails] = []
        seen: set[str] = set()
        for err in exc.errors():
            loc = err["loc"]
            field = loc[0] if loc and isinstance(loc[0], str) else None
            if err["type"] in (CONTRACT_ERROR, "extra_forbidden") or field not in cls.RULES:
                out.append(as_details(err))
                continue
            assert field is not None
            if field in seen:
                continue
            seen.add(field)
            rule = cls.RULES[field]
            if err["type"] == "missing":
                out.append(InitErrorDetails(type=PydanticCustomError(MISSING_ERROR, "{message}", {"message": rule}),
                                            loc=(field,), input=None))
            else:
                found = data.get(field) if isinstance(data, Mapping) else data
                out.append(InitErrorDetails(type=PydanticCustomError(FIELD_ERROR, "{message}", {"message": rule}),
                                            loc=(field,), input=found))
        return out


_COMMAND_RULE = 'must be a non-empty list of strings (argv, e.g. ["sh", "-c", "..."])'
_ENV_RULE = "must map variable names to strings"


class ProcessSpec(EngineSpec):
    """`engine: process`: a host process. Keys other than these are ignored (Go node configs)."""

    model_config = ConfigDict(extra="ignore")
    ENGINE: ClassVar[str] = "process"
    RULES: ClassVar[dict[str, str]] = {
        "command": _COMMAND_RULE,
        "env": _ENV_RULE,
        "timeout": "must be a positive number of seconds",
        "cwd": "must be a folder (a string, relative to the config file's folder)",
    }

    command: list[StrictStr] = Field(min_length=1)
    env: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    timeout: Seconds | None = None  # default: engines.process.default_timeout_seconds
    cwd: StrictStr | None = None

    @field_validator("cwd")
    @classmethod
    def _cwd_exists(cls, cwd: str | None, info: ValidationInfo) -> str | None:
        return _existing_folder(cwd, info)


class DaggerSpec(EngineSpec):
    """`engine: dagger`: a container run. Unknown keys are ignored: the Go node's configs may carry
    fields this engine does not use."""

    model_config = ConfigDict(extra="ignore")
    ENGINE: ClassVar[str] = "dagger"
    RULES: ClassVar[dict[str, str]] = {
        "image": "must be a non-empty string (an image reference such as busybox:latest)",
        "command": _COMMAND_RULE,
        "mounts": "must map host folders to container paths (strings)",
        "env": _ENV_RULE,
        "env_passthrough": "must be a list of variable names",
        "cache": "must be true or false",
        "timeout": "must be a positive number of seconds, at most 86400",
    }

    image: StrictStr = Field(min_length=1)
    command: list[StrictStr] = Field(min_length=1)
    mounts: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    env: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    env_passthrough: list[StrictStr] = Field(default_factory=list)
    cache: StrictBool = False
    timeout: Annotated[Seconds, Field(le=24 * 3600)] | None = None  # default: engines.dagger.default_timeout_seconds

    @field_validator("env", "env_passthrough")
    @classmethod
    def _variable_names(cls, names: Iterable[str], info: ValidationInfo) -> Any:
        problems = [f"name {name[:64]!r} is not a valid variable name" for name in names if not valid_identifier(name)]
        if CACHE_BUST in names:
            problems.append(f"{CACHE_BUST} is set by the engine (use cache: true)")
        if info.field_name == "env_passthrough":
            both = sorted(set(info.data.get("env", {})) & set(names))
            if both:
                problems.append(f"{both} appear in both engineSpec.env and env_passthrough")
        if problems:
            raise invalid(cls.__name__, [((), problem) for problem in problems])
        return names

    @field_validator("mounts")
    @classmethod
    def _mount_targets(cls, mounts: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        """Absolute container paths, each mounted once; with the config's folder known, host
        folders that exist inside the allowed roots."""
        problems = []
        seen: set[str] = set()
        for host, target in mounts.items():
            norm = posixpath.normpath(target)
            if not target.startswith("/") or norm == "/":
                problems.append(f"container path {target!r} (of mount {host!r}) must be an absolute path other than /")
            elif norm in seen:
                problems.append(f"container path {target!r} is mounted twice")
            seen.add(norm)
        context = config_context(info)
        if context is not None and context.base_dir is not None:
            problems += resolve_mounts(mounts, context.base_dir, context.mount_roots, must_exist=True)[1]
        if problems:
            raise invalid(cls.__name__, [((), problem) for problem in problems])
        return mounts


# The keyword a python tool's callable declares to receive the call's `CallEvents`; no tool
# parameter may have this name.
PYTHON_EVENTS_PARAMETER = "praxis_events"


class PythonSpec(EngineSpec):
    """`engine: python`: an in-process callable."""

    model_config = ConfigDict(extra="ignore")
    ENGINE: ClassVar[str] = "python"
    RULES: ClassVar[dict[str, str]] = {"callable": "must be 'package.module:function'"}

    callable: StrictStr = Field(pattern=_CALLABLE.pattern)

    @field_validator("callable")
    @classmethod
    def _importable(cls, target: str, info: ValidationInfo) -> str:
        context = config_context(info)
        if context is not None and context.base_dir is not None:
            try:
                import_callable(target, context.base_dir)
            except ValueError as exc:
                raise contract_error(str(exc)) from None
        return target


class RemoteMcpSpec(EngineSpec):
    """`engine: remote-mcp`: one tool of an MCP server. Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")
    ENGINE: ClassVar[str] = "remote-mcp"
    RULES: ClassVar[dict[str, str]] = {
        "address": "must be a URL (a string)",
        "command": "must be a string (the program started over stdio)",
        "args": "must be a list of strings",
        "env": "must map strings to strings",
        "cwd": "must be a folder (a string, relative to the config file's folder)",
        "transport": "must be one of " + ", ".join(TRANSPORTS),
        "headers": "must map strings to strings",
        "tool": "must be a string (the remote tool's name)",
    }

    address: StrictStr | None = None
    command: StrictStr | None = None
    args: list[StrictStr] = Field(default_factory=list)
    env: dict[StrictStr, StrictStr] = Field(default_factory=dict, repr=False)  # may hold secrets
    cwd: StrictStr | None = None
    transport: Transport | None = None
    headers: dict[StrictStr, StrictStr] = Field(default_factory=dict, repr=False)  # secret
    tool: StrictStr | None = None  # the remote tool's name, when it differs from the contract's

    @field_validator("args", mode="before")
    @classmethod
    def _numbers_are_text(cls, value: Any) -> Any:
        if isinstance(value, list) and all(isinstance(a, str | int | float) for a in value):
            return [str(a) for a in value]
        return value

    @field_validator("cwd")
    @classmethod
    def _cwd_exists(cls, cwd: str | None, info: ValidationInfo) -> str | None:
        return _existing_folder(cwd, info) if info.data.get("command") else cwd

    @model_validator(mode="after")
    def _reachable(self) -> RemoteMcpSpec:
        problem = mcp_server_problem(address=self.address, transport=self.transport, command=self.command,
                                     headers=self.headers, env=self.env)
        if problem:
            raise invalid(type(self).__name__, [((), problem)])
        return self


ENGINE_SPECS: dict[str, type[EngineSpec]] = {
    spec.ENGINE: spec for spec in (ProcessSpec, DaggerSpec, PythonSpec, RemoteMcpSpec)
}
SpecT = TypeVar("SpecT", bound=EngineSpec)


def parse_engine_spec(model: type[SpecT], tool: str, spec: Mapping[str, Any]) -> SpecT:
    """A contract's engineSpec as `model`; a `ContractError` naming the tool and every problem
    (never a value: headers and env hold secrets)."""
    try:
        return model.model_validate(spec)
    except ValidationError as exc:
        problems = [_contract_text(model, err) for err in exc.errors()]
        raise ContractError(f"tool {tool!r}: " + "; ".join(problems)) from None


def _contract_text(model: type[EngineSpec], err: Mapping[str, Any]) -> str:
    key = key_of(("engineSpec", *err["loc"]))
    if err["type"] == MISSING_ERROR:
        return f"{key} is missing; it {err['msg']}"
    if err["type"] == FIELD_ERROR:
        return f"{key} {err['msg']} (found {type_name(err.get('input'))})"
    if err["type"] == "extra_forbidden":
        return (f"unknown engineSpec key {str(err['loc'][-1])[:64]!r} for engine {model.ENGINE}; "
                f"expected some of {sorted(model.model_fields)}")
    return f"{key}: {err['msg']}"


def mcp_server_problem(
    *,
    address: str | None,
    transport: str | None,
    command: str | None,
    headers: Mapping[str, str] | None,
    env: Mapping[str, str] | None,
) -> str | None:
    """Why these settings name no MCP server the node can reach; None when they do.

    The one rule for `mcp.servers` entries, `remote-mcp` engineSpecs and `McpServerParams`.
    Never quotes the address (it may carry userinfo), headers or env.
    """
    if transport is not None and transport not in TRANSPORTS:
        return f"transport must be one of {', '.join(TRANSPORTS)}, found {transport[:64]!r}"
    if address and command:
        return "give either address (a URL) or command (stdio), not both"
    if command or transport == "stdio":
        if not command:
            return "transport stdio needs a command"
        if transport not in (None, "stdio"):
            return f"a command is started over stdio, not {transport}"
        if headers:
            return "headers apply to HTTP transports only, not to a stdio command"
        return None
    if not address:
        return "needs address (an http:// or https:// URL) or command (stdio)"
    try:
        parts = urlsplit(address)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return "address must be an http:// or https:// URL (this one cannot be parsed)"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "address must be an http:// or https:// URL"
    if env:
        return "env applies to stdio commands only"
    return None


def _existing_folder(value: str | None, info: ValidationInfo) -> str | None:
    """A `cwd` field: with the config's folder known, the folder must exist."""
    context = config_context(info)
    if value is not None and context is not None and context.base_dir is not None:
        problem = folder_problem(context.base_dir, value)
        if problem:
            raise contract_error(problem)
    return value


def folder_problem(base_dir: Path, value: str) -> str | None:
    """Why `value` (relative to the config file's folder) is not a folder; None when it is."""
    path = base_dir / value
    if path.is_dir():
        return None
    return f"folder {value!r} " + ("is not a folder" if path.exists() else "does not exist")


# The package a config folder's modules are imported under: one per folder (by its real path),
# so two configs with their own `mytools.py` each get their own module, and a config's module
# never replaces an installed one of the same name for the rest of the process.
FOLDER_PACKAGE_PREFIX = "praxis_config_"


def import_callable(target: str, folder: Path | None = None) -> Callable[..., Any]:
    """The function a python tool names (`package.module:function`); ValueError saying why not.

    With `folder` (the config file's folder), a module whose top-level name is a module file
    (`mytools.py`) or a package (`pkg/__init__.py`) in that folder is imported from there, even
    when an installed module has the same name; any other module from the normal import path.
    """
    module_name, _, attr = target.partition(":")
    try:
        func = getattr(import_tool_module(module_name, folder), attr)
    except Exception as exc:  # a module's own code may raise anything while it is imported
        hint = _sibling_hint(exc, folder)
        raise ValueError(f"cannot load {target!r}: {type(exc).__name__}: {str(exc)[:300]}{hint}") from None
    if not callable(func):
        raise ValueError(f"{target!r} is not callable")
    return func  # type: ignore[no-any-return]


def import_tool_module(name: str, folder: Path | None = None) -> ModuleType:
    """Module `name`, from `folder` first (see `import_callable`), without changing `sys.path`.

    A module of the folder is imported as `praxis_config_<hash of the folder>.<name>`: inside it,
    its neighbours are imported relatively (`from . import helpers`). When the normal import
    path reaches the same file (the folder is on PYTHONPATH, or is the current folder), the
    module is imported under its own name, once.
    """
    if folder is not None:
        top = name.partition(".")[0]
        local = importlib.machinery.PathFinder.find_spec(top, [str(folder)])
        if local is not None and local.has_location and local.origin and not _same_file(local.origin, _found(top)):
            return importlib.import_module(f"{_folder_package(folder)}.{name}")
    return importlib.import_module(name)


def _found(top: str) -> str | None:
    """Where the normal import path finds top-level module `top` (a file), without importing it."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.has_location else None


def _same_file(a: str, b: str | None) -> bool:
    try:
        return b is not None and os.path.samefile(a, b)
    except OSError:
        return False


def _folder_package(folder: Path) -> str:
    """The package whose path is only `folder` (created once per folder): its modules import
    without `folder` being on `sys.path`."""
    real = os.path.realpath(folder)
    name = FOLDER_PACKAGE_PREFIX + hashlib.sha256(os.fsencode(real)).hexdigest()[:16]
    if name not in sys.modules:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [real]
        sys.modules[name] = importlib.util.module_from_spec(spec)
    return name


def _sibling_hint(exc: Exception, folder: Path | None) -> str:
    """For a config folder's module that imports a neighbour absolutely (`import helpers`)."""
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if folder is None or not missing or "." in missing:
        return ""
    if importlib.machinery.PathFinder.find_spec(missing, [str(folder)]) is None:
        return ""
    return (f" (the config folder's modules are not on the import path: import {missing!r} relatively, "
            f"`from . import {missing}`, or set PYTHONPATH)")


@dataclass(frozen=True)
class Mount:
    host: Path  # real path: no symlinks, no ..
    container: str


def allowed_roots(mount_roots: list[str], base_dir: Path) -> list[Path]:
    """The folders mounts may come from, as real paths (default: the config file's folder)."""
    roots = []
    for value in mount_roots or ["."]:
        path = Path(value).expanduser()
        roots.append(Path(os.path.realpath(path if path.is_absolute() else base_dir / path)))
    return roots


def resolve_mounts(
    mounts: Mapping[str, str], base_dir: Path, roots: list[Path] | None, *, must_exist: bool
) -> tuple[list[Mount], list[str]]:
    """Each mount's host folder as its real path, and what is wrong with them: a folder outside
    the roots (symlinks and .. followed first), and with `must_exist`, one that is missing."""
    resolved, problems = [], []
    base_dir = Path(os.path.realpath(base_dir))
    for host, target in mounts.items():
        raw = Path(host).expanduser()
        real = Path(os.path.realpath(raw if raw.is_absolute() else base_dir / raw))
        if roots is not None and not any(real == root or real.is_relative_to(root) for root in roots):
            problems.append(f"mount source {host!r} resolves outside the allowed mount roots "
                            "(engines.dagger.mount_roots; symlinks and .. are followed)")
        elif must_exist and not real.is_dir():
            problems.append(f"mount source {host!r} " + ("is not a folder" if real.exists() else "does not exist"))
        resolved.append(Mount(real, posixpath.normpath(target)))
    return resolved, problems
