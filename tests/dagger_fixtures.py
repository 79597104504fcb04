"""Fixtures for tests that run dagger tools: a real Dagger session, or the test stand-in.

Default: start a private Docker daemon (`--bridge none --iptables=false`, private socket and
data root), import a locally built busybox:latest, start the TEST STAND-IN for Dagger
(`tests/dagger_standin`) and point the SDK at it; everything is stopped by PID at the end.
Without docker.io (or without root) the tests are skipped with the reason; with `CI` set
they fail instead, because CI must run them.

`PRAXIS_TEST_DAGGER=real`: run the same tests against a real Dagger engine. Run them under
`dagger run` so DAGGER_SESSION_PORT / DAGGER_SESSION_TOKEN name the session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from node.config import DaggerEngineSettings, ToolContract
from node.tools.engines.dagger import DaggerEngine
from tests.dagger_standin.daemon import PrivateDockerDaemon, missing_requirements
from tests.dagger_standin.launcher import StandinProcess

REPO = Path(__file__).resolve().parents[2]
MODE = os.environ.get("PRAXIS_TEST_DAGGER", "standin")
IMAGE = "busybox:latest"


@dataclass
class DaggerBackend:
    env: dict[str, str]
    standin: StandinProcess | None = None
    daemon: PrivateDockerDaemon | None = None
    extra: list[StandinProcess] = field(default_factory=list)

    def stats(self) -> dict[str, Any] | None:
        return self.standin.stats() if self.standin else None

    def start_standin(self, state_dir: Path, port: int = 0) -> StandinProcess:
        """Another stand-in on the same daemon (for connection-loss tests)."""
        assert self.daemon is not None
        standin = StandinProcess(self.daemon.docker, self.daemon.host, state_dir, port=port)
        standin.start()
        self.extra.append(standin)
        return standin


@pytest.fixture(scope="session")
def dagger_backend() -> Iterator[DaggerBackend]:
    if MODE == "real":
        if not os.environ.get("DAGGER_SESSION_PORT"):
            pytest.skip(
                "PRAXIS_TEST_DAGGER=real needs a Dagger session: run the tests under `dagger run` (Dagger CLI + Docker)"
            )
        yield DaggerBackend(env=dict(os.environ))
        return
    if MODE != "standin":
        pytest.fail(f"PRAXIS_TEST_DAGGER={MODE!r}: expected 'real' or nothing")
    reason = missing_requirements()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"dagger tests must run in CI but cannot: {reason}")
        pytest.skip(f"dagger engine tests need real containers: {reason}")
    root = Path(tempfile.mkdtemp(prefix="praxis-dk-"))
    daemon = PrivateDockerDaemon(root)
    daemon.start()
    standin: StandinProcess | None = None
    backend: DaggerBackend | None = None
    try:
        daemon.ensure_busybox(REPO / ".cache")
        standin = StandinProcess(daemon.docker, daemon.host, root / "standin")
        standin.start()
        print(f"[dagger tests] test stand-in for Dagger on 127.0.0.1:{standin.port}", flush=True)
        backend = DaggerBackend(env=standin.env(), standin=standin, daemon=daemon)
        yield backend
    finally:
        for extra in backend.extra if backend else []:
            extra.stop()
        if standin is not None:
            standin.stop()
        daemon.stop()
        shutil.rmtree(root, onerror=_report_rmtree)


def _report_rmtree(_func: Any, path: str, exc: Any) -> None:
    print(f"[dagger tests] could not remove {path}: {exc}", flush=True)


def dagger_contract(name: str = "tool", params: list[dict[str, Any]] | None = None, **spec: Any) -> ToolContract:
    spec.setdefault("image", IMAGE)
    return ToolContract.model_validate({"name": name, "engine": "dagger", "params": params or [], "engineSpec": spec})


def make_engine(
    backend: DaggerBackend, base_dir: Path, *, extra_env: dict[str, str] | None = None, **settings: Any
) -> DaggerEngine:
    settings.setdefault("default_timeout_seconds", 60.0)
    return DaggerEngine(DaggerEngineSettings(**settings), base_dir, environ={**backend.env, **(extra_env or {})})


@pytest.fixture
async def engine(dagger_backend: DaggerBackend, tmp_path: Path) -> AsyncIterator[DaggerEngine]:
    eng = make_engine(dagger_backend, tmp_path)
    try:
        yield eng
    finally:
        await eng.aclose()
