"""The `engineSpec` of a `dagger` tool: its model, its validation, and mount resolution.

```yaml
engineSpec:
  image: busybox:latest                 # required
  command: ["sh", "-c", "wc -w"]        # required, a list of strings
  mounts: {./data: /data}               # host folder (relative to the config file) -> container path
  env: {LANG: C}                        # fixed variables
  env_passthrough: [API_TOKEN]          # copied from the node's environment when set there
  cache: false                          # true: no CACHE_BUST, Dagger may reuse an earlier run
  timeout: 60                           # seconds; default engines.dagger.default_timeout_seconds
```

Every problem is a `ContractError` naming the tool and the field. Mount sources are resolved to
real paths (symlinks and `..` followed) and must lie inside one of the allowed roots.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError, field_validator

from node.config import ToolContract, valid_identifier
from protocols.errors import ContractError

CACHE_BUST = "CACHE_BUST"


class DaggerSpec(BaseModel):
    # Unknown keys are ignored: the Go node's configs may carry fields this engine does not use.
    model_config = ConfigDict(extra="ignore")

    image: StrictStr = Field(min_length=1)
    command: list[StrictStr] = Field(min_length=1)
    mounts: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    env: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    env_passthrough: list[StrictStr] = Field(default_factory=list)
    cache: StrictBool = False
    timeout: float | None = Field(default=None, gt=0, le=24 * 3600)

    @field_validator("mounts", "env", "env_passthrough", mode="before")
    @classmethod
    def _null_is_empty(cls, v: Any, info: Any) -> Any:
        if v is None:
            return [] if info.field_name == "env_passthrough" else {}
        return v

    @field_validator("timeout", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        if isinstance(v, bool) or (v is not None and not isinstance(v, int | float)):
            raise ValueError("must be a number of seconds")
        return v


_EXPECTED = {
    "image": "a non-empty string (an image reference such as busybox:latest)",
    "command": 'a non-empty list of strings (argv, e.g. ["sh", "-c", "..."])',
    "mounts": "a mapping of host folder to container path (strings)",
    "env": "a mapping of variable name to string value",
    "env_passthrough": "a list of variable names",
    "cache": "true or false",
    "timeout": "a positive number of seconds",
}


def parse_spec(contract: ToolContract) -> DaggerSpec:
    """Validate a dagger contract's engineSpec; raise `ContractError` naming the field."""
    tool = contract.name
    try:
        spec = DaggerSpec.model_validate(contract.engine_spec)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "engineSpec"
        missing = err["type"] == "missing"
        found = "" if missing else f" (found {type(err.get('input')).__name__})"
        what = "is missing" if missing else "is invalid"
        expected = _EXPECTED.get(field, err["msg"])
        raise ContractError(f"tool {tool!r}: engineSpec.{field} {what}{found}; expected {expected}") from None
    for name in [*spec.env, *spec.env_passthrough]:
        if not valid_identifier(name):
            raise ContractError(f"tool {tool!r}: engineSpec env name {name[:64]!r} is not a valid variable name")
    both = sorted(set(spec.env) & set(spec.env_passthrough))
    if both:
        raise ContractError(f"tool {tool!r}: {both} appear in both engineSpec.env and env_passthrough")
    if CACHE_BUST in spec.env or CACHE_BUST in spec.env_passthrough:
        raise ContractError(f"tool {tool!r}: {CACHE_BUST} is set by the engine (use cache: true)")
    seen: set[str] = set()
    for host, target in spec.mounts.items():
        norm = posixpath.normpath(target)
        if not target.startswith("/") or norm == "/":
            raise ContractError(
                f"tool {tool!r}: engineSpec.mounts[{host!r}]: container path {target!r} "
                "must be an absolute path other than /"
            )
        if norm in seen:
            raise ContractError(f"tool {tool!r}: engineSpec.mounts: {target!r} is mounted twice")
        seen.add(norm)
    return spec


@dataclass(frozen=True)
class Mount:
    host: Path  # real path: no symlinks, no ..
    container: str


def allowed_roots(mount_roots: list[str], base_dir: Path) -> list[Path]:
    """The folders mounts may come from, as real paths (default: the config file's folder)."""
    values = mount_roots or ["."]
    roots = []
    for value in values:
        path = Path(value).expanduser()
        roots.append(Path(os.path.realpath(path if path.is_absolute() else base_dir / path)))
    return roots


def resolve_mounts(
    contract: ToolContract,
    spec: DaggerSpec,
    base_dir: Path,
    roots: list[Path],
    *,
    must_exist: bool,
) -> list[Mount]:
    """Resolve each mount's host folder to its real path and check it against the roots."""
    mounts = []
    for host, target in spec.mounts.items():
        raw = Path(host).expanduser()
        real = Path(os.path.realpath(raw if raw.is_absolute() else base_dir / raw))
        if not any(real == root or real.is_relative_to(root) for root in roots):
            raise ContractError(
                f"tool {contract.name!r}: mount source {host!r} resolves outside the allowed "
                "mount roots (engines.dagger.mount_roots; symlinks and .. are followed)"
            )
        if must_exist and not real.is_dir():
            what = "is not a folder" if real.exists() else "does not exist"
            raise ContractError(f"tool {contract.name!r}: mount source {host!r} {what}")
        mounts.append(Mount(real, posixpath.normpath(target)))
    return mounts
