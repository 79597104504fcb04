"""TEST STAND-IN: the lazily evaluated pipeline state behind Dagger IDs.

A `ContainerState` is an immutable description of a container pipeline (image, env, secret
env, mounts, workdir, at most one exec). Its ID is the state itself, encoded, so any ID can be
loaded again; its digest is the cache key of its exec. Secret values never enter a state: a
secret variable refers to a secret by an opaque handle the server keeps the plaintext under.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError

ID_PREFIX = "standin1."


@dataclass(frozen=True)
class DirRef:
    """A directory: a host snapshot (`kind="host"`, `key` = content digest) or what a mount
    held after an exec (`kind="output"`, `key` = exec digest, `index` = mount index)."""

    kind: str
    key: str
    index: int = 0
    subpath: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DirRef:
        return cls(str(data["kind"]), str(data["key"]), int(data["index"]), str(data["subpath"]))


@dataclass(frozen=True)
class ContainerState:
    image: str | None = None
    # (name, "value" | "secret", value or secret handle); later entries override earlier ones.
    env: tuple[tuple[str, str, str], ...] = ()
    mounts: tuple[tuple[str, DirRef, bool], ...] = ()  # (container path, source, read_only)
    workdir: str | None = None
    exec_args: tuple[str, ...] | None = None
    expect: str = "SUCCESS"

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "env": [list(e) for e in self.env],
            "mounts": [[p, d.to_json(), ro] for p, d, ro in self.mounts],
            "workdir": self.workdir,
            "exec": list(self.exec_args) if self.exec_args is not None else None,
            "expect": self.expect,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerState:
        return cls(
            image=data["image"],
            env=tuple((str(a), str(b), str(c)) for a, b, c in data["env"]),
            mounts=tuple((str(p), DirRef.from_json(d), bool(ro)) for p, d, ro in data["mounts"]),
            workdir=data["workdir"],
            exec_args=tuple(data["exec"]) if data["exec"] is not None else None,
            expect=str(data["expect"]),
        )

    def digest(self) -> str:
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def with_env(self, name: str, kind: str, value: str) -> ContainerState:
        kept = tuple(e for e in self.env if e[0] != name)
        return dataclasses.replace(self, env=(*kept, (name, kind, value)))

    def effective_env(self) -> dict[str, tuple[str, str]]:
        return {name: (kind, value) for name, kind, value in self.env}


def encode_id(kind: str, payload: dict[str, Any]) -> str:
    raw = json.dumps({"k": kind, "p": payload}, sort_keys=True, separators=(",", ":"))
    return ID_PREFIX + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_id(kind: str, value: str) -> dict[str, Any]:
    if not isinstance(value, str) or not value.startswith(ID_PREFIX):
        raise GraphQLError(f"invalid {kind} ID")
    body = value[len(ID_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        data = json.loads(raw)
    except ValueError:
        raise GraphQLError(f"invalid {kind} ID") from None
    if not isinstance(data, dict) or data.get("k") != kind or not isinstance(data.get("p"), dict):
        raise GraphQLError(f"the ID is not a {kind} ID")
    payload: dict[str, Any] = data["p"]
    return payload


@dataclass
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str
    outputs: list[str] = field(
        default_factory=list
    )  # host folders holding each mount after the run


class NeedWork(Exception):  # noqa: N818 - a signal to the executor, not an error
    """Raised by a resolver that needs I/O first; the server runs `job` and executes again."""

    def __init__(self, key: str, job: Callable[[], Awaitable[None]]) -> None:
        super().__init__(key)
        self.key = key
        self.job = job
