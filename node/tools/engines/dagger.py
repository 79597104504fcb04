"""`dagger` engine: each call runs the tool's command in a container through the Dagger SDK.

The seed's lifecycle: validate the contract, build the container from the image, mount the
host folders, set the fixed env, the declared parameters the call passes (nothing else: see
`node.tools.engines.env`) and the passthrough env, add `CACHE_BUST` (unless
the contract sets `cache: true`), exec the command; after a successful run export the mounted
folders back to the host (a failed export is a logged warning). Stdout is the result; JSON
stdout is also structured content.

Connection: one Dagger session per engine, opened on the first call under a lock, reused by
later calls, dropped when it breaks (the next call opens a new one), closed by `aclose()`.
The engine connects to the session named by `DAGGER_SESSION_PORT` / `DAGGER_SESSION_TOKEN`
(what `dagger run <command>` sets); without them it fails at once with `EngineUnavailable`.
Runs are bounded by a capacity limiter; a call that cannot get a slot before its deadline
fails with `Busy` and has run nothing.

Cancellation: a cancelled call abandons the SDK's query (its HTTP request is closed), and the
Dagger engine cancels the exec, so the container does not run on. Progress: none. The SDK
returns an exec's output only when it ends (Dagger's live progress is its own telemetry,
which the SDK does not expose), so `praxis:progress` lines of a dagger tool stay in its stderr.

Secrets: passthrough values go to Dagger as secrets (`setSecret` + `withSecretVariable`),
never as plain variables, and are replaced by *** in anything returned or logged.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagger
import trio

# The SDK's public `dagger.Connection` reads the session from os.environ only; the engine
# takes its environment as a mapping (two nodes in one process), so it builds the same
# connection from the SDK's session classes (dagger-io is pinned).
from dagger.client._session import ConnectParams, SingleConnection

from node.config import (
    CACHE_BUST,
    DaggerEngineSettings,
    DaggerSpec,
    Mount,
    ToolContract,
    allowed_roots,
    resolve_mounts,
)
from node.tools.engines.base import (
    ContractError,
    EngineUnavailable,
    ToolExecutionError,
    ToolResult,
    ToolTimeout,
)
from node.tools.engines.env import arguments_as_env
from node.tools.engines.process import structured_stdout
from protocols.call_events import NO_EVENTS, CallEvents
from protocols.errors import Busy

log = logging.getLogger("praxis.engine.dagger")

CONNECT_TIMEOUT = 5.0  # TCP connect to the engine's session port
OPEN_TIMEOUT = 30.0  # connect plus the schema introspection
CLOSE_TIMEOUT = 10.0
MAX_STDERR = 2000
INSTALL_HINT = (
    "no Dagger engine session: run the node under `dagger run praxis-node run ...` "
    "(install the Dagger CLI from https://docs.dagger.io/install and Docker), or set "
    "DAGGER_SESSION_PORT and DAGGER_SESSION_TOKEN to a running session"
)
# Third-party loggers that write whole GraphQL queries (argument values, setSecret plaintext)
# at DEBUG level. The engine keeps them at WARNING: secrets and argument values never reach logs.
QUERY_LOGGERS = ("gql.transport", "gql.dsl", "gql.client")
_IMAGE_ERROR_MARKERS = (
    "failed to resolve source metadata",
    "pull access denied",
    "failed to resolve image",
    "manifest unknown",
)


class DaggerEngine:
    def __init__(
        self,
        settings: DaggerEngineSettings,
        base_dir: Path,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.base_dir = Path(os.path.realpath(base_dir))
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._roots = allowed_roots(settings.mount_roots, self.base_dir)
        self._limiter = trio.CapacityLimiter(settings.max_concurrency)
        self._lock = trio.Lock()
        self._conn: SingleConnection | None = None
        self._client: dagger.Client | None = None
        self._closed = False
        for name in QUERY_LOGGERS:
            logger = logging.getLogger(name)
            if logger.getEffectiveLevel() < logging.WARNING:
                logger.setLevel(logging.WARNING)

    # -- the ExecutionEngine interface -----------------------------------------------------

    def check_contract(self, contract: ToolContract) -> None:
        """The engineSpec (`node.config.DaggerSpec`) and the mounts' roots; a mount folder may be
        created after start (a config's mounts must exist when it loads)."""
        self._mounts(contract, contract.typed_spec(DaggerSpec, fresh=True), must_exist=False)

    def _mounts(self, contract: ToolContract, spec: DaggerSpec, *, must_exist: bool) -> list[Mount]:
        mounts, problems = resolve_mounts(spec.mounts, self.base_dir, self._roots, must_exist=must_exist)
        if problems:
            raise ContractError(f"tool {contract.name!r}: " + "; ".join(problems))
        return mounts

    async def execute(
        self, contract: ToolContract, arguments: dict[str, Any], deadline: float,
        events: CallEvents = NO_EVENTS,
    ) -> ToolResult:
        tool = contract.name
        spec = contract.typed_spec(DaggerSpec)
        mounts = self._mounts(contract, spec, must_exist=True)
        passthrough = {n: self._environ[n] for n in spec.env_passthrough if n in self._environ}
        reserved = {*spec.env, *spec.env_passthrough, CACHE_BUST}
        arg_env = arguments_as_env(contract, arguments, reserved=reserved)
        timeout = spec.timeout or self.settings.default_timeout_seconds
        if self._closed:
            raise EngineUnavailable(f"tool {tool!r}: the dagger engine is closed")

        with trio.move_on_at(deadline) as waiting:
            await self._limiter.acquire()
        if waiting.cancelled_caught:
            raise Busy(
                f"tool {tool!r}: all {self.settings.max_concurrency} dagger slots stayed busy "
                "until the call's deadline; nothing was run"
            )
        started = trio.current_time()
        try:
            run_deadline = min(deadline, started + timeout)
            with trio.move_on_at(run_deadline) as scope:
                result = await self._run(contract, spec, mounts, arg_env, passthrough)
        finally:
            self._limiter.release()
        if scope.cancelled_caught:
            why = f"its timeout of {timeout:g} s" if run_deadline < deadline else "the call's deadline"
            log.warning("tool %s: cancelled after %.1f s (%s)", tool, trio.current_time() - started, why)
            raise ToolTimeout(f"tool {tool!r} ran past {why} and was cancelled")
        return result

    async def aclose(self) -> None:
        self._closed = True
        with trio.CancelScope(shield=True):
            async with self._lock:
                await self._drop(self._conn)

    # -- one run ---------------------------------------------------------------------------

    async def _run(
        self,
        contract: ToolContract,
        spec: DaggerSpec,
        mounts: list[Mount],
        arg_env: dict[str, str],
        passthrough: dict[str, str],
    ) -> ToolResult:
        tool = contract.name
        conn, client = await self._connection(tool)
        secrets = [v for v in passthrough.values() if v]
        started = time.monotonic()
        ctr = client.container().from_(spec.image)
        for mount in mounts:
            ctr = ctr.with_mounted_directory(mount.container, client.host().directory(str(mount.host)))
        for name, value in [*spec.env.items(), *arg_env.items()]:
            ctr = ctr.with_env_variable(name, value)
        for name, value in passthrough.items():
            ctr = ctr.with_secret_variable(name, client.set_secret(f"praxis-{tool}-{name}", value))
        if not spec.cache:
            ctr = ctr.with_env_variable(CACHE_BUST, str(time.time_ns()))
        ctr = ctr.with_exec(list(spec.command))
        try:
            stdout = await ctr.stdout()
        except dagger.ExecError as exc:
            stderr = _scrub(exc.stderr or "", secrets).strip()[-MAX_STDERR:]
            log.info("tool %s: exited with code %s after %.2f s", tool, exc.exit_code, time.monotonic() - started)
            raise ToolExecutionError(
                f"tool {tool!r} exited with code {exc.exit_code}: " + (stderr or "no error output"),
                exit_code=exc.exit_code,
                stderr=stderr,
            ) from None
        except dagger.QueryError as exc:
            raise _query_failure(tool, spec.image, exc, secrets) from None
        except (dagger.TransportError, dagger.ClientConnectionError) as exc:
            await self._drop_if_current(conn)
            raise EngineUnavailable(
                f"tool {tool!r}: lost the connection to the Dagger engine: {_scrub(str(exc), secrets)}"
            ) from None
        for mount in mounts:
            await self._export(tool, ctr, mount, secrets)
        log.info("tool %s: ran %s in %.2f s", tool, spec.image, time.monotonic() - started)
        return structured_stdout(_scrub(stdout, secrets))

    async def _export(self, tool: str, ctr: dagger.Container, mount: Mount, secrets: list[str]) -> None:
        """Copy what the tool left in a mounted folder back to the host; failure is a warning."""
        try:
            await ctr.directory(mount.container).export(str(mount.host))
        except (dagger.QueryError, dagger.TransportError) as exc:
            log.warning(
                "tool %s: exporting %s back to the host failed: %s",
                tool,
                mount.container,
                _scrub(str(exc), secrets)[:500],
            )

    # -- the connection --------------------------------------------------------------------

    async def _connection(self, tool: str) -> tuple[SingleConnection, dagger.Client]:
        async with self._lock:
            if self._closed:
                raise EngineUnavailable(f"tool {tool!r}: the dagger engine is closed")
            if self._conn is None or self._client is None:
                self._conn = await self._open(tool)
                self._client = dagger.Client.from_connection(self._conn)
            return self._conn, self._client

    async def _open(self, tool: str) -> SingleConnection:
        port = self._environ.get("DAGGER_SESSION_PORT", "")
        token = self._environ.get("DAGGER_SESSION_TOKEN", "")
        if not port:
            raise EngineUnavailable(f"tool {tool!r}: {INSTALL_HINT}")
        if not token:
            raise EngineUnavailable(f"tool {tool!r}: DAGGER_SESSION_PORT is set but DAGGER_SESSION_TOKEN is not")
        try:
            params = ConnectParams(port=int(port), session_token=token)
        except ValueError:
            raise EngineUnavailable(f"tool {tool!r}: DAGGER_SESSION_PORT is not a port number") from None
        config = dagger.Config(retry=None, timeout=dagger.Timeout(None, connect=CONNECT_TIMEOUT))
        conn = SingleConnection(params, config)
        where = f"127.0.0.1:{params.port}"
        try:
            with trio.fail_after(OPEN_TIMEOUT):
                await conn.connect()
        except trio.TooSlowError:
            await self._drop(conn)
            raise EngineUnavailable(
                f"tool {tool!r}: the Dagger engine at {where} did not answer within {OPEN_TIMEOUT:g} s"
            ) from None
        except dagger.ClientConnectionError as exc:
            await self._drop(conn)
            raise EngineUnavailable(
                f"tool {tool!r}: cannot reach the Dagger engine at {where} ({exc}); {INSTALL_HINT}"
            ) from None
        log.info("connected to the Dagger engine at %s", where)
        return conn

    async def _drop_if_current(self, conn: SingleConnection) -> None:
        async with self._lock:
            if self._conn is conn:
                await self._drop(conn)

    async def _drop(self, conn: SingleConnection | None) -> None:
        """Close a connection (the current one is forgotten so the next call reopens)."""
        if conn is self._conn:
            self._conn, self._client = None, None
        if conn is None:
            return
        # Shield the close from an outer cancellation, but not from its own time limit.
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            try:
                await conn.close()
            except (dagger.DaggerError, OSError) as exc:
                log.warning("closing the Dagger connection failed: %s", exc)
        if scope.cancelled_caught:
            log.warning("closing the Dagger connection took over %g s; abandoned", CLOSE_TIMEOUT)


def _scrub(text: str, secrets: list[str]) -> str:
    for value in secrets:
        text = text.replace(value, "***")
    return text


def _query_failure(tool: str, image: str, exc: dagger.QueryError, secrets: list[str]) -> Exception:
    message = _scrub(str(exc), secrets)
    path = exc.error.path or []
    if (path and path[-1] == "from") or any(m in message.lower() for m in _IMAGE_ERROR_MARKERS):
        return ToolExecutionError(f"tool {tool!r}: the image {image!r} cannot be pulled: {message}")
    if "host directory" in message or "no such file" in message.lower():
        return ContractError(f"tool {tool!r}: the Dagger engine refused a mount: {message}")
    return ToolExecutionError(f"tool {tool!r}: the Dagger engine reported an error: {message}")
