"""The config's models: the sections of the Go node's YAML, and the rules each section checks.

Sections check themselves wherever they are built: addresses (`p2p.host`, `mcp.host`,
`p2p.bootstrap_nodes`), the endpoint's token rule, `mcp.servers` entries, and the parameters a
tool may declare. A tool's `engineSpec` is checked with its engine's model
(`node.config.engine_specs`) when the tool is part of a config being loaded (validated with a
`ConfigContext`); a `ToolContract` built on its own is checked by its engine
(`check_contract`), with the same model.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import multiaddr
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from node.config.engine_specs import (
    ENGINE_SPECS,
    PYTHON_EVENTS_PARAMETER,
    EngineSpec,
    config_context,
    folder_problem,
    mcp_server_problem,
    parse_engine_spec,
)
from node.config.errors import Loc, as_details, contract_error, invalid, with_problems
from protocols.messages import ToolParameter, ToolSpec

TOOL_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
EngineKind = Literal["dagger", "remote-mcp", "process", "python"]
MiB = 1024 * 1024
SpecT = TypeVar("SpecT", bound=EngineSpec)
PEER_ADDRESS_EXAMPLE = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW..."


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
    # The engineSpec parsed by its engine's model (see `typed_spec`).
    _spec: EngineSpec | None = PrivateAttr(default=None)
    # The folder of the config file this tool was loaded from (see `config_dir`).
    _config_dir: Path | None = PrivateAttr(default=None)

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
            raise contract_error(f"tool {tool!r}: parameter(s) {dupes} are declared more than once")
        if info.data.get("engine") in ENV_ENGINES:
            for name in names:
                problem = env_param_problem(name)
                if problem:
                    raise contract_error(
                        f"tool {tool!r}: parameter {name[:64]!r} {problem}. A parameter of a "
                        f"{info.data['engine']} tool becomes an environment variable: {ENV_PARAM_RULE}"
                    )
        return params

    @field_validator("engine_spec")
    @classmethod
    def _engine_spec_checked(cls, spec: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """In a config being loaded, the engine's model checks the spec (every problem at its key).
        Always: a parameter that the contract's own variables would shadow could never be passed."""
        details: list[InitErrorDetails] = []
        engine = info.data.get("engine")
        context = config_context(info)
        if context is not None and engine in ENGINE_SPECS:
            try:
                ENGINE_SPECS[engine].model_validate(spec, context=context)
            except ValidationError as exc:
                details += [as_details(err) for err in exc.errors()]
        if engine in ENV_ENGINES:
            env = spec.get("env")
            passthrough = spec.get("env_passthrough")
            taken = set(env) if isinstance(env, dict) else set()
            if engine == "dagger" and isinstance(passthrough, list):
                taken |= {n for n in passthrough if isinstance(n, str)}
            clash = sorted(p.name for p in info.data.get("params", []) if p.name in taken)
            if clash:
                message = (f"tool {info.data.get('name', '?')!r}: parameter(s) {clash} are also set by "
                           "engineSpec.env or env_passthrough; a call could never pass them (rename one)")
                details.append(InitErrorDetails(type=contract_error(message), loc=(), input=None))
        if engine == "python" and any(p.name == PYTHON_EVENTS_PARAMETER for p in info.data.get("params", [])):
            message = (f"tool {info.data.get('name', '?')!r}: no parameter may be named "
                       f"{PYTHON_EVENTS_PARAMETER!r}: the python engine passes the call's events under "
                       "that name (rename the parameter)")
            details.append(InitErrorDetails(type=contract_error(message), loc=(), input=None))
        if details:
            raise ValidationError.from_exception_data(cls.__name__, details)
        return spec

    @field_validator("accept_undeclared_arguments")
    @classmethod
    def _undeclared_never_become_env(cls, accept: bool, info: ValidationInfo) -> bool:
        engine = info.data.get("engine")
        if accept and engine in ENV_ENGINES:
            raise contract_error(
                f"tool {info.data.get('name', '?')!r}: accept_undeclared_arguments is not allowed for "
                f"{engine} tools: their arguments become environment variables, so only declared "
                "params may be passed (declare each one under params)"
            )
        return accept

    @model_validator(mode="after")
    def _keep_parsed_spec(self, info: ValidationInfo) -> ToolContract:
        context = config_context(info)
        if context is not None:  # checked above: keep the typed spec the engine will run
            self._spec = ENGINE_SPECS[self.engine].model_validate(self.engine_spec)
            self._config_dir = context.base_dir
        return self

    @property
    def config_dir(self) -> Path | None:
        """The folder of the config file this tool was loaded from (where a python tool's module
        is looked for first); None for a contract built in code."""
        return self._config_dir

    def typed_spec(self, model: type[SpecT], *, fresh: bool = False) -> SpecT:
        """The engineSpec as `model`, parsed once (again with `fresh`); a `ContractError` naming
        the tool and every problem when it does not fit. A contract is a value: its engineSpec
        is not changed after it is built."""
        if fresh or not isinstance(self._spec, model):
            self._spec = parse_engine_spec(model, self.name, self.engine_spec)
        return self._spec

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

    @model_validator(mode="wrap")
    @classmethod
    def _unique_tools(cls, data: Any, handler: ModelWrapValidatorHandler[AgentSection]) -> AgentSection:
        return unique_names(cls.__name__, data, handler, "tools", "tool")


