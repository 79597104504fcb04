"""TEST STAND-IN: the slice of Dagger's GraphQL schema our engine uses, and its resolvers.

Type, field and argument names follow Dagger's real schema so the unmodified dagger-io SDK
builds its queries against it. Resolvers are synchronous (graphql-core's async executor uses
asyncio, and the stand-in runs on trio): a resolver that needs I/O first (an image lookup, a
container run, an export) raises `NeedWork`; `StandinEngine.execute` runs that work on trio and
executes the query again, until every field can be answered from what is known.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import trio
from graphql import (
    ExecutionResult,
    GraphQLError,
    GraphQLObjectType,
    build_schema,
    execute_sync,
    parse,
    validate,
)

from tests.dagger_standin.containers import DockerRunner
from tests.dagger_standin.model import (
    ContainerState,
    DirRef,
    ExecResult,
    NeedWork,
    decode_id,
    encode_id,
)

VERSION = "v0.0.0-praxis-test-standin"
MAX_ROUNDS = 8

SDL = """
scalar ContainerID
scalar DirectoryID
scalar SecretID
scalar HostID
scalar ServiceID
scalar Platform

"Expected return type of an execution"
enum ReturnType { ANY FAILURE SUCCESS }

type Query {
  container(platform: Platform): Container!
  host: Host!
  setSecret(name: String!, plaintext: String!): Secret!
  loadContainerFromID(id: ContainerID!): Container!
  loadDirectoryFromID(id: DirectoryID!): Directory!
  loadSecretFromID(id: SecretID!): Secret!
  version: String!
}

type Host {
  id: HostID!
  directory(path: String!, exclude: [String!] = [], include: [String!] = [],
            noCache: Boolean = false, gitignore: Boolean = false): Directory!
}

type Secret {
  id: SecretID!
  name: String!
}

type Directory {
  id: DirectoryID!
  entries(path: String): [String!]!
  export(path: String!, wipe: Boolean = false): String!
}

