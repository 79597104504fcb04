"""A cancelled dagger call leaves no container running: checked through the private Docker
daemon itself (the TEST STAND-IN for Dagger kills the container when the SDK's query is
abandoned, as a Dagger engine cancels the exec of a query whose client went away)."""

from __future__ import annotations

import subprocess

import pytest
import trio

from node.tools.engines.dagger import DaggerEngine
from tests.dagger_fixtures import DaggerBackend, dagger_contract

CANCEL_TARGET = 2.0  # seconds from the caller's cancel until no container of the tool runs


def standin_containers(backend: DaggerBackend) -> set[str]:
    """IDs of the stand-in's running containers, asked of the daemon (not of the stand-in)."""
    assert backend.daemon is not None
    done = subprocess.run(
        [backend.daemon.docker, "--host", backend.daemon.host, "ps", "-q", "--no-trunc",
         "--filter", "label=praxis-test-standin=1"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return set(done.stdout.split())


async def poll(backend: DaggerBackend, until: object, limit: float) -> set[str]:
    """Ask the daemon every 50 ms until `until(ids)` holds (bounded by `limit` seconds)."""
    with trio.fail_after(limit):
        while True:
            ids = await trio.to_thread.run_sync(standin_containers, backend)
            if until(ids):  # type: ignore[operator]
                return ids
            await trio.sleep(0.05)


async def test_a_cancelled_call_leaves_no_container(dagger_backend: DaggerBackend, engine: DaggerEngine) -> None:
    if dagger_backend.daemon is None:
        pytest.skip("checks containers through the stand-in's private Docker daemon")
    before = await trio.to_thread.run_sync(standin_containers, dagger_backend)
    stats = dagger_backend.stats()
    contract = dagger_contract(command=["sleep", "60"])
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.execute, contract, {}, trio.current_time() + 90)
            ours = await poll(dagger_backend, lambda ids: bool(ids - before), 30) - before
            cancelled_at = trio.current_time()
            scope.cancel()
    assert trio.current_time() - cancelled_at < 0.5  # the call returned at once
    await poll(dagger_backend, lambda ids: not (ids & ours), 15)
    gone_after = trio.current_time() - cancelled_at
    assert gone_after < CANCEL_TARGET, f"the container ran on for {gone_after:.2f} s after the cancel"
    # Nothing was retried, and the engine's connection still serves.
    result = await engine.execute(dagger_contract(command=["echo", "after"]), {}, trio.current_time() + 60)
    assert result.text_output() == "after\n"
    if stats is not None:
        assert dagger_backend.stats()["started"] == stats["started"] + 2  # type: ignore[index]
    print(f"[dagger cancel] container gone {gone_after:.3f} s after the cancel")