class P2PSection(_Section):
    port: int = Field(default=0, ge=0, le=65535)
    host: str = "127.0.0.1"
    bootstrap_nodes: list[str] = Field(default_factory=list)
    enable_mdns: bool = True
    # Ask each new peer whom it knows and dial some of them (within budgets and max_peers).
    # Off by default: the DHT and GossipSub announcements find peers and tools without a full mesh.
    peer_exchange: bool = False
    # Find tools and peers through the Kademlia DHT and GossipSub card announcements. Off: the
    # node knows only the peers it is connected to (bootstrap, mDNS, peer exchange).
    discovery: bool = True
    # Connections kept open at most; calls to further peers use short-lived connections.
    max_peers: int = Field(default=32, ge=2, le=1024)
    # Connections the node tries to keep (dialling peers its DHT routing table knows).
    min_peers: int = Field(default=4, ge=0, le=1024)
    # GossipSub: how often this node re-announces its card; a card not renewed within
    # `announce_ttl_seconds` (and not held over a live connection) is dropped.
    announce_seconds: float = Field(default=15.0, gt=0)
    # ... or this many seconds per peer the node knows, when longer: the whole mesh then sends
    # about 1/this announcements a second, whatever its size (each reaches every node).
    announce_seconds_per_peer: float = Field(default=1.0, ge=0, le=60)
    announce_ttl_seconds: float = Field(default=50.0, gt=0)
    # GossipSub heartbeat (py-libp2p's default is 120 s).
    gossip_heartbeat_seconds: int = Field(default=1, ge=1, le=60)
    # Kademlia DHT: provider records for this node's tools are re-announced this often and
    # expire this long after their last announcement (py-libp2p's defaults: 22 h / 48 h).
    # Announcements keep liveness; a record only serves lookups of tools not announced here, and
    # every re-provide is a DHT walk that may dial a few peers (tool_dht.WALK_WIDTH): the refresh is slow.
    provide_refresh_seconds: float = Field(default=300.0, gt=0)
    provider_ttl_seconds: float = Field(default=900.0, gt=0)
    # Where the node's Ed25519 key lives (relative to the config file's folder).
    key_file: str = "identity.key"
    # How often peers' cards are fetched again even without a change notice.
    card_refresh_seconds: float = Field(default=30.0, gt=0)
    # Upper bound of the exponential backoff between dials of a bootstrap node.
    dial_backoff_max_seconds: float = Field(default=10.0, gt=0)

    @field_validator("host")
    @classmethod
    def _listen_address(cls, host: str) -> str:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise contract_error(f"found {host[:64]!r}; expected an IPv4 or IPv6 address to listen on, "
                                 "such as 127.0.0.1 or 0.0.0.0 (not a name)") from None
        return host

    @field_validator("bootstrap_nodes")
    @classmethod
    def _peer_addresses(cls, addrs: list[str]) -> list[str]:
        problems: list[tuple[Loc, str]] = []
        for i, addr in enumerate(addrs):
            problem = peer_address_problem(addr)
            if problem:
                problems.append(((i,), problem))
        if problems:
            raise invalid(cls.__name__, problems)
        return addrs


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

    @field_validator("cwd")
    @classmethod
    def _cwd_exists(cls, cwd: str | None, info: ValidationInfo) -> str | None:
        """A stdio server's folder must exist (the process would not start)."""
        context = config_context(info)
        if cwd is not None and info.data.get("command") and context is not None and context.base_dir is not None:
            problem = folder_problem(context.base_dir, cwd)
            if problem:
                raise contract_error(problem)
        return cwd

    @model_validator(mode="after")
    def _reachable(self) -> McpServerEntry:
        problem = mcp_server_problem(address=self.address, transport=self.transport, command=self.command,
                                     headers=self.headers, env=self.env)
        if problem:
            raise invalid(type(self).__name__, [((), f"server {self.name!r}: {problem}")])
        return self


