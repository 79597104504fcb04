"""Loading a config: the YAML file, `PRAXIS_<SECTION>_<KEY>` overrides, and every check at once.

`load_config` raises one `ConfigError` listing every problem of the file (field errors, the
sections' rules, each engineSpec, files, imports), each at its key. A config it returns can
be started: nothing in it fails later for a config reason.

Environment overrides: `PRAXIS_<SECTION>_<KEY>` for each key of a top-level section
(`PRAXIS_P2P_PORT`), `PRAXIS_<SECTION>_<SUBSECTION>_<KEY>` inside a section
(`PRAXIS_ENGINES_PROCESS_ENABLED`). A bad value is reported at its variable; any other
`PRAXIS_` variable is refused with the nearest name, except the test suite's `PRAXIS_TEST_*`
and the variables a dagger tool passes through (`env_passthrough`).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from node.config.engine_specs import ConfigContext, allowed_roots
from node.config.errors import ConfigError, ConfigProblem, EnvOverride, problems_from
from node.config.model import DaggerEngineSettings, NodeConfig

# PRAXIS_ variables that are not config overrides: a node accepts them and never reads them.
# `PRAXIS_TEST_*` belong to the test suite (PRAXIS_TEST_DAGGER, PRAXIS_TEST_RECORD_FILE), which
# passes them to the nodes it starts. Every other PRAXIS_ variable must name a config key.
# (`PRAXIS_MCP_TOKEN`, also the CLI's default for --token, is the override of mcp.token.)
ENV_PREFIX = "PRAXIS_"
NOT_OVERRIDES: frozenset[str] = frozenset()
NOT_OVERRIDE_PREFIXES = ("PRAXIS_TEST_",)


def _keys(model: type[BaseModel], prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _keys(annotation, (*prefix, key))  # a (sub)section: its keys
        elif prefix:
            yield (*prefix, key), annotation


def env_override_keys() -> dict[str, tuple[tuple[str, ...], Any]]:
    """Every override variable: `PRAXIS_P2P_PORT` -> (("p2p", "port"), its type). A key of a
    top-level section, or of a section inside one (`PRAXIS_ENGINES_PROCESS_ENABLED`)."""
    return {ENV_PREFIX + "_".join(loc).upper(): (loc, annotation) for loc, annotation in _keys(NodeConfig, ())}


_PLAIN = (str, int, float, bool, str | None)


def _plain(annotation: Any) -> bool:
    """A scalar or a list of strings: a value an error may show (a structure is not shown)."""
    return annotation in _PLAIN or (get_origin(annotation) is list and get_args(annotation) == (str,))


def _env_value(annotation: Any, value: str) -> Any:
    """A variable's text as the key's value: lists of strings comma-separated, strings as they
    are, anything else as YAML (`4001`, `false`, `[a, b]`), or as the text when it is not YAML."""
    if get_origin(annotation) is list and get_args(annotation) == (str,):
        return [v.strip() for v in value.split(",") if v.strip()]
    if annotation is str or annotation == str | None:
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _set(raw: dict[str, Any], loc: tuple[str, ...], value: Any) -> bool:
    """Set `raw[loc[0]][loc[1]]... = value`, copying the mappings on the way (the caller's data is
    not changed); False when something on the way is not a mapping (the file's own problem)."""
    node = raw
    for part in loc[:-1]:
        child = node.get(part)
        if child is None:
            child = {}
        if not isinstance(child, dict):
            return False
        node[part] = child = dict(child)
        node = child
    node[loc[-1]] = value
    return True


def _passed_through(raw: dict[str, Any]) -> set[str]:
    """The variables the config's dagger tools copy into their containers (env_passthrough)."""
    names: set[str] = set()
    tools = _mapping(raw, "agent").get("tools")
    for tool in tools if isinstance(tools, list) else []:
        spec = tool.get("engineSpec") if isinstance(tool, dict) and tool.get("engine") == "dagger" else None
        listed = spec.get("env_passthrough") if isinstance(spec, dict) else None
        names |= {n for n in listed if isinstance(n, str)} if isinstance(listed, list) else set()
    return names


def _unknown_variable(name: str, known: Iterable[str]) -> ConfigProblem:
    """A PRAXIS_ variable that names no key, with the nearest name that does (difflib)."""
    keys = {k.removeprefix(ENV_PREFIX): k for k in known}
    close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), keys, n=1)
    if close:
        return ConfigProblem(name, f"unknown variable, not a config override; did you mean {keys[close[0]]}?")
    return ConfigProblem(name, "unknown variable, not a config override (those are PRAXIS_<SECTION>_<KEY>, "
                               "such as PRAXIS_P2P_PORT); unset it or correct its name")


