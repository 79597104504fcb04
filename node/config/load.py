"""Loading a config: the YAML file, `PRAXIS_<SECTION>_<KEY>` overrides, and every check at once.

`load_config` raises one `ConfigError` listing every problem of the file (field errors, the
sections' rules, each engineSpec, files, imports), each at its key. A config it returns can
be started: nothing in it fails later for a config reason.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from node.config.engine_specs import ConfigContext, allowed_roots
from node.config.errors import ConfigError, ConfigProblem, problems_from
from node.config.model import DaggerEngineSettings, NodeConfig


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
    data = _env_overrides(data, os.environ if env is None else env)
    base_dir = base_dir.resolve() if base_dir is not None else None
    context = ConfigContext(base_dir=base_dir, mount_roots=_mount_roots(data, base_dir))
    try:
        config = NodeConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError.listing(source, problems_from(exc.errors())) from None
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
