"""Node configuration: pydantic models in the shape of the Go node's YAML, loading, overrides.

A bad config fails at start with a `ConfigError` naming the file, the key, what was found
and what was expected. `PRAXIS_<SECTION>_<KEY>` environment variables override scalar and
list keys of the top-level sections (lists comma-separated), e.g. `PRAXIS_P2P_PORT=4001`,
`PRAXIS_P2P_BOOTSTRAP_NODES=/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from protocols.messages import ToolParameter, ToolSpec

TOOL_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
EngineKind = Literal["dagger", "remote-mcp", "process", "python"]
MiB = 1024 * 1024


class ConfigError(Exception):
    """The config file cannot be used; the message says where and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ToolContract(_Section):
    """One tool this node serves, in the Go node's shape (`engineSpec` is engine-specific)."""

    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str = ""
    engine: EngineKind
    params: list[ToolParameter] = Field(default_factory=list)
    engine_spec: dict[str, Any] = Field(default_factory=dict, alias="engineSpec")
    # A call that may already have run is retried on another provider only when idempotent.
    idempotent: bool = False
    # Peer IDs that may call this tool ("*": any authenticated peer). None: the node default.
    allow_peers: list[str] | None = None
    deny_peers: list[str] = Field(default_factory=list)
    # Arguments a call may carry besides the declared `params` (which are still checked).
    # Off by default: a call with an undeclared argument is refused. Only `python` and
    # `remote-mcp` tools may turn it on; for `process` and `dagger` tools, whose arguments
    # become environment variables, a config that sets it is refused at load.
    accept_undeclared_arguments: bool = False

    @field_validator("params", mode="before")
    @classmethod
    def _null_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v

    @field_validator("params")
    @classmethod
    def _params_are_data(cls, params: list[ToolParameter], info: ValidationInfo) -> list[ToolParameter]:
        """Unique names; for tools whose arguments become environment variables, safe names only."""
        tool = info.data.get("name", "?")
        names = [p.name for p in params]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise _contract_error(f"tool {tool!r}: parameter(s) {dupes} are declared more than once")
        if info.data.get("engine") in ENV_ENGINES:
            for name in names:
                problem = env_param_problem(name)
                if problem:
                    raise _contract_error(
                        f"tool {tool!r}: parameter {name[:64]!r} {problem}. A parameter of a "
                        f"{info.data['engine']} tool becomes an environment variable: {ENV_PARAM_RULE}"
                    )
        return params

    @field_validator("engine_spec")
    @classmethod
    def _params_do_not_collide(cls, spec: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """A parameter that the contract's own variables would shadow could never be passed."""
        if info.data.get("engine") not in ENV_ENGINES:
            return spec
        env = spec.get("env")
        passthrough = spec.get("env_passthrough")
        taken = set(env) if isinstance(env, dict) else set()
        if info.data.get("engine") == "dagger" and isinstance(passthrough, list):
            taken |= {n for n in passthrough if isinstance(n, str)}
        clash = sorted(p.name for p in info.data.get("params", []) if p.name in taken)
        if clash:
            raise _contract_error(
                f"tool {info.data.get('name', '?')!r}: parameter(s) {clash} are also set by "
                "engineSpec.env or env_passthrough; a call could never pass them (rename one)"
            )
        return spec

    @field_validator("accept_undeclared_arguments")
    @classmethod
    def _undeclared_never_become_env(cls, accept: bool, info: ValidationInfo) -> bool:
        engine = info.data.get("engine")
        if accept and engine in ENV_ENGINES:
            raise _contract_error(
                f"tool {info.data.get('name', '?')!r}: accept_undeclared_arguments is not allowed for "
                f"{engine} tools: their arguments become environment variables, so only declared "
                "params may be passed (declare each one under params)"
            )
        return accept

    def input_schema(self) -> dict[str, Any]:
        """JSON Schema of the arguments, derived from `params`."""
        props: dict[str, Any] = {}
        for p in self.params:
            props[p.name] = {"type": p.type, "description": p.description}
        return {
            "type": "object",
            "properties": props,
            "required": [p.name for p in self.params if p.required],
            "additionalProperties": self.accept_undeclared_arguments,
        }

    def to_spec(self) -> ToolSpec:
        return ToolSpec(
            name=self.name,
            description=self.description,
            parameters=list(self.params),
            input_schema=self.input_schema(),
            idempotent=self.idempotent,
        )


class AgentSection(_Section):
    name: str = Field(default="praxis-node", min_length=1, max_length=128)
    version: str = "0.1.0"
    tools: list[ToolContract] = Field(default_factory=list)

    @field_validator("tools", mode="before")
    @classmethod
    def _null_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v


class P2PSection(_Section):
    port: int = Field(default=0, ge=0, le=65535)
    host: str = "127.0.0.1"
    bootstrap_nodes: list[str] = Field(default_factory=list)
    enable_mdns: bool = True
    # Ask each new peer whom it knows and dial them: a full mesh from one bootstrap node.
    peer_exchange: bool = True
    # Where the node's Ed25519 key lives (relative to the config file's folder).
    key_file: str = "identity.key"
    # How often peers' cards are fetched again even without a change notice.
    card_refresh_seconds: float = Field(default=30.0, gt=0)
    # Upper bound of the exponential backoff between dials of a bootstrap node.
    dial_backoff_max_seconds: float = Field(default=10.0, gt=0)


class McpServerEntry(_Section):
    """A whole MCP server whose tools this node forwards calls to."""

    name: str = Field(pattern=TOOL_NAME_PATTERN)
    address: str | None = None  # URL for streamable-http / sse
    transport: Literal["streamable-http", "sse", "stdio"] | None = None
    command: str | None = None  # stdio
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)  # secret
    cwd: str | None = None  # stdio: working folder (relative to the config file's folder)
    share: bool = False  # also advertise these tools to peers in this node's card


