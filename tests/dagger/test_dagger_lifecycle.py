"""DaggerEngine lifecycle against real containers: timeouts, the concurrency bound, caching,
an unreachable engine, and one connection that is reused, reopened after a loss, and closed."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio
import trio.testing

from node.config import DaggerEngineSettings
from node.tools.engines.dagger import DaggerEngine
from protocols.errors import Busy, EngineUnavailable, ToolTimeout
from tests.dagger_fixtures import DaggerBackend, dagger_contract, make_engine
from tests.dagger_standin.launcher import wait_until


def deadline(seconds: float = 60.0) -> float:
    return trio.current_time() + seconds


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- no engine: these need no containers ----------------------------------------------------


async def test_unreachable_engine_fails_fast(tmp_path: Path) -> None:
    env = {"DAGGER_SESSION_PORT": str(closed_port()), "DAGGER_SESSION_TOKEN": "t"}
    eng = DaggerEngine(DaggerEngineSettings(), tmp_path, environ=env)
    start = trio.current_time()
    try:
        with pytest.raises(EngineUnavailable, match="cannot reach the Dagger engine") as info:
            await eng.execute(dagger_contract(command=["true"]), {}, deadline())
    finally:
        await eng.aclose()
    assert trio.current_time() - start < 2.0
    assert "https://docs.dagger.io/install" in str(info.value)


async def test_no_session_names_what_to_install(tmp_path: Path) -> None:
    eng = DaggerEngine(DaggerEngineSettings(), tmp_path, environ={"PATH": "/usr/bin"})
    start = trio.current_time()
    with pytest.raises(EngineUnavailable, match="dagger run") as info:
        await eng.execute(dagger_contract(command=["true"]), {}, deadline())
    assert "Docker" in str(info.value)
    assert trio.current_time() - start < 2.0
    await eng.aclose()


# -- with an engine ---------------------------------------------------------------------------


async def test_timeout_cancels_the_run(dagger_backend: DaggerBackend, engine: DaggerEngine) -> None:
    before = dagger_backend.stats()
    start = trio.current_time()
    with pytest.raises(ToolTimeout, match="timeout of 1 s"):
        await engine.execute(dagger_contract(command=["sleep", "30"], timeout=1), {}, deadline())
    assert trio.current_time() - start < 5.0
    standin = dagger_backend.standin
    if standin is not None and before is not None:
        # The stand-in saw the request go away and killed the container (a daemon-side action:
        # bounded wait for its state to settle).
        assert wait_until(lambda: standin.stats()["running"] == 0, 15.0)
        assert standin.stats()["killed"] == before["killed"] + 1
    # The connection is still usable after a cancelled call.
    result = await engine.execute(dagger_contract(command=["echo", "after"]), {}, deadline())
    assert result.text_output() == "after\n"


async def test_caller_deadline_also_bounds_the_run(dagger_backend: DaggerBackend, engine: DaggerEngine) -> None:
    with pytest.raises(ToolTimeout, match="the call's deadline"):
        await engine.execute(dagger_contract(command=["sleep", "30"]), {}, deadline(1.0))
    standin = dagger_backend.standin
    if standin is not None:
        assert wait_until(lambda: standin.stats()["running"] == 0, 15.0)


async def test_concurrency_bound_is_respected(dagger_backend: DaggerBackend, tmp_path: Path) -> None:
    bound, calls = 2, 6
    eng = make_engine(dagger_backend, tmp_path, max_concurrency=bound)
    # Each container reports when it ran (the host kernel's uptime, shared by containers).
    contract = dagger_contract(
        params=[{"name": "call"}],
        command=["sh", "-c", "cut -d' ' -f1 /proc/uptime; sleep 0.5; cut -d' ' -f1 /proc/uptime"],
    )
    standin = dagger_backend.standin
    if standin is not None:
        # Containers killed by earlier tests may still be going away: let the daemon settle.
        assert wait_until(lambda: standin.stats()["running"] == 0, 15.0)
        standin.reset_stats()
    intervals: list[tuple[float, float]] = []

    async def one(i: int) -> None:
        result = await eng.execute(contract, {"call": str(i)}, deadline(60))
        first, last = result.text_output().split()
        intervals.append((float(first), float(last)))

    try:
        async with trio.open_nursery() as nursery:
            for i in range(calls):
                nursery.start_soon(one, i)
    finally:
        await eng.aclose()
    assert len(intervals) == calls
    overlap = max(sum(1 for s, e in intervals if s <= point < e) for point, _ in intervals)
    assert overlap <= bound
    stats = dagger_backend.stats()
    if stats is not None:
        assert stats["max_running"] == bound  # the queue kept exactly `bound` containers busy


async def test_queued_call_gets_busy_at_its_deadline(dagger_backend: DaggerBackend, tmp_path: Path) -> None:
    eng = make_engine(dagger_backend, tmp_path, max_concurrency=1)
    slow = dagger_contract(command=["sleep", "2"])
    quick = dagger_contract(command=["echo", "queued"])
    outcomes: dict[str, object] = {}

    async def run(name: str, contract: object, seconds: float) -> None:
        try:
            outcomes[name] = (await eng.execute(contract, {}, deadline(seconds))).text_output()  # type: ignore[arg-type]
        except Busy as exc:
            outcomes[name] = exc

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "slow", slow, 30.0)
            await trio.testing.wait_all_tasks_blocked()  # the slow call holds the slot, running
            assert eng._limiter.borrowed_tokens == 1  # noqa: SLF001
            nursery.start_soon(run, "impatient", quick, 0.5)
            nursery.start_soon(run, "patient", quick, 30.0)
    finally:
        await eng.aclose()
    assert outcomes["slow"] == ""
    assert isinstance(outcomes["impatient"], Busy)
    assert outcomes["patient"] == "queued\n"


async def test_cache_busting_on_and_off(dagger_backend: DaggerBackend, engine: DaggerEngine) -> None:
    cmd = ["sh", "-c", 'echo "${CACHE_BUST-none}"; cat /proc/sys/kernel/random/uuid']
    busting = dagger_contract(params=[{"name": "x"}], command=cmd)
    caching = dagger_contract(params=[{"name": "x"}], command=cmd, cache=True)
    busted = [(await engine.execute(busting, {"x": "1"}, deadline())).text_output() for _ in range(2)]
    assert busted[0] != busted[1]
    assert all(out.split()[0].isdigit() for out in busted)
    before = dagger_backend.stats()
    cached = [(await engine.execute(caching, {"x": "1"}, deadline())).text_output() for _ in range(2)]
    assert cached[0] == cached[1]
    assert cached[0].split()[0] == "none"
    after = dagger_backend.stats()
    if before is not None and after is not None:
        assert after["started"] == before["started"] + 1  # the second call reused the first run
    other = await engine.execute(caching, {"x": "2"}, deadline())
    assert other.text_output() != cached[0]  # different arguments are a different run


async def test_one_connection_reused_reopened_and_closed(dagger_backend: DaggerBackend, tmp_path: Path) -> None:
    if dagger_backend.daemon is None:
        pytest.skip("needs the stand-in: the test stops and restarts the engine it talks to")
    first = dagger_backend.start_standin(tmp_path / "standin-a")
    env = dict(first.env())
    eng = DaggerEngine(DaggerEngineSettings(), tmp_path, environ=env)
    contract = dagger_contract(command=["echo", "ok"])
    try:
        assert (await eng.execute(contract, {}, deadline())).text_output() == "ok\n"
        conn = eng._conn  # noqa: SLF001
        assert conn is not None
        assert (await eng.execute(contract, {}, deadline())).text_output() == "ok\n"
        assert eng._conn is conn  # noqa: SLF001 - reused
        first.stop()
        with pytest.raises(EngineUnavailable, match="lost the connection"):
            await eng.execute(contract, {}, deadline())
        assert eng._conn is None  # noqa: SLF001 - dropped
        second = dagger_backend.start_standin(tmp_path / "standin-b")
        env.update(second.env())
        assert (await eng.execute(contract, {}, deadline())).text_output() == "ok\n"
        assert eng._conn is not None and eng._conn is not conn  # noqa: SLF001 - reopened
    finally:
        await eng.aclose()
    assert eng._conn is None  # noqa: SLF001
    with pytest.raises(EngineUnavailable, match="closed"):
        await eng.execute(contract, {}, deadline())
    await eng.aclose()  # idempotent


async def test_wrong_session_token_is_unavailable(dagger_backend: DaggerBackend, tmp_path: Path) -> None:
    if dagger_backend.standin is None:
        pytest.skip("needs the stand-in's session token")
    env = {**dagger_backend.env, "DAGGER_SESSION_TOKEN": "not-the-token"}
    eng = DaggerEngine(DaggerEngineSettings(), tmp_path, environ=env)
    try:
        with pytest.raises(EngineUnavailable) as info:
            await eng.execute(dagger_contract(command=["true"]), {}, deadline())
    finally:
        await eng.aclose()
    assert "not-the-token" not in str(info.value)