type Container {
  id: ContainerID!
  from(address: String!, registryService: ServiceID): Container!
  withEnvVariable(name: String!, value: String!, expand: Boolean = false): Container!
  withSecretVariable(name: String!, secret: SecretID!): Container!
  withMountedDirectory(path: String!, source: DirectoryID!, owner: String = "",
                       readOnly: Boolean = false, expand: Boolean = false): Container!
  withWorkdir(path: String!, expand: Boolean = false): Container!
  withExec(args: [String!]!, useEntrypoint: Boolean = false, stdin: String = "",
           redirectStdin: String = "", redirectStdout: String = "", redirectStderr: String = "",
           expect: ReturnType = SUCCESS, experimentalPrivilegedNesting: Boolean = false,
           insecureRootCapabilities: Boolean = false, expand: Boolean = false,
           noInit: Boolean = false): Container!
  stdout: String!
  stderr: String!
  exitCode: Int!
  sync: ContainerID!
  directory(path: String!, expand: Boolean = false): Directory!
}
"""

_DEFAULTS_ONLY = {
    "useEntrypoint": False,
    "stdin": "",
    "redirectStdin": "",
    "redirectStdout": "",
    "redirectStderr": "",
    "experimentalPrivilegedNesting": False,
    "insecureRootCapabilities": False,
    "expand": False,
    "noInit": False,
    "owner": "",
    "exclude": [],
    "include": [],
    "gitignore": False,
}


def _unsupported(args: dict[str, Any]) -> None:
    for name, value in args.items():
        if name in _DEFAULTS_ONLY and value != _DEFAULTS_ONLY[name]:
            raise GraphQLError(f"argument {name!r} is not supported by the praxis test stand-in")


@dataclasses.dataclass(frozen=True)
class HostObj:
    pass


@dataclasses.dataclass(frozen=True)
class SecretObj:
    handle: str
    name: str


class RequestContext:
    """What one HTTP request has done so far (exports run once per request)."""

    def __init__(self) -> None:
        self.exports: dict[str, str] = {}


class StandinEngine:
    """The stand-in's session state: known images, exec results, snapshots, secrets."""

    def __init__(self, runner: DockerRunner, state_dir: Path) -> None:
        self.runner = runner
        self.state_dir = state_dir
        self.images: dict[str, str | None] = {}
        self.execs: dict[str, ExecResult] = {}
        self.snapshots: dict[str, Path] = {}
        self.secrets: dict[str, str] = {}
        self._salt = secrets.token_bytes(16)
        self.schema = build_schema(SDL)
        self._bind()

    # -- running queries -------------------------------------------------------------------

    async def execute(
        self, query: str, variables: dict[str, Any] | None, operation: str | None
    ) -> dict[str, Any]:
        try:
            document = parse(query)
        except GraphQLError as exc:
            return {"data": None, "errors": [exc.formatted]}
        errors = validate(self.schema, document)
        if errors:
            return {"data": None, "errors": [e.formatted for e in errors]}
        ctx = RequestContext()
        for _ in range(MAX_ROUNDS):
            result: ExecutionResult = execute_sync(
                self.schema,
                document,
                root_value=object(),
                context_value=ctx,
                variable_values=variables,
                operation_name=operation,
            )
            needs: dict[str, NeedWork] = {}
            for err in result.errors or []:
                if isinstance(err.original_error, NeedWork):
                    needs.setdefault(err.original_error.key, err.original_error)
            if not needs:
                return dict(result.formatted)
            failures: list[str] = []
            async with trio.open_nursery() as nursery:
                for need in needs.values():
                    nursery.start_soon(_attempt, need, failures)
            if failures:
                return {"data": None, "errors": [{"message": m} for m in failures]}
        return {"data": None, "errors": [{"message": "stand-in: query needed too many rounds"}]}

    # -- schema binding --------------------------------------------------------------------

    def _bind(self) -> None:
        resolvers: dict[str, dict[str, Any]] = {
            "Query": {
                "container": lambda _r, _i, **a: ContainerState(),
                "host": lambda _r, _i, **a: HostObj(),
                "setSecret": self._set_secret,
                "loadContainerFromID": lambda _r, _i, id: ContainerState.from_json(
                    decode_id("Container", id)
                ),
                "loadDirectoryFromID": lambda _r, _i, id: DirRef.from_json(
                    decode_id("Directory", id)
                ),
                "loadSecretFromID": self._load_secret,
                "version": lambda _r, _i: VERSION,
            },
            "Host": {
                "id": lambda _r, _i: encode_id("Host", {}),
                "directory": self._host_directory,
            },
            "Secret": {
                "id": lambda s, _i: encode_id("Secret", {"handle": s.handle, "name": s.name}),
                "name": lambda s, _i: s.name,
            },
            "Directory": {
                "id": lambda d, _i: encode_id("Directory", d.to_json()),
                "entries": self._entries,
                "export": self._export,
            },
            "Container": {
                "id": lambda c, _i: encode_id("Container", c.to_json()),
                "from": self._from,
                "withEnvVariable": self._with_env,
                "withSecretVariable": self._with_secret,
                "withMountedDirectory": self._with_mounted_directory,
                "withWorkdir": self._with_workdir,
                "withExec": self._with_exec,
                "stdout": lambda c, _i: self._exec_result(c).stdout,
                "stderr": lambda c, _i: self._exec_result(c).stderr,
                "exitCode": lambda c, _i: self._exec_result(c).exit_code,
                "sync": self._sync,
                "directory": self._container_directory,
            },
        }
        for type_name, fields in resolvers.items():
            gql_type = self.schema.type_map[type_name]
            assert isinstance(gql_type, GraphQLObjectType)
            for field_name, resolve in fields.items():
                gql_type.fields[field_name].resolve = resolve

    # -- Query / Host / Secret -------------------------------------------------------------

    def _set_secret(self, _root: Any, _info: Any, name: str, plaintext: str) -> SecretObj:
        handle = hashlib.sha256(self._salt + name.encode() + b"\0" + plaintext.encode()).hexdigest()
        self.secrets[handle] = plaintext
        return SecretObj(handle, name)

    def _load_secret(self, _root: Any, _info: Any, id: str) -> SecretObj:  # noqa: A002
        payload = decode_id("Secret", id)
        if payload.get("handle") not in self.secrets:
            raise GraphQLError("unknown secret")
        return SecretObj(str(payload["handle"]), str(payload["name"]))

    def _host_directory(self, _root: Any, _info: Any, path: str, **args: Any) -> DirRef:
        _unsupported(args)
        if not os.path.isabs(path):
            raise GraphQLError(f"host directory {path!r}: the stand-in needs an absolute path")
        if not os.path.isdir(path):
            raise GraphQLError(f"host directory {path!r}: no such directory")
        digest = _tree_digest(Path(path))
        if digest not in self.snapshots:
            target = self.state_dir / "snapshots" / digest
            if not target.exists():
                tmp = target.with_name(f"{digest}.{secrets.token_hex(4)}.tmp")
                shutil.copytree(path, tmp, symlinks=True)
                tmp.rename(target)
            self.snapshots[digest] = target
        return DirRef("host", digest)

    # -- Container pipeline (pure) ---------------------------------------------------------

    def _from(
        self, c: ContainerState, _info: Any, address: str, registryService: Any = None
    ) -> ContainerState:  # noqa: N803
        if registryService is not None:
            raise GraphQLError("registryService is not supported by the praxis test stand-in")
        if address not in self.images:

            async def look_up() -> None:
                self.images[address] = await self.runner.image_id(address)

            raise NeedWork(f"image:{address}", look_up)
        if self.images[address] is None:
            raise GraphQLError(
                f"failed to resolve source metadata for {address}: image not found "
                "(the praxis test stand-in never pulls; import images into its private daemon)"
            )
        return ContainerState(image=address)

    def _with_env(
        self, c: ContainerState, _info: Any, name: str, value: str, **args: Any
    ) -> ContainerState:
        _unsupported(args)
        return c.with_env(name, "value", value)

    def _with_secret(self, c: ContainerState, _info: Any, name: str, secret: str) -> ContainerState:
        handle = str(decode_id("Secret", secret).get("handle"))
        if handle not in self.secrets:
            raise GraphQLError("unknown secret")
        return c.with_env(name, "secret", handle)

    def _with_mounted_directory(
        self,
        c: ContainerState,
        _info: Any,
        path: str,
        source: str,
        readOnly: bool = False,
        **args: Any,  # noqa: N803
    ) -> ContainerState:
        _unsupported(args)
        if not path.startswith("/"):
            raise GraphQLError(f"mount path {path!r}: the stand-in needs an absolute path")
        ref = DirRef.from_json(decode_id("Directory", source))
        kept = tuple(m for m in c.mounts if m[0] != path)
        return dataclasses.replace(c, mounts=(*kept, (path, ref, bool(readOnly))))

    def _with_workdir(
        self, c: ContainerState, _info: Any, path: str, **args: Any
    ) -> ContainerState:
        _unsupported(args)
        return dataclasses.replace(c, workdir=path)

    def _with_exec(
        self, c: ContainerState, _info: Any, args: list[str], expect: str = "SUCCESS", **rest: Any
    ) -> ContainerState:
        _unsupported(rest)
        if c.exec_args is not None:
            raise GraphQLError("the praxis test stand-in supports one withExec per pipeline")
        if c.image is None:
            raise GraphQLError("withExec needs an image: call from() first")
        if not args:
            raise GraphQLError("withExec: args must not be empty")
        return dataclasses.replace(c, exec_args=tuple(args), expect=str(expect))

    # -- fields that need a run ------------------------------------------------------------

    def _exec_result(self, c: ContainerState) -> ExecResult:
        if c.exec_args is None:
            raise GraphQLError("no command has been set")
        key = c.digest()
        result = self.execs.get(key)
        if result is None:

            async def run() -> None:
                sources = [self._dir_path(ref) for _p, ref, _ro in c.mounts]
                done = await self.runner.run(c, sources, self.secrets)
                self.execs.setdefault(key, done)

            raise NeedWork(f"exec:{key}", run)
        code = result.exit_code
        if code == 125:
            raise GraphQLError(f"failed to start the container: {result.stderr.strip()}")
        failed = {"SUCCESS": code != 0, "FAILURE": code == 0, "ANY": False}[c.expect]
        if failed:
            cmd = " ".join(c.exec_args)
            raise GraphQLError(
                f'process "{cmd}" did not complete successfully: exit code: {code}',
                extensions={
                    "_type": "EXEC_ERROR",
                    "cmd": list(c.exec_args),
                    "exitCode": code,
                    "stdout": self._scrub(c, result.stdout),
                    "stderr": self._scrub(c, result.stderr),
                },
            )
        return ExecResult(
            code, self._scrub(c, result.stdout), self._scrub(c, result.stderr), result.outputs
        )

    def _scrub(self, c: ContainerState, text: str) -> str:
        """Like Dagger, replace secret values in a command's output by ***."""
        for kind, value in c.effective_env().values():
            if kind == "secret" and self.secrets.get(value):
                text = text.replace(self.secrets[value], "***")
        return text

    def _sync(self, c: ContainerState, _info: Any) -> str:
        if c.exec_args is not None:
            self._exec_result(c)
        return str(encode_id("Container", c.to_json()))

    def _container_directory(self, c: ContainerState, _info: Any, path: str, **args: Any) -> DirRef:
        _unsupported(args)
        norm = os.path.normpath(path)
        for index, (mount, ref, _ro) in enumerate(c.mounts):
            if norm == mount or norm.startswith(mount.rstrip("/") + "/"):
                sub = os.path.relpath(norm, mount)
                sub = "" if sub == "." else sub
                if c.exec_args is None:
                    return dataclasses.replace(
                        ref, subpath=os.path.join(ref.subpath, sub) if sub else ref.subpath
                    )
                self._exec_result(c)
                return DirRef("output", c.digest(), index, sub)
        raise GraphQLError(
            f"directory {path!r}: the praxis test stand-in only reads directories under a mount"
        )

    def _dir_path(self, ref: DirRef) -> Path:
        if ref.kind == "host":
            base = self.snapshots.get(ref.key)
            if base is None:
                raise GraphQLError("unknown host directory snapshot")
        else:
            result = self.execs.get(ref.key)
            if result is None:
                raise GraphQLError("unknown exec output")
            base = Path(result.outputs[ref.index])
        return base / ref.subpath if ref.subpath else base

    def _entries(self, d: DirRef, _info: Any, path: str | None = None) -> list[str]:
        base = self._dir_path(d)
        return sorted(os.listdir(base / path if path else base))

    def _export(self, d: DirRef, info: Any, path: str, wipe: bool = False) -> str:
        ctx: RequestContext = info.context
        key = f"export:{d.kind}:{d.key}:{d.index}:{d.subpath}:{path}:{wipe}"
        if key in ctx.exports:
            return ctx.exports[key]
        if not os.path.isabs(path):
            raise GraphQLError(f"export path {path!r}: the stand-in needs an absolute path")
        source = self._dir_path(d)

        async def export() -> None:
            target = Path(path)
            # Blocking copies are fine here: a test stand-in with small trees.
            if wipe and target.exists():  # noqa: ASYNC240
                shutil.rmtree(target)
            shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
            ctx.exports[key] = path

        raise NeedWork(key, export)


async def _attempt(need: NeedWork, failures: list[str]) -> None:
    try:
        await need.job()
    except (GraphQLError, OSError) as exc:
        failures.append(f"{type(exc).__name__}: {exc}")


def _tree_digest(root: Path) -> str:
    """Content digest of a directory tree (names, modes, file contents, link targets)."""
    h = hashlib.sha256()
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames) + [
            d for d in dirnames if os.path.islink(os.path.join(dirpath, d))
        ]:
            count += 1
            if count > 100_000:
                raise GraphQLError("host directory too large for the praxis test stand-in")
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            h.update(f"{rel}\0{st.st_mode}\0".encode())
            if os.path.islink(full):
                h.update(os.readlink(full).encode())
            else:
                with open(full, "rb") as fh:
                    h.update(hashlib.sha256(fh.read()).digest())
        for d in dirnames:
            h.update(f"{os.path.relpath(os.path.join(dirpath, d), root)}/\0".encode())
    return h.hexdigest()