class McpSection(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    # Bearer token; required off loopback. Checked even when absent (validate_default).
    token: str | None = Field(default=None, repr=False, validate_default=True)
    servers: list[McpServerEntry] = Field(default_factory=list)
    # How often forwarded servers' tool lists are fetched again without a change notice.
    refresh_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="wrap")
    @classmethod
    def _unique_servers(cls, data: Any, handler: ModelWrapValidatorHandler[McpSection]) -> McpSection:
        return unique_names(cls.__name__, data, handler, "servers", "server")

    @field_validator("host")
    @classmethod
    def _bind_address(cls, host: str) -> str:
        if host != "localhost":
            try:
                ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
            except ValueError:
                raise contract_error(f"found {host[:64]!r}; expected an IPv4 or IPv6 address to serve on "
                                     "(or localhost), such as 127.0.0.1") from None
        return host

    @field_validator("token")
    @classmethod
    def _token_off_loopback(cls, token: str | None, info: ValidationInfo) -> str | None:
        """The endpoint served off loopback needs a token (SECURITY.md, promise 12)."""
        host = info.data.get("host")
        if info.data.get("enabled") and not token and isinstance(host, str) and not is_loopback(host):
            raise contract_error(
                f"missing; required because mcp.host {host!r} is not a loopback address: set a token, "
                "which clients then send as 'Authorization: Bearer <token>' (or serve on 127.0.0.1)")
        return token


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
    # /praxis/tool/1.1.0: calls one stream carries one after the other before it is closed, and
    # idle call streams kept open to one peer for the next call (0: a new stream per call).
    max_calls_per_stream: int = Field(default=1000, ge=1, le=1_000_000)
    max_idle_streams_per_peer: int = Field(default=32, ge=0, le=10000)

    @model_validator(mode="after")
    def _idle_streams_leave_room(self) -> LimitsSection:
        # Checked when set; by default the pool takes at most half (node/app.py).
        if ("max_idle_streams_per_peer" in self.model_fields_set
                and self.max_idle_streams_per_peer > self.max_streams_per_peer // 2):
            raise invalid(type(self).__name__, [(("max_idle_streams_per_peer",),
                          f"at most half of max_streams_per_peer ({self.max_streams_per_peer // 2}): "
                          "idle call streams must leave room for calls and the other protocols")])
        return self


class PolicySection(_Section):
    # Who may call tools that do not name their own allow_peers ("*": any authenticated peer).
    default_allow: list[str] = Field(default_factory=lambda: ["*"])


class TracingSection(_Section):
    # Where to send traces (OTLP over HTTP, e.g. http://127.0.0.1:4318/v1/traces); off when unset.
    otlp_endpoint: str | None = Field(default=None, pattern=r"^https?://[^\s]{1,2000}$")


class NodeConfig(_Section):
    agent: AgentSection = Field(default_factory=AgentSection)
    p2p: P2PSection = Field(default_factory=P2PSection)
    mcp: McpSection = Field(default_factory=McpSection)
    engines: EnginesSection = Field(default_factory=EnginesSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    policy: PolicySection = Field(default_factory=PolicySection)
    tracing: TracingSection = Field(default_factory=TracingSection)
    # The folder relative paths in this config are resolved against (the file's folder).
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @model_validator(mode="wrap")
    @classmethod
    def _process_tools_need_the_engine(cls, data: Any, handler: ModelWrapValidatorHandler[NodeConfig]) -> NodeConfig:
        """A process tool while the process engine is off would be advertised and then refuse
        every call: refused here, at the tool, with every other problem of the config."""
        problems: list[tuple[Loc, str]] = []
        if isinstance(data, dict) and not _process_engine_enabled(data.get("engines")):
            tools = data.get("agent", {}).get("tools") if isinstance(data.get("agent"), dict) else None
            for i, tool in enumerate(tools if isinstance(tools, list) else []):
                if isinstance(tool, dict) and tool.get("engine") == "process":
                    name = tool.get("name")
                    shown = repr(name[:64]) if isinstance(name, str) else f"#{i}"
                    problems.append((("agent", "tools", i, "engine"), PROCESS_ENGINE_OFF.format(tool=shown)))
        try:
            config = handler(data)
        except ValidationError as exc:
            if not problems:
                raise
            raise with_problems(cls.__name__, exc, problems) from None
        if problems:
            raise with_problems(cls.__name__, None, problems)
        return config

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


PROCESS_ENGINE_OFF = (
    "tool {tool} is a process tool, but the process engine is disabled, so every call would be refused: "
    "set engines.process.enabled: true (the process runs on this host without isolation), or remove the tool"
)


def _process_engine_enabled(engines: Any) -> bool:
    """engines.process.enabled of a config being validated; True when that setting is itself
    invalid (it is reported on its own key)."""
    if engines is not None and not isinstance(engines, dict):
        return True
    settings = engines.get("process") if isinstance(engines, dict) else None
    try:
        return ProcessEngineSettings.model_validate(settings if settings is not None else {}).enabled
    except ValidationError:
        return True


SectionT = TypeVar("SectionT", bound=BaseModel)


def unique_names(
    title: str, data: Any, handler: ModelWrapValidatorHandler[SectionT], key: str, what: str
) -> SectionT:
    """Validate a section whose `key` lists named items; their names must be unique (reported
    along with every other problem of the section)."""
    items = data.get(key) if isinstance(data, dict) else None
    names: list[str] = [i["name"] for i in items if isinstance(i, dict) and isinstance(i.get("name"), str)] \
        if isinstance(items, list) else []
    dupes = sorted({n for n in names if names.count(n) > 1})
    problems: list[tuple[Loc, str]] = [((key,), f"the {what} name(s) {dupes} appear more than once")] if dupes else []
    try:
        section = handler(data)
    except ValidationError as exc:
        raise with_problems(title, exc, problems) from None
    if problems:
        raise with_problems(title, None, problems)
    return section


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback IP address (IPv6 with or without brackets)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def peer_address_problem(text: str) -> str | None:
    """Why `text` is not a peer's address (a multiaddr ending in /p2p/<peer id>); None when it is.

    The same test as the mesh's `parse_peer_addr` (py-libp2p's `info_from_p2p_addr`), plus an
    address to dial before /p2p/, without importing libp2p.
    """
    shown = repr(text[:100])
    try:
        addr = multiaddr.Multiaddr(text)
        protocols = [p.name for p in addr.protocols()]
        peer = addr.get_peer_id() if protocols and protocols[-1] == "p2p" else None
    except Exception:  # multiaddr raises several types for malformed input
        return f"{shown} is not a multiaddr; expected a peer address such as {PEER_ADDRESS_EXAMPLE}"
    if peer is None:
        return f"{shown} does not end in /p2p/<peer id>; expected e.g. {PEER_ADDRESS_EXAMPLE}"
    if len(protocols) < 2:
        return f"{shown} has no address to dial before /p2p/; expected e.g. {PEER_ADDRESS_EXAMPLE}"
    return None


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
