"""Node configuration: the Go node's YAML shape, checked once, when it loads.

- `model`: the sections (`NodeConfig`, `ToolContract`, ...) and the rules each one checks.
- `engine_specs`: one model per engine's `engineSpec`, and the rules the engines share.
- `errors`: `ConfigError` and its problems, each at its key, never quoting a secret.
- `load`: `load_config` (a YAML file) and `parse_config` (a mapping), with
  `PRAXIS_<SECTION>_<KEY>` environment overrides of the keys of the top-level sections and of
  the sections inside them (lists comma-separated), e.g. `PRAXIS_P2P_PORT=4001`,
  `PRAXIS_ENGINES_PROCESS_ENABLED=true`. Any other `PRAXIS_` variable is refused (but
  `PRAXIS_TEST_*`, the test suite's, and the names dagger tools pass through).

A config `load_config` returns starts: every problem of a bad one is reported at once.
"""

from node.config.engine_specs import (
    CACHE_BUST,
    ENGINE_SPECS,
    PYTHON_EVENTS_PARAMETER,
    TRANSPORTS,
    ConfigContext,
    DaggerSpec,
    EngineSpec,
    Mount,
    ProcessSpec,
    PythonSpec,
    RemoteMcpSpec,
    Transport,
    allowed_roots,
    import_callable,
    mcp_server_problem,
    parse_engine_spec,
    resolve_mounts,
    valid_identifier,
)
from node.config.errors import ConfigError, ConfigProblem, EnvOverride
from node.config.load import (
    NOT_OVERRIDE_PREFIXES,
    NOT_OVERRIDES,
    apply_env_overrides,
    env_override_keys,
    load_config,
    parse_config,
)
from node.config.model import (
    ENV_ENGINES,
    ENV_PARAM_EXCLUDED,
    ENV_PARAM_RULE,
    TOOL_NAME_PATTERN,
    AgentSection,
    DaggerEngineSettings,
    EngineKind,
    EnginesSection,
    LimitsSection,
    McpSection,
    McpServerEntry,
    MiB,
    NodeConfig,
    P2PSection,
    PolicySection,
    ProcessEngineSettings,
    ToolContract,
    TracingSection,
    env_param_problem,
    is_loopback,
    peer_address_problem,
)

__all__ = [
    "CACHE_BUST",
    "ENGINE_SPECS",
    "ENV_ENGINES",
    "ENV_PARAM_EXCLUDED",
    "ENV_PARAM_RULE",
    "NOT_OVERRIDES",
    "NOT_OVERRIDE_PREFIXES",
    "PYTHON_EVENTS_PARAMETER",
    "TOOL_NAME_PATTERN",
    "TRANSPORTS",
    "AgentSection",
    "ConfigContext",
    "ConfigError",
    "ConfigProblem",
    "DaggerEngineSettings",
    "DaggerSpec",
    "EngineKind",
    "EngineSpec",
    "EnvOverride",
    "EnginesSection",
    "LimitsSection",
    "McpSection",
    "McpServerEntry",
    "MiB",
    "Mount",
    "NodeConfig",
    "P2PSection",
    "PolicySection",
    "TracingSection",
    "ProcessEngineSettings",
    "ProcessSpec",
    "PythonSpec",
    "RemoteMcpSpec",
    "ToolContract",
    "Transport",
    "allowed_roots",
    "apply_env_overrides",
    "env_override_keys",
    "env_param_problem",
    "import_callable",
    "is_loopback",
    "load_config",
    "mcp_server_problem",
    "parse_config",
    "parse_engine_spec",
    "peer_address_problem",
    "resolve_mounts",
    "valid_identifier",
]