class McpSection(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    token: str | None = Field(default=None, repr=False)  # bearer token; required off loopback
    servers: list[McpServerEntry] = Field(default_factory=list)
    # How often forwarded servers' tool lists are fetched again without a change notice.
    refresh_seconds: float = Field(default=60.0, gt=0)


class ProcessEngineSettings(_Section):
    enabled: bool = False  # host processes run without isolation: operator opt-in
    default_timeout_seconds: float = Field(default=30.0, gt=0)
    max_output_bytes: int = Field(default=1 * MiB, gt=0)


class DaggerEngineSettings(_Section):
    max_concurrency: int = Field(default=4, ge=1, le=256)
    default_timeout_seconds: float = Field(default=300.0, gt=0)
    # Folders mounts may come from; empty means the config file's folder.
    mount_roots: list[str] = Field(default_factory=list)


class EnginesSection(_Section):
    process: ProcessEngineSettings = Field(default_factory=ProcessEngineSettings)
    dagger: DaggerEngineSettings = Field(default_factory=DaggerEngineSettings)


class LimitsSection(_Section):
    max_frame_bytes: int = Field(default=4 * MiB, ge=1024)
    idle_timeout_seconds: float = Field(default=10.0, gt=0)
    call_timeout_seconds: float = Field(default=60.0, gt=0)
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    max_hops: int = Field(default=4, ge=1, le=64)
    max_inflight_total: int = Field(default=256, ge=1)
    max_inflight_per_peer: int = Field(default=64, ge=1)
    max_json_depth: int = Field(default=64, ge=4)
    max_argument_bytes: int = Field(default=1 * MiB, ge=64)  # a call's arguments, as JSON
    max_result_bytes: int = Field(default=4 * MiB, ge=64)  # a tool's result, as JSON
    # Connections open at once: in total, and from one remote IP address (inbound).
    max_connections: int = Field(default=128, ge=2, le=10000)
    max_connections_per_ip: int = Field(default=32, ge=1, le=10000)
    # Streams open at once on one peer's connection (both directions).
    max_streams_per_peer: int = Field(default=256, ge=8, le=10000)
    # Card exchanges one peer may start per minute (each costs parsing and re-listing).
    max_card_pushes_per_minute: int = Field(default=12, ge=1)


class PolicySection(_Section):
    # Who may call tools that do not name their own allow_peers ("*": any authenticated peer).
    default_allow: list[str] = Field(default_factory=lambda: ["*"])


class NodeConfig(_Section):
    agent: AgentSection = Field(default_factory=AgentSection)
    p2p: P2PSection = Field(default_factory=P2PSection)
    mcp: McpSection = Field(default_factory=McpSection)
    engines: EnginesSection = Field(default_factory=EnginesSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    policy: PolicySection = Field(default_factory=PolicySection)
    # The folder relative paths in this config are resolved against (the file's folder).
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def with_base_dir(self, base_dir: Path) -> NodeConfig:
        self._base_dir = base_dir.resolve()
        return self

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self._base_dir / path

    def tool(self, name: str) -> ToolContract | None:
        return next((t for t in self.agent.tools if t.name == name), None)


# Keys whose values may be secrets: a config error never shows what was found under them.
_SECRET_KEYS = frozenset({"headers", "token", "env", "secrets", "password", "authorization", "api_key"})
_SECRET_FRAGMENTS = ("secret", "token", "password")
# Errors that mean "a section, mapping or list was expected here": whatever was found instead
# (`mcp: "token=..."`) may be a secret written in the wrong place, so only its type is shown.
_CONTAINER_ERRORS = frozenset({
    "model_type", "model_attributes_type", "dataclass_type", "dict_type", "mapping_type",
    "list_type", "tuple_type", "set_type", "frozen_set_type", "iterable_type",
})
_CONTRACT_ERROR = "praxis_contract"
_SHOWN_CHARS = 80
_TYPE_NAMES = {"str": "string", "int": "number", "float": "number", "bool": "boolean", "dict": "mapping",
               "list": "list", "NoneType": "null"}


def _contract_error(message: str) -> PydanticCustomError:
    """A contract rule's error: `_describe` shows its message as it is, after the key."""
    return PydanticCustomError(_CONTRACT_ERROR, "{message}", {"message": message})


def _is_secret_key(part: Any) -> bool:
    name = str(part).lower()
    return name in _SECRET_KEYS or any(fragment in name for fragment in _SECRET_FRAGMENTS)


def _shown(err: Mapping[str, Any]) -> str:
    """What a config error may say it found: a scalar's value, otherwise only its type."""
    found = err.get("input")
    if any(_is_secret_key(p) for p in err["loc"]):
        return "(hidden)"
    if isinstance(found, dict | list) or err["type"] in _CONTAINER_ERRORS:
        kind = type(found).__name__
        return f"a {_TYPE_NAMES.get(kind, kind)}"
    text = repr(found)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _describe(errors: list[Any], source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in errors:
        loc = err["loc"]
        key = ""
        for part in loc:
            key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
        if err["type"] == "missing":
            lines.append(f"  {key}: missing; expected {err['msg'].lower()}")
        elif err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key; remove it or check its spelling")
        elif err["type"] == _CONTRACT_ERROR:
            lines.append(f"  {key}: {err['msg']}")
        else:
            lines.append(f"  {key}: found {_shown(err)}; expected: {err['msg']}")
    return "\n".join(lines)


def _env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Apply PRAXIS_<SECTION>_<KEY> overrides to the raw mapping (scalars and lists only)."""
    for section_name, section_field in NodeConfig.model_fields.items():
        model = section_field.annotation
        if not isinstance(model, type) or not issubclass(model, BaseModel):
            continue
        for key, field in model.model_fields.items():
            value = env.get(f"PRAXIS_{section_name}_{key}".upper())
            if value is None:
                continue
            origin = get_origin(field.annotation)
            section = raw.setdefault(section_name, {})
            if not isinstance(section, dict):
                continue
            if origin is list and get_args(field.annotation) == (str,):
                section[key] = [v.strip() for v in value.split(",") if v.strip()]
            elif field.annotation is str or field.annotation == str | None:
                section[key] = value
            elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                continue
            else:
                section[key] = yaml.safe_load(value)
    return raw


def parse_config(
    data: Any, *, source: str = "<config>", env: Mapping[str, str] | None = None
) -> NodeConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, found {type(data).__name__}")
    data = _env_overrides(data, os.environ if env is None else env)
    try:
        config = NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors(), source)) from None
    names = [t.name for t in config.agent.tools]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: agent.tools: the tool name(s) {dupes} appear more than once")
    return config


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> NodeConfig:
    """Load and validate a YAML config file; relative paths resolve against its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    config = parse_config(data, source=str(path), env=env)
    return config.with_base_dir(path.resolve().parent)


def valid_identifier(name: str) -> bool:
    """True for names usable as environment variables."""
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is not None


# The engines whose call arguments become environment variables of the program they run.
ENV_ENGINES = frozenset({"process", "dagger"})
# An allow-list: only these names can be parameters of such tools. Every variable that
# changes how a shell, the dynamic loader or a language runtime behaves is upper-case
# (SHELLOPTS, PS4, BASH_ENV, LD_PRELOAD, GIT_SSH_COMMAND, _JAVA_OPTIONS, GCONV_PATH, PAGER...)
# and environment names are case-sensitive, so upper-case names are never allowed.
_ENV_PARAM = re.compile(r"[a-z][a-z0-9_]{0,63}")
# The lower-case names programs do read: proxies (http_proxy, https_proxy, all_proxy,
# no_proxy... read by curl, wget, git, Python, Go, Perl) end in "proxy". The rest are names
# shells give a special meaning (zsh and csh tie path, cdpath, fpath, manpath... to PATH and
# friends) or lower-case spellings of the variables shells act on; none is worth the doubt.
_ENV_PARAM_SUFFIXES = ("proxy",)
ENV_PARAM_EXCLUDED = frozenset({
    "path", "cdpath", "fpath", "manpath", "module_path", "mailpath", "psvar", "fignore",
    "prompt", "prompt2", "prompt3", "prompt4", "histchars", "home", "shell", "ifs", "env",
    "bash_env", "cache_bust",
})
ENV_PARAM_RULE = (
    "use lower-case letters, digits and _ (start with a letter, at most 64 characters), "
    "not a name ending in 'proxy', and none of " + ", ".join(sorted(ENV_PARAM_EXCLUDED))
)


def env_param_problem(name: str) -> str | None:
    """Why `name` cannot be a parameter of a process or dagger tool; None when it can."""
    if len(name) > 64:
        return "is longer than 64 characters"
    if not _ENV_PARAM.fullmatch(name):
        return "is not a lower-case name"
    if name.endswith(_ENV_PARAM_SUFFIXES):
        return "would set a proxy variable"
    if name in ENV_PARAM_EXCLUDED:
        return "is reserved (shells or the engine give it a meaning)"
    return None