def apply_env_overrides(
    data: dict[str, Any], env: Mapping[str, str]
) -> tuple[dict[str, Any], list[EnvOverride], list[ConfigProblem]]:
    """`data` with the PRAXIS_<SECTION>_<KEY> variables of `env` applied (a copy), what each one
    set (so a bad value is reported at its variable), and a problem for each PRAXIS_ variable
    that names no key (a typo would otherwise be ignored while the file's own typos are not)."""
    known = env_override_keys()
    raw = dict(data)
    overrides: list[EnvOverride] = []
    problems: list[ConfigProblem] = []
    allowed = NOT_OVERRIDES | _passed_through(data)
    for name in sorted(env):
        value = env[name]
        if not name.startswith(ENV_PREFIX) or name in allowed or name.startswith(NOT_OVERRIDE_PREFIXES):
            continue
        if name not in known:
            problems.append(_unknown_variable(name, known))
            continue
        loc, annotation = known[name]
        if _set(raw, loc, _env_value(annotation, value)):
            overrides.append(EnvOverride(name, value, loc, plain=_plain(annotation)))
    return raw, overrides, problems


def _mapping(data: Any, *keys: str) -> dict[str, Any]:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else {}


def _mount_roots(data: dict[str, Any], base_dir: Path | None) -> list[Path] | None:
    """engines.dagger.mount_roots as real paths, for checking the tools' mounts (which are
    validated before the engines section); None when the setting is itself invalid."""
    if base_dir is None:
        return None
    try:
        settings = DaggerEngineSettings.model_validate(_mapping(data, "engines", "dagger"))
    except ValidationError:
        return None
    return allowed_roots(settings.mount_roots, base_dir)


def parse_config(
    data: Any,
    *,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> NodeConfig:
    """Validate a config mapping; one `ConfigError` lists every problem.

    With `base_dir` (the config file's folder, as `load_config` passes it), relative paths
    resolve against it and files and imports are checked too: dagger mounts exist inside the
    allowed roots, `cwd` folders exist, python callables import.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        message = f"expected a mapping at the top level, found {type(data).__name__}"
        raise ConfigError(f"{source}: {message}", [ConfigProblem("", message)])
    data, overrides, problems = apply_env_overrides(data, os.environ if env is None else env)
    base_dir = base_dir.resolve() if base_dir is not None else None
    context = ConfigContext(base_dir=base_dir, mount_roots=_mount_roots(data, base_dir))
    try:
        config = NodeConfig.model_validate(data, context=context)
    except ValidationError as exc:
        problems += problems_from(exc.errors(), overrides)
    if problems:
        raise ConfigError.listing(source, problems)
    return config.with_base_dir(base_dir) if base_dir is not None else config


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> NodeConfig:
    """Load and check a YAML config file; relative paths resolve against its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        message = f"cannot read the config file: {why}"
        raise ConfigError(f"{path}: {message}", [ConfigProblem("", message)]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        message = f"not valid YAML{where}: {getattr(exc, 'problem', None) or 'invalid YAML'}"
        raise ConfigError(f"{path}: {message}", [ConfigProblem("", message)]) from None
    return parse_config(data, source=str(path), env=env, base_dir=path.resolve().parent)
